"""Will a model fit a microcontroller? :func:`mcu` measures it with TFLM's real interpreter.

- **ops**: every op checked against TFLM's kernels (:mod:`edgekit.converters.tflm`); one it lacks
  fails with the Keras layer it came from and what to use instead.
- **arena**: the smallest tensor arena with which TFLM allocates and runs the model, found by
  bisection in a child process (``device/micro.py``), with TFLM's own breakdown.
- **flash**: the model's bytes as linked (an ``alignas(16)`` array) against the board's, the arena its RAM.
- **agreement**: with data, TFLM's outputs against LiteRT's on the same integer inputs (top-1
  agreement, largest difference in quantization steps) and accuracy when labels exist.
- **C sources** (``emit``): the model as a C array and a resolver with exactly its ops.

Host timings are TFLM's reference kernels on this machine, never a board's latency.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import tempfile
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from edgekit.converters import flatbuffer as fb
from edgekit.converters.convert import op_layer
from edgekit.converters.inspection import inspect_tflite, read_tflite
from edgekit.converters.tflm import (
    ANY_FLASH_KB,
    BOARDS,
    Board,
    c_sources,
    custom_board,
    flash_bytes,
    instead,
    source_names,
    tflm_supports,
)
from edgekit.converters.tflm import (
    board as find_board,
)
from edgekit.core.errors import InputError, VerificationError, renamed
from edgekit.core.io import _umask, check_output, commit_dir, staging_dir
from edgekit.core.results import Result, table
from edgekit.core.samples import rows, take, validation_pair
from edgekit.core.task import split_outputs

DEFAULT_MAX_ARENA_KB = 8192  # the bisection's upper bound: more than any board of the table has
DEFAULT_SAMPLES = 360  # samples run under TFLM for the agreement check (reference kernels are slow)


@dataclass(frozen=True)
class MCUReport(Result):
    """What TFLM measured for one model, and whether it fits ``board`` (every known board when
    none was given: ``fits_boards``)."""

    model: str
    size_bytes: int
    flash_bytes: int
    arena_bytes: int
    granularity: int
    allocations: dict  # TFLM's report: total, head (planned activations), tail (persistent), items
    fully_integer: bool
    ops: dict  # op → count
    inputs: list
    outputs: list
    host_invoke_ms: dict  # TFLM reference kernels on this machine: not a board's latency
    tflm_version: str
    board: Optional[dict] = None
    fits: Optional[bool] = None
    fits_boards: dict = field(default_factory=dict)  # board name → fits (when no board was given)
    samples: int = 0
    agreement: Optional[float] = None  # top-1 agreement of TFLM with LiteRT (classifiers)
    max_step_diff: Optional[float] = None  # largest output difference, in quantization steps
    identical: Optional[float] = None  # share of output values TFLM and LiteRT agree on exactly
    accuracy: Optional[float] = None  # TFLM's, with labels
    litert_accuracy: Optional[float] = None  # LiteRT's on the same samples
    estimate: Optional[dict] = None  # the profiler's arena estimate against the measured arena
    emitted: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    least_ram: Optional[dict] = None  # target="mcu": the per-tensor choices (edgekit.converters.least_ram)

    def brief(self) -> str:
        """One line: the arena, the flash, where it fits, the agreement with LiteRT."""
        if self.board:
            where = f"{self.board['name']}: {'fits' if self.fits else 'does not fit'}"
        else:
            where = f"fits {', '.join(n for n, ok in self.fits_boards.items() if ok) or 'none of the known boards'}"
        versus = (
            f"; vs LiteRT: top-1 agreement {self.agreement:.4f}, max {self.max_step_diff:g} step(s)"
            if self.agreement is not None
            else ""
        )
        return f"TFLM: arena {self.arena_bytes:,} B, flash {self.flash_bytes:,} B, {where}{versus}" + (
            f"; {self.ram_lines()[0]}" if self.least_ram else ""
        )

    def ram_lines(self) -> list:
        """What the per-layer granularity chose and bought (:func:`edgekit.converters.least_ram.describe`)."""
        from edgekit.converters.least_ram import describe

        return describe(self.least_ram, self.arena_bytes) if self.least_ram else []

    def shortfall(self) -> Optional[str]:
        """'N KB more RAM and M KB more flash' when it does not fit ``board``."""
        if self.board is None or self.fits:
            return None
        b = self.board
        over = [
            (what, need - have * 1024)
            for what, need, have in (
                ("RAM", self.arena_bytes, b["usable_ram_kb"]),
                ("flash", self.flash_bytes, b["flash_kb"]),
            )
            if need > have * 1024
        ]
        return " and ".join(f"{n / 1024:,.1f} KB more {what}" for what, n in over)

    @property
    def board_label(self) -> str:
        b = self.board or {}
        if b.get("name") == "custom":
            flash = f" and {b['flash_kb']:,} KB flash" if b["flash_kb"] < ANY_FLASH_KB else ""
            return f"a board with {b['ram_kb']:,} KB RAM{flash}"
        return b.get("name", "")

    def summary(self) -> str:
        a = self.allocations
        kb = lambda n: f"{n / 1024:,.1f} KB"  # noqa: E731
        lines = [
            f"{self.model}: {'int8' if self.fully_integer else 'NOT fully integer'}, "
            f"{len(self.ops)} op types, all in TFLM {self.tflm_version}",
            f"flash: {kb(self.flash_bytes)} (the model's {self.size_bytes:,} bytes as an alignas(16) array; "
            "plus TFLM and your code)",
            f"RAM:   tensor arena {kb(self.arena_bytes)} ({self.arena_bytes:,} bytes, minimal to "
            f"{self.granularity} B; input and output tensors included)",
        ]
        if a.get("head") is not None:
            lines.append(
                f"       TFLM: {kb(a['head'])} activations (planned, shared), {kb(a['tail'])} persistent "
                f"(tensor structs, op data, quantization parameters)"
            )
        lines += ["least RAM: " + line if i == 0 else line for i, line in enumerate(self.ram_lines())]
        if self.estimate:
            e = self.estimate
            lines.append(
                f"       profiler estimate {kb(e['arena_bytes'])} ({e['error_pct']:+.1f}% of measured; "
                f"activations {kb(e['activation_bytes'])} vs {kb(a.get('head', 0))})"
            )
        if self.board:
            b = self.board
            verdict = "fits" if self.fits else f"does NOT fit: it needs {self.shortfall()}"
            pct = lambda need, kb: f"{100 * need / (kb * 1024):.0f}%"  # noqa: E731
            flash = (f", {b['flash_kb']:,} KB flash", f", flash {pct(self.flash_bytes, b['flash_kb'])}")
            flash = flash if b["flash_kb"] < ANY_FLASH_KB else ("", "")  # a RAM budget alone sets no flash
            lines.append(
                f"{b['chip']}: {b['usable_ram_kb']:,} KB RAM for the arena{flash[0]}: "
                f"{verdict} (RAM {pct(self.arena_bytes, b['usable_ram_kb'])}{flash[1]})"
            )
        elif self.fits_boards:
            fit = [n for n, ok in self.fits_boards.items() if ok]
            lines.append(
                f"fits: {', '.join(fit) or 'none of the known boards'}"
                + (
                    f"; too big for: {', '.join(n for n, ok in self.fits_boards.items() if not ok)}"
                    if len(fit) < len(self.fits_boards)
                    else ""
                )
            )
        if self.max_step_diff is not None:
            top1 = f"top-1 agreement {self.agreement:.4f}, " if self.agreement is not None else ""
            line = (
                f"TFLM vs LiteRT (builtin kernels) on {self.samples} samples: {top1}largest output difference "
                f"{self.max_step_diff:g} quantization step(s), {100 * self.identical:.2f}% of values identical"
            )
            if self.accuracy is not None:
                line += f"; accuracy TFLM {self.accuracy:.4f} / LiteRT {self.litert_accuracy:.4f}"
            lines.append(line)
        h = self.host_invoke_ms
        lines.append(
            f"host invoke {h['p50']:.3f} ms p50 (TFLM reference kernels on this machine, not a board's latency)"
        )
        lines += [f"wrote {p}" for p in self.emitted]
        lines += [f"note: {w}" for w in self.warnings]
        return "\n".join(lines)


def _board(board, ram_kb, flash_kb) -> Optional[Board]:
    if board is not None and (ram_kb is not None or flash_kb is not None):
        raise InputError(
            "give either {board} or {ram_kb} and {flash_kb}, not both", params=("board", "ram_kb", "flash_kb")
        )
    if isinstance(board, Board):
        return board
    if board is not None:
        return find_board(str(board))
    if ram_kb is not None or flash_kb is not None:
        return custom_board(ram_kb, flash_kb)
    return None


def check_installed() -> None:
    if importlib.util.find_spec("tflite_micro") is None:
        from edgekit.device.board.micro import INSTALL_HINT

        raise InputError(f"the TFLM interpreter (tflite-micro) is not installed: {INSTALL_HINT}")


def unsupported_ops(info, keras_model=None) -> list:
    """One line per op TFLM has no kernel for: the op, the Keras layers it came from, what instead."""
    missing = {}
    for op in info.ops:
        if not tflm_supports(op.op):
            missing.setdefault(op.op, []).append(op_layer(info, op, keras_model))
    return [f"{op} (from {', '.join(dict.fromkeys(layers))}): {instead(op)}" for op, layers in missing.items()]


def softmax_problems(tflite: bytes) -> list:
    """int8 SOFTMAX ops TFLM would abort on: it needs beta × input scale × 2^26 > 1
    (QuantizeMultiplierGreaterThanOne), i.e. logits that are not all nearly zero."""
    schema = fb.schema()
    model = schema.Model.GetRootAsModel(tflite, 0)
    codes = fb.opcode_names(model)
    problems = []
    for s in range(model.SubgraphsLength()):
        sub = model.Subgraphs(s)
        for o in range(sub.OperatorsLength()):
            op = sub.Operators(o)
            if codes[op.OpcodeIndex()] != "SOFTMAX" or op.InputsLength() < 1:
                continue
            ten = sub.Tensors(op.Inputs(0))
            q = ten.Quantization()
            if ten.Type() not in (schema.TensorType.INT8, schema.TensorType.UINT8) or q is None or not q.ScaleLength():
                continue
            beta = 1.0
            table_ = op.BuiltinOptions()
            if table_ is not None:
                opts = schema.SoftmaxOptions()
                opts.Init(table_.Bytes, table_.Pos)
                beta = opts.Beta()
            scale = float(q.Scale(0))
            if beta * scale * 2.0**26 <= 1.0:
                problems.append(
                    f"the softmax input '{(ten.Name() or b'').decode()}' has scale {scale:.3g}: its logits "
                    "are all nearly zero on the calibration data, which TFLM's int8 softmax cannot "
                    "represent (it aborts); train the model, or calibrate with real data"
                )
    return problems


def _is_classifier(info, y) -> bool:
    """A classifier's output: a softmax or sigmoid at the end, or one score per label of ``y``."""
    last = next((op for op in info.ops if info.outputs and info.outputs[0]["index"] in op.outputs), None)
    width = int(np.prod(info.outputs[0]["shape"][1:])) if info.outputs else 0
    if last is not None and last.op in ("SOFTMAX", "LOGISTIC"):
        return width > 1
    return y is not None and width > 1 and width == len(np.unique(y))


def _compare(tflm_out: np.ndarray, lite_out: np.ndarray, y, classifier: bool) -> dict:
    """Largest difference in quantization steps (raw integer units), share of identical values,
    and for a classifier top-1 agreement and accuracy."""
    a = tflm_out.reshape(len(tflm_out), -1).astype(np.float64)
    b = lite_out.reshape(len(lite_out), -1).astype(np.float64)
    out = {
        "max_step_diff": float(np.abs(a - b).max()) if a.size else 0.0,
        "identical": float(np.mean(a == b)) if a.size else 1.0,
        "agreement": None,
        "accuracy": None,
    }
    if classifier:
        ta, tb = a.argmax(1), b.argmax(1)
        out["agreement"] = float(np.mean(ta == tb))
        if y is not None and len(y) == len(a) and np.asarray(y).ndim == 1:
            out.update(accuracy=float(np.mean(ta == y)), litert_accuracy=float(np.mean(tb == y)))
    return out


def _agreement(path: str, info, x, y, max_arena: int, samples: int) -> tuple:
    """(TFLM child result, comparison with LiteRT) on the first ``samples`` of ``x`` (an array, a dict
    by input name or a list in the inputs' order) quantized once for both interpreters.
    LiteRT runs its builtin kernels: its default XNNPACK delegate requantizes in float and differs
    from TFLM's integer kernels by several steps (measured up to 34 on an int8 MobileNetV1)."""
    from edgekit.device.board.harness import io_names, load_interpreter, quantize, run_all
    from edgekit.device.board.micro import run

    interp = load_interpreter(path, xnnpack=False)
    names, outs = io_names(interp)
    given = dict(zip(names, x)) if isinstance(x, (list, tuple)) else x if isinstance(x, dict) else {names[0]: x}
    if set(names) - set(given):
        raise InputError(
            f"no data for input(s) {', '.join(sorted(set(names) - set(given)))} of the model: give an array "
            f"named after each input ({', '.join(names)})"
        )
    n = min(samples, rows(given))
    given = take(given, slice(0, n))
    y = split_outputs(y, outs)[0] if y is not None else None  # the first output is compared
    y = None if y is None else np.asarray(y)[:n]
    xq = {}
    for detail, name in zip(interp.get_input_details(), names):
        part, want = np.asarray(given[name]), tuple(int(s) for s in detail["shape"][1:])
        if tuple(part.shape[1:]) != want:
            if int(np.prod(part.shape[1:])) != int(np.prod(want)):
                raise InputError(f"data samples have shape {tuple(part.shape[1:])}; the model takes {want}")
            part = part.reshape((len(part),) + want)
        xq[name] = quantize(part, detail)
    lite = run_all(interp, xq)[0]
    arrays = list(xq.values())
    n_in, n_out = len(info.inputs), len(info.outputs)
    result = run(path, max_arena=max_arena, n_inputs=n_in, n_outputs=n_out, x=arrays if n_in > 1 else arrays[0])
    return result, _compare(result.pop("output_values"), lite, y, _is_classifier(info, y))


def _estimate(keras_model, arena: int, per_tensor=()) -> Optional[dict]:
    if keras_model is None:
        return None
    from edgekit.models.profiler import profile

    p = profile(keras_model, dtype_bytes=1, per_tensor=per_tensor)
    est = p.arena_estimate_bytes
    return {
        "arena_bytes": est,
        "activation_bytes": p.peak_activation_bytes,
        "error_pct": round(100.0 * (est - arena) / max(arena, 1), 1),
    }


def emit_sources(directory, name: str, tflite: bytes, ops, arena: int, overwrite: bool = False) -> list:
    """Write the C sources into ``directory`` (new, empty, or edgekit's own with ``overwrite``)."""
    files = c_sources(name, tflite, ops, arena)
    directory = _check_emit(directory, name, overwrite)
    empty = os.path.isdir(directory)  # checked empty: the finished directory is renamed over it
    with staging_dir(directory) as tmp:
        for fname, text in files.items():
            with open(os.path.join(tmp, fname), "w") as f:
                f.write(text)
        os.chmod(tmp, 0o777 & ~_umask())
        commit_dir(tmp, directory, overwrite and not empty)
    return [os.path.join(directory, f) for f in files]


def _check_emit(directory, name: str, overwrite: bool) -> str:
    """``directory`` may be new, an empty directory, or (with ``overwrite``) one holding only the
    sources edgekit writes for ``name``."""
    directory = os.fspath(directory)
    if os.path.isdir(directory) and not os.path.islink(directory) and not os.listdir(directory):
        return directory
    return check_output(
        directory, overwrite=overwrite, param="emit", directory=True, replaceable=set(source_names(name))
    )


def mcu(
    model: Union[str, os.PathLike, bytes],
    *,
    board: Union[None, str, Board] = None,
    ram_kb: Optional[float] = None,
    flash_kb: Optional[float] = None,
    validation_data=None,
    samples: int = DEFAULT_SAMPLES,
    emit=None,
    name: Optional[str] = None,
    overwrite: bool = False,
    max_arena_kb: float = DEFAULT_MAX_ARENA_KB,
    allow_float: bool = False,
    keras_model=None,
    **legacy,
) -> MCUReport:
    """Measure ``model`` (a ``.tflite`` path or its bytes) under TFLM; see the module docstring.

    ``board``: a name of :data:`~edgekit.converters.tflm.BOARDS` (or ``ram_kb`` and ``flash_kb``);
    ``validation_data``: ``(x, y)`` or ``x`` for the agreement check (the first ``samples``; older
    names ``x``, ``y``); ``emit``: a directory for
    the C sources (named ``name``, default the file's stem); ``keras_model``: the model it was
    exported from, for Keras layer names and the profiler's estimate. A float model is refused
    unless ``allow_float``; an op TFLM lacks is a :class:`VerificationError`."""
    validation_data = renamed(legacy, ("x", "y"), "validation_data", validation_data)
    if legacy:
        raise TypeError(f"mcu() got an unexpected keyword argument '{next(iter(legacy))}'")
    x, y = validation_pair(validation_data)
    target = _board(board, ram_kb, flash_kb)
    if not float(max_arena_kb) > 0:
        raise InputError("{max_arena_kb} must be positive; received {value}", params="max_arena_kb", value=max_arena_kb)
    if not isinstance(model, (bytes, bytearray)) and os.fspath(model).endswith((".keras", ".h5")):
        raise InputError(
            f"{os.fspath(model)} is a Keras model; mcu measures a .tflite file: export it first "
            "(edgekit export MODEL.keras --quant int8 --data DATA -o OUT.tflite --target mcu)"
        )
    tflite = read_tflite(model)
    label = "model bytes" if isinstance(model, (bytes, bytearray)) else os.fspath(model)
    info = inspect_tflite(tflite)
    name = name or (os.path.splitext(os.path.basename(label))[0] if label != "model bytes" else "model")
    if emit is not None:
        _check_emit(emit, name, overwrite)
    warnings = _check_model(tflite, info, label, keras_model, allow_float)
    result, compared = _run_tflm(tflite, info, x, y, samples, int(float(max_arena_kb) * 1024))
    arena = int(result["arena_bytes"])
    flash = flash_bytes(len(tflite))
    fits = lambda b: arena <= b.usable_ram_kb * 1024 and flash <= b.flash_kb * 1024  # noqa: E731
    report = MCUReport(
        model=label,
        size_bytes=len(tflite),
        flash_bytes=flash,
        arena_bytes=arena,
        granularity=int(result["granularity"]),
        allocations=result.get("allocations", {}),
        fully_integer=info.fully_integer,
        ops=info.op_counts,
        inputs=result["inputs"],
        outputs=result["outputs"],
        host_invoke_ms=result["host_invoke_ms"],
        tflm_version=result.get("tflm_version", "?"),
        board=dataclasses.asdict(target) | {"usable_ram_kb": target.usable_ram_kb} if target else None,
        fits=fits(target) if target else None,
        fits_boards={} if target else {n: fits(b) for n, b in BOARDS.items()},
        samples=int(result.get("samples", 0)),
        agreement=compared.get("agreement"),
        max_step_diff=compared.get("max_step_diff"),
        identical=compared.get("identical"),
        accuracy=compared.get("accuracy"),
        litert_accuracy=compared.get("litert_accuracy"),
        estimate=_estimate(keras_model, arena),
        warnings=warnings,
    )
    if emit is not None and report.fits is False:
        report = dataclasses.replace(
            report, warnings=warnings + [f"C sources not written: the model does not fit {report.board_label}"]
        )
    elif emit is not None:
        files = emit_sources(emit, name, tflite, [op.op for op in info.ops], arena, overwrite=overwrite)
        report = dataclasses.replace(report, emitted=files)
    return report


def _check_model(tflite: bytes, info, label: str, keras_model, allow_float: bool) -> list:
    """What TFLM cannot run is an error: an op it has no kernel for, a float model (unless
    ``allow_float``: then a warning, returned), a softmax it computes otherwise."""
    names = fb.signature_names(tflite)
    if len(names) > 1:  # tflite-micro's MarkAllocationLifetimes plans subgraph 0 and what it calls
        raise VerificationError(
            f"{label} holds {len(names)} signatures ({', '.join(names)}); TFLM runs the first subgraph only "
            f"('{names[0]}') and plans memory for it alone, so another signature's scratch buffers crash it: "
            "give TFLM a file with one signature"
        )
    missing = unsupported_ops(info, keras_model)
    if missing:
        raise VerificationError(f"{label} uses {len(missing)} op type(s) TFLM has no kernel for: " + "; ".join(missing))
    warnings = []
    if not info.fully_integer:
        float_ops = sorted({op.op for op in info.float_ops})
        message = (
            f"{label} is not an int8 model ({len(info.float_ops)} ops compute in float: "
            f"{', '.join(float_ops[:5])}); TFLM runs it with reference kernels, but float weights take 4x the "
            "flash and activations 4x the RAM of int8, and boards' optimized kernels (CMSIS-NN, ESP-NN) are int8 "
            "only"
        )
        if not allow_float:
            raise InputError(
                "{reason}: export it with {quant='int8'}, or pass {allow_float=True} to measure it anyway",
                params=("quant", "allow_float"),
                reason=message,
            )
        warnings.append(message)
    problems = softmax_problems(tflite)
    if problems:
        raise VerificationError(f"{label}: " + "; ".join(problems))
    return warnings


def _run_tflm(tflite: bytes, info, x, y, samples: int, max_arena: int):
    """TFLM's run of the model in a child (the least arena, and with ``x`` the agreement with
    LiteRT): (the child's result, the comparison)."""
    check_installed()
    with tempfile.TemporaryDirectory(prefix="edgekit-mcu-") as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as f:
            f.write(tflite)
        compared = {}
        if x is not None:
            result, compared = _agreement(path, info, x, y, max_arena, int(samples))
        else:
            from edgekit.device.board.micro import run

            result = run(path, max_arena=max_arena, n_inputs=len(info.inputs), n_outputs=len(info.outputs))
    return result, compared


def boards_table(markdown: bool = False) -> str:
    rows = [
        [
            b.name,
            b.chip,
            f"{b.ram_kb:,}" + (f" ({b.arena_kb:,} contiguous)" if b.arena_kb else ""),
            f"{b.flash_kb:,}",
            b.source,
        ]
        for b in BOARDS.values()
    ]
    return table(["board", "chip", "RAM KB", "flash KB", "source"], rows, markdown=markdown, align="llrrl")
