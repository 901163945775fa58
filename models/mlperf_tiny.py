"""The MLPerf Tiny reference models (mlcommons/tiny, v0.5 training code), as tf_keras builders.

Parameter counts of the reference definitions (and of these builders at their defaults):
- ``ds_cnn`` keyword spotting, 49x10x1 MFCC, 12 classes: 24,908 (the reference model summary).
- ``resnet8`` image classification, CIFAR-10 32x32x3, 10 classes, 16/32/64 filters: 78,666
  (the MLPerf Tiny paper's "78K").
- ``fc_autoencoder`` anomaly detection, 640 inputs (5 frames x 128 mel bins): 269,992 (the
  paper's "270K").
The reference trains ResNet-8 with an L2 weight decay; here regularization is the caller's choice.
"""

from __future__ import annotations

from typing import Sequence

from edgekit.core.compat import keras
from edgekit.models.mobilenet_v2 import DEFAULT_BN_MOMENTUM


def ds_cnn(
    input_shape: Sequence[int] = (49, 10, 1),
    classes: int = 12,
    *,
    filters: int = 64,
    blocks: int = 4,
    bn_momentum: float = DEFAULT_BN_MOMENTUM,
    name: str = "ds_cnn",
):
    """Depthwise-separable CNN for keyword spotting (Zhang et al., "Hello Edge")."""
    bn = lambda x: keras.layers.BatchNormalization(momentum=bn_momentum)(x)  # noqa: E731
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = keras.layers.Conv2D(filters, (10, 4), strides=2, padding="same")(inputs)
    x = keras.layers.ReLU()(bn(x))
    x = keras.layers.Dropout(0.2)(x)
    for _ in range(blocks):
        x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
        x = keras.layers.ReLU()(bn(x))
        x = keras.layers.Conv2D(filters, 1, padding="same")(x)
        x = keras.layers.ReLU()(bn(x))
    x = keras.layers.Dropout(0.4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)  # the reference's full-size AveragePooling2D
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet8(
    input_shape: Sequence[int] = (32, 32, 3),
    classes: int = 10,
    *,
    filters: Sequence[int] = (16, 32, 64),
    bn_momentum: float = DEFAULT_BN_MOMENTUM,
    name: str = "resnet8",
):
    """ResNet-8: a 3x3 stem and three residual stacks of two 3x3 convs (stride 2 and a 1x1
    projection shortcut from the second stack on)."""

    def bn(x):
        return keras.layers.BatchNormalization(momentum=bn_momentum)(x)

    def conv(f, k, s):
        return keras.layers.Conv2D(f, k, strides=s, padding="same", kernel_initializer="he_normal")

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = keras.layers.ReLU()(bn(conv(filters[0], 3, 1)(inputs)))
    for i, f in enumerate(filters):
        stride = 1 if i == 0 else 2
        y = keras.layers.ReLU()(bn(conv(f, 3, stride)(x)))
        y = bn(conv(f, 3, 1)(y))
        if stride != 1 or x.shape[-1] != f:
            x = conv(f, 1, stride)(x)
        x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def fc_autoencoder(
    input_dim: int = 640,
    *,
    hidden: int = 128,
    bottleneck: int = 8,
    depth: int = 4,
    bn_momentum: float = DEFAULT_BN_MOMENTUM,
    name: str = "fc_autoencoder",
):
    """Fully connected autoencoder for anomaly detection: ``depth`` Dense-BN-ReLU layers of
    ``hidden`` units each side of a ``bottleneck``; the output reconstructs the input."""
    inputs = keras.Input(shape=(int(input_dim),), name="input")
    x = inputs
    for units in [hidden] * depth + [bottleneck] + [hidden] * depth:
        x = keras.layers.Dense(units)(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum)(x)
        x = keras.layers.ReLU()(x)
    outputs = keras.layers.Dense(int(input_dim), name="reconstruction")(x)
    return keras.Model(inputs, outputs, name=name)
