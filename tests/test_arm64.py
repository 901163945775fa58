"""ARM64 under real QEMU user-mode emulation (cortex-a72 = Pi 4, cortex-a76 = Pi 5), with the
aarch64 Python, numpy and LiteRT wheels: the same int8 outputs, bit for bit, on both Pi CPUs, and
the same as this machine's up to one quantization step of the int8 softmax.

The first run prepares QEMU and the arm64 sysroot in the cache (about 300 MB, ~15 s);
``make arm-check`` runs the same comparison on the demo's models."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from conftest import run_cli

pytestmark = [
    pytest.mark.skipif(
        not (shutil.which("apt-get") and shutil.which("dpkg-deb")) and not os.environ.get("EDGEKIT_REQUIRE_QEMU"),
        reason="the ARM64 check fetches QEMU and an arm64 sysroot with apt-get (Debian/Ubuntu only)",
    ),
    pytest.mark.xdist_group("arm64"),
]  # one xdist worker runs them all: the QEMU sysroot is prepared once, not raced


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
