"""One copy of a weight that several ops share, after conversion.

A tied language model reads its embedding matrix twice: a GATHER looks rows up, and the output
projection (a FULLY_CONNECTED) multiplies by it. In float the converter keeps one copy, but when it
quantizes (``dynamic``, ``int8``) it quantizes the matrix once per consumer: per tensor for the
GATHER (a looked-up row must keep the tensor's single scale) and per output channel for the
FULLY_CONNECTED, and the file holds the matrix twice.

:func:`share_weights` rewrites the flatbuffer so both ops read one tensor:

a per-channel int8 FULLY_CONNECTED weight that is, element for element, a quantization of the same
matrix as a per-tensor int8 GATHER table (they differ by at most half a step of each) is replaced
by that table, and an int32 bias of the FULLY_CONNECTED is requantized to the new weight scale. The
projection then uses one scale for the whole matrix instead of one per row, which the export's
verification measures like any other quantization error. (Byte-identical constants need no pass:
the converter already stores them once.)

Only the flatbuffer schema that ships with ai-edge-litert and ``flatbuffers`` are needed.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from edgekit.converters import flatbuffer as fb

_TFLITE_IDENTIFIER = b"TFL3"
_ALIGN = 16  # constant data starts on a 16-byte boundary, as the converter writes it


def _builder(size: int):
    import flatbuffers

    class AlignedBuilder(flatbuffers.Builder):
        """Byte vectors (tensor data) start 16-byte aligned, so kernels may read them in place."""

        def StartVector(self, elemSize, numElems, alignment):  # noqa: N802 - flatbuffers API
            if elemSize == 1 and numElems >= _ALIGN:
                alignment = _ALIGN
            return super().StartVector(elemSize, numElems, alignment)

    return AlignedBuilder(size)


def _op_names(model, graph) -> List[str]:
    """The builtin name of each operator of ``graph``."""
    codes = fb.opcode_names_t(model)
    return [codes[op.opcodeIndex] for op in graph.operators]


def _has_gather(tflite: bytes) -> bool:
    schema = fb.schema()
    model = schema.Model.GetRootAsModel(tflite, 0)
    return any(
        max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
        == schema.BuiltinOperator.GATHER
        for i in range(model.OperatorCodesLength())
    )


def _data(model, tensor) -> Optional[np.ndarray]:
    if tensor.buffer <= 0 or tensor.buffer >= len(model.buffers) or tensor.sparsity is not None:
        return None  # no constant data, or sparse-encoded data (left as it is)
    data = model.buffers[tensor.buffer].data
    return None if data is None or len(data) == 0 else np.asarray(data, dtype=np.uint8)


def _quant(tensor) -> Tuple[np.ndarray, np.ndarray, int]:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64), 0
    return np.asarray(q.scale, np.float32), np.asarray(q.zeroPoint, np.int64), int(q.quantizedDimension)


def _consumers(graph) -> Dict[int, List[Tuple[int, int]]]:
    """Tensor index -> [(op index, input position)]."""
    uses: Dict[int, List[Tuple[int, int]]] = {}
    for i, op in enumerate(graph.operators):
        for pos, t in enumerate(op.inputs if op.inputs is not None else []):
            if t >= 0:
                uses.setdefault(int(t), []).append((i, pos))
    return uses


def _dequantized(model, tensor) -> Optional[np.ndarray]:
    """An int8 constant as float (per tensor, or per channel along axis 0)."""
    schema = fb.schema()
    data = _data(model, tensor)
    scale, zero, axis = _quant(tensor)
    if data is None or tensor.type != schema.TensorType.INT8 or len(scale) == 0 or axis != 0:
        return None
    shape = tuple(int(d) for d in tensor.shape)
    if len(shape) != 2 or len(scale) not in (1, shape[0]):
        return None
    q = data.view(np.int8).reshape(shape).astype(np.float32)
    return (q - zero.reshape(-1, 1)) * scale.reshape(-1, 1)


def _requantize_bias(model, graph, op, new_scale: float, dry_run: bool = False) -> bool:
    """Rescale a FULLY_CONNECTED's int32 bias to input scale × ``new_scale``; False if it cannot
    (``dry_run``: only tell)."""
    schema = fb.schema()
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return True
    bias = graph.tensors[op.inputs[2]]
    data = _data(model, bias)
    if bias.type == schema.TensorType.FLOAT32:
        return True  # hybrid (dynamic-range) kernels keep a float bias
    in_scale, _, _ = _quant(graph.tensors[op.inputs[0]])
    old_scale, _, _ = _quant(bias)
    if bias.type != schema.TensorType.INT32 or data is None or len(in_scale) != 1 or len(old_scale) == 0:
        return False
    if dry_run:
        return True
    values = data.view(np.int32).astype(np.float64) * old_scale.astype(np.float64)
    target = float(in_scale[0]) * new_scale
    q = np.clip(np.round(values / target), -(2**31), 2**31 - 1).astype(np.int32)
    model.buffers[bias.buffer].data = q.view(np.uint8)
    bias.quantization.scale = np.asarray([target], np.float32)
    bias.quantization.zeroPoint = np.zeros(1, np.int64)
    bias.quantization.quantizedDimension = 0
    return True


def _merge_requantized(model, graph, uses, log) -> Dict[int, int]:
    """Per-channel FULLY_CONNECTED weights that re-quantize a per-tensor GATHER table."""
    op_names = _op_names(model, graph)
    tables = []
    for i, t in enumerate(graph.tensors):
        if i in uses and all(op_names[o] == "GATHER" and p == 0 for o, p in uses[i]):
            deq = _dequantized(model, t)
            if deq is not None and len(_quant(t)[0]) == 1:
                tables.append((i, deq))
    replace: Dict[int, int] = {}
    for i, t in enumerate(graph.tensors):
        fc = uses.get(i, [])
        if not tables or not fc or any(op_names[o] != "FULLY_CONNECTED" or p != 1 for o, p in fc):
            continue
        deq = _dequantized(model, t)
        if deq is None:
            continue
        scale = _quant(t)[0]
        for j, table in tables:
            table_scale = float(_quant(graph.tensors[j])[0][0])
            if table.shape != deq.shape:
                continue
            # Both round the same float matrix: at most half a step of each apart.
            tolerance = 0.5 * (table_scale + scale.reshape(-1, 1)) * (1 + 1e-4) + 1e-12
            if not np.all(np.abs(table - deq) <= tolerance):
                continue
            if not all(_requantize_bias(model, graph, graph.operators[o], table_scale, True) for o, _ in fc):
                continue
            for o, _ in fc:
                _requantize_bias(model, graph, graph.operators[o], table_scale)
            replace[i] = j
            log.append(
                {
                    "kind": "requantized per tensor",
                    "kept": _name(graph, j),
                    "dropped": _name(graph, i),
                    "shape": list(table.shape),
                    "bytes": int(len(_data(model, t))),
                }
            )
            break
    return replace


def _name(graph, i: int) -> str:
    name = graph.tensors[i].name
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _drop_unused(model, graph, dropped: set) -> Dict[int, int]:
    """Remove the dropped constant tensors and their data; renumber every tensor reference and
    return the old → new index map."""
    keep = [i for i in range(len(graph.tensors)) if i not in dropped]
    new_index = {old: new for new, old in enumerate(keep)}
    for i in dropped:
        model.buffers[graph.tensors[i].buffer].data = None

    def remap(seq):
        return None if seq is None else np.asarray([new_index[int(t)] if t >= 0 else -1 for t in seq], np.int32)

    for op in graph.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        if op.intermediates is not None and len(op.intermediates):
            op.intermediates = remap(op.intermediates)
    graph.inputs, graph.outputs = remap(graph.inputs), remap(graph.outputs)
    graph.tensors = [graph.tensors[i] for i in keep]
    return new_index


def share_weights(tflite: bytes) -> Tuple[bytes, List[dict]]:
    """``tflite`` with every weight that several ops read stored once, and what was merged
    (``kind``, ``kept``, ``dropped``, ``shape``, ``bytes``). Returns the input unchanged when
    there is nothing to share."""
    if not _has_gather(tflite):  # only a GATHER table can be a second copy of a matrix
        return tflite, []
    schema = fb.schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    log: List[dict] = []
    for g, graph in enumerate(model.subgraphs or []):
        uses = _consumers(graph)
        replace = _merge_requantized(model, graph, uses, log)
        if not replace:
            continue
        for op in graph.operators:
            if op.inputs is not None:
                op.inputs = np.asarray([replace.get(int(t), int(t)) for t in op.inputs], np.int32)
        still_used = _consumers(graph)
        dropped = {i for i in replace if i not in still_used}
        new_index = _drop_unused(model, graph, dropped)
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == g:
                for ref in list(sig.inputs or []) + list(sig.outputs or []):
                    ref.tensorIndex = new_index[ref.tensorIndex]
    if not log:
        return tflite, []
    builder = _builder(len(tflite) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_TFLITE_IDENTIFIER)
    return bytes(builder.Output()), log
