"""Check the device harness's targets, everything measured side by side in one run.

    .venv/bin/python benchmarks/harness_targets.py [--runs 300] [--rounds 3] [--demo-dir runs/demo]
    .venv/bin/python benchmarks/harness_targets.py --smoke [--demo-dir DIR]      (every row, tiny models)

- fidelity: the harness's median latency (fresh process per model, as `edgekit bench` runs it)
  within ±10% of `litert-benchmark`'s median on the same model, threads, warm-up and run count,
  for the demo's float32/int8 models and MobileNetV2 1.0/224 float32/int8. The two tools are
  alternated for --rounds rounds and the median of each tool's medians is compared.
  `litert-benchmark` reports milliseconds with two decimals, so for sub-0.1 ms models the
  allowance is ±10% or its 0.005 ms rounding, whichever is larger.
- overhead: the harness's timing loop vs a bare `invoke()` loop in the same process, alternated:
  mean per-invoke time within 2%.
- memory: the peak RSS the harness reports (VmHWM) within 10% of the child's max RSS measured
  independently (getrusage of a wrapper whose only child is the harness); MobileNetV2 float32
  footprint > int8 footprint.
- remote: over SSH to a real sshd on 127.0.0.1 (skipped without openssh-server): the same JSON
  keys, median within ±15% of the local run of the same model.
Exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict

import numpy as np
import smoke  # benchmarks/smoke.py

from edgekit.core.results import table
from edgekit.device import bench, load_interpreter
from edgekit.device.board.harness import HARNESS_PATH, _timed_runs

LITERT_BENCHMARK = os.path.join(os.path.dirname(sys.executable), "litert-benchmark")


@dataclass(frozen=True)
class Sizes:
    """The defaults of the run: :data:`FULL` (``make bench-harness``) or :data:`SMOKE`."""

    mobilenet_v2: Dict[str, Any] = field(default_factory=dict)  # create("mobilenet_v2", **this)
    demo: Dict[str, Any] = field(default_factory=dict)  # the smoke demo model's overrides (no --demo-dir)
    images: int = 32  # its calibration
    runs: int = 300
    warmup: int = 30
    rounds: int = 3


FULL = Sizes()
# 96x96 inputs: shallow models, still slow enough for litert-benchmark's two decimals of a millisecond
SMOKE = Sizes(
    dict(preset="digits", input_shape=(96, 96, 3), **smoke.DEMO_CONFIG),
    demo=dict(input_shape=(96, 96, 1)),
    images=8,
    runs=20,
    warmup=2,
    rounds=1,
)


def _export_both(model, name: str, tmp: str, images: int) -> dict:
    """``model`` exported float32 and int8 (random calibration images) into ``tmp``."""
    from edgekit.converters import export

    x = np.random.default_rng(0).random((images,) + tuple(model.input_shape[1:]), dtype=np.float32)
    out = {}
    for q in ("float32", "int8"):
        path = os.path.join(tmp, f"{name}_{q}.tflite")
        export(model, path, q, calibration=x, calib_samples=images, validation_data=(x[:4], None), layer_report=False)
        out[q] = path
    return out


def models(demo_dir, tmp: str, sz: Sizes = FULL) -> dict:
    """The demo's .tflite files (run `make demo` first; None: the smoke demo model's, exported here)
    and MobileNetV2 1.0/224 float32/int8."""
    from edgekit.models import create

    out = {}
    if demo_dir is None:
        demo = _export_both(create(smoke.demo_model(), preset="digits", **sz.demo), "demo", tmp, sz.images)
        out.update({f"demo {q}": path for q, path in demo.items()})
    for q in ("float32", "int8"):
        path = out.get(f"demo {q}") or os.path.join(demo_dir, f"model_{q}.tflite")
        if not os.path.isfile(path):
            sys.exit(f"{path} not found: run 'make demo' first (or pass --demo-dir)")
        out[f"demo {q}"] = path
    mbv2 = _export_both(create("mobilenet_v2", **sz.mobilenet_v2), "mbv2", tmp, sz.images)
    out.update({f"MobileNetV2 {q}": path for q, path in mbv2.items()})
    return out


def litert_median(model: str, runs: int, warmup: int, threads: int, tmp: str) -> float:
    out = os.path.join(tmp, "litert.json")
    subprocess.run(
        [
            LITERT_BENCHMARK,
            "--model",
            model,
            "--num_runs",
            str(runs),
            "--warmup_runs",
            str(warmup),
            "--num_threads",
            str(threads),
            "--result_json",
            out,
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    with open(out) as f:
        return float(json.load(f)["latency"]["median_ms"])


def harness_median(model: str, runs: int, warmup: int, threads: int) -> float:
    (r,) = bench([model], runs=runs, warmup=warmup, threads=threads, progress=False)
    if not r.ok:
        sys.exit(f"{model}: {r.error}")
    return r.latency_ms["p50"]


def fidelity_rows(paths: dict, runs: int, warmup: int, rounds: int, tmp: str) -> list:
    rows = []
    for name, path in paths.items():
        h, lb = [], []
        for _ in range(rounds):
            h.append(harness_median(path, runs, warmup, 1))
            lb.append(litert_median(path, runs, warmup, 1, tmp))
        hm, lm = statistics.median(h), statistics.median(lb)
        ok = abs(hm - lm) <= max(0.10 * lm, 0.005)
        rows.append(
            (
                f"fidelity {name}: harness p50 vs litert-benchmark median (±10%)",
                f"{hm:.3f} vs {lm:.2f} ms = {hm / lm:.3f}×",
                ok,
            )
        )
    return rows


def overhead_rows(path: str, runs: int, rounds: int) -> list:
    interp = load_interpreter(path)
    for _ in range(50):
        interp.invoke()
    invoke = interp.invoke
    bare, harness = [], []
    for _ in range(rounds * 4):
        t0 = time.perf_counter_ns()
        for _ in range(runs):
            invoke()
        bare.append((time.perf_counter_ns() - t0) / runs / 1e6)
        harness.append(float(np.mean(_timed_runs(invoke, runs, None, lambda *a: None))))
    b, h = statistics.median(bare), statistics.median(harness)
    return [
        (
            f"overhead {os.path.basename(path)}: harness loop vs bare invoke() loop (≤ 2%)",
            f"{h * 1e3:.2f} vs {b * 1e3:.2f} µs per invoke = {h / b - 1:+.2%}",
            abs(h / b - 1) <= 0.02,
        )
    ]


WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(json.dumps({'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "'stdout': p.stdout}))\n"
)


def memory_rows(paths: dict, runs: int) -> list:
    rows, footprints = [], {}
    for name, path in paths.items():
        out = subprocess.run(
            [sys.executable, "-c", WRAPPER, sys.executable, HARNESS_PATH, path, "--runs", str(runs)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        wrapped = json.loads(out.stdout)
        result = json.loads(wrapped["stdout"])
        independent = wrapped["maxrss_kib"] / 1024.0
        reported = result["peak_rss_mb"]
        footprints[name] = result["memory_mb"]["footprint"]
        rows.append(
            (
                f"memory {name}: reported peak RSS vs getrusage of the child (±10%)",
                f"{reported:.1f} vs {independent:.1f} MiB",
                abs(reported - independent) <= 0.10 * independent,
            )
        )
    f32, i8 = footprints.get("MobileNetV2 float32"), footprints.get("MobileNetV2 int8")
    if f32 is not None and i8 is not None:
        rows.append(
            (
                "memory: MobileNetV2 float32 footprint > int8 footprint",
                f"{f32:.1f} vs {i8:.1f} MiB ({i8 / f32:.2f}×)",
                f32 > i8,
            )
        )
    return rows


def remote_rows(path: str, runs: int, warmup: int, rounds: int, tmp: str) -> list:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tools"))
    from loopback import LoopbackSSHD, sshd_path

    if not sshd_path():
        return [("remote over SSH (needs openssh-server)", "skipped: no sshd", True)]
    with LoopbackSSHD(os.path.join(tmp, "sshd")) as server:
        local, remote = [], []
        for _ in range(rounds):
            (lr,) = bench([path], runs=runs, warmup=warmup, progress=False)
            (rr,) = bench(
                [path],
                runs=runs,
                warmup=warmup,
                hosts=[server.host],
                ssh_config=server.client_config,
                remote_python=sys.executable,
                progress=False,
            )
            if not rr.ok:
                return [("remote over SSH", rr.error, False)]
            local.append(lr.latency_ms["p50"])
            remote.append(rr.latency_ms["p50"])
        same = set(lr.to_dict()) == set(rr.to_dict()) and set(lr.data["memory_mb"]) == set(rr.data["memory_mb"])
        lm, rm = statistics.median(local), statistics.median(remote)
    return [
        ("remote over SSH (127.0.0.1): same JSON keys as local", str(same), same),
        (
            f"remote {os.path.basename(path)}: median vs local (±15%)",
            f"{rm:.3f} vs {lm:.3f} ms = {rm / lm:.3f}×",
            abs(rm / lm - 1) <= 0.15,
        ),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, help=f"timed runs (default {FULL.runs})")
    parser.add_argument("--warmup", type=int, help=f"warm-up runs (default {FULL.warmup})")
    parser.add_argument("--rounds", type=int, help=f"rounds of each comparison (default {FULL.rounds})")
    parser.add_argument("--demo-dir", help="the demo's output directory (default runs/demo)")
    smoke.add_flag(parser)
    args = parser.parse_args(argv)
    sz = SMOKE if smoke.start(parser, args) else FULL
    for name in ("runs", "warmup", "rounds"):  # the flags given, else the run's defaults
        setattr(args, name, getattr(sz, name) if getattr(args, name) is None else getattr(args, name))
    if not shutil.which(LITERT_BENCHMARK):
        sys.exit(f"{LITERT_BENCHMARK} not found (it ships with ai-edge-litert)")
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        paths = models(args.demo_dir or (None if args.smoke else "runs/demo"), tmp, sz)
        rows = fidelity_rows(paths, args.runs, args.warmup, args.rounds, tmp)
        rows += overhead_rows(paths["demo int8"], args.runs, args.rounds)
        rows += overhead_rows(paths["MobileNetV2 int8"], max(20, args.runs // 10), args.rounds)
        rows += memory_rows(paths, min(args.runs, 50))
        rows += remote_rows(paths["MobileNetV2 int8"], max(20, args.runs // 5), args.warmup, args.rounds, tmp)
    print(table(("target", "measured", "ok"), [(t, m, "yes" if ok else "NO") for t, m, ok in rows]))
    missed = [t for t, _, ok in rows if not ok]
    print(f"{len(rows) - len(missed)}/{len(rows)} targets met")
    return smoke.exit_code(not missed, args.smoke)


if __name__ == "__main__":
    sys.exit(main())
