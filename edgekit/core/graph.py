"""Reading and rebuilding a functional tf_keras model layer by layer (the surgery verbs:
fold_batchnorm, channel pruning, factorize, tie), and what a model's output is."""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from edgekit.core.compat import keras, tf
from edgekit.core.errors import InputError

# tf_keras's functional graph is read here and nowhere else: through its public properties where it
# has them (Layer.inbound_nodes / outbound_nodes, KerasTensor.node), and through its attributes where
# it has none (whether a value is a symbolic tensor; a model's nodes by depth, the order it runs).


def calls(layer) -> list:
    """The nodes where ``layer`` was called: one per call (a shared layer has several)."""
    return list(layer.inbound_nodes)


def consumers(layer) -> list:
    """The nodes where ``layer``'s outputs were consumed."""
    return list(layer.outbound_nodes)


def producer(tensor):
    """The layer whose output symbolic ``tensor`` is."""
    return tensor.node.layer


def is_symbolic(value) -> bool:
    """Whether ``value`` is a tensor of a functional graph (not a constant of ``x + 3.0``).
    No public test exists: ``keras.backend.is_keras_tensor`` raises on anything else."""
    return hasattr(value, "_keras_history")


def nodes_in_order(model) -> list:
    """``model``'s own nodes in the order it runs them (a shared layer's every call). tf_keras keeps
    them by depth and has no public reader."""
    return [node for depth in sorted(model._nodes_by_depth, reverse=True) for node in model._nodes_by_depth[depth]]


def fresh_inputs(model, keep_batch: bool = False):
    """New ``keras.Input`` tensors like ``model``'s (``keep_batch``: with its batch size too), for
    rebuilding it layer by layer: a map from id(old input tensor) to the new one, and the list of
    new inputs."""
    new: Dict[int, object] = {}
    inputs = []
    for t in model.inputs:
        shape = {"batch_shape": tuple(t.shape)} if keep_batch else {"shape": t.shape[1:]}
        i = keras.Input(**shape, dtype=t.dtype, name=t.name.split(":")[0])
        new[id(t)] = i
        inputs.append(i)
    return new, inputs


def functional(model, verb: str):
    """``model`` as a functional tf_keras model (a Keras 3 one translated, a Sequential one
    wrapped), or a clear error."""
    from edgekit.core.bridge import from_keras3, is_keras3_model

    if is_keras3_model(model):
        model = from_keras3(model)
    if isinstance(model, keras.Sequential):
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not getattr(model, "_is_graph_network", False):
        raise InputError(
            f"{verb} needs a functional or Sequential tf_keras model; received a subclassed {type(model).__name__}"
        )
    return model


def node_call_args(node, new: Dict[int, object]):
    """(args, kwargs) a tf_keras node called its layer with, every input tensor replaced by
    ``new[id(tensor)]`` and everything else — the constant of ``x + 3.0``, a ``training`` flag —
    kept as it was."""

    def swap(value):
        return new[id(value)] if is_symbolic(value) else value

    return (tf.nest.map_structure(swap, tuple(node.call_args)), tf.nest.map_structure(swap, dict(node.call_kwargs)))


def copy_layer(layer, node, new: Dict[int, object]):
    """A new layer like ``layer`` (same config and weights) called as ``node`` called it, on the
    new tensors of ``new``."""
    clone = layer.__class__.from_config(layer.get_config())
    args, kwargs = node_call_args(node, new)
    out = clone(*args, **kwargs)
    clone.set_weights(layer.get_weights())
    return out


def rewrite(
    model, replace: Callable[[object, object], Optional[object]], verb: str, expose=None, keep_batch: bool = False
):
    """A new model with every layer copied (config and weights), except where
    ``replace(layer, inputs)`` returns an output tensor built from the new ``inputs``.
    ``expose``: an object whose ``new`` attribute is set to the map of old → new tensors, for a
    ``replace`` that needs more than the layer's tensor inputs (its constants); ``keep_batch``:
    the new inputs keep a static batch size."""
    model = functional(model, verb)
    new, inputs = fresh_inputs(model, keep_batch)
    if expose is not None:
        expose.new = new
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if len(calls(layer)) != 1:
            raise InputError(f"{verb}: layer '{layer.name}' is used more than once; shared layers are not supported")
        args = layer.input
        mapped = [new[id(t)] for t in args] if isinstance(args, (list, tuple)) else new[id(args)]
        out = replace(layer, mapped)
        new[id(layer.output)] = out if out is not None else copy_layer(layer, calls(layer)[0], new)
    outputs = [new[id(t)] for t in model.outputs]
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


_ARITHMETIC = {
    "__operators__.add": "add",
    "math.add": "add",
    "__operators__.sub": "sub",
    "math.subtract": "sub",
    "__operators__.mul": "mul",
    "math.multiply": "mul",
    "__operators__.truediv": "div",
    "math.truediv": "div",
    "math.divide": "div",
}
_UNARY = {
    "nn.relu6": lambda name: keras.layers.ReLU(6.0, name=name),
    "nn.relu": lambda name: keras.layers.ReLU(name=name),
    "math.sigmoid": lambda name: keras.layers.Activation("sigmoid", name=name),
    "nn.sigmoid": lambda name: keras.layers.Activation("sigmoid", name=name),
    "nn.silu": lambda name: keras.layers.Activation("swish", name=name),
    "nn.swish": lambda name: keras.layers.Activation("swish", name=name),
    "math.tanh": lambda name: keras.layers.Activation("tanh", name=name),
}


def _number(value):
    """A Python or 0-d numpy number, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if getattr(value, "shape", None) == () and hasattr(value, "dtype") and not is_symbolic(value):
        return float(value)
    return None


def _op_as_layer(layer, args, kwargs):
    """The output of ``layer`` (a TFOpLambda) rebuilt from real layers — ``x + c`` as
    Rescaling(1, c), ``x * c`` as Rescaling(c), ``x - c``, ``x / c`` likewise, two tensors as
    Add/Subtract/Multiply, relu6/relu/sigmoid/swish/tanh as ReLU/Activation — or None when it is
    another op. The same function (``x / c`` as ``x * (1 / c)`` within float rounding)."""
    symbol = getattr(layer, "symbol", None)
    name = layer.name.replace("tf.", "").replace("__operators__.", "").replace(".", "_").strip("_")
    if symbol in _UNARY and len(args) == 1 and not [k for k in kwargs if k != "name"]:
        return _UNARY[symbol](name)(args[0])
    kind = _ARITHMETIC.get(symbol)
    values = list(args) + [v for k, v in kwargs.items() if k in ("y", "x")]
    if kind is None or len(values) != 2:
        return None
    a, b = values
    tensors = [is_symbolic(v) for v in (a, b)]
    if all(tensors):
        merge = {"add": keras.layers.Add, "sub": keras.layers.Subtract, "mul": keras.layers.Multiply}.get(kind)
        return merge(name=name)([a, b]) if merge else None
    c = _number(b if tensors[0] else a)
    if c is None and kind in ("add", "sub"):
        return _constant_add(a, b, tensors, kind, name)
    if c is None or (kind == "div" and (not tensors[0] or c == 0.0)):
        return None
    x = a if tensors[0] else b
    scale, offset = {
        "add": (1.0, c),
        "mul": (c, 0.0),
        "div": (1.0 / c if c else 0.0, 0.0),
        "sub": (1.0, -c) if tensors[0] else (-1.0, c),
    }[kind]
    return keras.layers.Rescaling(scale, offset, name=name)(x)


def _constant_add(a, b, tensors, kind: str, name: str):
    """``x + c``, ``x - c`` or ``c - x`` of a constant array ``c`` (not a number) as a
    :class:`edgekit.core.layers.ConstantAdd`, or None when ``c`` is not a constant of the tensor's
    dtype that broadcasts to it."""
    from edgekit.core.layers import ConstantAdd

    x, c = (a, b) if tensors[0] else (b, a)
    try:
        c = np.asarray(c.numpy() if hasattr(c, "numpy") else c, dtype=np.float32)
        np.broadcast_shapes(c.shape, tuple(d or 1 for d in x.shape))
    except (TypeError, ValueError):
        return None
    if x.dtype != tf.float32:
        return None
    if kind == "sub" and tensors[0]:
        c = -c
    layer = ConstantAdd(c.shape, sign=-1.0 if kind == "sub" and not tensors[0] else 1.0, name=name)
    out = layer(x)
    layer.set_weights([c])
    return out


def ops_as_layers(model):
    """``model`` with its TensorFlow op layers (``x + 3.0``, ``x * y``, ``tf.nn.relu6(x)``: what
    keras.applications' hard-swish is made of) rebuilt as the Keras layers that compute the same,
    which tfmot can quantize and channel pruning can see through; other op layers stay as they are.
    The model itself when it has none."""
    if not any(type(l).__name__ == "TFOpLambda" for l in model.layers):
        return model

    def replace(layer, mapped):
        if type(layer).__name__ != "TFOpLambda":
            return None
        return _op_as_layer(layer, *node_call_args(calls(layer)[0], replace.new))

    replace.new = None
    return rewrite(model, replace, "ops_as_layers", expose=replace)


def inline_nested(model):
    """A flat copy of ``model``: the layers of every nested model (a keras.applications model
    called on an Input, ConvNeXt's Sequential stages) called inline, with their weights. tfmot
    wraps only flat models; the outputs are the same."""
    model = functional(model, "inline_nested")
    new, inputs = fresh_inputs(model)
    clones: Dict[int, object] = {}
    outputs = _replay(model, new, clones, set())
    for old, clone in clones.values():
        clone.set_weights(old.get_weights())
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def _replay(m, new: Dict[int, object], clones: Dict[int, tuple], used: set) -> list:
    """Call ``m``'s layers, depth by depth, on the tensors of ``new`` (id(old tensor) → new),
    nested models inlined (a layer whose name is taken is prefixed with its model's); returns
    ``m``'s outputs."""
    for node in nodes_in_order(m):
        layer = node.layer
        if isinstance(layer, keras.layers.InputLayer):
            continue
        args, kwargs = node_call_args(node, new)
        if isinstance(layer, keras.Model):
            flat = tf.nest.flatten(args[0] if len(args) == 1 else args)
            outs = _replay(layer, {id(t): x for t, x in zip(layer.inputs, flat)}, clones, used)
        else:
            if id(layer) not in clones:
                config = layer.get_config()
                if config["name"] in used:
                    config["name"] = f"{m.name}_{config['name']}"
                used.add(config["name"])
                clones[id(layer)] = (layer, layer.__class__.from_config(config))
            outs = clones[id(layer)][1](*args, **kwargs)
        olds = node.outputs if isinstance(node.outputs, (list, tuple)) else [node.outputs]
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for old, out in zip(olds, outs):
            new[id(old)] = out
    return [new[id(t)] for t in m.outputs]


def output_activation(model, index: int = 0) -> str:
    """The name of the activation ``model``'s output ``index`` (the first by default) comes out of:
    ``"softmax"`` for a Softmax layer, else the activation of the output layer (``"linear"`` when it
    has none), also inside a pruning/QAT wrapper."""
    layer = producer(model.outputs[index])
    layer = getattr(layer, "layer", layer)  # tfmot wrappers keep the wrapped layer in .layer
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    act = getattr(layer, "activation", None)
    act = getattr(act, "activation", act)  # tfmot's QuantizeAwareActivation keeps the original in .activation
    return getattr(act, "__name__", None) or "linear"


def emits_probabilities(model) -> bool:
    """True when ``model``'s output comes out of a softmax (:func:`output_activation`)."""
    return output_activation(model) == "softmax"
