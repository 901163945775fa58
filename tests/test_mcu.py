"""Microcontrollers: TFLM's real interpreter (tflite-micro) measures the arena, runs the model and
agrees with LiteRT; the C sources compile; bad input is a one-line error with nothing written."""

from __future__ import annotations

import json
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
    with pytest.raises(VerificationError, match=r"does not fit a board with 4 KB RAM.*activations peak at layer '"):
        export(
            tiny_model,
            out,
            calibration=digits_ds.x_train,
            validation_data=(digits_ds.x_test[:50], digits_ds.y_test[:50]),
            calib_samples=32,
            target="mcu",
            board=custom_board(4, None),  # a RAM budget alone
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


def _dw_pw_dense():
    """A 3x3 conv, a depthwise conv, a pointwise conv and a Dense head, trained a little."""
    from edgekit import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((12, 12, 3))
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    h = L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(h))
    h = L.GlobalAveragePooling2D()(L.Conv2D(24, 1, activation="relu", name="pw")(h))
    model = keras.Model(inp, L.Dense(4, activation="softmax", name="head")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(240, 12, 12, 3)).astype(np.float32)
    y = (x[:, :6].mean(axis=(1, 2, 3)) > 0).astype(int) + 2 * (x[..., 0].mean(axis=(1, 2)) > 0)
    model.fit(x, y, epochs=4, verbose=0)
    return model, x, y


def test_least_ram_keeps_depthwise_per_channel_and_runs_dense_and_pointwise_per_tensor(tmp_path):
    """target='mcu': the pointwise conv becomes a per-tensor FULLY_CONNECTED and the Dense per tensor,
    the depthwise (and 3x3) conv keep per-channel weights; TFLM's arena shrinks by its 8 B per channel
    of those two, TFLM still equals LiteRT, the metric stays within the bound."""
    from edgekit.converters import export
    from edgekit.converters.inspection import inspect_tflite
    from edgekit.converters.least_ram import candidates, per_tensor
    from edgekit.device.board.harness import load_interpreter, predict

    model, x, y = _dw_pw_dense()
    rep = export(model, tmp_path / "m.tflite", calibration=x[:160], validation_data=(x[160:], y[160:]), target="mcu")
    ram = rep.mcu.least_ram
    assert {c["layer"]: c["kept"] for c in ram["choices"]} == {"pw": True, "head": True}
    # the rewrite is faithful: the per-channel export and the same file with both layers per tensor
    # answer within a few quantization steps of the output, and the metric reported is the file's
    plain = export(model, None, calibration=x[:160], validation_data=(x[160:], y[160:])).tflite
    both = per_tensor(plain, [c[0] for c in candidates(plain)])
    run = lambda t: predict(load_interpreter(model_content=t), x[160:])  # noqa: E731
    assert (
        np.abs(run(both) - run(plain)).max() <= 4 / 256
        and run(both).argmax(1).tolist() == run(rep.tflite).argmax(1).tolist()
    )
    assert ram["per_tensor"] == np.mean(run(rep.tflite).argmax(1) == y[160:])
    info = inspect_tflite(rep.tflite)
    assert sorted(op.op for op in info.ops if "CONV" in op.op or "FULLY" in op.op) == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "FULLY_CONNECTED"
    ]  # fmt: skip
    weights = {op.op: info.tensors[op.inputs[1]] for op in info.ops if len(op.inputs) > 1}
    assert len(weights["DEPTHWISE_CONV_2D"].scales) == 8 and len(weights["CONV_2D"].scales) == 8
    assert all(len(info.tensors[op.inputs[1]].scales) == 1 for op in info.ops if op.op == "FULLY_CONNECTED")
    assert ram["arena_per_channel"] - rep.mcu.arena_bytes == (24 + 4) * 8
    assert rep.mcu.max_step_diff <= 1 and rep.mcu.agreement >= 0.99 and "per tensor: 2 of 2" in rep.mcu.brief()


def test_a_per_tensor_layer_over_the_bound_stays_per_channel():
    """Two near-equal class columns, one of which also weighs an input that is always zero with 100:
    per tensor the other column's weights round on that coarse grid and the classes flip, so the
    layer is measured over the bound and the file comes back unchanged."""
    from edgekit import keras
    from edgekit.converters import export
    from edgekit.converters.least_ram import least_ram
    from edgekit.core.task import Task
    from edgekit.device.board.harness import load_interpreter, predict

    rng = np.random.default_rng(1)
    inp = keras.Input((8,))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(inp))
    v = rng.normal(size=7)
    model.set_weights([np.stack([np.r_[v, 100.0], np.r_[v + 0.01 * rng.normal(size=7), 0.0]], 1), np.zeros(2)])
    x = np.c_[rng.normal(size=(400, 7)), np.zeros(400)].astype(np.float32)
    tflite = export(model, None, calibration=x, validation_data=(x, None), min_cosine=None).tflite
    y = predict(load_interpreter(model_content=tflite), x).argmax(1)  # the per-channel file's own classes
    out, choices, baseline, final = least_ram(tflite, x, y, Task.CLASSIFICATION)
    (c,) = choices
    assert baseline == 1.0 and not c.kept and c.metric < 0.995 and out == tflite and final == baseline


def test_mcu_fit_writes_the_least_ram_file_and_measures_it(int8_path, test_npz, tmp_path):
    out = tmp_path / "fit.tflite"
    proc = run_cli("mcu", int8_path, "--data", test_npz, "--fit", out, "--json", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    ram = report["least_ram"]
    assert ram["per_tensor_layers"] and ram["arena_per_channel"] > report["arena_bytes"]
    assert out.exists() and "least RAM: per tensor" in proc.stdout
    before = out.stat().st_mtime_ns
    assert_clean_error(run_cli("mcu", int8_path, "--data", test_npz, "--fit", out), contains="--overwrite")
    assert_clean_error(run_cli("mcu", int8_path, "--fit", tmp_path / "x.tflite"), contains="--fit needs --data")
    assert out.stat().st_mtime_ns == before and not (tmp_path / "x.tflite").exists()


def test_an_offline_memory_plan_is_kept_where_tflm_needs_less(tmp_path):
    """MobileNetV1 0.25 at 32x32: TFLM's greedy planner leaves holes (8 KB planned against a 6 KB
    lower bound); the export writes edgekit's plan into the file's OfflineMemoryAllocation metadata,
    TFLM honours it (the arena bisected again, still minimal) and still equals LiteRT."""
    from edgekit import keras
    from edgekit.converters import export
    from edgekit.converters.least_ram import peak
    from edgekit.models import registry

    keras.utils.set_random_seed(0)
    model = registry.create("mobilenet_v1", preset="reference", alpha=0.25, input_shape=(32, 32, 3), classes=2)
    x = np.random.default_rng(0).random((32, 32, 32, 3), dtype=np.float32)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, np.arange(32) % 2, epochs=1, verbose=0)
    path = tmp_path / "m.tflite"
    rep = export(model, path, calibration=x, validation_data=(x[:16], None), min_cosine=None, target="mcu")
    plan = rep.mcu.least_ram["offline_plan"]
    assert plan["head"] == peak(rep.tflite)[2] < plan["head_before"]
    assert rep.mcu.arena_bytes <= plan["arena_before"] - (plan["head_before"] - plan["head"])
    assert b"OfflineMemoryAllocation" in path.read_bytes() and rep.size_bytes == path.stat().st_size
    assert rep.mcu.max_step_diff <= 1 and "offline memory plan" in rep.mcu.summary()
    assert _probe(path, rep.mcu.arena_bytes)[0] == "ran" and _probe(path, rep.mcu.arena_bytes - 16)[0] != "ran"


def test_the_bound_reads_each_kind_of_label_as_the_task_does():
    """A sigmoid classifier's (N, 1) labels and an autoencoder's labelled data are scored as their
    task is (accuracy by threshold; reconstruction error against the input), not as class ids."""
    from edgekit import keras
    from edgekit.converters import export
    from edgekit.converters.least_ram import _figure
    from edgekit.core.task import Task
    from edgekit.device.board.harness import load_interpreter, predict

    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    inp = keras.Input((6,))
    binary = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(inp))
    tflite = export(binary, None, calibration=x, validation_data=(x, None), min_cosine=None).tflite
    p = predict(load_interpreter(model_content=tflite), x)[:, 0]
    y = (x[:, 0] > 0).astype(np.int64).reshape(-1, 1)
    assert _figure(tflite, x, y, Task.CLASSIFICATION) == np.mean((p > 0.5) == y[:, 0])
    auto = keras.Model(inp, keras.layers.Dense(6)(keras.layers.Dense(3)(inp)))
    tflite = export(auto, None, calibration=x, validation_data=(x, None), min_cosine=None).tflite
    out = predict(load_interpreter(model_content=tflite), x)
    assert _figure(tflite, x, np.arange(200) % 3, Task.RECONSTRUCTION) == pytest.approx(np.mean((out - x) ** 2))
