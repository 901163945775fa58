"""Fine-tuning and recipes: techniques applied in order, each followed by a fine-tune, with what
each step achieved measured from the weights and on held-out data.

A recipe is a TOML file::

    [fine_tune]            # defaults for every step
    epochs = 2
    batch_size = 32
    learning_rate = 0.0005

    [[steps]]
    technique = "prune"    # any registered technique: channel_prune | factorize | prune | cluster | distill | qat
    sparsity = 0.8
    pattern = "unstructured"

    [[steps]]
    technique = "cluster"
    clusters = 16

    [[steps]]
    technique = "qat"
    epochs = 3             # a step may override the fine-tune settings

The other keys of a step are the fields of its technique's config
(:mod:`edgekit.optimize.registry`: ``ChannelPruneConfig``, ``FactorizeConfig``, ``PruneConfig``,
``ClusterConfig``, ``DistillConfig``, ``QATConfig``, and any technique registered since); lists
become tuples. A ``distill`` step only fine-tunes, against the teacher;
``distill = true`` (or a table of :class:`DistillConfig` fields) in ``[fine_tune]`` or in a step
makes that fine-tune distill too, e.g. to recover after channel pruning. The teacher is the one
given to :func:`optimize` (``--distill-from``), else the recipe's input model. Collaborative optimization is
automatic: clustering after pruning keeps the zeros, QAT after pruning and/or clustering keeps
them (PQAT, CQAT, PCQAT). QAT must be the last step.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from typing import Any, Callable, List, Optional, Sequence, Tuple

from edgekit.core.errors import CollapseError, InputError, Message, python_name, renamed, render
from edgekit.core.io import read_toml
from edgekit.core.results import Result, fmt, table
from edgekit.core.samples import fit_inputs, input_specs, output_names, rows, validation_pair
from edgekit.core.saving import as_tf_keras
from edgekit.core.task import Task, baseline, check_targets, quality, resolve_each, score, split_outputs, targets
from edgekit.optimize import registry
from edgekit.optimize.common import check_model
from edgekit.optimize.configs import FineTune, check_types, config_from_dict
from edgekit.optimize.finetune import check_labels, collapse_bound, collapsed
from edgekit.optimize.weights import WeightReport, weight_report

_FT_KEYS = {f.name for f in fields(FineTune)}


@dataclass(frozen=True)
class Step:
    technique: str
    config: object
    fine_tune: FineTune = FineTune()

    def __post_init__(self):
        tech = registry.get(self.technique)
        if type(self.config) is not tech.config:
            raise InputError(
                f"a {self.technique} step takes a {tech.config.__name__}; received {type(self.config).__name__}"
            )

    def describe(self) -> str:
        return registry.get(self.technique).describe(self.config)


@dataclass(frozen=True)
class Recipe:
    """Steps in order, each a technique's config and its fine-tune."""

    steps: Tuple[Step, ...]

    def __post_init__(self):
        if not self.steps:
            raise InputError("the recipe has no steps")
        for i, s in enumerate(self.steps):
            if registry.get(s.technique).last and i != len(self.steps) - 1:
                raise InputError(
                    f"step {i + 1}: {s.technique} must be the last step (it writes the int8 ranges the export uses)"
                )

    @property
    def has_qat(self) -> bool:
        return any(s.technique == "qat" for s in self.steps)

    def describe(self) -> str:
        return " → ".join(s.describe() for s in self.steps)

    @classmethod
    def from_toml(cls, path: str) -> "Recipe":
        doc = read_toml(path, "recipe")
        return cls.from_dict(doc, where=path)

    @classmethod
    def from_dict(cls, doc: dict, where: str = "recipe") -> "Recipe":
        """A recipe from a TOML document's tables: ``[fine_tune]`` defaults and ``[[steps]]`` with
        ``technique`` and its config's fields (a step may override fine-tune keys)."""
        unknown = sorted(set(doc) - {"fine_tune", "steps"})
        if unknown:
            raise InputError(f"{where}: unknown table {unknown[0]!r}; a recipe has [fine_tune] and [[steps]]")
        defaults = doc.get("fine_tune", {})
        if not isinstance(defaults, dict):
            raise InputError(f"{where}: fine_tune must be a table ([fine_tune]); received {defaults!r}")
        bad = sorted(set(defaults) - _FT_KEYS)
        if bad:
            raise InputError(f"{where}: [fine_tune] has unknown key {bad[0]!r}; expected {', '.join(sorted(_FT_KEYS))}")
        check_types(FineTune, defaults, f"{where}: [fine_tune]")
        base = FineTune(**defaults)
        tables = doc.get("steps", [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise InputError(
                f"{where}: steps must be a list of tables ([[steps]] with technique = ...); received {tables!r}"
            )
        steps = []
        for i, table_ in enumerate(tables):
            at = f"{where}: step {i + 1}"
            table_ = dict(table_)
            technique = table_.pop("technique", None)
            try:
                registry.get(technique)
            except InputError as exc:
                raise InputError(f"{at}: {exc}") from None
            own = {k: table_.pop(k) for k in list(table_) if k in _FT_KEYS}
            check_types(FineTune, own, at)
            steps.append(Step(technique, config_from_dict(technique, table_, at), replace(base, **own)))
        return cls(tuple(steps))

    @classmethod
    def of(cls, configs: Sequence[object], fine_tune: FineTune = FineTune()) -> "Recipe":
        """One step per config, in the registry's step order (channel prune → factorize → prune →
        cluster → distill → qat), each with ``fine_tune``."""
        steps = [Step(registry.of_config(c).name, c, fine_tune) for c in configs]
        return cls(tuple(sorted(steps, key=lambda s: registry.get(s.technique).order)))


@dataclass(frozen=True)
class StepResult:
    step: str
    technique: str
    config: dict
    weights: WeightReport
    score: Optional[float]  # the task's figure on the validation data after the step (accuracy, MAE …)
    seconds: float
    # What the technique reports (channel pruning: widths …; factorize: ranks): a result with
    # to_dict() and summary(label), or None.
    details: Optional[Result] = None
    task: str = "classification"
    outputs: dict = field(default_factory=dict)  # several outputs: the others' figures by name

    @property
    def accuracy(self) -> Optional[float]:
        """The score of a classifier (None for other tasks)."""
        return self.score if self.task == "classification" else None


@dataclass
class OptimizeResult(Result):
    """The optimized model (stripped; QAT-wrapped when the last step was QAT) and per step what
    it achieved."""

    model: object
    baseline_score: Optional[float]  # the task's figure of the input model on the validation data
    steps: List[StepResult] = field(default_factory=list)
    warnings: List[Any] = field(default_factory=list)  # text, or Messages naming parameters
    # the figure of a model that learned nothing (edgekit.core.task.baseline): the most frequent
    # class's accuracy, the error of always answering the mean target / sample
    chance: Optional[float] = None
    task: str = "classification"  # the (first) output's, by which the steps are scored
    task_reason: str = ""
    output_tasks: List[str] = field(default_factory=list)  # every output's task, in the outputs' order
    baseline_outputs: dict = field(default_factory=dict)  # several outputs: the others' figures, by name

    @property
    def metric(self) -> str:
        return Task(self.task).metric

    @property
    def baseline_accuracy(self) -> Optional[float]:
        """The input model's accuracy, for a classifier (None for other tasks)."""
        return self.baseline_score if self.task == "classification" else None

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "task_reason": self.task_reason,
            "output_tasks": self.output_tasks,
            "baseline_outputs": self.baseline_outputs,
            "metric": self.metric,
            "baseline_score": self.baseline_score,
            "baseline_accuracy": self.baseline_accuracy,
            "chance": self.chance,
            "warnings": [str(w) for w in self.warnings],
            "steps": [
                {
                    "step": s.step,
                    "technique": s.technique,
                    "config": s.config,
                    "score": s.score,
                    "accuracy": s.accuracy,
                    "seconds": s.seconds,
                    "weights": s.weights.to_dict(),
                    **(
                        {registry.get(s.technique).details_key or s.technique: s.details.to_dict()}
                        if s.details is not None
                        else {}
                    ),
                }
                for s in self.steps
            ],
        }

    def summary(self, name=python_name) -> str:
        """The steps with accuracy, zeros, distinct values and params; the last model's layers;
        what each technique reported; the warnings."""
        spec = ".4f" if self.task == "classification" else ".4g"  # accuracy to 4 places, errors to 4 digits
        rows = [["(input)", "", fmt(self.baseline_score, spec), "", "", ""]]
        if self.chance is not None:
            nothing = (
                "the most frequent class"
                if self.task == "classification"
                else "always the mean target"
                if self.task == "regression"
                else "always the mean sample"
            )
            rows.append([f"(chance: {nothing})", "", fmt(self.chance, spec), "", "", ""])
        for s in self.steps:
            w = s.weights
            rows.append(
                [
                    s.step,
                    f"{s.seconds:.1f}",
                    fmt(s.score, spec),
                    f"{w.zeros:.3f}",
                    f"{max(l.unique for l in w.layers):,}" if w.layers else "-",
                    f"{w.params:,}",
                ]
            )
        lines = [
            table(("step", "seconds", f"test {self.metric}", "zeros (kernels)", "max distinct/kernel", "params"), rows),
            self.steps[-1].weights.summary(),
        ]
        for output, base in self.baseline_outputs.items():
            after = ", ".join(f"{s.step} {fmt(s.outputs.get(output), '.4g')}" for s in self.steps)
            lines.append(f"output {output} (test {base[0]}): input {fmt(base[1], '.4g')}, {after}")
        for s in self.steps:
            if s.details is not None:
                lines.append(s.details.summary(label=s.step))
        return "\n".join(lines + [f"warning: {render(w, name)}" for w in self.warnings])


def _lost(before: WeightReport, after: WeightReport) -> List[str]:
    """Layers whose zeros or clusters did not survive quantization-aware training."""
    notes = []
    for b, a in zip(before.layers, after.layers):
        if b.zeros >= 0.3 and a.zeros < b.zeros - 0.1:
            notes.append(f"{b.layer}: zeros {b.zeros:.2f} → {a.zeros:.2f} after QAT")
        elif b.unique <= 256 and b.params >= 8 * b.unique and a.unique > 2 * b.unique:
            notes.append(f"{b.layer}: {b.unique} distinct values → {a.unique} after QAT")
    if notes:
        notes.append(
            "tfmot's sparsity/cluster-preserving QAT does not keep them for every layer pattern "
            "(measured: a Conv2D followed by a separate ReLU layer loses them; Conv2D→BatchNorm→ReLU keeps them)"
        )
    return notes


def _worse(task: Task, start: float, end: float) -> str:
    """How much worse ``end`` is than ``start``, in the task's words."""
    if task.higher_is_better:
        return f"{100 * (start - end):.1f} points"
    return f"{100 * (end - start) / start:+.0f}%" if start > 0 else f"+{end - start:.4g}"


def _far_below(step: Step, task: Task, value: float, baseline: float, samples: int) -> Message:
    ft = step.fine_tune
    steps = ft.epochs * -(-samples // ft.batch_size)
    return Message(
        "{step}: test {metric} {value:.4g} after its fine-tune, {worse} worse than the input model's "
        "{baseline:.4g}: the fine-tune ({steps} steps at learning rate {lr:g}) is too short or too fast to "
        "recover; fine-tune longer ({epochs}), at a lower {learning_rate}, or distill from the input model "
        "({distill})",
        params=("epochs", "learning_rate", "distill"),
        step=step.describe(),
        metric=task.metric,
        value=value,
        worse=_worse(task, baseline, value),
        baseline=baseline,
        steps=steps,
        lr=ft.learning_rate,
    )


def _collapse(step: Step, task: Task, start: float, value: float, chance: float, accepted: bool) -> Message:
    what = (
        "kept, as {allow_drop} asks"
        if accepted
        else "nothing was written. Change the step (a milder setting, a longer or slower fine-tune, "
        "{distill}), or accept the drop with {allow_drop}"
    )
    bound = collapse_bound(start, chance, task.higher_is_better)
    limit = (
        f"a step may lose at most {100 * bound:.1f} points, the larger of 10 and half the distance to chance"
        if task.higher_is_better
        else f"a step may raise it by at most {bound:.4g}, the larger of 10% and half the distance to that"
    )
    nothing = "chance" if task.higher_is_better else "a model that learned nothing"
    return Message(
        "{step}: the fine-tune collapsed the model: test {metric} {start:.4g} → {value:.4g} ({worse}; "
        "{nothing} scores {chance:.4g}, and {limit}): " + what,
        params=("allow_drop",) if accepted else ("distill", "allow_drop"),
        step=step.describe(),
        metric=task.metric,
        start=start,
        value=value,
        worse=_worse(task, start, value),
        nothing=nothing,
        chance=chance,
        limit=limit,
    )


def _config_dict(config) -> dict:
    d = asdict(config)
    d.pop("configs", None)
    if callable(d.get("importance")):
        d["importance"] = getattr(d["importance"], "__name__", "function")
    return {k: (list(map(str, v)) if isinstance(v, tuple) else v) for k, v in d.items()}


def _checked(model, task, y, y_test, recipe: Recipe, teacher):
    """The model as the steps take it (a Keras 3 model translated) and each output's task, the
    labels or targets checked against each, and a teacher for a first distill step."""
    if recipe.steps[0].technique == "distill" and teacher is None:
        raise InputError(
            "a first distill step without a teacher would learn from the model itself: pass a {teacher}",
            params="teacher",
        )
    compiled = getattr(model, "loss", None)  # the translation below does not keep a Keras 3 model's
    model = check_model(model, "optimize")  # a Keras 3 model is translated, nested models inlined
    resolved = resolve_each(model, task, y, loss=compiled)
    names = output_names(model)
    if len(names) > 1 and any(s.technique == "distill" or s.fine_tune.distill for s in recipe.steps):
        raise InputError(
            f"distillation learns one output from the teacher's; this model has {len(names)} ({', '.join(names)}): "
            f"fine-tune it without distilling"
        )
    for name, r, labels, held_out in zip(names, resolved, split_outputs(y, names), split_outputs(y_test, names)):
        check = check_labels if r.task is Task.CLASSIFICATION else partial(check_targets, r.task)
        check(model, labels, "y", output=name)
        check(model, held_out, "validation_data", output=name)
    return model, resolved


def _fit_data(model, resolved: list, x, y) -> tuple:
    """What the fine-tunes fit (:func:`edgekit.core.task.targets`) and their task settings: one
    output's, or for several outputs a list of each, every output with its labels or targets."""
    names = output_names(model)
    fits = [targets(r.task, x, part, model, i) for i, (r, part) in enumerate(zip(resolved, split_outputs(y, names)))]
    missing = [
        n
        for n, f, r in zip(names, fits, resolved)
        if f is None and (len(names) > 1 or r.task is not Task.CLASSIFICATION)
    ]
    if missing:
        raise InputError(
            "the fine-tune needs the labels or targets of output(s) {missing}: pass them in {y} (a .npz: arrays named "
            "after the outputs)",
            params="y",
            missing=", ".join(missing),
        )
    if len(names) == 1:
        return fits[0], dict(task=resolved[0].task.value, loss=resolved[0].loss)
    return fits, dict(task=[r.task.value for r in resolved], loss=[r.loss for r in resolved])


def _measured(tasks: list, x_test, y_tests: list, model) -> list:
    """Each output's task figure of ``model`` on the validation data (None without it or its labels)."""
    if x_test is None:
        return [None] * len(tasks)
    out = model.predict(x_test, batch_size=256, verbose=0)
    outs = out if isinstance(out, list) else [out]
    return [score(t, quality(t, o, y, x_test)) for t, o, y in zip(tasks, outs, y_tests)]


def _others(names, tasks, values, base: dict, chances: list, step: str) -> tuple:
    """The figures of the outputs after the first, by name, and a warning for each that collapsed
    from the input model's (:func:`collapsed`): the steps are scored by the first output only."""
    figures = dict(zip(names[1:], values[1:]))
    warnings = [
        f"{step}: output {n}'s test {t.metric} went from {base[n][1]:.4g} to {v:.4g}, further than a fine-tune's noise "
        f"(the steps are scored by output {names[0]}): fine-tune longer or check this output"
        for n, t, v, c in zip(names[1:], tasks[1:], values[1:], chances[1:])
        if collapsed(base[n][1], v, c, t.higher_is_better)
    ]
    return figures, warnings


def _judge(step: Step, task: Task, value, result: "OptimizeResult", allow_drop: bool, samples: int) -> None:
    """A step's figure against where it started (a collapse: :class:`CollapseError`, or a warning
    with ``allow_drop``) and against the input model's (far worse: a warning)."""
    start = result.steps[-1].score if result.steps else result.baseline_score
    base = result.baseline_score
    if collapsed(start, value, result.chance, task.higher_is_better):
        if not allow_drop:
            raise CollapseError(_collapse(step, task, start, value, result.chance, accepted=False))
        result.warnings.append(_collapse(step, task, start, value, result.chance, accepted=True))
        return
    if value is None or base is None:
        return
    if value < base - 0.05 if task.higher_is_better else value > base * 1.05:
        result.warnings.append(_far_below(step, task, value, base, samples))


def optimize(
    model,
    recipe: Recipe,
    x,
    y,
    *,
    validation_data=None,
    log=None,
    seed: int = 0,
    teacher=None,
    measure: Optional[Callable[[Any], float]] = None,
    allow_drop: bool = False,
    task=None,
    **legacy,
) -> OptimizeResult:
    """Apply the recipe's steps in order to a copy of ``model``, fine-tuning after each on
    ``(x, y)``, measured on ``validation_data`` ``(x, y)`` before and after each step (older names
    ``x_test``, ``y_test``) by the ``task``'s figure (:mod:`edgekit.core.task`; None: from the
    model's loss, output or ``y``): accuracy, MAE (``y`` the targets), reconstruction error (no
    ``y``). Distilling fine-tunes learn from ``teacher`` (default: ``model`` as it came in);
    ``measure`` times a model for latency budgets (:func:`edgekit.app.measure.int8_latency`).
    A step whose figure ends more than :func:`edgekit.optimize.collapse_bound` worse than its start
    raises :class:`edgekit.CollapseError` (a warning with ``allow_drop``)."""
    validation_data = renamed(legacy, ("x_test", "y_test"), "validation_data", validation_data)
    if legacy:
        raise TypeError(f"optimize() got an unexpected keyword argument '{next(iter(legacy))}'")
    x_test, y_test = validation_pair(validation_data)
    log = log or (lambda msg: None)
    model, resolved = _checked(model, task, y, y_test, recipe, teacher)
    x, x_test = (
        None if v is None else fit_inputs(v, input_specs(model), what) for v, what in ((x, "x"), (x_test, "x_test"))
    )
    names, tasks = output_names(model), [r.task for r in resolved]
    y_tests = split_outputs(y_test, names)
    task, y_test = tasks[0], y_tests[0]  # the steps are scored by the first output
    teacher = as_tf_keras(teacher) if teacher is not None else None
    # a reconstruction model's validation labels (optional) mark anomalies; its figure needs none
    has_test = x_test is not None and (y_test is not None or task is Task.RECONSTRUCTION)
    measured = partial(_measured, tasks, x_test if has_test else None, y_tests)
    chances = [baseline(t, x_test, y) if has_test else None for t, y in zip(tasks, y_tests)]
    start = measured(model)
    result = OptimizeResult(
        model=None,
        baseline_score=start[0],
        chance=chances[0],
        baseline_outputs={n: (t.metric, v) for n, t, v in zip(names[1:], tasks[1:], start[1:])},
        task=task.value,
        task_reason=(f"output {names[0]} of {len(names)}, " if len(names) > 1 else "") + resolved[0].reason,
        output_tasks=[t.value for t in tasks],
    )
    fit_y, per_task = _fit_data(model, resolved, x, y)
    current, teach = model, teacher if teacher is not None else model
    for i, step in enumerate(recipe.steps):
        t0 = time.perf_counter()
        log(f"[{i + 1}/{len(recipe.steps)}] {step.describe()}, fine-tune {step.fine_tune.epochs} epoch(s) ...")
        ctx = registry.StepContext(x, fit_y, step.fine_tune, seed, teach, log, measure, **per_task)
        current, details = registry.get(step.technique).apply(current, step.config, ctx)
        result.warnings += ctx.notes
        values = measured(current)
        value = values[0]
        _judge(step, task, value, result, allow_drop, rows(x))
        others, lost = _others(names, tasks, values, result.baseline_outputs, chances, step.describe())
        result.warnings += lost
        if step.technique == "qat" and result.steps:
            result.warnings += _lost(result.steps[-1].weights, weight_report(current))
        result.steps.append(
            StepResult(
                step.describe(),
                step.technique,
                _config_dict(step.config),
                weight_report(current),
                value,
                time.perf_counter() - t0,
                details,
                task=task.value,
                outputs=others,
            )
        )
    result.model = current
    return result
