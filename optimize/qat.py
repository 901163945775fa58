"""Quantization-aware training over tfmot, alone or keeping zeros and clusters (PQAT, CQAT, PCQAT)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np

from edgekit.core.compat import in_process_lambdas, keras, tfmot
from edgekit.core.errors import InputError, renamed
from edgekit.core.graph import calls, copy_layer, nodes_in_order, ops_as_layers, rewrite
from edgekit.core.layers import CUSTOM_OBJECTS
from edgekit.core.samples import rows, take
from edgekit.core.wrappers import custom_objects
from edgekit.optimize.cluster import is_sparse
from edgekit.optimize.common import check_model, check_selection, copy_model, selected, with_overrides
from edgekit.optimize.configs import layer_selection
from edgekit.optimize.quantize_configs import edgekit_config, inputs_in_order
from edgekit.optimize.quantize_configs import scheme as quantize_scheme
from edgekit.optimize.registry import Technique, register
from edgekit.optimize.weights import layer_kernel

PRESERVE = ("auto", "none", "sparsity", "clusters", "both")
# Recurrent layers and attention: tfmot has no QAT for them (TF#61329, tfmot#1114, tfmot#718), and
# its wrapper cannot hold a layer of several inputs (attention's query and value). QAT leaves them
# in float and the int8 export calibrates them as post-training quantization does (the fused LSTM's
# gates and cell state, attention's scores are ranges of their own, which only calibration sets).
CALIBRATED = (keras.layers.RNN, keras.layers.Bidirectional, keras.layers.MultiHeadAttention)


@dataclass(frozen=True)
class QATConfig:
    """Quantization-aware training (int8). ``layers``/``skip`` select what is quantized (the rest
    stays float); ``configs`` maps layer names to tfmot QuantizeConfigs of your own.
    ``preserve``: ``"sparsity"`` (PQAT), ``"clusters"`` (CQAT), ``"both"`` (PCQAT), ``"none"``, or
    ``"auto"`` — read from the weights: sparse kernels keep their zeros, clustered ones their
    clusters. ``freeze_batchnorm``: BatchNorm layers keep their statistics and use them during the
    fine-tune (standard QAT practice: a short fine-tune on few samples otherwise drags the moving
    statistics, and batch statistics make every step noisy)."""

    layers: Optional[Tuple[Any, ...]] = None
    skip: Tuple[Any, ...] = ()
    preserve: str = "auto"
    configs: Dict[str, Any] = field(default_factory=dict)
    freeze_batchnorm: bool = True

    def __post_init__(self):
        if self.preserve not in PRESERVE:
            raise InputError(f"preserve must be one of {', '.join(PRESERVE)}. Received preserve={self.preserve!r}")
        object.__setattr__(self, "layers", layer_selection(self.layers, "layers"))
        object.__setattr__(self, "skip", layer_selection(self.skip, "skip") or ())

    def __hash__(self):
        return hash((self.layers, self.skip, self.preserve, tuple(sorted(self.configs)), self.freeze_batchnorm))


def is_clustered_kernels(model) -> bool:
    """Some kernel of 512+ weights holds at most 256 distinct values and at most one per 8
    weights (tfmot's cluster-preserving QAT then keeps each such layer's clusters; depthwise
    kernels are never clustered). An unclustered kernel has about one value per weight."""
    kernels = [
        k
        for k in (layer_kernel(l)[1] for l in model.layers if not isinstance(l, keras.layers.DepthwiseConv2D))
        if k is not None and k.size >= 512
    ]
    return any(len(np.unique(k)) <= min(256, k.size // 8) for k in kernels)


def _integer_inputs_apart(model):
    """``model`` with an identity layer between each integer input (token ids) and its consumers:
    tfmot quantizes a model input whose consumer it quantizes, and integers cannot be; the
    embedding behind it quantizes its table and output instead."""
    ints = [t for t in model.inputs if t.dtype.is_integer]
    if not ints:
        return model

    def replace(layer, mapped):
        if type(layer).__name__ == "InputLayer" or not any(t is layer.input for t in ints):
            return None
        ids = keras.layers.Activation("linear", name=f"{layer.name}_ids")(mapped)
        return copy_layer(layer, calls(layer)[0], {id(layer.input): ids})

    return rewrite(model, replace, "qat")


def _tfmot_supports(layer) -> bool:
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as q8,
    )

    return q8.Default8BitQuantizeRegistry().supports(layer)


def _custom_layers(model) -> list:
    """Layers whose class is neither a Keras layer nor edgekit's (tfmot cannot clone them)."""
    return [
        l
        for l in model.layers
        if not type(l).__module__.startswith(
            ("tf_keras.src.layers", "tf_keras.src.engine", "edgekit.", "tensorflow_model_optimization")
        )
    ]


def _unsupported(exc, model=None) -> InputError:
    text = " ".join(str(exc).split())
    m = re.search(r"Layer (\S+?):<class '[\w.]*?(\w+)'> is not supported", text)
    if m:
        name, kind = m.groups()
        return InputError(
            "qat: layer '{name}' ({kind}) has no QuantizeConfig; leave it in float with "
            "QATConfig(skip=('{name}',)) (the {skip} list), or pass "
            "QATConfig(configs={{'{name}': YourQuantizeConfig()}})",
            params="skip",
            name=name,
            kind=kind,
        )
    custom = _custom_layers(model) if model is not None and "Unable to clone model" in text else []
    if custom:
        kinds = sorted({type(l).__name__ for l in custom})
        names = ", ".join(f"'{l.name}'" for l in custom[:3]) + (" …" if len(custom) > 3 else "")
        return InputError(
            f"qat: tfmot cannot clone the model's custom layers ({', '.join(kinds)}: {names}, "
            f"{len(custom)} in all); QAT needs every layer to be a Keras layer tfmot knows: replace "
            f"them with Keras layers, or export this model int8 without QAT (post-training)"
        )
    return InputError(f"qat: tfmot cannot quantize this model: {text[:300]}")


def qat(model, config: QATConfig = QATConfig(), calibration=None, **overrides):
    """Quantization-aware training (see :class:`QATConfig`): a new model with fake-quantization
    that the int8 export turns into a fully integer ``.tflite``. Layers tfmot's registry rejects
    get edgekit's QuantizeConfigs (Multiply, Rescaling, Normalization, other activations, …);
    TensorFlow op layers (``x + 3.0``) become the layers that compute the same
    (:func:`edgekit.core.graph.ops_as_layers`); a layer nobody can quantize is an error naming it and
    saying how to skip it or give a config.

    With ``calibration`` (samples; older name ``calib``), every quantizer's range starts where post-training calibration
    would put it (:func:`init_ranges`) instead of tfmot's defaults ([0, 0] at the input, ±6
    elsewhere, moved by a 0.999 moving average): a QAT model is then as accurate as the int8
    export from its first step, whatever the fine-tune's length."""
    calib = renamed(overrides, "calib", "calibration", calibration)
    config = with_overrides(config, overrides)
    model = check_model(model, "qat")
    uses = Counter(id(node.layer) for node in nodes_in_order(model))  # this model's calls, not other models'
    shared = next((l for l in model.layers if uses[id(l)] > 1), None)
    if shared is not None:
        raise InputError(
            f"qat: layer '{shared.name}' ({type(shared).__name__}) is called {uses[id(shared)]} times (a shared or "
            f"tied layer); tfmot wraps each layer for one call: export the model with post-training int8 instead "
            f"(it keeps a tied matrix shared)"
        )
    base = _integer_inputs_apart(ops_as_layers(copy_model(model)))
    apart = {l.name for l in base.layers if l.name.endswith("_ids") and type(l).__name__ == "Activation"}
    if config.freeze_batchnorm:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False  # tf_keras runs a frozen BatchNorm in inference mode
    check_selection(base, config.layers, "qat")
    preserve = config.preserve
    if preserve == "auto":
        sparse, clustered = is_sparse(base), is_clustered_kernels(base)
        preserve = "both" if sparse and clustered else "sparsity" if sparse else "clusters" if clustered else "none"
    scheme = quantize_scheme(preserve)
    quant = tfmot().quantization.keras
    floats = []  # layers nobody has a QuantizeConfig for that the int8 export calibrates instead

    def annotate(layer):
        if (
            isinstance(layer, keras.layers.InputLayer)
            or not selected(layer, config.layers, config.skip)
            or layer.name in apart
        ):
            return layer
        own = config.configs.get(layer.name)
        if own is None and isinstance(layer, CALIBRATED):
            floats.append(f"{layer.name} ({type(layer).__name__})")
            return layer
        if own is None and (
            not _tfmot_supports(layer)
            or isinstance(
                layer,
                (
                    keras.layers.Activation,
                    keras.layers.BatchNormalization,
                    keras.layers.AveragePooling2D,
                    keras.layers.AveragePooling1D,
                ),
            )
        ):
            own = edgekit_config(layer)  # None: tfmot decides (BatchNormalization folds into its conv)
        return quant.quantize_annotate_layer(layer, quantize_config=own)

    with custom_objects():
        annotated = keras.models.clone_model(base, clone_function=annotate)
        scope = dict(CUSTOM_OBJECTS, **{type(c).__name__: type(c) for c in config.configs.values()})
        with quant.quantize_scope(scope), inputs_in_order(), in_process_lambdas():
            try:
                quantized = quant.quantize_apply(annotated, scheme)
            except (RuntimeError, ValueError) as exc:
                raise _unsupported(exc, base) from None
    quantized._edgekit_preserve = preserve
    quantized._edgekit_float_layers = floats
    if calib is not None:
        init_ranges(quantized, base, calib)
    return quantized


def _ranges(model, layers, x, batch: int = 16):
    """(min, max) of each layer's output and of its pre-activation value, over samples ``x``."""
    from edgekit.core.compat import tf

    probe = keras.Model(model.inputs, [l.output for l in layers] + [l.input for l in layers])
    lo = {}
    for start in range(0, rows(x), batch):
        outs = probe(take(x, slice(start, start + batch)), training=False)
        n = len(layers)
        for i, layer in enumerate(layers):
            values = {"out": outs[i]}
            act = getattr(layer, "activation", None)
            if act is not None and getattr(act, "__name__", "linear") != "linear":
                saved = layer.activation
                layer.activation = keras.activations.linear
                try:
                    values["pre"] = layer(outs[n + i], training=False)
                finally:
                    layer.activation = saved
            for key, v in values.items():
                mn, mx = float(tf.reduce_min(v)), float(tf.reduce_max(v))
                old = lo.get((layer.name, key))
                lo[(layer.name, key)] = (mn, mx) if old is None else (min(old[0], mn), max(old[1], mx))
    return lo


def _input_range(layer, x) -> tuple:
    """(min, max) of the model input a QuantizeLayer quantizes: of ``x``, or of the array of ``x`` (a
    dict by input name) named as that input."""
    if isinstance(x, dict):
        source = str(getattr(layer.input, "name", "")).split(":")[0].split("/")[0]
        x = x.get(source, np.concatenate([np.ravel(v) for v in x.values()]))
    return float(np.min(x)), float(np.max(x))


def init_ranges(quantized, base, calib, samples: int = 256) -> int:
    """Set the activation quantizers' ranges of the QAT model ``quantized`` (made from the float
    model ``base``) to the ranges of ``base``'s tensors on up to ``samples`` of ``calib``, the input
    quantizer to the input's range and each weight quantizer to its weights' (symmetric) range, as
    post-training calibration would. Returns how many quantizers were set."""
    x = take(calib if isinstance(calib, dict) else np.asarray(calib), slice(0, samples))
    by_name = {l.name: l for l in base.layers}
    wrapped = [(w, by_name[w.layer.name]) for w in quantized.layers if hasattr(w, "layer") and w.layer.name in by_name]
    ranges = _ranges(base, [b for _, b in wrapped], x)
    done = 0
    for layer in quantized.layers:
        if type(layer).__name__ == "QuantizeLayer":
            lo, hi = _input_range(layer, x)
            done += _assign(layer, {"min": lo, "max": hi}, ("_min", "_max"))
    for w, b in wrapped:
        out, pre = ranges.get((b.name, "out")), ranges.get((b.name, "pre"))
        for v in w.weights:
            key = v.name.split("/")[-1].split(":")[0]
            if key in ("output_min", "post_activation_min") and out:
                v.assign(np.full(v.shape, min(out[0], 0.0), v.dtype.as_numpy_dtype))
                done += 1
            elif key in ("output_max", "post_activation_max") and out:
                v.assign(np.full(v.shape, max(out[1], 0.0), v.dtype.as_numpy_dtype))
                done += 1
            elif key == "pre_activation_min" and pre:
                v.assign(np.full(v.shape, min(pre[0], 0.0), v.dtype.as_numpy_dtype))
                done += 1
            elif key == "pre_activation_max" and pre:
                v.assign(np.full(v.shape, max(pre[1], 0.0), v.dtype.as_numpy_dtype))
                done += 1
            elif key.endswith(("kernel_min", "kernel_max")):
                done += _weight_range(v, getattr(b, key[:-4], None))
    return done


def _assign(layer, values: dict, suffixes) -> int:
    n = 0
    for v in layer.weights:
        key = v.name.split(":")[0]
        for suffix, which in zip(suffixes, ("min", "max")):
            if key.endswith(suffix):
                v.assign(np.full(v.shape, values[which], v.dtype.as_numpy_dtype))
                n += 1
    return n


def _weight_range(var, kernel) -> int:
    """A weight quantizer's min or max variable from the kernel: symmetric, per output channel when
    the variable has one entry per channel (the last axis; a depthwise kernel (kh, kw, C, M) has
    C·M, its last two axes), else per tensor."""
    if kernel is None:
        return 0
    k = np.abs(kernel.numpy())
    n = var.shape[0] if var.shape.rank == 1 else 0
    per_channel = n > 1 and n in (k.shape[-1], int(np.prod(k.shape[-2:])))
    amax = k.reshape(-1, n).max(axis=0) if per_channel else np.full(var.shape, k.max())
    sign = -1.0 if var.name.split(":")[0].endswith("_min") else 1.0
    var.assign((sign * amax).astype(var.dtype.as_numpy_dtype).reshape(var.shape))
    return 1


def _apply(model, config, step):
    wrapped = qat(model, config, calibration=step.x)
    if wrapped._edgekit_float_layers:
        step.notes.append(
            f"qat left {', '.join(wrapped._edgekit_float_layers)} in float (no quantization-aware training for "
            f"recurrent layers and attention): the int8 export calibrates it on the calibration data"
        )
    step.fine_tune(wrapped)
    return wrapped, None


register(Technique("qat", QATConfig, _apply, order=90, last=True, describe=lambda c: "qat"))
