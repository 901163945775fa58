"""The least RAM on a microcontroller within an accuracy bound: quantization granularity per layer.

Measured with TFLM's interpreter (tflite-micro 0.dev20261023, the MLPerf Tiny presets): for every
CONV_2D and DEPTHWISE_CONV_2D TFLM keeps two int32 arrays per output channel (the requantization
multiplier and shift) in the persistent part of the arena whatever the weights' granularity — the
convolutional presets exported ``--per-tensor`` need 96 B less, their Dense layer's arrays — while a
FULLY_CONNECTED keeps them only when its weights are per channel. So granularity buys 8 bytes per
output channel of each FULLY_CONNECTED and of each pointwise convolution (1×1, stride 1, one group),
once that runs as the FULLY_CONNECTED it is on each pixel (``keep_num_dims``: the same input, output
and arithmetic). Depthwise and other convolutions keep their per-channel weights: per tensor they
cost the same RAM, and depthwise kernels lose accuracy.

:func:`least_ram` makes those ops per tensor where the task metric on the user's data stays within
the bound (:func:`within`): all at once when that holds, else one at a time, the largest saving
first. The int8 weights are requantized from the per-channel file to the largest channel scale, the
int32 bias to the new scale; the export then verifies the file as any other, and TFLM measures it.

Then the activations: :func:`with_offline_plan` writes a memory plan that TFLM honours
(``OfflineMemoryAllocation``) when it is smaller than TFLM's greedy one and TFLM's arena shrinks.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.converters import flatbuffer as fb
from edgekit.converters.share import (
    _TFLITE_IDENTIFIER,
    _builder,
    _consumers,
    _data,
    _op_names,
    _quant,
    _requantize_bias,
)

BYTES_PER_CHANNEL = 8  # TFLM: an int32 multiplier and an int32 shift per output channel
MAX_ACCURACY_DROP = 0.005  # half a point of accuracy (or of agreement with the Keras model)
MAX_ERROR_RISE = 0.01  # 1% relative, of a mean absolute error


@dataclass(frozen=True)
class Choice:
    """One layer's granularity, as measured: ``metric`` is the task metric with this layer per
    tensor (and the choices kept before it), ``kept`` whether it stayed within the bound."""

    layer: str
    op: str  # FULLY_CONNECTED, or CONV_2D 1x1 (run as a FULLY_CONNECTED when per tensor)
    channels: int
    saved_bytes: int  # TFLM's persistent arena, when per tensor
    metric: Optional[float]
    kept: bool
    reason: str = ""  # why it stayed per channel: over the metric's bound, or a larger file

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _parse(tflite: bytes):
    return fb.schema().ModelT.InitFromPackedBuf(bytearray(tflite), 0)


def _pack(model, size: int) -> bytes:
    builder = _builder(size + 4096)
    builder.Finish(model.Pack(builder), file_identifier=_TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def candidates(tflite: bytes) -> List[Tuple[int, str, int, str]]:
    """(op index, op, output channels, output tensor name) of each op in the main graph whose int8
    weights are per channel and which TFLM runs without per-channel arrays once per tensor."""
    schema = fb.schema()
    model = _parse(tflite)
    graph = model.subgraphs[0]
    names = _op_names(model, graph)
    readers = Counter(t.buffer for g in model.subgraphs for t in g.tensors if t.buffer > 0)  # deduplicated data
    uses = _consumers(graph)
    found = []
    for i, op in enumerate(graph.operators):
        if names[i] not in ("FULLY_CONNECTED", "CONV_2D") or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        w = graph.tensors[op.inputs[1]]
        bias = graph.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        shared = readers[w.buffer] > 1 or (bias is not None and readers[bias.buffer] > 1)
        if len(uses.get(int(op.inputs[1]), [])) > 1 or shared:
            continue  # a weight or bias another op reads too: edited in place, it would change that op
        int8 = graph.tensors[op.inputs[0]].type == schema.TensorType.INT8
        if not int8 or (bias is not None and bias.type != schema.TensorType.INT32):
            continue  # int16 activations (16x8: an int64 bias), or a hybrid op
        if w.type != schema.TensorType.INT8 or len(_quant(w)[0]) <= 1 or _data(model, w) is None:
            continue
        shape = [int(d) for d in w.shape]
        kind = names[i]
        if kind == "CONV_2D":
            o = op.builtinOptions
            if shape[1:3] != [1, 1] or (o.strideH, o.strideW) != (1, 1):
                continue
            if int(graph.tensors[op.inputs[0]].shape[-1]) != shape[-1]:  # a grouped convolution
                continue
            kind = "CONV_2D 1x1"
        out = graph.tensors[op.outputs[0]].name
        found.append((i, kind, shape[0], out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)))
    return found


def _fc_code(model) -> int:
    """The operator code of a FULLY_CONNECTED that may keep its input's dimensions (version 5+)."""
    schema = fb.schema()
    fc = schema.BuiltinOperator.FULLY_CONNECTED
    for k, c in enumerate(model.operatorCodes):
        if max(c.builtinCode, c.deprecatedBuiltinCode) == fc and c.version >= 5:
            return k
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = fc, fc, 5
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _to_per_tensor(model, graph, i: int) -> None:
    schema = fb.schema()
    op = graph.operators[i]
    w = graph.tensors[op.inputs[1]]
    scale = _quant(w)[0].astype(np.float64)
    shape = [int(d) for d in w.shape]
    q = _data(model, w).view(np.int8).reshape(shape[0], -1).astype(np.float64)
    new = float(scale.max())
    q = np.clip(np.round(q * scale.reshape(-1, 1) / new), -127, 127).astype(np.int8)
    _requantize_bias(model, graph, op, new)
    model.buffers[w.buffer].data = q.reshape(-1).view(np.uint8)
    w.quantization.scale = np.asarray([new], np.float32)
    w.quantization.zeroPoint = np.zeros(1, np.int64)
    w.quantization.quantizedDimension = 0
    if isinstance(op.builtinOptions, schema.Conv2DOptionsT):  # a pointwise convolution: a FULLY_CONNECTED
        options = schema.FullyConnectedOptionsT()
        options.fusedActivationFunction = op.builtinOptions.fusedActivationFunction
        options.keepNumDims = True
        op.opcodeIndex = _fc_code(model)
        op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.FullyConnectedOptions, options
        w.shape = np.asarray([shape[0], shape[-1]], np.int32)


def per_tensor(tflite: bytes, ops: Sequence[int]) -> bytes:
    """``tflite`` with the ops at ``ops`` (indices of :func:`candidates`) per tensor."""
    if not ops:
        return tflite
    model = _parse(tflite)
    graph = model.subgraphs[0]
    for i in ops:
        if not _requantize_bias(model, graph, graph.operators[i], 1.0, dry_run=True):
            raise ValueError(f"op {i} has a bias that cannot be requantized")
        _to_per_tensor(model, graph, i)
    return _pack(model, len(tflite))


def _figure(tflite: bytes, x, y, task) -> float:
    """The task's headline figure (:func:`edgekit.core.task.score`) of the file under LiteRT."""
    from edgekit.core.task import quality, score
    from edgekit.device.board.harness import load_interpreter, predict_all

    out = next(iter(predict_all(load_interpreter(model_content=tflite, threads=1), x).values()))
    return score(task, quality(task, out, y, x))


def within(task, value: float, baseline: float) -> bool:
    """Accuracy at most :data:`MAX_ACCURACY_DROP` below the baseline's; an error (MAE, a
    reconstruction's mean squared error) at most :data:`MAX_ERROR_RISE` above it, relative."""
    from edgekit.core.task import Task

    if task is Task.CLASSIFICATION:
        return value >= baseline - MAX_ACCURACY_DROP - 1e-12
    return value <= baseline * (1 + MAX_ERROR_RISE) + 1e-12


def least_ram(tflite: bytes, x, y, task, name: Callable[[str], str] = str):
    """(the file with every candidate op per tensor that keeps the ``task``'s metric on ``(x, y)``
    within the bound of the per-channel file's, the choice made for each, the per-channel file's
    metric, the returned file's). ``y``: class ids or targets (a reconstruction compares with ``x``);
    ``name`` turns an op's output tensor into a layer's name."""
    found = candidates(tflite)
    if not found or x is None:
        return tflite, [], None, None
    baseline = _figure(tflite, x, y, task)

    def choice(entry, metric, why):
        _, kind, channels, tensor = entry
        return Choice(name(tensor), kind, channels, channels * BYTES_PER_CHANNEL, metric, not why, why)

    def refusal(trial: bytes, metric: float) -> str:
        if not within(task, metric, baseline):
            return "over the bound"
        return "the file would grow" if len(trial) > len(tflite) else ""  # flash never grows

    every = per_tensor(tflite, [e[0] for e in found])
    metric = _figure(every, x, y, task)
    if not refusal(every, metric):
        return every, [choice(e, metric, "") for e in found], baseline, metric
    kept: List[int] = []
    choices = []
    best, final = tflite, baseline
    for entry in sorted(found, key=lambda e: -e[2]):
        trial = per_tensor(tflite, kept + [entry[0]])
        metric = _figure(trial, x, y, task)
        why = refusal(trial, metric)
        if not why:
            kept.append(entry[0])
            best, final = trial, metric
        choices.append(choice(entry, metric, why))
    return best, choices, baseline, final


MAX_SAMPLES = 1000  # of the verification data, for each trial's metric


def _labels(y, task):
    """Labels as the metric reads them: class ids (one-hot rows decoded), or targets as given."""
    from edgekit.core.task import Task
    from edgekit.device.board.harness import one_hot_rows

    if y is None:
        return None
    y = np.asarray(y)[:MAX_SAMPLES]
    return y.argmax(axis=1) if task is Task.CLASSIFICATION and one_hot_rows(y) else y


def _chosen(tflite: bytes, x, y, task, name: Callable[[str], str] = str) -> Tuple[bytes, Optional[dict]]:
    from edgekit.core.task import Task

    metric = {Task.CLASSIFICATION: "accuracy", Task.REGRESSION: "mae", Task.RECONSTRUCTION: "error"}[task]
    out, choices, baseline, final = least_ram(tflite, x, y, task, name)
    if baseline is None:
        return tflite, None
    return out, {
        "metric": metric,
        "per_channel": baseline,
        "per_tensor": final,
        "choices": [c.to_dict() for c in choices],
        "size_per_channel": len(tflite),
        "baseline": tflite,
    }


def fit_ram(model, tflite: bytes, x, y, task) -> Tuple[bytes, Optional[dict]]:
    """``target='mcu'``'s step after conversion: :func:`least_ram` on up to :data:`MAX_SAMPLES` of the
    verification data against its labels (else the Keras model's outputs: its classes, or its
    values), and what it chose; None when nothing could be chosen (no candidate, no data, several
    inputs or outputs)."""
    from edgekit.converters.convert import layer_of_tensor
    from edgekit.core.task import Task

    if x is None or isinstance(x, dict) or isinstance(task, (list, tuple)) or not candidates(tflite):
        return tflite, None
    x, y = x[:MAX_SAMPLES], _labels(y, task)
    if y is None and task is not Task.RECONSTRUCTION:
        out = np.asarray(model.predict(x, verbose=0))
        y = out.argmax(axis=-1) if task is Task.CLASSIFICATION and out.shape[-1] > 1 else out
        y = (out[..., 0] > 0.5).astype(np.int64) if task is Task.CLASSIFICATION and out.shape[-1] == 1 else y
    keras_model = model if hasattr(model, "layers") else None
    return _chosen(tflite, x, y, task, name=lambda t: layer_of_tensor(t, keras_model))


def fit_file(tflite: bytes, x, y) -> Tuple[bytes, Optional[dict]]:
    """``edgekit mcu --fit``: :func:`least_ram` of a .tflite file on ``x``: an autoencoder (outputs
    shaped like its inputs) against its input, else a classifier or regression model against the
    labels ``y`` (real values: regression), or without labels a softmax against its own classes."""
    from edgekit.converters.convert import layer_of_tensor
    from edgekit.core.errors import InputError
    from edgekit.core.task import Task, predicted_classes
    from edgekit.device.board.harness import load_interpreter, one_hot_rows, predict_all, real_valued

    if isinstance(x, dict) or isinstance(y, dict):
        raise InputError("--fit measures models with one input and one output; this data names several")
    if not candidates(tflite):
        return tflite, None
    x = x[:MAX_SAMPLES]
    outs = predict_all(load_interpreter(model_content=tflite, threads=1), x)
    if len(outs) != 1:
        raise InputError(f"--fit measures models with one output; this one has {len(outs)}")
    out = next(iter(outs.values()))
    if out.size == np.size(x):
        task = Task.RECONSTRUCTION
    elif y is not None:  # class ids a classifier's outputs can name, else regression targets
        ids, n = np.asarray(y), out.shape[-1]
        ids = ids.argmax(axis=1) if ids.ndim == 2 and ids.shape[1] == n > 1 else ids
        named = not real_valued(ids) and ids.min() >= 0 and ids.max() < max(n, 2)
        task = Task.CLASSIFICATION if named else Task.REGRESSION
    elif one_hot_rows(out.reshape(len(out), -1)):  # a softmax: its own classes are the reference
        task, y = Task.CLASSIFICATION, predicted_classes(out)
    else:
        raise InputError("--fit needs labels (y) in --data for this model: without them only a softmax's classes serve")
    return _chosen(tflite, x, _labels(y, task), task, name=layer_of_tensor)


def with_choices(rep, ram: Optional[dict], baseline_arena: Callable[[bytes], int]):
    """An MCU report with what the choices bought: the per-channel file's arena, measured by
    ``baseline_arena`` when any layer went per tensor."""
    if ram is None:
        return rep
    kept = [c["layer"] for c in ram["choices"] if c["kept"]]
    before = baseline_arena(ram["baseline"]) if kept else rep.arena_bytes
    rest = {k: v for k, v in ram.items() if k != "baseline"}
    return dataclasses.replace(rep, least_ram=dict(rest, arena_per_channel=before, per_tensor_layers=kept))


def mcu_check(model, tflite: bytes, o, eval_x, eval_y, task, path, ram: Optional[dict] = None):
    """The microcontroller step of ``target='mcu'``: ``(tflite, MCUReport)``, the file with an offline
    memory plan when that shrinks TFLM's arena (:func:`with_offline_plan`); ``(tflite, None)`` for
    other targets. An op TFLM lacks, or a model too big for ``board`` — named with the layer where
    its activations peak — fails the export before anything is written. ``task``: the first output's
    (its labels are compared for a classifier); ``ram``: what :func:`fit_ram` chose, measured against
    the per-channel file's arena."""
    from edgekit.converters.mcu import _estimate, mcu
    from edgekit.core.errors import VerificationError
    from edgekit.core.savedmodel import is_savedmodel_graph
    from edgekit.core.task import Task

    if o.target != "mcu":
        return tflite, None
    eval_y = eval_y if task is Task.CLASSIFICATION else None
    name = os.path.splitext(os.path.basename(os.fspath(path)))[0] if path is not None else "model"
    keras_model = None if is_savedmodel_graph(model) else model  # the estimate profiles Keras layers

    def measure(candidate: bytes):
        return mcu(candidate, board=o.board, validation_data=(eval_x, eval_y), keras_model=keras_model, name=name)

    rep = with_choices(measure(tflite), ram, lambda per_channel: mcu(per_channel, name=name).arena_bytes)
    tflite, rep = with_offline_plan(tflite, rep, measure) if o.least_ram else (tflite, rep)
    per_tensor = (rep.least_ram or {}).get("per_tensor_layers")
    if per_tensor:
        rep = dataclasses.replace(rep, estimate=_estimate(keras_model, rep.arena_bytes, per_tensor))
    if rep.fits is False:
        k, tensor, live = peak(tflite)
        from edgekit.converters.convert import layer_of_tensor

        raise VerificationError(
            f"the int8 model does not fit {rep.board_label}: it needs {rep.shortfall()} (arena "
            f"{rep.arena_bytes:,} B, flash {rep.flash_bytes:,} B); its activations peak at layer "
            f"'{layer_of_tensor(tensor, keras_model)}' ({live:,} B live), the rest of the arena is TFLM's "
            f"per-model state ({rep.allocations.get('tail', 0):,} B); nothing was written"
        )
    return tflite, dataclasses.replace(rep, model=name)


def describe(r: dict, arena: int) -> list:
    """A report's ``least_ram`` as text: a summary line, then one line per layer considered, then
    the offline memory plan."""
    lines = []
    if r.get("choices"):
        kept = [c for c in r["choices"] if c["kept"]]
        lines.append(
            f"per tensor: {len(kept)} of {len(r['choices'])} layer(s); the per-channel file's arena "
            f"{r['arena_per_channel']:,} B, {r['metric']} {r['per_channel']:.4g} -> {r['per_tensor']:.4g}"
        )
        for c in r["choices"]:
            verdict = "per tensor, saves" if c["kept"] else f"kept per channel ({c.get('reason')}), would save"
            lines.append(
                f"  {c['layer']} ({c['op']}, {c['channels']} channels): {r['metric']} {c['metric']:.4g}, "
                f"{verdict} {c['saved_bytes']:,} B"
            )
    plan = r.get("offline_plan")
    if plan:
        lines.append(
            f"offline memory plan: activations {plan['head_before']:,} B (TFLM's planner) -> {plan['head']:,} B, "
            f"arena {plan['arena_before']:,} -> {arena:,} B"
        )
    return lines


def _lifetimes(info) -> Dict[int, Tuple[int, int, int]]:
    """Each activation tensor of the main graph (inputs, outputs and what ops compute): (bytes, the
    first op it is alive in, the last), an input alive from the first op, an output to the end."""
    size = {t.index: int(np.prod(t.shape or (1,))) * _itemsize(t.dtype) for t in info.tensors if not t.constant}
    first, last = {}, {}
    for t in (d["index"] for d in info.inputs):
        first[t] = last[t] = 0
    for k, op in enumerate(info.ops):
        for t in op.inputs:
            if t in size:
                last[t] = k
        for t in op.outputs:
            first.setdefault(t, k)
            last.setdefault(t, k)
    for t in (d["index"] for d in info.outputs):
        last[t] = len(info.ops)
    return {t: (size[t], first[t], max(first[t], last[t])) for t in first if t in size}


def peak(tflite: bytes) -> Tuple[int, str, int]:
    """(op index, its output tensor's name, bytes) of the op with the most activation bytes live
    while it runs (its inputs, its outputs and every tensor still to be read): where the arena's
    planned part peaks, a lower bound of it."""
    from edgekit.converters.inspection import inspect_tflite

    info = inspect_tflite(tflite)
    bufs = _lifetimes(info)
    live = [sum(s for s, f, l in bufs.values() if f <= k <= l) for k in range(len(info.ops))]
    k = int(np.argmax(live)) if live else 0
    out = info.ops[k].outputs[0] if info.ops else 0
    return k, next((t.name for t in info.tensors if t.index == out), "?"), int(max(live, default=0))


def _first_fit(bufs: dict, order: list) -> Tuple[Dict[int, int], int]:
    """Each buffer in ``order`` at the lowest 16-byte-aligned offset free for its whole lifetime."""
    placed: Dict[int, int] = {}
    for t in order:
        size, first, last = bufs[t]
        busy = sorted((placed[u], placed[u] + bufs[u][0]) for u in placed if bufs[u][1] <= last and first <= bufs[u][2])
        offset = 0
        for start, end in busy:
            if offset + size <= start:
                break
            offset = max(offset, end)
        placed[t] = offset
    return placed, max((placed[t] + bufs[t][0] for t in placed), default=0)


def offline_plan(tflite: bytes) -> Tuple[bytes, Optional[int]]:
    """The file with an offline memory plan — TFLM's ``OfflineMemoryAllocation`` metadata: an arena
    offset per tensor, -1 for what TFLM plans itself — and the bytes it plans: the best first-fit
    placement of the activations in order of size (TFLM's own order), of first use, of lifetime and
    of size × lifetime. On a chain of layers first use alternates buffers at the two ends of the
    arena and meets the lower bound of :func:`peak`. ``(tflite, None)`` for a file of several
    subgraphs or with non-numeric tensors."""
    from edgekit.converters.inspection import inspect_tflite

    info = inspect_tflite(tflite)
    if fb.schema().Model.GetRootAsModel(tflite, 0).SubgraphsLength() != 1:
        return tflite, None  # TFLM indexes offsets per subgraph; control flow is left to its planner
    try:
        bufs = {t: (-(-s // 16) * 16, f, l) for t, (s, f, l) in _lifetimes(info).items()}
    except TypeError:  # a tensor of no numeric type (a resource, a string)
        return tflite, None
    orders = [
        sorted(bufs, key=lambda t: -bufs[t][0]),
        sorted(bufs, key=lambda t: (bufs[t][1], -bufs[t][0])),
        sorted(bufs, key=lambda t: (bufs[t][1] - bufs[t][2], -bufs[t][0])),
        sorted(bufs, key=lambda t: -bufs[t][0] * (bufs[t][2] - bufs[t][1] + 1)),
    ]
    offsets, planned = min((_first_fit(bufs, order) for order in orders), key=lambda p: p[1])
    schema = fb.schema()
    model = _parse(tflite)
    n = sum(len(g.tensors) for g in model.subgraphs)
    table = np.full(3 + n, -1, np.int32)
    table[:3] = (1, len(model.subgraphs), n)  # version, subgraphs, tensors; then subgraph 0's first
    for t, offset in offsets.items():
        table[3 + t] = offset
    buffer = schema.BufferT()
    buffer.data = table.view(np.uint8)
    model.buffers.append(buffer)
    meta = schema.MetadataT()
    meta.name, meta.buffer = "OfflineMemoryAllocation", len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != b"OfflineMemoryAllocation"] + [meta]
    return _pack(model, len(tflite)), planned


def with_offline_plan(tflite: bytes, rep, measure: Callable[[bytes], object]):
    """``(tflite, rep)``, or the file with :func:`offline_plan` and its report (``measure``: TFLM's
    report of a file) when its plan is smaller than TFLM's planned part and TFLM's arena shrinks."""
    head = (rep.allocations or {}).get("head")
    if head is None:
        return tflite, rep
    planned_file, planned = offline_plan(tflite)
    if planned is None or planned >= head:
        return tflite, rep
    planned_rep = measure(planned_file)
    if planned_rep.arena_bytes >= rep.arena_bytes:
        return tflite, rep
    plan = {"head_before": head, "arena_before": rep.arena_bytes, "head": planned_rep.allocations.get("head")}
    ram = dict(rep.least_ram or {}, offline_plan=plan)
    return planned_file, dataclasses.replace(planned_rep, least_ram=ram, model=rep.model)


def _itemsize(dtype: str) -> int:
    return int(np.dtype({"bool": "bool"}.get(dtype, dtype.lower())).itemsize)
