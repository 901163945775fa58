"""tf_keras → Keras 3: a plain (unwrapped) tf_keras result translated back into the Keras 3 model a
user's script started from, layer by layer with the same weights, checked on inputs as
:func:`edgekit.core.bridge.from_keras3` checks the way in."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from edgekit.core.bridge import (
    _RENAMES,
    TranslationError,
    _activation_name,
    _as_list,
    _fit_config,
    _tf,
    check_translation,
    keras3,
)

# tf_keras op layers (their TensorFlow symbol) → the Keras 3 op.
_TF_SYMBOLS = {
    "math.add": "add",
    "__operators__.add": "add",
    "math.subtract": "subtract",
    "__operators__.sub": "subtract",
    "math.multiply": "multiply",
    "__operators__.mul": "multiply",
    "math.truediv": "divide",
    "__operators__.truediv": "divide",
    "math.maximum": "maximum",
    "math.minimum": "minimum",
    "math.negative": "negative",
    "math.pow": "power",
    "math.square": "square",
    "math.sqrt": "sqrt",
    "math.abs": "abs",
    "math.exp": "exp",
    "math.log": "log",
    "math.tanh": "tanh",
    "nn.relu": "relu",
    "nn.relu6": "relu6",
    "math.sigmoid": "sigmoid",
    "nn.silu": "silu",
    "nn.swish": "silu",
    "nn.softmax": "softmax",
    "math.reduce_mean": "mean",
    "math.reduce_sum": "sum",
    "math.reduce_max": "max",
    "math.reduce_min": "min",
    "reshape": "reshape",
    "transpose": "transpose",
    "concat": "concatenate",
    "clip_by_value": "clip",
    "linalg.matmul": "matmul",
    "nn.leaky_relu": None,
}


def _k3_op(layer):
    """The Keras 3 function doing tf_keras op layer ``layer``."""
    ops = keras3().ops
    symbol = getattr(layer, "symbol", None) or layer.get_config().get("function")
    name = _TF_SYMBOLS.get(symbol)
    if name is None:
        raise TranslationError(f"layer '{layer.name}' calls TensorFlow's {symbol!r}, which has no Keras 3 op here")
    fn = getattr(ops, name)
    renames = {
        "keepdims": "keepdims",
        "axis": "axis",
        "perm": "axes",
        "clip_value_min": "x_min",
        "clip_value_max": "x_max",
        "alpha": "negative_slope",
        "shape": "newshape",
    }

    def call(*args, **kwargs):
        kwargs = {renames.get(k, k): v for k, v in kwargs.items() if k != "name"}
        if name == "concatenate":
            return fn(args[0], **kwargs)
        return fn(*args, **kwargs)

    return call


def _k3_layer(layer):
    k3 = keras3()
    name = type(layer).__name__
    if type(layer).__module__.startswith("tensorflow_model_optimization") or name in ("TiedEmbedding",):
        raise TranslationError(
            f"layer '{layer.name}' ({name}) has no Keras 3 counterpart (strip pruning/clustering "
            f"wrappers first; quantization-aware and tied models stay tf_keras)"
        )
    cls = getattr(k3.layers, name, None)
    if cls is None:
        raise TranslationError(f"layer '{layer.name}' ({name}) has no Keras 3 counterpart")
    config = _lists(dict(layer.get_config()))
    act = _activation_name(config.get("activation"))
    if act == "hard_sigmoid":
        raise TranslationError(
            f"layer '{layer.name}' uses tf_keras's hard_sigmoid (0.2·x + 0.5), which Keras 3 defines otherwise"
        )
    for key in ("batch_input_shape", "autocast"):
        config.pop(key, None)
    if name == "BatchNormalization" and isinstance(config.get("axis"), list) and len(config["axis"]) == 1:
        config["axis"] = config["axis"][0]  # Keras 3 takes one axis
    for k3_name, tfk_name in _RENAMES.get(name, {}).items():
        if tfk_name in config:
            config[k3_name] = config.pop(tfk_name)
    config = _fit_config(config, cls, layer, "Keras 3")
    try:
        return cls.from_config(config)
    except Exception as exc:
        raise TranslationError(
            f"layer '{layer.name}' ({name}) does not translate to Keras 3: {' '.join(str(exc).split())[:200]}"
        ) from None


def _lists(value):
    """tf_keras config values as plain Python (its tracked ListWrapper lists become lists)."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListWrapper":
        return [_lists(v) for v in value]
    return value


def _reserve_names(k3, names) -> None:
    """Keras 3 names an op it records (``ops.add`` in a functional graph) ``add``, ``add_1``, …
    from a counter that a layer named explicitly (a translated ``Add`` layer called ``add``) does
    not advance, so the two would collide ("The name "add" is used 2 times in the model"). Advance
    the counters (public ``keras.backend.get_uid``) past every name the model's layers hold."""
    taken = set(names)
    for name in taken:
        base, _, suffix = name.rpartition("_")
        for prefix in {name, base} if suffix.isdigit() and base else {name}:
            count = 0
            while (prefix if count == 0 else f"{prefix}_{count}") in taken:
                count = k3.backend.get_uid(prefix)


def to_keras3(model, *, x: Optional[np.ndarray] = None, verify: bool = True):
    """The Keras 3 twin of a plain tf_keras functional or Sequential ``model`` (a result of
    prune, cluster, channel pruning, factorization or distillation, stripped), checked on ``x``
    (default: random inputs) unless ``verify=False``. Quantization-aware models stay tf_keras."""
    from edgekit.core.graph import functional, node_call_args, nodes_in_order

    _, keras = _tf()
    k3 = keras3()
    model = functional(model, "to_keras3")
    _reserve_names(k3, [layer.name for layer in model.layers])
    new: Dict[int, object] = {}
    inputs = []
    for t in model.inputs:
        i = k3.Input(batch_shape=tuple(t.shape), dtype=t.dtype.name, name=t.name.split(":")[0])
        new[id(t)] = i
        inputs.append(i)
    pairs = {}
    for node in nodes_in_order(model):  # this model's nodes, in order
        layer = node.layer
        if isinstance(layer, keras.layers.InputLayer):
            continue
        args, kwargs = node_call_args(node, new)
        if type(layer).__name__ in ("TFOpLambda", "SlicingOpLambda"):
            out = _k3_op(layer)(*args, **kwargs)
        else:
            if id(layer) not in pairs:
                pairs[id(layer)] = (layer, _k3_layer(layer))
            out = pairs[id(layer)][1](*args, **kwargs)
        for old, o in zip(_as_list(node.outputs), _as_list(out)):
            new[id(old)] = o
    outputs = [new[id(t)] for t in model.outputs]
    result = k3.Model(
        inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0], name=model.name
    )
    for old, k3_layer in pairs.values():
        k3_layer.set_weights(old.get_weights())
    if verify:
        check_translation(model, result, x)
    return result
