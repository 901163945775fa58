"""Keras 3 ↔ tf_keras: every layer type the bridge supports translates exactly (max |Δ| ≤ 1e-5 on
random inputs, both ways), keras.applications models too, and a Keras 3 file goes through every
command."""

import json
import os

import keras  # Keras 3, as a training script written today imports it
import numpy as np
import pytest
from conftest import run_cli

from edgekit.core.bridge import TranslationError, check_translation, from_keras3
from edgekit.core.to_keras3 import to_keras3

L = keras.layers
ops = keras.ops

# layer type → (builder of the output from an input, input shape, input dtype)
LAYERS = {
    "Dense": (lambda x: L.Dense(5)(L.Flatten()(x)), (6, 6, 3), "float32"),
    "Dense(swish)": (lambda x: L.Dense(5, activation="swish")(L.Flatten()(x)), (6, 6, 3), "float32"),
    "Conv1D": (lambda x: L.Conv1D(4, 3, padding="causal")(x), (12, 3), "float32"),
    "Conv2D": (lambda x: L.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x), (8, 8, 3), "float32"),
    "Conv2D(groups)": (lambda x: L.Conv2D(6, 3, groups=3)(x), (8, 8, 3), "float32"),
    "Conv2D(hard_swish)": (lambda x: L.Conv2D(4, 1, activation="hard_swish")(x), (8, 8, 3), "float32"),
    "DepthwiseConv2D": (lambda x: L.DepthwiseConv2D(3, depth_multiplier=2)(x), (8, 8, 3), "float32"),
    "SeparableConv2D": (lambda x: L.SeparableConv2D(4, 3, padding="same")(x), (8, 8, 3), "float32"),
    "Conv2DTranspose": (lambda x: L.Conv2DTranspose(4, 3, strides=2, padding="same")(x), (8, 8, 3), "float32"),
    "BatchNormalization": (lambda x: L.BatchNormalization()(x), (8, 8, 3), "float32"),
    "LayerNormalization": (lambda x: L.LayerNormalization()(x), (8, 8, 3), "float32"),
    "Normalization": (
        lambda x: L.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 3.0])(x),
        (8, 8, 3),
        "float32",
    ),
    "Rescaling": (lambda x: L.Rescaling(1 / 127.5, offset=-1)(x), (8, 8, 3), "float32"),
    "ReLU": (lambda x: L.ReLU(6.0)(x), (8, 8, 3), "float32"),
    "LeakyReLU": (lambda x: L.LeakyReLU(negative_slope=0.3)(x), (8, 8, 3), "float32"),
    "PReLU": (lambda x: L.PReLU()(x), (8, 8, 3), "float32"),
    "ELU": (lambda x: L.ELU()(x), (8, 8, 3), "float32"),
    "Softmax": (lambda x: L.Softmax()(x), (8, 8, 3), "float32"),
    "Activation(hard_sigmoid)": (lambda x: L.Activation("hard_sigmoid")(x), (8, 8, 3), "float32"),
    "Activation(gelu)": (lambda x: L.Activation("gelu")(x), (8, 8, 3), "float32"),
    "MaxPooling2D": (lambda x: L.MaxPooling2D()(x), (8, 8, 3), "float32"),
    "AveragePooling2D": (lambda x: L.AveragePooling2D(2)(x), (8, 8, 3), "float32"),
    "GlobalAveragePooling2D": (lambda x: L.GlobalAveragePooling2D(keepdims=True)(x), (8, 8, 3), "float32"),
    "GlobalMaxPooling1D": (lambda x: L.GlobalMaxPooling1D()(x), (12, 3), "float32"),
    "ZeroPadding2D": (lambda x: L.ZeroPadding2D(((1, 0), (0, 1)))(x), (8, 8, 3), "float32"),
    "Cropping2D": (lambda x: L.Cropping2D(1)(x), (8, 8, 3), "float32"),
    "UpSampling2D": (lambda x: L.UpSampling2D(interpolation="bilinear")(x), (8, 8, 3), "float32"),
    "Flatten+Reshape": (lambda x: L.Reshape((24, 8))(L.Flatten()(x)), (8, 8, 3), "float32"),
    "Permute": (lambda x: L.Permute((2, 1, 3))(x), (8, 8, 3), "float32"),
    "Dropout": (lambda x: L.Dropout(0.5)(x), (8, 8, 3), "float32"),
    "Add": (lambda x: L.Add()([x, L.Conv2D(3, 1)(x)]), (8, 8, 3), "float32"),
    "Multiply": (lambda x: L.Multiply()([x, L.Activation("sigmoid")(x)]), (8, 8, 3), "float32"),
    "Subtract": (lambda x: L.Subtract()([x, L.ReLU()(x)]), (8, 8, 3), "float32"),
    "Concatenate": (lambda x: L.Concatenate()([x, L.Conv2D(2, 1)(x)]), (8, 8, 3), "float32"),
    "Maximum": (lambda x: L.Maximum()([x, L.Conv2D(3, 1)(x)]), (8, 8, 3), "float32"),
    "Embedding": (lambda x: L.Embedding(50, 4)(x), (10,), "int32"),
    "op x + 3.0 (hard swish)": (lambda x: x * (L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)), (8, 8, 3), "float32"),
    "op mean": (lambda x: ops.mean(x, axis=[1, 2], keepdims=True), (8, 8, 3), "float32"),
    "nested Sequential": (
        lambda x: keras.Sequential([L.Conv2D(4, 3), L.ReLU()], name="stage")(x),
        (8, 8, 3),
        "float32",
    ),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_each_layer_type_translates_exactly_both_ways(kind):
    make, shape, dtype = LAYERS[kind]
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape, dtype=dtype)
    model = keras.Model(inp, make(inp))
    tfk = from_keras3(model)  # checks itself: it raises when the outputs differ
    assert type(tfk).__module__.startswith("tf_keras")
    assert check_translation(model, tfk) <= 1e-5
    if kind != "nested Sequential":  # inlined: the tf_keras model is flat
        assert check_translation(tfk, to_keras3(tfk)) <= 1e-5


@pytest.mark.parametrize("name", ["MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "ResNet50"])
def test_applications_translate_exactly(name):
    model = getattr(keras.applications, name)(input_shape=(32, 32, 3), weights=None, classes=10)
    tfk = from_keras3(model)
    x = np.random.default_rng(1).random((4, 32, 32, 3), dtype=np.float32) * 255
    assert check_translation(model, tfk, x) <= 1e-5


def test_a_layer_tf_keras_lacks_is_named():
    inp = keras.Input((8,))
    model = keras.Model(inp, L.Dense(4, activation="squareplus")(inp))
    with pytest.raises(TranslationError, match="squareplus"):
        from_keras3(model)


def test_a_keras3_file_goes_through_the_commands(tmp_path, digits_ds):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            L.Conv2D(8, 3, activation="relu"),
            L.MaxPooling2D(),
            L.Conv2D(16, 3, activation="relu"),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dropout(0.5),
            L.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits_ds.x_train[:256], digits_ds.y_train[:256], epochs=1, verbose=0)
    path = str(tmp_path / "k3.keras")
    model.save(path)
    proc = run_cli("profile", path, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["params"] == model.count_params()
    proc = run_cli("export", path, "--quant", "int8", "--data", "digits", "-o", tmp_path / "m.tflite")
    assert proc.returncode == 0, proc.stderr
    assert "fully integer: yes" in proc.stdout
    proc = run_cli("optimize", path, "--data", "digits", "--prune", "0.5", "--epochs", "1", "-o", tmp_path / "p.keras")
    assert proc.returncode == 0, proc.stderr
    assert "Keras 3, as the input" in proc.stdout
    pruned = keras.saving.load_model(str(tmp_path / "p.keras"))  # Keras 3 reads its own flavour back
    kernels = [w for w in pruned.get_weights() if w.ndim > 1]
    assert 0.45 <= np.mean([np.mean(k == 0) for k in kernels]) <= 0.55
    assert os.path.isfile(tmp_path / "m.tflite")


def _keras3_branchy(classes=4):
    """A Keras 3 functional model with the layers channel pruning must see through: Add (and Keras 3's
    own op names beside it), BatchNormalization, hard-swish, depthwise, SeparableConv2D,
    LayerNormalization, Concatenate, squeeze-excite."""
    i = keras.Input((24, 24, 1))
    x = L.Conv2D(16, 3, padding="same", use_bias=False)(i)
    x = L.BatchNormalization()(x)
    x = L.Activation("hard_swish")(x)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization()(y)
    y = L.ReLU(6.0)(y)
    y = L.Conv2D(16, 1, use_bias=False)(y)
    y = L.BatchNormalization()(y)
    x = L.Add()([x, y])
    s = L.GlobalAveragePooling2D()(x)
    s = L.Dense(8, activation="relu")(s)
    s = L.Dense(16, activation="sigmoid")(s)
    x = L.Multiply()([x, L.Reshape((1, 1, 16))(s)])
    a = L.SeparableConv2D(16, 3, padding="same", activation="relu")(x)
    b = L.Conv2D(8, 1, activation="relu")(x)
    x = L.Concatenate()([a, b])
    x = L.Conv2D(24, 3, strides=2, padding="same")(x)
    x = L.LayerNormalization()(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(32, activation="relu")(x)
    return keras.Model(i, L.Dense(classes)(x))


def test_keras3_channel_pruning_of_a_branchy_model_writes_a_keras3_file(tmp_path):
    """Keras 3 names recorded ops ``add``, ``add_1`` … from a counter a translated ``Add`` layer
    called ``add`` does not advance: the translation back must not collide with them."""
    rng = np.random.default_rng(0)
    x = rng.random((192, 24, 24, 1), dtype=np.float32)
    y = (x[:, :12].mean(axis=(1, 2, 3)) > x[:, 12:].mean(axis=(1, 2, 3))).astype(np.int64) + 2 * (
        x[:, :, :12].mean(axis=(1, 2, 3)) > x[:, :, 12:].mean(axis=(1, 2, 3))
    ).astype(np.int64)
    keras.utils.set_random_seed(0)
    model = _keras3_branchy()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, verbose=0)
    path, out = str(tmp_path / "k3.keras"), tmp_path / "cp.keras"
    model.save(path)
    np.savez(tmp_path / "d.npz", x_train=x[:128], y_train=y[:128], x_test=x[128:], y_test=y[128:])
    argv = ["optimize", path, "--data", str(tmp_path / "d.npz"), "--channel-prune", "0.5", "--epochs", "1"]
    proc = run_cli(*argv, "--allow-drop", "-o", out)  # one epoch on 128 samples: the accuracy is not the point
    assert proc.returncode == 0, proc.stderr
    assert "Keras 3, as the input" in proc.stdout
    pruned = keras.saving.load_model(str(out))
    assert len({l.name for l in pruned.layers}) == len(pruned.layers)
    assert pruned.count_params() < 0.6 * model.count_params()
    assert pruned.predict(x[:8], verbose=0).shape == (8, 4)
