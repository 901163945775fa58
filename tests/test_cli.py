import json
import os

import numpy as np
import pytest
from conftest import assert_clean_error, run_cli


@pytest.mark.parametrize(
    "args",
    [["--help"], ["demo", "--help"], ["export", "--help"], ["bench", "--help"], ["inspect", "--help"], ["--version"]],
)
def test_help(args):
    proc = run_cli(*args)
    assert proc.returncode == 0 and proc.stdout.strip()


def test_export_int8_from_a_saved_model_with_report(tiny_keras_path, tiny_model, tmp_path, npz, digits_ds):
    data = npz(
        x_train=digits_ds.x_train[:100],
        y_train=digits_ds.y_train[:100],
        x_test=digits_ds.x_test[:60],
        y_test=digits_ds.y_test[:60],
    )
    out, rep = tmp_path / "m.tflite", tmp_path / "m.json"
    proc = run_cli(
        "export",
        tiny_keras_path,
        "--quant",
        "int8",
        "--calib",
        data,
        "-o",
        out,
        "--json",
        rep,
        "--calib-samples",
        "50",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # TensorFlow's native logging is kept off the user's terminal
    report = json.loads(rep.read_text())
    assert report["mode"] == "int8" and report["fully_integer"] is True
    assert report["size_bytes"] == os.path.getsize(out)
    assert report["calib_samples"] == 50 and report["verify_samples"] == 60
    # the report's figures are the file's, on the .npz's test split
    from edgekit.device.board.harness import load_interpreter, predict

    lite_top = predict(load_interpreter(str(out)), digits_ds.x_test[:60]).argmax(-1)
    keras_top = tiny_model.predict(digits_ds.x_test[:60], verbose=0).argmax(-1)
    assert report["accuracy"] == pytest.approx(float(np.mean(lite_top == digits_ds.y_test[:60])), abs=1e-12)
    assert report["agreement"] == pytest.approx(float(np.mean(lite_top == keras_top)), abs=1e-12)

    info = json.loads(run_cli("inspect", out, "--json").stdout)
    assert info["fully_integer"] is True and info["size_bytes"] == os.path.getsize(out)
    assert info["inputs"][0]["dtype"] == "INT8" and info["op_counts"]["CONV_2D"] >= 2
    text = run_cli("inspect", out).stdout
    assert "fully integer: yes" in text and "DEPTHWISE_CONV_2D" in text

    # an existing output is never silently replaced
    assert_clean_error(run_cli("export", tiny_keras_path, "--quant", "float32", "-o", out), contains="--overwrite")
    proc = run_cli("export", tiny_keras_path, "--quant", "float32", "-o", out, "--overwrite")
    assert proc.returncode == 0 and "note: no verification data" in proc.stdout


def _bad_inputs(tmp_path, tiny_keras_path, npz):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a keras archive")
    no_x = npz("nox.npz", images=np.zeros((4, 32, 32, 1), np.float32))
    small = npz("small.npz", x=np.zeros((4, 8, 8), np.float32))
    nan = np.zeros((4, 32, 32, 1), np.float32)
    nan[1, 2, 3, 0] = np.nan
    return {
        "missing model": ([str(tmp_path / "nope.keras"), "--quant", "int8", "--calib", "digits"], "not found"),
        "corrupt model": ([str(corrupt), "--quant", "int8", "--calib", "digits"], "cannot load"),
        "unknown quant": ([tiny_keras_path, "--quant", "int4", "--calib", "digits"], "int4"),
        "npz without x": ([tiny_keras_path, "--quant", "int8", "--calib", no_x], "expected 'x'"),
        "wrong shape": ([tiny_keras_path, "--quant", "int8", "--calib", small], "(4, 8, 8)"),
        "nan values": ([tiny_keras_path, "--quant", "int8", "--calib", npz("nan.npz", x=nan)], "NaN"),
        "no calib for int8": ([tiny_keras_path, "--quant", "int8"], "--data"),
        "missing data": ([tiny_keras_path, "--quant", "int8", "--calib", str(tmp_path / "no.npz")], "not found"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing model",
        "corrupt model",
        "unknown quant",
        "npz without x",
        "wrong shape",
        "nan values",
        "no calib for int8",
        "missing data",
    ],
)
def test_export_bad_input_is_one_line_and_writes_nothing(case, tmp_path, tiny_keras_path, npz):
    args, expected = _bad_inputs(tmp_path, tiny_keras_path, npz)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run_cli("export", *args, "-o", out_dir / "m.tflite", "--json", out_dir / "r.json")
    assert_clean_error(proc, contains=expected)
    assert os.listdir(out_dir) == []


def test_bench_json_and_a_failing_model(exported, tmp_path, test_npz):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    out = tmp_path / "bench.json"
    proc = run_cli(
        "bench",
        exported["float32"].path,
        bad,
        exported["int8"].path,
        "--runs",
        "10",
        "--warmup",
        "2",
        "--inputs",
        test_npz,
        "--json",
        out,
    )
    assert proc.returncode == 1  # one model failed; the others were still measured
    assert "Traceback" not in proc.stderr and "bad.tflite" in proc.stderr
    doc = json.loads(out.read_text())
    assert [r["error"] is None for r in doc["results"]] == [True, False, True]
    for r, rep in zip((doc["results"][0], doc["results"][2]), (exported["float32"], exported["int8"])):
        assert {"p50", "p90", "p99", "mean"} <= set(r["latency_ms"]) and r["peak_rss_mb"] > 0
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        # on-device accuracy: the same file on the same 360 test images as the export's verification
        assert r["accuracy"] == pytest.approx(rep.accuracy, abs=1e-12) and r["runs"] == 10
    assert "p50 ms" in proc.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["bench", "MISSING.tflite", "--runs", "0"], "--runs must be >= 1"),
        (["demo", "--epochs", "x"], "--epochs must be an integer"),
        (["export", "m.keras"], "required"),
        (["frobnicate"], "invalid choice"),
        ([], "COMMAND"),
        (["inspect", "MISSING.tflite"], "not found"),
    ],
)
def test_usage_errors_are_one_line(args, expected):
    assert_clean_error(run_cli(*args), contains=expected)


def test_inspect_corrupt_file(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"12345678" * 4)
    assert_clean_error(run_cli("inspect", bad), contains="not a .tflite model")


def test_models_and_profile(tiny_keras_path):
    proc = run_cli("models", "mobilenet_v2", "ds_cnn", "--preset", "reference", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["models"]}
    assert sorted(rows) == ["ds_cnn", "mobilenet_v2"]  # the names given, each built and profiled
    assert rows["mobilenet_v2"]["params"] == 3_538_984
    assert abs(rows["mobilenet_v2"]["macs"] - 300e6) / 300e6 < 0.03
    prof = json.loads(run_cli("profile", "resnet8", "--json").stdout)
    assert prof["params"] == 78_666 and prof["peak_activation_bytes"] > 0
    assert prof["macs"] == sum(layer["macs"] for layer in prof["layers"])
    text = run_cli("profile", tiny_keras_path, "--int8").stdout
    assert "1-byte activations" in text and "DepthwiseConv2D" in text
    assert_clean_error(run_cli("profile", "mobilenet_v9"), contains="neither a registered model")
    assert_clean_error(run_cli("models", "mobilenet_v9"), contains="unknown model 'mobilenet_v9'; available:")
