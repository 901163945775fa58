"""Large reference points for comparisons: VGG-16 and ResNet-50 (random weights).

At their defaults (224x224x3, 1000 classes) they match keras.applications: VGG-16 138,357,544
params (528 MB float32), ResNet-50 25,636,712 params. ``width`` scales every layer's channels
for the small configurations that train on the embedded data.
"""

from __future__ import annotations

from typing import Sequence

from edgekit.core.compat import keras
from edgekit.core.errors import InputError
from edgekit.models.mobilenet_v2 import DEFAULT_BN_MOMENTUM

VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
RESNET50_STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))


def _channels(c: int, width: float) -> int:
    if width <= 0:
        raise InputError("{width} must be > 0; received {value}", params="width", value=width)
    return max(1, int(round(c * width)))


def vgg16(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    *,
    width: float = 1.0,
    fc_units: int = 4096,
    name: str = "vgg16",
):
    """VGG-16 (Simonyan & Zisserman): 13 3x3 convs in five stages, each followed by 2x2 max
    pooling, then two ``fc_units`` dense layers."""
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    for s, (filters, convs) in enumerate(VGG16_STAGES):
        for c in range(convs):
            x = keras.layers.Conv2D(
                _channels(filters, width), 3, padding="same", activation="relu", name=f"block{s + 1}_conv{c + 1}"
            )(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{s + 1}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(fc_units, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(fc_units, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet50(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    *,
    width: float = 1.0,
    bn_momentum: float = DEFAULT_BN_MOMENTUM,
    name: str = "resnet50",
):
    """ResNet-50 v1 (He et al.): a 7x7 stride-2 stem, max pooling, and 3-4-6-3 bottleneck blocks
    with projection shortcuts, as keras.applications builds it (convs with biases)."""

    def conv_bn(x, filters, kernel, stride, prefix, relu=True):
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", name=f"{prefix}_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=1.001e-5, momentum=bn_momentum, name=f"{prefix}_bn")(x)
        return keras.layers.ReLU(name=f"{prefix}_relu")(x) if relu else x

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = conv_bn(inputs, _channels(64, width), 7, 2, "stem")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for s, (filters, blocks) in enumerate(RESNET50_STAGES):
        f = _channels(filters, width)
        for b in range(blocks):
            stride = 2 if b == 0 and s > 0 else 1
            prefix = f"stage{s + 2}_block{b + 1}"
            shortcut = x
            if b == 0:
                shortcut = conv_bn(x, 4 * f, 1, stride, f"{prefix}_shortcut", relu=False)
            y = conv_bn(x, f, 1, stride, f"{prefix}_1")
            y = conv_bn(y, f, 3, 1, f"{prefix}_2")
            y = conv_bn(y, 4 * f, 1, 1, f"{prefix}_3", relu=False)
            x = keras.layers.ReLU(name=f"{prefix}_out")(keras.layers.Add(name=f"{prefix}_add")([shortcut, y]))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)
