"""MobileNetV2 (Sandler et al., 2018): inverted residual blocks with linear bottlenecks.

The default configuration is the paper's (and keras.applications'): with ``alpha=1.0``,
``input_shape=(224, 224, 3)`` and ``classes=1000`` it has 3,538,984 parameters. ``blocks``,
``stem_filters`` and ``head_filters`` give the smaller variants that edge boards and small data
sets need; :data:`DIGITS_CONFIG` is the one the demo trains on the embedded digits data.

Every layer is a TFLite builtin (CONV_2D, DEPTHWISE_CONV_2D, ADD, MEAN, FULLY_CONNECTED, SOFTMAX);
BatchNormalization follows each bias-free conv so the converter folds it away.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

from edgekit.core.compat import keras
from edgekit.core.errors import InputError

# (expansion t, output channels c, repeats n, first stride s): Table 2 of the paper.
PAPER_BLOCKS: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# A 32x32 single-channel variant for the embedded digits data: the paper's block structure and
# tail widths (160 -> 320 -> 1280), shallower and with 4x expansion, ~890k parameters. Stride 16
# overall, so the wide tail runs at 4x4 and stays cheap; most weights sit in layers with many
# inputs per output channel, which keeps per-channel quantization overhead (scale + zero point
# for weight and bias, ~28 bytes a channel) small and the int8 file under 0.3x the float one.
DIGITS_CONFIG = dict(
    input_shape=(32, 32, 1),
    classes=10,
    stem_filters=16,
    blocks=((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 1), (4, 160, 1, 1), (4, 320, 1, 1)),
    head_filters=1280,
    dropout=0.2,
)

# BatchNormalization momentum. Keras' 0.99 lags far behind on small data sets (a digits model
# measured 100% train / 8-16% test accuracy in inference mode after ~330 steps); 0.9 tracks.
DEFAULT_BN_MOMENTUM = 0.9


def check_classifier_args(input_shape, alpha: float, classes: int, dropout: float) -> None:
    """The argument checks shared by the image classifier builders."""
    if alpha <= 0:
        raise InputError("{alpha} must be > 0; received {value}", params="alpha", value=alpha)
    if classes < 1:
        raise InputError("{classes} must be >= 1; received {value}", params="classes", value=classes)
    if not 0.0 <= dropout < 1.0:
        raise InputError("{dropout} must be in [0, 1); received {value}", params="dropout", value=dropout)
    if len(tuple(input_shape)) != 3:
        raise InputError(
            "{input_shape} must be (height, width, channels); received {value}", params="input_shape", value=input_shape
        )


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never dropping more than 10%."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def mobilenet_v2(
    input_shape: Sequence[int] = (224, 224, 3),
    alpha: float = 1.0,
    classes: int = 1000,
    *,
    blocks: Sequence[Tuple[int, int, int, int]] = PAPER_BLOCKS,
    stem_filters: int = 32,
    head_filters: Optional[int] = 1280,
    dropout: float = 0.0,
    bn_momentum: float = DEFAULT_BN_MOMENTUM,
    name: str = "mobilenet_v2",
) -> "keras.Model":
    """Build a MobileNetV2 classifier as a tf_keras functional model.

    ``alpha`` scales every layer's width (rounded to multiples of 8). As in the paper, the head is
    widened with ``alpha > 1`` but not narrowed below ``head_filters`` for ``alpha < 1``.
    ``head_filters=None`` drops the final 1x1 conv.
    """
    check_classifier_args(input_shape, alpha, classes, dropout)

    def bn(x, prefix):
        return keras.layers.BatchNormalization(epsilon=1e-3, momentum=bn_momentum, name=f"{prefix}_bn")(x)

    def relu6(x, prefix):
        return keras.layers.ReLU(6.0, name=f"{prefix}_relu6")(x)

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = keras.layers.Conv2D(
        make_divisible(stem_filters * alpha),
        3,
        strides=2,
        padding="same",
        use_bias=False,
        name="stem_conv",
    )(inputs)
    x = relu6(bn(x, "stem"), "stem")

    block_id = 0
    for expansion, channels, repeats, first_stride in blocks:
        out_channels = make_divisible(int(channels * alpha))  # int() first, as keras.applications
        for i in range(repeats):
            x = _inverted_residual(x, expansion, out_channels, first_stride if i == 0 else 1, block_id, bn, relu6)
            block_id += 1

    if head_filters:
        width = make_divisible(head_filters * alpha) if alpha > 1.0 else head_filters
        x = keras.layers.Conv2D(width, 1, use_bias=False, name="head_conv")(x)
        x = relu6(bn(x, "head"), "head")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def _inverted_residual(x, expansion, out_channels, stride, block_id, bn, relu6):
    prefix = f"block{block_id}"
    in_channels = x.shape[-1]
    shortcut = x
    if expansion != 1:
        x = keras.layers.Conv2D(expansion * in_channels, 1, use_bias=False, name=f"{prefix}_expand")(x)
        x = relu6(bn(x, f"{prefix}_expand"), f"{prefix}_expand")
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{prefix}_depthwise")(x)
    x = relu6(bn(x, f"{prefix}_depthwise"), f"{prefix}_depthwise")
    x = keras.layers.Conv2D(out_channels, 1, use_bias=False, name=f"{prefix}_project")(x)
    x = bn(x, f"{prefix}_project")  # linear bottleneck: no activation
    if stride == 1 and in_channels == out_channels:
        x = keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
    return x
