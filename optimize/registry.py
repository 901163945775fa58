"""The technique registry: every optimization technique is one module that registers its config
type, how a recipe step applies it and how it describes itself.

Recipes (``technique = "prune"`` in TOML), ``Recipe.of``, ``edgekit optimize`` and the demo all go
through it, so adding a technique is one module and one :func:`register` call::

    @dataclass(frozen=True)
    class ScaleConfig:
        factor: float = 0.5

    @dataclass(frozen=True)
    class Scaled(Result):                     # what the report says of the step
        factor: float

        def summary(self, label="scale"):
            return f"{label}: kernels scaled by {self.factor:g}"

    def apply(model, config, step):           # step: StepContext (data, fine-tune, teacher, ...)
        new = copy_model(model)
        ...
        step.fine_tune(new)
        return new, Scaled(config.factor)     # the new model, and a Result or None

    register(Technique("scale", ScaleConfig, apply, describe=lambda c: f"scale {c.factor:g}", order=45))

Its command-line flags belong to the command line: :func:`edgekit.app.cli.optimize.add_technique_flags`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from edgekit.core.errors import InputError


@dataclass
class StepContext:
    """What a step works with: the fine-tune data and settings, the teacher of distilling
    fine-tunes, a seed, a log, ``measure`` (a function model -> ms, for latency budgets); the
    step adds to ``notes`` what it left alone, which the result's warnings report."""

    x: Any
    y: Any
    settings: Any  # FineTune
    seed: int = 0
    teacher: Any = None
    log: Callable[[str], None] = lambda msg: None
    measure: Optional[Callable[[Any], float]] = None
    notes: List[str] = field(default_factory=list)  # what the step left alone and why, for the report
    # edgekit.core.task.Task: the fine-tune's loss and metric; y holds its targets (several outputs: a list of each)
    task: Any = "classification"
    loss: Any = None  # a regression model's compiled loss, which its fine-tunes minimise

    def fine_tune(self, model, settings=None):
        from edgekit.optimize.finetune import fine_tune

        return fine_tune(
            model,
            self.x,
            self.y,
            settings or self.settings,
            seed=self.seed,
            teacher=self.teacher,
            progress="fine-tune",
            plain=self.log,
            task=self.task,
            **({"loss": self.loss} if self.loss else {}),
        )


@dataclass(frozen=True)
class Technique:
    """``apply(model, config, step)`` returns (the new model, a :class:`~edgekit.core.results.Result`
    for the report, with ``to_dict()`` and ``summary(label)``, or None) and
    leaves ``model`` untouched; ``describe(config)`` a short label ("prune 0.8"); ``order`` places
    the step in recipes built from flags; ``last``: only as the last step (QAT)."""

    name: str
    config: type
    apply: Callable
    describe: Callable[[Any], str]
    order: int = 50
    last: bool = False
    details_key: Optional[str] = None  # the report key of apply's dict (default: the technique's name)


_TECHNIQUES: Dict[str, Technique] = {}


def register(technique: Technique, replace: bool = False) -> Technique:
    if technique.name in _TECHNIQUES and not replace:
        raise InputError(f"a technique named {technique.name!r} is registered already")
    _TECHNIQUES[technique.name] = technique
    return technique


def unregister(name: str) -> None:
    _TECHNIQUES.pop(name, None)


def techniques() -> List[Technique]:
    """Registered techniques in step order."""
    return sorted(_TECHNIQUES.values(), key=lambda t: (t.order, t.name))


def get(name) -> Technique:
    if name not in _TECHNIQUES:
        raise InputError(f"technique must be one of {', '.join(t.name for t in techniques())}; received {name!r}")
    return _TECHNIQUES[name]


def of_config(config) -> Technique:
    """The technique whose config ``config`` is."""
    for t in _TECHNIQUES.values():
        if type(config) is t.config:
            return t
    raise InputError(f"{type(config).__name__} is not the config of a registered technique")
