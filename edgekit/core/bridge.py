"""Keras 3 ↔ tf_keras: the models people train today (``import keras`` is Keras 3) translated to the
tf_keras models tfmot and edgekit work with, and plain results translated back.

:func:`from_keras3` rebuilds a Keras 3 functional or Sequential model (from any backend: a
``.keras`` file's config and weights are backend-neutral) layer by layer as tf_keras: layer configs
(dtype policies, ``batch_shape``, Keras-3-only keys), the graph (nested Sequential/functional models
are inlined, so the result is flat), the Keras 3 ops a functional model records (``x + 3.0`` becomes
a TensorFlow op layer, as tf_keras itself records it), activations whose definitions differ
(Keras 3's ``hard_sigmoid`` is relu6(x + 3) / 6, tf_keras's 0.2·x + 0.5) and the weights, layer by
layer. The translation is then checked on inputs: outputs within 1e-5 (relative to their scale),
else an error naming the first layer whose outputs differ. :func:`edgekit.core.to_keras3.to_keras3` does the
reverse for a plain (unwrapped) tf_keras model.
"""

from __future__ import annotations

import inspect
from typing import Dict, List, Optional

import numpy as np

from edgekit.core.errors import InputError

ATOL = 1e-5
# Keras 3 activations tf_keras has under the same name and definition.
SAME_ACTIVATIONS = {
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "linear",
    "elu",
    "selu",
    "softplus",
    "softsign",
    "swish",
    "silu",
    "gelu",
    "exponential",
}
# Keyword arguments every layer takes (tf_keras's and Keras 3's Layer.__init__).
_BASE_KWARGS = {
    "trainable",
    "name",
    "dtype",
    "dynamic",
    "input_dim",
    "input_shape",
    "batch_input_shape",
    "batch_size",
    "weights",
    "activity_regularizer",
    "autocast",
    "implementation",
}
# Arguments one flavour names otherwise: Keras 3 name → tf_keras name, per layer class.
_RENAMES = {"LeakyReLU": {"negative_slope": "alpha"}}
# What a layer's config records of its first call (its build): no constructor argument, but tf_keras's
# from_config needs them (None: it builds the layer when the graph calls it).
_BUILD_ONLY = {"MultiHeadAttention": ("query_shape", "key_shape", "value_shape")}


class TranslationError(InputError):
    """A Keras 3 (or tf_keras) model that cannot be translated: the message names the layer and why."""


def is_keras3_model(obj) -> bool:
    """A Keras 3 model (Keras 3 is imported only when ``obj`` comes from it)."""
    return type(obj).__module__.startswith("keras.") and isinstance(obj, keras3().Model)


def keras3():
    """The Keras 3 package (``import keras``), checked to be Keras 3."""
    from edgekit.core.compat import keras3 as module

    return module()


def _tf():
    from edgekit.core.compat import keras, tf

    return tf, keras


# -- activations and ops ---------------------------------------------------------------------


def _activation_fn(name: str):
    """A function of a tf_keras tensor computing Keras 3's activation ``name``, or None if the
    tf_keras activation of that name is the same."""
    tf, _ = _tf()
    if name in SAME_ACTIVATIONS:
        return None
    table = {
        "relu6": tf.nn.relu6,
        "hard_sigmoid": lambda x: tf.nn.relu6(x + 3.0) / 6.0,
        "hard_silu": lambda x: x * tf.nn.relu6(x + 3.0) / 6.0,
        "hard_swish": lambda x: x * tf.nn.relu6(x + 3.0) / 6.0,
        "leaky_relu": lambda x: tf.nn.leaky_relu(x, alpha=0.2),
        "mish": lambda x: x * tf.math.tanh(tf.math.softplus(x)),
        "log_softmax": tf.nn.log_softmax,
    }
    if name not in table:
        raise TranslationError(f"the Keras 3 activation {name!r} has no tf_keras counterpart")
    return table[name]


def _activation_name(value) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):  # {"module": "keras.activations", "class_name": "function", "config": "relu", ...}
        cfg = value.get("config")
        return cfg if isinstance(cfg, str) else value.get("registered_name") or value.get("class_name")
    return getattr(value, "__name__", None)


def _op(class_name: str, config: dict):
    """The TensorFlow function doing the Keras 3 op ``class_name`` (a functional model's
    ``x + 3.0`` is the op ``Add``) with its ``config``; tf_keras records it as an op layer."""
    tf, _ = _tf()
    axis, keep = config.get("axis"), bool(config.get("keepdims", False))
    table = {
        "Add": tf.math.add,
        "Subtract": tf.math.subtract,
        "Multiply": tf.math.multiply,
        "Divide": tf.math.truediv,
        "TrueDivide": tf.math.truediv,
        "Maximum": tf.math.maximum,
        "Minimum": tf.math.minimum,
        "Negative": tf.math.negative,
        "Power": tf.math.pow,
        "Square": tf.math.square,
        "Sqrt": tf.math.sqrt,
        "Abs": tf.math.abs,
        "Exp": tf.math.exp,
        "Log": tf.math.log,
        "Tanh": tf.math.tanh,
        "Matmul": tf.linalg.matmul,
        "Relu": tf.nn.relu,
        "Relu6": tf.nn.relu6,
        "Sigmoid": tf.math.sigmoid,
        "Silu": tf.nn.silu,
        "Swish": tf.nn.silu,
        "HardSigmoid": lambda x: tf.nn.relu6(x + 3.0) / 6.0,
        "HardSilu": lambda x: x * tf.nn.relu6(x + 3.0) / 6.0,
        "Softmax": lambda x: tf.nn.softmax(x, axis=-1 if axis is None else axis),
        "Mean": lambda x: tf.math.reduce_mean(x, axis=axis, keepdims=keep),
        "Sum": lambda x: tf.math.reduce_sum(x, axis=axis, keepdims=keep),
        "Max": lambda x: tf.math.reduce_max(x, axis=axis, keepdims=keep),
        "Min": lambda x: tf.math.reduce_min(x, axis=axis, keepdims=keep),
        "Transpose": lambda x: tf.transpose(x, perm=config.get("axes")),
        "Reshape": lambda x: tf.reshape(x, [-1] + [int(d) for d in tuple(config["newshape"])[1:]]),
        "Concatenate": lambda xs: tf.concat(list(xs), axis=0 if axis is None else axis),
        "Clip": lambda x: tf.clip_by_value(x, config["x_min"], config["x_max"]),
    }
    if class_name not in table:
        raise TranslationError(f"the Keras 3 op {class_name} has no translation to tf_keras: write it with a layer")
    return table[class_name]


# -- layers ----------------------------------------------------------------------------------


def _plain(value):
    """A Keras 3 config value as tf_keras reads it: dtype policies become their names; serialized
    initializers, regularizers and constraints lose the Keras-3-only arguments tf_keras's classes
    do not take (``input_axes`` … — they only shape a fresh initialization, the weights are copied)."""
    if isinstance(value, dict):
        if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy", "DTypePolicyMap"):
            cfg = value.get("config") or {}
            return cfg.get("name", "float32") if isinstance(cfg, dict) else "float32"
        kind = (value.get("module") or "").split(".")
        if (
            len(kind) == 2
            and kind[0] == "keras"
            and kind[1] in ("initializers", "regularizers", "constraints")
            and isinstance(value.get("config"), dict)
        ):
            _, keras = _tf()
            cls = getattr(getattr(keras, kind[1]), value["class_name"], None)
            if cls is not None:
                params = set(inspect.signature(cls.__init__).parameters)
                return {
                    "class_name": value["class_name"],
                    "config": {k: v for k, v in value["config"].items() if k in params},
                }
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _tfk_class(layer):
    _, keras = _tf()
    name = type(layer).__name__
    if name == "LayerScale":  # ConvNeXt's per-channel scale, in both flavours' applications
        from tf_keras.src.applications.convnext import LayerScale

        return LayerScale
    cls = getattr(keras.layers, name, None)
    if cls is None or not isinstance(cls, type):
        raise TranslationError(f"layer '{layer.name}' ({name}) has no tf_keras counterpart")
    return cls


def _allowed(cls) -> set:
    """The keyword arguments ``cls`` (a tf_keras or Keras 3 layer class) takes."""
    params = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params |= set(inspect.signature(klass.__init__).parameters)
        if klass.__module__.startswith(("tf_keras.src.engine.base_layer", "keras.src.layers.layer")):
            break
    return (params | _BASE_KWARGS) - {"self", "kwargs", "args"}


def _fit_config(config: dict, cls, layer, flavour: str) -> dict:
    """``config`` without the arguments ``cls`` does not take; an error when one of them is set."""
    allowed = _allowed(cls)
    for key in [k for k in config if k not in allowed]:
        value = config.pop(key)
        if key.endswith(("_initializer", "_regularizer", "_constraint")):
            continue  # shapes a fresh initialization or training only: the weights are copied
        unset = (
            value is None or value is False or value == 0 or value in ({}, [], ()) or (key == "groups" and value == 1)
        )
        if not unset:
            raise TranslationError(
                f"layer '{layer.name}' ({type(layer).__name__}) sets {key}={value!r}, which {flavour} does not have"
            )
    return config


def translate_layer(layer):
    """(a new tf_keras layer configured like the Keras 3 ``layer``, the activation function to
    apply after it or None)."""
    cls = _tfk_class(layer)
    config = _plain(layer.get_config())
    after = None
    if "activation" in config:
        act = _activation_name(config["activation"])
        after = _activation_fn(act) if act else None
        if after is not None:
            config["activation"] = "linear"
    build = {key: config.pop(key, None) for key in _BUILD_ONLY.get(type(layer).__name__, ())}
    for k3_name, tfk_name in _RENAMES.get(type(layer).__name__, {}).items():
        if k3_name in config:
            config[tfk_name] = config.pop(k3_name)
    config = dict(_fit_config(config, cls, layer, "tf_keras"), **build)  # tf_keras's from_config builds from them
    try:
        return cls.from_config(config), after
    except Exception as exc:
        raise TranslationError(
            f"layer '{layer.name}' ({type(layer).__name__}) does not translate to tf_keras: "
            f"{' '.join(str(exc).split())[:200]}"
        ) from None


# -- the graph -------------------------------------------------------------------------------


def _is_tensor_ref(v) -> bool:
    return isinstance(v, dict) and v.get("class_name") == "__keras_tensor__"


def _resolve(structure, produced):
    """A node's serialized arguments with every tensor reference replaced by the translated tensor
    (and a constant a functional model recorded, ``x + keras.ops.arange(n)``'s, by its array)."""
    if _is_tensor_ref(structure):
        name, node, index = structure["config"]["keras_history"]
        return produced[(name, node)][index]
    if isinstance(structure, dict) and structure.get("class_name") == "__tensor__":
        cfg = structure["config"]
        return np.asarray(cfg["value"], dtype=cfg.get("dtype") or None)
    if isinstance(structure, (list, tuple)):
        return type(structure)(_resolve(v, produced) for v in structure)
    if isinstance(structure, dict):
        return {k: _resolve(v, produced) for k, v in structure.items()}
    return structure


def _refs(value) -> list:
    """A functional config's input/output layers as a list of [name, node, index] (Keras 3 writes
    a single one without the outer list)."""
    return [value] if value and isinstance(value[0], str) else list(value)


def _as_list(out) -> list:
    return list(out) if isinstance(out, (list, tuple)) else [out]


class _Builder:
    """Translates a Keras 3 graph into tf_keras, collecting (Keras 3 layer, tf_keras layer) pairs."""

    def __init__(self):
        self.pairs: List[tuple] = []
        self.names: set = set()

    def call_layer(self, layer, args, kwargs):
        if is_keras3_model(layer):  # a nested model: inline its layers
            return self.graph(layer, _as_list(args[0] if len(args) == 1 else args))
        new, after = translate_layer(layer)
        if new.name in self.names:
            raise TranslationError(f"two layers are named '{new.name}' (a nested model repeats an outer name)")
        self.names.add(new.name)
        out = new(*args, **kwargs)
        self.pairs.append((layer, new))
        return after(out) if after is not None else out

    def graph(self, model, inputs: list) -> list:
        """Translate ``model`` (functional or Sequential) called on tf_keras ``inputs``."""
        if type(model).__name__ == "Sequential":
            x = inputs[0]
            for op in model.layers:
                x = self.call_layer(op, [x], {})
            return _as_list(x)
        config = model.get_config()
        ops = {op.name: op for op in model.operations}
        produced: Dict[tuple, list] = {}
        for (name, node, _index), t in zip(_refs(config["input_layers"]), inputs):
            produced[(name, node)] = [t]
        pending = [entry for entry in config["layers"] if entry["class_name"] != "InputLayer"]
        while pending:
            progress = False
            for entry in list(pending):
                try:
                    calls = [
                        (_resolve(n["args"], produced), _resolve(n.get("kwargs", {}), produced))
                        for n in entry["inbound_nodes"]
                    ]
                except KeyError:
                    continue  # an input is not translated yet
                for i, (args, kwargs) in enumerate(calls):
                    produced[(entry["name"], i)] = _as_list(self.call(ops[entry["name"]], entry, args, kwargs))
                pending.remove(entry)
                progress = True
            if not progress:
                raise TranslationError(f"layer '{pending[0]['name']}' reads a tensor no layer produces")
        return [produced[(name, node)][index] for name, node, index in _refs(config["output_layers"])]

    def call(self, op, entry, args, kwargs):
        module = entry.get("module") or ""
        if ".ops." in module or module.endswith(".ops"):
            config = {k: v for k, v in (entry.get("config") or {}).items() if k != "name"}
            return _op(entry["class_name"], config)(*args, **kwargs)
        return self.call_layer(op, args, kwargs)


def _inputs(model):
    _, keras = _tf()
    return [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=t.name.split(":")[0]) for t in model.inputs]


def from_keras3(model, *, x: Optional[np.ndarray] = None, verify: bool = True):
    """The tf_keras twin of a Keras 3 functional or Sequential ``model`` (see the module doc),
    checked on ``x`` (default: random inputs) unless ``verify=False``."""
    _, keras = _tf()
    if not getattr(model, "inputs", None) or type(model).__name__ not in ("Functional", "Sequential"):
        raise TranslationError(
            f"{type(model).__name__} is a subclassed Keras 3 model (or not built); edgekit "
            f"translates functional and Sequential models: build it with keras.Input(...)"
        )
    builder = _Builder()
    inputs = _inputs(model)
    outputs = builder.graph(model, inputs)
    new = keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for k3, tfk in builder.pairs:
        weights = k3.get_weights()
        if [w.shape for w in weights] != [tuple(w.shape) for w in tfk.weights]:
            raise TranslationError(
                f"layer '{k3.name}' ({type(k3).__name__}) keeps its weights differently in tf_keras "
                f"({[w.shape for w in weights]} vs {[tuple(w.shape) for w in tfk.weights]})"
            )
        tfk.set_weights(weights)
    if verify:
        check_translation(model, new, x)
    return new


def sample_inputs(model, n: int = 4, seed: int = 0):
    """Random inputs for ``model`` (a dict by input name for several inputs): uniform [0, 1)
    floats, or token ids every embedding of the model can look up."""
    rng = np.random.default_rng(seed)
    embeddings = [l for l in model.layers if hasattr(l, "input_dim") and type(l).__name__.endswith("Embedding")]
    vocab = [int(l.input_dim) for l in embeddings]
    arrays = {}
    for t in model.inputs:
        shape = (n,) + tuple(int(d) if d is not None else 8 for d in t.shape[1:])
        dtype = np.dtype(getattr(t.dtype, "name", t.dtype))
        if np.issubdtype(dtype, np.integer):
            arrays[t.name.split(":")[0]] = rng.integers(0, min(vocab + [100]), size=shape).astype(dtype)
        else:
            arrays[t.name.split(":")[0]] = rng.random(shape, dtype=np.float32)
    return arrays if len(arrays) > 1 else next(iter(arrays.values()))


def _outputs(model, x) -> np.ndarray:
    """Every output of ``model`` on ``x``, flattened per sample and side by side."""
    out = model(x, training=False)
    outs = list(out.values()) if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else [out]
    arrays = [np.asarray(o.numpy() if hasattr(o, "numpy") else o, dtype=np.float64) for o in outs]
    return arrays[0] if len(arrays) == 1 else np.concatenate([a.reshape(len(a), -1) for a in arrays], axis=1)


def check_translation(source, target, x=None) -> float:
    """Max |Δ| of ``target``'s outputs from ``source``'s on ``x`` (default: random inputs), which
    must be within 1e-5 of their scale; else an error naming the first layer that differs."""
    x = sample_inputs(source) if x is None else {k: v[:8] for k, v in x.items()} if isinstance(x, dict) else x[:8]
    a, b = _outputs(source, x), _outputs(target, x)
    delta = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")
    if delta > ATOL * max(1.0, float(np.max(np.abs(a)))):
        raise TranslationError(
            f"the translated model's outputs differ from the original's by {delta:.3g}"
            f"{_first_difference(source, target, x)}"
        )
    return delta


def _submodel(model, name):
    """``model`` cut at layer ``name``'s output, in ``model``'s own flavour of Keras."""
    return _model_class(model)(model.inputs, model.get_layer(name).output)


def _model_class(model):
    _, keras = _tf()
    return keras.Model if isinstance(model, keras.Model) else keras3().Model


def _first_difference(source, target, x) -> str:
    """'; first in layer NAME (Class)' for the first layer (same name in both) whose outputs differ."""
    try:
        names = [l.name for l in source.layers if not type(l).__name__ == "InputLayer"]
        tnames = {l.name for l in target.layers}
        for name in names:
            if name not in tnames:
                continue
            a = _outputs(_submodel(source, name), x)
            b = _outputs(_submodel(target, name), x)
            if a.shape != b.shape or np.max(np.abs(a - b)) > ATOL * max(1.0, float(np.max(np.abs(a)))):
                return f"; first in layer '{name}' ({type(source.get_layer(name)).__name__})"
    except Exception:  # the search is a diagnosis only
        return ""
    return ""
