"""Verification of a converted model, as every export runs it:

1. audit — every op and tensor dtype is read from the file; a custom/Flex op is an error in every
   mode, and in the integer modes so is a float op (other than the I/O edges with float32 I/O),
   naming the op and the Keras layer it came from;
2. the model allocates and runs under the interpreter configuration a board uses (XNNPACK); a
   failure names the reason and the fix;
3. agreement with the Keras model on held-out data, by the model's task
   (:mod:`edgekit.core.task`): output SNR and cosine always; for a classifier top-1 agreement and
   the accuracy of both when labels exist (``min_agreement`` turns a low agreement into an error);
   for regression the MAE and RMSE of both against the targets; for reconstruction the error of
   both, and the anomaly ranking's AUC where labels mark anomalies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edgekit.converters.convert import Quant, fit, op_layer
from edgekit.converters.inspection import ModelInfo, inspect_tflite
from edgekit.core.errors import InputError, VerificationError
from edgekit.core.samples import output_names, rows, sample_indices, take
from edgekit.core.task import Task, check_targets, predicted_classes, quality, split_outputs

DEFAULT_VERIFY_SAMPLES = 1000


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` measured: the file (``info``), output ``snr_db`` and ``cosine``; for a
    classifier top-1 ``agreement`` with the Keras model and with labels the ``.tflite``'s
    ``accuracy`` and the Keras model's (``keras_accuracy``); ``metrics``: the task's figures
    (:func:`edgekit.core.task.quality`) of the ``keras`` model and the ``tflite`` file."""

    info: ModelInfo
    agreement: Optional[float] = None
    accuracy: Optional[float] = None
    keras_accuracy: Optional[float] = None
    snr_db: Optional[float] = None
    cosine: Optional[float] = None
    verify_samples: int = 0
    task: str = "classification"
    metrics: Optional[dict] = None
    outputs: Optional[list] = None  # several outputs: each one's name, task and figures


def audit(info, quant, io: Optional[str] = None, model=None, allow_float: bool = False) -> list:
    """Raise :class:`VerificationError` for an op a board cannot run as asked; returns the
    float ops accepted (those of layers kept in float with ``allow_float``).

    Every mode: custom and Flex ops are errors (a board's LiteRT wheel has builtins only).
    ``int8``/``int16x8``: every op computes on integers, except a QUANTIZE of the graph input and
    a DEQUANTIZE of the graph output when the I/O is float32."""
    quant = Quant.parse(quant)
    io = quant.check_io(io)
    if info.custom_ops:
        op = info.custom_ops[0]
        raise VerificationError(
            f"{op.op} (op #{op.index}, layer {op_layer(info, op, model)}) is not a TFLite builtin; "
            f"a board's LiteRT wheel cannot run it: replace the layer with builtin-convertible ones"
        )
    if not quant.integer:
        return []
    graph_in = {t["index"] for t in info.inputs}
    graph_out = {t["index"] for t in info.outputs}

    def at_edge(op) -> bool:
        return io == "float32" and (
            (op.op == "QUANTIZE" and set(op.inputs) <= graph_in)
            or (op.op == "DEQUANTIZE" and set(op.outputs) <= graph_out)
        )

    bad = [op for op in info.float_ops if not at_edge(op)]
    if bad and not allow_float:
        op = bad[0]
        raise VerificationError(
            f"{quant.value} model is not fully integer: {op.op} (op #{op.index}, layer "
            f"{op_layer(info, op, model)}) computes on "
            f"{'/'.join(sorted(set(op.input_dtypes + op.output_dtypes)))}; {len(bad)} such op(s) in all; "
            f"the layer has no integer kernel: replace it, or export as float32/dynamic"
        )
    return bad


def _output_similarity(ref: np.ndarray, lite: np.ndarray) -> dict:
    """SNR (dB) of the .tflite outputs against the Keras outputs, and their mean cosine."""
    ref = ref.astype(np.float64)
    err = lite.astype(np.float64) - ref
    noise = float(np.mean(err**2))
    signal = float(np.mean(ref**2))
    snr = float("inf") if noise == 0 else 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")
    if ref.shape[1] == 1:  # one value per sample (a regression output): the cosine of the whole column
        ref, lite = ref.T, lite.reshape(ref.shape).T
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(lite, axis=1)
    cos = np.where(norms > 0, np.sum(ref * lite, axis=1) / np.where(norms > 0, norms, 1), 1.0)
    return {"snr_db": round(float(snr), 2) if np.isfinite(snr) else None, "cosine": float(np.mean(cos))}


_PREPARE_FIXES = {
    "sparse": "sparse int8 weights have no XNNPACK kernel: export without `sparse=True`, or run the "
    "model with the delegate off (`xnnpack=False` when benchmarking)",
    "default": "the board's default interpreter (XNNPACK) would fail the same way: export in another "
    "mode or replace the layer",
}


# XNNPACK refuses an int8 conv or fully connected op whose requantization scale (input scale ×
# weight scale / output scale) is 256 or more: its output range is (almost) nothing.
_XNNPACK_MAX_REQUANT = 256.0
_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def dead_output(info, model=None) -> Optional[str]:
    """Why an integer model does not prepare under XNNPACK when one of its weighted ops has an
    output range of (almost) nothing — its outputs were all zero on the calibration data, dead units
    a ReLU never lets through — or None when no op has."""
    for op in info.ops:
        if op.op not in _WEIGHTED or len(op.inputs) < 2 or not op.outputs:
            continue
        x, w, out = (info.tensors[i].scales for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
        if not (x and w and out) or out[0] <= 0:
            continue
        requant = x[0] * max(w) / out[0]
        if requant >= _XNNPACK_MAX_REQUANT:
            return (
                f"layer {op_layer(info, op, model)} ({op.op}, op #{op.index}) gives int8 outputs of scale "
                f"{out[0]:.2g}: its outputs were (almost) all zero on the calibration data (dead units: a ReLU "
                f"that never fires), and XNNPACK, the board's default interpreter, refuses its requantization "
                f"scale ({requant:,.0f} >= 256). Calibrate on data that exercises the layer, train or fine-tune "
                f"the model longer, or remove the dead units (channel pruning)"
            )
    return None


# Modes whose files LiteRT's interpreter has been seen to abort the whole process on (SIGABRT in
# invoke(): an int16x8 transformer encoder with token inputs, TF 2.21 / ai-edge-litert 2.3): their
# verification runs the samples in a child process, the board harness's (numpy + LiteRT, ~0.5 s).
ISOLATED = frozenset({Quant.INT16X8})


def _zeros(interp) -> dict:
    """One sample of zeros per input of ``interp``, by input name."""
    from edgekit.device.board.harness import io_names

    return {
        n: np.zeros((1,) + tuple(d["shape"][1:]), np.float32 if np.issubdtype(d["dtype"], np.floating) else d["dtype"])
        for n, d in zip(io_names(interp)[0], interp.get_input_details())
    }


def _child_error(stdout: str):
    """The ``error`` of the harness's JSON line, if it printed one."""
    import json

    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]).get("error") if lines else None
    except ValueError:
        return None


def _outputs_in_child(tflite: bytes, xs, interp, quant, threads: int) -> dict:
    """The dequantized outputs of ``tflite`` on ``xs`` by output name (:func:`predict_all`), computed
    by the harness in a child process; a crash there is a :class:`VerificationError` saying so."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile

    from edgekit.device.board import harness

    with tempfile.TemporaryDirectory(prefix="edgekit-verify-") as tmp:
        model, inputs, out = (os.path.join(tmp, n) for n in ("model.tflite", "x.npz", "out.npz"))
        with open(model, "wb") as f:
            f.write(tflite)
        np.savez(inputs, **(xs if isinstance(xs, dict) else {"x": xs}))
        argv = [sys.executable, harness.__file__, model, "--inputs", inputs, "--outputs", out]
        proc = subprocess.run(argv + ["--threads", str(threads)], capture_output=True, text=True)
        if proc.returncode == 0:
            names = harness.io_names(interp)[1]
            with np.load(out) as f:
                return {n: harness.dequantize(f[f"output/{n}"], d) for n, d in zip(names, interp.get_output_details())}
    error = _child_error(proc.stdout) if proc.returncode > 0 else None
    if error:  # the harness's one-line BoardError (printed as JSON): not a crash
        reason = error.replace(model, "the converted model")
        raise VerificationError(f"{reason} -- {_PREPARE_FIXES['default']}" if "does not prepare" in reason else reason)
    what = signal.Signals(-proc.returncode).name if proc.returncode < 0 else f"exit {proc.returncode}"
    raise VerificationError(
        f"LiteRT's interpreter crashed ({what}) preparing or running the {quant.value} model: a board "
        f"would crash the same way; export it as int8 (keep the worst layers in float with {{keep_float}}) or float16",
        params="keep_float",
    )


def check_min_agreement(min_agreement: Optional[float], task: Task, reason: str = "") -> None:
    """``min_agreement`` is top-1 agreement: an error for a model of another task (``reason``: why
    it has that task, :class:`edgekit.core.task.Resolved`)."""
    if min_agreement is None or task is Task.CLASSIFICATION:
        return
    raise InputError(
        "{min_agreement} is top-1 agreement, for classifiers; this model's task is {kind}{why}: its outputs are "
        "checked by {min_cosine}, or give {task='classification'} if it is a classifier",
        params=("min_agreement", "min_cosine", "task"),
        kind=task.value,
        why=f" ({reason})" if reason else "",
    )


def _top1(ref, lite, ys, given_shape) -> dict:
    """A classifier's top-1 figures: agreement of the ``.tflite``'s outputs ``lite`` with Keras's
    ``ref`` (over the last axis: per sample for (N, classes), per position for sequences
    (N, T, vocab)), and with labels ``ys`` the accuracy of both."""
    lite_top, ref_top = predicted_classes(lite), predicted_classes(ref)
    figures = {"agreement": float(np.mean(lite_top == ref_top))}
    if ys is not None:
        if ys.size != ref_top.size:
            want = "(N,)" if ref_top.ndim == 1 else f"(N, {', '.join(map(str, ref_top.shape[1:]))})"
            raise InputError(
                f"labels have shape {given_shape}; the model's output "
                f"{tuple(ref.shape[1:])} needs one label per class axis: {want}"
            )
        ys = ys.reshape(ref_top.shape)
        figures.update(accuracy=float(np.mean(lite_top == ys)), keras_accuracy=float(np.mean(ref_top == ys)))
    return figures


def verify(
    model,
    tflite: bytes,
    quant="int8",
    x: Optional[np.ndarray] = None,
    y: Optional[np.ndarray] = None,
    *,
    io: Optional[str] = None,
    sparse: bool = False,
    allow_float: bool = False,
    min_agreement: Optional[float] = None,
    verify_samples: int = DEFAULT_VERIFY_SAMPLES,
    seed: int = 0,
    threads: int = 1,
    task=Task.CLASSIFICATION,
):
    """Audit ``tflite`` (:func:`audit`), prepare and run it under XNNPACK, compare it with
    ``model`` on ``x`` as its ``task`` asks; returns a :class:`Verification`.

    Raises :class:`VerificationError` when the audit fails, the model does not prepare under
    XNNPACK, or a classifier's top-1 agreement is below ``min_agreement``."""
    from edgekit.device.board.harness import BoardError, load_interpreter, predict_all

    quant = Quant.parse(quant)
    task = [Task.parse(t) for t in task] if isinstance(task, (list, tuple)) else Task.parse(task)
    info = inspect_tflite(tflite)
    audit(info, quant, io, model, allow_float=allow_float)
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise InputError(
            "{min_agreement} must be in [0, 1]; received {value}", params="min_agreement", value=min_agreement
        )
    kinds = task if isinstance(task, list) else [task]  # min_agreement holds each classifier output to it
    check_min_agreement(min_agreement, Task.CLASSIFICATION if Task.CLASSIFICATION in kinds else kinds[0])
    isolated = quant in ISOLATED  # prepared and run in a child: LiteRT may abort in either
    try:
        interp = load_interpreter(model_content=tflite, threads=threads, xnnpack=True, allocate=not isolated)
    except BoardError as exc:
        dead = None if sparse else dead_output(info, model)
        if dead:
            raise VerificationError(dead) from None
        reason = str(exc).replace("model bytes", "the converted model")
        raise VerificationError(f"{reason} -- {_PREPARE_FIXES['sparse' if sparse else 'default']}") from None
    if x is None and isolated:  # still prepared and run once, on zeros, in the child
        _outputs_in_child(tflite, _zeros(interp), interp, quant, threads)
    if x is None:
        return Verification(info)
    xs = fit(model, x, "verification data")
    idx = sample_indices(rows(xs), verify_samples, seed)
    xs = take(xs, idx)
    lite = _outputs_in_child(tflite, xs, interp, quant, threads) if isolated else predict_all(interp, xs)
    refs = model.predict(xs, batch_size=64, verbose=0)
    names = output_names(model)
    refs = refs if isinstance(refs, dict) else dict(zip(names, refs if len(names) > 1 else [refs]))
    if set(lite) != set(names):
        if len(names) > 1:
            raise VerificationError(
                f"the .tflite's outputs ({', '.join(sorted(lite))}) are not named as the model's "
                f"({', '.join(names)}): they cannot be matched to verify them"
            )
        lite = {names[0]: next(iter(lite.values()))}
    tasks = task if isinstance(task, list) else [task] * len(names)
    ys = [None if part is None else np.asarray(part)[idx] for part in split_outputs(y, names)]
    per = [
        _check_output(model, n, np.asarray(refs[n]), lite[n], t, ys[i], xs, min_agreement, quant)
        for i, (n, t) in enumerate(zip(names, tasks))
    ]
    if len(per) == 1:
        one = {k: v for k, v in per[0].items() if k != "name"}
        return Verification(info, verify_samples=rows(xs), **one)
    agreements = [p["agreement"] for p in per if p.get("agreement") is not None]
    snrs = [p["snr_db"] for p in per if p["snr_db"] is not None]
    return Verification(
        info,
        agreement=min(agreements) if agreements else None,
        snr_db=min(snrs) if snrs else None,
        cosine=min(p["cosine"] for p in per),
        verify_samples=rows(xs),
        task="several",
        outputs=per,
    )


def _check_output(model, name, ref, lite, task, ys, xs, min_agreement, quant) -> dict:
    """One output's figures (its task's, :func:`_top1` or :func:`quality`, and the output
    similarity); a classifier output below ``min_agreement`` is a :class:`VerificationError`."""
    similarity = _output_similarity(ref.reshape(len(ref), -1), lite.reshape(len(lite), -1))
    figures = {"name": name, "task": task.value, **similarity}
    if task is not Task.CLASSIFICATION:
        check_targets(task, model, ys, "validation_data", output=name)
        figures["metrics"] = {"keras": quality(task, ref, ys, xs), "tflite": quality(task, lite, ys, xs)}
        return figures
    figures.update(_top1(ref, lite, ys, np.shape(ys)))
    agreement = figures["agreement"]
    if min_agreement is not None and agreement < min_agreement:
        raise VerificationError(
            "{mode} model agrees with the Keras model on {agreement:.1%} of {samples} samples{where}, below the "
            "required {required:.1%} ({min_agreement}); calibrate with more representative data, keep sensitive "
            "layers in float ({keep_float='auto'}) or export as float32",
            params=("min_agreement", "keep_float"),
            mode=quant.value,
            agreement=agreement,
            samples=len(ref),
            where="" if len(output_names(model)) == 1 else f" (output {name})",
            required=min_agreement,
        )
    return figures
