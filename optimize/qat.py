"""Quantization-aware training over tfmot, alone or keeping zeros and clusters (PQAT, CQAT, PCQAT)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np

from edgekit.compat import keras, tfmot
from edgekit.errors import InputError
from edgekit.layers import CUSTOM_OBJECTS
from edgekit.optimize.cluster import is_sparse
from edgekit.optimize.common import (check_model, check_selection, copy_model, selected, with_overrides,
                                     wrap_and_fine_tune)
from edgekit.optimize.configs import layer_selection
from edgekit.optimize.quantize_configs import edgekit_config
from edgekit.optimize.registry import Flag, Technique, register
from edgekit.optimize.weights import layer_kernel
from edgekit.wrappers import custom_objects

PRESERVE = ("auto", "none", "sparsity", "clusters", "both")


@dataclass(frozen=True)
class QATConfig:
    """Quantization-aware training (int8). ``layers``/``skip`` select what is quantized (the rest
    stays float); ``configs`` maps layer names to tfmot QuantizeConfigs of your own.
    ``preserve``: ``"sparsity"`` (PQAT), ``"clusters"`` (CQAT), ``"both"`` (PCQAT), ``"none"``, or
    ``"auto"`` — read from the weights: sparse kernels keep their zeros, clustered ones their
    clusters."""

    layers: Optional[Tuple[Any, ...]] = None
    skip: Tuple[Any, ...] = ()
    preserve: str = "auto"
    configs: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.preserve not in PRESERVE:
            raise InputError(f"preserve must be one of {', '.join(PRESERVE)}. Received preserve={self.preserve!r}")
        object.__setattr__(self, "layers", layer_selection(self.layers, "layers"))
        object.__setattr__(self, "skip", layer_selection(self.skip, "skip") or ())

    def __hash__(self):
        return hash((self.layers, self.skip, self.preserve, tuple(sorted(self.configs))))


def is_clustered_kernels(model) -> bool:
    """Some kernel of 512+ weights holds at most 256 distinct values and at most one per 8
    weights (tfmot's cluster-preserving QAT then keeps each such layer's clusters; depthwise
    kernels are never clustered). An unclustered kernel has about one value per weight."""
    kernels = [k for k in (layer_kernel(l)[1] for l in model.layers if not isinstance(l, keras.layers.DepthwiseConv2D))
               if k is not None and k.size >= 512]
    return any(len(np.unique(k)) <= min(256, k.size // 8) for k in kernels)


def _tfmot_supports(layer) -> bool:
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as q8,
    )

    return q8.Default8BitQuantizeRegistry().supports(layer)


def _scheme(preserve: str):
    combine = tfmot().experimental.combine
    return {
        "none": lambda: None,  # tfmot's default 8-bit scheme
        "sparsity": combine.Default8BitPrunePreserveQuantizeScheme,
        "clusters": lambda: combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False),
        "both": lambda: combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True),
    }[preserve]()


def _unsupported(exc) -> InputError:
    text = " ".join(str(exc).split())
    m = re.search(r"Layer (\S+?):<class '[\w.]*?(\w+)'> is not supported", text)
    if m:
        name, kind = m.groups()
        return InputError(f"qat: layer '{name}' ({kind}) has no QuantizeConfig; leave it in float with "
                          f"QATConfig(skip=('{name}',)) (`qat_skip`), or pass "
                          f"QATConfig(configs={{'{name}': YourQuantizeConfig()}})")
    return InputError(f"qat: tfmot cannot quantize this model: {text[:300]}")


def qat(model, config: QATConfig = QATConfig(), **overrides):
    """Quantization-aware training (see :class:`QATConfig`): a new model with fake-quantization
    that the int8 export turns into a fully integer ``.tflite``. Layers tfmot's registry rejects
    get edgekit's QuantizeConfigs (Multiply, Rescaling, other activations, …); a layer nobody
    can quantize is an error naming it and saying how to skip it or give a config."""
    config = with_overrides(config, overrides)
    check_model(model, "qat")
    base = copy_model(model)
    check_selection(base, config.layers, "qat")
    preserve = config.preserve
    if preserve == "auto":
        sparse, clustered = is_sparse(base), is_clustered_kernels(base)
        preserve = "both" if sparse and clustered else "sparsity" if sparse else "clusters" if clustered else "none"
    scheme = _scheme(preserve)
    quant = tfmot().quantization.keras

    def annotate(layer):
        if isinstance(layer, keras.layers.InputLayer) or not selected(layer, config.layers, config.skip):
            return layer
        own = config.configs.get(layer.name)
        if own is None and (not _tfmot_supports(layer) or isinstance(layer, keras.layers.Activation)):
            own = edgekit_config(layer)  # None: tfmot decides (BatchNormalization folds into its conv)
        return quant.quantize_annotate_layer(layer, quantize_config=own)

    with custom_objects():
        annotated = keras.models.clone_model(base, clone_function=annotate)
        scope = dict(CUSTOM_OBJECTS, **{type(c).__name__: type(c) for c in config.configs.values()})
        with quant.quantize_scope(scope):
            try:
                quantized = quant.quantize_apply(annotated, scheme) if scheme else quant.quantize_apply(annotated)
            except (RuntimeError, ValueError) as exc:
                raise _unsupported(exc) from None
    quantized._edgekit_preserve = preserve
    return quantized


register(Technique(
    "qat", QATConfig, wrap_and_fine_tune(qat, stripped=False), order=90, last=True, describe=lambda c: "qat",
    flags=(Flag("--qat", None, bool, "quantization-aware training (last step)"),
           Flag("--qat-skip", "skip", str, "leave LAYER in float under QAT", "LAYER", append=True, enables=False))))
