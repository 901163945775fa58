"""Benchmark several models, each in a fresh child process running ``harness.py``: on this
machine, on boards over SSH, or on ARM64 under QEMU user-mode emulation.

A fresh process per model means one model's memory never inflates another's peak RSS, and a
model that crashes the interpreter is reported while the others still run.

Remote boards are reached with the OpenSSH client (``ssh``), so the user's ``~/.ssh/config``,
keys, agents and jump hosts apply. One SSH session per board carries everything on its stdin
(see ``remote.py``): the harness and the models go to a fresh temporary directory there, the
harness runs once per model with the board's python, the JSON comes back, and the directory is
removed — also when the run is interrupted or the connection drops. No command is ever built by
pasting strings into a shell: every remote word is quoted with :func:`shlex.quote`.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from edgekit.device.harness import PROGRESS_PREFIX, HarnessError, Progress

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS_PATH = os.path.join(HERE, "harness.py")
REMOTE_PATH = os.path.join(HERE, "remote.py")

# Where `edgekit device setup` puts the board's venv, relative to the remote home directory.
DEFAULT_REMOTE_VENV = ".edgekit/venv"
SSH_CONNECT_TIMEOUT = 15


@dataclass(frozen=True)
class BenchmarkResult:
    """One model's measurements on one target: ``data`` is the harness JSON (see
    ``harness.measure``), or ``error`` says why there are none. ``host`` is None for this
    machine, ``user@board[:port]`` for a remote board, ``qemu:CPU`` under emulation."""

    model: str
    data: dict = field(default_factory=dict)
    error: Optional[str] = None
    host: Optional[str] = None
    threads: Optional[int] = None

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
    def emulated(self) -> bool:
        return bool(self.host and self.host.startswith("qemu:"))

    def to_dict(self) -> dict:
        threads = self.data.get("threads", self.threads)
        return {**self.data, "model": self.model, "host": self.host, "threads": threads,
                "emulated": self.emulated, "error": self.error}

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


# -- targets -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Host:
    """``[user@]hostname[:port]`` (an IPv6 address in brackets: ``user@[::1]:2222``)."""

    hostname: str
    user: Optional[str] = None
    port: Optional[int] = None

    @classmethod
    def parse(cls, spec: str) -> "Host":
        m = re.fullmatch(r"(?:(?P<user>[^@\s/]+)@)?(?:\[(?P<v6>[^\]\s]+)\]|(?P<name>[^@:\s/\[\]]+))(?::(?P<port>\d+))?",
                         spec or "")
        if not m or (m.group("port") and not 0 < int(m.group("port")) < 65536):
            raise HarnessError(f"--host {spec!r} is not user@board[:port] (e.g. pi@raspberrypi.local or pi@10.0.0.7:2222)")
        return cls(m.group("v6") or m.group("name"), m.group("user"),
                   int(m.group("port")) if m.group("port") else None)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.hostname}" if self.user else self.hostname

    def __str__(self) -> str:
        name = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        host = f"{self.user}@{name}" if self.user else name
        return f"{host}:{self.port}" if self.port else host


def ssh_command(host: Host, remote_argv: Sequence[str], ssh_config: Optional[str] = None) -> List[str]:
    """The local argv that runs ``remote_argv`` on ``host``: OpenSSH with the user's own
    configuration (plus ``-F ssh_config`` when given), never prompting (BatchMode), every remote
    word quoted for the remote shell."""
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT}",
           "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
    if ssh_config:
        cmd += ["-F", os.fspath(ssh_config)]
    if host.port:
        cmd += ["-p", str(host.port)]
    return cmd + ["--", host.destination, " ".join(shlex.quote(str(a)) for a in remote_argv)]


def remote_python_argv(python: Optional[str]) -> List[str]:
    """The board's python: the given one, else the venv ``edgekit device setup`` made when it
    exists, else ``python3``."""
    if python:
        return [python]
    return ["sh", "-c", f'p={DEFAULT_REMOTE_VENV}/bin/python; [ -x "$p" ] || p=python3; exec "$p" "$@"', "sh"]


# -- running -------------------------------------------------------------------------------

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


class _Live:
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


def _read_stderr(stream, on_progress: Callable[[str], None], tail: List[str]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        if line.startswith(PROGRESS_PREFIX):
            phase, done, total = (line[len(PROGRESS_PREFIX):].split() + ["", "0", "0"])[:3]
            on_progress(f"{phase} {done}/{total}" if total != "0" else f"{phase} {done} runs")
        elif line.strip():
            tail.append(line)
            del tail[:-20]


def _parse(model: str, returncode: int, stdout: str, stderr_tail: List[str], host, threads) -> BenchmarkResult:
    """A result from the harness's exit code, stdout (one JSON object) and last stderr lines."""
    lines = stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "error" not in data and returncode == 0:
        return BenchmarkResult(model, data={**data, "model": model}, host=host, threads=threads)
    if isinstance(data, dict) and "error" in data:
        return BenchmarkResult(model, error=str(data["error"]).replace(str(data.get("model")), model),
                               host=host, threads=threads)
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


def _run_local(jobs, python_argv, host_label, live, progress, timeout, inputs=None) -> List[BenchmarkResult]:
    """Each job (model, threads, harness args) in its own child process on this machine."""
    results = []
    # The child is the harness alone: keep TensorFlow's logging quiet should it fall back to it.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for model, threads, args in jobs:
        name = os.path.basename(model)
        tail: List[str] = []
        try:
            proc = live.start(list(python_argv) + [HARNESS_PATH] + harness_argv(model, args, inputs),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        except OSError as exc:
            raise HarnessError(f"cannot start {python_argv[0]}: {exc.strerror}") from None
        reader = threading.Thread(target=_read_stderr, daemon=True, args=(
            proc.stderr, lambda text, n=name: progress.update(host_label or "", f"{n} {text}"), tail))
        reader.start()
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            results.append(BenchmarkResult(str(model), error=f"timed out after {timeout:.0f} s",
                                           host=host_label, threads=threads))
            continue
        except BaseException:  # interrupted: the child goes with us
            proc.kill()
            proc.wait()
            raise
        finally:
            live.done(proc)
        reader.join(timeout=5)
        results.append(_parse(str(model), proc.returncode, out.decode("utf-8", "replace"), tail, host_label, threads))
    return results


def _payload(jobs, inputs) -> tuple:
    """The tar sent to the board and the harness arguments with board-side file names: the
    models become ``m0.tflite``, ``m1.tflite`` … so no user path (spaces, quotes, ``$``) ever
    reaches the remote side."""
    buf = io.BytesIO()
    names: Dict[str, str] = {}
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(HARNESS_PATH, arcname="harness.py")
        if inputs:
            tar.add(inputs, arcname="inputs.npz")
        for model, _, _ in jobs:
            if model not in names:
                names[model] = f"m{len(names)}.tflite"
                tar.add(model, arcname=names[model])
    remote_jobs = [harness_argv(names[model], args, "inputs.npz" if inputs else None) for model, _, args in jobs]
    return buf.getvalue(), remote_jobs


def _run_remote(jobs, host: Host, python, ssh_config, inputs, live, progress, timeout) -> List[BenchmarkResult]:
    """All jobs for one board in one SSH session (see ``remote.py``)."""
    label = str(host)
    missing = [m for m, _, _ in jobs if not os.path.isfile(m)]
    results: Dict[int, BenchmarkResult] = {}
    for i, (model, threads, _) in enumerate(jobs):
        if model in missing:
            results[i] = BenchmarkResult(model, error=f"model file not found: {model}", host=label, threads=threads)
    todo = [j for i, j in enumerate(jobs) if i not in results]
    index = [i for i in range(len(jobs)) if i not in results]
    if todo:
        payload, remote_jobs = _payload(todo, inputs)
        with open(REMOTE_PATH, "rb") as f:
            program = f.read()
        from edgekit.device.remote import BOOT

        argv = ssh_command(host, remote_python_argv(python) + ["-c", BOOT], ssh_config)
        header = json.dumps({"size": len(payload), "jobs": remote_jobs}).encode()
        proc = live.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        tail: List[str] = []
        current = {"name": "", "ready": False}
        reader = threading.Thread(target=_read_stderr, daemon=True, args=(
            proc.stderr, lambda text: progress.update(label, f"{current['name']} {text}"), tail))
        reader.start()
        timer = threading.Timer(timeout * len(todo), proc.kill) if timeout else None
        if timer:
            timer.start()
        try:
            try:
                proc.stdin.write(b"%d\n" % len(program) + program + header + b"\n" + payload)
                proc.stdin.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # ssh failed to connect: its exit code and stderr say why
            for raw in iter(proc.stdout.readline, b""):
                try:
                    event = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if event.get("event") == "ready":
                    current["ready"] = True
                elif event.get("event") == "start":
                    current["name"] = os.path.basename(todo[event["job"]][0])
                    progress.update(label, current["name"])
                elif event.get("event") == "result":
                    model, threads, _ = todo[event["job"]]
                    results[index[event["job"]]] = _remote_hint(
                        _parse(model, event["returncode"], event["stdout"], tail, label, threads), host)
                elif event.get("event") == "done":
                    break
            try:
                proc.stdin.close()
            except OSError:
                pass
            code = proc.wait()
        finally:
            if timer:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            live.done(proc)
        reader.join(timeout=5)
        if live.stopped:
            raise KeyboardInterrupt
        if len(results) < len(jobs):
            reason = _ssh_failure(host, code, tail, ready=current["ready"])
            for i, (model, threads, _) in enumerate(jobs):
                results.setdefault(i, BenchmarkResult(model, error=reason, host=label, threads=threads))
    return [results[i] for i in range(len(jobs))]


def _remote_hint(result: BenchmarkResult, host: Host) -> BenchmarkResult:
    if result.error and result.error.startswith(("no LiteRT interpreter found", "no numpy for")):
        what = "numpy" if result.error.startswith("no numpy") else "LiteRT interpreter"
        return BenchmarkResult(result.model, error=(
            f"{host} has no {what} for its python: run 'edgekit device setup {host}' "
            "(or pass --remote-python with a python that has numpy and ai-edge-litert)"),
            host=result.host, threads=result.threads)
    return result


def _ssh_failure(host: Host, code: int, tail: List[str], ready: bool) -> str:
    """Why a session ended before all results came back, from ssh's exit code and last words."""
    last = tail[-1] if tail else f"ssh exited with code {code}"
    if ready:
        return f"the SSH connection to {host} dropped during the run: {last}"
    if code == 255:
        if "Permission denied" in last or "Host key verification failed" in last:
            return (f"SSH authentication to {host} failed ({last}); check that 'ssh {host.destination}' "
                    "logs in without a password prompt (keys or agent)")
        return f"cannot reach {host} over SSH: {last}"
    if code == 127 or "not found" in last:
        return (f"no python on {host} ({last}); install Python >= 3.9 there, run 'edgekit device setup "
                f"{host}', or pass --remote-python")
    return f"the remote run on {host} failed (exit {code}): {last}"


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
) -> List[BenchmarkResult]:
    """Benchmark each model (× each value of ``threads``, an int or a list: a sweep) in its own
    child process. Without ``hosts`` or ``qemu`` the models run on this machine, one after the
    other (never in parallel: they would compete for cores). Each of ``hosts`` (``user@board
    [:port]``) is a remote board reached over SSH, each of ``qemu`` (``cortex-a72``,
    ``cortex-a76``) is ARM64 under QEMU; several targets run in parallel, the models on each one
    after the other. Results come in target order, then model order, then thread order;
    failures come back as results with ``error`` set. ``progress`` draws a live line on stderr
    (default: when stderr is a terminal)."""
    models = [os.fspath(m) for m in models]
    sweep = [int(t) for t in (threads if isinstance(threads, (list, tuple)) else [threads])]
    if not models:
        raise HarnessError("no models given")
    for t in sweep:
        if t < 1:
            raise HarnessError(f"threads must be >= 1. Received threads={t}")
    if inputs is not None and not os.path.isfile(inputs):
        raise HarnessError(f"inputs file not found: {inputs}")
    parsed = [Host.parse(h) for h in hosts]
    if qemu:
        from edgekit.device import qemu as qemu_mod

        qemu_argvs = {cpu: qemu_mod.python_argv(cpu) for cpu in qemu}
    inputs = os.path.abspath(inputs) if inputs is not None else None
    jobs = [(m, t, _harness_args(runs, warmup, t, xnnpack, duration)) for m in models for t in sweep]

    live = _Live()
    line = _ProgressLine(progress)
    targets: List[Callable[[], List[BenchmarkResult]]] = []
    if not parsed and not qemu:
        targets.append(lambda: _run_local(jobs, python or [sys.executable], None, live, line, timeout, inputs))
    for cpu in qemu:
        targets.append(lambda cpu=cpu: _run_local(jobs, qemu_argvs[cpu], f"qemu:{cpu}", live, line,
                                                  timeout and timeout * 20, inputs))
    for host in parsed:
        targets.append(lambda host=host: _run_remote(jobs, host, remote_python, ssh_config, inputs, live,
                                                     line, timeout))
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

        out.append({
            "p50": ratio(r.latency_ms.get("p50"), base.latency_ms.get("p50")),
            "p90": ratio(r.latency_ms.get("p90"), base.latency_ms.get("p90")),
            "mean": ratio(r.latency_ms.get("mean"), base.latency_ms.get("mean")),
            "peak_rss": ratio(r.peak_rss_mb, base.peak_rss_mb),
            "footprint": ratio(r.footprint_mb, base.footprint_mb),
            "size": ratio(r.data.get("model_size_bytes"), base.data.get("model_size_bytes")),
            "baseline": base.model,
        })
    return out


def setup(host: str, *, venv: str = DEFAULT_REMOTE_VENV, python: str = "python3",
          packages: Sequence[str] = ("numpy", "ai-edge-litert"), ssh_config: Optional[str] = None,
          timeout: float = 1800.0) -> dict:
    """Create (or update) a venv on the board with numpy + ai-edge-litert, the harness's only
    needs, and check it imports them. Returns what the board's venv has:
    ``{"python": ..., "numpy": ..., "litert": ..., "venv": ...}``."""
    h = Host.parse(host)
    script = ('set -e; py=$1; venv=$2; check=$3; shift 3; "$py" -m venv "$venv"; '
              '"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$@" >&2; '
              'exec "$venv/bin/python" -c "$check"')
    check = ("import json, sys, numpy, ai_edge_litert; print(json.dumps({'python': sys.version.split()[0], "
             "'numpy': numpy.__version__, 'litert': getattr(ai_edge_litert, '__version__', '?'), "
             "'venv': sys.prefix}))")
    argv = ssh_command(h, ["sh", "-c", script, "sh", python, venv, check, *packages], ssh_config)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"setting up {h} took longer than {timeout:.0f} s") from None
    tail = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    if proc.returncode != 0:
        if proc.returncode == 255:
            raise HarnessError(_ssh_failure(h, 255, tail, ready=False))
        raise HarnessError(f"setting up {h} failed (exit {proc.returncode}): {tail[-1] if tail else 'no output'}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise HarnessError(f"setting up {h}: the venv did not report its versions") from None
