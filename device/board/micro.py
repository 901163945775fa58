"""Run a .tflite model with TensorFlow Lite for Microcontrollers (TFLM), the interpreter of
microcontroller boards, through the ``tflite-micro`` package's Python interpreter.

Like ``harness.py`` this file imports only the standard library, numpy and ``tflite_micro``, and
runs as a child process (``python micro.py [options] -- MODEL.tflite``): TFLM stops the process
(abort) on some models it cannot prepare, and that must never take the caller down. It prints one
JSON object on stdout (see :func:`examine`), or ``{"error": ...}`` with exit 2.

- **arena**: the smallest tensor arena with which TFLM allocates and runs the model, by bisection
  with the real interpreter to ``granularity`` bytes (TFLM aligns its buffers to 16), with TFLM's
  own breakdown of it (``allocations``: head = the planned activation buffers, tail = what stays
  for the model's lifetime, and each kind of tail allocation).
- **outputs**: with ``--inputs X.npz`` (``x`` already in the input's dtype), every sample run at
  that arena and the raw first outputs saved to ``--outputs OUT.npz``.
- **host_invoke_ms**: invoke() on this machine with TFLM's reference kernels — not a board's time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
except ImportError:  # reported by main() as a one-line error
    np = None

GRANULARITY = 16  # TFLM's MicroArenaBufferAlignment

if __package__:  # imported as edgekit.device.board.micro: the board side's one error
    from edgekit.device.board.errors import BoardError
else:

    class BoardError(ValueError):  # type: ignore[no-redef]
        """A one-line, user-facing error."""


INSTALL_HINT = (
    "install it with pip install 'edgekit-tflite[mcu]' (or pip install tflite-micro==0.dev20261023182759, the build "
    "edgekit pins)"
)


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise BoardError(
            f"the TFLM interpreter (tflite-micro) is not installed for {sys.executable}: {INSTALL_HINT}"
        ) from None
    return runtime


def tflm_version() -> str:
    try:
        from tflite_micro.python.tflite_micro._version import __version__
    except ImportError:
        return "?"
    return __version__


class _NativeStderr:
    """What TFLM prints on file descriptor 2 while the block runs (it prints nowhere else)."""

    def __enter__(self):
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        self.text = ""
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()
        return False


def _last_line(text: str) -> str:
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.startswith("[RecordingMicroAllocator]")]
    return lines[-1] if lines else ""


def _interpreter(model: bytes, arena: int):
    """(interpreter or None, what TFLM printed)."""
    runtime = _runtime()
    with _NativeStderr() as err:
        try:
            interp = runtime.Interpreter.from_bytes(model, arena_size=int(arena))
        except RuntimeError:
            interp = None
    return interp, err.text


def _zeros(interp, index: int):
    d = interp.get_input_details(index)
    return np.zeros(tuple(int(s) for s in d["shape"]), dtype=d["dtype"])


def _invoke_zeros(interp, n_inputs: int) -> None:
    for i in range(n_inputs):
        interp.set_input(_zeros(interp, i), i)
    interp.invoke()


# How a probe ended: it ran, TFLM could not allocate, it allocated but did not run, or TFLM
# crashed the process (it does, on arenas slightly too small for some models).
RAN, NO_ALLOC, NO_RUN, CRASHED = "ran", "does not allocate", "does not run", "crashed"


def probe(model: bytes, arena: int, n_inputs: int):
    """(outcome, TFLM's last message) of allocating and running the model with ``arena`` bytes, in
    a forked process: a crash inside TFLM ends the fork, not this process."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the fork: report one line on the pipe, never return
        os.close(read)
        outcome, message = CRASHED, ""
        try:
            interp, text = _interpreter(model, arena)
            outcome, message = (NO_ALLOC, _last_line(text)) if interp is None else (RAN, "")
            if interp is not None:
                with _NativeStderr() as err:
                    try:
                        _invoke_zeros(interp, n_inputs)
                    except RuntimeError as exc:
                        outcome, message = NO_RUN, str(exc)
                if outcome == NO_RUN:
                    message = _last_line(err.text) or message
        finally:
            os.write(write, json.dumps([outcome, message]).encode())
            os._exit(0)
    os.close(write)
    chunks = []
    while True:
        chunk = os.read(read, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    try:
        outcome, message = json.loads(b"".join(chunks).decode())
    except ValueError:
        signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        outcome, message = CRASHED, f"TFLM ended the process (signal {signal})" if signal else "TFLM ended the process"
    return outcome, message


def find_arena(model: bytes, n_inputs: int, max_arena: int, granularity: int = GRANULARITY) -> int:
    """The smallest arena (a multiple of ``granularity``) with which TFLM allocates the model and
    runs it: doubling from a small guess until it runs (at most ``max_arena``), then bisection."""
    hi = 1024
    while True:
        outcome, message = probe(model, hi, n_inputs)
        if outcome == RAN:
            break
        if hi >= max_arena:
            if outcome == NO_ALLOC:
                raise BoardError(
                    f"the model does not allocate in a tensor arena of {max_arena:,} bytes (TFLM: {message}); "
                    "raise the bound (--max-arena KB) if the board has that much RAM"
                )
            raise BoardError(
                f"TFLM cannot run the model with an arena of {max_arena:,} bytes: {outcome}"
                + (f" ({message})" if message else "")
            )
        hi = min(hi * 2, max_arena)
    lo = 0 if hi <= 1024 else hi // 2  # lo does not run (or is 0), hi runs
    lo -= lo % granularity
    while hi - lo > granularity:
        mid = (lo + hi) // 2
        mid -= mid % granularity
        if probe(model, mid, n_inputs)[0] == RAN:
            hi = mid
        else:
            lo = mid
    return hi


def allocations(text: str) -> dict:
    """TFLM's RecordingMicroAllocator report, parsed: total/head/tail bytes and each kind of
    allocation (``used`` with alignment, ``requested``, ``count``)."""
    out = {"items": []}
    for key in ("total", "head", "tail"):
        m = re.search(rf"Arena allocation {key} (\d+) bytes", text)
        if m:
            out[key] = int(m.group(1))
    for what, used, requested, count in re.findall(
        r"'([^']+)' used (\d+) bytes with alignment overhead \(requested (\d+) bytes for (\d+)", text
    ):
        out["items"].append({"what": what, "used": int(used), "requested": int(requested), "count": int(count)})
    return out


def _details(interp, getter, count: int) -> list:
    out = []
    for i in range(count):
        d = getattr(interp, getter)(i)
        q = d.get("quantization_parameters") or {}
        scales = list(np.asarray(q.get("scales", [])).tolist())
        zero_points = list(np.asarray(q.get("zero_points", [])).tolist())
        out.append(
            {
                "shape": [int(s) for s in d["shape"]],
                "dtype": np.dtype(d["dtype"]).name,
                "scale": scales[0] if scales else 0.0,
                "zero_point": zero_points[0] if zero_points else 0,
            }
        )
    return out


def examine(
    model_path: str,
    max_arena: int,
    n_inputs: int = 1,
    n_outputs: int = 1,
    inputs=None,
    outputs=None,
    runs: int = 20,
    granularity: int = GRANULARITY,
) -> dict:
    """Everything TFLM says about the model: the minimal arena and its breakdown, the I/O tensors,
    host invoke times and, with ``inputs`` (.npz, ``x`` in the input dtype), the raw outputs."""
    if np is None:
        raise BoardError(f"no numpy for {sys.executable}: install it with 'pip install numpy tflite-micro'")
    _runtime()  # not installed: say how to install it, here rather than in a probe's fork
    with open(model_path, "rb") as f:
        model = f.read()
    outcome, message = probe(model, max_arena, n_inputs)
    if outcome not in (RAN, NO_ALLOC):
        raise BoardError(f"TFLM {outcome}: {message or 'no reason given'}")
    arena = find_arena(model, n_inputs, max_arena, granularity)
    interp, _ = _interpreter(model, arena)
    result = {
        "arena_bytes": arena,
        "granularity": granularity,
        "tflm_version": tflm_version(),
        "inputs": _details(interp, "get_input_details", n_inputs),
        "outputs": _details(interp, "get_output_details", n_outputs),
    }
    ms = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        _invoke_zeros(interp, n_inputs)
        ms.append((time.perf_counter() - t0) * 1e3)
    a = np.asarray(ms)
    result["host_invoke_ms"] = {
        "p50": float(np.percentile(a, 50)),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "runs": int(len(a)),
    }
    with _NativeStderr() as err:
        interp.print_allocations()
    result["allocations"] = allocations(err.text)
    if inputs:
        result["samples"] = _run_inputs(interp, inputs, outputs)
    return result


def _run_inputs(interp, inputs: str, outputs: str) -> int:
    """Run every sample of ``inputs`` (.npz: ``x``, or ``x0``, ``x1`` … one per input in the file's
    order) and save the raw first output of each to ``outputs``."""
    with np.load(inputs, allow_pickle=False) as data:
        keys = (
            ["x"] if "x" in data.files else sorted((k for k in data.files if k[1:].isdigit()), key=lambda k: int(k[1:]))
        )
        xs = [data[k] for k in keys]
    for j, x in enumerate(xs):
        want = interp.get_input_details(j)
        if tuple(x.shape[1:]) != tuple(int(s) for s in want["shape"][1:]) or x.dtype != np.dtype(want["dtype"]):
            raise BoardError(
                f"input {j} has shape {tuple(x.shape[1:])} {x.dtype}; the model takes "
                f"{tuple(int(s) for s in want['shape'][1:])} {np.dtype(want['dtype']).name}"
            )
    out = []
    for i in range(len(xs[0])):
        interp.reset()  # variable tensors (a fused LSTM's state) back to zero: each sample starts afresh
        for j, x in enumerate(xs):
            interp.set_input(x[i : i + 1], j)
        interp.invoke()
        out.append(np.asarray(interp.get_output(0))[0].copy())
    tmp = outputs + ".tmp.npz"
    np.savez(tmp, outputs=np.stack(out))
    os.replace(tmp, outputs)
    return len(out)


# ---------------------------------------------------------------- the parent side

MICRO_PATH = os.path.abspath(__file__)


def run(
    model_path: str,
    *,
    max_arena: int,
    n_inputs: int = 1,
    n_outputs: int = 1,
    x=None,
    runs: int = 20,
    granularity: int = GRANULARITY,
) -> dict:
    """:func:`examine` in a fresh child process (TFLM may abort on a model it cannot prepare):
    its JSON, plus ``output_values`` (the raw first output of each sample of ``x``) when ``x`` is given
    (already in the input's dtype; a list of arrays, one per input in the file's order, for several)."""
    with tempfile.TemporaryDirectory(prefix="edgekit-micro-") as tmp:
        argv = [
            sys.executable,
            MICRO_PATH,
            f"--max-arena={int(max_arena)}",
            f"--granularity={int(granularity)}",
            f"--runs={int(runs)}",
            f"--n-inputs={int(n_inputs)}",
            f"--n-outputs={int(n_outputs)}",
        ]
        if x is not None:
            inputs, outputs = os.path.join(tmp, "x.npz"), os.path.join(tmp, "y.npz")
            np.savez(inputs, **({f"x{j}": a for j, a in enumerate(x)} if isinstance(x, list) else {"x": x}))
            argv += [f"--inputs={inputs}", f"--outputs={outputs}"]
        proc = subprocess.run(argv + ["--", os.fspath(model_path)], capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        try:
            data = json.loads(lines[-1]) if lines else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            if proc.returncode < 0:
                raise BoardError(f"TFLM ended the process (signal {-proc.returncode}) on this model")
            tail = [l for l in proc.stderr.strip().splitlines() if l.strip()]
            raise BoardError(f"the TFLM child failed (exit {proc.returncode}): {tail[-1] if tail else 'no output'}")
        if "error" in data:
            raise BoardError(str(data["error"]))
        if x is not None:
            with np.load(outputs, allow_pickle=False) as saved:
                data["output_values"] = saved["outputs"]
    return data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="micro.py", description="Run a .tflite model under TFLM; prints JSON on stdout."
    )
    parser.add_argument("model")
    parser.add_argument("--max-arena", type=int, default=8 << 20, help="largest arena tried, bytes (default 8 MiB)")
    parser.add_argument("--granularity", type=int, default=GRANULARITY)
    parser.add_argument("--inputs", help=".npz with 'x' in the model's input dtype")
    parser.add_argument("--outputs", help="where to save the raw outputs of --inputs (.npz)")
    parser.add_argument("--runs", type=int, default=20, help="timed invokes on this host")
    parser.add_argument("--n-inputs", type=int, default=1, help="the model's number of inputs")
    parser.add_argument("--n-outputs", type=int, default=1, help="the model's number of outputs")
    parser.add_argument("--probe", type=int, metavar="BYTES", help="only try this arena: prints {outcome, message}")
    args = parser.parse_args(argv)
    if args.probe is not None:
        with open(args.model, "rb") as f:
            outcome, message = probe(f.read(), args.probe, args.n_inputs)
        print(json.dumps({"outcome": outcome, "message": message}))
        return 0
    try:
        if args.inputs and not args.outputs:
            raise BoardError("--inputs needs --outputs OUT.npz")
        result = examine(
            args.model,
            args.max_arena,
            args.n_inputs,
            args.n_outputs,
            args.inputs,
            args.outputs,
            args.runs,
            args.granularity,
        )
    except BoardError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
