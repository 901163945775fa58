import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgekit.device import HARNESS_PATH, BoardError, bench, measure


def test_measure_reports_percentiles_startup_and_memory(exported):
    r = measure(exported["int8"].path, runs=30, warmup=3)
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["mean"] > 0 and r["runs"] == 30 and r["warmup"] == 3
    mem = r["memory_mb"]
    assert mem["rss_before_load"] > 0 and mem["peak"] >= mem["rss_after_allocate"] > 0
    assert r["peak_rss_mb"] == mem["peak"]
    assert set(r["startup_ms"]) == {"load", "allocate", "first_invoke"}
    assert r["runtime"]["name"] == "ai_edge_litert"
    assert r["model_size_bytes"] == os.path.getsize(exported["int8"].path)


def test_each_model_in_a_fresh_process_and_failures_do_not_stop_others(exported, test_npz, tmp_path):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(open(exported["int8"].path, "rb").read()[:300])
    models = [exported["float32"].path, str(corrupt), exported["int8"].path]
    results = bench(models, runs=20, warmup=2, inputs=test_npz)
    assert [r.ok for r in results] == [True, False, True]
    assert "cannot load" in results[1].error or "crashed" in results[1].error
    for r in (results[0], results[2]):
        assert r.data["latency_ms"]["p50"] > 0 and r.peak_rss_mb > 0
        d = r.to_dict()
        assert {"model", "latency_ms", "peak_rss_mb"} <= set(d)
        assert {"p50", "p90", "p99", "mean"} <= set(d["latency_ms"])


def test_on_device_accuracy_matches_the_converter_verification(exported, test_npz):
    for mode in ("float32", "int8"):
        (r,) = bench([exported[mode].path], runs=5, warmup=1, inputs=test_npz)
        assert r.accuracy == pytest.approx(exported[mode].accuracy, abs=1e-9)
        assert r.data["samples"] == 360


def test_harness_runs_as_a_standalone_script_without_tensorflow(exported, tmp_path):
    # Copied alone to a directory, as on a board: it must not import TensorFlow or edgekit.
    script = tmp_path / "harness.py"
    shutil.copy(HARNESS_PATH, script)
    probe = (
        "import runpy, sys, json\n"
        f"sys.argv = ['harness.py', {exported['int8'].path!r}, '--runs', '5']\n"
        "try:\n"
        f"    runpy.run_path({str(script)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'edgekit', 'tf_keras'))\n"
        "print(json.dumps({'code': code, 'bad': bad}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = out.stdout.strip().splitlines()
    result, status = json.loads(lines[0]), json.loads(lines[-1])
    assert status == {"code": 0, "bad": []}, out.stderr
    assert result["latency_ms"]["p50"] > 0


def test_npz_inputs_are_quantized_for_int8_models(exported, npz):
    path = npz(x=np.zeros((3, 32, 32, 1), np.float32), y=np.array([0, 1, 2]))
    r = measure(exported["int8"].path, runs=3, warmup=0, inputs=path)
    # the same quantization and argmax as the harness's own predict(): 3 zero images, labels 0, 1, 2
    from edgekit.device.board.harness import load_interpreter, predict

    top = predict(load_interpreter(exported["int8"].path), np.zeros((3, 32, 32, 1), np.float32)).argmax(-1)
    assert r["samples"] == 3 and r["accuracy"] == pytest.approx(float(np.mean(top == [0, 1, 2])), abs=1e-12)


def test_real_valued_targets_give_the_mae_on_the_target(exported, npz):
    """Regression targets (real values, several per sample here) are compared with the outputs, not
    argmax-ed as if they were one-hot rows."""
    from edgekit.device.board.harness import load_interpreter, predict

    y = np.linspace(0.05, 0.95, 30, dtype=np.float32).reshape(3, 10)
    r = measure(exported["int8"].path, runs=3, warmup=0, inputs=npz(x=np.zeros((3, 32, 32, 1), np.float32), y=y))
    out = predict(load_interpreter(exported["int8"].path), np.zeros((3, 32, 32, 1), np.float32))
    assert r["accuracy"] is None and r["mae"] == pytest.approx(float(np.mean(np.abs(out - y))), abs=1e-9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(runs=0), "runs"),
        (dict(warmup=-1), "warmup"),
        (dict(threads=0), "threads"),
    ],
)
def test_bad_arguments(exported, kwargs, message):
    with pytest.raises(BoardError, match=message):
        measure(exported["int8"].path, **kwargs)


def test_wrong_input_shape_and_missing_model(exported, npz, tmp_path):
    with pytest.raises(BoardError, match="expects"):
        measure(exported["int8"].path, runs=1, inputs=npz(x=np.zeros((2, 8, 8, 1), np.float32)))
    with pytest.raises(BoardError, match="not found"):
        measure(str(tmp_path / "nope.tflite"))


def test_board_facts_read_a_raspberry_pi_tree(tmp_path):
    from edgekit.device.board.harness import board_facts, thermal_verdict

    files = {  # as on a Raspberry Pi 4 (Raspberry Pi OS, 64-bit)
        "proc/device-tree/model": "Raspberry Pi 4 Model B Rev 1.4\x00",
        "proc/cpuinfo": "processor\t: 0\nBogoMIPS\t: 108.00\nCPU part\t: 0xd08\n\n"
        "Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": "ondemand\n",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "1500000\n",
        "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq": "1800000\n",
        "sys/class/thermal/thermal_zone0/temp": "52582\n",
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    facts = board_facts(str(tmp_path))
    assert facts["model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert facts["cpu"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert facts["governor"] == "ondemand"
    assert (facts["freq_mhz"], facts["max_freq_mhz"], facts["temp_c"]) == (1500.0, 1800.0, 52.6)
    assert thermal_verdict(facts, facts) == []
    hot = dict(facts, freq_mhz=1000.0, throttled_flags=0x50005)
    reasons = thermal_verdict(facts, hot)
    assert any("throttling after" in r and "0x50005" in r for r in reasons)
    assert any("dropped from 1500 to 1000 MHz" in r for r in reasons)
    # only past events (bits 16+) are not a present throttle
    assert thermal_verdict(dict(facts, throttled_flags=0x50000), facts) == []


def test_every_result_carries_the_board_state(exported):
    from edgekit.device import measure

    r = measure(exported["int8"].path, runs=3, warmup=1)
    board = r["board"]
    assert set(board) == {"before", "after", "throttled", "warnings"}
    assert board["before"]["cores"] == os.cpu_count() and board["throttled"] is False


def test_thread_sweep_and_ratios_to_the_first_model(exported):
    from edgekit.device import ratios

    models = [exported["float32"].path, exported["int8"].path]
    results = bench(models, runs=10, warmup=1, threads=[1, 2])
    assert [(r.model, r.data["threads"]) for r in results] == [(m, t) for m in models for t in (1, 2)]
    q = ratios(results)
    assert q[0] is None and q[1] is None  # each thread count has its own baseline
    for r, qr in zip(results[2:], q[2:]):
        base = results[0] if r.data["threads"] == 1 else results[1]
        assert qr["baseline"] == base.model
        assert qr["p50"] == pytest.approx(r.latency_ms["p50"] / base.latency_ms["p50"])
        assert qr["peak_rss"] == pytest.approx(r.peak_rss_mb / base.peak_rss_mb)


def test_time_budget_and_progress_lines(exported):
    from edgekit.device.board.harness import PROGRESS_PREFIX

    out = subprocess.run(
        [sys.executable, HARNESS_PATH, exported["int8"].path, "--duration", "0.5", "--warmup", "2", "--progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(out.stdout)
    assert result["duration_s"] == 0.5 and result["runs"] > 10  # as many runs as fit in 0.5 s
    assert 0.4 < result["runs"] * result["latency_ms"]["mean"] / 1e3 < 0.6
    progress = [ln for ln in out.stderr.splitlines() if ln.startswith(PROGRESS_PREFIX)]
    assert progress and all(len(ln.split()) == 4 for ln in progress)


def test_progress_line_draws_only_on_request_and_after_its_delay():
    import io

    from edgekit.core.progress import Progress

    stream = io.StringIO()
    p = Progress("bench", enabled=True, delay=0.0, stream=stream)
    p.show("board-a: m.tflite timed 64/100")
    p.close()  # the line is cleared: what comes next starts on a clean line
    assert "board-a: m.tflite timed 64/100" in stream.getvalue() and stream.getvalue().endswith("\r")
    quiet = io.StringIO()
    q = Progress("bench", stream=quiet, delay=0.0)  # not a terminal: silent
    q.show("x")
    q.update("timed", 1, 2)
    assert quiet.getvalue() == ""
    lines = []  # not a terminal, with a plain-line function: a line when a phase completes
    r = Progress("calibrating", stream=io.StringIO(), delay=0.0, plain=lines.append)
    r.update("samples", 1, 2)
    r.update("samples", 2, 2)
    assert lines == ["calibrating: samples 2/2"]
    late = io.StringIO()  # a short job prints nothing before the delay
    Progress("bench", enabled=True, stream=late, delay=60.0).show("x")
    assert late.getvalue() == ""


def test_raw_outputs_are_saved_bit_for_bit(exported, test_npz, tmp_path):
    from edgekit.device import load_interpreter
    from edgekit.device.board.harness import raw_outputs

    out = tmp_path / "out.npz"
    proc = subprocess.run(
        [sys.executable, HARNESS_PATH, exported["int8"].path, "--inputs", test_npz, "--outputs", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    info = json.loads(proc.stdout)
    assert info["dtype"] == "int8" and info["samples"] == 360
    x = np.load(test_npz)["x"]
    expected = raw_outputs(load_interpreter(exported["int8"].path), x)
    assert np.array_equal(np.load(out)["outputs"], expected)
