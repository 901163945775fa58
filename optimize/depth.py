"""Layer dropping: a shallower student initialised from every other block of its teacher, then
distilled from it (DistilBERT, Sanh et al. 2019: half of BERT's layers, 97% of its quality).

The *blocks* are found in the graph, not named: the model's single-tensor cuts (tensors every path
from the inputs to the outputs goes through) split it into segments; the longest run of segments
that repeats with the same layers and weight shapes — a transformer's attention and feed-forward
sub-blocks, a stack of identical residual blocks — is the block sequence. Dropping a block connects
its input to whatever read its output. Of ``n`` blocks ``round(keep · n)`` stay, evenly spaced from
the first (0, 2, 4 … at ``keep=0.5``), with their weights. The fine-tune then learns from the
input model: its softened outputs (:class:`~edgekit.optimize.configs.DistillConfig`) and, with
``hidden_weight > 0``, each kept block's output pulled towards the output of the teacher block
that ends the same share of the depth (student block j of m ↔ teacher block ⌈(j+1)·n/m⌉ − 1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, List, Optional, Tuple

import numpy as np

from edgekit.core.errors import InputError
from edgekit.core.graph import nodes_in_order, rewrite
from edgekit.core.results import Result
from edgekit.optimize.common import check_model
from edgekit.optimize.configs import DistillConfig
from edgekit.optimize.registry import Technique, register


@dataclass(frozen=True)
class DepthConfig:
    """Keep ``keep`` of the model's repeated blocks (at least one); ``distill``: the fine-tune
    learns from the input model (else from the labels alone); ``hidden_weight``: weight of the
    kept blocks' hidden-state loss (0: outputs only)."""

    keep: float = 0.5
    distill: bool = True
    hidden_weight: float = 1.0

    def __post_init__(self):
        if not 0.0 < float(self.keep) < 1.0:
            raise InputError(f"keep (the share of blocks kept) must be in (0, 1). Received keep={self.keep}")
        if not float(self.hidden_weight) >= 0:
            raise InputError(f"hidden_weight must be >= 0. Received hidden_weight={self.hidden_weight}")


@dataclass(frozen=True)
class Block:
    """One repeated block: its layers, and the tensors it reads and writes."""

    layers: Tuple[str, ...]
    start: Any
    end: Any

    @property
    def last(self) -> str:
        return self.layers[-1]


@dataclass
class DepthResult(Result):
    """The shallower model and what went: blocks kept of those found, their layers, params."""

    model: Any
    blocks: List[Tuple[str, ...]]
    kept: List[int]
    params: Tuple[int, int]

    def to_dict(self) -> dict:
        return {
            "blocks": len(self.blocks),
            "kept": self.kept,
            "block_layers": [list(b) for b in self.blocks],
            "params": list(self.params),
        }

    def summary(self, label: str = "depth") -> str:
        span = [f"{b[0]} … {b[-1]}" if len(b) > 1 else b[0] for b in self.blocks]
        return (
            f"{label}: kept blocks {', '.join(map(str, self.kept))} of {len(self.blocks)} "
            f"(params {self.params[0]:,} → {self.params[1]:,}); blocks: {'; '.join(span)}"
        )


def _signature(nodes) -> tuple:
    return tuple((type(n.layer).__name__, tuple(tuple(w.shape) for w in n.layer.weights)) for n in nodes)


def _segments(model) -> List[Tuple[Any, Any, list]]:
    """(start tensor, end tensor, nodes) between consecutive single-tensor cuts of the graph."""
    readers = {}
    for node in nodes_in_order(model):
        for t in node.keras_inputs:
            readers[id(t)] = readers.get(id(t), 0) + 1
    live = {id(t): t for t in model.inputs}
    outputs = {id(t) for t in model.outputs}
    segments, start, run = [], (model.inputs[0] if len(model.inputs) == 1 else None), []
    for node in nodes_in_order(model):
        if type(node.layer).__name__ == "InputLayer":
            continue
        run.append(node)
        for t in node.keras_inputs:
            readers[id(t)] -= 1
            if readers[id(t)] == 0 and id(t) not in outputs:
                live.pop(id(t), None)
        for t in node.outputs if isinstance(node.outputs, (list, tuple)) else [node.outputs]:
            live[id(t)] = t
        if len(live) == 1:
            (end,) = live.values()
            if start is not None:
                segments.append((start, end, run))
            start, run = end, []
    return segments


def repeated_blocks(model) -> List[Block]:
    """The longest run of repeated segments (see the module doc), as blocks; [] when none repeats."""
    segs = _segments(model)
    sigs = [_signature(nodes) for _, _, nodes in segs]
    best = (0, 0, 0, 0)  # (segments covered, -unit, start, repeats)
    for unit in range(1, len(segs) // 2 + 1):
        for first in range(len(segs) - 2 * unit + 1):
            k = 1
            while (
                first + (k + 1) * unit <= len(segs)
                and sigs[first + k * unit : first + (k + 1) * unit] == sigs[first : first + unit]
            ):
                k += 1
            ok = all(
                tuple(segs[first + i * unit][0].shape) == tuple(segs[first + i * unit + unit - 1][1].shape)
                for i in range(k)
            )
            # ties go to the later run: a block ends with its residual and norm (an embedding's
            # LayerNorm looks like a layer's last one, and must not start the first block)
            if k >= 2 and ok and (k * unit, -unit, first) >= best[:3]:
                best = (k * unit, -unit, first, k)
    _, unit, first, k = best
    unit = -unit
    return [
        Block(
            tuple(n.layer.name for _, _, nodes in segs[first + i * unit : first + (i + 1) * unit] for n in nodes),
            segs[first + i * unit][0],
            segs[first + i * unit + unit - 1][1],
        )
        for i in range(k)
    ]


def kept_blocks(n: int, keep: float) -> List[int]:
    """The blocks of ``n`` that stay: ``keep · n`` rounded half up (at least 1), evenly spaced from
    the first (every other at 0.5: 0, 2, 4 …)."""
    m = min(n, max(1, int(np.floor(keep * n + 0.5))))
    return sorted({int(np.ceil(j * n / m)) for j in range(m)})


def hidden_pairs(blocks: List[Tuple[str, ...]], kept: List[int]) -> Tuple[Tuple[str, str], ...]:
    """(student layer, teacher layer) whose outputs the hidden-state loss matches: kept block j
    (named as in the teacher) against the teacher block ending the same share of the depth.
    ``blocks``: each block's layer names (:attr:`DepthResult.blocks`)."""
    n, m = len(blocks), len(kept)
    return tuple((blocks[k][-1], blocks[int(np.ceil((j + 1) * n / m)) - 1][-1]) for j, k in enumerate(kept))


def depth_report(model, config: DepthConfig = DepthConfig()) -> DepthResult:
    """:func:`drop_blocks` with what it did (a :class:`DepthResult`)."""
    model = check_model(model, "depth")
    blocks = repeated_blocks(model)
    if len(blocks) < 2:
        raise InputError(
            "depth: the model has no repeated blocks to drop (two or more runs of the same layers with the "
            "same weight shapes, each taking and giving one tensor of one shape, e.g. transformer layers)"
        )
    kept = kept_blocks(len(blocks), float(config.keep))
    dropped = {name: blocks[i].start for i in range(len(blocks)) if i not in kept for name in blocks[i].layers}

    tensors = SimpleNamespace(new={})

    def replace_layer(layer, mapped):
        return tensors.new[id(dropped[layer.name])] if layer.name in dropped else None

    student = rewrite(model, replace_layer, "depth", expose=tensors)
    return DepthResult(
        student, [b.layers for b in blocks], kept, (int(model.count_params()), int(student.count_params()))
    )


def drop_blocks(model, config: DepthConfig = DepthConfig()):
    """A new, shallower tf_keras model keeping ``config.keep`` of ``model``'s repeated blocks with
    their weights (``model`` is left as it is). Distil it from ``model`` afterwards (the ``depth``
    step does)."""
    return depth_report(model, config).model


def _apply(model, config: DepthConfig, step):
    """Drop the blocks, then fine-tune, distilling from the step's input model (soft targets and
    the kept blocks' hidden states) unless ``distill`` is off."""
    teacher = check_model(model, "depth")
    rep = depth_report(teacher, config)
    settings = step.settings
    if config.distill:
        base: Optional[DistillConfig] = settings.distill or DistillConfig()
        pairs = hidden_pairs(rep.blocks, rep.kept) if float(config.hidden_weight) > 0 else ()
        weight = float(config.hidden_weight) if pairs else base.feature_weight
        distill = replace(base, features=tuple(base.features) + pairs, feature_weight=weight)
        settings = replace(settings, distill=distill)
        step = replace(step, teacher=teacher)
    else:
        settings = replace(settings, distill=None)
    step.fine_tune(rep.model, settings)
    return rep.model, replace(rep, model=None)


register(
    Technique(
        "depth",
        DepthConfig,
        _apply,
        order=5,
        describe=lambda c: f"depth {c.keep:g}" + ("" if c.distill else " (no teacher)"),
    )
)
