"""Typed, frozen configurations of the optimization verbs and their fine-tunes.

Layer selections (``layers``, ``skip``) are tuples whose entries are a layer name (exact), a
layer class name (``"Conv2D"``), a layer class, or a regular expression over layer names
(``re.compile(...)`` or a string ``"re:expand_.*"``, the form recipes use).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Optional, Tuple, Union

from edgekit.errors import InputError

PATTERNS = ("unstructured", "2:4")
CLUSTER_INITS = ("kmeans++", "linear", "density-based", "random")
PRESERVE = ("auto", "none", "sparsity", "clusters", "both")
IMPORTANCE = ("l1", "l2", "bn")
SCHEDULES = ("constant", "cosine")


def _layers(value, name: str) -> Optional[tuple]:
    if value is None:
        return None
    if isinstance(value, (str, type, re.Pattern)):
        value = (value,)
    value = tuple(value)
    for v in value:
        if not isinstance(v, (str, type, re.Pattern)):
            raise InputError(f"{name} entries are layer names, class names, classes or regexes; received {v!r}")
    return value


@dataclass(frozen=True)
class FineTune:
    """How long and how fast each step's fine-tune runs (``fine_tune``, recipes, the CLI)."""

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 5e-4
    schedule: str = "constant"  # or "cosine": decays to 0 over the fine-tune (retraining after surgery)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}. Received schedule={self.schedule!r}")
        if int(self.epochs) < 1:
            raise InputError(f"epochs must be >= 1. Received epochs={self.epochs}")
        if int(self.batch_size) < 1:
            raise InputError(f"batch_size must be >= 1. Received batch_size={self.batch_size}")
        if not float(self.learning_rate) > 0:
            raise InputError(f"learning_rate must be > 0. Received learning_rate={self.learning_rate}")


@dataclass(frozen=True)
class PruneConfig:
    """Magnitude pruning to ``sparsity`` (unstructured) or 2:4 (``pattern="2:4"``: 2 zeros in every
    4 consecutive input weights, tfmot's ``sparsity_m_by_n``).

    The sparsity ramps up (polynomial, as tfmot's PolynomialDecay) over the first
    ``ramp_fraction`` of the fine-tune and is held for the rest, so the target is reached however
    short the fine-tune is. ``steps`` is the fine-tune length in batches; None takes it from the
    ``model.fit`` call (epochs × batches per epoch)."""

    sparsity: float = 0.8
    pattern: str = "unstructured"
    layers: Optional[Tuple[Any, ...]] = None
    skip: Tuple[Any, ...] = ()
    ramp_fraction: float = 0.75
    steps: Optional[int] = None

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise InputError(f"pattern must be one of {', '.join(PATTERNS)}. Received pattern={self.pattern!r}")
        if self.pattern == "unstructured" and not 0.0 < float(self.sparsity) < 1.0:
            raise InputError(f"sparsity must be in (0, 1). Received sparsity={self.sparsity}")
        if not 0.0 < float(self.ramp_fraction) <= 1.0:
            raise InputError(f"ramp_fraction must be in (0, 1]. Received ramp_fraction={self.ramp_fraction}")
        if self.steps is not None and int(self.steps) < 1:
            raise InputError(f"steps must be >= 1. Received steps={self.steps}")
        object.__setattr__(self, "layers", _layers(self.layers, "layers"))
        object.__setattr__(self, "skip", _layers(self.skip, "skip") or ())


@dataclass(frozen=True)
class ClusterConfig:
    """Weight clustering (parameter sharing): each selected kernel keeps ``clusters`` distinct
    values. ``preserve_sparsity`` keeps zeros at zero (None: when the kernels are already sparse,
    e.g. after pruning). ``fold_batchnorm`` first folds BatchNorm into the layer before it, so
    the converter does not rescale each output channel of a clustered kernel afterwards."""

    clusters: int = 16
    init: str = "kmeans++"
    preserve_sparsity: Optional[bool] = None
    fold_batchnorm: bool = True
    layers: Optional[Tuple[Any, ...]] = None
    skip: Tuple[Any, ...] = ()

    def __post_init__(self):
        if int(self.clusters) < 2:
            raise InputError(f"clusters must be >= 2. Received clusters={self.clusters}")
        if self.init not in CLUSTER_INITS:
            raise InputError(f"init must be one of {', '.join(CLUSTER_INITS)}. Received init={self.init!r}")
        object.__setattr__(self, "layers", _layers(self.layers, "layers"))
        object.__setattr__(self, "skip", _layers(self.skip, "skip") or ())


@dataclass(frozen=True)
class QATConfig:
    """Quantization-aware training (int8). ``layers``/``skip`` select what is quantized (the rest
    stays float); ``configs`` maps layer names to tfmot QuantizeConfigs of your own.
    ``preserve``: ``"sparsity"`` (PQAT), ``"clusters"`` (CQAT), ``"both"`` (PCQAT), ``"none"``, or
    ``"auto"`` — read from the weights: sparse kernels keep their zeros, clustered ones their
    clusters."""

    layers: Optional[Tuple[Any, ...]] = None
    skip: Tuple[Any, ...] = ()
    preserve: str = "auto"
    configs: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.preserve not in PRESERVE:
            raise InputError(f"preserve must be one of {', '.join(PRESERVE)}. Received preserve={self.preserve!r}")
        object.__setattr__(self, "layers", _layers(self.layers, "layers"))
        object.__setattr__(self, "skip", _layers(self.skip, "skip") or ())

    def __hash__(self):
        return hash((self.layers, self.skip, self.preserve, tuple(sorted(self.configs))))


@dataclass(frozen=True)
class ChannelPruneConfig:
    """What :func:`channel_prune` removes. ``ratio``: share of each group's prunable channels;
    or ``target_params`` / ``target_macs``: the least pruning that brings the model to that
    budget. ``importance``: ``"l1"``, ``"l2"``, ``"bn"`` or a function ``f(layer) -> scores``.
    ``skip``: layers left alone (names, class names, classes or ``"re:…"``). ``round_to``: keep
    channel counts at multiples of it where a group has more. ``blocks``: residual blocks to
    drop entirely (structural pruning). ``iterations``: in a recipe, reach ``ratio`` in this many
    prune + fine-tune rounds."""

    ratio: float = 0.5
    importance: Union[str, Callable] = "l1"
    target_params: Optional[int] = None
    target_macs: Optional[int] = None
    skip: Tuple[Any, ...] = ()
    round_to: int = 1
    blocks: int = 0
    iterations: int = 1

    def __post_init__(self):
        if not 0.0 <= float(self.ratio) < 1.0:
            raise InputError(f"ratio must be in [0, 1). Received ratio={self.ratio}")
        if not callable(self.importance) and self.importance not in IMPORTANCE:
            raise InputError(f"importance must be one of {', '.join(IMPORTANCE)} or a function. "
                             f"Received importance={self.importance!r}")
        for name in ("target_params", "target_macs"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise InputError(f"{name} must be >= 1. Received {name}={value}")
        if self.target_params is not None and self.target_macs is not None:
            raise InputError("give one budget: target_params or target_macs, not both")
        if int(self.round_to) < 1 or int(self.blocks) < 0 or int(self.iterations) < 1:
            raise InputError(f"round_to and iterations must be >= 1 and blocks >= 0. Received "
                             f"round_to={self.round_to}, blocks={self.blocks}, iterations={self.iterations}")
        if int(self.iterations) > 1 and (self.target_params or self.target_macs):
            raise InputError("iterations apply to a ratio; a params or MACs budget is reached in one step")
        object.__setattr__(self, "skip", _layers(self.skip, "skip") or ())


CONFIGS = {"prune": PruneConfig, "cluster": ClusterConfig, "qat": QATConfig, "channel_prune": ChannelPruneConfig}


def config_from_dict(technique: str, values: dict, where: str):
    """A config from a recipe's table; unknown keys are errors naming the key and the step."""
    cls = CONFIGS[technique]
    names = {f.name for f in fields(cls)} - {"configs"}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} for {technique}; expected some of {', '.join(sorted(names))}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def selects(layer, spec) -> bool:
    """True when ``layer`` matches one entry of ``spec`` (see the module doc)."""
    for s in spec:
        if isinstance(s, type):
            if isinstance(layer, s):
                return True
        elif isinstance(s, re.Pattern):
            if s.fullmatch(layer.name):
                return True
        elif s.startswith("re:"):
            if re.fullmatch(s[3:], layer.name):
                return True
        elif s == layer.name or s == type(layer).__name__:
            return True
    return False
