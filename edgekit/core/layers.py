"""The custom Keras objects edgekit's models and files may hold, in the base layer so that loading
a file needs nothing above it: the tied embedding of ``tied_lm``, a recorded constant's addition,
the pruning schedule of ``prune`` and the QuantizeConfigs of ``qat`` (outputs, embeddings, depthwise kernels). Each is
registered with Keras under the ``edgekit>`` package; :data:`CUSTOM_OBJECTS` names them for loading
scopes."""

from __future__ import annotations

import math
from typing import Optional

from edgekit.core.compat import keras, tf, tfmot
from edgekit.core.errors import InputError

_quantizers = tfmot().quantization.keras.quantizers
QuantizeConfig = tfmot().quantization.keras.QuantizeConfig


@keras.utils.register_keras_serializable(package="edgekit")
class TiedEmbedding(keras.layers.Embedding):
    """An ``Embedding`` that is also the output projection: ``layer(ids)`` looks rows up,
    ``layer(h, attend=True)`` returns ``h @ embeddings.T`` (logits over the vocabulary), plus a
    per-token bias with ``output_bias=True``."""

    def __init__(self, input_dim, output_dim, output_bias: bool = False, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        self.output_bias = bool(output_bias)

    def build(self, input_shape=None):
        super().build(input_shape)
        if self.output_bias:
            self.bias = self.add_weight(name="output_bias", shape=(self.input_dim,), initializer="zeros")

    def get_config(self):
        return dict(super().get_config(), output_bias=self.output_bias)

    def call(self, inputs, attend: bool = False):
        if attend:
            logits = tf.matmul(inputs, self.embeddings, transpose_b=True)
            return logits + self.bias if self.output_bias else logits
        return super().call(inputs)

    def compute_output_shape(self, input_shape, attend: bool = False):
        if attend:
            return tuple(input_shape[:-1]) + (self.input_dim,)
        return super().compute_output_shape(input_shape)


@keras.utils.register_keras_serializable(package="edgekit")
class ConstantAdd(keras.layers.Layer):
    """``x + c`` for a constant tensor ``c`` a functional model recorded (a position table looked up
    once, ``x + embedding(arange(n))``): ``c`` kept as a non-trainable weight, so the layer clones,
    saves and quantizes like any other (as an op layer the constant became a list in its config).
    ``sign=-1``: ``c - x``."""

    def __init__(self, shape=(), sign: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.constant_shape, self.sign = tuple(int(d) for d in shape), float(sign)

    def build(self, input_shape=None):
        self.constant = self.add_weight(
            name="constant", shape=self.constant_shape, initializer="zeros", trainable=False
        )
        super().build(input_shape)

    def call(self, inputs):
        return self.constant + inputs if self.sign > 0 else self.constant - inputs

    def get_config(self):
        return dict(super().get_config(), shape=list(self.constant_shape), sign=self.sign)


@keras.utils.register_keras_serializable(package="edgekit")
class FitLengthSchedule(tfmot().sparsity.keras.PruningSchedule):
    """Polynomial ramp (cubic, as tfmot's PolynomialDecay) from 0 to ``target`` over steps
    0…``end_step``, masks updated every ``frequency`` steps with the last update exactly at
    ``end_step``; held afterwards. ``end_step`` can be set when the fine-tune length becomes
    known (at ``fit``): it is a variable read at run time."""

    def __init__(self, target: float, end_step: int = -1, frequency: int = 1, ramp_fraction: float = 0.75):
        self.target = float(target)
        self.ramp_fraction = float(ramp_fraction)
        self.end_step = tf.Variable(int(end_step), dtype=tf.int64, trainable=False)
        self.frequency = tf.Variable(max(1, int(frequency)), dtype=tf.int64, trainable=False)

    def set_length(self, steps: int, ramp_fraction: Optional[float] = None) -> None:
        """Ramp over the first ``ramp_fraction`` (default: the schedule's own) of ``steps`` batches."""
        ramp_fraction = self.ramp_fraction if ramp_fraction is None else float(ramp_fraction)
        # tfmot's wrapper never updates masks at step 0 (measured): the last update must be at >= 1.
        if int(steps) < 2:
            raise InputError(
                f"prune: a fine-tune of {steps} step(s) cannot prune; masks are updated from the "
                "second step on: fine-tune for at least 2 batches"
            )
        end = max(1, int(math.floor(ramp_fraction * (int(steps) - 1))))
        self.end_step.assign(end)
        self.frequency.assign(max(1, end // 32))

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        end = self.end_step
        in_range = tf.logical_and(step >= 0, step <= end)
        on_beat = tf.equal(tf.math.floormod(end - step, self.frequency), 0)
        frac = tf.where(end > 0, tf.cast(step, tf.float32) / tf.cast(tf.maximum(end, 1), tf.float32), 1.0)
        frac = tf.clip_by_value(frac, 0.0, 1.0)
        sparsity = self.target * (1.0 - tf.pow(1.0 - frac, 3.0))
        return tf.logical_and(in_range, on_beat), sparsity

    def get_config(self):
        return {
            "class_name": "FitLengthSchedule",
            "config": {
                "target": self.target,
                "end_step": int(self.end_step.numpy()),
                "frequency": int(self.frequency.numpy()),
                "ramp_fraction": self.ramp_fraction,
            },
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config.get("config", config))


class OutputQuantizeConfig(QuantizeConfig):
    """A weightless layer whose output is quantized to 8 bits (asymmetric, per tensor)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_activation_quantizer()]

    def get_config(self):
        return {}


class EmbeddingQuantizeConfig(QuantizeConfig):
    """An ``Embedding``: its table quantized to 8 bits per tensor (symmetric, as the int8 converter
    stores a GATHER table) and its output quantized; its integer input (token ids) is not."""

    def get_weights_and_quantizers(self, layer):
        return [
            (
                layer.embeddings,
                _quantizers.LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True, narrow_range=True),
            )
        ]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        layer.embeddings = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return OutputQuantizeConfig().get_output_quantizers(layer)

    def get_config(self):
        return {}


def _activation_quantizer():
    """tfmot's default 8-bit activation quantizer (asymmetric, per tensor, moving average)."""
    return _quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


class DepthwiseWeightsQuantizer(_quantizers.LastValueQuantizer):
    """A ``DepthwiseConv2D`` kernel (kh, kw, C, M) quantized per output channel, C·M ranges, as
    the int8 converter quantizes it after training. tfmot's conv weight quantizer takes the last
    axis, M (the depth multiplier, 1 for almost every depthwise layer), so it puts every channel
    of a depthwise kernel on one grid, and the QAT model starts less accurate than the
    post-training int8 model (measured: train loss 0.105 against 0.091)."""

    def __init__(self):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

    @staticmethod
    def _flat(shape):
        return [shape[0], shape[1], 1, shape[2] * shape[3]]  # the output channels on the last axis

    def build(self, tensor_shape, name, layer):
        return super().build(tf.TensorShape(self._flat(tensor_shape)), name, layer)

    def __call__(self, inputs, training, weights, **kwargs):
        flat = tf.reshape(inputs, self._flat(inputs.shape))
        return tf.reshape(super().__call__(flat, training, weights, **kwargs), inputs.shape)

    def get_config(self):
        return {}


class DepthwiseQuantizeConfig(QuantizeConfig):
    """tfmot's 8-bit scheme for a ``DepthwiseConv2D`` (the kernel, the activation, the output when
    ``quantize_output``) with the kernel quantized per channel (:class:`DepthwiseWeightsQuantizer`)."""

    def __init__(self, weight_attrs=("depthwise_kernel",), activation_attrs=("activation",), quantize_output=False):
        self.weight_attrs = list(weight_attrs)
        self.activation_attrs = list(activation_attrs)
        self.quantize_output = bool(quantize_output)

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, a), DepthwiseWeightsQuantizer()) for a in self.weight_attrs]

    def get_activations_and_quantizers(self, layer):
        return [(getattr(layer, a), _activation_quantizer()) for a in self.activation_attrs]

    def set_quantize_weights(self, layer, quantize_weights):
        for attr, weight in zip(self.weight_attrs, quantize_weights):
            setattr(layer, attr, weight)

    def set_quantize_activations(self, layer, quantize_activations):
        for attr, activation in zip(self.activation_attrs, quantize_activations):
            setattr(layer, attr, activation)

    def get_output_quantizers(self, layer):
        return [_activation_quantizer()] if self.quantize_output else []

    def get_config(self):
        return {
            "weight_attrs": self.weight_attrs,
            "activation_attrs": self.activation_attrs,
            "quantize_output": self.quantize_output,
        }


CUSTOM_OBJECTS = {
    "TiedEmbedding": TiedEmbedding,
    "ConstantAdd": ConstantAdd,
    "FitLengthSchedule": FitLengthSchedule,
    "OutputQuantizeConfig": OutputQuantizeConfig,
    "EmbeddingQuantizeConfig": EmbeddingQuantizeConfig,
    "DepthwiseQuantizeConfig": DepthwiseQuantizeConfig,
    "DepthwiseWeightsQuantizer": DepthwiseWeightsQuantizer,
}
