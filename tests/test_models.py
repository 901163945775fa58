import numpy as np
import pytest

from edgekit.converters import export, inspect_tflite
from edgekit.core.errors import InputError
from edgekit.device import measure
from edgekit.models import DIGITS_CONFIG, available, create, make_divisible, mobilenet_v2, profile


def test_mobilenet_v2_has_the_published_parameter_count():
    # Sandler et al. / keras.applications.MobileNetV2(alpha=1.0, 224x224x3, 1000 classes).
    assert mobilenet_v2().count_params() == 3_538_984


@pytest.mark.parametrize("alpha, params", [(0.35, 1_691_208), (1.3, 5_431_048)])
def test_width_multiplier_matches_keras_applications(alpha, params):
    assert mobilenet_v2(alpha=alpha).count_params() == params


def test_demo_config_is_mobilenet_v2_style():
    model = mobilenet_v2(**DIGITS_CONFIG)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"DepthwiseConv2D", "BatchNormalization", "ReLU", "Add", "Conv2D"} <= kinds
    assert all(l.max_value == 6.0 for l in model.layers if type(l).__name__ == "ReLU")
    assert all(l.momentum == 0.9 for l in model.layers if type(l).__name__ == "BatchNormalization")
    assert model.output_shape == (None, 10)


def test_make_divisible():
    assert make_divisible(32 * 0.35) == 16  # never below the divisor, never >10% down
    assert make_divisible(100) == 104


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(alpha=0), "alpha"),
        (dict(classes=0), "classes"),
        (dict(dropout=1.0), "dropout"),
        (dict(input_shape=(32, 32)), "input_shape"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mobilenet_v2(**kwargs)


# --- registry -------------------------------------------------------------------------------

REFERENCE = {  # name: (params, MACs or None); see each builder's docstring for the source
    "mobilenet_v2": (3_538_984, 300e6),
    "mobilenet_v1": (4_253_864, 569e6),
    "ds_cnn": (24_908, None),
    "resnet8": (78_666, None),
    "fc_autoencoder": (269_992, None),
    "resnet50": (25_636_712, None),
}


def test_registry_lists_every_builder():
    assert set(available()) == set(REFERENCE) | {"vgg16", "tied_lm"}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_configs_match_published_counts(name):
    params, macs = REFERENCE[name]
    p = profile(create(name))
    assert p.params == params
    if macs:
        assert abs(p.macs - macs) / macs < 0.03


def test_efficient_designs_against_their_reference_points():
    v1, v1_conv = profile(create("mobilenet_v1")), profile(create("mobilenet_v1", separable=False))
    assert v1_conv.params / v1.params >= 6.5 and v1_conv.macs / v1.macs >= 8.0
    v2, r50 = profile(create("mobilenet_v2")), profile(create("resnet50"))
    assert r50.params / v2.params >= 7.0 and r50.macs / v2.macs >= 10.0


def test_vgg16_reference_size():
    # 138,357,544 params, 528 MB in float32; built without training (random weights)
    assert create("vgg16").count_params() == 138_357_544


# ResNet-50's digits preset (175 layers, 35 s here) takes the path of ResNet-8 and MobileNetV2;
# `make bench-estimate` converts it with every other model
@pytest.mark.parametrize("name", sorted(set(REFERENCE) - {"resnet50"}) + ["vgg16"])
def test_every_digits_preset_trains_converts_to_int8_and_runs(name, tmp_path):
    from edgekit import keras

    model = create(name, preset="digits")
    rng = np.random.default_rng(0)
    x = rng.random((16,) + tuple(model.input_shape[1:]), dtype=np.float32)
    y = x if name == "fc_autoencoder" else rng.integers(0, 10, 16)
    loss = "mse" if name == "fc_autoencoder" else "sparse_categorical_crossentropy"
    model.compile(keras.optimizers.Adam(1e-3), loss)
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # it trained

    path = str(tmp_path / f"{name}.tflite")
    rep = export(model, path, "int8", calibration=x, calib_samples=16)
    info = inspect_tflite(path)
    assert rep.fully_integer and info.fully_integer
    assert not any(op.is_custom for op in info.ops)
    # the profiler's estimate of the int8 file, before conversion
    assert abs(profile(model).int8_bytes / info.size_bytes - 1.0) <= 0.15
    r = measure(path, runs=3, warmup=1)
    assert r["latency_ms"]["p50"] > 0


def test_unknown_names_presets_and_keywords_are_errors():
    with pytest.raises(InputError, match="unknown model 'mobilenet_v9'; available: .*mobilenet_v2"):
        create("mobilenet_v9")
    with pytest.raises(InputError, match="unknown preset"):
        create("resnet8", preset="huge")
    with pytest.raises(InputError, match="does not take 'alpah'; it takes: input_shape, alpha"):
        create("mobilenet_v2", alpah=0.5)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v1", "ds_cnn", "resnet8", "fc_autoencoder", "resnet50"])
def test_batchnorm_momentum_defaults_to_small_data_value_and_can_be_overridden(name):
    def momenta(model):
        return {l.momentum for l in model.layers if type(l).__name__ == "BatchNormalization"}

    assert momenta(create(name, preset="digits")) == {0.9}
    assert momenta(create(name, preset="digits", bn_momentum=0.99)) == {0.99}
