"""Remote boards over SSH: the OpenSSH client with the user's own configuration, one session per
board carrying the harness, the models and the results on its stdin and stdout (``remote.py`` is
the board side), and ``edgekit device setup``. No command is ever built by pasting strings into
a shell: every remote word is quoted with :func:`shlex.quote`, and the models are renamed
``m0.tflite``, ``m1.tflite`` … on the board."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shlex
import subprocess
import tarfile
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from edgekit.core.errors import HarnessError, Message
from edgekit.device import board
from edgekit.device.board import learner
from edgekit.device.board.harness import HARNESS_PATH
from edgekit.device.host.children import BenchmarkResult, harness_argv, parse_result, read_stderr

# The board side of a remote run (its source is sent over stdin: it has no file on the board).
REMOTE_PATH = os.path.join(os.path.dirname(os.path.abspath(board.__file__)), "remote.py")

# Where `edgekit device setup` puts the board's venv, relative to the remote home directory.
DEFAULT_REMOTE_VENV = ".edgekit/venv"
SSH_CONNECT_TIMEOUT = 15


@dataclass(frozen=True)
class Host:
    """``[user@]hostname[:port]`` (an IPv6 address in brackets: ``user@[::1]:2222``)."""

    hostname: str
    user: Optional[str] = None
    port: Optional[int] = None

    @classmethod
    def parse(cls, spec: str) -> "Host":
        m = re.fullmatch(
            r"(?:(?P<user>[^@\s/]+)@)?(?:\[(?P<v6>[^\]\s]+)\]|(?P<name>[^@:\s/\[\]]+))(?::(?P<port>\d+))?", spec or ""
        )
        if not m or (m.group("port") and not 0 < int(m.group("port")) < 65536):
            raise HarnessError(
                "{hosts} entry {spec!r} is not user@board[:port] (e.g. pi@raspberrypi.local or pi@10.0.0.7:2222)",
                params="hosts",
                spec=spec,
            )
        return cls(m.group("v6") or m.group("name"), m.group("user"), int(m.group("port")) if m.group("port") else None)

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
    cmd = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={SSH_CONNECT_TIMEOUT}",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=3",
    ]
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


def _payload(jobs, inputs, learn: bool = False) -> tuple:
    """The tar sent to the board and each job's command line with board-side file names: the
    models become ``m0.tflite``, ``m1.tflite`` … (a trainable head's backbone ``m0.backbone.tflite``
    beside it) so no user path (spaces, quotes, ``$``) ever reaches the remote side."""
    buf = io.BytesIO()
    names: Dict[str, str] = {}
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(HARNESS_PATH, arcname="harness.py")
        if learn:
            tar.add(learner.LEARNER_PATH, arcname="learner.py")
        if inputs:
            tar.add(inputs, arcname="inputs.npz")
        for model, _, _ in jobs:
            if model not in names:
                names[model] = f"m{len(names)}.tflite"
                tar.add(model, arcname=names[model])
                if learn and learner.backbone_of(model):
                    tar.add(learner.backbone_of(model), arcname=learner.backbone_path(names[model]))
    script = "learner.py" if learn else "harness.py"
    remote_jobs = [
        [script] + harness_argv(names[model], args, "inputs.npz" if inputs else None) for model, _, args in jobs
    ]
    return buf.getvalue(), remote_jobs


def run_remote(
    jobs, host: Host, python, ssh_config, inputs, live, progress, timeout, learn: bool = False
) -> List[BenchmarkResult]:
    """All jobs for one board in one SSH session (see ``remote.py``); ``learn``: the jobs are
    trainable heads timed by ``learner.py`` instead of models timed by the harness."""
    label = str(host)
    missing = [m for m, _, _ in jobs if not os.path.isfile(m)]
    results: Dict[int, BenchmarkResult] = {}
    for i, (model, threads, _) in enumerate(jobs):
        if model in missing:
            results[i] = BenchmarkResult(model, error=f"model file not found: {model}", host=label, threads=threads)
    todo = [j for i, j in enumerate(jobs) if i not in results]
    index = [i for i in range(len(jobs)) if i not in results]
    if todo:
        payload, remote_jobs = _payload(todo, inputs, learn)
        with open(REMOTE_PATH, "rb") as f:
            program = f.read()
        from edgekit.device.board.remote import BOOT

        argv = ssh_command(host, remote_python_argv(python) + ["-c", BOOT], ssh_config)
        header = json.dumps({"size": len(payload), "jobs": remote_jobs}).encode()
        proc = live.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        tail: List[str] = []
        current = {"name": "", "ready": False}
        reader = threading.Thread(
            target=read_stderr,
            daemon=True,
            args=(proc.stderr, lambda text: progress.update(label, f"{current['name']} {text}"), tail),
        )
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
                        parse_result(model, event["returncode"], event["stdout"], tail, label, threads), host
                    )
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
    if result.missing:
        what = "numpy" if result.missing == "numpy" else "LiteRT interpreter"
        return dataclasses.replace(
            result,
            error=(
                Message(
                    "{host} has no {what} for its python: run 'edgekit device setup {host}' (or pass {remote_python}, "
                    "a python that has numpy and ai-edge-litert)",
                    params="remote_python",
                    host=host,
                    what=what,
                )
            ),
        )
    return result


def _ssh_failure(host: Host, code: int, tail: List[str], ready: bool):
    """Why a session ended before all results came back, from ssh's exit code and last words."""
    last = tail[-1] if tail else f"ssh exited with code {code}"
    if ready:
        return f"the SSH connection to {host} dropped during the run: {last}"
    if code == 255:
        if "Permission denied" in last or "Host key verification failed" in last:
            return (
                f"SSH authentication to {host} failed ({last}); check that 'ssh {host.destination}' "
                "logs in without a password prompt (keys or agent)"
            )
        return f"cannot reach {host} over SSH: {last}"
    if code == 127 or "not found" in last:
        return Message(
            "no python on {host} ({last}); install Python >= 3.9 there, run 'edgekit device setup {host}', "
            "or pass {remote_python}",
            params="remote_python",
            host=host,
            last=last,
        )
    return f"the remote run on {host} failed (exit {code}): {last}"


def setup(
    host: str,
    *,
    venv: str = DEFAULT_REMOTE_VENV,
    python: str = "python3",
    packages: Sequence[str] = ("numpy", "ai-edge-litert"),
    ssh_config: Optional[str] = None,
    timeout: float = 1800.0,
) -> dict:
    """Create (or update) a venv on the board with numpy + ai-edge-litert, the harness's only
    needs, and check it imports them. Returns what the board's venv has:
    ``{"python": ..., "numpy": ..., "litert": ..., "venv": ...}``."""
    h = Host.parse(host)
    script = (
        'set -e; py=$1; venv=$2; check=$3; shift 3; "$py" -m venv "$venv"; '
        '"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$@" >&2; '
        'exec "$venv/bin/python" -c "$check"'
    )
    check = (
        "import json, sys, numpy, ai_edge_litert; print(json.dumps({'python': sys.version.split()[0], "
        "'numpy': numpy.__version__, 'litert': getattr(ai_edge_litert, '__version__', '?'), "
        "'venv': sys.prefix}))"
    )
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
