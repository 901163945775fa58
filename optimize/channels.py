"""Channel (unit, filter) pruning that removes them: a smaller dense tf_keras model.

Magnitude pruning zeroes weights and the model keeps its shape; on a board's int8 kernels it runs
no faster. :func:`channel_prune` removes whole output channels of ``Conv1D``/``Conv2D``,
``SeparableConv2D`` and ``Dense`` layers (and with them the matching channels of the
``DepthwiseConv2D``, ``BatchNormalization`` and every other layer that reads them), then rebuilds a
functional model with the surviving weights copied in.

**Dependency groups** come from the functional graph. Every channel of every tensor gets an id;
channel-wise layers (BatchNorm, activations, depthwise convs, pooling, padding, dropout) pass ids
through; ``Add``/``Multiply``/``Subtract``/``Average``/``Maximum``/``Minimum`` join the ids of their
inputs (a residual connection prunes the same channels on both sides); ``Concatenate`` on the
channel axis lays its inputs' ids side by side; ``Flatten`` repeats them per spatial position, so
the ``Dense`` after it loses the rows of a removed channel. Channels joined this way form one
channel *slot*, removed everywhere or nowhere. The model's outputs, the input, the layers named in
``skip`` (their inputs and outputs) and everything around a layer whose channel semantics are not
known here (``Reshape``, ``LayerNormalization``, ``Softmax`` …: a *barrier*, listed in the result)
are never pruned, so the rebuilt model is always valid.

**Whole blocks** (``blocks=N``): a residual block ``Add([x, f(x)])`` whose branch ``f`` can be
dropped leaves ``x``; the N blocks with the smallest branch (by the importance below) go.

**Importance** of a channel: the L1 (default) or L2 norm of its filter, ``|gamma|`` of the
BatchNorm right after it (``"bn"``), or a function ``f(layer) -> scores`` (one score per output
channel of the layer). Each layer's scores are divided by their mean, and a slot's importance is
the sum over the channels in it; each group (the slots fed by the same layers) loses the same share
of its slots, the least important first, keeping ``round_to`` multiples when asked.

Budgets: ``ratio`` (share of prunable channels removed), ``stages`` (one ratio per stage of the
model: its groups in model order, split into runs of equal count), or ``target_params`` / ``target_macs``
(the smallest ratio that fits, found by bisection on the rebuilt model's profile), or
``target_latency`` (the same bisection on a caller's ``measure`` of each candidate).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from edgekit.core.compat import keras
from edgekit.core.errors import InputError
from edgekit.core.graph import calls
from edgekit.core.results import Result, table
from edgekit.core.samples import rows, take
from edgekit.models.profiler import profile
from edgekit.optimize.channel_graph import L, channels_of, is_conv, plan, rank, rebuild, select
from edgekit.optimize.common import check_model
from edgekit.optimize.configs import layer_selection
from edgekit.optimize.registry import Technique, register

IMPORTANCE = ("l1", "l2", "bn")


@dataclass(frozen=True)
class ChannelPruneConfig:
    """What :func:`channel_prune` removes. ``ratio``: share of each group's prunable channels;
    or ``target_params`` / ``target_macs``: the least pruning that brings the model to that
    budget; or ``target_latency``: the least pruning whose latency, as the ``measure`` function
    given to :func:`channel_prune_report` (or ``optimize``) times each candidate, is at most that
    many milliseconds (:func:`edgekit.app.measure.int8_latency`: the int8 model's p50 under the device
    harness on this machine). ``importance``: ``"l1"``, ``"l2"``,
    ``"bn"`` or a function ``f(layer) -> scores``.
    ``skip``: layers left alone (names, class names, classes or ``"re:…"``). ``round_to``: keep
    channel counts at multiples of it where a group has more. ``blocks``: residual blocks to
    drop entirely (structural pruning). ``iterations``: in a recipe, reach ``ratio`` in this many
    prune + fine-tune rounds. ``stages``: one ratio per stage instead of ``ratio`` — the prunable
    groups in model order split into ``len(stages)`` runs of equal count (early layers hold most of
    the latency, late ones most of the params: ``(0.3, 0.5, 0.8)`` takes most of its savings from
    the params); the result's ``ratio`` is then the share of prunable channels removed."""

    ratio: float = 0.5
    importance: Union[str, Callable] = "l1"
    target_params: Optional[int] = None
    target_macs: Optional[int] = None
    target_latency: Optional[float] = None
    skip: Tuple[Any, ...] = ()
    round_to: int = 1
    blocks: int = 0
    iterations: int = 1
    stages: Tuple[float, ...] = ()

    def __post_init__(self):
        if not 0.0 <= float(self.ratio) < 1.0:
            raise InputError(f"ratio must be in [0, 1). Received ratio={self.ratio}")
        stages = tuple(self.stages) if isinstance(self.stages, (list, tuple)) else (self.stages,)
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) and 0.0 <= r < 1.0 for r in stages):
            raise InputError(f"stages must be ratios in [0, 1), one per stage. Received stages={self.stages!r}")
        object.__setattr__(self, "stages", tuple(float(r) for r in stages))
        if self.stages and (self.target_params or self.target_macs or self.target_latency):
            raise InputError("give stages or one budget (target_params, target_macs, target_latency), not both")
        if not callable(self.importance) and self.importance not in IMPORTANCE:
            raise InputError(
                f"importance must be one of {', '.join(IMPORTANCE)} or a function. "
                f"Received importance={self.importance!r}"
            )
        for name in ("target_params", "target_macs"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise InputError(f"{name} must be >= 1. Received {name}={value}")
        if self.target_latency is not None and not float(self.target_latency) > 0:
            raise InputError(f"target_latency (ms) must be > 0. Received target_latency={self.target_latency}")
        if sum(v is not None for v in (self.target_params, self.target_macs, self.target_latency)) > 1:
            raise InputError("give one budget: target_params, target_macs or target_latency")
        if int(self.round_to) < 1 or int(self.blocks) < 0 or int(self.iterations) < 1:
            raise InputError(
                f"round_to and iterations must be >= 1 and blocks >= 0. Received "
                f"round_to={self.round_to}, blocks={self.blocks}, iterations={self.iterations}"
            )
        if int(self.iterations) > 1 and (self.target_params or self.target_macs or self.target_latency):
            raise InputError("iterations apply to a ratio; a params, MACs or latency budget is reached in one step")
        object.__setattr__(self, "skip", layer_selection(self.skip, "skip") or ())


def layer_widths(model) -> Dict[str, int]:
    """Output channels of every conv, separable conv and dense layer, heads of every attention
    layer, by name."""
    return {
        l.name: int(l.get_config()["num_heads"]) if isinstance(l, L.MultiHeadAttention) else channels_of(l.output)
        for l in model.layers
        if (is_conv(l) or isinstance(l, (L.Dense, L.SeparableConv2D, L.DepthwiseConv2D, L.MultiHeadAttention)))
        and len(calls(l)) == 1  # a shared layer is left as it is
    }


@dataclass
class ChannelPruneResult(Result):
    """The pruned model and what changed: per-layer widths before and after, params, MACs."""

    model: Any
    ratio: float
    widths: Dict[str, Tuple[int, int]]
    params: Tuple[int, int]
    macs: Tuple[int, int]
    dropped_blocks: List[str]
    barriers: List[str]

    def to_dict(self) -> dict:
        return {
            "ratio": self.ratio,
            "params": list(self.params),
            "macs": list(self.macs),
            "widths": {k: list(v) for k, v in self.widths.items()},
            "dropped_blocks": self.dropped_blocks,
            "barriers": self.barriers,
        }

    def summary(self, label: str = "channel prune") -> str:
        """Params and MACs before/after, per-layer widths and barriers."""
        lines = [
            f"{label}: params {self.params[0]:,} → {self.params[1]:,}, MACs {self.macs[0]:,} → {self.macs[1]:,}"
            + (f", dropped {', '.join(self.dropped_blocks)}" if self.dropped_blocks else ""),
            table(
                ("layer", "width before", "after"),
                [[k, f"{b:,}", f"{a:,}"] for k, (b, a) in self.widths.items()],
                align="lrr",
            ),
        ]
        if self.barriers:
            lines.append(f"left alone (channel semantics not known, a barrier): {', '.join(self.barriers)}")
        return "\n".join(lines)


def _search(build, measure, budget, what, unit) -> float:
    """The least ratio in [0, 0.95] whose model measures within ``budget`` (bisection)."""
    lo, hi = 0.0, 0.95
    if measure(build(0.0)[0]) <= budget:
        return 0.0  # met without pruning
    at_most = measure(build(hi)[0])
    if at_most > budget:
        leaves = "a model that does not prepare under XNNPACK" if at_most == float("inf") else f"{at_most:,}{unit}"
        raise InputError(
            f"{what}={budget:,}{unit} is out of reach: removing 95% of the prunable channels "
            f"leaves {leaves}; raise the budget or prune more layers"
        )
    for _ in range(12):
        if hi - lo < 0.005:
            break
        mid = (lo + hi) / 2
        if measure(build(mid)[0]) <= budget:
            hi = mid
        else:
            lo = mid
    return hi


def channel_prune_report(
    model, config: ChannelPruneConfig = ChannelPruneConfig(), measure: Optional[Callable[[Any], float]] = None
) -> ChannelPruneResult:
    """:func:`channel_prune` with what it did (see :class:`ChannelPruneResult`). ``measure``: a
    function of a candidate model returning its latency in ms (``inf`` when it cannot run), for
    ``target_latency``; :func:`edgekit.app.measure.int8_latency` times the int8 model with the device
    harness."""
    model = check_model(model, "channel_prune")
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    p = plan(model, config.skip)
    before = profile(model)
    ranking = rank(model, p, config.importance)

    def build(ratio):
        sel = select(model, p, ratio, config.importance, int(config.round_to), int(config.blocks), ranking)
        return rebuild(model, p, sel), sel

    ratio = config.stages or float(config.ratio)
    if config.target_latency:
        if measure is None:
            raise InputError(
                "{target_latency} needs {measure}, a function timing a candidate model (e.g. "
                "edgekit.app.measure.int8_latency(calibration_samples))",
                params=("target_latency", "measure"),
            )
        ratio = _search(build, measure, config.target_latency, "target_latency", " ms")
    elif config.target_params or config.target_macs:
        what = "target_params" if config.target_params else "target_macs"
        ratio = _search(build, lambda m: getattr(profile(m), what[len("target_") :]), getattr(config, what), what, "")
    pruned, sel = build(ratio)
    after = profile(pruned)
    widths_before, widths_after = layer_widths(model), layer_widths(pruned)
    return ChannelPruneResult(
        model=pruned,
        ratio=round(removed_share(ranking, sel) if config.stages else ratio, 4),
        widths={k: (v, widths_after[k]) for k, v in widths_before.items() if k in widths_after},
        params=(before.params, after.params),
        macs=(before.macs, after.macs),
        dropped_blocks=sel.dropped_blocks,
        barriers=p.barriers,
    )


def removed_share(ranking, sel) -> float:
    """The share of the prunable channel slots that ``sel`` removes."""
    free = [r for roots in ranking.groups.values() for r in roots if r not in ranking.protected_roots]
    return sum(ranking.members[r][0] in sel.removed for r in free) / max(len(free), 1)


def channel_prune(model, config: ChannelPruneConfig = ChannelPruneConfig(), measure=None):
    """A new, smaller tf_keras model without the least important channels (see the module doc);
    ``model`` is left as it is. Re-estimate BatchNorm statistics (:func:`reestimate_batchnorm`)
    and fine-tune afterwards."""
    return channel_prune_report(model, config, measure).model


def reestimate_batchnorm(model, x, batch_size: int = 64, batches: Optional[int] = None) -> None:
    """Recompute every BatchNormalization's moving mean and variance on ``x`` (in place): after
    surgery the statistics of the remaining channels' inputs have changed. The running averages are
    reset and averaged over the batches (momentum i/(i+1) on batch i)."""
    bns = [l for l in model.layers if isinstance(l, L.BatchNormalization)]
    if not bns:
        return
    x = x if isinstance(x, dict) else np.asarray(x)
    n = rows(x) if batches is None else min(rows(x), batches * batch_size)
    saved = [bn.momentum for bn in bns]
    try:
        for i, start in enumerate(range(0, n, batch_size)):
            for bn in bns:
                bn.momentum = i / (i + 1.0)
            # Only the BatchNorms update in training mode; their outputs are not used.
            model(take(x, slice(start, start + batch_size)), training=True)
    finally:
        for bn, m in zip(bns, saved):
            bn.momentum = m


def _apply(model, config, step):
    """Surgery, BatchNorm statistics re-estimated on the data, fine-tune — in ``iterations``
    rounds; what changed from the first round's input to the last round's output."""
    rounds = int(config.iterations)

    def per_round(ratio):
        return 1.0 - (1.0 - float(ratio)) ** (1.0 / rounds)

    reports = []
    for r in range(rounds):
        # blocks are dropped in the first round only
        c = (
            replace(
                config,
                ratio=per_round(config.ratio),
                stages=tuple(per_round(s) for s in config.stages),
                iterations=1,
                blocks=config.blocks if r == 0 else 0,
            )
            if rounds > 1
            else config
        )
        rep = channel_prune_report(model, c, step.measure)
        reports.append(rep)
        model = rep.model
        reestimate_batchnorm(model, step.x)
        step.fine_tune(model)
        if rounds > 1:
            step.log(f"      round {r + 1}/{rounds}: {rep.params[1]:,} params, {rep.macs[1]:,} MACs")
    first, last = reports[0], reports[-1]
    widths = layer_widths(model)
    details = replace(
        first,
        model=None,  # the step's model is the recipe's; the report keeps what changed
        params=(first.params[0], last.params[1]),
        macs=(first.macs[0], last.macs[1]),
        widths={k: (v[0], widths[k]) for k, v in first.widths.items() if k in widths},
        ratio=float(config.ratio) if rounds > 1 and not config.stages else first.ratio,
    )
    return model, details


def _describe(c) -> str:
    target = (
        f"to {c.target_params:,} params"
        if c.target_params
        else f"to {c.target_macs:,} MACs"
        if c.target_macs
        else f"to {c.target_latency:g} ms int8 p50"
        if c.target_latency
        else "stages " + "/".join(f"{r:g}" for r in c.stages)
        if c.stages
        else f"{c.ratio:g}"
    )
    return (
        f"channel prune {target}"
        + (f" in {c.iterations} rounds" if c.iterations > 1 else "")
        + (f", drop {c.blocks} block(s)" if c.blocks else "")
    )


register(Technique("channel_prune", ChannelPruneConfig, _apply, _describe, order=10, details_key="channels"))
