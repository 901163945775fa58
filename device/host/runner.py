"""Benchmark several models, each in a fresh child process running ``harness.py``: on this
machine, on boards over SSH, or on ARM64 under QEMU user-mode emulation.

A fresh process per model means one model's memory never inflates another's peak RSS, and a
model that crashes the interpreter is reported while the others still run.

Remote boards are reached with the OpenSSH client (:mod:`edgekit.device.host.ssh`), so the user's
``~/.ssh/config``, keys, agents and jump hosts apply. One SSH session per board carries everything
on its stdin (see ``remote.py``): the harness and the models go to a fresh temporary directory
there, the harness runs once per model with the board's python, the JSON comes back, and the
directory is removed — also when the run is interrupted or the connection drops.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from edgekit.core.errors import HarnessError
from edgekit.core.progress import Progress
from edgekit.device.board.harness import HARNESS_PATH
from edgekit.device.board.learner import LEARNER_PATH
from edgekit.device.host.children import (
    BenchmarkResult,
    Live,
    _harness_args,
    harness_argv,
    parse_result,
    read_stderr,
)
from edgekit.device.host.ssh import Host, run_remote


class _ProgressLine:
    """One live line for all targets: ``board-a: m.tflite timed 640/1000 | board-b: ...``."""

    def __init__(self, enabled: Optional[bool]):
        self._progress = Progress("bench", enabled=enabled)
        self._slots: Dict[str, str] = {}
        self._lock = threading.Lock()

    def update(self, slot: str, text: str) -> None:
        with self._lock:
            self._slots[slot] = text
            self._progress.show(" | ".join(f"{k}: {v}" if k else v for k, v in self._slots.items()))

    def close(self) -> None:
        self._progress.close()


def _run_local(jobs, python_argv, host_label, live, progress, timeout, inputs, script) -> List[BenchmarkResult]:
    """Each job (model, threads, harness args) in its own child process on this machine, running
    ``script`` (the harness, or the learner for trainable heads)."""
    results = []
    # The child is the harness alone: keep TensorFlow's logging quiet should it fall back to it.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for model, threads, args in jobs:
        name = os.path.basename(model)
        tail: List[str] = []
        try:
            proc = live.start(
                list(python_argv) + [script] + harness_argv(model, args, inputs),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise HarnessError(f"cannot start {python_argv[0]}: {exc.strerror}") from None
        # stderr by one thread (progress lines, the tail of anything else), stdout by another: each
        # pipe has one reader, so no line of either goes astray
        reader = threading.Thread(
            target=read_stderr,
            daemon=True,
            args=(proc.stderr, lambda text, n=name: progress.update(host_label or "", f"{n} {text}"), tail),
        )
        chunks: List[bytes] = []
        out_reader = threading.Thread(target=lambda p=proc, c=chunks: c.append(p.stdout.read()), daemon=True)
        reader.start()
        out_reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            results.append(
                BenchmarkResult(str(model), error=f"timed out after {timeout:.0f} s", host=host_label, threads=threads)
            )
            continue
        except BaseException:  # interrupted: the child goes with us
            proc.kill()
            proc.wait()
            raise
        finally:
            live.done(proc)
        reader.join(timeout=5)
        out_reader.join(timeout=5)
        out = b"".join(chunks)
        results.append(
            parse_result(str(model), proc.returncode, out.decode("utf-8", "replace"), tail, host_label, threads)
        )
    return results


def bench(
    models: Iterable[str],
    *,
    runs: int = 100,
    warmup: int = 10,
    threads=1,
    xnnpack: bool = True,
    inputs: Optional[str] = None,
    duration: Optional[float] = None,
    hosts: Sequence[str] = (),
    remote_python: Optional[str] = None,
    ssh_config: Optional[str] = None,
    qemu: Sequence[str] = (),
    python: Optional[Sequence[str]] = None,
    timeout: Optional[float] = 600.0,
    progress: Optional[bool] = None,
    learn: bool = False,
) -> List[BenchmarkResult]:
    """Benchmark each model (a path, or a list of them; × each value of ``threads``, an int or a
    list: a sweep) in its own
    child process. Without ``hosts`` or ``qemu`` the models run on this machine, one after the
    other (never in parallel: they would compete for cores). Each of ``hosts`` (``user@board
    [:port]``) is a remote board reached over SSH, each of ``qemu`` (``cortex-a72``,
    ``cortex-a76``) is ARM64 under QEMU; several targets run in parallel, the models on each one
    after the other. Results come in target order, then model order, then thread order;
    failures come back as results with ``error`` set. ``progress`` draws a live line on stderr
    (default: when stderr is a terminal).

    ``learn``: the models are trainable heads (``edgekit export --trainable``), each trained for
    ``warmup`` + ``runs`` steps by ``learner.py``: ``latency_ms`` is one train step, beside one
    inference (``inference_ms``), start-up and memory (see :func:`edgekit.device.board.learner.measure`)."""
    models = [os.fspath(models)] if isinstance(models, (str, os.PathLike)) else [os.fspath(m) for m in models]
    sweep = [int(t) for t in (threads if isinstance(threads, (list, tuple)) else [threads])]
    if not models:
        raise HarnessError("no models given")
    for t in sweep:
        if t < 1:
            raise HarnessError(f"threads must be >= 1. Received threads={t}")
    if learn and duration:
        raise HarnessError(
            "a learning benchmark counts its train steps: give {runs} instead of {duration}",
            params=("runs", "duration"),
        )
    if inputs is not None and not os.path.isfile(inputs):
        raise HarnessError(f"inputs file not found: {inputs}")
    parsed = [Host.parse(h) for h in hosts]
    if qemu:
        from edgekit.device.host import qemu as qemu_mod

        qemu_argvs = {cpu: qemu_mod.python_argv(cpu) for cpu in qemu}
    inputs = os.path.abspath(inputs) if inputs is not None else None
    jobs = [(m, t, _harness_args(runs, warmup, t, xnnpack, duration)) for m in models for t in sweep]
    script = LEARNER_PATH if learn else HARNESS_PATH

    live = Live()
    line = _ProgressLine(progress)
    targets: List[Callable[[], List[BenchmarkResult]]] = []
    if not parsed and not qemu:
        targets.append(lambda: _run_local(jobs, python or [sys.executable], None, live, line, timeout, inputs, script))
    for cpu in qemu:
        targets.append(
            lambda cpu=cpu: _run_local(
                jobs, qemu_argvs[cpu], f"qemu:{cpu}", live, line, timeout and timeout * 20, inputs, script
            )
        )
    for host in parsed:
        targets.append(
            lambda host=host: run_remote(jobs, host, remote_python, ssh_config, inputs, live, line, timeout, learn)
        )
    try:
        if len(targets) == 1:
            return targets[0]()
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            futures = [pool.submit(t) for t in targets]
            return [r for f in futures for r in f.result()]
    except BaseException:
        live.stop_all()
        raise
    finally:
        line.close()


def ratios(results: Sequence[BenchmarkResult]) -> List[Optional[dict]]:
    """Each result's figures as a ratio to the first successful result on the same target with
    the same thread count (None for that first one and for failures)."""
    out: List[Optional[dict]] = []
    first: Dict[tuple, BenchmarkResult] = {}
    for r in results:
        key = (r.host, r.data.get("threads", r.threads))
        if not r.ok:
            out.append(None)
            continue
        base = first.setdefault(key, r)
        if base is r:
            out.append(None)
            continue

        def ratio(a, b):
            return a / b if a is not None and b else None

        out.append(
            {
                "p50": ratio(r.latency_ms.get("p50"), base.latency_ms.get("p50")),
                "p90": ratio(r.latency_ms.get("p90"), base.latency_ms.get("p90")),
                "mean": ratio(r.latency_ms.get("mean"), base.latency_ms.get("mean")),
                "peak_rss": ratio(r.peak_rss_mb, base.peak_rss_mb),
                "footprint": ratio(r.footprint_mb, base.footprint_mb),
                "size": ratio(r.data.get("model_size_bytes"), base.data.get("model_size_bytes")),
                "baseline": base.model,
            }
        )
    return out
