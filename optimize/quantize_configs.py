"""QuantizeConfigs for common layers that tfmot's default 8-bit registry rejects.

Measured with tfmot 0.8: ``quantize_model`` stops at ``Multiply`` (squeeze-excite), ``Rescaling``,
``Normalization`` (keras.applications' preprocessing), ``Conv1D`` and ``Activation('hard_sigmoid')`` (and every activation other than relu/relu6/swish/gelu/linear/
softmax/sigmoid/tanh). ``Reshape``, ``UpSampling2D`` (nearest and bilinear), ``Conv2DTranspose``
and ``Activation('sigmoid'/'swish')`` are handled by tfmot itself. These layers have no weights to
quantize: their output gets an 8-bit moving-average quantizer (:class:`edgekit.layers.OutputQuantizeConfig`,
in the base layer so that a saved QAT model loads without this module), which is what the int8
converter needs to give the op an integer output.
"""

from __future__ import annotations

from edgekit.compat import keras
from edgekit.layers import EmbeddingQuantizeConfig, OutputQuantizeConfig

# Activations tfmot's Default8BitActivationQuantizeConfig accepts.
TFMOT_ACTIVATIONS = {"relu", "relu6", "swish", "gelu", "linear", "softmax", "sigmoid", "tanh"}


# Weightless layers that combine or rescale tensors: an output quantizer is all they need.
_OUTPUT_QUANTIZED = (keras.layers.Multiply, keras.layers.Subtract, keras.layers.Maximum, keras.layers.Minimum,
                     keras.layers.Average, keras.layers.Rescaling, keras.layers.Normalization)


def edgekit_config(layer):
    """edgekit's QuantizeConfig for ``layer``, or None when tfmot handles it (or nobody does)."""
    if isinstance(layer, _OUTPUT_QUANTIZED):
        return OutputQuantizeConfig()
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
