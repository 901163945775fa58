"""What a model will cost before it is trained: params, MACs and activation memory per layer.

MACs are multiply-accumulates of the layers that do them (convolutions, depthwise convolutions,
dense layers); element-wise layers count zero, as in the papers' figures (MobileNetV2 1.0/224:
300M). Peak activation memory walks the functional graph in execution order and adds the bytes of
the tensors alive at once, as an interpreter with an arena allocator does: a tensor is freed after
its last consumer ran, and BatchNormalization, activations and Dropout, which the converter fuses
into the preceding op, reuse their input's buffer.

The int8 size estimate adds what a full-integer ``.tflite`` stores per layer, as measured in the
files the converter writes: 1 byte per kernel weight; per output channel an int32 bias and a
float32 scale plus an int64 zero point for both the kernel and the bias (28 bytes, the reason
narrow layers shrink less than 4x); 12 bytes of quantization parameters per activation tensor;
about 200 bytes of graph (tensor and op tables, names) per tensor. BatchNormalization folds into
the convolution before it, so its parameters cost nothing. ``benchmarks/int8_size_estimate.py``
checks the estimate against real files.

The TFLM arena estimate (``arena_estimate_bytes``; ``edgekit mcu`` measures the real one) lays the
int8 activations out as TFLM's greedy memory planner does (:func:`planned_bytes`: on most models
the peak above, to the byte; more where the planner leaves holes), plus what TFLM keeps for the
model's lifetime, as its RecordingMicroAllocator reported it on those models: 24 bytes per tensor,
about 140 per op (its node and registration, its op data), 8 per output channel of a convolution
or dense op (a per-channel multiplier and shift) and about 1 KB besides.
While the ops are prepared a per-channel op's quantization parameters also take 8 bytes per channel
for a moment, in the space the activations use later: for a wide dense layer that, not the
activations, sets the arena.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgekit.core.errors import InputError
from edgekit.core.graph import calls, producer
from edgekit.core.results import Result, table

# Layers that become part of the previous op after conversion (or vanish at inference).
_IN_PLACE = {
    "BatchNormalization",
    "ReLU",
    "Activation",
    "Dropout",
    "LeakyReLU",
    "ELU",
    "SpatialDropout2D",
    "GaussianNoise",
    "ActivityRegularization",
    "InputLayer",
}


@dataclass(frozen=True)
class LayerProfile:
    name: str
    type: str
    params: int
    macs: int
    output_shape: Tuple[int, ...]
    output_bytes: int
    int8_bytes: int  # estimated bytes this layer adds to a full-integer .tflite


@dataclass(frozen=True)
class Profile(Result):
    """Per-layer costs and totals; ``dtype_bytes`` is the activation element size used (4 for
    float32, 1 for int8)."""

    name: str
    layers: Tuple[LayerProfile, ...]
    params: int
    macs: int
    peak_activation_bytes: int
    dtype_bytes: int
    int8_bytes: int  # estimated size of the full-integer .tflite
    arena_estimate_bytes: int = 0  # estimated TFLM tensor arena of the int8 model

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "params": self.params,
            "macs": self.macs,
            "peak_activation_bytes": self.peak_activation_bytes,
            "dtype_bytes": self.dtype_bytes,
            "int8_bytes_estimate": self.int8_bytes,
            "tflm_arena_estimate": self.arena_estimate_bytes,
            "layers": [asdict(l) | {"output_shape": list(l.output_shape)} for l in self.layers],
        }

    def summary(self) -> str:
        """Per layer: type, params, MACs, output shape and bytes; then the totals."""
        rows = [
            [l.name, l.type, f"{l.params:,}", f"{l.macs:,}", "x".join(map(str, l.output_shape)), f"{l.output_bytes:,}"]
            for l in self.layers
        ]
        text = table(("layer", "type", "params", "MACs", "output", "bytes"), rows, align="llrrrr")
        return (
            f"{text}\n\n{self.name}: {self.params:,} params, {self.macs / 1e6:,.1f}M MACs, "
            f"peak activation memory {self.peak_activation_bytes / 1024:,.1f} KiB "
            f"({self.dtype_bytes}-byte activations), int8 .tflite about "
            f"{self.int8_bytes / 1024:,.1f} KiB, TFLM arena about {self.arena_estimate_bytes / 1024:,.1f} KiB"
        )


def _shape(s) -> Tuple[int, ...]:
    return tuple(1 if d is None else int(d) for d in s[1:])


def _single(shape):
    """A layer's (first) shape: tf_keras gives a tuple or a list of tuples."""
    if isinstance(shape, list):
        return shape[0]
    return shape


def layer_macs(layer) -> int:
    """Multiply-accumulates of one call of ``layer`` at batch size 1."""
    kind = type(layer).__name__
    if kind in ("Conv2D", "Conv1D", "Conv3D"):
        out = _shape(_single(layer.output_shape))
        cin = _shape(_single(layer.input_shape))[-1]
        k = int(np.prod(layer.kernel_size))
        return int(np.prod(out[:-1])) * k * (cin // getattr(layer, "groups", 1)) * out[-1]
    if kind in ("DepthwiseConv2D", "DepthwiseConv1D"):
        out = _shape(_single(layer.output_shape))
        return int(np.prod(out)) * int(np.prod(layer.kernel_size))
    if kind in ("SeparableConv2D", "SeparableConv1D"):
        out = _shape(_single(layer.output_shape))
        cin = _shape(_single(layer.input_shape))[-1]
        spatial = int(np.prod(out[:-1]))
        depthwise = spatial * cin * layer.depth_multiplier * int(np.prod(layer.kernel_size))
        return depthwise + spatial * cin * layer.depth_multiplier * out[-1]
    if kind in ("Conv2DTranspose", "Conv1DTranspose"):
        inp = _shape(_single(layer.input_shape))
        cout = _shape(_single(layer.output_shape))[-1]
        return int(np.prod(inp)) * int(np.prod(layer.kernel_size)) * cout
    if kind == "Dense":
        inp = _shape(_single(layer.input_shape))
        return int(np.prod(inp)) * int(layer.units)
    if kind == "MultiHeadAttention":  # projections, scores, weighted values, output projection
        c = layer.get_config()
        node = calls(layer)[0]
        named = dict(zip(("query", "value", "key"), node.call_args), **node.call_kwargs)
        q, v = _shape(named["query"].shape), _shape(named["value"].shape)
        k = _shape(named["key"].shape) if named.get("key") is not None else v
        tq, tv = int(np.prod(q[:-1])), int(np.prod(v[:-1]))
        h, dk = int(c["num_heads"]), int(c["key_dim"])
        dv = int(c["value_dim"] or dk)
        out = _shape(_single(layer.output_shape))[-1]
        return h * (tq * q[-1] * dk + tv * k[-1] * dk + tv * v[-1] * dv + tq * tv * (dk + dv) + tq * dv * out)
    if kind == "TiedEmbedding":  # the call with attend=True is the output projection
        return sum(
            int(np.prod(_shape(layer.get_input_shape_at(i))[:-1])) * layer.input_dim * layer.output_dim
            for i in range(len(calls(layer)))
            if not layer.get_input_at(i).dtype.is_integer
        )
    return 0


_QUANT_PER_CHANNEL = 4 + 4 + 8 + 8 + 4  # bias int32; scale f32 + zero point i64, kernel and bias
_QUANT_PER_TENSOR = 4 + 8
_GRAPH_PER_TENSOR = 200
_GRAPH_FIXED = 600


def _kernels_and_channels(layer) -> Tuple[int, int, int]:
    """(kernel weights, output channels summed over the ops it becomes, ops) of a layer with
    weights that become TFLite kernels; (0, 0, ops) otherwise."""
    kind = type(layer).__name__
    if kind in ("Conv2D", "Conv1D", "Conv3D", "Conv2DTranspose", "Conv1DTranspose", "Dense"):
        return (
            int(np.prod(layer.kernel.shape)),
            int(layer.kernel.shape[-1] if kind != "Conv2DTranspose" else layer.kernel.shape[-2]),
            1,
        )
    if kind in ("DepthwiseConv2D", "DepthwiseConv1D"):
        k = layer.depthwise_kernel.shape
        return int(np.prod(k)), int(k[-2] * k[-1]), 1
    if kind in ("SeparableConv2D", "SeparableConv1D"):
        d, p = layer.depthwise_kernel.shape, layer.pointwise_kernel.shape
        return int(np.prod(d) + np.prod(p)), int(d[-2] * d[-1] + p[-1]), 2
    if kind in ("Embedding", "TiedEmbedding"):  # one per-tensor table, however many ops read it
        return int(layer.input_dim * layer.output_dim), 0, len(calls(layer))
    if kind in _IN_PLACE:
        return 0, 0, 0
    return 0, 0, 1


_TFLM_PER_TENSOR, _TFLM_PER_OP, _TFLM_PER_CHANNEL, _TFLM_FIXED, _TFLM_PREPARE = 24, 140, 8, 1000, 336
_UNFUSED_ACTIVATIONS = ("softmax", "sigmoid")  # their own ops after a Dense or Conv


def _tflm_persistent(layers, n_inputs: int, per_tensor=()) -> Tuple[int, int]:
    """(bytes TFLM keeps for the model's lifetime, largest transient bytes while preparing an op);
    the layers named in ``per_tensor`` run as per-tensor FULLY_CONNECTED ops: no per-channel arrays."""
    tensors, total, widest = n_inputs, _TFLM_FIXED, 0
    for l in layers:
        _, channels, ops = _kernels_and_channels(l)
        activation = getattr(getattr(l, "activation", None), "__name__", "")
        ops += activation in _UNFUSED_ACTIVATIONS
        tensors += ops + (2 * ops if channels else 0)
        channels = 0 if l.name in per_tensor else channels
        total += ops * _TFLM_PER_OP + channels * _TFLM_PER_CHANNEL
        widest = max(widest, channels)
    return total + tensors * _TFLM_PER_TENSOR, widest * _TFLM_PER_CHANNEL + _TFLM_PREPARE


def planned_bytes(buffers) -> int:
    """The arena TFLM's greedy memory planner lays ``buffers`` (bytes, first step, last step) out
    in: largest first, each at the lowest 16-byte-aligned offset free for its whole lifetime. It
    can exceed the peak of bytes alive at once (a hole too small for the next buffer stays empty):
    by a third on MLPerf Tiny's MobileNetV1 0.25 at 96x96."""
    placed, top = [], 0
    for size, first, last in sorted(buffers, key=lambda b: -b[0]):
        size = -(-int(size) // 16) * 16
        offset = 0
        for o, s in sorted((o, s) for o, s, f, l in placed if f <= last and first <= l):
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, first, last))
        top = max(top, offset + size)
    return top


def _int8_bytes(layer) -> int:
    kernel, channels, ops = _kernels_and_channels(layer)
    constants = 2 * ops if channels else 0
    return kernel + channels * _QUANT_PER_CHANNEL + ops * _QUANT_PER_TENSOR + (ops + constants) * _GRAPH_PER_TENSOR


def _producers(layer) -> List[str]:
    nodes = calls(layer)
    if not nodes:
        return []
    inbound = nodes[0].inbound_layers
    if not isinstance(inbound, (list, tuple)):
        inbound = [inbound]
    return [l.name for l in inbound]


def profile(model, dtype_bytes: int = 4, name: Optional[str] = None, per_tensor=()) -> Profile:
    """Profile a built tf_keras functional or Sequential model; ``per_tensor``: the names of layers
    whose int8 weights are per tensor (``export(target='mcu')`` chooses them), for the arena estimate."""
    from edgekit.core.bridge import from_keras3, is_keras3_model

    if is_keras3_model(model):
        model = from_keras3(model)
    if dtype_bytes not in (1, 2, 4):
        raise InputError("{dtype_bytes} must be 1, 2 or 4; received {value}", params="dtype_bytes", value=dtype_bytes)
    layers = list(model.layers)
    # a Sequential model does not list its InputLayer among its layers: the graph still starts there
    layers = [producer(t) for t in model.inputs if producer(t) not in layers] + layers
    producers: Dict[str, List[str]] = {l.name: _producers(l) for l in layers}

    # Buffers: an in-place layer's output is its input's buffer.
    buffer_of: Dict[str, str] = {}
    out_bytes: Dict[str, int] = {}
    profiles = []
    for l in layers:
        shape = _shape(_single(l.get_output_shape_at(len(calls(l)) - 1)))  # a shared layer: its last call
        nbytes = int(np.prod(shape)) * dtype_bytes
        out_bytes[l.name] = nbytes
        kind = type(l).__name__
        srcs = producers[l.name]
        if kind in _IN_PLACE and len(srcs) == 1 and kind != "InputLayer":
            buffer_of[l.name] = buffer_of[srcs[0]]
        else:
            buffer_of[l.name] = l.name
        profiles.append(LayerProfile(l.name, kind, int(l.count_params()), layer_macs(l), shape, nbytes, _int8_bytes(l)))

    # Last step at which each buffer is read; model outputs stay alive to the end.
    last_use: Dict[str, int] = {}
    for step, l in enumerate(layers):
        last_use.setdefault(buffer_of[l.name], step)
        for src in producers[l.name]:
            last_use[buffer_of[src]] = max(last_use.get(buffer_of[src], step), step)
    for out in model.outputs:
        last_use[buffer_of[producer(out).name]] = len(layers)

    live: Dict[str, int] = {}
    lifetimes: Dict[str, list] = {}  # buffer → [bytes, first step, last step]
    live_bytes = peak = 0
    for step, l in enumerate(layers):
        buf = buffer_of[l.name]
        if buf not in live and buf not in lifetimes:
            lifetimes[buf] = [out_bytes[l.name] // dtype_bytes, step, last_use.get(buf, step)]
        if buf not in live:
            live[buf] = out_bytes[l.name]
            live_bytes += live[buf]
        peak = max(peak, live_bytes)
        for b in [b for b in live if last_use.get(b, step) <= step]:
            live_bytes -= live.pop(b)

    persistent, preparing = _tflm_persistent(layers, len(model.inputs), set(per_tensor))
    return Profile(
        name=name or model.name,
        layers=tuple(profiles),
        params=int(model.count_params()),
        macs=int(sum(p.macs for p in profiles)),
        peak_activation_bytes=int(peak),
        dtype_bytes=dtype_bytes,
        int8_bytes=_GRAPH_FIXED
        + sum(p.int8_bytes for p in profiles)
        + len(model.inputs) * (_QUANT_PER_TENSOR + _GRAPH_PER_TENSOR),
        arena_estimate_bytes=int(persistent + max(planned_bytes(lifetimes.values()), preparing)),
    )
