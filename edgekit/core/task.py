"""What a model is for — its task — and how each task is scored (numpy and scikit-learn only).

Three kinds of single-output models:

- ``classification``: class ids (per sample, or per position of a sequence); scored by top-1
  accuracy; verified by top-1 agreement with Keras.
- ``regression``: real-valued targets; scored by the mean absolute error (MAE, and RMSE beside it).
- ``reconstruction``: the model reproduces its input (an autoencoder; anomaly detection scores a
  sample by its reconstruction error); scored by the mean squared reconstruction error, and, where
  labels mark the anomalies (1) among normal samples (0), by the area under the ROC curve of that
  score (AUC).

:func:`resolve` decides, in this order: the task given (``--task``, ``task=``, a recipe's
``task``); the loss the model was compiled with (saved in a ``.keras``/``.h5`` file); the output's
activation (softmax or sigmoid: classification); the labels (real values: regression; none, with an
output shaped like the input: reconstruction); an output shaped like the input (reconstruction);
else classification, today's default, said so in the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

import numpy as np

from edgekit.core.errors import InputError
from edgekit.device.board.harness import real_valued


class Task(str, Enum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    RECONSTRUCTION = "reconstruction"

    @classmethod
    def parse(cls, value) -> "Task":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InputError(
                "{task} must be one of {choices}; received {value!r}",
                params="task",
                choices=", ".join(t.value for t in cls),
                value=value,
            ) from None

    @property
    def metric(self) -> str:
        """The name of the task's quality figure."""
        return {"classification": "accuracy", "regression": "MAE", "reconstruction": "reconstruction error"}[self.value]

    @property
    def higher_is_better(self) -> bool:
        return self is Task.CLASSIFICATION


# Keras's names for its losses (string identifiers, function names, class names in snake case).
_CLASSIFICATION_LOSSES = {
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
    "binary_focal_crossentropy",
    "categorical_focal_crossentropy",
    "kl_divergence",
    "kld",
    "kullback_leibler_divergence",
    "hinge",
    "squared_hinge",
    "categorical_hinge",
    "poisson",
}
_REGRESSION_LOSSES = {
    "mse",
    "mae",
    "mape",
    "msle",
    "mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
    "huber",
    "huber_loss",
    "log_cosh",
    "logcosh",
    "cosine_similarity",
}


def loss_name(loss) -> Optional[str]:
    """A compiled loss in snake case: from a string, a Keras loss object or function, or the
    ``{"class_name": …}`` / ``{"config": "mse"}`` dict a saved compile config holds; None for
    anything else (several losses, a custom one)."""
    import re

    if isinstance(loss, dict):
        inner = loss.get("config")
        if isinstance(inner, str):  # Keras 3 saves a string loss as {"module": ..., "config": "mse"}
            return loss_name(inner)
        if isinstance(inner, dict) and isinstance(inner.get("name"), str):
            return loss_name(inner["name"])
        return loss_name(loss.get("class_name")) if isinstance(loss.get("class_name"), str) else None
    if loss is None or isinstance(loss, (list, tuple)):
        return None
    if not isinstance(loss, str):
        loss = getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__
        if not isinstance(loss, str):
            return None
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", loss).lower()
    return snake


def from_loss(loss, model=None) -> Optional[Task]:
    """The task a compiled ``loss`` implies (None when it says nothing known); a regression loss
    on a model whose output is shaped like its input is reconstruction."""
    name = loss_name(loss)
    if name in _CLASSIFICATION_LOSSES:
        return Task.CLASSIFICATION
    if name in _REGRESSION_LOSSES:
        return Task.RECONSTRUCTION if model is not None and _mirrors_input(model) else Task.REGRESSION
    return None


def _mirrors_input(model) -> bool:
    ins, outs = getattr(model, "inputs", None) or [], getattr(model, "outputs", None) or []
    if len(ins) != 1 or len(outs) != 1:
        return False
    a, b = tuple(ins[0].shape[1:]), tuple(outs[0].shape[1:])
    return a == b and "int" not in str(getattr(ins[0], "dtype", "float"))


@dataclass(frozen=True)
class Resolved:
    """A task and why it was chosen (``reason``: shown in reports); ``loss``: the regression loss
    the model was compiled with (its fine-tunes minimise the same), when known."""

    task: Task
    reason: str
    loss: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.task.value} ({self.reason})"


def resolve(model, task=None, y=None, loss=None) -> Resolved:
    """The task of ``model``'s (first) output (see the module doc). ``loss``: the loss a model file
    was compiled with (:attr:`edgekit.core.modelfile.ModelFile.loss`); by default the model's own
    (``model.loss`` once compiled). ``y``: its labels or targets, when known."""
    return resolve_each(model, task, y, loss)[0]


def parse_tasks(value):
    """A task option: None, one task for every output, or per output ``{name: task}`` (also written
    ``"name=task,name=task"``) or a list in the outputs' order."""
    if value is None or isinstance(value, Task):
        return value
    if isinstance(value, (list, tuple)):
        return [Task.parse(v) for v in value]
    if isinstance(value, str) and "=" in value:
        value = dict(part.split("=", 1) for part in value.split(",") if part.strip())
    if isinstance(value, dict):
        return {str(k).strip(): Task.parse(str(v).strip()) for k, v in value.items()}
    return Task.parse(value)


def _per_output(value, names: list, i: int):
    """Output ``i``'s share of a per-output value: a dict by name, a list by position, else the value."""
    if isinstance(value, dict) and not {"class_name", "config"} & set(value):
        return value.get(names[i])
    if isinstance(value, (list, tuple)) and len(names) > 1:
        return value[i] if i < len(value) else None
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (str, Task)):
        return value[0]  # a task list of one output
    return value


def resolve_each(model, task=None, y=None, loss=None) -> list:
    """:func:`resolve` for each output of ``model``, in order: ``task``, ``y`` and ``loss`` may be
    given per output (dicts by output name, or lists)."""
    from edgekit.core.samples import output_names

    names = output_names(model)
    task = parse_tasks(task)
    if isinstance(task, dict) and set(task) - set(names):
        raise InputError(
            "{task} names output(s) {unknown}; the model's outputs are {names}",
            params="task",
            unknown=", ".join(sorted(set(task) - set(names))),
            names=", ".join(names),
        )
    compiled = loss if loss is not None else getattr(model, "loss", None)
    return [
        _resolve_one(model, i, _per_output(task, names, i), _per_output(y, names, i), _per_output(compiled, names, i))
        for i in range(len(names))
    ]


def _resolve_one(model, index: int, task, y, compiled) -> Resolved:
    from edgekit.core.graph import output_activation

    if task is not None:
        return Resolved(Task.parse(task), "given")
    found = from_loss(compiled, model)
    if found is not None:
        name = loss_name(compiled)
        return Resolved(found, f"the model's loss, {name}", name if name in _REGRESSION_LOSSES else None)
    try:
        activation = output_activation(model, index)
    except (AttributeError, IndexError):
        activation = "linear"
    if activation in ("softmax", "sigmoid"):
        return Resolved(Task.CLASSIFICATION, f"its {activation} output")
    if y is not None and real_valued(y):
        return Resolved(Task.REGRESSION, "real-valued targets")
    if _mirrors_input(model):
        return Resolved(Task.RECONSTRUCTION, "an output shaped like its input")
    return Resolved(Task.CLASSIFICATION, "assumed: no loss, softmax or real-valued targets say otherwise")


def split_outputs(value, names: list) -> list:
    """Labels (or tasks, losses) per output, in the order of ``names``: from a dict by output name, a
    list by position (several outputs), or one value for a one-output model; None where absent."""
    return [_per_output(value, names, i) for i in range(len(names))]


def targets(task: Task, x, y, model=None, index: int = 0):
    """What a fine-tune fits: the inputs themselves for reconstruction; regression targets shaped as
    ``model``'s output ``index`` (Keras's losses broadcast (N,) against (N, 1) into an N×N
    difference: measured, an MSE of 1.75 where the right one is 0.08); class ids as given."""
    if task is Task.RECONSTRUCTION:
        return x
    if task is Task.REGRESSION and y is not None and model is not None:
        out = tuple(int(d) for d in model.outputs[index].shape[1:])
        return np.asarray(y, np.float32).reshape((len(y),) + out)
    return y


def _output_shape(model, output=None) -> tuple:
    """The sample shape of ``model``'s output named ``output`` (the first by default)."""
    from edgekit.core.samples import output_names

    names = output_names(model)
    t = model.outputs[names.index(output) if output in names else 0]
    return tuple(int(d) for d in t.shape[1:] if d is not None)


def check_targets(task: Task, model, y, what: str, output=None) -> None:
    """Regression targets must be numbers with one value per output unit. Classification labels
    are checked by the verbs (class ids of the output); a reconstruction model's labels are used
    only where they mark anomalies (:func:`anomaly_labels`)."""
    if y is None or task is not Task.REGRESSION:
        return
    y = np.asarray(y)
    if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)):
        raise InputError("{%s} must be numeric; received {dtype}" % what, params=what, dtype=y.dtype)
    out = _output_shape(model, output)
    if int(np.prod(y.shape[1:], dtype=np.int64)) != int(np.prod(out, dtype=np.int64)):
        raise InputError(
            "{%s} holds targets of shape {shape} per sample; the model's output is {out}: give one target per "
            "output value" % what,
            params=what,
            shape=tuple(y.shape[1:]),
            out=out,
        )


def predicted_classes(out) -> np.ndarray:
    """Class ids from a classifier's outputs: the top-1 over the last axis (per sample, or per
    position of a sequence), or for a single sigmoid unit whether it is above 0.5."""
    out = np.asarray(out)
    return (out[..., 0] > 0.5).astype(np.int64) if out.shape[-1] == 1 else out.argmax(-1)


def reconstruction_errors(x, out) -> np.ndarray:
    """Each sample's mean squared reconstruction error."""
    x, out = np.asarray(x, np.float64), np.asarray(out, np.float64)
    return np.mean((out.reshape(len(out), -1) - x.reshape(len(x), -1)) ** 2, axis=1)


def quality(task: Task, out, y=None, x=None) -> dict:
    """The task's figures for outputs ``out`` of samples ``x`` with labels/targets ``y``:
    classification ``accuracy``; regression ``mae`` and ``rmse``; reconstruction ``error`` (mean
    squared) and, with 0/1 anomaly labels holding both classes, ``auc``. Figures that need labels
    are left out without them."""
    out = np.asarray(out)
    if task is Task.CLASSIFICATION:
        if y is None:
            return {}
        top = predicted_classes(out)
        return {"accuracy": float(np.mean(top.reshape(-1) == np.asarray(y).reshape(-1)))}
    if task is Task.REGRESSION:
        if y is None:
            return {}
        diff = out.reshape(len(out), -1).astype(np.float64) - np.asarray(y, np.float64).reshape(len(out), -1)
        return {"mae": float(np.mean(np.abs(diff))), "rmse": float(np.sqrt(np.mean(diff**2)))}
    errors = reconstruction_errors(x, out)
    figures = {"error": float(np.mean(errors))}
    if anomaly_labels(y, len(errors)):
        from sklearn.metrics import roc_auc_score

        figures["auc"] = float(roc_auc_score(np.asarray(y), errors))
    return figures


def anomaly_labels(y, n: int) -> bool:
    """Whether ``y`` marks anomalies for a reconstruction model: one 0 (normal) or 1 (anomaly) per
    sample, both present. Other labels (a data set's class ids) are not used."""
    if y is None:
        return False
    y = np.asarray(y)
    return y.shape == (n,) and bool(np.isin(y, (0, 1)).all()) and len(np.unique(y)) == 2


def score(task: Task, figures: dict) -> Optional[float]:
    """The task's headline figure from :func:`quality`'s: accuracy, MAE or reconstruction error."""
    return figures.get({"classification": "accuracy", "regression": "mae", "reconstruction": "error"}[task.value])


def baseline(task: Task, x, y) -> Optional[float]:
    """The task's figure of a model that learned nothing: the most frequent class's accuracy, the
    MAE of always answering the mean target, the reconstruction error of always answering the mean
    sample (on these samples)."""
    if task is Task.RECONSTRUCTION:
        if x is None:
            return None
        x = np.asarray(x, np.float64)
        return float(np.mean(reconstruction_errors(x, np.broadcast_to(x.mean(axis=0), x.shape))))
    if y is None or not np.asarray(y).size:
        return None
    y = np.asarray(y)
    if task is Task.CLASSIFICATION:
        _, counts = np.unique(y, return_counts=True)
        return float(counts.max() / counts.sum())
    y = y.astype(np.float64).reshape(len(y), -1)
    return float(np.mean(np.abs(y - y.mean(axis=0))))


def fit_loss(task: Task, model, keras, compiled: Optional[str] = None, index: int = 0):
    """The loss a fine-tune of a ``task`` output (``model``'s output ``index``) minimises: sparse
    cross-entropy (on logits unless the output comes out of a softmax); for regression and
    reconstruction the regression loss the model was compiled with (``compiled``: MAE, Huber …),
    else the mean squared error."""
    from edgekit.core.graph import output_activation

    if task is not Task.CLASSIFICATION and compiled in _REGRESSION_LOSSES:
        return keras.losses.get(compiled)

    if task is Task.CLASSIFICATION:
        act = output_activation(model, index)
        if act == "sigmoid":
            return keras.losses.BinaryCrossentropy()
        return keras.losses.SparseCategoricalCrossentropy(from_logits=act != "softmax")
    return keras.losses.MeanSquaredError()
