"""Reading and rebuilding a functional tf_keras model layer by layer (the surgery verbs:
fold_batchnorm, channel pruning, factorize, tie), and what a model's output is."""

from __future__ import annotations

from typing import Callable, Dict, Optional

from edgekit.compat import keras
from edgekit.errors import InputError


def fresh_inputs(model):
    """New ``keras.Input`` tensors like ``model``'s, for rebuilding it layer by layer: a map from
    id(old input tensor) to the new one, and the list of new inputs."""
    new: Dict[int, object] = {}
    inputs = []
    for t in model.inputs:
        i = keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name.split(":")[0])
        new[id(t)] = i
        inputs.append(i)
    return new, inputs


def functional(model, verb: str):
    """``model`` as a functional model (a Sequential one is wrapped), or a clear error."""
    if isinstance(model, keras.Sequential):
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not getattr(model, "_is_graph_network", False):
        raise InputError(f"{verb} needs a functional or Sequential tf_keras model; received a subclassed "
                         f"{type(model).__name__}")
    return model


def copy_layer(layer, inputs):
    """A new layer like ``layer`` (same config and weights) called on ``inputs``."""
    clone = layer.__class__.from_config(layer.get_config())
    out = clone(inputs)
    clone.set_weights(layer.get_weights())
    return out


def rewrite(model, replace: Callable[[object, object], Optional[object]], verb: str):
    """A new model with every layer copied (config and weights), except where
    ``replace(layer, inputs)`` returns an output tensor built from the new ``inputs``."""
    model = functional(model, verb)
    new, inputs = fresh_inputs(model)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if len(layer._inbound_nodes) != 1:
            raise InputError(f"{verb}: layer '{layer.name}' is used more than once; shared layers are not supported")
        args = layer.input
        mapped = [new[id(t)] for t in args] if isinstance(args, (list, tuple)) else new[id(args)]
        out = replace(layer, mapped)
        new[id(layer.output)] = out if out is not None else copy_layer(layer, mapped)
    outputs = [new[id(t)] for t in model.outputs]
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def _output_layer(model):
    return model.outputs[0]._keras_history.layer


def emits_probabilities(model) -> bool:
    """True when ``model``'s output comes out of a softmax (a Softmax layer, an Activation or a
    layer with ``activation="softmax"``, also inside a pruning/QAT wrapper)."""
    layer = _output_layer(model)
    layer = getattr(layer, "layer", layer)  # tfmot wrappers keep the wrapped layer in .layer
    if isinstance(layer, keras.layers.Softmax):
        return True
    act = getattr(layer, "activation", None)
    act = getattr(act, "activation", act)  # tfmot's QuantizeAwareActivation keeps the original in .activation
    return getattr(act, "__name__", "") == "softmax"
