"""Measure a .tflite model with the LiteRT interpreter: start-up, latency percentiles, memory.

This file runs on the board on its own: it imports only the standard library, numpy and
``ai_edge_litert`` (falling back to ``tflite_runtime``, then ``tensorflow.lite``), never another
edgekit module. Copy it anywhere and run it as a script::

    python harness.py model.tflite --runs 200 --warmup 20 --threads 4 [--inputs data.npz]

It prints one JSON object (see :func:`measure`) on stdout. On failure it prints
``{"error": "..."}`` and exits 2, so the caller can report it and go on with other models.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

try:
    import numpy as np
except ImportError:  # reported as a one-line error by main(), like a missing LiteRT
    np = None

SCHEMA_VERSION = 1
HARNESS_PATH = os.path.abspath(__file__)  # what runs in each child process, here or on a board

__all__ = [
    "BoardError",
    "load_interpreter",
    "allocate_tensors",
    "runtime_info",
    "prepare_inputs",
    "predict",
    "predict_all",
    "io_names",
    "raw_outputs",
    "run_all",
    "save_outputs",
    "measure",
    "summarize_latency",
    "board_facts",
    "thermal_verdict",
    "process_figures",
    "main",
]


if __package__:  # imported as edgekit.device.board.harness: the board side's one error
    from edgekit.device.board.errors import BoardError
else:  # run as a script (a child process here, or this file alone on a board): stay lean

    class BoardError(ValueError):  # type: ignore[no-redef]
        """A one-line, user-facing error: bad model, bad inputs, no LiteRT installed (``missing``)."""

        def __init__(self, message: str = "", missing: str = None):
            super().__init__(message)
            self.missing = missing


def _runtime():
    """(module name, version, Interpreter class, resolver enum or None)."""
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter as mod

        return "ai_edge_litert", getattr(ai_edge_litert, "__version__", "?"), mod.Interpreter, mod.OpResolverType
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime import interpreter as mod

        return (
            "tflite_runtime",
            getattr(tflite_runtime, "__version__", "?"),
            mod.Interpreter,
            getattr(mod, "OpResolverType", None),
        )
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return "tensorflow.lite", tf.__version__, tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    except ImportError:
        raise BoardError(
            f"no LiteRT interpreter found for this python ({sys.executable}): install it with "
            "'pip install ai-edge-litert' (or tflite-runtime)",
            missing="LiteRT",
        ) from None


def runtime_info() -> dict:
    name, version, _, _ = _runtime()
    return {"name": name, "version": version}


def load_interpreter(model=None, *, model_content=None, threads=1, xnnpack=True, allocate=True):
    """An Interpreter for a model path or bytes, with tensors allocated unless ``allocate=False``
    (then call :func:`allocate_tensors`).

    ``xnnpack=True`` keeps LiteRT's default delegate (XNNPACK on CPU), as a board runs it."""
    _, _, interpreter_cls, resolver = _runtime()
    if threads is not None and int(threads) < 1:
        raise BoardError(f"threads must be >= 1. Received threads={threads}")
    kwargs = {"num_threads": int(threads) if threads else None}
    if not xnnpack:
        if resolver is None:
            raise BoardError("this LiteRT build cannot disable the default delegate")
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    label = "model bytes" if model is None else str(model)
    if model is not None:
        if os.path.isdir(model):
            raise BoardError(f"{model} is a directory, not a .tflite file")
        if not os.path.isfile(model):
            raise BoardError(f"model file not found: {model}")
        kwargs["model_path"] = str(model)
    else:
        kwargs["model_content"] = bytes(model_content)
    try:
        interp = interpreter_cls(**kwargs)
    except (ValueError, RuntimeError) as exc:
        raise BoardError(f"cannot load {label} as a .tflite model: {_one_line(exc)}") from None
    interp._edgekit_label = label  # for error messages of allocate()
    interp._edgekit_xnnpack = bool(xnnpack)
    if allocate:
        allocate_tensors(interp)
    return interp


def allocate_tensors(interp):
    """Allocate tensors; this is where LiteRT applies the default delegate, so a model that
    XNNPACK cannot run fails here."""
    xnnpack = getattr(interp, "_edgekit_xnnpack", True)
    label = getattr(interp, "_edgekit_label", "model")
    try:
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        where = "under the default XNNPACK delegate" if xnnpack else "without delegates"
        hint = "; run it with XNNPACK disabled (--no-xnnpack) or convert it without --sparse" if xnnpack else ""
        raise BoardError(f"{label} does not prepare {where}: {_one_line(exc)}{hint}") from None


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float data to the input tensor's dtype, with its scale and zero point when quantized."""
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.floating) or not np.issubdtype(x.dtype, np.floating):
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    if not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    """Raw outputs ``y`` of the output tensor ``detail`` as float32 values."""
    scale, zero_point = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)


def _sample_shape(detail: dict) -> tuple:
    return tuple(int(d) for d in detail["shape"][1:])


def io_names(interp) -> tuple:
    """(input names, output names) in the order of the interpreter's input and output details: the
    names of the model's one signature (a Keras model's input and output names), else the tensors'."""
    by_index = {}
    signatures = interp.get_signature_list()
    if len(signatures) == 1:
        runner = interp.get_signature_runner(next(iter(signatures)))
        for part in (runner.get_input_details(), runner.get_output_details()):
            by_index.update({d["index"]: k for k, d in part.items()})
    name = lambda d: by_index.get(d["index"], d["name"].split(":")[0])  # noqa: E731
    return [name(d) for d in interp.get_input_details()], [name(d) for d in interp.get_output_details()]


def _per_input(interp, x) -> list:
    """Samples for each input of ``interp``, in order: ``x`` is an array (a one-input model) or a
    dict by input name (:func:`io_names`)."""
    names = io_names(interp)[0]
    if not isinstance(x, dict):
        if len(names) > 1:
            raise BoardError(f"the model takes {len(names)} inputs ({', '.join(names)}): give arrays named after them")
        return [np.asarray(x)]
    missing = [n for n in names if n not in x]
    if missing:
        raise BoardError(
            f"no data for input(s) {', '.join(missing)} of the model (received {', '.join(x)}): name an array after "
            f"each input"
        )
    return [np.asarray(x[n]) for n in names]


def prepare_inputs(interp, x=None, seed=0):
    """Arrays for each model input, batch 1: the first sample of ``x`` (an array, or a dict by input
    name; quantized to the input's dtype when needed) or random data of the right dtype and range."""
    details = interp.get_input_details()
    given = _per_input(interp, x) if x is not None else [None] * len(details)
    rng = np.random.default_rng(seed)
    arrays = []
    for d, sample in zip(details, given):
        shape = tuple(int(s) for s in d["shape"])
        dtype = np.dtype(d["dtype"])
        if sample is not None:
            if tuple(sample.shape[1:]) != shape[1:]:
                raise BoardError(
                    f"input data samples have shape {tuple(sample.shape[1:])}; the model expects {shape[1:]}"
                )
            arrays.append(quantize(sample[:1], d))
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            arrays.append(rng.random(size=shape, dtype=np.float32).astype(dtype))
    return arrays


def run_all(interp, x) -> list:
    """Run samples ``x`` (an array, or a dict by input name) one at a time, as a board does; returns
    every output tensor as the model produces it (int8 stays int8), one array (N, ...) per output."""
    ins, outs = interp.get_input_details(), interp.get_output_details()
    arrays = _per_input(interp, x)
    for d, a in zip(ins, arrays):
        if tuple(a.shape[1:]) != _sample_shape(d):
            raise BoardError(
                f"input data samples have shape {tuple(a.shape[1:])}; the model expects {_sample_shape(d)}"
            )
    qs = [quantize(a, d) for a, d in zip(arrays, ins)]
    # A fused LSTM keeps its state in variable tensors from one invoke to the next: each sample starts
    # from the zero state, as the model computed it in Keras.
    reset = getattr(interp, "reset_all_variables", lambda: None)
    results = [[] for _ in outs]
    for i in range(len(qs[0])):
        reset()
        for d, q in zip(ins, qs):
            interp.set_tensor(d["index"], q[i : i + 1])
        interp.invoke()
        for r, d in zip(results, outs):
            r.append(interp.get_tensor(d["index"])[0].copy())
    return [
        np.stack(r) if r else np.zeros((0,) + _sample_shape(d), np.dtype(d["dtype"])) for r, d in zip(results, outs)
    ]


def raw_outputs(interp, x) -> np.ndarray:
    """The first output of :func:`run_all` (the one output of most models)."""
    return run_all(interp, x)[0]


def predict(interp, x) -> np.ndarray:
    """:func:`raw_outputs` dequantized to float32."""
    return dequantize(raw_outputs(interp, x), interp.get_output_details()[0])


def predict_all(interp, x) -> dict:
    """Every output of :func:`run_all` dequantized to float32, by output name (:func:`io_names`)."""
    outs = run_all(interp, x)
    return {n: dequantize(y, d) for n, y, d in zip(io_names(interp)[1], outs, interp.get_output_details())}


def summarize_latency(samples_ms) -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def _memory_mb() -> dict:
    """Current and peak resident set size of this process, in MiB."""
    status = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    status[key] = int(value.split()[0]) / 1024.0
    except OSError:
        pass
    if "VmHWM" not in status:  # not Linux: ru_maxrss is bytes on macOS, KiB elsewhere
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        status["VmHWM"] = peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
    return {"rss": status.get("VmRSS"), "peak": status["VmHWM"]}


def _load_npz(path: str) -> dict:
    if not os.path.isfile(path):
        raise BoardError(f"input file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise BoardError(f"cannot read {path} as a .npz file: {_one_line(exc)}") from None


def _samples(arrays: dict, interp, path: str) -> tuple:
    """(x, y) of a .npz's ``arrays`` for ``interp``'s model: ``x``/``y`` (or ``x_test``/``y_test``), or
    arrays named after its inputs and outputs (or NAME_test); several inputs or outputs as dicts."""
    pick = lambda k: arrays[k] if k in arrays else arrays.get(f"{k}_test")  # noqa: E731
    ins, outs = io_names(interp)
    x = {n: pick(n) for n in ins}
    if len(ins) == 1 and pick("x") is not None:
        x = {ins[0]: pick("x")}
    if any(v is None for v in x.values()):
        raise BoardError(
            f"{path} holds {sorted(arrays)}; expected an array named 'x' or one per input ({', '.join(ins)})"
        )
    y = {n: pick(n) for n in outs if pick(n) is not None}
    if len(outs) == 1 and pick("y") is not None:
        y = {outs[0]: pick("y")}
    y = {n: v.argmax(axis=1) if one_hot_rows(v) else v for n, v in y.items()}
    return (x[ins[0]] if len(ins) == 1 else x), (y.get(outs[0]) if len(outs) == 1 else y or None)


def _quality(outputs: dict, y) -> dict:
    """On-device figures against labels ``y``: ``accuracy`` of class ids, ``mae`` of real-valued
    targets; for several outputs, per labelled output under ``outputs``."""
    figures = {}
    for name, labels in y.items() if isinstance(y, dict) else [(next(iter(outputs)), y)]:
        out = outputs[name].reshape(len(labels), -1)
        if real_valued(labels):  # a regression output's targets: the mean absolute error
            figures[name] = {"mae": float(np.mean(np.abs(out - labels.reshape(len(labels), -1))))}
        else:
            figures[name] = {"accuracy": float(np.mean(out.argmax(axis=1) == labels))}
    return {"outputs": figures} if isinstance(y, dict) else next(iter(figures.values()))


def one_hot_rows(y: np.ndarray) -> bool:
    """Rows of one-hot labels or class probabilities (not several regression targets per sample):
    the rule edgekit reads every .npz's labels by (here, and edgekit.core.data on the host)."""
    return (
        y.ndim == 2
        and y.shape[1] > 1
        and bool(np.all((y >= 0) & (y <= 1)))
        and bool(np.allclose(y.sum(axis=1), 1, atol=1e-3))
    )


def real_valued(y) -> bool:
    """Regression targets: floats that are not all whole numbers (whole numbers are class ids)."""
    y = np.asarray(y)
    return np.issubdtype(y.dtype, np.floating) and bool(y.size) and not bool(np.all(np.equal(np.mod(y, 1), 0)))


def _read(root: str, path: str):
    try:
        with open(os.path.join(root, path.lstrip("/")), "rb") as f:
            return f.read().decode("utf-8", "replace").strip("\x00\n ")
    except OSError:
        return None


def _cpu_name(cpuinfo) -> "str | None":
    fields = {}
    for line in (cpuinfo or "").splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return (
        fields.get("model name")
        or fields.get("Model")
        or fields.get("Hardware")
        or (f"CPU part {fields['CPU part']}" if "CPU part" in fields else None)
    )


def board_facts(root: str = "/") -> dict:
    """What the board is and its state now: model (device tree), CPU, cores, governor, current
    and maximum frequency (MHz), the hottest thermal zone (C) and, on a Raspberry Pi, the
    ``vcgencmd get_throttled`` flags. Absent facts are None. ``root`` reads another sysfs/procfs
    tree (a copy taken from a board)."""

    def number(path, scale):
        text = _read(root, path)
        try:
            return round(int(text) / scale, 1)
        except (TypeError, ValueError):
            return None

    temps = []
    zones = os.path.join(root, "sys/class/thermal")
    if os.path.isdir(zones):
        for zone in sorted(os.listdir(zones)):
            t = number(f"sys/class/thermal/{zone}/temp", 1000)
            if t is not None:
                temps.append(t)
    throttled = None
    if root == "/" and shutil.which("vcgencmd"):
        try:
            out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5).stdout
            throttled = int(out.strip().partition("=")[2], 16)
        except (OSError, ValueError, subprocess.SubprocessError):
            throttled = None
    cpufreq = "sys/devices/system/cpu/cpu0/cpufreq"
    return {
        "model": _read(root, "proc/device-tree/model"),
        "cpu": _cpu_name(_read(root, "proc/cpuinfo")),
        "cores": os.cpu_count() if root == "/" else None,
        "governor": _read(root, f"{cpufreq}/scaling_governor"),
        "freq_mhz": number(f"{cpufreq}/scaling_cur_freq", 1000),
        "max_freq_mhz": number(f"{cpufreq}/cpuinfo_max_freq", 1000),
        "temp_c": max(temps) if temps else None,
        "throttled_flags": throttled,
    }


# vcgencmd get_throttled bits that describe the present state: under-voltage, frequency capped,
# throttled, soft temperature limit.
_THROTTLED_NOW = 0xF


def thermal_verdict(before: dict, after: dict) -> list:
    """Reasons a result may be slowed by the board rather than the model (empty when none)."""
    reasons = []
    for when, facts in (("before", before), ("after", after)):
        flags = facts.get("throttled_flags")
        if flags and flags & _THROTTLED_NOW:
            reasons.append(f"vcgencmd reports throttling {when} the runs (flags {flags:#x})")
    f0, f1 = before.get("freq_mhz"), after.get("freq_mhz")
    if f0 and f1 and f1 < 0.9 * f0:
        reasons.append(f"CPU frequency dropped from {f0:g} to {f1:g} MHz during the runs")
    return reasons


def _start(model, threads, xnnpack, arrays, seed, path) -> tuple:
    """Load, allocate, set the inputs (the first sample of ``arrays``, a .npz's, or random) and
    invoke once: (interpreter, start-up ms, RSS before load and after allocate, x, y)."""
    rss_before = _memory_mb()["rss"]
    t0 = time.perf_counter()
    interp = load_interpreter(model, threads=threads, xnnpack=xnnpack, allocate=False)
    t1 = time.perf_counter()
    allocate_tensors(interp)
    t2 = time.perf_counter()
    rss_allocated = _memory_mb()["rss"]
    x, y = _samples(arrays, interp, path) if arrays is not None else (None, None)
    for d, a in zip(interp.get_input_details(), prepare_inputs(interp, x, seed=seed)):
        interp.set_tensor(d["index"], a)
    t3 = time.perf_counter()
    interp.invoke()
    startup = {"load": (t1 - t0) * 1e3, "allocate": (t2 - t1) * 1e3, "first_invoke": (time.perf_counter() - t3) * 1e3}
    return interp, startup, rss_before, rss_allocated, x, y


def measure(model, runs=100, warmup=10, threads=1, xnnpack=True, inputs=None, seed=0, duration=None, progress=None):
    """Benchmark one model in this process and return a JSON-ready dict.

    Start-up (load, allocate, first invoke), ``warmup`` untimed invokes, ``runs`` timed invokes
    of ``invoke()`` alone (inputs are set once) — or, with ``duration`` (seconds), timed invokes
    until that much time has passed — and the process's RSS before load, after allocate and at
    its peak. With ``inputs`` (a .npz holding ``x`` and optionally ``y``) the timed runs use its
    first sample, and with labels the on-device accuracy over all of ``x`` is measured after the
    timed runs. ``progress(phase, done, total)`` is called now and then (total 0: unknown)."""
    if int(runs) < 1 or int(warmup) < 0 or (duration is not None and not float(duration) > 0):
        raise BoardError(
            f"runs must be >= 1, warmup >= 0 and duration > 0 seconds. Received runs={runs}, "
            f"warmup={warmup}, duration={duration}"
        )
    report = progress or (lambda phase, done, total: None)
    arrays = _load_npz(inputs) if inputs is not None else None
    _runtime()  # import LiteRT first: the footprint below is the model's, not the library's
    board_before = board_facts()
    interp, startup, rss_before, rss_allocated, x, y = _start(model, threads, xnnpack, arrays, seed, inputs)
    for i in range(int(warmup)):
        if i % 16 == 0:
            report("warm-up", i, int(warmup))
        interp.invoke()
    samples = _timed_runs(interp.invoke, int(runs), duration, report)
    latency = summarize_latency(samples)
    board_after = board_facts()
    figures = {}
    if x is not None and y is not None:
        report("accuracy", 0, _rows(x))
        figures = _quality(predict_all(interp, x), y)
    return {
        "schema_version": SCHEMA_VERSION,
        "model": str(model),
        "model_size_bytes": os.path.getsize(model),
        "runs": int(len(samples)),
        "warmup": int(warmup),
        "duration_s": float(duration) if duration else None,
        "threads": int(threads),
        "xnnpack": bool(xnnpack),
        "inputs": str(inputs) if inputs else "random",
        "latency_ms": latency,
        "throughput_ips": 1e3 / latency["mean"] if latency["mean"] > 0 else None,
        "startup_ms": startup,
        "accuracy": figures.get("accuracy"),
        "mae": figures.get("mae"),
        "outputs": figures.get("outputs"),  # several outputs: {name: {"accuracy" | "mae": ...}}
        "samples": _rows(x) if x is not None else None,
        **process_figures(board_before, board_after, rss_before, rss_allocated),
    }


def process_figures(board_before: dict, board_after: dict, rss_before, rss_allocated) -> dict:
    """The process's memory (RSS before loading, after allocating, at its peak so far), the runtime,
    the board's state before and after (with throttling warnings) and the platform."""
    verdict = thermal_verdict(board_before, board_after)
    plat = platform.machine(), platform.system(), platform.python_version(), os.cpu_count()
    peak = _memory_mb()["peak"]
    footprint = (rss_allocated - rss_before) if rss_before and rss_allocated else None
    return {
        "memory_mb": {
            "rss_before_load": rss_before,
            "rss_after_allocate": rss_allocated,
            "peak": peak,
            "footprint": footprint,
        },
        "peak_rss_mb": peak,
        "runtime": runtime_info(),
        "board": {"before": board_before, "after": board_after, "throttled": bool(verdict), "warnings": verdict},
        "platform": dict(zip(("machine", "system", "python", "cpus"), plat)),
    }


def _rows(x) -> int:
    return int(len(next(iter(x.values())) if isinstance(x, dict) else x))


def save_outputs(model, inputs, out, threads=1, xnnpack=True) -> dict:
    """Run every sample of ``inputs`` (.npz) through ``model`` and save the raw output tensors to
    ``out`` (.npz: ``outputs`` the first, ``output/NAME`` each by name): the bit-level record
    compared across machines."""
    if not inputs:
        raise BoardError("--outputs needs --inputs DATA.npz")
    interp = load_interpreter(model, threads=threads, xnnpack=xnnpack)
    x, _ = _samples(_load_npz(inputs), interp, inputs)
    outputs = run_all(interp, x)
    tmp = out + ".tmp.npz"
    np.savez(tmp, outputs=outputs[0], **{f"output/{n}": o for n, o in zip(io_names(interp)[1], outputs)})
    os.replace(tmp, out)
    return {
        "model": str(model),
        "outputs": out,
        "samples": _rows(x),
        "dtype": str(outputs[0].dtype),
        "machine": platform.machine(),
        "cpu": _cpu_name(_read("/", "proc/cpuinfo")),
    }


def _timed_runs(invoke, runs, duration, report) -> np.ndarray:
    """Latencies in ms of ``runs`` invokes, or of as many as fit in ``duration`` seconds. The
    clock is read twice per run and the progress callback every 64 runs, so the loop's own
    cost stays far below a microsecond per run."""
    clock = time.perf_counter_ns
    if duration is None:
        samples = np.empty(runs, dtype=np.int64)
        for i in range(runs):
            if i & 63 == 0:
                report("timed", i, runs)
            start = clock()
            invoke()
            samples[i] = clock() - start
        return samples / 1e6
    out = []
    deadline = clock() + int(float(duration) * 1e9)
    start = clock()
    while start < deadline:
        invoke()
        end = clock()
        out.append(end - start)
        if len(out) & 63 == 0:
            report("timed", len(out), 0)
        start = clock()
    return np.asarray(out, dtype=np.float64) / 1e6


PROGRESS_PREFIX = "@edgekit-progress "


def stderr_progress(interval: float = 0.25):
    """A ``progress`` callback for :func:`measure` that writes ``@edgekit-progress PHASE DONE
    TOTAL`` lines on stderr at most every ``interval`` seconds, for a parent process (local or
    over SSH) to draw its live progress line from."""
    last = [0.0]

    def report(phase, done, total):
        now = time.perf_counter()
        if now - last[0] >= interval:
            last[0] = now
            sys.stderr.write(f"{PROGRESS_PREFIX}{phase} {done} {total}\n")
            sys.stderr.flush()

    return report


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:400]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="harness.py", description="Benchmark one .tflite model; prints JSON on stdout."
    )
    parser.add_argument("model")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-xnnpack", dest="xnnpack", action="store_false")
    parser.add_argument(
        "--inputs", help=".npz with 'x' (and 'y' for accuracy), or arrays named after the inputs (and outputs)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, help="time the runs for this many seconds instead of --runs")
    parser.add_argument(
        "--outputs",
        metavar="OUT.npz",
        help="no timing: run every sample of --inputs and save the raw outputs to OUT.npz",
    )
    parser.add_argument(
        "--progress", action="store_true", help=f"write '{PROGRESS_PREFIX.strip()} PHASE DONE TOTAL' lines on stderr"
    )
    args = parser.parse_args(argv)
    try:
        if np is None:
            raise BoardError(
                f"no numpy for this python ({sys.executable}): install it with 'pip install numpy ai-edge-litert'",
                missing="numpy",
            )
        if args.outputs:
            print(json.dumps(save_outputs(args.model, args.inputs, args.outputs, args.threads, args.xnnpack)))
            return 0
        result = measure(
            args.model,
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            xnnpack=args.xnnpack,
            inputs=args.inputs,
            seed=args.seed,
            duration=args.duration,
            progress=stderr_progress() if args.progress else None,
        )
    except BoardError as exc:
        print(json.dumps({"error": str(exc), "model": args.model, "missing": exc.missing}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
