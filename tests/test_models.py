import pytest

from edgekit.models import DIGITS_CONFIG, make_divisible, mobilenet_v2


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


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=0), "alpha"), (dict(classes=0), "classes"), (dict(dropout=1.0), "dropout"),
    (dict(input_shape=(32, 32)), "input_shape"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mobilenet_v2(**kwargs)
