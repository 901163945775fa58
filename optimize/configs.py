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
class DistillConfig:
    """Knowledge distillation (Hinton 2015): the student learns the teacher's softened outputs.
    Loss = ``alpha`` · CE(labels) + (1 − ``alpha``) · T² · KL(teacher_T ‖ student_T), outputs
    softened by ``temperature`` T, plus ``feature_weight`` · MSE for each (student layer, teacher
    layer) pair in ``features`` (a learned linear map on the channel axis when widths differ)."""

    temperature: float = 4.0
    alpha: float = 0.1
    features: Tuple[Tuple[str, str], ...] = ()
    feature_weight: float = 1.0

    def __post_init__(self):
        if not float(self.temperature) > 0:
            raise InputError(f"temperature must be > 0. Received temperature={self.temperature}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise InputError(f"alpha (the weight of the label loss) must be in [0, 1]. Received alpha={self.alpha}")
        if not float(self.feature_weight) >= 0:
            raise InputError(f"feature_weight must be >= 0. Received feature_weight={self.feature_weight}")
        pairs = tuple(tuple(p) for p in self.features)
        if any(len(p) != 2 or not all(isinstance(n, str) for n in p) for p in pairs):
            raise InputError(f"features are (student layer, teacher layer) name pairs. Received {self.features!r}")
        object.__setattr__(self, "features", pairs)


@dataclass(frozen=True)
class FineTune:
    """How long and how fast each step's fine-tune runs (``fine_tune``, recipes, the CLI).
    ``distill``: fine-tune against a teacher's outputs too (a :class:`DistillConfig`, ``True``
    for the defaults, or a dict of its fields); the teacher is the one given to ``optimize``,
    else the recipe's input model."""

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 5e-4
    schedule: str = "constant"  # or "cosine": decays to 0 over the fine-tune (retraining after surgery)
    distill: Optional[DistillConfig] = None

    def __post_init__(self):
        if self.distill is True:
            object.__setattr__(self, "distill", DistillConfig())
        elif self.distill is False:
            object.__setattr__(self, "distill", None)
        elif isinstance(self.distill, dict):
            unknown = sorted(set(self.distill) - {f.name for f in fields(DistillConfig)})
            if unknown:
                raise InputError(f"distill has unknown key {unknown[0]!r}; expected some of "
                                 f"{', '.join(f.name for f in fields(DistillConfig))}")
            object.__setattr__(self, "distill", DistillConfig(**self.distill))
        elif self.distill is not None and not isinstance(self.distill, DistillConfig):
            raise InputError(f"distill is true, a table of DistillConfig fields or a DistillConfig. "
                             f"Received distill={self.distill!r}")
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
    budget; or ``target_latency``: the least pruning whose int8 model's p50 latency, measured with
    the device harness on this machine, is at most that many milliseconds (the search converts
    and times each candidate, so it needs calibration data). ``importance``: ``"l1"``, ``"l2"``,
    ``"bn"`` or a function ``f(layer) -> scores``.
    ``skip``: layers left alone (names, class names, classes or ``"re:…"``). ``round_to``: keep
    channel counts at multiples of it where a group has more. ``blocks``: residual blocks to
    drop entirely (structural pruning). ``iterations``: in a recipe, reach ``ratio`` in this many
    prune + fine-tune rounds."""

    ratio: float = 0.5
    importance: Union[str, Callable] = "l1"
    target_params: Optional[int] = None
    target_macs: Optional[int] = None
    target_latency: Optional[float] = None
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
        if self.target_latency is not None and not float(self.target_latency) > 0:
            raise InputError(f"target_latency (ms) must be > 0. Received target_latency={self.target_latency}")
        if sum(v is not None for v in (self.target_params, self.target_macs, self.target_latency)) > 1:
            raise InputError("give one budget: target_params, target_macs or target_latency")
        if int(self.round_to) < 1 or int(self.blocks) < 0 or int(self.iterations) < 1:
            raise InputError(f"round_to and iterations must be >= 1 and blocks >= 0. Received "
                             f"round_to={self.round_to}, blocks={self.blocks}, iterations={self.iterations}")
        if int(self.iterations) > 1 and (self.target_params or self.target_macs or self.target_latency):
            raise InputError("iterations apply to a ratio; a params, MACs or latency budget is reached in one step")
        object.__setattr__(self, "skip", _layers(self.skip, "skip") or ())


@dataclass(frozen=True)
class FactorizeConfig:
    """Low-rank factorization by truncated SVD of ``Dense`` (W ≈ U·V: two Dense layers) and
    ``Conv2D`` (a k×k conv with r filters, then a 1×1 conv) kernels. The rank of each layer:
    ``rank`` (fixed), else the least rank keeping ``energy`` of the sum of squared singular
    values, or with ``target_params`` the one energy threshold, shared by all layers, that brings
    the model to that budget. A layer is factorized only when it gets smaller; ``layers``/``skip``
    select them."""

    rank: Optional[int] = None
    energy: float = 0.9
    target_params: Optional[int] = None
    layers: Optional[Tuple[Any, ...]] = None
    skip: Tuple[Any, ...] = ()

    def __post_init__(self):
        if self.rank is not None and self.target_params is not None:
            raise InputError("give rank or target_params, not both")
        if self.rank is not None and int(self.rank) < 1:
            raise InputError(f"rank must be >= 1. Received rank={self.rank}")
        if not 0.0 < float(self.energy) <= 1.0:
            raise InputError(f"energy must be in (0, 1]. Received energy={self.energy}")
        if self.target_params is not None and int(self.target_params) < 1:
            raise InputError(f"target_params must be >= 1. Received target_params={self.target_params}")
        object.__setattr__(self, "layers", _layers(self.layers, "layers"))
        object.__setattr__(self, "skip", _layers(self.skip, "skip") or ())


CONFIGS = {"prune": PruneConfig, "cluster": ClusterConfig, "qat": QATConfig, "channel_prune": ChannelPruneConfig,
           "factorize": FactorizeConfig, "distill": DistillConfig}


_NUMBER = (int, float)


def _kind_ok(kind: str, value) -> bool:
    """Whether a recipe value (TOML: str, int, float, bool, list, table) fits a field annotated ``kind``."""
    kind = kind.replace(" ", "")
    if kind.startswith("Optional[") and kind.endswith("]"):
        return _kind_ok(kind[len("Optional["):-1], value)
    if isinstance(value, bool):
        return kind in ("bool", "Optional[DistillConfig]", "DistillConfig")
    if kind == "float":
        return isinstance(value, _NUMBER)
    if kind == "int":
        return isinstance(value, int)
    if kind in ("str", "Union[str,Callable]"):
        return isinstance(value, str)
    if kind == "Tuple[Tuple[str,str],...]":
        return isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) for n in p)
                                               for p in value)
    if kind.startswith("Tuple["):
        return isinstance(value, (list, str)) and all(isinstance(v, str) for v in (value if isinstance(value, list) else []))
    if kind == "DistillConfig":
        return isinstance(value, dict)
    return True


_KIND_NAMES = {"float": "a number", "int": "an integer", "bool": "true or false", "str": "a string",
               "Union[str,Callable]": "a string", "DistillConfig": "true, false or a table of distill settings",
               "Tuple[Tuple[str,str],...]": "a list of [student layer, teacher layer] pairs"}


def check_types(cls, values: dict, where: str) -> None:
    """A recipe table's values against ``cls``'s field types: a one-line error naming the key,
    what it must be and what was given (``sparsity = "lots"``)."""
    kinds = {f.name: str(f.type) for f in fields(cls)}
    for key, value in values.items():
        kind = kinds.get(key)
        if kind is not None and not _kind_ok(kind, value):
            bare = kind.replace(" ", "")
            bare = bare[len("Optional["):-1] if bare.startswith("Optional[") else bare
            expected = _KIND_NAMES.get(bare, "a list of layer names" if bare.startswith("Tuple[") else bare)
            raise InputError(f"{where}: {key} must be {expected}; received {value!r}")


def config_from_dict(technique: str, values: dict, where: str):
    """A config from a recipe's table; unknown keys and values of the wrong type are errors naming
    the key and the step."""
    cls = CONFIGS[technique]
    names = {f.name for f in fields(cls)} - {"configs"}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} for {technique}; expected some of {', '.join(sorted(names))}")
    check_types(cls, values, where)
    return cls(**{k: tuple(tuple(i) if isinstance(i, list) else i for i in v) if isinstance(v, list) else v
                  for k, v in values.items()})


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
