"""ARM64 under real QEMU user-mode emulation (cortex-a72 = Pi 4, cortex-a76 = Pi 5), with the
aarch64 Python, numpy and LiteRT wheels: the same int8 outputs, bit for bit, on both Pi CPUs, and
the same as this machine's up to one quantization step of the int8 softmax.

The first run prepares QEMU and the arm64 sysroot in the cache (about 300 MB, ~15 s);
``make arm-check`` runs the same comparison on the demo's models. The preparation's own tests
(preparers at once, new versions, the earlier layout) run it on a small stand-in tree instead of
the download."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import run_cli

needs_apt = pytest.mark.skipif(
    not (shutil.which("apt-get") and shutil.which("dpkg-deb")) and not os.environ.get("EDGEKIT_REQUIRE_QEMU"),
    reason="the ARM64 check fetches QEMU and an arm64 sysroot with apt-get (Debian/Ubuntu only)",
)
pytestmark = pytest.mark.xdist_group("arm64")  # one xdist worker runs them all: the suite's cache is prepared once


# -- the cache: prepared once, whoever asks at the same time; a tree in place is never replaced --


def _stand_in(p):
    """What a download leaves in the tree ``p`` (a few of its files); returns the inode of the
    stdlib file a starting Python reads first."""
    os.makedirs(os.path.dirname(p["qemu"]))
    open(p["qemu"], "w").close()
    encodings = os.path.join(p["sysroot"], "usr", "lib", "python3.11", "encodings")
    os.makedirs(encodings)
    os.symlink("python3.11", os.path.join(p["sysroot"], "usr", "lib", "python3"))
    with open(os.path.join(encodings, "__init__.py"), "w") as f:
        f.write("# stand-in\n")
    os.makedirs(os.path.join(p["site"], "numpy"))
    open(os.path.join(p["site"], "numpy", "__init__.py"), "w").close()
    return os.stat(os.path.join(encodings, "__init__.py")).st_ino


def _encodings(p):
    return os.path.join(p["sysroot"], "usr", "lib", "python3.11", "encodings", "__init__.py")


def test_preparers_at_once_prepare_one_tree_and_never_replace_it(tmp_path, monkeypatch):
    """Four threads ask for a fresh cache at once: one downloads while the three others wait for
    it (each has said so before the download ends), then all get that tree, untouched. Before,
    each saw no stamp, downloaded, and replaced the sysroot another one's QEMU run was reading."""
    from edgekit.device.host import qemu

    n, root = 4, str(tmp_path / "cache")
    waiting, downloads = threading.Semaphore(0), []

    def download(work, p, versions, log):
        for _ in range(n - 1):  # every other preparer is blocked on the lock meanwhile
            assert waiting.acquire(timeout=20), "another preparer did not wait"
        downloads.append(_stand_in(p))

    def log(msg):
        if msg.startswith("arm64: waiting for another preparation"):
            waiting.release()

    monkeypatch.setattr(qemu, "_download", download)
    with ThreadPoolExecutor(n) as pool:
        trees = list(pool.map(lambda _: qemu.ensure(root, log=log), range(n)))
    assert len(downloads) == 1 and all(t == trees[0] for t in trees)
    assert os.stat(_encodings(trees[0])).st_ino == downloads[0]
    assert sorted(os.listdir(root)) == [".lock", os.path.basename(trees[0]["dir"])]  # no .prep-* left
    assert qemu.ensure(root) == trees[0]


_PREPARER = """
import os, sys, time
from edgekit.device.host import qemu
root, me, other = sys.argv[1:]
def download(work, p, versions, log):
    with open(os.path.join(root, "downloads"), "a") as f:
        f.write(me + "\\n")
    deadline = time.time() + 20
    while not os.path.exists(os.path.join(root, "waiting-" + other)) and time.time() < deadline:
        time.sleep(0.01)
    os.makedirs(os.path.dirname(p["qemu"]))
    open(p["qemu"], "w").close()
def log(msg):
    if msg.startswith("arm64: waiting"):
        open(os.path.join(root, "waiting-" + me), "w").close()
qemu._download = download
print(qemu.ensure(root, log=log)["dir"])
"""


def test_two_processes_preparing_at_once_download_once(tmp_path):
    """The same across processes (two ``edgekit bench --qemu`` on a fresh cache): the lock is a
    file's, one process downloads, the other waits and uses its tree."""
    root = tmp_path / "cache"
    root.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PREPARER, str(root), me, other], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for me, other in (("a", "b"), ("b", "a"))
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0] and os.path.isdir(outs[0][0].decode().strip())
    assert len((root / "downloads").read_text().split()) == 1
    assert len(list(root.glob("waiting-*"))) == 1  # the other one waited


def test_a_new_version_is_prepared_beside_the_tree_in_use(tmp_path, monkeypatch):
    """Another numpy (another venv on the same cache): its own tree; the first one stays as it was
    (before, the stamp did not match, and the sysroot in use was removed and replaced)."""
    from edgekit.device.host import qemu

    root, inodes = str(tmp_path / "cache"), []
    monkeypatch.setattr(qemu, "_download", lambda work, p, versions, log: inodes.append(_stand_in(p)))
    first = qemu.ensure(root, log=lambda _: None)
    real = qemu._version
    monkeypatch.setattr(qemu, "_version", lambda dist: "0.0.1" if dist == "numpy" else real(dist))
    second = qemu.ensure(root, log=lambda _: None)
    assert first["dir"] != second["dir"] and len(inodes) == 2
    assert os.stat(_encodings(first)).st_ino == inodes[0]
    assert os.stat(_encodings(second)).st_ino == inodes[1]


def test_a_dead_preparers_leftovers_go_and_the_earlier_layout_is_adopted(tmp_path, monkeypatch):
    """A ``.prep-*`` of a preparer that died is removed by the next one; the earlier layout's tree
    (``sysroot/`` beside ``ready.json``) of the same versions is hard-linked, not downloaded again."""
    from edgekit.device.host import qemu

    root = tmp_path / "cache"
    (root / ".prep-dead" / "sysroot").mkdir(parents=True)
    old = qemu._paths(str(root))
    inode = _stand_in(old)
    with open(old["stamp"], "w") as f:
        json.dump({"litert": qemu._version("ai-edge-litert"), "numpy": qemu._version("numpy")}, f)

    def download(*_):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(qemu, "_download", download)
    p = qemu.ensure(str(root), log=lambda _: None)
    assert os.stat(_encodings(p)).st_ino == inode and os.path.isfile(p["qemu"])
    assert os.readlink(os.path.join(p["sysroot"], "usr", "lib", "python3")) == "python3.11"
    assert not list(root.glob(".prep-*")) and os.path.isfile(_encodings(old))


# -- under QEMU ---------------------------------------------------------------------------------


@needs_apt
def test_outputs_on_both_pi_cpus_against_x86(exported, test_npz):
    from edgekit.device.host.qemu import check

    rows = check([exported["int8"].path, exported["float32"].path], test_npz, samples=120)
    pairs = [("cortex-a72", "x86_64"), ("cortex-a76", "x86_64"), ("cortex-a76", "cortex-a72")]
    assert [(r["cpu"], r["against"], r["dtype"]) for r in rows] == [
        (c, a, dt) for dt in ("int8", "float32") for c, a in pairs
    ]
    assert all(r["arm_machine"] == "aarch64" and r["ok"] for r in rows), rows
    int8 = rows[:3]
    assert int8[2]["identical"]  # the two Pi CPUs agree bit for bit
    for r in int8[:2]:  # against x86: identical, or one quantization step with the same top-1
        assert r["identical"] or (r["max_abs_diff"] == 1 and r["top1_agreement"] == 1.0)
        assert r["differing_samples"] <= 0.05 * r["samples"]


@needs_apt
def test_bench_on_qemu_marks_timings_emulated(exported, test_npz):
    proc = run_cli(
        "bench",
        exported["int8"].path,
        "--qemu",
        "cortex-a72",
        "--runs",
        "5",
        "--warmup",
        "1",
        "--inputs",
        test_npz,
        "--json",
        "-",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    (r,) = json.loads(proc.stdout)["results"]
    assert r["host"] == "qemu:cortex-a72" and r["emulated"] is True
    assert r["platform"]["machine"] == "aarch64"
    assert r["accuracy"] == pytest.approx(exported["int8"].accuracy, abs=1e-9)


@needs_apt
def test_search_checks_each_trial_on_arm64(tiny_keras_path, tmp_path):
    """edgekit search --qemu: each trial's file also runs on ARM64 and agrees with this machine."""
    space = tmp_path / "space.toml"
    space.write_text("channel_ratio = 0.5\nsparsity = 0.0\nclusters = 0\nqat = false\ndistill = false\nepochs = 1\n")
    proc = run_cli(
        "search",
        tiny_keras_path,
        "--data",
        "digits",
        "-o",
        tmp_path / "study",
        "--trials",
        "1",
        "--space",
        space,
        "--qemu",
        "cortex-a72",
        "--runs",
        "10",
        "--warmup",
        "2",
        "--json",
        "-",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    (trial,) = json.loads(proc.stdout)["trials"]
    assert trial["state"] == "COMPLETE"
    assert trial["qemu_accuracy"] == pytest.approx(trial["accuracy"], abs=1 / 360 + 1e-9)


@needs_apt
def test_a_trainable_head_trains_on_arm64_as_here(tmp_path):
    """learner.py (numpy + LiteRT) under QEMU on both Pi CPUs: the same train steps as this machine
    on the same batches, weights within 1e-5."""
    import numpy as np

    from edgekit import keras
    from edgekit.converters.trainable import TrainableOptions, export_trainable
    from edgekit.device import bench
    from edgekit.device.board import learner
    from edgekit.device.host.qemu import python_argv

    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(6, activation="relu")(inp)))
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    head = tmp_path / "head.tflite"
    export_trainable(model, head, "int8", calibration=x, options=TrainableOptions(optimizer="adam", batch_size=8))
    states = {}
    for cpu in ("x86_64", "cortex-a72", "cortex-a76"):
        prefix = [sys.executable] if cpu == "x86_64" else python_argv(cpu)
        out = tmp_path / f"{cpu}.npz"
        proc = subprocess.run(
            prefix + [learner.__file__, str(head), "--steps", "10", "--warmup", "0", "--state", str(out)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout)["batch_size"] == 8
        states[cpu] = dict(np.load(out))
    for cpu in ("cortex-a72", "cortex-a76"):
        assert max(np.abs(states[cpu][k] - states["x86_64"][k]).max() for k in states[cpu]) <= 1e-5
    # `bench --learn` runs the same learner there: its losses are this machine's, its timings marked emulated
    (emu,), (loc,) = (
        bench([str(head)], learn=True, qemu=q, runs=3, warmup=0, progress=False) for q in (["cortex-a72"], [])
    )
    assert emu.ok and emu.emulated and emu.data["mode"] == "learn", emu.error
    assert emu.data["loss"] == pytest.approx(loc.data["loss"], rel=1e-5)
