"""What the verbs share: the models tfmot can wrap, a copy of the caller's model, layer selection."""

from __future__ import annotations

import dataclasses

from edgekit.compat import keras
from edgekit.errors import InputError
from edgekit.optimize.configs import selects
from edgekit.saving import check_model as check_keras
from edgekit.wrappers import custom_objects, strip


def check_model(model, verb: str) -> None:
    """The models tfmot can wrap: tf_keras, functional or Sequential, no nested models."""
    if not isinstance(model, keras.Model):
        check_keras(model)  # says what it is instead (a Keras 3 model, ...)
    if not (getattr(model, "_is_graph_network", False) or isinstance(model, keras.Sequential)):
        raise InputError(
            f"{verb}: {type(model).__name__} is a subclassed model; tfmot wraps the layers of functional "
            "or Sequential models only: rebuild it with the functional API")
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise InputError(
                f"{verb}: layer '{layer.name}' is a nested model; tfmot needs a flat model: rebuild it with "
                f"the nested model's layers inline (e.g. call keras.applications models on an Input "
                f"with `input_tensor=`)")
    check_keras(model)


def copy_model(model):
    """A copy with its own weights (stripped of earlier pruning/clustering wrappers)."""
    model = strip(model)
    with custom_objects():
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def with_overrides(config, overrides: dict):
    """``config`` with some fields replaced (validated again)."""
    return dataclasses.replace(config, **overrides) if overrides else config


def selected(layer, layers, skip) -> bool:
    if skip and selects(layer, skip):
        return False
    return layers is None or selects(layer, layers)


def check_selection(model, spec, verb):
    """Every explicit selection entry must match some layer (a typo is an error, not a no-op)."""
    for s in spec or ():
        if not any(selects(l, (s,)) for l in model.layers):
            names = ", ".join(l.name for l in model.layers[:12])
            raise InputError(f"{verb}: no layer matches {s!r}; the model's layers are {names}"
                             + (" …" if len(model.layers) > 12 else ""))


def wrap_and_fine_tune(verb, stripped: bool = True):
    """A technique's ``apply`` for a verb that wraps the model (prune, cluster, qat): wrap a copy,
    fine-tune it with the step's settings and, with ``stripped``, strip the training wrappers."""

    def apply(model, config, step):
        wrapped = verb(model, config)
        step.fine_tune(wrapped)
        return (strip(wrapped) if stripped else wrapped), None

    return apply
