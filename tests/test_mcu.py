"""Microcontrollers: TFLM's real interpreter (tflite-micro) measures the arena, runs the model and
agrees with LiteRT; the C sources compile; bad input is a one-line error with nothing written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import assert_clean_error, run_cli

pytestmark = pytest.mark.xdist_group("mcu")


@pytest.fixture(scope="module")
def int8_path(exported):
    return exported["int8"].path


@pytest.fixture(scope="module")
def report(int8_path, digits_ds, tiny_model):
    from edgekit.converters.mcu import mcu

    return mcu(int8_path, validation_data=(digits_ds.x_test, digits_ds.y_test), samples=120, keras_model=tiny_model)


def _probe(model_path, arena):
    """(outcome, message) of TFLM with this arena, in a fresh process as edgekit runs it."""
    import json
    import sys

    from edgekit.device.board.micro import MICRO_PATH

    proc = subprocess.run(
        [sys.executable, MICRO_PATH, f"--probe={arena}", "--", model_path], capture_output=True, text=True, check=True
    )
    doc = json.loads(proc.stdout)
    return doc["outcome"], doc["message"]


def test_the_arena_found_is_minimal(report, int8_path):
    from edgekit.device.board.micro import RAN

    assert report.granularity == 16 and report.arena_bytes % 16 == 0
    assert _probe(int8_path, report.arena_bytes)[0] == RAN
    outcome, message = _probe(int8_path, report.arena_bytes - report.granularity)
    assert outcome != RAN, message
    # TFLM's own breakdown: planned activations (head) + what lives as long as the model (tail)
    a = report.allocations
    assert a["head"] + a["tail"] == a["total"] <= report.arena_bytes
    assert {i["what"] for i in a["items"]} >= {"TfLiteEvalTensor data", "NodeAndRegistration struct"}


def test_tflm_agrees_with_litert_and_the_profiler_estimates_the_arena(report, tiny_model):
    from edgekit.models.profiler import profile

    assert report.samples == 120
    # softmax outputs: LiteRT's int8 softmax (a lookup table) and TFLM's (fixed-point exp) round
    # differently by a few steps; the top-1 answers agree
    assert report.agreement >= 0.99 and report.max_step_diff <= 4, report.summary()
    assert report.accuracy is not None and abs(report.accuracy - report.litert_accuracy) <= 0.01
    # the planner's activations are the profiler's int8 peak, to the byte, on this model
    assert report.allocations["head"] == profile(tiny_model, dtype_bytes=1).peak_activation_bytes
    assert abs(report.estimate["error_pct"]) <= 25, report.estimate
    assert report.flash_bytes == -(-report.size_bytes // 16) * 16
    assert report.host_invoke_ms["p50"] > 0 and report.fully_integer
    assert set(report.fits_boards) >= {"nano33ble", "pico", "esp32s3", "f446re", "h743zi"}
    assert "not a board's latency" in report.summary()


def test_before_the_softmax_tflm_and_litert_differ_by_at_most_one_step(tiny_model, digits_ds, tmp_path):
    from edgekit import keras
    from edgekit.converters import export
    from edgekit.converters.mcu import mcu

    head = tiny_model.layers[-1]
    logits = keras.layers.Dense(head.units, name="logits")
    model = keras.Model(tiny_model.input, logits(tiny_model.layers[-2].output))
    logits.set_weights(head.get_weights())
    path = tmp_path / "logits.tflite"
    export(model, path, calibration=digits_ds.x_train, calib_samples=64, validation_data=(digits_ds.x_test[:64], None))
    rep = mcu(path, validation_data=(digits_ds.x_test, digits_ds.y_test), samples=360)
    assert rep.max_step_diff <= 1 and rep.identical >= 0.95 and rep.agreement >= 0.99, rep.summary()


def test_cli_board_json_and_c_sources_that_compile(int8_path, test_npz, tmp_path):
    out = tmp_path / "src"
    out.mkdir()  # an empty directory is fine
    proc = run_cli(
        "mcu",
        int8_path,
        "--board",
        "pico",
        "--data",
        test_npz,
        "--samples",
        "40",
        "--emit",
        out,
        "--json",
        tmp_path / "mcu.json",
    )
    assert proc.returncode == 0, proc.stderr
    assert "fits" in proc.stdout and "host invoke" in proc.stdout
    doc = __import__("json").loads((tmp_path / "mcu.json").read_text())
    assert doc["fits"] is True and doc["board"]["name"] == "pico" and doc["samples"] == 40
    names = sorted(os.listdir(out))
    assert names == ["tiny_int8.cc", "tiny_int8.h", "tiny_int8_ops.h"]
    source = (out / "tiny_int8.cc").read_text()
    assert "alignas(16) const unsigned char tiny_int8[]" in source
    assert f"kTinyInt8ArenaSize = {doc['arena_bytes']};" in (out / "tiny_int8.h").read_text()
    # the resolver registers exactly the model's ops, and N is their number
    from edgekit.converters.inspection import inspect_tflite
    from edgekit.converters.tflm import RESOLVER_METHODS

    ops = set(inspect_tflite(int8_path).op_counts)
    resolver = (out / "tiny_int8_ops.h").read_text()
    registered = re.findall(r"resolver\.(Add\w+)\(\)", resolver)
    assert sorted(registered) == sorted(RESOLVER_METHODS[o] for o in ops)
    assert f"MicroMutableOpResolver<{len(ops)}>" in resolver
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        if os.environ.get("EDGEKIT_REQUIRE_CXX"):  # CI has one: there the check cannot be skipped
            pytest.fail("a C++ compiler is required here (EDGEKIT_REQUIRE_CXX=1) but neither g++ nor c++ was found")
        pytest.skip("no C++ compiler")
    obj = tmp_path / "model.o"
    subprocess.run([compiler, "-std=c++17", "-c", str(out / "tiny_int8.cc"), "-o", str(obj)], check=True)
    symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout
    assert re.search(r" R tiny_int8$", symbols, re.M) and re.search(r" R tiny_int8_len$", symbols, re.M)
    with open(int8_path, "rb") as f:
        data = f.read()
    values = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", source.split("{", 1)[1]))
    assert values == data and f"tiny_int8_len = {len(data)};" in source


def test_a_board_too_small_exits_1_and_writes_no_sources(int8_path, tmp_path):
    proc = run_cli("mcu", int8_path, "--ram", "2", "--flash", "1024", "--emit", tmp_path / "src")
    assert_clean_error(proc, 1, "does not fit a board with 2 KB RAM")
    assert "more RAM" in proc.stderr and not (tmp_path / "src").exists()


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["--board", "uno"], 2, "known boards: nano33ble, pico"),
        (["--board", "pico", "--ram", "64", "--flash", "64"], 2, "either --board or --ram and --flash"),
        (["--max-arena", "1"], 2, "does not allocate in a tensor arena of 1,024 bytes"),
    ],
)
def test_bad_board_and_arena_bounds_are_clear_errors(int8_path, args, code, words):
    assert_clean_error(run_cli("mcu", int8_path, *args), code, words)


def test_a_float_model_is_refused_unless_allowed(exported):
    path = exported["float32"].path
    assert_clean_error(run_cli("mcu", path), 2, "is not an int8 model")
    proc = run_cli("mcu", path, "--allow-float")
    assert proc.returncode == 0 and "NOT fully integer" in proc.stdout, proc.stderr


def test_a_corrupt_file_is_a_clear_error(int8_path, tmp_path):
    with open(int8_path, "rb") as f:
        data = f.read()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(data[: len(data) // 3])
    assert_clean_error(run_cli("mcu", bad), 2, "corrupt")


def test_emit_into_a_folder_of_the_users_is_refused(int8_path, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "main.c").write_text("int main(void) { return 0; }\n")
    for extra in ([], ["--overwrite"]):
        proc = run_cli("mcu", int8_path, "--emit", out, *extra)
        assert_clean_error(proc, 2)
    assert os.listdir(out) == ["main.c"]


def test_an_op_tflm_lacks_names_the_layer_and_what_to_use(digits_ds, tmp_path):
    import tensorflow as tf

    from edgekit import keras
    from edgekit.converters import export

    inputs = keras.Input((16,))
    x = keras.layers.Dense(8, activation=tf.nn.gelu, name="mlp_gelu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(x))
    rng = np.random.default_rng(0)
    calib = rng.normal(size=(64, 16)).astype("float32")
    out = tmp_path / "gelu.tflite"
    with pytest.raises(Exception) as caught:
        export(model, out, calibration=calib, target="mcu")
    message = str(caught.value)
    assert type(caught.value).__name__ == "VerificationError" and "GELU" in message
    assert "mlp_gelu" in message and "relu" in message and not out.exists()
    rep = export(model, None, calibration=calib)  # the same model for LiteRT is fine
    path = tmp_path / "gelu_litert.tflite"
    path.write_bytes(rep.tflite)
    assert_clean_error(run_cli("mcu", path), 1, "GELU")


def test_logits_all_near_zero_are_explained_not_a_crash(tmp_path):
    from edgekit import keras
    from edgekit.converters import export

    inputs = keras.Input((8,))
    model = keras.Model(
        inputs, keras.layers.Dense(4, activation="softmax", kernel_initializer="zeros", name="untrained")(inputs)
    )
    rep = export(model, None, calibration=np.random.default_rng(0).normal(size=(32, 8)).astype("float32"))
    path = tmp_path / "flat.tflite"
    path.write_bytes(rep.tflite)
    assert_clean_error(run_cli("mcu", path), 1, "logits")


def test_export_target_mcu_checks_before_writing(tiny_model, digits_ds, tmp_path):
    from edgekit.converters import export
    from edgekit.converters.tflm import custom_board
    from edgekit.core.errors import InputError, VerificationError

    out = tmp_path / "m.tflite"
    with pytest.raises(VerificationError, match="does not fit a board with 4 KB RAM"):
        export(
            tiny_model,
            out,
            calibration=digits_ds.x_train,
            validation_data=(digits_ds.x_test[:50], digits_ds.y_test[:50]),
            calib_samples=32,
            target="mcu",
            board=custom_board(4, 1024),
        )
    assert not out.exists()
    with pytest.raises(InputError, match="exports int8"):
        export(tiny_model, out, "float16", target="mcu")
    rep = export(
        tiny_model,
        out,
        calibration=digits_ds.x_train,
        validation_data=(digits_ds.x_test[:50], digits_ds.y_test[:50]),
        calib_samples=32,
        target="mcu",
        board="nano33ble",
    )
    assert out.exists() and rep.mcu.fits is True and rep.mcu.agreement >= 0.98
    assert "TFLM: arena" in rep.summary()


def test_mcu_without_tflite_micro_says_how_to_install(int8_path, tmp_path):
    """A Python where tflite_micro cannot be imported (a shadowing package that raises)."""
    shadow = tmp_path / "shadow" / "tflite_micro"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not here')\n")
    from edgekit.device.board.micro import BoardError, run

    env_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tmp_path / "shadow")
    try:
        with pytest.raises(BoardError, match=r"pip install 'edgekit-tflite\[mcu\]'"):
            run(int8_path, max_arena=1 << 20)
    finally:
        if env_path is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = env_path
