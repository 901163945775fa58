"""The board side of a remote benchmark: started over SSH, it reads everything from stdin.

edgekit's runner starts ``PYTHON -c BOOT`` on the board (``BOOT`` reads this file's source
from stdin and runs it), then sends on the same stdin one JSON header line ``{"size": N,
"jobs": [[script, args...], ...]}`` and an N-byte tar holding ``harness.py`` (and ``learner.py``),
the models and the inputs. This program unpacks it into a fresh temporary directory, runs the
script (``harness.py``, or ``learner.py`` for trainable heads) once per job
in its own child process (forwarding the harness's progress lines on stderr), prints one JSON
line per event on stdout, and removes the directory when done.

Stdin stays open for the whole run: when it closes before the end (the user pressed Ctrl-C, the
SSH connection dropped), the running child is killed and the directory removed at once.

Standard library only, Python >= 3.9: it must run with any board's python.
"""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading

# What the runner sends as the remote program: read this file's source from stdin, run it.
BOOT = "import sys;exec(sys.stdin.buffer.read(int(sys.stdin.buffer.readline())))"


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _forward(stream) -> None:
    for line in iter(stream.readline, b""):
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()


def main() -> None:
    stdin = sys.stdin.buffer
    header = json.loads(stdin.readline())
    payload = stdin.read(int(header["size"]))
    tmp = tempfile.mkdtemp(prefix="edgekit-bench-")
    state = {"child": None}
    lock = threading.Lock()

    def cleanup() -> None:
        with lock:
            child = state["child"]
            if child is not None and child.poll() is None:
                child.kill()
            shutil.rmtree(tmp, ignore_errors=True)

    def client_gone(*_args) -> None:
        cleanup()
        os._exit(3)

    def watch_stdin() -> None:
        stdin.read()  # returns at EOF: the client went away or finished
        if not state.get("done"):
            client_gone()

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, client_gone)
    try:
        with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
            for member in tar.getmembers():  # only plain files named by the runner
                if not member.isfile() or os.path.basename(member.name) != member.name:
                    raise ValueError(f"unexpected entry in the payload: {member.name!r}")
            tar.extractall(tmp)
        _emit({"event": "ready", "tmpdir": tmp, "python": sys.version.split()[0]})
        threading.Thread(target=watch_stdin, daemon=True).start()
        for i, args in enumerate(header["jobs"]):
            if args[0] not in ("harness.py", "learner.py"):
                raise ValueError(f"unexpected script in the jobs: {args[0]!r}")
            _emit({"event": "start", "job": i})
            with lock:
                child = subprocess.Popen(
                    [sys.executable] + [str(a) for a in args],
                    cwd=tmp,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                state["child"] = child
            forwarder = threading.Thread(target=_forward, args=(child.stderr,), daemon=True)
            forwarder.start()
            out = child.stdout.read()
            code = child.wait()
            forwarder.join(timeout=5)
            _emit({"event": "result", "job": i, "returncode": code, "stdout": out.decode("utf-8", "replace")})
        state["done"] = True
        _emit({"event": "done"})
    finally:
        cleanup()


if __name__ == "__main__":
    main()
