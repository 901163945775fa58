"""Remote boards over SSH, against a real OpenSSH server started on 127.0.0.1 by these tests.

The server gets its own host key, authorized key and config in a temporary directory; the client
side is the real ``ssh`` with ``--ssh-config`` pointing at a config that names the test key, as a
user's ``~/.ssh/config`` would. ``.ci/run`` installs openssh-server and sets
EDGEKIT_REQUIRE_SSHD=1 so these tests cannot be skipped there.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import EDGEKIT, assert_clean_error, interactive, run_cli
from loopback import LoopbackSSHD, sshd_path  # tools/loopback.py
from loopback import free_port as _free_port

pytestmark = [
    pytest.mark.skipif(
        not (sshd_path() and shutil.which("ssh")) and not os.environ.get("EDGEKIT_REQUIRE_SSHD"),
        reason="needs openssh-server and openssh-client (apt-get install openssh-server)",
    ),
    pytest.mark.xdist_group("sshd"),
]  # one xdist worker runs them all: the module's venv and sshd are set up once


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1:PORT accepting one test key for the current user."""
    with LoopbackSSHD(str(tmp_path_factory.mktemp("sshd"))) as server:
        yield {
            "port": server.port,
            "config": server.client_config,
            "user": server.user,
            "host": server.host,
            "server": server,
        }


@pytest.fixture(scope="module")
def board_venv(sshd, tmp_path_factory):
    """`edgekit device setup` over SSH into a path with a space: a venv with only numpy +
    ai-edge-litert, the board's python from then on."""
    venv = str(tmp_path_factory.mktemp("board") / "edge kit venv")
    proc = run_cli("device", "setup", sshd["host"], "--venv", venv, "--ssh-config", sshd["config"], timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "ai-edge-litert" in proc.stdout and venv in proc.stdout
    return venv


def _edgekit_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "edgekit-bench-*")))


def test_setup_venv_has_only_numpy_and_litert_and_the_harness_runs_there(
    board_venv, sshd, exported, test_npz, tmp_path
):
    python = os.path.join(board_venv, "bin", "python")
    freeze = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    names = {p["name"].lower().replace("_", "-") for p in json.loads(freeze.stdout)}
    assert {"numpy", "ai-edge-litert"} <= names
    assert not names & {"tensorflow", "tf-keras", "edgekit-tflite", "tensorflow-model-optimization"}

    # Over SSH, with the venv's python, on a model whose path needs quoting everywhere.
    model = tmp_path / "my model; $(touch PWNED) 'q'.tflite"
    shutil.copy(exported["int8"].path, model)
    before = _edgekit_dirs()
    out = tmp_path / "remote.json"
    proc = run_cli(
        "bench",
        model,
        "--host",
        sshd["host"],
        "--ssh-config",
        sshd["config"],
        "--remote-python",
        python,
        "--runs",
        "30",
        "--warmup",
        "3",
        "--inputs",
        test_npz,
        "--json",
        out,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.glob("PWNED")) and not os.path.exists(os.path.join(os.path.expanduser("~"), "PWNED"))
    (remote,) = json.loads(out.read_text())["results"]
    assert remote["host"] == sshd["host"] and remote["model"] == str(model) and remote["error"] is None
    assert remote["runtime"]["name"] == "ai_edge_litert"
    assert remote["accuracy"] == pytest.approx(exported["int8"].accuracy, abs=1e-9)

    # The same JSON as a local run of the same model; the board's temp directory is gone.
    local = run_cli("bench", model, "--runs", "30", "--warmup", "3", "--inputs", test_npz, "--json", "-")
    (loc,) = json.loads(local.stdout)["results"]
    assert set(remote) == set(loc)
    assert set(remote["latency_ms"]) == set(loc["latency_ms"]) and set(remote["memory_mb"]) == set(loc["memory_mb"])
    _assert_no_new_dirs(before)  # this run's directory is gone


def _assert_no_new_dirs(before: set, wait: float = 120.0) -> None:
    """No board temp directory is left beside those of ``before``: a directory another test's run
    (the other xdist worker's remote benchmarks) holds meanwhile goes when that run ends, a leaked one
    never does; so the check waits up to ``wait`` seconds for the newcomers to go."""
    deadline = time.monotonic() + wait
    while _edgekit_dirs() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _edgekit_dirs() - before


def test_default_remote_python_and_a_fleet_in_parallel(board_venv, sshd, exported):
    # Two "boards" (two names of the same sshd), run side by side; results grouped per board.
    hosts = [sshd["host"], f"{sshd['user']}@localhost:{sshd['port']}"]
    proc = run_cli(
        "bench",
        exported["float32"].path,
        exported["int8"].path,
        "--runs",
        "10",
        "--warmup",
        "1",
        "--host",
        hosts[0],
        "--host",
        hosts[1],
        "--ssh-config",
        sshd["config"],
        "--remote-python",
        os.path.join(board_venv, "bin", "python"),
        "--json",
        "-",
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert [(r["host"], os.path.basename(r["model"])) for r in results] == [
        (h, f"tiny_{q}.tflite") for h in hosts for q in ("float32", "int8")
    ]
    for r in results[1::2]:  # each board's second model carries its ratio to that board's first
        assert r["ratio_to_first"]["baseline"] == exported["float32"].path
        assert r["ratio_to_first"]["size"] == pytest.approx(
            os.path.getsize(exported["int8"].path) / os.path.getsize(exported["float32"].path)
        )


def test_board_without_litert_says_how_to_set_it_up(sshd, exported, tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    proc = run_cli(
        "bench",
        exported["int8"].path,
        "--host",
        sshd["host"],
        "--ssh-config",
        sshd["config"],
        "--remote-python",
        bare / "bin" / "python",
        "--runs",
        "5",
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"run 'edgekit device setup {sshd['host']}'" in proc.stderr


@pytest.mark.parametrize("case", ["unreachable", "auth", "no-python"])
def test_connection_faults_are_one_line_errors(case, sshd, exported):
    host, extra = {
        "unreachable": (f"{sshd['user']}@127.0.0.1:{_free_port()}", []),
        "auth": (f"{sshd['user']}@wrongkey", []),
        "no-python": (sshd["host"], ["--remote-python", "/no/such/python3"]),
    }[case]
    proc = run_cli(
        "bench", exported["int8"].path, "--host", host, "--ssh-config", sshd["config"], "--runs", "5", *extra
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    expected = {"unreachable": "cannot reach", "auth": "SSH authentication", "no-python": "no python on"}[case]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgekit: error:")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr


def test_setup_on_an_unreachable_board_is_a_clean_error(sshd):
    proc = run_cli("device", "setup", f"root@127.0.0.1:{_free_port()}", "--ssh-config", sshd["config"])
    assert_clean_error(proc, contains="cannot reach")


def _harness_running(sshd, model_name: str = "m0.tflite", timeout: float = 60.0) -> bool:
    """Wait until the board side runs the harness on the model (a process of this test's sshd)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any("harness.py" in cmd and model_name in cmd for _, cmd in sshd["server"].descendants()):
            return True
        time.sleep(0.05)
    return False


def _start_long_remote_run(sshd, board_venv, model):
    before = _edgekit_dirs()
    proc = subprocess.Popen(
        [
            EDGEKIT,
            "bench",
            model,
            "--host",
            sshd["host"],
            "--ssh-config",
            sshd["config"],
            "--remote-python",
            os.path.join(board_venv, "bin", "python"),
            "--duration",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interactive,
    )
    for _ in range(300):
        new = _edgekit_dirs() - before
        if new and glob.glob(os.path.join(next(iter(new)), "m0.tflite")):
            return proc, new.pop()
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the remote run did not start: " + proc.communicate()[1])


def _gone(path, seconds=10.0):
    deadline = time.time() + seconds
    while os.path.exists(path) and time.time() < deadline:
        time.sleep(0.1)
    return not os.path.exists(path)


def test_ctrl_c_stops_the_run_and_the_board_temp_dir_is_removed(board_venv, sshd, exported):
    proc, remote_dir = _start_long_remote_run(sshd, board_venv, exported["int8"].path)
    assert _harness_running(sshd), "the board never started the harness"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err
    assert _gone(remote_dir), f"{remote_dir} left on the board"


def test_ssh_dropping_mid_run_is_reported_and_cleaned_up(board_venv, sshd, exported):
    proc, remote_dir = _start_long_remote_run(sshd, board_venv, exported["int8"].path)
    assert _harness_running(sshd), "the board never started the harness"
    # Kill the server side of this connection (this test's sshd's session processes, nothing else on
    # the machine), as a network drop would.
    sessions = [pid for pid, cmd in sshd["server"].descendants() if cmd.startswith("sshd:") and "@notty" in cmd]
    assert sessions
    for pid in sessions:
        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err
    assert "dropped during the run" in err, err
    assert _gone(remote_dir), f"{remote_dir} left on the board"


def test_a_trainable_head_learns_on_the_board_as_here(board_venv, sshd, tiny_model, digits_ds, test_npz, tmp_path):
    """`bench --learn` over SSH: the head and its backbone go to the board, where learner.py takes the
    same train steps on the same batches as here: the same losses, the same fields."""
    from edgekit.converters.trainable import TrainableOptions, export_trainable

    head = tmp_path / "head.tflite"
    calib = digits_ds.x_train[:64]
    export_trainable(tiny_model, head, "int8", calibration=calib, options=TrainableOptions(batch_size=8))
    common = ("bench", head, "--learn", "--runs", "20", "--warmup", "2", "--inputs", test_npz, "--json", "-")
    here = run_cli(*common)
    python = os.path.join(board_venv, "bin", "python")
    there = run_cli(*common, "--host", sshd["host"], "--ssh-config", sshd["config"], "--remote-python", python)
    assert here.returncode == 0 and there.returncode == 0, here.stderr + there.stderr
    (loc,), (rem,) = json.loads(here.stdout)["results"], json.loads(there.stdout)["results"]
    assert rem["mode"] == "learn" and rem["host"] == sshd["host"] and rem["error"] is None and set(rem) == set(loc)
    assert rem["backbone_size_bytes"] == os.path.getsize(tmp_path / "head.backbone.tflite") > 0
    assert rem["loss"] == pytest.approx(loc["loss"], rel=1e-5) and 0 < loc["loss"]["last"] < 10
    assert rem["step_per_inference"] > 0 and rem["train_step_ms"] == rem["latency_ms"]
    table = run_cli("bench", head, "--learn", "--runs", "5", "--inputs", test_npz)
    assert table.returncode == 0 and "step p50 ms" in table.stdout and "loss first → last" in table.stdout


def test_search_measures_each_trial_on_the_board(board_venv, sshd, tiny_keras_path, tmp_path):
    """edgekit search --host: the trials' latency and accuracy come from the board's harness."""
    space = tmp_path / "space.toml"
    space.write_text("channel_ratio = 0.5\nsparsity = 0.0\nclusters = 0\nqat = false\ndistill = false\nepochs = 1\n")
    out = tmp_path / "study"
    proc = run_cli(
        "search",
        tiny_keras_path,
        "--data",
        "digits",
        "-o",
        out,
        "--trials",
        "1",
        "--space",
        space,
        "--host",
        sshd["host"],
        "--ssh-config",
        sshd["config"],
        "--remote-python",
        os.path.join(board_venv, "bin", "python"),
        "--runs",
        "10",
        "--warmup",
        "2",
        "--json",
        "-",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["baseline"]["host"] == sshd["host"]
    (trial,) = result["trials"]
    assert trial["state"] == "COMPLETE" and trial["host"] == sshd["host"] and trial["p50_ms"] > 0
    assert trial["size_bytes"] == os.path.getsize(out / "front" / "trial_000.tflite")
