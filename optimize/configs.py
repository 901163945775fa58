"""Typed, frozen configurations of the optimization verbs and their fine-tunes.

Layer selections (``layers``, ``skip``) are tuples whose entries are a layer name (exact), a
layer class name (``"Conv2D"``), a layer class, or a regular expression over layer names
(``re.compile(...)`` or a string ``"re:expand_.*"``, the form recipes use).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Optional, Tuple

from edgekit.core.errors import InputError

SCHEDULES = ("constant", "cosine")


def layer_selection(value, name: str) -> Optional[tuple]:
    """A ``layers``/``skip`` value as a tuple of names, class names, classes or regexes (None stays None)."""
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
                raise InputError(
                    f"distill has unknown key {unknown[0]!r}; expected some of "
                    f"{', '.join(f.name for f in fields(DistillConfig))}"
                )
            object.__setattr__(self, "distill", DistillConfig(**self.distill))
        elif self.distill is not None and not isinstance(self.distill, DistillConfig):
            raise InputError(
                f"distill is true, a table of DistillConfig fields or a DistillConfig. "
                f"Received distill={self.distill!r}"
            )
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}. Received schedule={self.schedule!r}")
        if int(self.epochs) < 1:
            raise InputError(f"epochs must be >= 1. Received epochs={self.epochs}")
        if int(self.batch_size) < 1:
            raise InputError(f"batch_size must be >= 1. Received batch_size={self.batch_size}")
        if not float(self.learning_rate) > 0:
            raise InputError(f"learning_rate must be > 0. Received learning_rate={self.learning_rate}")


_NUMBER = (int, float)


def _kind_ok(kind: str, value) -> bool:
    """Whether a recipe value (TOML: str, int, float, bool, list, table) fits a field annotated ``kind``."""
    kind = kind.replace(" ", "")
    if kind.startswith("Optional[") and kind.endswith("]"):
        return _kind_ok(kind[len("Optional[") : -1], value)
    if isinstance(value, bool):
        return kind in ("bool", "Optional[DistillConfig]", "DistillConfig")
    if kind == "float":
        return isinstance(value, _NUMBER)
    if kind == "int":
        return isinstance(value, int)
    if kind in ("str", "Union[str,Callable]"):
        return isinstance(value, str)
    if kind == "Tuple[Tuple[str,str],...]":
        return isinstance(value, list) and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) for n in p) for p in value
        )
    if kind == "Tuple[float,...]":
        return isinstance(value, list) and all(isinstance(v, _NUMBER) and not isinstance(v, bool) for v in value)
    if kind.startswith("Tuple["):
        return isinstance(value, (list, str)) and all(
            isinstance(v, str) for v in (value if isinstance(value, list) else [])
        )
    if kind == "DistillConfig":
        return isinstance(value, dict)
    return True


_KIND_NAMES = {
    "float": "a number",
    "int": "an integer",
    "bool": "true or false",
    "str": "a string",
    "Union[str,Callable]": "a string",
    "DistillConfig": "true, false or a table of distill settings",
    "Tuple[Tuple[str,str],...]": "a list of [student layer, teacher layer] pairs",
    "Tuple[float,...]": "a list of numbers",
}


def check_types(cls, values: dict, where: str) -> None:
    """A recipe table's values against ``cls``'s field types: a one-line error naming the key,
    what it must be and what was given (``sparsity = "lots"``)."""
    kinds = {
        f.name: f.type
        if isinstance(f.type, str)
        else getattr(f.type, "__name__", None) or str(f.type).replace("typing.", "")
        for f in fields(cls)
    }
    for key, value in values.items():
        kind = kinds.get(key)
        if kind is not None and not _kind_ok(kind, value):
            bare = kind.replace(" ", "")
            bare = bare[len("Optional[") : -1] if bare.startswith("Optional[") else bare
            expected = _KIND_NAMES.get(bare, "a list of layer names" if bare.startswith("Tuple[") else bare)
            raise InputError(f"{where}: {key} must be {expected}; received {value!r}")


def config_from_dict(technique: str, values: dict, where: str):
    """A config from a recipe's table; unknown keys and values of the wrong type are errors naming
    the key and the step."""
    from edgekit.optimize.registry import get

    cls = get(technique).config
    names = {f.name for f in fields(cls)} - {"configs"}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(
            f"{where}: unknown key {unknown[0]!r} for {technique}; expected some of {', '.join(sorted(names))}"
        )
    check_types(cls, values, where)
    return cls(
        **{
            k: tuple(tuple(i) if isinstance(i, list) else i for i in v) if isinstance(v, list) else v
            for k, v in values.items()
        }
    )


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
