"""Fine-tuning after a technique: the settings (:class:`FineTune`), the callbacks a wrapped model
needs in ``fit`` (:func:`callbacks`), and :func:`fine_tune`, which uses both.

The verbs never replace a model's ``fit``: in your own training loop pass
``callbacks=edgekit.optimize.callbacks(model)`` (pruning needs its step counter and, with edgekit's
schedule, the fine-tune's length, read from ``fit`` itself). A pruned model exported without ever
having stepped is an error, not a silently dense file (:func:`edgekit.core.wrappers.strip`).
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

from edgekit.core.compat import keras, tfmot
from edgekit.core.errors import InputError
from edgekit.core.layers import FitLengthSchedule
from edgekit.core.samples import rows, take
from edgekit.core.task import Task, fit_loss
from edgekit.core.wrappers import is_pruned
from edgekit.optimize.configs import FineTune


class _PruningLength(keras.callbacks.Callback):
    """Sets each :class:`FitLengthSchedule` not given a length to the batches this ``fit`` runs."""

    def __init__(self, schedules):
        super().__init__()
        self.schedules = schedules

    def on_train_begin(self, logs=None):
        pending = [s for s in self.schedules if int(s.end_step.numpy()) < 0]
        if not pending:
            return
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if not steps:
            raise InputError(
                "prune: cannot tell how many batches fit() will run; pass steps_per_epoch to fit() "
                "or PruneConfig(steps=N)"
            )
        for s in pending:
            s.set_length(int(steps) * int(epochs or 1))


def callbacks(model) -> list:
    """The Keras callbacks fitting ``model`` needs: for a pruned model tfmot's
    ``UpdatePruningStep`` and one that sets the pruning schedule's length from the ``fit`` call.
    Empty for other models."""
    if not is_pruned(model):
        return []
    schedules = []
    for layer in model.layers:
        s = getattr(layer, "pruning_schedule", None)
        if isinstance(s, FitLengthSchedule) and all(s is not t for t in schedules):
            schedules.append(s)
    return [tfmot().sparsity.keras.UpdatePruningStep(), _PruningLength(schedules)]


def check_labels(model, y, what: str, output=None) -> None:
    """Class-id labels must be classes of ``model``'s output named ``output`` (the first by
    default): 0 … units − 1."""
    if y is None:
        return
    y = np.asarray(y)
    if not y.size:
        return
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError("{%s} must hold integer class ids; received {dtype}" % what, params=what, dtype=y.dtype)
    from edgekit.core.samples import output_names

    names = output_names(model)
    classes = int(model.outputs[names.index(output) if output in names else 0].shape[-1])
    if y.min() < 0 or y.max() >= classes:
        raise InputError(
            "{%s} holds class ids {low}..{high}, but the model's output has {classes} classes "
            "(0..{last}): pass labels of this model's classes" % what,
            params=what,
            low=int(y.min()),
            high=int(y.max()),
            classes=classes,
            last=classes - 1,
        )


def create_fit_variables(model, x, y) -> None:
    """Create a compiled model's optimizer slots and its loss's and metrics' state before ``fit``,
    so that ``fit`` traces its train step once: a first trace that creates variables is traced a
    second time (measured: the first epoch of the pruned demo model 38 s → 30 s, the unwrapped
    one 12.5 s → 8.9 s; later epochs 5 s)."""
    from edgekit.core.compat import tf

    model.optimizer.build(model.trainable_variables)
    y_pred = model(take(x, slice(0, 2)), training=False)
    if model.compiled_loss is not None:
        model.compiled_loss.build(y_pred)
    if y is not None and model.compiled_metrics is not None:
        two = [np.asarray(t)[:2] for t in y] if isinstance(y, list) else np.asarray(y)[:2]
        model.compiled_metrics.build(y_pred, tf.nest.map_structure(tf.convert_to_tensor, two))


class TrainingProgress(keras.callbacks.Callback):
    """Progress of a ``fit``: on a terminal, one live tqdm line on stderr (label, steps, epoch
    n/N, loss, accuracy, elapsed and ETA); otherwise one plain line per epoch through ``plain``
    (nothing without it)."""

    def __init__(self, label: str, plain: Optional[Callable[[str], None]] = None, stream=None):
        super().__init__()
        from edgekit.core import progress

        self.label, self.plain = label, plain
        self.stream = stream or progress.live_stream()
        self.terminal = progress.is_terminal(self.stream)
        self.bar, self.epoch, self.t0 = None, 0, 0.0

    def on_train_begin(self, logs=None):
        self.epochs, self.steps = int(self.params.get("epochs") or 1), int(self.params.get("steps") or 0)
        self.t0 = time.perf_counter()
        if self.terminal:
            from tqdm import tqdm

            from edgekit.core import progress

            self.bar = tqdm(
                total=self.epochs * self.steps or None,
                desc=self.label,
                file=self.stream,
                leave=False,
                ncols=progress.columns(),
                mininterval=0.2,
                unit="step",
                bar_format="{desc} {bar:16} {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
            )

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def _metrics(self, logs) -> str:
        return " ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items() if k in ("loss", "accuracy", "val_accuracy"))

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.set_postfix_str(f"epoch {self.epoch}/{self.epochs} {self._metrics(logs)}", refresh=False)
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:  # each epoch's end is drawn, however fast the batches went
            self.bar.set_postfix_str(f"epoch {self.epoch}/{self.epochs} {self._metrics(logs)}", refresh=True)
        elif self.plain is not None:
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / self.epoch * (self.epochs - self.epoch)
            self.plain(
                f"      {self.label}: epoch {self.epoch}/{self.epochs} {self._metrics(logs)} "
                f"({elapsed:.0f} s, ETA {eta:.0f} s)"
            )

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def fine_tune(
    model,
    x,
    y,
    settings: FineTune = FineTune(),
    *,
    loss=None,
    metrics=None,
    verbose=0,
    seed: int = 0,
    teacher=None,
    progress: Optional[str] = None,
    plain: Optional[Callable[[str], None]] = None,
    task=Task.CLASSIFICATION,
):
    """Compile ``model`` with Adam at ``settings.learning_rate`` (constant, or cosine-decayed to 0
    with ``schedule="cosine"``) and fit it with the :func:`callbacks` it needs. With
    ``settings.distill`` the fit runs through a :class:`~edgekit.optimize.distill.Distiller` against
    ``teacher`` (``loss`` is then the distillation loss). ``loss`` and ``metrics`` default to the
    ``task``'s (:func:`edgekit.core.task.fit_loss`: cross-entropy, on logits unless the model ends
    in softmax, and accuracy; the mean squared error for regression and reconstruction, whose
    ``y`` are the targets). ``progress`` labels a live line (:class:`TrainingProgress`; ``plain``
    gets a line per epoch when stderr is not a terminal). Returns the Keras History."""
    keras.utils.set_random_seed(seed)
    if isinstance(task, (list, tuple)):  # several outputs: a loss each, in the outputs' order
        losses = loss if isinstance(loss, (list, tuple)) else [None] * len(task)
        loss = [fit_loss(Task.parse(t), model, keras, l, index=i) for i, (t, l) in enumerate(zip(task, losses))]
        task, metrics = Task.parse(task[0]), metrics or ()
    task = Task.parse(task)
    if metrics is None:
        metrics = ("accuracy",) if task is Task.CLASSIFICATION else ()
    if task is Task.CLASSIFICATION and loss in (None, "sparse_categorical_crossentropy"):
        check_labels(model, y, "y")
    lr = settings.learning_rate
    if settings.schedule == "cosine":
        steps = settings.epochs * int(np.ceil(rows(x) / settings.batch_size))
        lr = keras.optimizers.schedules.CosineDecay(lr, max(1, steps))
    trained = model
    if settings.distill is not None:
        from edgekit.optimize.distill import Distiller

        if teacher is None:
            raise InputError("a distilling fine-tune needs a teacher model ({teacher})", params="teacher")
        trained = Distiller(model, teacher, settings.distill, task=task)
        trained.compile(keras.optimizers.Adam(lr), metrics=list(metrics))
    else:
        if loss is None or (task is Task.CLASSIFICATION and loss == "sparse_categorical_crossentropy"):
            loss = fit_loss(task, model, keras)
        elif task is not Task.CLASSIFICATION and isinstance(loss, str):
            loss = fit_loss(task, model, keras, loss)  # the compiled regression loss, by name
        model.compile(keras.optimizers.Adam(lr), loss=loss, metrics=list(metrics))
    create_fit_variables(trained, x, y)
    shown = [TrainingProgress(progress, plain)] if progress else []
    return trained.fit(
        batches(x, y, settings.batch_size, seed),
        epochs=settings.epochs,
        verbose=verbose,
        callbacks=callbacks(model) + shown,
    )


def batches(x, y, batch_size: int, seed: int):
    """``(x, y)`` (or ``x`` alone) as a tf.data pipeline for ``fit``: reshuffled every epoch with
    ``seed``, in batches, without tf.data's autotuning thread. Keras's own pipeline for arrays
    autotunes, and ``fit`` then often waits for that thread to time out before it returns
    (measured: 8-19 s after the last epoch in about half the fits, 0 s with this pipeline)."""
    from edgekit.core.compat import tf

    y = tuple(y) if isinstance(y, list) else y  # several outputs: one array each, in order
    data = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    options = tf.data.Options()
    options.autotune.enabled = False
    return data.shuffle(rows(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size).with_options(options)


def chance_level(y) -> Optional[float]:
    """The accuracy of always answering the most frequent class of labels ``y`` (None without labels)."""
    if y is None or not np.asarray(y).size:
        return None
    _, counts = np.unique(np.asarray(y), return_counts=True)
    return float(counts.max() / counts.sum())


def collapse_bound(start: float, chance: float, higher_is_better: bool = True) -> float:
    """How far a fine-tune's figure may move the wrong way from its ``start`` before the model
    counts as collapsed. Accuracy: the larger of 10 points and half the distance from ``start`` to
    ``chance``, so that a model ending nearer chance than where it began has collapsed, and noise
    of a few points never does. An error (MAE, reconstruction error; ``higher_is_better=False``,
    ``chance`` the error of a model that learned nothing, :func:`edgekit.core.task.baseline`): the
    larger of 10% of ``start`` and half the distance to ``chance``."""
    if higher_is_better:
        return max(0.10, (start - chance) / 2)
    return max(0.10 * start, (chance - start) / 2)


def collapsed(
    start: Optional[float], end: Optional[float], chance: Optional[float], higher_is_better: bool = True
) -> bool:
    """Whether the figure went from ``start`` to ``end`` the wrong way by more than :func:`collapse_bound`."""
    if start is None or end is None or chance is None:
        return False
    worse = start - end if higher_is_better else end - start
    return worse > collapse_bound(start, chance, higher_is_better) + 1e-9


def accuracy(model, x, y, batch_size: int = 256) -> float:
    """Top-1 accuracy of a classifier (per position for a sequence model's (N, T, classes) output
    with (N, T) labels)."""
    out = model.predict(x, batch_size=batch_size, verbose=0)
    y = np.asarray(y)
    if out.ndim == y.ndim + 1:
        return float(np.mean(out.argmax(axis=-1) == y))
    return float(np.mean(out.reshape(len(out), -1).argmax(axis=1) == y.reshape(-1)))
