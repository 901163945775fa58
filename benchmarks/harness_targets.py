"""Check the device harness's targets, everything measured side by side in one run.

    .venv/bin/python benchmarks/harness_targets.py [--runs 300] [--rounds 3] [--demo-dir runs/demo]

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

import numpy as np

from edgekit.core.results import table
from edgekit.device import bench, load_interpreter
from edgekit.device.board.harness import HARNESS_PATH, _timed_runs

LITERT_BENCHMARK = os.path.join(os.path.dirname(sys.executable), "litert-benchmark")


def models(demo_dir: str, tmp: str) -> dict:
    """The demo's .tflite files (run `make demo` first) and MobileNetV2 1.0/224 float32/int8."""
    from edgekit.converters import export
    from edgekit.models import create

    out = {}
    for q in ("float32", "int8"):
        path = os.path.join(demo_dir, f"model_{q}.tflite")
        if not os.path.isfile(path):
            sys.exit(f"{path} not found: run 'make demo' first (or pass --demo-dir)")
        out[f"demo {q}"] = path
    mbv2 = create("mobilenet_v2")
    x = np.random.default_rng(0).random((32, 224, 224, 3), dtype=np.float32)
    for q in ("float32", "int8"):
        path = os.path.join(tmp, f"mbv2_{q}.tflite")
        export(mbv2, path, q, calibration=x, calib_samples=32, validation_data=(x[:4], None), layer_report=False)
        out[f"MobileNetV2 {q}"] = path
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
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--demo-dir", default="runs/demo")
    args = parser.parse_args(argv)
    if not shutil.which(LITERT_BENCHMARK):
        sys.exit(f"{LITERT_BENCHMARK} not found (it ships with ai-edge-litert)")
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        paths = models(args.demo_dir, tmp)
        rows = fidelity_rows(paths, args.runs, args.warmup, args.rounds, tmp)
        rows += overhead_rows(paths["demo int8"], args.runs, args.rounds)
        rows += overhead_rows(paths["MobileNetV2 int8"], max(20, args.runs // 10), args.rounds)
        rows += memory_rows(paths, min(args.runs, 50))
        rows += remote_rows(paths["MobileNetV2 int8"], max(20, args.runs // 5), args.warmup, args.rounds, tmp)
    print(table(("target", "measured", "ok"), [(t, m, "yes" if ok else "NO") for t, m, ok in rows]))
    missed = [t for t, _, ok in rows if not ok]
    print(f"{len(rows) - len(missed)}/{len(rows)} targets met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
