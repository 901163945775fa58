"""Export: convert, verify, and only then write — :func:`export` returns an :class:`ExportReport`
holding the ``.tflite`` bytes and everything verification measured; ``report.save(path)`` writes
them under edgekit's output policy. The options are one validated :class:`ExportOptions`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Tuple, Union

import numpy as np

from edgekit.converters.convert import DEFAULT_CALIB_SAMPLES, Quant, _convert, calibration_data, check_options, fit
from edgekit.converters.inspection import inspect_tflite
from edgekit.converters.least_ram import fit_ram, mcu_check
from edgekit.converters.quant_debug import _layer_errors, keep_float_auto, tensors_of_layers
from edgekit.converters.verify import DEFAULT_VERIFY_SAMPLES, check_min_agreement, verify
from edgekit.core.errors import InputError, VerificationError, renamed
from edgekit.core.io import check_output, write_atomic
from edgekit.core.results import Result
from edgekit.core.samples import validation_pair
from edgekit.core.savedmodel import is_savedmodel_graph
from edgekit.core.saving import as_tf_keras
from edgekit.core.task import Task, anomaly_labels, parse_tasks, resolve_each
from edgekit.core.wrappers import is_clustered, is_pruned, is_qat, strip

# The sanity gate of integer exports: the outputs' mean cosine similarity to the Keras model's.
# Rounding keeps it near 1 — measured 0.998-0.9999 on the demo's eight int8 files (the clustered,
# per-tensor one lowest), 0.9999-1.0000 on the int8 and QAT exports of the zoo's keras.applications
# models (random weights, benchmarks/zoo.py) but NASNetMobile's 0.983 — while a model calibrated on
# data at a tenth of its range measured 0.34 (tests/test_real_models.py). Below this, the export
# fails (exit 1).
MIN_COSINE = 0.9


@dataclass(frozen=True)
class ExportOptions:
    """How to export, validated once. ``quant``: a :class:`Quant` mode; ``io``: the integer
    models' input/output dtype (default per mode); ``sparse``: encode zero weights sparsely;
    ``per_channel=False``: one scale per weight tensor (clustered models keep k values per
    kernel); ``calib_samples``/``verify_samples``/``seed``: how many samples calibrate and verify,
    drawn with ``seed``; ``min_agreement``: fail below this top-1 agreement with Keras;
    ``keep_float``: int8 layers left in float (names, or ``"auto"`` with ``min_agreement``);
    ``layer_report``: measure each int8 layer's quantization error; ``share_weights``: store a
    weight several ops read once; ``min_cosine``: the sanity gate of integer exports (see
    :data:`MIN_COSINE`, the default; None: no gate); ``task``: what the model is for
    (:mod:`edgekit.core.task`; None: from its loss, output or data), which decides how it is
    verified; ``target='mcu'``: the least RAM (:mod:`edgekit.converters.least_ram`: per-tensor Dense
    and pointwise layers where the metric holds, an offline memory plan where TFLM's arena shrinks;
    ``least_ram=False`` keeps the file as converted), then the model checked under TFLM (ops, arena,
    flash, agreement with LiteRT) and, with ``board``, that it fits."""

    quant: Union[Quant, str] = "int8"
    io: Optional[str] = None
    sparse: bool = False
    per_channel: bool = True
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    verify_samples: int = DEFAULT_VERIFY_SAMPLES
    seed: int = 0
    min_agreement: Optional[float] = None
    keep_float: Union[None, str, Tuple[str, ...]] = None
    layer_report: bool = True
    share_weights: bool = True
    min_cosine: Optional[float] = MIN_COSINE  # integer modes; None: no gate
    target: str = "litert"  # "mcu": also run the microcontroller checks (edgekit.converters.mcu)
    board: object = None  # target="mcu": a board name or a tflm.Board (None: every known board)
    least_ram: bool = True  # target="mcu": per-layer granularity and an offline memory plan
    # classification | regression | reconstruction, or per output {name: task} or a list in their order
    # (None: resolved from the model)
    task: Union[None, str, dict, list] = None
    streaming: bool = False  # export the recurrent model's streaming twin (edgekit.converters.streaming)
    hop: int = 1  # streaming: frames per invoke

    def __post_init__(self):
        task = parse_tasks(self.task)
        if task is not None:
            value = (
                {k: t.value for k, t in task.items()}
                if isinstance(task, dict)
                else [t.value for t in task]
                if isinstance(task, list)
                else task.value
            )
            object.__setattr__(self, "task", value)
        if self.target not in ("litert", "mcu"):
            raise InputError(
                "{target} must be 'litert' or 'mcu'; received {value!r}", params="target", value=self.target
            )
        if self.board is not None and self.target != "mcu":
            raise InputError("{board} applies to {target='mcu'}", params=("board", "target"))
        quant = Quant.parse(self.quant)
        object.__setattr__(self, "quant", quant)
        object.__setattr__(self, "io", quant.check_io(self.io))
        keep = self.keep_float
        if isinstance(keep, str) and keep != "auto":
            keep = tuple(k.strip() for k in keep.split(",") if k.strip())
        elif keep is not None and not isinstance(keep, str):
            keep = tuple(keep)
        object.__setattr__(self, "keep_float", keep or None)
        if self.target == "mcu" and quant is not Quant.INT8:
            raise InputError(
                "{target='mcu'} exports int8 (microcontroller kernels are int8), not {mode}",
                params="target",
                mode=quant.value,
            )
        check_options(quant, keep_float=self.keep_float, per_channel=self.per_channel)
        if self.keep_float == "auto" and self.min_agreement is None:
            raise InputError(
                "{keep_float='auto'} needs {min_agreement}: the agreement to reach",
                params=("keep_float", "min_agreement"),
            )
        if self.min_agreement is not None and not 0.0 <= float(self.min_agreement) <= 1.0:
            raise InputError(
                "{min_agreement} must be in [0, 1]; received {value}", params="min_agreement", value=self.min_agreement
            )
        if self.min_cosine is not None and not -1.0 <= float(self.min_cosine) <= 1.0:
            raise InputError(
                "{min_cosine} must be in [-1, 1]; received {value}", params="min_cosine", value=self.min_cosine
            )
        if self.hop != 1 and not self.streaming:
            raise InputError("{hop} applies to {streaming=True}", params=("hop", "streaming"))
        for name in ("calib_samples", "verify_samples", "hop"):
            if int(getattr(self, name)) < 1:
                raise InputError("{%s} must be >= 1; received {value}" % name, params=name, value=getattr(self, name))


if TYPE_CHECKING:
    from edgekit.converters.mcu import MCUReport

_NOT_JSON = ("tflite", "mcu")  # the bytes; the MCU report, written as its own dict
_FIGURE = {"mae": "MAE", "rmse": "RMSE", "error": "reconstruction error", "auc": "anomaly AUC"}


@dataclass(frozen=True)
class ExportReport(Result):
    """What an export produced (``tflite``: the bytes, not part of ``to_dict``) and what
    verification measured; ``path`` once written."""

    mode: str
    path: Optional[str]
    size_bytes: int
    gzip_bytes: int
    fully_integer: bool
    op_counts: dict
    input: dict
    output: dict
    accuracy: Optional[float]  # the .tflite's top-1 accuracy, when labels exist
    keras_accuracy: Optional[float]  # the Keras model's on the same samples
    agreement: Optional[float]  # top-1 agreement with the Keras model, 0-1
    snr_db: Optional[float]  # output SNR against the Keras model (None when identical)
    cosine: Optional[float]  # mean cosine similarity of the outputs
    verify_samples: int
    calib_samples: int
    seed: int
    convert_seconds: float
    verify_seconds: float
    warnings: list = field(default_factory=list)
    io: str = "float32"
    sparse: bool = False
    per_channel: bool = True  # int8 weights quantized per output channel (False: one scale per tensor)
    calib: Optional[dict] = None  # source, samples, seed, selection
    worst_layers: list = field(default_factory=list)  # int8: per-layer error, worst first
    kept_float: list = field(default_factory=list)  # Keras layers left in float
    shared_weights: list = field(default_factory=list)  # weights stored once for several ops
    mcu: Optional["MCUReport"] = None  # target="mcu": what TFLM measured
    task: str = "classification"  # how the model was verified (edgekit.core.task)
    task_reason: str = ""  # why that task
    metrics: Optional[dict] = None  # regression/reconstruction: the task's figures, {"keras": …, "tflite": …}
    inputs: list = field(default_factory=list)  # every input tensor (``input`` is the first)
    outputs: list = field(default_factory=list)  # every output tensor (``output`` is the first)
    per_output: Optional[list] = None  # several outputs: each one's name, task and verified figures
    streaming: Optional[dict] = None  # streaming export: the frame-by-frame run against the whole-window model
    tflite: bytes = field(default=b"", repr=False, compare=False)

    def to_dict(self) -> dict:
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in _NOT_JSON}
        d["mcu"] = self.mcu.to_dict() if self.mcu is not None else None
        return d

    def save(self, path, overwrite: bool = False) -> "ExportReport":
        """Write the ``.tflite`` under edgekit's output policy; returns the report with ``path``."""
        path = check_output(path, overwrite=overwrite)
        write_atomic(path, self.tflite, overwrite=overwrite)
        return dataclasses.replace(self, path=os.fspath(path))

    def summary(self) -> str:
        lines = [
            f"{'wrote ' + self.path if self.path else 'converted'}: {self.mode}{' sparse' if self.sparse else ''}, "
            f"{self.size_bytes:,} bytes (gzip {self.gzip_bytes:,}), "
            f"fully integer: {'yes' if self.fully_integer else 'no'}",
            _io_line(self),
        ]
        if self.calib:
            c = self.calib
            lines.append(f"calibrated on {c['samples']} samples of {c['source']} ({c['selection']}, seed {c['seed']})")
        snr = "identical" if self.snr_db is None else f"{self.snr_db:.1f} dB"
        if self.agreement is not None:
            line = f"verified on {self.verify_samples} samples: top-1 agreement with Keras {self.agreement:.4f}"
            if self.accuracy is not None:
                line += f", accuracy keras {self.keras_accuracy:.4f} / tflite {self.accuracy:.4f}"
            lines.append(line + f", output SNR {snr}, cosine {self.cosine:.4f}")
        elif self.metrics is not None:
            k, t = self.metrics["keras"], self.metrics["tflite"]
            figures = "".join(f", {_FIGURE[n]} keras {k[n]:.4g} / tflite {t[n]:.4g}" for n in k)
            lines.append(
                f"verified as {self.task} ({self.task_reason}) on {self.verify_samples} samples{figures}, "
                f"output SNR {snr}, cosine {self.cosine:.4f}"
            )
        for o in self.per_output or []:
            lines.append(_output_line(o))
        if self.worst_layers:
            worst = ", ".join(f"{w['layer']} ({w['op']}) {w['rmse_over_scale']:.2f}" for w in self.worst_layers[:3])
            lines.append(f"int8 error per layer (RMSE / quantization step; 0.29 is rounding noise), worst: {worst}")
        if self.streaming:
            from edgekit.converters.streaming import describe

            lines.append(describe(self.streaming))
        if self.mcu:
            lines.append(self.mcu.brief())
        lines.extend(f"note: {n}" for n in self.warnings)
        return "\n".join(lines)


def _io_line(r: ExportReport) -> str:
    if len(r.inputs) <= 1 and len(r.outputs) <= 1:
        return f"input {r.input['dtype']} {r.input['shape']}, output {r.output['dtype']} {r.output['shape']}"
    listed = lambda ts: ", ".join(f"{t.get('key', t['name'])} {t['dtype']} {t['shape']}" for t in ts)  # noqa: E731
    return f"inputs {listed(r.inputs)}; outputs {listed(r.outputs)}"


def _output_line(o: dict) -> str:
    """One output's verified figures (a model with several outputs)."""
    snr = "identical" if o["snr_db"] is None else f"{o['snr_db']:.1f} dB"
    if o["task"] == Task.CLASSIFICATION.value:
        figures = f"top-1 agreement {o['agreement']:.4f}"
        if o.get("accuracy") is not None:
            figures += f", accuracy keras {o['keras_accuracy']:.4f} / tflite {o['accuracy']:.4f}"
    else:
        k, t = o["metrics"]["keras"], o["metrics"]["tflite"]
        figures = ", ".join(f"{_FIGURE[n]} keras {k[n]:.4g} / tflite {t[n]:.4g}" for n in k) or "no targets"
    return f"  output {o['name']} ({o['task']}): {figures}, SNR {snr}, cosine {o['cosine']:.4f}"


def _named_io(tflite: bytes, info) -> tuple:
    """The file's input and output tensors, each with ``key``: its name in the model's signature."""
    from edgekit.device.board.harness import io_names, load_interpreter

    ins, outs = io_names(load_interpreter(model_content=tflite, xnnpack=False, allocate=False))
    return [dict(t, key=k) for t, k in zip(info.inputs, ins)], [dict(t, key=k) for t, k in zip(info.outputs, outs)]


def _fitted(model, x):
    """Samples checked against ``model``'s inputs (a dict by input name for several), or None."""
    return None if x is None else fit(model, x, "validation_data")


def _eval_data(calib, calib_x, eval_x, eval_y):
    """Verification data: the held-out data given, else the calibration samples (no labels)."""
    if eval_x is None and calib_x is not None:
        return calib_x, None
    if eval_x is None and isinstance(calib, (np.ndarray, dict)):
        return calib, None
    return eval_x, eval_y


def _regression_note(quant: Quant, metrics: Optional[dict]) -> list:
    """A regression model whose int8 file's MAE is more than 2% above the Keras model's: what
    int16 activations usually buy back (docs/tasks.md has the measurements)."""
    k, t = ((metrics or {}).get(side, {}).get("mae") for side in ("keras", "tflite"))
    if quant is not Quant.INT8 or k is None or t is None or k <= 0 or t <= 1.02 * k:
        return []
    return [
        f"int8 adds {100 * (t / k - 1):.1f}% to the MAE ({k:.4g} → {t:.4g}); int16 activations (int16x8) keep "
        f"more of a regression output's resolution"
    ]


def _notes(checked, shared, kept_layers, quant: Quant, tasks: list, eval_y) -> list:
    notes = []
    if not checked.verify_samples:
        notes.append("no verification data: agreement with the Keras model was not measured")
    if shared:
        notes.append(
            f"stored once: {len(shared)} weight(s) read by several ops, {sum(s['bytes'] for s in shared):,} bytes saved"
        )
    if kept_layers:
        notes.append(f"kept in float: {', '.join(kept_layers)} (the model is not fully integer)")
    if tasks == [Task.RECONSTRUCTION] and eval_y is not None and not anomaly_labels(eval_y, len(eval_y)):
        notes.append("the labels do not mark anomalies (0/1, both present): the anomaly ranking (AUC) was not measured")
    return notes + _regression_note(quant, checked.metrics)


def _convert_and_verify(model, o: ExportOptions, calib_x, eval_x, eval_y, progress, task):
    """(tflite bytes, Verification, layer errors, kept errors, shared weights, convert s, verify s, the
    per-tensor choices of ``target='mcu'``)."""
    t0 = time.perf_counter()
    errors, calibrated = [], None
    # TF's QuantizationDebugger cannot run a model whose ranges come from QAT (measured:
    # "Please check if the quantized model is in debug mode"), so QAT models get no layer report.
    if o.quant is Quant.INT8 and eval_x is not None and (o.layer_report or o.keep_float) and not is_qat(model):
        errors, calibrated = _layer_errors(model, calib_x, fit(model, eval_x, "verification data"), progress=progress)
    kept_tensors = tensors_of_layers(errors, list(o.keep_float)) if isinstance(o.keep_float, tuple) else []
    if kept_tensors and not errors:
        raise InputError(
            "{keep_float} with layer names needs verification data to find the layers' ops", params="keep_float"
        )
    tflite, shared = _convert(
        model,
        o.quant,
        calib_x,
        io=o.io,
        sparse=o.sparse,
        keep_float=kept_tensors,
        progress=progress,
        per_channel=o.per_channel,
        share=o.share_weights,
        calibrated=calibrated if o.per_channel else None,
    )
    ram = None
    if o.target == "mcu" and o.least_ram and o.quant is Quant.INT8 and o.per_channel and not kept_tensors:
        tflite, ram = fit_ram(model, tflite, _fitted(model, eval_x), eval_y, task)
    t1 = time.perf_counter()
    kept = [e for e in errors if e.tensor in kept_tensors]
    common = dict(io=o.io, sparse=o.sparse, verify_samples=o.verify_samples, seed=o.seed, task=task)
    if o.keep_float == "auto":
        checked = verify(model, tflite, o.quant, eval_x, eval_y, **common)
        if checked.agreement is None:
            raise InputError("{keep_float='auto'} needs verification data", params="keep_float")
        if checked.agreement < o.min_agreement:
            tflite, checked, kept, shared = keep_float_auto(
                model,
                calib_x,
                eval_x,
                eval_y,
                errors,
                min_agreement=o.min_agreement,
                io=o.io,
                sparse=o.sparse,
                seed=o.seed,
                verify_samples=o.verify_samples,
                calibrated=calibrated,
                task=task,
            )
    else:
        checked = verify(
            model, tflite, o.quant, eval_x, eval_y, min_agreement=o.min_agreement, allow_float=bool(kept), **common
        )
    _sanity_gate(model, o, checked, errors, calib_x, eval_x)
    return tflite, checked, errors, kept, shared, t1 - t0, time.perf_counter() - t1, ram


def _sanity_gate(model, o: ExportOptions, checked, errors, calib_x, eval_x) -> None:
    """An integer export whose outputs are far from the Keras model's — further than rounding
    explains (:data:`MIN_COSINE`) — fails, naming the layers that lose the most."""
    gate = o.min_cosine
    if gate is None or not o.quant.integer or checked.cosine is None or checked.cosine >= gate:
        return
    if not errors and o.quant is Quant.INT8 and not is_qat(model) and eval_x is not None:
        errors, _ = _layer_errors(model, calib_x, fit(model, eval_x, "verification data"))
    worst = ", ".join(f"{e.layer} {e.rmse_over_scale:.1f}" for e in errors[:3])
    snr = "" if checked.snr_db is None else f", SNR {checked.snr_db:.1f} dB"
    agreement = "" if checked.agreement is None else f", top-1 agreement {checked.agreement:.3f}"
    detail = f"cosine {checked.cosine:.3f}{snr}{agreement}"
    layers = f"; the layers that lose the most (error in quantization steps): {worst}" if worst else ""
    raise VerificationError(
        "the {mode} model's outputs are far from the Keras model's: {detail}, where rounding alone keeps the cosine "
        "above {min_cosine} {gate:g}{layers}; check the model and its calibration data, keep those layers in float "
        "({keep_float}) or lower {min_cosine} if this is expected",
        params=("min_cosine", "keep_float"),
        mode=o.quant.value,
        detail=detail,
        gate=gate,
        layers=layers,
    )


def _mcu_step(model, tflite: bytes, checked, o: ExportOptions, eval_x, eval_y, task, path, ram) -> tuple:
    """:func:`~edgekit.converters.least_ram.mcu_check`: (the file, its verification, the MCU report)."""
    planned, report = mcu_check(model, tflite, o, _fitted(model, eval_x), eval_y, task, path, ram)
    if planned is not tflite:  # an offline memory plan: metadata only, the same ops and outputs
        tflite, checked = planned, dataclasses.replace(checked, info=inspect_tflite(planned))
    return tflite, checked, report


def _prepare(model, o: ExportOptions, eval_y):
    """The tf_keras model to convert (translated, wrappers stripped) and its outputs' tasks
    (:func:`edgekit.core.task.resolve_each`), or a clear error for options that do not apply to it."""
    compiled = getattr(model, "loss", None)  # the translation below does not keep a Keras 3 model's
    if not is_savedmodel_graph(model):  # a SavedModel is converted and verified as the SavedModel it is
        model = as_tf_keras(model)
    resolved = resolve_each(model, o.task, eval_y, loss=compiled)
    if not any(r.task is Task.CLASSIFICATION for r in resolved):  # before any conversion
        check_min_agreement(o.min_agreement, resolved[0].task, resolved[0].reason)
    if is_pruned(model) or is_clustered(model):
        model = strip(model)  # the wrappers' masks and indices are training state, not the model
    if is_qat(model) and o.keep_float:
        raise InputError(
            "{keep_float} does not apply to a quantization-aware model: leave the layer out of QAT "
            "instead (QATConfig(skip=...))",
            params="keep_float",
        )
    return model, resolved


def _options(quant, options: Optional[ExportOptions], fields: dict) -> ExportOptions:
    if options is not None and (quant is not None or fields):
        given = ["quant"] * (quant is not None) + sorted(fields)
        raise InputError(
            "give {options} or its fields ({fields}), not both", params=("options", *given), fields=", ".join(given)
        )
    return options or ExportOptions(quant="int8" if quant is None else quant, **fields)


def export(
    model,
    path=None,
    quant=None,
    *,
    calibration=None,
    validation_data=None,
    overwrite: bool = False,
    progress: Optional[str] = None,
    options: Optional[ExportOptions] = None,
    **fields,
) -> ExportReport:
    """Convert, verify, then (with ``path``) write atomically; nothing is written if a step fails.

    ``calibration`` is any calibration source (see :func:`edgekit.core.samples.calibration_samples`);
    ``validation_data`` is held-out data for the checks, ``(x, y)`` or ``x`` (default: the
    calibration samples, without labels). ``quant`` and the other keywords are
    :class:`ExportOptions` fields, or pass ``options`` (not both). Pruning and clustering wrappers
    are stripped first. ``progress`` labels a progress line during calibration. The older names
    ``calib``, ``eval_x`` and ``eval_y`` still work, with a warning."""
    calib = renamed(fields, "calib", "calibration", calibration)
    validation_data = renamed(fields, ("eval_x", "eval_y"), "validation_data", validation_data)
    eval_x, eval_y = validation_pair(validation_data)
    o = _options(quant, options, fields)
    if o.streaming:  # the step model is prepared and exported there, by this function
        from edgekit.converters.streaming import export_streaming

        path = check_output(path, overwrite=overwrite) if path is not None else None
        report = export_streaming(model, o, calib, (eval_x, eval_y), progress)
        return report.save(path, overwrite=overwrite) if path is not None else report
    model, resolved = _prepare(model, o, eval_y)
    if path is not None:
        path = check_output(path, overwrite=overwrite)
    calib_x, calib_info = calibration_data(model, o.quant, calib, o.calib_samples, o.seed)
    eval_x, eval_y = _eval_data(calib, calib_x, eval_x, eval_y)
    tasks = [r.task for r in resolved]
    tflite, checked, errors, kept, shared, t_convert, t_verify, ram = _convert_and_verify(
        model, o, calib_x, eval_x, eval_y, progress, tasks if len(tasks) > 1 else tasks[0]
    )
    tflite, checked, mcu_report = _mcu_step(model, tflite, checked, o, eval_x, eval_y, tasks[0], path, ram)
    info, kept_layers = checked.info, list(dict.fromkeys(e.layer for e in kept))
    inputs, outputs = _named_io(tflite, info)
    report = ExportReport(
        mode=o.quant.value,
        path=None,
        size_bytes=info.size_bytes,
        gzip_bytes=info.gzip_bytes,
        fully_integer=info.fully_integer,
        op_counts=info.op_counts,
        input=dict(inputs[0]),
        output=dict(outputs[0]),
        accuracy=checked.accuracy,
        keras_accuracy=checked.keras_accuracy,
        agreement=checked.agreement,
        snr_db=checked.snr_db,
        cosine=checked.cosine,
        verify_samples=checked.verify_samples,
        calib_samples=calib_info["samples"] if calib_info else 0,
        seed=o.seed,
        convert_seconds=round(t_convert, 3),
        verify_seconds=round(t_verify, 3),
        warnings=_notes(checked, shared, kept_layers, o.quant, tasks, eval_y),
        io=o.io,
        sparse=o.sparse,
        per_channel=o.per_channel,
        calib=calib_info,
        worst_layers=[e.to_dict() for e in errors[:5]],
        kept_float=kept_layers,
        shared_weights=shared,
        tflite=tflite,
        task=tasks[0].value if len(tasks) == 1 else "several",
        task_reason=resolved[0].reason if len(tasks) == 1 else "per output",
        metrics=checked.metrics,
        inputs=inputs,
        outputs=outputs,
        per_output=[dict(p, reason=r.reason) for p, r in zip(checked.outputs, resolved)] if checked.outputs else None,
        mcu=mcu_report,
    )
    return report.save(path, overwrite=overwrite) if path is not None else report
