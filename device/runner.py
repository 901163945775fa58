"""Benchmark several models, each in a fresh child process running ``harness.py``.

A fresh process per model means one model's memory never inflates another's peak RSS, and a
model that crashes the interpreter is reported while the others still run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Iterable, List, Optional

HARNESS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness.py")


@dataclass(frozen=True)
class BenchmarkResult:
    """One model's measurements: ``data`` is the harness JSON (see ``harness.measure``), or
    ``error`` says why there are none."""

    model: str
    data: dict = field(default_factory=dict)
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def latency_ms(self) -> dict:
        return self.data.get("latency_ms", {})

    @property
    def peak_rss_mb(self) -> Optional[float]:
        return self.data.get("peak_rss_mb")

    @property
    def accuracy(self) -> Optional[float]:
        return self.data.get("accuracy")

    def to_dict(self) -> dict:
        return {**self.data, "model": self.model, "error": self.error}

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def bench(
    models: Iterable[str],
    *,
    runs: int = 100,
    warmup: int = 10,
    threads: int = 1,
    xnnpack: bool = True,
    inputs: Optional[str] = None,
    python: Optional[str] = None,
    timeout: Optional[float] = 600.0,
) -> List[BenchmarkResult]:
    """Benchmark each model in its own child process, one after the other (never in parallel:
    models would compete for cores). Failures come back as results with ``error`` set."""
    return [
        _bench_one(m, runs, warmup, threads, xnnpack, inputs, python or sys.executable, timeout)
        for m in models
    ]


def _bench_one(model, runs, warmup, threads, xnnpack, inputs, python, timeout) -> BenchmarkResult:
    cmd = [python, HARNESS_PATH, os.fspath(model), "--runs", str(runs), "--warmup", str(warmup),
           "--threads", str(threads)]
    if not xnnpack:
        cmd.append("--no-xnnpack")
    if inputs:
        cmd += ["--inputs", os.fspath(inputs)]
    # The child is the harness alone: keep TensorFlow's logging quiet should it fall back to it.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return BenchmarkResult(str(model), error=f"timed out after {timeout:.0f} s")
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    try:
        data = json.loads(last)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "error" not in data and proc.returncode == 0:
        return BenchmarkResult(str(model), data=data)
    if isinstance(data, dict) and "error" in data:
        return BenchmarkResult(str(model), error=data["error"])
    if proc.returncode < 0:
        reason = f"the interpreter crashed (signal {-proc.returncode})"
    else:
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        reason = f"the harness failed (exit {proc.returncode}): {err[-1] if err else 'no output'}"
    return BenchmarkResult(str(model), error=reason)
