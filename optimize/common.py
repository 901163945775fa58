"""What the verbs share: the models tfmot can wrap, a copy of the caller's model, layer selection."""

from __future__ import annotations

import dataclasses
from typing import List

from edgekit.core.compat import keras
from edgekit.core.errors import InputError, Message
from edgekit.core.graph import inline_nested
from edgekit.core.saving import as_tf_keras
from edgekit.core.wrappers import custom_objects, strip
from edgekit.optimize.configs import selects


def check_model(model, verb: str):
    """The model a verb works on: tf_keras (a Keras 3 model is translated, :mod:`edgekit.core.bridge`),
    functional or Sequential, no nested models (they are inlined). Returns it."""
    if isinstance(model, keras.Model) and not (
        getattr(model, "_is_graph_network", False) or isinstance(model, keras.Sequential)
    ):
        raise InputError(
            f"{verb}: {type(model).__name__} is a subclassed model; tfmot wraps the layers of functional "
            "or Sequential models only: rebuild it with the functional API"
        )
    model = as_tf_keras(model)
    if any(isinstance(layer, keras.Model) for layer in model.layers):
        model = inline_nested(model)
    return model


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
            raise InputError(
                f"{verb}: no layer matches {s!r}; the model's layers are {names}"
                + (" …" if len(model.layers) > 12 else "")
            )


# Why a kernel a verb could not wrap stays as it was, by layer class.
_WHY = {
    "DepthwiseConv2D": "tfmot does not {verb} depthwise kernels; edgekit cannot include them (channel pruning "
    "does shrink them: {channel_prune})"
}


def _covered(layer, wrapper: str) -> bool:
    """Whether tfmot's ``wrapper`` around ``layer`` acts on its kernel (it also wraps layers whose
    kernels it leaves alone: a DepthwiseConv2D under pruning or clustering)."""
    if type(layer).__name__ != wrapper:
        return False
    weights = getattr(layer, "prunable_weights", None)
    if weights is None:
        weights = getattr(layer, "original_clusterable_weights", None)
    return bool(weights)


def left_alone(wrapped, wrapper: str, verb: str) -> List[Message]:
    """What ``verb`` left as it was in ``wrapped`` (kernels no ``wrapper`` acts on): per layer
    class, how many kernels, their share of the kernel params and why."""
    from edgekit.optimize.weights import layer_kernel

    sizes = {}
    total = 0
    for layer in wrapped.layers:
        kind, kernel = layer_kernel(layer)
        if kernel is None:
            continue
        total += kernel.size
        if not _covered(layer, wrapper):
            n, size = sizes.get(kind, (0, 0))
            sizes[kind] = (n + 1, size + kernel.size)
    return [
        Message(
            "{verb}: {n} {kind} kernel(s), {share:.1%} of the kernel params, left as they were: "
            + _WHY.get(kind, "not selected ({layers}/{skip}), not supported for {verb} by tfmot, or too small for it"),
            params=("layers", "skip", "channel_prune"),
            verb=verb,
            n=n,
            kind=kind,
            share=size / max(total, 1),
        )
        for kind, (n, size) in sorted(sizes.items())
    ]


def wrap_and_fine_tune(verb, wrapper: str, stripped: bool = True):
    """A technique's ``apply`` for a verb that wraps the model (prune, cluster): wrap a copy, say
    what it left alone, fine-tune it with the step's settings and, with ``stripped``, strip the
    training wrappers."""

    def apply(model, config, step):
        wrapped = verb(model, config)
        step.notes.extend(left_alone(wrapped, wrapper, verb.__name__))
        step.fine_tune(wrapped)
        return (strip(wrapped) if stripped else wrapped), None

    return apply
