"""Read a ``.tflite`` flatbuffer: its ops, tensor dtypes and where the bytes go.

Parses the file with the schema that ships with ai-edge-litert (no TensorFlow, no interpreter),
so it works on any file, including one that will not prepare under a delegate.
"""

from __future__ import annotations

import gzip
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Tuple, Union

import numpy as np

from edgekit.converters import flatbuffer as fb
from edgekit.core import limits
from edgekit.core.errors import InputError
from edgekit.core.results import Result, table

# Tensor types that integer-only kernels compute on. INT32 carries biases and shapes, INT64
# only shapes/indices, BOOL comparisons.
INTEGER_TYPES = frozenset({"INT8", "UINT8", "INT16", "INT32", "INT64", "BOOL", "INT4"})
# Ops that move data without computing on it in floating point when their tensors are integer.
QUANTIZE_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    dtype: str
    shape: Tuple[int, ...]
    bytes: int  # bytes of constant data in the file (0 for activations)
    quant_params_bytes: int  # bytes of scales and zero points in the file
    constant: bool
    scales: Tuple[float, ...] = field(default=(), repr=False)  # quantization scales (one per channel or one)


@dataclass(frozen=True)
class OpInfo:
    index: int
    op: str  # builtin name, or CUSTOM:<code> / FLEX:<op>
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    input_dtypes: Tuple[str, ...]
    output_dtypes: Tuple[str, ...]
    macs: int = 0  # multiply-accumulates of one inference (conv, depthwise, fully connected, matmul)

    @property
    def is_custom(self) -> bool:
        return self.op.startswith(("CUSTOM:", "FLEX:"))

    @property
    def computes_in_float(self) -> bool:
        """True when any input or output of the op is a non-integer tensor."""
        return any(d not in INTEGER_TYPES for d in self.input_dtypes + self.output_dtypes)


@dataclass(frozen=True)
class ModelInfo(Result):
    """What a ``.tflite`` file holds. ``size_bytes`` splits into weights (constant tensor data),
    quantization parameters (scales and zero points) and graph (everything else)."""

    size_bytes: int
    gzip_bytes: int
    weight_bytes: int
    quant_params_bytes: int
    params: int
    inputs: Tuple[dict, ...]
    outputs: Tuple[dict, ...]
    ops: Tuple[OpInfo, ...]
    tensors: Tuple[TensorInfo, ...] = field(repr=False)
    kernel_zeros: float = 0.0  # share of zeros in the conv/fully-connected weights (see kernel_zeros)

    @property
    def graph_bytes(self) -> int:
        return self.size_bytes - self.weight_bytes - self.quant_params_bytes

    @property
    def op_counts(self) -> Dict[str, int]:
        return dict(Counter(op.op for op in self.ops))

    @property
    def custom_ops(self) -> List[OpInfo]:
        return [op for op in self.ops if op.is_custom]

    @property
    def float_ops(self) -> List[OpInfo]:
        """Ops that compute on a floating-point tensor (QUANTIZE/DEQUANTIZE at the edges count:
        a fully integer model has none of them)."""
        return [op for op in self.ops if op.computes_in_float]

    @property
    def fully_integer(self) -> bool:
        """Every op between input and output computes on integer tensors, and none is custom/Flex."""
        return not self.float_ops and not self.custom_ops

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def dtypes(self) -> Dict[str, int]:
        return dict(Counter(t.dtype for t in self.tensors))

    def to_dict(self) -> dict:
        return {
            "size_bytes": self.size_bytes,
            "gzip_bytes": self.gzip_bytes,
            "weight_bytes": self.weight_bytes,
            "quant_params_bytes": self.quant_params_bytes,
            "graph_bytes": self.graph_bytes,
            "params": self.params,
            "macs": self.macs,
            "kernel_zeros": self.kernel_zeros,
            "fully_integer": self.fully_integer,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "op_counts": self.op_counts,
            "tensor_dtypes": self.dtypes,
            "float_ops": [f"{op.op}#{op.index}" for op in self.float_ops],
            "custom_ops": [op.op for op in self.custom_ops],
            "ops": [
                {
                    "index": op.index,
                    "op": op.op,
                    "input_dtypes": list(op.input_dtypes),
                    "output_dtypes": list(op.output_dtypes),
                    "macs": op.macs,
                }
                for op in self.ops
            ],
            "tensors": [
                {k: v for k, v in asdict(t).items() if k != "scales"} | {"shape": list(t.shape)} for t in self.tensors
            ],
        }

    def summary(self, tensors: bool = False) -> str:
        """Size breakdown, I/O, op table (with MACs), optionally every tensor."""
        lines = []
        kib = lambda n: f"{n / 1024:,.1f} KiB"  # noqa: E731
        pct = lambda n: f"{100.0 * n / max(self.size_bytes, 1):.1f}%"  # noqa: E731
        lines.append(
            f"size {kib(self.size_bytes)} (gzip {kib(self.gzip_bytes)}): weights {kib(self.weight_bytes)} "
            f"({pct(self.weight_bytes)}), quantization params {kib(self.quant_params_bytes)} "
            f"({pct(self.quant_params_bytes)}), graph {kib(self.graph_bytes)} ({pct(self.graph_bytes)})"
        )
        lines.append(
            f"params {self.params:,} ({self.size_bytes / max(self.params, 1):.2f} file bytes/param, "
            f"{self.weight_bytes / max(self.params, 1):.2f} weight bytes/param); {self.macs / 1e6:,.2f}M MACs; "
            f"kernel zeros {self.kernel_zeros:.1%}; fully integer: {'yes' if self.fully_integer else 'no'}"
        )
        for key in ("inputs", "outputs"):
            for t in getattr(self, key):
                lines.append(f"{key[:-1]:<6} {t['name']}: {t['dtype']} {t['shape']}")
        lines.append("")
        groups: Dict[Tuple[str, Tuple[str, ...], Tuple[str, ...]], List[int]] = {}
        for op in self.ops:
            g = groups.setdefault((op.op, op.input_dtypes, op.output_dtypes), [0, 0])
            g[0] += 1
            g[1] += op.macs
        rows = [
            [name, str(n), f"{macs:,}" if macs else "-", f"{','.join(ins)} -> {','.join(outs)}"]
            for (name, ins, outs), (n, macs) in sorted(groups.items(), key=lambda kv: (-kv[1][1], -kv[1][0]))
        ]
        lines.append(table(("op", "count", "MACs", "input dtypes -> output dtypes"), rows, align="lrrl"))
        if tensors:
            lines.append("")
            rows = [
                [
                    str(t.index),
                    t.dtype,
                    "x".join(map(str, t.shape)) or "scalar",
                    f"{t.bytes:,}",
                    f"{t.quant_params_bytes:,}",
                    t.name[:60],
                ]
                for t in self.tensors
            ]
            lines.append(table(("tensor", "dtype", "shape", "data bytes", "quant bytes", "name"), rows, align="rllrrl"))
        return "\n".join(lines)


def op_macs(op: str, in_shapes, out_shapes) -> int:
    """Multiply-accumulates of one op from its tensor shapes (batch included)."""
    if not in_shapes or not out_shapes:
        return 0
    out = int(np.prod(out_shapes[0])) if out_shapes[0] else 1
    if op == "CONV_2D" and len(in_shapes) > 1 and len(in_shapes[1]) == 4:
        _, kh, kw, cin = in_shapes[1]  # filter (cout, kh, kw, cin)
        return out * kh * kw * cin
    if op == "DEPTHWISE_CONV_2D" and len(in_shapes) > 1 and len(in_shapes[1]) == 4:
        _, kh, kw, _ = in_shapes[1]  # filter (1, kh, kw, cout)
        return out * kh * kw
    if op == "FULLY_CONNECTED" and len(in_shapes) > 1 and len(in_shapes[1]) == 2:
        return out * in_shapes[1][1]  # weights (units, inputs)
    if op == "TRANSPOSE_CONV" and len(in_shapes) > 2 and len(in_shapes[1]) == 4:
        cout, kh, kw, _ = in_shapes[1]  # inputs: output shape, filter (cout, kh, kw, cin), x
        return int(np.prod(in_shapes[2])) * kh * kw * cout
    if op == "BATCH_MATMUL" and len(in_shapes[0]) >= 2:
        return out * in_shapes[0][-1]
    return 0


def read_tflite(source: Union[str, os.PathLike, bytes]) -> bytes:
    """The bytes of a ``.tflite`` file, checked to be one (the ``TFL3`` identifier)."""
    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), "model bytes"
    else:
        path = os.fspath(source)
        if os.path.isdir(path):
            raise InputError(f"{path} is a directory, not a .tflite file")
        if not os.path.isfile(path):
            raise InputError(f"model file not found: {path}")
        with open(path, "rb") as f:
            data = f.read()
        label = path
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise InputError(f"{label} is not a .tflite model (no TFL3 flatbuffer identifier, {len(data)} bytes)")
    return data


def inspect_tflite(source: Union[str, os.PathLike, bytes]) -> ModelInfo:
    """Parse a ``.tflite`` file or its bytes into a :class:`ModelInfo`."""
    data = read_tflite(source)
    label = "model bytes" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    try:
        return _parse(data)
    except InputError:
        raise
    except _Corrupt as exc:
        raise InputError(f"{label} is a corrupt .tflite file: {exc}") from None
    except Exception as exc:  # the flatbuffer reader raises anything on a truncated file
        raise InputError(
            f"{label} is a corrupt or truncated .tflite file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})"
        ) from None


# Ops whose input 1 is the weight tensor (kernel or filter).
WEIGHT_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"})
_NUMPY_TYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "FLOAT32": np.float32, "FLOAT16": np.float16}


def kernel_zeros(source: Union[str, os.PathLike, bytes]) -> float:
    """The share of zeros among the constant weights of the file's conv and fully connected ops
    (input 1 of each op in :data:`WEIGHT_OPS`), read from the stored values: a quantized weight
    is zero when it equals its zero point. A sparse-encoded weight counts every value it does not
    store as zero (float ones reach their op through DENSIFY). Weights that reach their op through
    DEQUANTIZE (float16 files) are not counted."""
    data = read_tflite(source)
    schema = fb.schema()
    model = schema.Model.GetRootAsModel(data, 0)
    codes = fb.opcode_names(model)
    type_names = fb.enum_names(schema.TensorType)
    zeros = total = 0
    seen = set()
    for s in range(model.SubgraphsLength()):
        sub = model.Subgraphs(s)
        ops = [sub.Operators(o) for o in range(sub.OperatorsLength())]
        densified = {int(op.Outputs(0)): int(op.Inputs(0)) for op in ops if codes[op.OpcodeIndex()] == "DENSIFY"}
        for op in ops:
            if codes[op.OpcodeIndex()] not in WEIGHT_OPS or op.InputsLength() < 2:
                continue
            weight = int(op.Inputs(1))
            ten = sub.Tensors(densified.get(weight, weight))  # float sparse weights reach it through DENSIFY
            dtype = _NUMPY_TYPES.get(type_names.get(ten.Type(), ""))
            if dtype is None or ten.Buffer() <= 0 or ten.Buffer() in seen:
                continue
            values = model.Buffers(ten.Buffer()).DataAsNumpy()
            if not isinstance(values, np.ndarray) or values.size == 0:
                continue
            seen.add(ten.Buffer())
            values = values.view(dtype)
            size = int(np.prod(ten.ShapeAsNumpy()))
            q = ten.Quantization()
            zero_points = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else np.zeros(1, np.int64)
            zero = zero_points[0] if np.all(zero_points == zero_points[0]) else None
            if zero is None:  # per-channel zero points: along the quantized dimension
                shape = [1] * ten.ShapeLength()
                shape[q.QuantizedDimension()] = -1
                zero = zero_points.reshape(shape)
                values = values.reshape(tuple(ten.ShapeAsNumpy()))
            stored_zeros = int(np.count_nonzero(values == zero))
            zeros += size - values.size + stored_zeros  # values not stored (sparse encoding) are zero
            total += size
    return zeros / total if total else 0.0


class _Corrupt(ValueError):
    """A structural inconsistency found while parsing (reported as a corrupt file)."""


# Bits per element of the tensor types (schema TensorType values), to check buffer sizes.
_ITEM_BITS = {
    0: 32,
    1: 16,
    2: 32,
    3: 8,
    4: 64,
    6: 8,
    7: 16,
    8: 64,
    9: 8,
    10: 64,
    11: 128,
    12: 64,
    15: 32,
    16: 16,
    17: 4,
    18: 16,
}


def _buffer_size(buf, file_size: int, index: int) -> int:
    """Bytes of buffer ``index``, checked to lie inside the file."""
    n = buf.DataLength()
    if n:
        values = buf.DataAsNumpy()  # raises when the vector runs past the end of the file
        if len(values) != n:
            raise _Corrupt(f"buffer {index} runs past the end of the file")
        return int(n)
    offset, size = int(buf.Offset()), int(buf.Size())
    if offset > 1 or size > 1:  # >2 GB models keep data outside the flatbuffer, after it
        if offset < 0 or size < 0 or offset + size > file_size:
            raise _Corrupt(
                f"buffer {index} points at bytes {offset:,}..{offset + size:,}, past the end of the "
                f"{file_size:,}-byte file"
            )
        return size
    return 0


def _tensor(ten, index: int, buffer_sizes, seen_buffers: set, type_names) -> TensorInfo:
    """One tensor, checked against the file's buffers (a buffer shared by several tensors counts once)."""
    shape = tuple(int(d) for d in ten.ShapeAsNumpy()) if ten.ShapeLength() else ()
    buf = ten.Buffer()
    if any(d < 0 for d in shape) or not 0 <= buf < max(len(buffer_sizes), 1):
        raise _Corrupt(f"tensor {index} has shape {shape} and buffer {buf} (of {len(buffer_sizes)})")
    claimed = math.prod(shape) * max(_ITEM_BITS.get(ten.Type(), 8), 8) // 8 if shape else 0
    limit = limits.current().max_unpacked_bytes
    if claimed > limit:  # a tensor no interpreter could allocate: an input claiming 2^31 rows
        raise _Corrupt(
            f"tensor {index} ({(ten.Name() or b'').decode('utf-8', 'replace')}) claims shape {shape}, "
            f"{claimed:,} bytes, beyond the {limit >> 20:,} MiB one array may hold (EDGEKIT_MAX_UNPACKED_MB)"
        )
    if (
        buffer_sizes
        and buffer_sizes[buf]
        and shape
        and ten.Sparsity() is None
        and buffer_sizes[buf] < int(np.prod(shape)) * _ITEM_BITS.get(ten.Type(), 0) // 8
    ):
        raise _Corrupt(
            f"tensor {index} of shape {shape} needs more bytes than its buffer holds ({buffer_sizes[buf]:,})"
        )
    data_bytes = buffer_sizes[buf] if 0 < buf < len(buffer_sizes) and buf not in seen_buffers else 0
    if data_bytes:
        seen_buffers.add(buf)
    q = ten.Quantization()
    qbytes = 4 * (q.ScaleLength() + q.MinLength() + q.MaxLength()) + 8 * q.ZeroPointLength() if q is not None else 0
    return TensorInfo(
        index=index,
        name=(ten.Name() or b"").decode("utf-8", "replace"),
        dtype=type_names.get(ten.Type(), f"TYPE_{ten.Type()}"),
        shape=shape,
        bytes=data_bytes,
        quant_params_bytes=qbytes,
        constant=data_bytes > 0,
        scales=tuple(float(v) for v in q.ScaleAsNumpy()) if q is not None and q.ScaleLength() else (),
    )


def _op(op, o: int, index: int, offset: int, tensors, opcodes) -> OpInfo:
    """One operator, its tensor indices checked to exist."""
    n_tensors = len(tensors) - offset
    ins = tuple(int(i) for i in op.InputsAsNumpy()) if op.InputsLength() else ()
    outs = tuple(int(i) for i in op.OutputsAsNumpy()) if op.OutputsLength() else ()
    if (
        not 0 <= op.OpcodeIndex() < len(opcodes)
        or any(i < -1 or i >= n_tensors for i in ins)
        or any(i < 0 or i >= n_tensors for i in outs)
    ):
        raise _Corrupt(
            f"operator {o} names op code {op.OpcodeIndex()} (of {len(opcodes)}) or tensors outside 0..{n_tensors - 1}"
        )
    ins = tuple(i for i in ins if i >= 0)  # -1 marks an omitted optional input
    name = opcodes[op.OpcodeIndex()]
    return OpInfo(
        index=index,
        op=name,
        inputs=tuple(offset + i for i in ins),
        outputs=tuple(offset + i for i in outs),
        input_dtypes=tuple(tensors[offset + i].dtype for i in ins),
        output_dtypes=tuple(tensors[offset + i].dtype for i in outs),
        macs=op_macs(name, [tensors[offset + i].shape for i in ins], [tensors[offset + i].shape for i in outs]),
    )


def _io(sub, tensors) -> Dict[str, Tuple[dict, ...]]:
    """The main graph's inputs and outputs."""
    io = {}
    for key, getter, length in (
        ("inputs", sub.InputsAsNumpy, sub.InputsLength),
        ("outputs", sub.OutputsAsNumpy, sub.OutputsLength),
    ):
        idx = [int(i) for i in getter()] if length() else []
        if any(not 0 <= i < sub.TensorsLength() for i in idx):
            raise _Corrupt(f"the graph's {key} name tensors outside 0..{sub.TensorsLength() - 1}")
        io[key] = tuple(
            {"index": i, "name": tensors[i].name, "dtype": tensors[i].dtype, "shape": list(tensors[i].shape)}
            for i in idx
        )
    return io


def _parse(data: bytes) -> ModelInfo:
    schema = fb.schema()
    type_names = fb.enum_names(schema.TensorType)
    model = schema.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() < 1:
        raise InputError("the .tflite file has no subgraph")
    buffer_sizes = [_buffer_size(model.Buffers(b), len(data), b) for b in range(model.BuffersLength())]
    opcodes = fb.opcode_names(model)
    tensors: List[TensorInfo] = []
    ops: List[OpInfo] = []
    seen_buffers: set = set()
    io: Dict[str, Tuple[dict, ...]] = {}
    for s in range(model.SubgraphsLength()):
        sub = model.Subgraphs(s)
        offset = len(tensors)
        tensors += [
            _tensor(sub.Tensors(t), offset + t, buffer_sizes, seen_buffers, type_names)
            for t in range(sub.TensorsLength())
        ]
        ops += [_op(sub.Operators(o), o, len(ops) + o, offset, tensors, opcodes) for o in range(sub.OperatorsLength())]
        if s == 0:
            io = _io(sub, tensors)
    if sum(t.bytes for t in tensors) > len(data):
        raise _Corrupt(f"its tensors claim {sum(t.bytes for t in tensors):,} bytes of a {len(data):,}-byte file")
    return ModelInfo(
        size_bytes=len(data),
        gzip_bytes=len(gzip.compress(data, compresslevel=9, mtime=0)),
        weight_bytes=sum(t.bytes for t in tensors),
        quant_params_bytes=sum(t.quant_params_bytes for t in tensors),
        params=sum((int(np.prod(t.shape)) if t.shape else 1) for t in tensors if t.bytes),
        inputs=io.get("inputs", ()),
        outputs=io.get("outputs", ()),
        ops=tuple(ops),
        tensors=tuple(tensors),
        kernel_zeros=kernel_zeros(data),
    )
