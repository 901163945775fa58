"""Fine-tuning and recipes: techniques applied in order, each followed by a fine-tune, with what
each step achieved measured from the weights and on held-out data.

A recipe is a TOML file::

    [fine_tune]            # defaults for every step
    epochs = 2
    batch_size = 32
    learning_rate = 0.0005

    [[steps]]
    technique = "prune"    # channel_prune | factorize | prune | cluster | distill | qat
    sparsity = 0.8
    pattern = "unstructured"

    [[steps]]
    technique = "cluster"
    clusters = 16

    [[steps]]
    technique = "qat"
    epochs = 3             # a step may override the fine-tune settings

The other keys of a step are the fields of its config (:class:`ChannelPruneConfig`,
:class:`FactorizeConfig`, :class:`PruneConfig`, :class:`ClusterConfig`, :class:`DistillConfig`,
:class:`QATConfig`); lists become tuples. A ``distill`` step only fine-tunes, against the teacher;
``distill = true`` (or a table of :class:`DistillConfig` fields) in ``[fine_tune]`` or in a step
makes that fine-tune distill too, e.g. to recover after channel pruning. The teacher is the one
given to :func:`optimize` (``--distill-from``), else the recipe's input model. Collaborative optimization is
automatic: clustering after pruning keeps the zeros, QAT after pruning and/or clustering keeps
them (PQAT, CQAT, PCQAT). QAT must be the last step.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import InputError
from edgekit.optimize.configs import (
    CONFIGS,
    ChannelPruneConfig,
    ClusterConfig,
    DistillConfig,
    FactorizeConfig,
    FineTune,
    PruneConfig,
    QATConfig,
    check_types,
    config_from_dict,
)
from edgekit.optimize.weights import WeightReport, weight_report

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_FT_KEYS = {f.name for f in fields(FineTune)}


@dataclass(frozen=True)
class Step:
    technique: str
    config: object
    fine_tune: FineTune

    def describe(self) -> str:
        c = self.config
        if self.technique == "prune":
            return "prune 2:4" if c.pattern == "2:4" else f"prune {c.sparsity:g}"
        if self.technique == "cluster":
            return f"cluster {c.clusters}"
        if self.technique == "distill":
            return f"distill T={c.temperature:g} alpha={c.alpha:g}"
        if self.technique == "factorize":
            return ("factorize " + (f"rank {c.rank}" if c.rank else f"to {c.target_params:,} params"
                                    if c.target_params else f"energy {c.energy:g}"))
        if self.technique == "channel_prune":
            target = (f"to {c.target_params:,} params" if c.target_params else f"to {c.target_macs:,} MACs"
                      if c.target_macs else f"to {c.target_latency:g} ms int8 p50" if c.target_latency else f"{c.ratio:g}")
            return (f"channel prune {target}" + (f" in {c.iterations} rounds" if c.iterations > 1 else "")
                    + (f", drop {c.blocks} block(s)" if c.blocks else ""))
        return "qat"


@dataclass(frozen=True)
class Recipe:
    steps: Tuple[Step, ...]

    def __post_init__(self):
        if not self.steps:
            raise InputError("the recipe has no steps")
        for i, s in enumerate(self.steps):
            if s.technique == "qat" and i != len(self.steps) - 1:
                raise InputError(f"step {i + 1}: qat must be the last step (it writes the int8 ranges the export uses)")

    @property
    def has_qat(self) -> bool:
        return any(s.technique == "qat" for s in self.steps)

    def describe(self) -> str:
        return " → ".join(s.describe() for s in self.steps)

    @classmethod
    def from_toml(cls, path: str) -> "Recipe":
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except FileNotFoundError:
            raise InputError(f"recipe not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path} is not valid TOML: {exc}") from None
        return cls.from_dict(doc, where=path)

    @classmethod
    def from_dict(cls, doc: dict, where: str = "recipe") -> "Recipe":
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
            raise InputError(f"{where}: steps must be a list of tables ([[steps]] with technique = ...); "
                             f"received {tables!r}")
        steps = []
        for i, table in enumerate(tables):
            at = f"{where}: step {i + 1}"
            table = dict(table)
            technique = table.pop("technique", None)
            if technique not in CONFIGS:
                raise InputError(f"{at}: technique must be one of {', '.join(CONFIGS)}; received {technique!r}")
            own = {k: table.pop(k) for k in list(table) if k in _FT_KEYS}
            check_types(FineTune, own, at)
            ft = replace(base, **own)
            steps.append(Step(technique, config_from_dict(technique, table, at), ft))
        return cls(tuple(steps))

    @classmethod
    def from_flags(cls, prune: Optional[float] = None, pattern: str = "unstructured", cluster: Optional[int] = None,
                   qat: bool = False, fine_tune: FineTune = FineTune(), qat_skip: Sequence[str] = (),
                   channel_prune: Optional[ChannelPruneConfig] = None, factorize: Optional[FactorizeConfig] = None,
                   distill: Optional[DistillConfig] = None) -> "Recipe":
        """Steps in the fixed order channel prune → factorize → prune → cluster → qat. With
        ``distill`` every fine-tune distills from the teacher; alone, it is one distill step."""
        if distill is not None:
            fine_tune = replace(fine_tune, distill=distill)
        steps = [Step("channel_prune", channel_prune, fine_tune)] if channel_prune is not None else []
        if factorize is not None:
            steps.append(Step("factorize", factorize, fine_tune))
        if prune is not None or pattern == "2:4":
            steps.append(Step("prune", PruneConfig(sparsity=prune if prune is not None else 0.5, pattern=pattern),
                              fine_tune))
        if cluster is not None:
            steps.append(Step("cluster", ClusterConfig(clusters=cluster), fine_tune))
        if qat:
            steps.append(Step("qat", QATConfig(skip=tuple(qat_skip)), fine_tune))
        if not steps and distill is not None:
            steps.append(Step("distill", distill, fine_tune))
        if not steps:
            raise InputError("nothing to do: give --recipe R.toml or at least one of --channel-prune, --target-params, "
                             "--target-macs, --factorize-*, --prune, --cluster, --distill-from, --qat")
        return cls(tuple(steps))


def fine_tune(model, x, y, settings: FineTune = FineTune(), *, loss="sparse_categorical_crossentropy",
              metrics=("accuracy",), verbose=0, seed: int = 0, teacher=None):
    """Compile ``model`` with Adam at ``settings.learning_rate`` (constant, or cosine-decayed to 0
    with ``schedule="cosine"``) and fit it (the callbacks the optimization verbs wired into
    ``model.fit`` come along). With ``settings.distill`` the fit runs through a
    :class:`~edgekit.optimize.distill.Distiller` against ``teacher`` (``loss`` is then the
    distillation loss; the default cross-entropy reads logits unless the model ends in softmax).
    Returns the Keras History."""
    from edgekit._compat import keras

    keras.utils.set_random_seed(seed)
    if loss == "sparse_categorical_crossentropy":
        check_labels(model, y, "y")
    lr = settings.learning_rate
    if settings.schedule == "cosine":
        steps = settings.epochs * int(np.ceil(len(x) / settings.batch_size))
        lr = keras.optimizers.schedules.CosineDecay(lr, max(1, steps))
    trained = model
    if settings.distill is not None:
        from edgekit.optimize.distill import Distiller

        if teacher is None:
            raise InputError("a distilling fine-tune needs a teacher model (optimize(teacher=...), "
                             "--distill-from TEACHER.keras)")
        trained = Distiller(model, teacher, settings.distill)
        trained.compile(keras.optimizers.Adam(lr), metrics=list(metrics))
    else:
        if loss == "sparse_categorical_crossentropy":
            from edgekit.optimize.distill import emits_probabilities

            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not emits_probabilities(model))
        model.compile(keras.optimizers.Adam(lr), loss=loss, metrics=list(metrics))
    create_fit_variables(trained, x, y)
    return trained.fit(x, y, batch_size=settings.batch_size, epochs=settings.epochs, verbose=verbose, shuffle=True)


def check_labels(model, y, what: str) -> None:
    """Class-id labels must be classes of ``model``'s output (0 … units − 1)."""
    if y is None:
        return
    y = np.asarray(y)
    if not y.size:
        return
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"`{what}` must hold integer class ids; received {y.dtype}")
    classes = int(model.outputs[0].shape[-1])
    if y.min() < 0 or y.max() >= classes:
        raise InputError(f"`{what}` holds class ids {int(y.min())}..{int(y.max())}, but the model's output has "
                         f"{classes} classes (0..{classes - 1}): pass labels of this model's classes")


def create_fit_variables(model, x, y) -> None:
    """Create a compiled model's optimizer slots and its loss's and metrics' state before ``fit``,
    so that ``fit`` traces its train step once: a first trace that creates variables is traced a
    second time (measured: the first epoch of the pruned demo model 38 s → 30 s, the unwrapped
    one 12.5 s → 8.9 s; later epochs 5 s)."""
    import tensorflow as tf

    model.optimizer.build(model.trainable_variables)
    y_pred = model(x[:2], training=False)
    if model.compiled_loss is not None:
        model.compiled_loss.build(y_pred)
    if y is not None and model.compiled_metrics is not None:
        model.compiled_metrics.build(y_pred, tf.convert_to_tensor(y[:2]))


def accuracy(model, x, y, batch_size: int = 256) -> float:
    """Top-1 accuracy of a classifier (per position for a sequence model's (N, T, classes) output
    with (N, T) labels)."""
    out = model.predict(x, batch_size=batch_size, verbose=0)
    y = np.asarray(y)
    if out.ndim == y.ndim + 1:
        return float(np.mean(out.argmax(axis=-1) == y))
    return float(np.mean(out.reshape(len(out), -1).argmax(axis=1) == y.reshape(-1)))


@dataclass(frozen=True)
class StepResult:
    step: str
    technique: str
    config: dict
    weights: WeightReport
    accuracy: Optional[float]
    seconds: float
    details: Optional[dict] = None  # channel pruning: widths, params, MACs, dropped blocks; factorize: ranks


@dataclass
class OptimizeResult:
    """The optimized model (stripped; QAT-wrapped when the last step was QAT) and per step what
    it achieved."""

    model: object
    baseline_accuracy: Optional[float]
    steps: List[StepResult] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"baseline_accuracy": self.baseline_accuracy, "warnings": self.warnings,
                "steps": [{"step": s.step, "technique": s.technique, "config": s.config, "accuracy": s.accuracy,
                           "seconds": s.seconds, "weights": s.weights.to_dict(),
                           **({("factorize" if s.technique == "factorize" else "channels"): s.details}
                              if s.details else {})} for s in self.steps]}


def _lost(before: WeightReport, after: WeightReport) -> List[str]:
    """Layers whose zeros or clusters did not survive quantization-aware training."""
    notes = []
    for b, a in zip(before.layers, after.layers):
        if b.zeros >= 0.3 and a.zeros < b.zeros - 0.1:
            notes.append(f"{b.layer}: zeros {b.zeros:.2f} → {a.zeros:.2f} after QAT")
        elif b.unique <= 256 and b.params >= 8 * b.unique and a.unique > 2 * b.unique:
            notes.append(f"{b.layer}: {b.unique} distinct values → {a.unique} after QAT")
    if notes:
        notes.append("tfmot's sparsity/cluster-preserving QAT does not keep them for every layer pattern "
                     "(measured: a Conv2D followed by a separate ReLU layer loses them; Conv2D→BatchNorm→ReLU keeps them)")
    return notes


def _config_dict(config) -> dict:
    d = asdict(config)
    d.pop("configs", None)
    if callable(d.get("importance")):
        d["importance"] = getattr(d["importance"], "__name__", "function")
    return {k: (list(map(str, v)) if isinstance(v, tuple) else v) for k, v in d.items()}


def optimize(model, recipe: Recipe, x, y, *, x_test=None, y_test=None, log=None, seed: int = 0,
             teacher=None) -> OptimizeResult:
    """Apply the recipe's steps in order to a copy of ``model``, fine-tuning after each on
    ``(x, y)``; accuracy on ``(x_test, y_test)`` before and after each step. Distilling
    fine-tunes learn from ``teacher``, by default ``model`` as it came in."""
    from edgekit.optimize.factorize import factorize_report
    from edgekit.optimize.techniques import cluster, copy_model, prune, qat, strip

    verbs = {"prune": prune, "cluster": cluster, "qat": qat}
    log = log or (lambda msg: None)
    check_labels(model, y, "y")
    check_labels(model, y_test, "y_test")
    has_test = x_test is not None and y_test is not None
    result = OptimizeResult(model=None, baseline_accuracy=accuracy(model, x_test, y_test) if has_test else None)
    current = model
    for i, step in enumerate(recipe.steps):
        t0 = time.perf_counter()
        log(f"[{i + 1}/{len(recipe.steps)}] {step.describe()}, fine-tune {step.fine_tune.epochs} epoch(s) ...")
        details = None
        ft = replace(step.fine_tune, distill=step.config) if step.technique == "distill" else step.fine_tune
        if step.technique == "distill" and teacher is None and i == 0:
            raise InputError("a first distill step without a teacher would learn from the model itself: pass a "
                             "teacher (--distill-from TEACHER.keras, optimize(teacher=...))")
        step_teacher = teacher if teacher is not None else model
        if step.technique == "channel_prune":
            current, details = _channel_prune(current, replace(step, fine_tune=ft), x, y, seed, log, step_teacher)
        elif step.technique in ("factorize", "distill"):
            if step.technique == "factorize":
                rep = factorize_report(current, step.config)
                current, details = rep.model, rep.to_dict()
            else:
                current = copy_model(current)
            fine_tune(current, x, y, ft, seed=seed, teacher=step_teacher)
        else:
            wrapped = verbs[step.technique](current, step.config)
            fine_tune(wrapped, x, y, ft, seed=seed, teacher=step_teacher)
            current = strip(wrapped)
        acc = accuracy(current, x_test, y_test) if has_test else None
        if step.technique == "qat" and result.steps:
            result.warnings += _lost(result.steps[-1].weights, weight_report(current))
        result.steps.append(StepResult(step.describe(), step.technique, _config_dict(step.config), weight_report(current), acc,
                                       time.perf_counter() - t0, details))
    result.model = current
    return result


def _channel_prune(model, step: Step, x, y, seed: int, log, teacher=None):
    """Channel pruning in ``iterations`` rounds, each: surgery, BatchNorm statistics re-estimated
    on ``x``, fine-tune. Returns the model and what changed from the first round's input to the
    last round's output (widths, params, MACs, dropped blocks)."""
    from edgekit.optimize.channels import channel_prune_report, layer_widths, reestimate_batchnorm

    c = step.config
    rounds = int(c.iterations)
    per_round = 1.0 - (1.0 - float(c.ratio)) ** (1.0 / rounds)
    reports = []
    for r in range(rounds):
        # blocks are dropped in the first round only
        rep = channel_prune_report(model, replace(c, ratio=per_round, iterations=1, blocks=c.blocks if r == 0 else 0)
                                   if rounds > 1 else c, calib=x)
        reports.append(rep)
        model = rep.model
        reestimate_batchnorm(model, x)
        fine_tune(model, x, y, step.fine_tune, seed=seed, teacher=teacher)
        if rounds > 1:
            log(f"      round {r + 1}/{rounds}: {rep.params[1]:,} params, {rep.macs[1]:,} MACs")
    first, last = reports[0], reports[-1]
    widths = layer_widths(model)
    details = first.to_dict()
    details.update(params=[first.params[0], last.params[1]], macs=[first.macs[0], last.macs[1]],
                   widths={k: [v[0], widths[k]] for k, v in first.widths.items() if k in widths},
                   ratio=float(c.ratio) if rounds > 1 else first.ratio)
    return model, details
