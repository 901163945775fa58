"""Untrusted files and paths, each case its own test, run as a user would: the `edgekit` command
in a child process. Every case asserts: no code from a file ran (a marker file the file's code
would create stays absent), no file of the user's was lost or changed, a one-line error with a
meaningful exit code (never a traceback, never 70), nothing left behind; decompression bombs
also keep the child's peak RSS (from its own resource usage) at or under 1 GiB."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import numpy as np
import pytest
from conftest import EDGEKIT, build_tiny, interactive

GIB = 1 << 30

pytestmark = pytest.mark.xdist_group("hostile")  # one worker builds the hostile files once


# -- running and checking -------------------------------------------------------------------


class Run:
    def __init__(self, returncode, stdout, stderr, peak_rss):
        self.returncode, self.stdout, self.stderr, self.peak_rss = returncode, stdout, stderr, peak_rss


# The command runs under a small launcher so its peak RSS is its own: a child forked from this
# (large) test process would carry the parent's high-water mark across exec.
LAUNCHER = """
import os, resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code if code >= 0 else 128 - code)
"""


def edgekit(*args, cwd=None, env=None, timeout=300) -> Run:
    """Run the installed command; its peak RSS comes from its own resource usage."""
    import tempfile

    full_env = dict(os.environ, **(env or {}))
    full_env.pop("EDGEKIT_DEBUG", None)
    with tempfile.TemporaryDirectory() as tmp:
        rss = os.path.join(tmp, "rss")
        proc = subprocess.run(
            [sys.executable, "-c", LAUNCHER, rss, EDGEKIT, *map(str, args)],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=full_env,
            timeout=timeout,
        )
        with open(rss) as f:
            peak = int(f.read()) * 1024
    return Run(proc.returncode, proc.stdout, proc.stderr, peak)


def refused(run: Run, *contains, code=2):
    """A one-line error naming what was wrong, the expected exit code, no traceback."""
    assert run.returncode == code, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr + run.stdout
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("edgekit: error: "), lines[0]
    for text in contains:
        assert text in lines[0], lines[0]
    if os.environ.get("EDGEKIT_HOSTILE_LOG"):  # the case list of the closing note / docs
        with open(os.environ["EDGEKIT_HOSTILE_LOG"], "a") as f:
            f.write(
                json.dumps(
                    {
                        "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
                        "exit": run.returncode,
                        "message": lines[0],
                        "peak_rss_mb": round(run.peak_rss / 2**20, 1),
                    }
                )
                + "\n"
            )
    return lines[0]


def digest(path) -> str:
    if os.path.isdir(path):
        return json.dumps(
            sorted(
                (os.path.relpath(os.path.join(r, f), path), digest(os.path.join(r, f)))
                for r, _, fs in os.walk(path)
                for f in fs
            )
        )
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def leftovers(directory) -> list:
    return [n for n in os.listdir(directory) if ".tmp-" in n or ".old-" in n]


# -- hostile files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, digits_ds):
    """Model files whose loading would create ``marker``, and good files to aim at."""
    from edgekit import keras

    d = tmp_path_factory.mktemp("hostile")
    marker = str(d / "PWNED")
    code = f"lambda t: (open({marker!r}, 'w').close(), t)[1]"
    inp = keras.Input((32, 32, 1))
    x = keras.layers.Lambda(eval(code), name="sneaky")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    lam = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))
    files = {"marker": marker}
    lam.save(d / "lambda.h5")
    lam.save(d / "lambda_sm", save_format="tf")
    lam.save(d / "lambda.keras")
    shutil.copy(d / "lambda.h5", d / "h5_renamed.keras")
    wrapped_in = keras.Input((4, 8))
    wrapped = keras.Model(wrapped_in, keras.layers.TimeDistributed(keras.layers.Lambda(eval(code)))(wrapped_in))
    wrapped.save(d / "wrapped.h5")
    os.remove(marker)  # building and saving the models here ran the lambda, of course

    # configs written by hand: a Keras 3 Lambda, an op layer calling tf.io.write_file, an unknown module
    def zipped(name, config):
        with zipfile.ZipFile(d / name, "w") as zf:
            zf.writestr("metadata.json", json.dumps({"keras_version": "3.10.0"}))
            zf.writestr("config.json", json.dumps(config))
        return str(d / name)

    files["keras3_lambda"] = zipped(
        "k3_lambda.keras",
        {
            "module": "keras",
            "class_name": "Functional",
            "config": {
                "name": "m",
                "layers": [
                    {
                        "module": "keras.layers",
                        "class_name": "Lambda",
                        "config": {
                            "name": "k3_lambda",
                            "function": {"class_name": "__lambda__", "config": {"code": "AAAA"}},
                        },
                    }
                ],
            },
        },
    )
    files["write_file_op"] = zipped(
        "op.keras",
        {
            "class_name": "Functional",
            "config": {
                "name": "m",
                "layers": [
                    {"class_name": "TFOpLambda", "config": {"name": "tf.io.write_file", "function": "io.write_file"}}
                ],
            },
        },
    )
    files["unknown_module"] = zipped(
        "module.keras",
        {
            "class_name": "Functional",
            "config": {
                "name": "m",
                "layers": [{"module": "edgekit_hostile_module", "class_name": "Evil", "config": {"name": "evil"}}],
            },
        },
    )
    (d / "edgekit_hostile_module.py").write_text(f"open({marker!r}, 'w').close()\n")

    good = build_tiny()
    good.save(d / "good.keras")
    for name in ("lambda.h5", "lambda_sm", "lambda.keras", "h5_renamed.keras", "wrapped.h5", "good.keras"):
        files[name] = str(d / name)
    x = digits_ds.x_train[:64]
    np.savez(
        d / "data.npz",
        x_train=x,
        y_train=digits_ds.y_train[:64],
        x_test=digits_ds.x_test[:32],
        y_test=digits_ds.y_test[:32],
    )
    files["data"] = str(d / "data.npz")
    from edgekit.converters import export

    files["good.tflite"] = export(
        good, str(d / "good.tflite"), "int8", calibration=x, calib_samples=32, layer_report=False
    ).path
    return files


def no_code_ran(hostile):
    assert not os.path.exists(hostile["marker"]), "code from the model file ran"


# -- 1. no code runs on load ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, command",
    [
        ("lambda.h5", "export"),
        ("lambda.h5", "profile"),
        ("h5_renamed.keras", "export"),
        ("lambda_sm", "export"),
        ("lambda_sm", "profile"),
        ("lambda.keras", "optimize"),
        ("wrapped.h5", "profile"),
    ],
)
def test_a_lambda_layer_is_refused_before_it_runs(hostile, tmp_path, name, command):
    args = {
        "export": ["export", hostile[name], "--quant", "int8", "--calib", hostile["data"], "-o", tmp_path / "m.tflite"],
        "profile": ["profile", hostile[name]],
        "optimize": [
            "optimize",
            hostile[name],
            "--data",
            hostile["data"],
            "--prune",
            "0.5",
            "-o",
            tmp_path / "o.keras",
        ],
    }[command]
    line = refused(edgekit(*args), "Lambda", "--unsafe-load")
    assert "'sneaky'" in line or "lambda" in line
    no_code_ran(hostile)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "name, words",
    [("keras3_lambda", "k3_lambda"), ("write_file_op", "io.write_file"), ("unknown_module", "edgekit_hostile_module")],
)
def test_code_in_a_config_is_refused(hostile, name, words):
    # the module a config names would be importable: it sits on PYTHONPATH
    run = edgekit("profile", hostile[name], env={"PYTHONPATH": os.path.dirname(hostile["marker"])})
    refused(run, words, "--unsafe-load")
    no_code_ran(hostile)


def test_python_api_refuses_and_safe_mode_false_opts_in(hostile, tmp_path):
    from edgekit.converters import load_keras_model
    from edgekit.core.errors import UnsafeModelError

    copy = str(tmp_path / "copy.h5")
    shutil.copy(hostile["lambda.h5"], copy)
    with pytest.raises(UnsafeModelError, match="layer 'sneaky' \\(Lambda\\).*safe_mode=False"):
        load_keras_model(copy)
    assert not os.path.exists(hostile["marker"])
    model = load_keras_model(copy, safe_mode=False)  # the user trusts this file
    model.predict(np.zeros((1, 32, 32, 1), np.float32), verbose=0)
    assert os.path.exists(hostile["marker"])
    os.remove(hostile["marker"])


def test_unsafe_load_on_the_command_line_is_an_opt_in(hostile, tmp_path):
    copy = str(tmp_path / "copy.h5")
    shutil.copy(hostile["lambda.h5"], copy)
    marker = hostile["marker"]
    run = edgekit("profile", copy, "--unsafe-load")
    assert run.returncode == 0, run.stderr
    assert "sneaky" in run.stdout
    if os.path.exists(marker):
        os.remove(marker)


# -- 2, 3. no file lost, no overwrite without --overwrite --------------------------------------


def _optimize(hostile, out, *extra, cwd=None):
    return edgekit(
        "optimize",
        hostile["good.keras"],
        "--data",
        hostile["data"],
        "--prune",
        "0.5",
        "--epochs",
        "1",
        "-o",
        out,
        *extra,
        cwd=cwd,
    )


def test_optimize_into_the_current_directory_is_refused(hostile, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "project").mkdir()
    before = digest(tmp_path)
    refused(_optimize(hostile, ".", "--overwrite", cwd=tmp_path), "did not write")
    assert digest(tmp_path) == before


def test_optimize_into_the_home_directory_is_refused(hostile, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("mine")
    run = edgekit(
        "optimize",
        hostile["good.keras"],
        "--data",
        hostile["data"],
        "--prune",
        "0.5",
        "-o",
        home,
        "--overwrite",
        env={"HOME": str(home)},
        cwd=tmp_path,
    )  # what a shell makes of `-o ~`
    refused(run, "did not write")
    assert (home / ".bashrc").read_text() == "mine"
    assert all(n.startswith(".") for n in os.listdir(home))  # at most the libraries' own config/cache folders


def test_optimize_over_a_folder_of_the_users_is_refused(hostile, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "thesis.pdf").write_text("mine")
    refused(_optimize(hostile, folder, "--overwrite", "--qat"), "did not write", "thesis.pdf")
    assert (folder / "thesis.pdf").read_text() == "mine"


def test_bench_json_naming_the_model_is_refused(hostile, tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copy(hostile["good.tflite"], model)
    before = digest(model)
    refused(edgekit("bench", model, "--json", model, "--runs", "2"), "also an input")
    assert digest(model) == before
    refused(edgekit("bench", model, "--json", model, "--runs", "2", "--overwrite"), "also an input")
    assert digest(model) == before


def test_optimize_report_naming_the_output_is_refused(hostile, tmp_path):
    out = tmp_path / "o.keras"
    refused(_optimize(hostile, out, "--json", out), "same file")
    assert os.listdir(tmp_path) == []


def test_export_report_naming_the_output_is_refused(hostile, tmp_path):
    out = tmp_path / "m.tflite"
    refused(edgekit("export", hostile["good.keras"], "--quant", "float32", "-o", out, "--json", out), "same file")
    assert os.listdir(tmp_path) == []


def test_export_output_naming_the_input_model_is_refused(hostile, tmp_path):
    model = tmp_path / "m.keras"
    shutil.copy(hostile["good.keras"], model)
    before = digest(model)
    refused(edgekit("export", model, "--quant", "float32", "-o", model, "--overwrite"), "also an input")
    assert digest(model) == before


def test_export_output_naming_the_calibration_data_is_refused(hostile, tmp_path):
    data = tmp_path / "d.npz"
    shutil.copy(hostile["data"], data)
    before = digest(data)
    refused(
        edgekit("export", hostile["good.keras"], "--quant", "int8", "--calib", data, "-o", data, "--overwrite"),
        "also an input",
    )
    assert digest(data) == before


@pytest.mark.parametrize("command", ["export", "optimize", "bench"])
def test_an_existing_report_needs_overwrite(hostile, tmp_path, command):
    report = tmp_path / "report.json"
    report.write_text('{"mine": true}')
    args = {
        "export": [
            "export",
            hostile["good.keras"],
            "--quant",
            "float32",
            "-o",
            tmp_path / "m.tflite",
            "--json",
            report,
        ],
        "optimize": [
            "optimize",
            hostile["good.keras"],
            "--data",
            hostile["data"],
            "--prune",
            "0.5",
            "-o",
            tmp_path / "o.keras",
            "--json",
            report,
        ],
        "bench": ["bench", hostile["good.tflite"], "--runs", "2", "--json", report],
    }[command]
    refused(edgekit(*args), "exists", "--overwrite")
    assert report.read_text() == '{"mine": true}'
    assert sorted(os.listdir(tmp_path)) == ["report.json"]


def test_two_exports_to_one_output_never_lose_a_result_silently(hostile, tmp_path):
    out = tmp_path / "m.tflite"
    argv = [EDGEKIT, "export", hostile["good.keras"], "--quant", "float32", "-o", str(out)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    wrote = [r for r in results if r[0] == 0]
    assert codes == [0, 2], results
    assert len(wrote) == 1 and "wrote" in wrote[0][1]
    loser = [r for r in results if r[0] == 2][0]
    assert "exists" in loser[2] or "appeared" in loser[2]
    assert leftovers(tmp_path) == [] and os.listdir(tmp_path) == ["m.tflite"]


def test_write_atomic_never_replaces_a_file_that_appeared_meanwhile(tmp_path):
    from edgekit.core.errors import InputError
    from edgekit.core.io import write_atomic

    path = tmp_path / "r.json"
    path.write_text("the other run's result")  # appeared after this run checked its outputs
    with pytest.raises(InputError, match="appeared while edgekit was writing it"):
        write_atomic(path, "this run's result")
    assert path.read_text() == "the other run's result" and leftovers(tmp_path) == []


def test_save_model_never_removes_a_directory_it_did_not_write(tmp_path):
    from edgekit.core.errors import InputError
    from edgekit.optimize import qat, save_model

    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "data.csv").write_text("mine")
    with pytest.raises(InputError, match="did not write"):
        save_model(qat(build_tiny()), folder, overwrite=True)
    assert (folder / "data.csv").read_text() == "mine"


def test_demo_out_naming_a_file_is_refused(tmp_path):
    target = tmp_path / "demo"
    target.write_text("mine")
    refused(edgekit("demo", "--out", target, "--overwrite"), "is a file")
    assert target.read_text() == "mine"


def test_demo_out_naming_a_folder_of_the_users_is_refused(tmp_path):
    (tmp_path / "paper.tex").write_text("mine")
    refused(edgekit("demo", "--out", tmp_path, "--overwrite"), "did not write")
    refused(edgekit("demo", "--out", tmp_path), "exists", "--overwrite")
    assert (tmp_path / "paper.tex").read_text() == "mine"


# -- 4. signals clean up ----------------------------------------------------------------------


def _stop_when(proc, ready, timeout=240.0):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_during_optimizes_save_leaves_nothing(hostile, tmp_path, signum):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    private = tmp_path / "tmp"
    private.mkdir()
    proc = subprocess.Popen(
        [
            EDGEKIT,
            "optimize",
            hostile["good.keras"],
            "--data",
            hostile["data"],
            "--qat",
            "--epochs",
            "1",
            "-o",
            str(out_dir / "o_qat"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TMPDIR=str(private)),
        preexec_fn=interactive,
    )
    saving = _stop_when(proc, lambda: any(".tmp-" in n for n in os.listdir(out_dir)))
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert saving, "the save never started"
    assert proc.returncode == 128 + signum, (proc.returncode, err)
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
    assert os.listdir(out_dir) == [] and os.listdir(private) == []


# A stop whose exception is lost: the signal's handler runs inside a finalizer (Python runs it
# between any two bytecodes; TensorFlow's resource deleters and weakref callbacks run during a
# save), which prints "Exception ignored in ..." and goes on. Measured before the fix: SIGHUP at
# a random point of a QAT model's SavedModel save, 3 saves in 52 finished and committed; the CLI,
# 1 run in 15 exited 0 with its output. Here the signal is raised inside the finalizer itself.
_LOST_STOP = """
import os, signal, sys
from edgekit.app import cli
from edgekit.app.cli import models
from edgekit.core.io import commit_dir, staging_dir, write_atomic

out, signum = sys.argv[1], int(sys.argv[2])
done = []

class Deleter:  # like TensorFlow's: the signal lands in its finalizer
    def __del__(self):
        signal.raise_signal(signum)  # the handler runs here, before raise_signal's caller goes on

def run(args):
    lost = []
    sys.unraisablehook = lambda u: lost.append(type(u.exc_value).__name__)
    Deleter()
    done.append("lost " + ",".join(lost))  # the handler's exception, printed and dropped: the run goes on
    try:
        write_atomic(os.path.join(out, "report.json"), "{}")
        done.append("committed a file")
    except KeyboardInterrupt:
        done.append("refused a file")
    try:
        with staging_dir(os.path.join(out, "model")) as tmp:
            os.mkdir(os.path.join(tmp, "model"))
            commit_dir(os.path.join(tmp, "model"), os.path.join(out, "model"), False)
        done.append("committed a directory")
    except KeyboardInterrupt:
        done.append("refused a directory")
    return 0  # the command itself ends as if nothing happened

models.run = run
code = cli.main(["models"])
print(";".join(done))
sys.exit(code)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_lost_in_a_finalizer_still_stops_every_commit_and_the_exit_code(tmp_path, signum):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _LOST_STOP, str(out), str(int(signum))],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=interactive,
    )
    assert proc.stdout.strip() == "lost Stopped;refused a file;refused a directory", (proc.stdout, proc.stderr)
    assert proc.returncode == 128 + signum, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0] in (
        "edgekit: interrupted",
        f"edgekit: stopped by signal {signum.name}; nothing was left half-written",
    ), proc.stderr
    assert os.listdir(out) == []


def _harness_running(pid) -> bool:
    """Whether a child of process ``pid`` runs the device harness."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"harness.py" in cmdline:
            return True
    return False


def test_sigterm_during_bench_stops_the_children_and_writes_nothing(hostile, tmp_path):
    report = tmp_path / "b.json"
    proc = subprocess.Popen(
        [EDGEKIT, "bench", hostile["good.tflite"], "--duration", "60", "--json", str(report)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = _stop_when(proc, lambda: _harness_running(proc.pid), timeout=60)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert running, "the harness never started: " + err
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert os.listdir(tmp_path) == []
    harnesses = subprocess.run(["pgrep", "-f", f"harness.py.*{hostile['good.tflite']}"], capture_output=True, text=True)
    assert harnesses.stdout.strip() == ""


# -- 5, 6. bad values are errors, not crashes --------------------------------------------------


def test_float64_calibration_beyond_float32_is_an_error_not_a_segfault(hostile, tmp_path):
    x = np.full((8, 32, 32, 1), 1e300)
    np.savez(tmp_path / "big.npz", x=x)
    refused(
        edgekit(
            "export",
            hostile["good.keras"],
            "--quant",
            "int8",
            "--calib",
            tmp_path / "big.npz",
            "-o",
            tmp_path / "m.tflite",
        ),
        "1e+300",
        "float32",
    )
    assert not (tmp_path / "m.tflite").exists()


def _npz_with_header(path, shape, dtype="<f4"):
    """A .npz whose x.npy header declares ``shape`` but holds 16 bytes."""
    header = ("{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (dtype, repr(tuple(shape)))).encode()
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(16)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", npy)
    return path


def test_an_npz_header_claiming_256_tib_is_an_error(hostile, tmp_path):
    data = _npz_with_header(tmp_path / "huge.npz", (1 << 46,), "|u1")
    run = edgekit("export", hostile["good.keras"], "--quant", "int8", "--calib", data, "-o", tmp_path / "m.tflite")
    refused(run, "corrupt", "70,368,744,177,664 bytes")
    assert run.peak_rss < GIB


@pytest.mark.parametrize(
    "recipe, words",
    [
        ("[[steps]]\ntechnique = 'prune'\nsparsity = 'lots'\n", "sparsity must be a number; received 'lots'"),
        ("steps = 'prune'\n", "steps must be a list of tables"),
        ("[fine_tune]\nepochs = 'two'\n[[steps]]\ntechnique = 'qat'\n", "epochs must be an integer"),
        ("fine_tune = 3\n[[steps]]\ntechnique = 'qat'\n", "fine_tune must be a table"),
        ("[[steps]]\ntechnique = 'prune'\nskip = [1, 2]\n", "skip must be a list of layer names"),
        ("[[steps]]\ntechnique = 'prune'\nsparsity = 0.5\nepochs = 2.5\n", "epochs must be an integer"),
    ],
)
def test_a_recipe_of_the_wrong_types_is_an_error(hostile, tmp_path, recipe, words):
    (tmp_path / "r.toml").write_text(recipe)
    refused(
        edgekit(
            "optimize",
            hostile["good.keras"],
            "--data",
            hostile["data"],
            "--recipe",
            tmp_path / "r.toml",
            "-o",
            tmp_path / "o.keras",
        ),
        words,
    )
    assert os.listdir(tmp_path) == ["r.toml"]


def test_labels_outside_the_models_classes_are_an_error(hostile, digits_ds, tmp_path):
    np.savez(tmp_path / "d.npz", x=digits_ds.x_train[:64], y=np.full(64, 12))
    refused(
        edgekit(
            "optimize",
            hostile["good.keras"],
            "--data",
            tmp_path / "d.npz",
            "--prune",
            "0.5",
            "-o",
            tmp_path / "o.keras",
        ),
        "class ids 12..12",
        "10 classes",
    )
    assert not (tmp_path / "o.keras").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--docs", "MISSING.md"], "MISSING.md not found"),
        (["--model", "missing.keras"], "not found"),
        (["--json", "nodir/x.json"], "directory does not exist"),
    ],
)
def test_the_technique_benchmark_checks_its_arguments_before_the_run(tmp_path, args, words):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "benchmarks", "techniques.py")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert time.perf_counter() - start < 60  # not after a 16-minute run


# -- 7. corrupt .tflite -------------------------------------------------------------------------


def _patched_tflite(hostile, tmp_path, patch):
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    with open(hostile["good.tflite"], "rb") as f:
        model = schema.ModelT.InitFromPackedBuf(bytearray(f.read()), 0)
    patch(model)
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    path = tmp_path / "bad.tflite"
    path.write_bytes(bytes(b.Output()))
    return path


def test_inspect_a_buffer_past_the_end_of_the_file(hostile, tmp_path):
    def patch(model):
        buf = next(b for b in model.buffers if b.data is not None and len(b.data) > 64)
        buf.data, buf.offset, buf.size = None, 10_000_000, 4096

    refused(edgekit("inspect", _patched_tflite(hostile, tmp_path, patch)), "corrupt", "past the end")


def test_inspect_a_tensor_naming_a_missing_buffer(hostile, tmp_path):
    def patch(model):
        model.subgraphs[0].tensors[0].buffer = 100_000

    refused(edgekit("inspect", _patched_tflite(hostile, tmp_path, patch)), "corrupt", "buffer 100000")


def test_inspect_an_operator_naming_a_missing_tensor(hostile, tmp_path):
    def patch(model):
        model.subgraphs[0].operators[0].inputs[0] = 9999

    refused(edgekit("inspect", _patched_tflite(hostile, tmp_path, patch)), "corrupt", "outside")


def test_inspect_an_input_claiming_absurd_rows(hostile, tmp_path):
    """A graph input claiming 2^31 rows is refused before anything allocates it."""

    def patch(model):
        sub = model.subgraphs[0]
        sub.tensors[sub.inputs[0]].shape[0] = 2**31 - 1

    refused(edgekit("inspect", _patched_tflite(hostile, tmp_path, patch)), "corrupt", "claims shape (2147483647")


def test_inspect_a_truncated_file(hostile, tmp_path):
    data = open(hostile["good.tflite"], "rb").read()
    (tmp_path / "cut.tflite").write_bytes(data[: len(data) // 3])
    refused(edgekit("inspect", tmp_path / "cut.tflite"), "corrupt")


# -- 8. decompression bombs ------------------------------------------------------------------

CHUNK = 1 << 24


def _deflated_zeros(size, head=b"", wrapper=False):
    """A real deflate stream of ``head`` + zeros (``size`` bytes in all), built in a second: after a
    full flush the compressor starts afresh, so every further zero chunk compresses the same."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head + bytes(CHUNK - len(head))) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(CHUNK)) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(bytes(CHUNK)) + c.flush(zlib.Z_FULL_FLUSH) == again
    n = size // CHUNK
    stream = first + again * (n - 1) + c.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head + bytes(CHUNK - len(head)))
    check = zlib.adler32(head + bytes(CHUNK - len(head)))
    zero = bytes(CHUNK)
    for _ in range(n - 1):
        crc = zlib.crc32(zero, crc)
        if wrapper:
            check = zlib.adler32(zero, check)
    if wrapper:
        return b"\x78\xda" + stream + struct.pack(">I", check), n * CHUNK
    return stream, crc, n * CHUNK


def _zip(path, members):
    """A zip (zip64 sizes) of (name, data) stored and (name, (deflated, crc, size)) members."""
    with open(path, "wb") as f:
        central = []
        for name, data in members:
            if isinstance(data, tuple):
                payload, crc, size, method = data[0], data[1], data[2], 8
            else:
                payload, crc, size, method = data, zlib.crc32(data), len(data), 0
            extra = struct.pack("<HHQQ", 1, 16, size, len(payload))
            offset = f.tell()
            f.write(
                struct.pack(
                    "<IHHHHHIIIHH",
                    0x04034B50,
                    45,
                    0,
                    method,
                    0,
                    0x21,
                    crc,
                    0xFFFFFFFF,
                    0xFFFFFFFF,
                    len(name),
                    len(extra),
                )
                + name.encode()
                + extra
            )
            f.write(payload)
            central.append(
                struct.pack(
                    "<IHHHHHHIIIHHHHHII",
                    0x02014B50,
                    45,
                    45,
                    0,
                    method,
                    0,
                    0x21,
                    crc,
                    0xFFFFFFFF,
                    0xFFFFFFFF,
                    len(name),
                    len(extra),
                    0,
                    0,
                    0,
                    0,
                    offset,
                )
                + name.encode()
                + extra
            )
        start = f.tell()
        for c in central:
            f.write(c)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), f.tell() - start, start, 0))
    return path


def test_a_keras_zip_bomb_is_refused_in_bounded_memory(tmp_path):
    deflated = _deflated_zeros(9 * (GIB // 2))
    path = _zip(
        tmp_path / "bomb.keras", [("metadata.json", b"{}"), ("config.json", b"{}"), ("model.weights.h5", deflated)]
    )
    assert os.path.getsize(path) < 6_000_000
    run = edgekit("profile", path)
    refused(run, "model.weights.h5", "4,831,838,208 bytes", "EDGEKIT_MAX_RATIO")
    assert run.peak_rss <= GIB


def test_an_npz_bomb_is_refused_in_bounded_memory(hostile, tmp_path):
    size = 9 * (GIB // 2)
    header = ("{'descr': '|u1', 'fortran_order': False, 'shape': (%d,), }" % (size - 128)).encode()
    header += b" " * (128 - 10 - len(header) - 1) + b"\n"
    head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
    path = _zip(tmp_path / "bomb.npz", [("x.npy", _deflated_zeros(size, head))])
    run = edgekit("export", hostile["good.keras"], "--quant", "int8", "--calib", path, "-o", tmp_path / "m.tflite")
    refused(run, "array 'x'", "EDGEKIT_MAX_RATIO")
    assert run.peak_rss <= GIB and not (tmp_path / "m.tflite").exists()


def _png(path, width, height):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    idat, _ = _deflated_zeros((width + 1) * height // CHUNK * CHUNK, wrapper=True)
    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat)
            + chunk(b"IEND", b"")
        )
    return path


def test_a_png_bomb_is_refused_in_bounded_memory(hostile, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    _png(images / "a.png", 40_000, 40_000)
    assert os.path.getsize(images / "a.png") < 2_000_000
    run = edgekit("export", hostile["good.keras"], "--quant", "int8", "--calib", images, "-o", tmp_path / "m.tflite")
    refused(run, "1,600,000,000 pixels", "EDGEKIT_MAX_IMAGE_PIXELS")
    assert run.peak_rss <= GIB


def test_an_hdf5_dataset_declaring_gigabytes_is_refused(tmp_path):
    import h5py

    path = tmp_path / "bomb.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": []}})
        f.create_dataset(
            "model_weights/dense/kernel", shape=(1 << 31,), dtype="f4", chunks=(1 << 20,), compression="gzip"
        )
    run = edgekit("profile", path)
    refused(run, "dataset", "EDGEKIT_MAX_RATIO")
    assert run.peak_rss <= GIB


def test_a_raised_limit_lets_a_trusted_file_through(hostile, tmp_path, digits_ds):
    x = np.zeros((40, 32, 32, 1), np.float32)
    x[:, 0, 0, 0] = 1.0
    np.savez_compressed(tmp_path / "sparse.npz", x=np.repeat(x, 120, axis=0))  # 19.7 MB of nearly zeros
    common = [
        "export",
        hostile["good.keras"],
        "--quant",
        "int8",
        "--calib",
        tmp_path / "sparse.npz",
        "--calib-samples",
        "16",
        "--no-layer-errors",
    ]
    refused(edgekit(*common, "-o", tmp_path / "a.tflite"), "EDGEKIT_MAX_RATIO")
    run = edgekit(*common, "-o", tmp_path / "b.tflite", env={"EDGEKIT_MAX_RATIO": "100000"})
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "b.tflite").is_file()


# -- 9. paths are never options ----------------------------------------------------------------


def test_a_model_named_like_an_option_is_benchmarked_as_a_file(hostile, tmp_path):
    shutil.copy(hostile["good.tflite"], tmp_path / "-rf.tflite")
    np.savez(tmp_path / "-x.npz", x=np.zeros((2, 32, 32, 1), np.float32))
    for args in (["--", "-rf.tflite"], ["./-rf.tflite"]):
        run = edgekit("bench", "--runs", "2", "--warmup", "0", "--inputs", "./-x.npz", *args, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "-rf.tflite" in run.stdout
    assert sorted(os.listdir(tmp_path)) == ["-rf.tflite", "-x.npz"]


# -- 10. messages that help --------------------------------------------------------------------


def test_a_non_zip_npz_never_suggests_unsafe_loading(hostile, tmp_path):
    (tmp_path / "d.npz").write_bytes(b"\x80\x04 pickled junk")
    line = refused(
        edgekit(
            "export",
            hostile["good.keras"],
            "--quant",
            "int8",
            "--calib",
            tmp_path / "d.npz",
            "-o",
            tmp_path / "m.tflite",
        ),
        "not a .npz file",
    )
    assert "pickle" not in line


def test_a_pickled_object_array_is_refused_without_unpickling(hostile, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}, None], dtype=object))
    line = refused(
        edgekit(
            "export",
            hostile["good.keras"],
            "--quant",
            "int8",
            "--calib",
            tmp_path / "d.npz",
            "-o",
            tmp_path / "m.tflite",
        ),
        "Python objects",
    )
    assert "allow_pickle" not in line


@pytest.mark.parametrize("command", ["inspect", "bench"])
def test_a_directory_given_as_a_tflite_says_so(tmp_path, command):
    (tmp_path / "m.tflite").mkdir()
    run = edgekit(command, tmp_path / "m.tflite")
    if command == "bench":  # one result per model: the failure is reported, exit 1
        assert run.returncode == 1 and "is a directory" in run.stderr and "Traceback" not in run.stderr
    else:
        refused(run, "is a directory")


def test_a_directory_that_is_not_a_savedmodel_says_so(tmp_path):
    refused(edgekit("profile", tmp_path), "without saved_model.pb")


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e9"])
def test_bench_duration_out_of_range(hostile, value):
    refused(edgekit("bench", hostile["good.tflite"], "--duration", value), "--duration")
