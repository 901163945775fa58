"""Hardware-aware search: recipes for a model tried on the target board, each trial fine-tuned,
exported, verified and benchmarked, and the Pareto front of accuracy, p50 latency and file size.

The study is Optuna's (multi-objective TPE by default, NSGA-II or random on request), stored in
``DIR/study.log`` (Optuna's journal file: nothing to install) or in a PostgreSQL database shared
by several workers (``storage="postgresql://..."``: Optuna's RDB storage with heartbeats, so a
worker killed mid-trial loses only that trial). Each trial is measured, never estimated: accuracy
of the ``.tflite`` on the test split by the device harness, p50 latency on the target (this
machine, a board over SSH), the file's size, and with ``board`` TFLM's arena and flash.

A new study first tries the demo's hand-made recipes that lie in its space
(:data:`edgekit.app.search.space.HAND_MADE`; ``hand_made=False`` leaves them out), so its front is
never worse than them. A trial whose fine-tune collapses the model (:class:`edgekit.CollapseError`)
fails with that reason and never reaches the front.

Exactly ``trials`` trials complete however many workers share the study: a worker starts a trial
only while fewer than ``trials`` are complete or running, and a trial that loses that race to
another worker is pruned before any work ("surplus"). Ctrl-C fails the running trial; the same
command continues the study.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import warnings
from typing import Callable, Dict, Optional

import numpy as np

from edgekit.app.search import space as searchspace
from edgekit.app.search.results import (
    OBJECTIVES,
    SearchResult,
    check_limits,
    collect,
    quality,
    quality_drop,
    save_results,
)
from edgekit.app.search.study import (
    SAMPLERS,
    check_identity,
    constraints_of,
    data_fingerprint,
    is_surplus,
    model_fingerprint,
    next_slot,
    open_study,
    opening,
    worker_id,
)
from edgekit.app.search.trial import measure_baseline, run_trial
from edgekit.core.errors import CollapseError, EdgekitDeprecationWarning, EdgekitError, InputError, renamed
from edgekit.core.task import Task

# what a search directory holds (a directory holding anything else is not resumed into)
STUDY_FILES = frozenset(
    {"study.log", "study.log.lock", "search.json", "pareto.png", "test.npz", "trials", "front", "front.tmp"}
)
__all__ = ["Limits", "OBJECTIVES", "SAMPLERS", "SearchResult", "Target", "check_search_dir", "search"]


def check_search_dir(directory: str) -> None:
    """``directory`` is new, empty or a search's own (continued): never a folder of other files."""
    if not os.path.lexists(directory):
        parent = os.path.dirname(os.path.abspath(directory))
        if not os.path.isdir(parent):
            raise InputError(f"-o directory does not exist: {parent}")
        return
    if not os.path.isdir(directory) or os.path.islink(directory):
        raise InputError(f"{directory} is not a directory; give the search's directory")
    others = sorted(set(os.listdir(directory)) - STUDY_FILES)
    if others:
        raise InputError(
            f"{directory} holds files a search does not write ({others[0]} ...); give a new or empty "
            "directory, or an earlier search's to continue it"
        )


@dataclasses.dataclass(frozen=True)
class Limits:
    """What every reported point must meet: ``max_drop`` below the float32 model in the task's unit
    (accuracy points; for regression percent of its MAE, :func:`quality_drop`), ``max_latency`` ms
    p50, ``max_size`` KB (1000 bytes) of file, and fitting ``board``."""

    max_drop: Optional[float] = None
    max_latency: Optional[float] = None
    max_size: Optional[float] = None

    def __post_init__(self):
        for name in ("max_drop", "max_latency", "max_size"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise InputError("{%s} must be a number >= 0; received {value}" % name, params=name, value=v)

    def violations(self, m: dict, baseline: dict) -> Dict[str, float]:
        """How far trial measurements ``m`` are beyond each limit (> 0: beyond)."""
        out = {}
        if self.max_drop is not None:
            out["max_drop"] = quality_drop(baseline, m) - self.max_drop
        if self.max_latency is not None:
            out["max_latency"] = m["p50_ms"] - self.max_latency
        if self.max_size is not None:
            out["max_size"] = m["size_bytes"] / 1000 - self.max_size
        if m.get("fits") is not None:
            out["board"] = 0.0 if m["fits"] else 1.0
        return out

    def met(self, m: dict, baseline: dict) -> bool:
        """Whether trial measurements ``m`` meet every limit."""
        return max(self.violations(m, baseline).values(), default=0) <= 0


@dataclasses.dataclass
class Target:
    """Where trials are measured: this machine, ``host`` over SSH; ``qemu`` (a CPU) also runs
    each file on ARM64 under QEMU, for correctness only; ``board`` adds TFLM's figures."""

    host: Optional[str] = None
    qemu: Optional[str] = None
    board: Optional[str] = None
    runs: int = 100
    warmup: int = 10
    threads: int = 1
    ssh_config: Optional[str] = None  # with host: an OpenSSH client config (ssh -F)
    remote_python: Optional[str] = None  # with host: the board's python (edgekit device setup's venv)

    def label(self) -> str:
        return self.host or "this machine"


class _Objective:
    """One trial: its slot checked, its choices asked, then run (or an earlier measurement reused)."""

    def __init__(self, st, trials, space, model, ds, directory, target, inputs, seed, log, task):
        self.st, self.trials, self.space, self.model, self.ds, self.task = st, trials, space, model, ds, task
        self.directory, self.target, self.inputs, self.seed, self.log = directory, target, inputs, seed, log
        self.batchnorm = any(type(l).__name__ == "BatchNormalization" for l in model.layers)
        self.failures = []  # this worker's failed trials in a row
        self.collapses = []  # and its collapsed ones

    def check_failures(self, most: int = 5) -> None:
        """Stop after ``most`` failed trials in a row (the target or the model is at fault, not a
        recipe), or as many collapsed trials in a row as the study has trials (the space is)."""
        if len(self.failures) >= most:
            raise EdgekitError(f"{most} trials in a row failed; the last: {self.failures[-1]}")
        if len(self.collapses) >= max(most, self.trials):
            raise InputError(
                f"{len(self.collapses)} trials in a row collapsed the model; narrow the search space (lower "
                f"channel_ratio, sparsity or learning_rate) or fine-tune longer. The last: {self.collapses[-1]}"
            )

    def __call__(self, trial):
        from optuna.exceptions import TrialPruned
        from optuna.trial import TrialState

        st, log = self.st, self.log
        if is_surplus(st, trial, self.trials):
            trial.set_user_attr("surplus", True)
            raise TrialPruned(f"{self.trials} trials are complete or running")
        trial.set_user_attr("worker", worker_id())
        params = searchspace.suggest(trial, self.space)
        name = searchspace.describe(params)
        trial.set_user_attr("name", name)
        same = next(
            (
                t
                for t in st.get_trials(deepcopy=False, states=(_complete(),))
                if t.params == trial.params and "measured" in t.user_attrs
            ),
            None,
        )
        if same is not None:  # a small space repeats itself: the measurement is the earlier trial's
            trial.set_user_attr("duplicate_of", same.number)
            trial.set_user_attr("measured", same.user_attrs["measured"])
            log(f"trial {trial.number}: {name}: as trial {same.number}, not run again")
            self.failures.clear()
            self.collapses.clear()
            return tuple(same.values)
        wrecked = next(
            (
                t
                for t in st.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                if t.params == trial.params and t.user_attrs.get("collapsed")
            ),
            None,
        )
        t0 = time.perf_counter()
        try:
            if wrecked is not None:  # nor is a recipe that collapsed the model
                trial.set_user_attr("duplicate_of", wrecked.number)
                raise CollapseError(f"as trial {wrecked.number}, not run again: {wrecked.user_attrs['error']}")
            m = run_trial(
                trial,
                params,
                self.model,
                self.ds,
                self.directory,
                self.target,
                self.inputs,
                self.seed,
                self.batchnorm,
                self.task,
            )
        except EdgekitError as exc:
            reason = " ".join(str(exc).split())[:300]
            trial.set_user_attr("error", reason)
            if isinstance(exc, CollapseError):  # the recipe's fault, not the target's or the model's
                trial.set_user_attr("collapsed", True)
                self.collapses.append(reason)
            else:
                self.failures.append(reason)
            log(f"trial {trial.number} ({name}) failed: {exc}")
            raise
        self.failures.clear()
        self.collapses.clear()
        m["seconds"] = round(time.perf_counter() - t0, 1)
        trial.set_user_attr("measured", m)
        log(
            f"trial {trial.number}: {name}: {Task(self.task).metric} {m['quality']:.4g}, p50 {m['p50_ms']:.3f} ms, "
            f"{m['size_bytes'] / 1024:,.1f} KiB ({m['seconds']:.0f} s)"
        )
        return m["quality"], m["p50_ms"], m["size_bytes"]


def _dataset(model, x, y, validation_data):
    """The train and test splits the search uses: ``x`` itself when it holds both (a Dataset or a
    ``--data`` spec), else ``(x, y)`` and ``validation_data``."""
    from edgekit.core.data import Dataset, load_data
    from edgekit.core.samples import validation_pair

    if isinstance(x, (str, os.PathLike, Dataset)):
        if y is not None or validation_data is not None:
            raise InputError(
                "{x} holds both splits here: give {y} and {validation_data} only with arrays",
                params=("x", "y", "validation_data"),
            )
        spec = os.fspath(x) if not isinstance(x, Dataset) else None
        return load_data(spec, input_shape=tuple(model.inputs[0].shape[1:])) if spec else x
    x_test, y_test = validation_pair(validation_data)
    if y is None or x_test is None or y_test is None:
        raise InputError(
            "search needs labelled training data {x}, {y} and {validation_data} (x, y) to measure trials on",
            params=("x", "y", "validation_data"),
        )
    return Dataset("arrays", np.asarray(x), np.asarray(y), np.asarray(x_test), np.asarray(y_test))


def _legacy_form(x, y, directory, legacy: dict):
    """(x, y, directory) of a call in the older forms ``search(model, data, directory)`` and
    ``data=``, with a warning; anything else left in ``legacy`` is an unknown keyword."""
    x = renamed(legacy, "data", "x", x)
    if isinstance(y, (str, os.PathLike)) and directory is None:  # search(model, data, directory)
        warnings.warn(
            "search(model, data, directory) is now search(model, x, directory=...); the old form will be removed "
            "in the next release",
            EdgekitDeprecationWarning,
            stacklevel=3,  # the caller of search()
        )
        y, directory = None, os.fspath(y)
    if legacy:
        raise TypeError(f"search() got an unexpected keyword argument '{next(iter(legacy))}'")
    if directory is None:
        raise InputError("search needs {directory}, the study's directory", params="directory")
    return x, y, directory


def _open(
    model, ds, directory, space, limits, target, storage, study, sampler, seed, heartbeat, trials, log, hand, task
):
    """The study (created, or continued and checked to be the same search), its float32 baseline
    (measured once per study) and the harness's test inputs in ``directory``."""
    created = not os.path.lexists(directory)
    os.makedirs(os.path.join(directory, "trials"), exist_ok=True)
    try:
        with opening(storage):  # workers starting together: one creates the study, the others then load it
            return _open_locked(
                model,
                ds,
                directory,
                space,
                limits,
                target,
                storage,
                study,
                sampler,
                seed,
                heartbeat,
                trials,
                log,
                hand,
                task,
            )
    except BaseException:
        if created:  # nothing of a search that never started is left behind
            shutil.rmtree(directory, ignore_errors=True)
        raise


def _open_locked(
    model, ds, directory, space, limits, target, storage, study, sampler, seed, heartbeat, trials, log, hand, task
):
    # the sampler's constraints read the baseline the study stores (measured below when new)
    st = open_study(
        directory,
        storage,
        study,
        sampler,
        seed,
        constraints_of(limits, lambda: st.user_attrs.get("baseline")),
        heartbeat,
        trials,
        maximize_quality=task == "classification",
    )
    check_identity(st, model_fingerprint(model), data_fingerprint(ds), space)
    inputs = os.path.join(directory, "test.npz")  # the test split, for the harness's accuracy
    if not os.path.isfile(inputs):
        ds.save_test_npz(inputs)
    baseline = st.user_attrs.get("baseline")
    if not baseline:  # the first worker measures it, under the lock: the others find it
        log(f"measuring the input model as float32 on {target.label()} ...")
        baseline = measure_baseline(model, ds, directory, target, inputs, seed, task)
        st.set_user_attr("baseline", baseline)
        for name, params in (searchspace.hand_made(space) if hand else {}).items():  # tried first, in this order
            st.enqueue_trial(params, user_attrs={"hand_made": name}, skip_if_exists=True)
    return st, baseline, inputs


def search(
    model,
    x=None,
    y=None,
    *,
    directory: Optional[str] = None,
    validation_data=None,
    trials: int = 24,
    space: Optional[dict] = None,
    limits: Limits = Limits(),
    target: Optional[Target] = None,
    storage: Optional[str] = None,
    study: str = "edgekit-search",
    sampler: str = "tpe",
    seed: int = 0,
    heartbeat: float = 30.0,
    log: Optional[Callable[[str], None]] = print,
    progress: Optional[bool] = None,
    hand_made: bool = True,
    **legacy,
) -> SearchResult:
    """Search recipes for ``model`` (a Keras model or its file) until ``trials`` trials of the study
    are complete, then write ``directory/search.json``, ``pareto.png`` and ``front/`` (see the
    module doc); running it again continues the study. Each trial is fine-tuned on ``(x, y)`` and
    measured on ``validation_data`` ``(x, y)``; ``x`` may instead hold both splits (a
    :class:`edgekit.Dataset` or a ``--data`` spec, as Keras takes a dataset), with ``y`` and
    ``validation_data`` left out. ``space``: dimensions replacing those of
    :data:`edgekit.app.search.space.DEFAULT_SPACE` (see :func:`edgekit.app.search.space.load_space`).
    The older form ``search(model, data, directory)`` still works, with a warning."""
    from edgekit.core.progress import Progress
    from edgekit.core.saving import as_tf_keras, load_keras_model

    x, y, directory = _legacy_form(x, y, directory, legacy)
    log = log or (lambda _msg: None)
    target = target or Target()
    space = searchspace.load_space(overrides=space)  # checked, whoever built it
    check_search_dir(directory)
    if int(trials) < 1:
        raise InputError("{trials} must be >= 1; received {value}", params="trials", value=trials)
    compiled = getattr(model, "loss", None)  # a Keras 3 model's, which the translation does not keep
    model = load_keras_model(model) if isinstance(model, (str, os.PathLike)) else as_tf_keras(model)
    ds = _dataset(model, x, y, validation_data)
    if not ds.has_labels:
        raise InputError("the search data has no labels (y); accuracy and MAE need them")
    task = _task(model, ds, compiled)
    st, baseline, inputs = _open(
        model,
        ds,
        directory,
        space,
        limits,
        target,
        storage,
        study,
        sampler,
        seed,
        heartbeat,
        trials,
        log,
        hand_made,
        task,
    )
    bar = Progress("search", enabled=progress, delay=0.0)

    objective = _Objective(st, trials, space, model, ds, directory, target, inputs, seed, log, task)

    try:
        while next_slot(st, trials, poll=max(1.0, heartbeat / 4), shared=storage is not None):
            done = len(st.get_trials(deepcopy=False, states=(_complete(),)))
            bar.show(f"search: trial {done + 1} of {trials}" + _best(st, limits, baseline))
            st.optimize(objective, n_trials=1, catch=(EdgekitError,))
            objective.check_failures()
    finally:
        bar.close()
        result = collect(st, directory, storage, limits, space, baseline)
        if any(t["state"] == "COMPLETE" for t in result.trials):
            save_results(result, directory, log)
    check_limits(result, limits)
    return result


def _task(model, ds, compiled) -> str:
    """The model's task (:mod:`edgekit.core.task`): the search's quality objective is its figure,
    measured on the device — accuracy for a classifier, MAE for a regression model. A model of
    another task, or with several outputs, is a clear error, not a search on meaningless figures."""
    from edgekit.core.task import resolve
    from edgekit.device.board.harness import real_valued

    if len(model.inputs) > 1 or len(model.outputs) > 1:
        raise InputError(
            f"edgekit search measures models with one input and one output on the device; this one has "
            f"{len(model.inputs)} and {len(model.outputs)}: optimize and export it with 'edgekit optimize' and "
            f"'edgekit export', which take and report each"
        )
    found = resolve(model, y=ds.y_train, loss=compiled)
    if found.task is Task.REGRESSION and not real_valued(ds.y_test):
        raise InputError(
            "edgekit search measures a regression model's MAE on the device, whose harness reads whole-number "
            "targets as class ids: give the targets as floats with their fractions (in finer units), or optimize "
            "and export the model with 'edgekit optimize' and 'edgekit export'"
        )
    if found.task not in (Task.CLASSIFICATION, Task.REGRESSION):
        raise InputError(
            f"edgekit search measures accuracy (classifiers) or MAE (regression) on the device; this model's task is "
            f"{found}: optimize and export it with 'edgekit optimize' and 'edgekit export', which measure it by its "
            f"own figure"
        )
    return found.task.value


def _complete():
    from optuna.trial import TrialState

    return TrialState.COMPLETE


def _best(st, limits: Limits, baseline: dict) -> str:
    ok = [
        t.user_attrs["measured"]
        for t in st.get_trials(deepcopy=False, states=(_complete(),))
        if "measured" in t.user_attrs and limits.met(t.user_attrs["measured"], baseline)
    ]
    if not ok:
        return ""
    higher = baseline.get("task", "classification") == "classification"
    b = max(ok, key=lambda m: (quality(m) if higher else -quality(m), -m["p50_ms"]))
    return f" · best so far: {baseline.get('metric', 'accuracy')} {quality(b):.4g} at {b['p50_ms']:.3f} ms"
