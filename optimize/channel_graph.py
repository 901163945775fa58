"""The channel graph of a functional tf_keras model: which channels must be removed together
(dependency groups), how important each is, and the rebuild without them. See
:mod:`edgekit.optimize.channels` for what channel pruning does with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgekit.core.compat import keras, tf
from edgekit.core.errors import InputError
from edgekit.core.graph import calls, fresh_inputs, node_call_args, nodes_in_order, producer
from edgekit.optimize.configs import selects

L = keras.layers
# Layers that compute each output channel from the same input channel alone.
_CHANNELWISE = (
    L.BatchNormalization,
    L.ReLU,
    L.LeakyReLU,
    L.ELU,
    L.ThresholdedReLU,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
    L.Cropping1D,
    L.Cropping2D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.PReLU,
)
_MERGE = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)


@dataclass
class ChannelPlan:
    """What the graph allows: channel ids of every tensor, slots, groups and barriers."""

    ids: Dict[int, np.ndarray]  # id(tensor) -> channel id per channel of its last axis
    parent: List[int]
    protected: set
    sources: List[Tuple[Any, np.ndarray]]  # (layer, ids of its output channels)
    barriers: List[str]
    blocks: List[Tuple[Any, int]]  # (Add layer, index of its shortcut input)
    heads: Dict[str, np.ndarray] = field(default_factory=dict)  # attention layer name -> an id per head

    def root(self, i: int) -> int:
        return _find(self.parent, i)


def _find(parent: List[int], i: int) -> int:
    """Union-find root of channel id ``i`` (with path halving)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


class _Ids:
    def __init__(self):
        self.parent: List[int] = []

    def fresh(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n)

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = _find(self.parent, x), _find(self.parent, y)
            if rx != ry:
                self.parent[ry] = rx


def _inputs(layer) -> list:
    """Every tensor ``layer``'s (one) call reads: its inputs, and for a TensorFlow op layer
    (``x * y``) the tensors among its other arguments too."""
    return list(calls(layer)[0].keras_inputs)


def channels_of(t) -> int:
    dim = t.shape[-1]
    if dim is None:
        raise InputError(f"tensor {t.name} has an unknown channel count; build the model with a fixed input shape")
    return int(dim)


def is_conv(layer) -> bool:
    """A plain convolution (exact class: subclasses such as transposed convs compute otherwise)."""
    return type(layer) in (L.Conv1D, L.Conv2D, L.Conv3D) and layer.groups == 1 and layer.data_format == "channels_last"


def _softmax(layer) -> bool:
    return isinstance(layer, L.Softmax) or getattr(getattr(layer, "activation", None), "__name__", "") == "softmax"


def plan(model, skip: Sequence = ()) -> ChannelPlan:
    """Trace ``model``'s functional graph into channel ids (see the module doc)."""
    if not getattr(model, "_is_graph_network", False):
        raise InputError(
            "channel_prune needs a functional or Sequential tf_keras model; rebuild a subclassed "
            "model with the functional API"
        )
    reg = _Ids()
    ids: Dict[int, np.ndarray] = {}
    protected: set = set()
    sources, barriers, blocks, heads = [], [], [], {}
    for t in model.inputs:
        ids[id(t)] = reg.fresh(channels_of(t))
        protected.update(ids[id(t)].tolist())
    for node in nodes_in_order(model):
        layer = node.layer
        if isinstance(layer, L.InputLayer):
            continue
        if len(calls(layer)) != 1:  # a shared layer (a tied embedding): a barrier at each of its calls
            for t in node.keras_inputs:
                protected.update(ids[id(t)].tolist())
            for t in tf.nest.flatten(node.outputs):
                ids[id(t)] = reg.fresh(channels_of(t))
                protected.update(ids[id(t)].tolist())
            barriers.append(f"{layer.name} ({type(layer).__name__}, shared)")
            continue
        if isinstance(layer.output, (list, tuple)):
            raise InputError(f"channel_prune: layer '{layer.name}' has several outputs; not supported")
        ins = [ids[id(t)] for t in _inputs(layer)]
        out_c = channels_of(layer.output)
        skipped = bool(skip) and selects(layer, skip)
        kind = _kind(layer, ins, out_c)
        if skipped or kind == "barrier":
            for a in ins:
                protected.update(a.tolist())
            out = reg.fresh(out_c)
            protected.update(out.tolist())
            if kind == "barrier" and not skipped:
                barriers.append(f"{layer.name} ({type(layer).__name__})")
            if kind == "source" and skipped:
                sources.append((layer, out))
        elif kind == "heads":  # its heads go, its inputs and output keep their width
            for a in ins:
                protected.update(a.tolist())
            out = reg.fresh(out_c)
            protected.update(out.tolist())
            heads[layer.name] = reg.fresh(int(layer.get_config()["num_heads"]))
            sources.append((layer, heads[layer.name]))
        elif kind == "source":
            out = reg.fresh(out_c)
            sources.append((layer, out))
            if _softmax(layer):  # normalized across its units: removing one changes the others
                protected.update(out.tolist())
        elif kind == "pass":
            out = ins[0]
        elif kind == "merge":
            full = [a for a in ins if len(a) == out_c]
            for a in full[1:]:
                reg.union(full[0], a)
            out = full[0]
            shortcut = _shortcut(layer) if isinstance(layer, L.Add) and len(ins) == 2 else None
            if shortcut is not None:
                blocks.append((layer, shortcut))
        elif kind == "concat":
            out = np.concatenate(ins)
        elif kind == "concat_other_axis":
            for a in ins[1:]:
                reg.union(ins[0], a)
            out = ins[0]
        elif kind == "flatten":
            spatial = int(np.prod(layer.input.shape[1:-1]))
            out = np.tile(ins[0], spatial)
        else:  # pragma: no cover - _kind returns one of the above
            raise AssertionError(kind)
        ids[id(layer.output)] = out
    for t in model.outputs:
        protected.update(ids[id(t)].tolist())
    return ChannelPlan(ids, reg.parent, protected, sources, barriers, blocks, heads)


def _kind(layer, ins, out_c) -> str:
    if isinstance(layer, L.MultiHeadAttention):
        return "heads"
    if _softmax(layer) and not (is_conv(layer) or isinstance(layer, (L.Dense, L.SeparableConv2D))):
        return "barrier"  # normalizes across channels
    if is_conv(layer) or isinstance(layer, (L.Dense, L.SeparableConv2D)):
        if isinstance(layer, L.SeparableConv2D) and layer.data_format != "channels_last":
            return "barrier"
        return "source"
    if isinstance(layer, L.DepthwiseConv2D):
        return "pass" if layer.depth_multiplier == 1 and len(ins[0]) == out_c else "barrier"
    if isinstance(layer, L.Activation) or isinstance(layer, _CHANNELWISE):
        if isinstance(layer, L.BatchNormalization) and layer.axis not in ([-1], [len(layer.input_shape) - 1]):
            return "barrier"
        return "pass" if len(ins[0]) == out_c else "barrier"
    if isinstance(layer, _MERGE):
        shapes = [tuple(t.shape[1:]) for t in _inputs(layer)]
        if all(len(a) in (1, out_c) for a in ins) and all(len(s) == len(shapes[0]) for s in shapes):
            return "merge"
        return "barrier"
    if isinstance(layer, L.Concatenate):
        rank = len(layer.output.shape)
        if layer.axis in (-1, rank - 1):
            return "concat"
        return "concat_other_axis" if all(len(a) == out_c for a in ins) else "barrier"
    if isinstance(layer, L.Flatten) and layer.data_format == "channels_last" and None not in layer.input.shape[1:]:
        return "flatten"
    return "barrier"


def _shortcut(add) -> Optional[int]:
    """For ``Add([a, b])``: the index of the input that is the other's ancestor (the shortcut)."""
    a, b = _inputs(add)
    for short, branch, index in ((a, b, 0), (b, a, 1)):
        seen, stack = set(), [branch]
        while stack:
            t = stack.pop()
            if t is short:
                return index
            layer = producer(t)
            if id(layer) in seen or isinstance(layer, L.InputLayer):
                continue
            seen.add(id(layer))
            stack.extend(_inputs(layer))
    return None


def _head_scores(layer, importance) -> np.ndarray:
    """One score per attention head: the norm of its query, key, value and output weights."""
    kernels = [(w.name.split("/")[-2], w.numpy()) for w in layer.weights if w.name.split("/")[-1].startswith("kernel")]
    per_head = [k if part == "attention_output" else np.moveaxis(k, 1, 0) for part, k in kernels]
    per_head = np.concatenate([k.reshape(k.shape[0], -1) for k in per_head], axis=1)
    return (np.abs(per_head).sum(1) if importance != "l2" else np.sqrt((per_head**2).sum(1))).astype(np.float64)


def _kernel(layer) -> np.ndarray:
    """Output-channel-last kernel of a source layer (the pointwise one of a separable conv)."""
    return (layer.pointwise_kernel if isinstance(layer, L.SeparableConv2D) else layer.kernel).numpy()


def _next_bn(model, layer):
    for other in model.layers:
        if isinstance(other, L.BatchNormalization) and len(calls(other)) == 1 and other.input is layer.output:
            return other
    return None


def _scores(model, layer, importance) -> np.ndarray:
    attention = isinstance(layer, L.MultiHeadAttention)
    if callable(importance):
        s = np.asarray(importance(layer), dtype=np.float64).reshape(-1)
        n = int(layer.get_config()["num_heads"]) if attention else channels_of(layer.output)
        if len(s) != n:
            raise InputError(
                f"importance function returned {len(s)} scores for layer '{layer.name}' with "
                f"{n} {'heads' if attention else 'output channels'}"
            )
        return s
    if attention:
        return _head_scores(layer, importance)
    if importance == "bn":
        bn = _next_bn(model, layer)
        if bn is not None and bn.gamma is not None:
            return np.abs(bn.gamma.numpy()).astype(np.float64)
    k = _kernel(layer).reshape(-1, _kernel(layer).shape[-1])
    return (np.abs(k).sum(0) if importance != "l2" else np.sqrt((k**2).sum(0))).astype(np.float64)


@dataclass
class Selection:
    """The channel ids to remove and the blocks to drop."""

    removed: set
    dropped_blocks: List[str] = field(default_factory=list)


@dataclass
class Ranking:
    """Each slot's importance and the groups of slots pruned together (computed once per model;
    a budget search selects from it at many ratios)."""

    slot_score: Dict[int, float]
    members: Dict[int, List[int]]
    groups: Dict[tuple, List[int]]
    protected_roots: set


def rank(model, p: ChannelPlan, importance="l1") -> Ranking:
    slot_score: Dict[int, float] = {}
    slot_sources: Dict[int, set] = {}
    members: Dict[int, List[int]] = {}
    for i in range(len(p.parent)):
        members.setdefault(p.root(i), []).append(i)
    for layer, out in p.sources:
        s = _scores(model, layer, importance)
        s = s / (s.mean() if s.mean() > 0 else 1.0)
        for ch, score in zip(out.tolist(), s.tolist()):
            r = p.root(ch)
            slot_score[r] = slot_score.get(r, 0.0) + score
            slot_sources.setdefault(r, set()).add(layer.name)
    protected_roots = {p.root(i) for i in p.protected}
    groups: Dict[tuple, List[int]] = {}
    for r, names in slot_sources.items():
        groups.setdefault(tuple(sorted(names)), []).append(r)
    return Ranking(slot_score, members, groups, protected_roots)


def stage_ratios(model, ranking: Ranking, stages: Sequence[float]) -> Dict[tuple, float]:
    """Each prunable group's ratio when ``stages`` gives one per stage: the groups in the order of
    their first layer in the model, split into ``len(stages)`` runs of (as near as can be) equal
    count, the first run taking ``stages[0]``."""
    order = {l.name: i for i, l in enumerate(model.layers)}
    keys = sorted(
        (k for k, roots in ranking.groups.items() if any(r not in ranking.protected_roots for r in roots)),
        key=lambda names: min(order[n] for n in names),
    )
    return {k: float(stages[i * len(stages) // len(keys)]) for i, k in enumerate(keys)}


def select(
    model,
    p: ChannelPlan,
    ratio: Union[float, Sequence[float]],
    importance="l1",
    round_to: int = 1,
    blocks: int = 0,
    ranking: Optional[Ranking] = None,
) -> Selection:
    """The least important ``ratio`` of each group's unprotected slots (a sequence: one ratio per
    stage, :func:`stage_ratios`), and ``blocks`` residual blocks with the least important branches.
    ``ranking``: :func:`rank`'s result, when known."""
    ranking = ranking or rank(model, p, importance)
    slot_score, members, protected_roots = ranking.slot_score, ranking.members, ranking.protected_roots
    per_group = stage_ratios(model, ranking, ratio) if isinstance(ratio, (list, tuple)) else {}
    removed: set = set()
    for key, roots in ranking.groups.items():
        free = [r for r in roots if r not in protected_roots]
        ratio_g = per_group.get(key, 0.0) if per_group else float(ratio)
        if not free or ratio_g <= 0:
            continue
        keep = len(roots) - int(np.floor(ratio_g * len(free)))
        if round_to > 1 and len(roots) > round_to:
            keep = max(round_to, int(np.ceil(keep / round_to)) * round_to)
        n_remove = min(len(free), len(roots) - max(keep, 1))
        if n_remove <= 0:
            continue
        order = sorted(free, key=lambda r: slot_score[r])
        for r in order[:n_remove]:
            removed.update(members[r])
    dropped = []
    if blocks:
        scored = []
        for add, short in p.blocks:
            branch = _inputs(add)[1 - short]
            last = _last_source(branch)
            if last is None:
                continue
            kind = importance if not callable(importance) else "l1"
            s = _scores(model, last, kind)
            if kind != "bn":  # a norm per weight: a head's spans four projections, a unit's its fan-in
                s = s / (sum(int(np.prod(w.shape)) for w in last.weights if "kernel" in w.name) / len(s))
            scored.append((float(np.mean(s)), add.name))
        dropped = [name for _, name in sorted(scored)[:blocks]]
        if len(dropped) < blocks:
            raise InputError(
                f"blocks={blocks}, but the model has {len(scored)} residual block(s) that can be "
                f"dropped (an Add of a tensor and a branch computed from it)"
            )
    return Selection(removed, dropped)


def _last_source(t):
    """The conv/dense layer that last set the channels of ``t`` (through channel-wise layers)."""
    while True:
        layer = producer(t)
        if is_conv(layer) or isinstance(layer, (L.Dense, L.SeparableConv2D, L.MultiHeadAttention)):
            return layer
        if isinstance(layer, (L.DepthwiseConv2D, L.Activation) + _CHANNELWISE):
            t = _inputs(layer)[0]
            continue
        return None


def _call_shared(node, shared: Dict[int, Any], new: Dict[int, Any]) -> None:
    """A shared layer is a barrier: copied once with its weights, called at each of its calls."""
    layer = node.layer
    if id(layer) not in shared:
        shared[id(layer)] = layer.__class__.from_config(layer.get_config())
    args, kwargs = node_call_args(node, new)
    outs = shared[id(layer)](*args, **kwargs)
    for old, out in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outs)):
        new[id(old)] = out
    if len(shared[id(layer)].weights) == len(layer.weights):
        shared[id(layer)].set_weights(layer.get_weights())


def rebuild(model, p: ChannelPlan, sel: Selection):
    """A new functional model without the removed channels and dropped blocks, weights copied."""
    removed = np.fromiter(sel.removed, dtype=np.int64) if sel.removed else np.zeros(0, np.int64)

    def keep(t) -> np.ndarray:
        return ~np.isin(p.ids[id(t)], removed)

    dropped = set(sel.dropped_blocks)
    shortcut_of = {add.name: short for add, short in p.blocks}
    # Which layers the rebuilt outputs still need (a dropped block's branch is not rebuilt).
    needed, stack = set(), list(model.outputs)
    while stack:
        t = stack.pop()
        layer = producer(t)
        if id(layer) in needed:
            continue
        needed.add(id(layer))
        ins = [t for c in calls(layer) for t in c.keras_inputs] if not isinstance(layer, L.InputLayer) else []
        stack.extend([ins[shortcut_of[layer.name]]] if layer.name in dropped else ins)

    new, inputs = fresh_inputs(model)
    shared: Dict[int, Any] = {}
    for node in nodes_in_order(model):
        layer = node.layer
        if isinstance(layer, L.InputLayer) or id(layer) not in needed:
            continue
        if len(calls(layer)) > 1:
            _call_shared(node, shared, new)
            continue
        ins = _inputs(layer)
        if layer.name in dropped:
            new[id(layer.output)] = new[id(ins[shortcut_of[layer.name]])]
            continue
        config = layer.get_config()
        weights = layer.get_weights()
        out_keep = keep(layer.output)
        in_keep = keep(ins[0])
        if is_conv(layer):
            config["filters"] = int(out_keep.sum())
            weights[0] = weights[0][..., in_keep, :][..., out_keep]
            if layer.use_bias:
                weights[1] = weights[1][out_keep]
        elif isinstance(layer, L.Dense):
            config["units"] = int(out_keep.sum())
            weights[0] = weights[0][in_keep][:, out_keep]
            if layer.use_bias:
                weights[1] = weights[1][out_keep]
        elif isinstance(layer, L.SeparableConv2D):
            m = layer.depth_multiplier
            config["filters"] = int(out_keep.sum())
            weights[0] = weights[0][:, :, in_keep, :]
            weights[1] = weights[1][:, :, np.repeat(in_keep, m), :][..., out_keep]
            if layer.use_bias:
                weights[2] = weights[2][out_keep]
        elif isinstance(layer, L.DepthwiseConv2D) and len(p.ids[id(ins[0])]) == len(p.ids[id(layer.output)]):
            weights[0] = weights[0][:, :, in_keep, :]
            if layer.use_bias:
                weights[1] = weights[1][in_keep]
        elif isinstance(layer, (L.BatchNormalization, L.PReLU)) and len(in_keep) == len(out_keep):
            weights = [w[..., in_keep] for w in weights]
        elif layer.name in p.heads:  # kernels (dim, heads, size) and (heads, size, dim), biases (heads, size)
            head_keep = ~np.isin(p.heads[layer.name], removed)
            config["num_heads"] = int(head_keep.sum())
            named = [(w.name.split("/")[-2:], v) for w, v in zip(layer.weights, weights)]
            weights = [
                v
                if part == "attention_output" and kind.startswith("bias")
                else v[head_keep]
                if part == "attention_output" or kind.startswith("bias")
                else v[:, head_keep]
                for (part, kind), v in named
            ]
        clone = layer.__class__.from_config(config)
        args, kwargs = node_call_args(calls(layer)[0], new)  # constants (x + 3.0) kept
        out = clone(*args, **kwargs)
        clone.set_weights(weights)
        new[id(layer.output)] = out
    outputs = [new[id(t)] for t in model.outputs]
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
