"""One benchmark job as a child process: the harness's command line, its result and the live
set of children an interrupt stops. Shared by local, QEMU and SSH runs."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

from edgekit.device.board.harness import PROGRESS_PREFIX


@dataclass(frozen=True)
class BenchmarkResult:
    """One model's measurements on one target: ``data`` is the harness JSON (see
    ``harness.measure``), or ``error`` says why there are none. ``host`` is None for this
    machine, ``user@board[:port]`` for a remote board, ``qemu:CPU`` under emulation."""

    model: str
    data: dict = field(default_factory=dict)
    error: Optional[object] = None  # why it failed: text, or a Message naming parameters
    host: Optional[str] = None
    threads: Optional[int] = None
    missing: Optional[str] = None  # the package the target's python lacks ("numpy", "LiteRT"), when that failed

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
    def footprint_mb(self) -> Optional[float]:
        return (self.data.get("memory_mb") or {}).get("footprint")

    @property
    def accuracy(self) -> Optional[float]:
        return self.data.get("accuracy")

    @property
    def mae(self) -> Optional[float]:
        """The mean absolute error on regression targets (``y`` real-valued), run on the target."""
        return self.data.get("mae")

    def quality(self) -> Optional[str]:
        """The on-device figures as text: accuracy, ``MAE …``, or per output ``name: …`` (None without labels)."""

        def text(figures: dict) -> Optional[str]:
            if figures.get("mae") is not None:
                return f"MAE {figures['mae']:.4g}"
            return None if figures.get("accuracy") is None else f"{figures['accuracy']:.4f}"

        loss = self.data.get("loss")  # a learning benchmark: the mean loss of its first and last steps
        if loss:
            return f"{loss['first']:.4g} → {loss['last']:.4g}"
        per = self.data.get("outputs")
        if per:
            return ", ".join(f"{name} {text(f)}" for name, f in per.items())
        return text(self.data)

    @property
    def emulated(self) -> bool:
        return bool(self.host and self.host.startswith("qemu:"))

    def to_dict(self) -> dict:
        threads = self.data.get("threads", self.threads)
        return {
            **self.data,
            "model": self.model,
            "host": self.host,
            "threads": threads,
            "emulated": self.emulated,
            "error": None if self.error is None else str(self.error),
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def summary(self) -> str:
        where = f" on {self.host}" if self.host else ""
        if not self.ok:
            return f"{self.model}{where}: failed: {self.error}"
        lat = self.latency_ms
        return (
            f"{self.model}{where}: p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f} ms, peak RSS "
            f"{self.peak_rss_mb:.1f} MiB"
            + (f", accuracy {self.accuracy:.4f}" if self.accuracy is not None else "")
            + (f", MAE {self.mae:.4g}" if self.mae is not None else "")
            + (f", on-device {self.quality()}" if self.data.get("outputs") else "")
        )


class Live:
    """Child processes still running, so an interrupt can stop them all."""

    def __init__(self):
        self.procs = set()
        self.lock = threading.Lock()
        self.stopped = False

    def start(self, argv, **kwargs) -> subprocess.Popen:
        with self.lock:
            if self.stopped:
                raise KeyboardInterrupt
            proc = subprocess.Popen(argv, **kwargs)
            self.procs.add(proc)
            return proc

    def done(self, proc) -> None:
        with self.lock:
            self.procs.discard(proc)

    def stop_all(self) -> None:
        with self.lock:
            self.stopped = True
            for proc in self.procs:
                if proc.poll() is None:
                    proc.terminate()


def read_stderr(stream, on_progress: Callable[[str], None], tail: List[str]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        if line.startswith(PROGRESS_PREFIX):
            phase, done, total = (line[len(PROGRESS_PREFIX) :].split() + ["", "0", "0"])[:3]
            on_progress(f"{phase} {done}/{total}" if total != "0" else f"{phase} {done} runs")
        elif line.strip():
            tail.append(line)
            del tail[:-20]


def parse_result(model: str, returncode: int, stdout: str, stderr_tail: List[str], host, threads) -> BenchmarkResult:
    """A result from the harness's exit code, stdout (one JSON object) and last stderr lines."""
    lines = stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "error" not in data and returncode == 0:
        return BenchmarkResult(model, data={**data, "model": model}, host=host, threads=threads)
    if isinstance(data, dict) and "error" in data:
        return BenchmarkResult(
            model,
            error=str(data["error"]).replace(str(data.get("model")), model),
            host=host,
            threads=threads,
            missing=data.get("missing"),
        )
    if returncode < 0:
        reason = f"the interpreter crashed (signal {-returncode})"
    else:
        reason = f"the harness failed (exit {returncode}): {stderr_tail[-1] if stderr_tail else 'no output'}"
    return BenchmarkResult(model, error=reason, host=host, threads=threads)


def _harness_args(runs, warmup, threads, xnnpack, duration) -> List[str]:
    args = ["--runs", str(runs), "--warmup", str(warmup), "--threads", str(threads), "--progress"]
    if duration:
        args += ["--duration", str(duration)]
    if not xnnpack:
        args.append("--no-xnnpack")
    return args


def harness_argv(model: str, args: Sequence[str], inputs: Optional[str] = None) -> List[str]:
    """The harness's arguments for ``model``: options first, each path attached to its option
    (``--inputs=PATH``) and the model after ``--``, so no user path (``-rf.tflite``) is ever read
    as an option."""
    return list(args) + ([f"--inputs={inputs}"] if inputs else []) + ["--", os.fspath(model)]
