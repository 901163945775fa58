"""QuantizeConfigs for common layers that tfmot's default 8-bit registry rejects.

Measured with tfmot 0.8: ``quantize_model`` stops at ``Multiply`` (squeeze-excite), ``Rescaling``,
``Normalization`` (keras.applications' preprocessing), ``Conv1D`` and ``Activation('hard_sigmoid')``
(and every activation other than relu/relu6/swish/gelu/linear/softmax/sigmoid/tanh). ``Reshape``,
``UpSampling2D`` (nearest and bilinear), ``Conv2DTranspose`` and ``Activation('sigmoid'/'swish')``
are handled by tfmot itself. These layers have no weights to quantize: their output gets an 8-bit
moving-average quantizer (:class:`edgekit.core.layers.OutputQuantizeConfig`, in the base layer so
that a saved QAT model loads without this module), which is what the int8 converter needs to give
the op an integer output.
"""

from __future__ import annotations

import contextlib
import threading

from edgekit.core.compat import keras, tfmot
from edgekit.core.graph import calls, consumers
from edgekit.core.layers import ConstantAdd, DepthwiseQuantizeConfig, EmbeddingQuantizeConfig, OutputQuantizeConfig

# Activations tfmot's Default8BitActivationQuantizeConfig accepts.
TFMOT_ACTIVATIONS = {"relu", "relu6", "swish", "gelu", "linear", "softmax", "sigmoid", "tanh"}


# Weightless layers that combine or rescale tensors: an output quantizer is all they need.
_OUTPUT_QUANTIZED = (
    keras.layers.Multiply,
    keras.layers.Subtract,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Average,
    keras.layers.Rescaling,
    keras.layers.Normalization,
    ConstantAdd,
    keras.layers.LayerNormalization,  # no tfmot config (tfmot#942): gamma and beta stay float, as in TFLite
)


# Layers whose following BatchNormalization tfmot folds in (its Conv+BN transforms).
_FOLDS_BATCHNORM = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _folded_by_tfmot(bn) -> bool:
    """True when tfmot folds this BatchNormalization into the convolution before it: that
    convolution feeds it and nothing else."""
    nodes = calls(bn)
    inbound = nodes[0].inbound_layers if nodes else []
    inbound = inbound if isinstance(inbound, (list, tuple)) else [inbound]
    return len(inbound) == 1 and type(inbound[0]) in _FOLDS_BATCHNORM and len(consumers(inbound[0])) == 1


def edgekit_config(layer):
    """edgekit's QuantizeConfig for ``layer``, or None when tfmot handles it (or nobody does).

    A BatchNormalization tfmot does not fold (DenseNet's and NASNet's, after a concatenation or an
    activation) keeps its float parameters and gets an output quantizer: the int8 converter turns
    it into an integer multiply and add. An AveragePooling1D/2D gets no quantizer of its own: TFLite's
    int8 average pooling needs its output on its input's scale (tfmot's own config gives it a
    second quantizer, which the converter rejects: "same scale constraint"); nor does a MaxPooling1D
    (tfmot's registry knows MaxPooling2D only, without a quantizer, for the same reason)."""
    if isinstance(layer, _OUTPUT_QUANTIZED):
        return OutputQuantizeConfig()
    if isinstance(layer, keras.layers.BatchNormalization) and not _folded_by_tfmot(layer):
        return OutputQuantizeConfig()
    if type(layer) in (keras.layers.AveragePooling2D, keras.layers.AveragePooling1D, keras.layers.MaxPooling1D):
        from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
            default_8bit_quantize_configs as c8,
        )

        return c8.NoOpQuantizeConfig()
    if type(layer) is keras.layers.Embedding:
        return EmbeddingQuantizeConfig()
    if type(layer) is keras.layers.Conv1D:  # tfmot's registry knows Conv2D only: the same scheme, per tensor
        from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
            default_8bit_quantize_registry as q8,
        )

        return q8.Default8BitQuantizeConfig(["kernel"], ["activation"], False)
    if isinstance(layer, keras.layers.Activation):
        name = getattr(layer.activation, "__name__", None)
        if name not in TFMOT_ACTIVATIONS:
            return OutputQuantizeConfig()
    return None


class _PerChannelDepthwise(tfmot().quantization.keras.QuantizeScheme):
    """A tfmot scheme whose ``DepthwiseConv2D`` kernels are quantized per channel
    (:class:`edgekit.core.layers.DepthwiseQuantizeConfig`), as the int8 converter quantizes them
    after training. None of tfmot's sparsity- or cluster-preserving schemes acts on depthwise
    kernels, so the config replaced is the plain one in every scheme."""

    def __init__(self, scheme):
        self.scheme = scheme

    def get_layout_transformer(self):
        return self.scheme.get_layout_transformer()

    def get_quantize_registry(self):
        return _DepthwiseRegistry(self.scheme.get_quantize_registry())


class _DepthwiseRegistry(tfmot().quantization.keras.QuantizeRegistry):
    def __init__(self, registry):
        self.registry = registry

    def supports(self, layer):
        return self.registry.supports(layer)

    def get_quantize_config(self, layer):
        config = self.registry.get_quantize_config(layer)
        if isinstance(layer, keras.layers.DepthwiseConv2D) and type(config).__name__ == "Default8BitConvQuantizeConfig":
            return DepthwiseQuantizeConfig(config.weight_attrs, config.activation_attrs, config.quantize_output)
        return config


def scheme(preserve: str):
    """The tfmot scheme of ``preserve`` (none, sparsity, clusters, both), depthwise kernels per channel."""
    combine = tfmot().experimental.combine
    base = {
        "none": tfmot().quantization.keras.default_8bit.Default8BitQuantizeScheme,
        "sparsity": combine.Default8BitPrunePreserveQuantizeScheme,
        "clusters": lambda: combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False),
        "both": lambda: combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True),
    }[preserve]()
    return _PerChannelDepthwise(base)


_ORDER_LOCK = threading.Lock()


@contextlib.contextmanager
def inputs_in_order():
    """tfmot 0.8's graph transformer matches a multi-input pattern (its Concatenate transforms)
    against the input layers in the order they stand in the model's config, not in the order the
    layer takes them, and rebuilds the layer's inputs in that order: once an earlier transform
    (Conv+BatchNorm+ReLU) has moved one input's layers to the end of the config,
    ``Concatenate([a, b])`` becomes ``Concatenate([b, a])`` and every layer after it computes
    garbage (measured: QAT of a model with such a concatenation started at 0.42 train accuracy
    against post-training int8's 0.97; tensorflow/model-optimization#1061, open). While this is
    active the input layers come in the order the layer takes them. No public way exists: this
    replaces tfmot's private ``ModelTransformer._get_layers`` for the block, under a lock."""
    from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (
        model_transformer as mt,
    )

    def in_order(self, layer_names):
        by_name = {layer["config"]["name"]: layer for layer in self._config["layers"]}
        return [by_name[n] for n in dict.fromkeys(layer_names) if n in by_name]

    with _ORDER_LOCK:
        original = mt.ModelTransformer._get_layers
        mt.ModelTransformer._get_layers = in_order
        try:
            yield
        finally:
            mt.ModelTransformer._get_layers = original
