import os

import numpy as np
import pytest

from edgekit.converters import Quant, convert, export, inspect_tflite, verify
from edgekit.converters.inspection import INTEGER_TYPES
from edgekit.core.errors import InputError, VerificationError


def test_int8_export_is_fully_integer_read_from_the_file(exported):
    rep = exported["int8"]
    info = inspect_tflite(rep.path)
    assert info.inputs[0]["dtype"] == "INT8" and info.outputs[0]["dtype"] == "INT8"
    for op in info.ops:  # every op between input and output computes on integer tensors
        assert set(op.input_dtypes + op.output_dtypes) <= INTEGER_TYPES, op
        assert not op.op.startswith(("CUSTOM", "FLEX")), op
    assert "QUANTIZE" not in info.op_counts and "DEQUANTIZE" not in info.op_counts
    assert info.fully_integer and rep.fully_integer


def test_float32_export_is_float_and_int8_weights_are_smaller(exported):
    info = inspect_tflite(exported["float32"].path)
    q = inspect_tflite(exported["int8"].path)
    assert info.inputs[0]["dtype"] == "FLOAT32"
    assert not info.fully_integer
    # Weight bytes shrink; on a model this tiny the whole file need not (per-channel scales and
    # zero points cost ~28 bytes an output channel), which is why the size target is the demo's.
    assert q.weight_bytes < 0.5 * info.weight_bytes
    assert q.quant_params_bytes > 0 == info.quant_params_bytes


def test_report_fields_are_measured(exported, digits_ds, tiny_model):
    from edgekit.device.board.harness import load_interpreter, predict

    keras_top = tiny_model.predict(digits_ds.x_test, verbose=0).argmax(-1)
    for mode, rep in exported.items():
        assert rep.mode == mode
        assert rep.size_bytes == os.path.getsize(rep.path)
        assert rep.verify_samples == len(digits_ds.x_test)
        # the figures are the file's, recomputed here from the file and the model
        lite_top = predict(load_interpreter(rep.path), digits_ds.x_test).argmax(-1)
        assert rep.agreement == pytest.approx(float(np.mean(lite_top == keras_top)), abs=1e-12)
        assert rep.accuracy == pytest.approx(float(np.mean(lite_top == digits_ds.y_test)), abs=1e-12)
        assert rep.keras_accuracy == pytest.approx(float(np.mean(keras_top == digits_ds.y_test)), abs=1e-12)
    # float32 conversion is exact up to float rounding: predictions agree on (nearly) every sample
    assert exported["float32"].agreement >= 0.99
    assert exported["float32"].accuracy == pytest.approx(exported["float32"].keras_accuracy, abs=0.01)
    assert exported["int8"].calib_samples == 64


def test_inspection_accounts_for_every_byte(exported):
    info = inspect_tflite(exported["int8"].path)
    assert info.weight_bytes + info.quant_params_bytes + info.graph_bytes == info.size_bytes
    assert info.graph_bytes > 0 and info.quant_params_bytes > 0
    # the parameter count read from the file: folded BN, so fewer than Keras' count
    assert 0 < info.params
    assert info.gzip_bytes < info.size_bytes


def test_int8_needs_calibration_data(tiny_model):
    with pytest.raises(InputError, match="calibration data"):
        convert(tiny_model, "int8")


@pytest.mark.parametrize("mode", ["int4", "fp8", ""])
def test_unknown_mode(mode):
    with pytest.raises(InputError, match="expected one of: float32, float16, dynamic, int8, int16x8"):
        Quant.parse(mode)


def test_wrong_calibration_data_writes_nothing(tiny_model, tmp_path):
    out = tmp_path / "m.tflite"
    with pytest.raises(InputError, match=r"calibration data has shape \(10, 8, 8\)"):
        export(tiny_model, str(out), "int8", calibration=np.zeros((10, 8, 8), np.float32))
    nan = np.zeros((4, 32, 32, 1), np.float32)
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        export(tiny_model, str(out), "int8", calibration=nan)
    assert os.listdir(tmp_path) == []


def test_agreement_threshold_fails_the_export_and_writes_nothing(tiny_model, digits_ds, tmp_path):
    out = tmp_path / "m.tflite"
    # noise images: the int8 and float models disagree on some, so 100% agreement is unreachable
    with pytest.raises(VerificationError, match=r"below the required 100.0% \(`min_agreement`\)"):
        export(
            tiny_model,
            str(out),
            "int8",
            calibration=digits_ds.x_train[:32],
            validation_data=(np.random.default_rng(0).random((50, 32, 32, 1)).astype(np.float32), None),
            min_agreement=1.0,
            calib_samples=32,
        )
    assert not out.exists() and os.listdir(tmp_path) == []


def test_verify_catches_a_float_op_in_an_int8_model(tiny_model, exported):
    float_bytes = open(exported["float32"].path, "rb").read()
    with pytest.raises(VerificationError, match="not fully integer: CONV_2D"):
        verify(tiny_model, float_bytes, "int8")


def test_keras3_model_converts_through_the_bridge():
    import keras as keras3  # Keras 3, installed alongside TensorFlow

    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    assert inspect_tflite(convert(model, "float32")).op_counts == {"FULLY_CONNECTED": 1}


def test_not_a_model():
    with pytest.raises(InputError, match="expected a Keras model, received builtins.str"):
        convert("model.keras", "float32")


@pytest.mark.parametrize("content", [b"", b"garbage!" * 10, None])
def test_inspect_corrupt_files(tmp_path, exported, content):
    path = tmp_path / "bad.tflite"
    if content is None:  # truncated: the identifier is there, the tables are not
        content = open(exported["int8"].path, "rb").read()[:200]
    path.write_bytes(content)
    with pytest.raises(InputError, match="tflite"):
        inspect_tflite(str(path))


@pytest.mark.parametrize("layer_report", [True, False])
def test_a_layer_with_dead_outputs_is_named_not_an_xnnpack_crash(layer_report, tmp_path):
    """A ReLU layer whose outputs are (almost) all zero on the calibration data gets an int8 output
    scale XNNPACK refuses to prepare: the export names the layer and the fix, and writes nothing."""
    from edgekit import keras

    L = keras.layers
    inp = keras.Input((8,))
    model = keras.Model(inp, L.Dense(3, activation="softmax")(L.Dense(6, activation="relu", name="dead")(inp)))
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    k, _ = model.get_layer("dead").get_weights()
    model.get_layer("dead").set_weights([k, -(x @ k).max(axis=0) + 1e-6])  # fires by at most 1e-6
    out = tmp_path / "m.tflite"
    with pytest.raises(VerificationError, match=r"layer dead \(FULLY_CONNECTED.* all zero on the calibration data"):
        export(model, str(out), "int8", calibration=x, validation_data=(x, None), layer_report=layer_report)
    assert not out.exists()
