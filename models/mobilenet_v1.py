"""MobileNetV1 (Howard et al., 2017), and its "Conv MobileNet" twin with standard 3x3 convs.

``alpha=1.0``, 224x224x3, 1000 classes: 4,253,864 params (keras.applications.MobileNet) and
569M MACs. ``separable=False`` replaces every depthwise-separable block with a full 3x3 conv:
29.3M params and 4.87G MACs in the paper's Table 4 — the measured case for efficient design.
The 0.25 version at 96x96x3 with 2 classes is the MLPerf Tiny visual-wake-words reference.
"""

from __future__ import annotations

from typing import Sequence

from edgekit.core.compat import keras
from edgekit.models.mobilenet_v2 import DEFAULT_BN_MOMENTUM, check_classifier_args

# (pointwise filters, stride) of the 13 depthwise-separable blocks.
BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def mobilenet_v1(
    input_shape: Sequence[int] = (224, 224, 3),
    alpha: float = 1.0,
    classes: int = 1000,
    *,
    separable: bool = True,
    dropout: float = 0.0,
    bn_momentum: float = DEFAULT_BN_MOMENTUM,
    name: str = "mobilenet_v1",
):
    check_classifier_args(input_shape, alpha, classes, dropout)

    def bn_relu6(x, prefix):
        x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{prefix}_bn")(x)
        return keras.layers.ReLU(6.0, name=f"{prefix}_relu6")(x)

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = keras.layers.Conv2D(int(32 * alpha), 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = bn_relu6(x, "stem")
    for i, (filters, stride) in enumerate(BLOCKS):
        filters = int(filters * alpha)
        if separable:
            x = keras.layers.DepthwiseConv2D(
                3, strides=stride, padding="same", use_bias=False, name=f"block{i}_depthwise"
            )(x)
            x = bn_relu6(x, f"block{i}_depthwise")
            x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"block{i}_pointwise")(x)
            x = bn_relu6(x, f"block{i}_pointwise")
        else:
            x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"block{i}_conv")(
                x
            )
            x = bn_relu6(x, f"block{i}_conv")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name if separable else f"{name}_conv")
