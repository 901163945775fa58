"""Trainable exports: a ``.tflite`` head that keeps learning on the device, with builtin ops only.

TFLite's on-device training guide converts its ``train``/``save``/``restore`` signatures with Select
TF (Flex) ops, which the LiteRT wheels no longer run. This export needs none: the trainable layers
(a chain of ``Dense`` layers at the end of the model, ReLU between them, softmax or linear at the
end) become a ``tf.Module`` whose weights and optimizer state are resource variables, and whose
loss and update are written in ops the converter lowers to builtins (measured, TF 2.21: a sparse
softmax cross-entropy lowers to a Flex op, a log-softmax of one-hot labels does not; a dynamic
batch brings ``BroadcastGradientArgs``, a fixed training batch does not; ReLU's gradient is a Flex
``ReluGrad``, a mask multiply is builtin; TFLM lacks POW and SELECT, so neither is used). Signatures:

- ``infer(features)`` → ``output``: the head's output (probabilities, logits or values);
- ``train(features, labels)`` → ``loss``: one optimizer step (SGD, SGD with momentum, Adam) on a
  batch of ``batch_size``; ``labels`` are class ids (int32) or targets (float32);
- ``get_weights()`` → every weight and optimizer slot as a plain tensor, and ``set_weights(...)``
  taking them back, so the board persists the state as it likes.

The frozen part before the head is exported as any model is (int8, fully integer, verified) to
``NAME.backbone.tflite`` beside ``NAME.tflite``: it computes the head's ``features``. At export,
the file is read back (no Flex or custom op in any signature), ``infer`` is compared with the Keras
head and, from the same start, ``k`` train steps of the ``.tflite`` with as many of TensorFlow on
the same batches (weights within 1e-5).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from edgekit.core.errors import InputError, VerificationError
from edgekit.core.task import Task, resolve
from edgekit.device.board.learner import SIGNATURES, backbone_path  # what the board reads, one place

OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclass(frozen=True)
class TrainableOptions:
    """What trains on the device and how. ``trainable``: ``"head"`` (the last Dense layer), N (the
    last N Dense layers) or layer names; ``classes``: a classifier head widened to this many
    classes (the new classes' weights start at zero) for class-incremental learning."""

    trainable: Union[str, int, Tuple[str, ...]] = "head"
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    batch_size: int = 16
    classes: Optional[int] = None
    check_steps: int = 20
    target: str = "litert"  # "mcu": one `step` signature TFLM runs (edgekit.converters.trainable_mcu)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; received {self.optimizer!r}")
        if not float(self.learning_rate) > 0 or not 0 <= float(self.momentum) < 1:
            raise InputError(
                f"learning_rate must be > 0 and momentum in [0, 1); received {self.learning_rate}, {self.momentum}"
            )
        if self.target not in ("litert", "mcu"):
            raise InputError(f"target must be 'litert' or 'mcu'; received {self.target!r}")
        if int(self.batch_size) < 1 or int(self.check_steps) < 1:
            raise InputError(f"batch_size and check_steps must be >= 1; received {self.batch_size}, {self.check_steps}")


@dataclass
class Head:
    """The trainable layers as arrays: per Dense layer its kernel, bias and activation."""

    names: List[str]
    kernels: List[np.ndarray]
    biases: List[np.ndarray]
    activations: List[str]  # "linear" or "relu" between layers; the last "softmax" or "linear"
    classification: bool
    boundary: Any = None  # the Keras tensor the head reads (None: the model's input)
    added_classes: int = 0

    @property
    def features(self) -> int:
        return int(self.kernels[0].shape[0])

    @property
    def outputs(self) -> int:
        return int(self.kernels[-1].shape[1])


def _chain(model) -> list:
    """The layers from the model's output back to the first that is not a Dense, an activation or a
    dropout (that layer's output is where the chain starts), last layer first."""
    from edgekit.core.compat import keras
    from edgekit.core.graph import calls, producer

    L = keras.layers
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InputError("a trainable export needs a model with one input and one output")
    chain, t = [], model.outputs[0]
    while True:
        layer = producer(t)
        if not isinstance(layer, (L.Dense, L.Activation, L.ReLU, L.Softmax, L.Dropout)) or len(calls(layer)) != 1:
            return chain
        chain.append(layer)
        t = layer.input


def split_head(model, trainable="head", classes: Optional[int] = None, task=None) -> Head:
    """The trainable Dense layers at the end of ``model`` (see :class:`TrainableOptions`)."""
    from edgekit.core.compat import keras

    L = keras.layers
    chain = _chain(model)
    dense = [l for l in chain if isinstance(l, L.Dense)]
    trainable = 1 if trainable == "head" else trainable
    if isinstance(trainable, int):
        if not 1 <= trainable <= len(dense):
            raise InputError(
                f"trainable={trainable}: the model ends in {len(dense)} Dense layer(s) that can train on the device "
                f"({', '.join(l.name for l in reversed(dense)) or 'none'}); the layers before them stay frozen"
            )
        picked = dense[:trainable]
    else:
        names = [trainable] if isinstance(trainable, str) else list(trainable)
        known = {l.name for l in dense}
        bad = [n for n in names if n not in known]
        if bad:
            raise InputError(
                f"trainable: '{bad[0]}' is not one of the Dense layers the model ends in "
                f"({', '.join(l.name for l in reversed(dense)) or 'none'}); only those train on the device"
            )
        picked = dense[: max(dense.index(l) for l in dense if l.name in names) + 1]
    first = picked[-1]
    layers = list(reversed(chain[: chain.index(first) + 1]))
    return _head(layers, first, classes, resolve(model, task).task)


def _activation(layer) -> str:
    from edgekit.core.compat import keras

    L = keras.layers
    if isinstance(layer, L.Softmax):
        return "softmax"
    if isinstance(layer, L.ReLU):
        plain = layer.max_value is None and float(layer.negative_slope) == 0 and float(layer.threshold) == 0
        return "relu" if plain else "other"
    return getattr(layer.activation, "__name__", "other")


def _head(layers, first, classes, task) -> Head:
    from edgekit.core.compat import keras

    L = keras.layers
    names, kernels, biases, acts = [], [], [], []
    for layer in layers:
        if isinstance(layer, L.Dropout):
            continue
        act = _activation(layer)
        if isinstance(layer, L.Dense):
            k = layer.kernel.numpy()
            names.append(layer.name)
            kernels.append(k.astype(np.float32))
            biases.append(layer.bias.numpy().astype(np.float32) if layer.use_bias else np.zeros(k.shape[1], np.float32))
            acts.append(act)
        elif acts[-1] == "linear":
            acts[-1] = act
        else:
            raise InputError(
                f"layer '{layer.name}' applies {act} after {acts[-1]}: not a head that trains on the device"
            )
    for i, (name, act) in enumerate(zip(names, acts)):
        allowed = ("linear", "relu") if i < len(acts) - 1 else ("linear", "softmax")
        if act not in allowed:
            raise InputError(
                f"layer '{name}' has activation {act!r}; a head that trains on the device has ReLU (or none) between "
                f"its Dense layers and softmax or none at the end: make the layers before it frozen (fewer trainable)"
            )
    classification = task is Task.CLASSIFICATION
    if not classification and acts[-1] == "softmax":
        raise InputError(f"the model's task is {task.value}, but layer '{names[-1]}' ends in softmax: give the task")
    head = Head(names, kernels, biases, acts, classification, boundary=first.input)
    if classes is not None:
        _widen(head, int(classes))
    return head


def _widen(head: Head, classes: int) -> None:
    """More output classes: new columns of the last kernel and bias at zero (new classes start from
    the bias alone; training moves them)."""
    if not head.classification:
        raise InputError("classes= widens a classifier's head; this head is a regression output")
    if classes < head.outputs:
        raise InputError(f"classes={classes} is fewer than the head's {head.outputs} outputs")
    extra = classes - head.outputs
    head.kernels[-1] = np.concatenate([head.kernels[-1], np.zeros((head.kernels[-1].shape[0], extra), np.float32)], 1)
    head.biases[-1] = np.concatenate([head.biases[-1], np.zeros(extra, np.float32)])
    head.added_classes = extra


def state_names(head: Head, optimizer: str) -> List[str]:
    """The tensors ``get_weights`` returns and ``set_weights`` takes, in order."""
    weights = [f"{kind}{i}" for i in range(len(head.kernels)) for kind in ("kernel", "bias")]
    slots = {"sgd": [], "momentum": ["velocity"], "adam": ["m", "v"]}[optimizer]
    return weights + [f"{s}_{w}" for s in slots for w in weights] + (["step"] if optimizer == "adam" else [])


def module(head: Head, o: TrainableOptions):
    """The head as a ``tf.Module`` with the four signatures (see the module doc)."""
    from edgekit.core.compat import tf

    weights = [a for k, b in zip(head.kernels, head.biases) for a in (k, b)]
    batch, n_out = int(o.batch_size), head.outputs
    label_spec = tf.TensorSpec([batch], tf.int32) if head.classification else tf.TensorSpec([batch, n_out], tf.float32)

    class TrainableHead(tf.Module):
        def __init__(self):
            super().__init__(name="trainable_head")
            self.vars = [tf.Variable(w) for w in weights]
            slots = {"sgd": 0, "momentum": 1, "adam": 2}[o.optimizer]
            self.slots = [tf.Variable(np.zeros_like(w)) for _ in range(slots) for w in weights]
            self.step = tf.Variable(0.0) if o.optimizer == "adam" else None

        def state(self):
            return self.vars + self.slots + ([self.step] if self.step is not None else [])

        def logits(self, x):
            for i, act in enumerate(head.activations):
                x = tf.matmul(x, self.vars[2 * i]) + self.vars[2 * i + 1]
                if act == "relu":  # tf.nn.relu's gradient is a Flex ReluGrad; TFLM has no SELECT (tf.where)
                    x = x * tf.cast(x > 0, x.dtype)
            return x

        @tf.function(input_signature=[tf.TensorSpec([None, head.features], tf.float32)])
        def infer(self, features):
            z = self.logits(features)
            return {"output": tf.nn.softmax(z) if head.activations[-1] == "softmax" else z}

        @tf.function(input_signature=[tf.TensorSpec([batch, head.features], tf.float32), label_spec])
        def train(self, features, labels):
            with tf.GradientTape() as tape:
                z = self.logits(features)
                if head.classification:
                    # one-hot as rows of an identity (GATHER): TFLM has no ONE_HOT kernel
                    hot = tf.gather(tf.eye(n_out), labels)
                    loss = -tf.reduce_mean(tf.reduce_sum(hot * tf.nn.log_softmax(z), axis=-1))
                else:
                    loss = tf.reduce_mean(tf.square(z - labels))
            grads = tape.gradient(loss, self.vars)
            _update(self, grads, o)
            return {"loss": loss}

        @tf.function(input_signature=[])
        def get_weights(self):
            return dict(zip(state_names(head, o.optimizer), (v.read_value() for v in self.state())))

        def _assign(self, values):
            for v, value in zip(self.state(), values):
                v.assign(value)
            return {"assigned": tf.constant(len(values), tf.int32)}

    m = TrainableHead()
    specs = [tf.TensorSpec(v.shape, tf.float32, name=n) for v, n in zip(m.state(), state_names(head, o.optimizer))]
    m.set_weights = tf.function(lambda *values: m._assign(values), input_signature=specs)
    return m


def _update(m, grads, o: TrainableOptions) -> None:
    """One optimizer step on ``m.vars`` (Keras's SGD, momentum and Adam updates)."""
    from edgekit.core.compat import tf

    lr, n = float(o.learning_rate), len(m.vars)
    if o.optimizer == "sgd":
        for v, g in zip(m.vars, grads):
            v.assign_sub(lr * g)
    elif o.optimizer == "momentum":
        for v, g, vel in zip(m.vars, grads, m.slots):
            vel.assign(float(o.momentum) * vel - lr * g)
            v.assign_add(vel)
    else:
        b1, b2, eps = 0.9, 0.999, 1e-7
        m.step.assign_add(1.0)
        power = lambda base: tf.exp(m.step * float(np.log(base)))  # noqa: E731 - TFLM has no POW
        rate = lr * tf.sqrt(1.0 - power(b2)) / (1.0 - power(b1))
        for v, g, first, second in zip(m.vars, grads, m.slots[:n], m.slots[n:]):
            first.assign(b1 * first + (1.0 - b1) * g)
            second.assign(b2 * second + (1.0 - b2) * tf.square(g))
            v.assign_sub(rate * first / (tf.sqrt(second) + eps))


def convert_head(m, signatures=None) -> bytes:
    """The module as a ``.tflite`` with builtin ops and resource variables (no Flex, no custom op);
    ``signatures``: signature name → the module's function (default the four)."""
    from edgekit.core.compat import tf

    names = signatures or {s: s for s in SIGNATURES}  # target="mcu": one `step` (converters/trainable_mcu.py)
    functions = {k: getattr(m, f).get_concrete_function() for k, f in names.items()}
    with tempfile.TemporaryDirectory(prefix="edgekit-trainable-") as tmp:
        tf.saved_model.save(m, tmp, signatures=functions)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(functions))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        conv.experimental_enable_resource_variables = True
        try:
            tflite = conv.convert()
        except Exception as exc:  # the converter's refusal names the op it could not lower
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VerificationError(f"the trainable head does not convert with builtin ops: {first}") from None
    bad = sorted({n for n in builtin_check(tflite) if n.startswith(("FLEX", "CUSTOM"))})
    if bad:
        raise VerificationError(f"the trainable head needs ops LiteRT does not have built in: {', '.join(bad)}")
    return tflite


def builtin_check(tflite: bytes) -> List[str]:
    """Every operator code the file uses, in any signature's subgraph."""
    from edgekit.converters.flatbuffer import opcode_names, schema

    return opcode_names(schema().Model.GetRootAsModel(tflite, 0))


@dataclass
class TrainableReport:
    """A trainable export: the head file (``tflite``) and the frozen backbone's export report."""

    tflite: bytes = field(repr=False)
    backbone: Any  # ExportReport of the frozen part, or None when the head reads the model's input
    signatures: List[str]
    state: List[str]
    ops: List[str]
    batch_size: int
    optimizer: str
    infer_max_diff: float
    train_max_diff: float
    check_steps: int
    added_classes: int = 0
    path: Optional[str] = None
    backbone_path: Optional[str] = None
    mcu: Any = None  # target="mcu": TFLM's MCUReport of the head (the arena for training)

    @property
    def size_bytes(self) -> int:
        return len(self.tflite)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "backbone_path": self.backbone_path,
            "bytes": self.size_bytes,
            "backbone_bytes": self.backbone.size_bytes if self.backbone else 0,
            "signatures": self.signatures,
            "state": self.state,
            "ops": self.ops,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "infer_max_diff": self.infer_max_diff,
            "train_max_diff": self.train_max_diff,
            "check_steps": self.check_steps,
            "added_classes": self.added_classes,
            "backbone": self.backbone.to_dict() if self.backbone else None,
            "mcu": self.mcu.to_dict() if self.mcu else None,
        }

    def summary(self) -> str:
        where = f"wrote {self.path}" if self.path else "converted"
        lines = [
            f"{where}: trainable head, {self.size_bytes:,} bytes, signatures {', '.join(self.signatures)}; "
            f"builtin ops only ({', '.join(self.ops)})",
            f"train: {self.optimizer}, batches of {self.batch_size}"
            + (f", {self.added_classes} new class(es) starting at zero" if self.added_classes else "")
            + f"; state: {len(self.state)} tensors ({', '.join(self.state[:4])}{' …' if len(self.state) > 4 else ''})",
            f"verified: infer = the Keras head (max |Δ| {self.infer_max_diff:.1e}); {self.check_steps} train steps = "
            f"TensorFlow's (weights max |Δ| {self.train_max_diff:.1e})",
        ]
        if self.mcu is not None:
            lines.append(f"training under {self.mcu.brief()} (float32 reference kernels)")
        if self.backbone is not None:
            lines.append("frozen backbone: " + self.backbone.summary().replace("\n", "\n  "))
        return "\n".join(lines)


def _check(tflite: bytes, m_ref, head: Head, feats: np.ndarray, labels: np.ndarray, o: TrainableOptions, keras_out):
    """(infer max |Δ| against the Keras head, weights max |Δ| after ``check_steps`` train steps of
    the file and of TensorFlow on the same batches)."""
    from edgekit.device.board.harness import load_interpreter

    interp = load_interpreter(model_content=tflite, xnnpack=False, allocate=False)
    lite = interp.get_signature_runner("infer")(features=feats)["output"]
    train = interp.get_signature_runner("train")
    b, n = int(o.batch_size), len(feats)
    for step in range(int(o.check_steps)):
        idx = np.arange(step * b, step * b + b) % n
        ys = labels[idx].astype(np.int32 if head.classification else np.float32)
        train(features=feats[idx], labels=ys)
        m_ref.train(feats[idx], ys)
    return differences(lite, interp.get_signature_runner("get_weights")(), m_ref, head, keras_out)


def differences(lite, mine: dict, m_ref, head: Head, keras_out) -> Tuple[float, float]:
    """(max |Δ| of the file's outputs ``lite`` against the Keras head's — its own classes: new ones start
    at zero logits —, max |Δ| of the file's state ``mine`` against TensorFlow's module ``m_ref``)."""
    if head.added_classes:
        lite = lite[:, : head.outputs - head.added_classes]
        if head.activations[-1] == "softmax":
            lite = lite / lite.sum(axis=1, keepdims=True)
    theirs = {k: v.numpy() for k, v in m_ref.get_weights().items()}
    return float(np.max(np.abs(lite - keras_out))), max(float(np.max(np.abs(mine[k] - theirs[k]))) for k in theirs)


def export_trainable(
    model,
    path=None,
    quant: str = "int8",
    *,
    calibration=None,
    validation_data=None,
    options: TrainableOptions = TrainableOptions(),
    task=None,
    overwrite: bool = False,
    progress: Optional[str] = None,
    backbone_options=None,
) -> TrainableReport:
    """Export ``model`` for learning on the device (see the module doc): the head to ``path``, the
    frozen part before it (``quant``, or ``backbone_options``: an :class:`ExportOptions`, verified as
    :func:`edgekit.converters.export` verifies) to ``path``'s ``.backbone.tflite`` twin. Nothing is
    written unless every check passes."""
    from edgekit.converters.export import export
    from edgekit.core.compat import keras
    from edgekit.core.graph import functional
    from edgekit.core.samples import calibration_samples, input_specs, validation_pair

    model = functional(model, "a trainable export")
    head = split_head(model, options.trainable, options.classes, task)
    x_val, y_val = validation_pair(validation_data)
    x = calibration_samples(calibration, input_specs(model), 512)[0] if calibration is not None else x_val
    if x is None:
        raise InputError("a trainable export needs data: calibration samples for the backbone and the checks")
    own_input = head.boundary is model.inputs[0]
    backbone = None if own_input else keras.Model(model.inputs, head.boundary, name=f"{model.name}_backbone")
    feats = np.asarray(x if own_input else backbone.predict(x, batch_size=64, verbose=0), np.float32)
    feats = feats.reshape(len(feats), -1)
    if feats.shape[1] != head.features:
        raise InputError(f"the head reads {tuple(head.boundary.shape[1:])}; a trainable head reads flat features")
    rng = np.random.default_rng(0)
    labels = (rng.integers(0, head.outputs, len(feats)) if head.classification
              else rng.normal(size=(len(feats), head.outputs)))  # fmt: skip
    keras_out = model.predict(x, batch_size=64, verbose=0).reshape(len(feats), -1)
    if options.target == "mcu":
        from edgekit.converters.trainable_mcu import export_step

        tflite, sigs, infer_diff, train_diff, tflm = export_step(head, options, feats, labels, keras_out)
    else:
        tflite, sigs, tflm = convert_head(module(head, options)), list(SIGNATURES), None
        infer_diff, train_diff = _check(tflite, module(head, options), head, feats, labels, options, keras_out)
    if infer_diff > 1e-5 or train_diff > 1e-5:
        raise VerificationError(
            f"the trainable head differs from TensorFlow: infer max |Δ| {infer_diff:.2g}, weights after "
            f"{options.check_steps} train steps max |Δ| {train_diff:.2g} (the bound is 1e-5)"
        )
    report = TrainableReport(
        tflite, None, sigs, state_names(head, options.optimizer),
        sorted(set(builtin_check(tflite))), int(options.batch_size), options.optimizer,
        infer_diff, train_diff, int(options.check_steps), head.added_classes, mcu=tflm,
    )  # fmt: skip
    if backbone is not None:
        from edgekit.converters.export import ExportOptions

        o = backbone_options or ExportOptions(quant=quant)
        if o.streaming:
            raise InputError("a trainable export's backbone reads whole inputs: drop --streaming")
        o = dataclasses.replace(o, task="regression", min_agreement=None, layer_report=False)  # it gives features
        val = (x_val if x_val is not None else x, None)
        report.backbone = export(backbone, None, calibration=x, validation_data=val, progress=progress, options=o)
    if path is not None:
        _write(report, os.fspath(path), overwrite)
    return report


def _write(report: TrainableReport, path: str, overwrite: bool) -> None:
    """The head, then its backbone (or, when the head reads the model's input, an earlier export's
    backbone beside it removed: a Learner would read it); all or nothing."""
    from edgekit.core.io import check_output, write_atomic

    twin = backbone_path(path)
    check_output(path, overwrite=overwrite)
    if report.backbone is not None or os.path.exists(twin):
        check_output(twin, overwrite=overwrite, what="the backbone beside it")
    write_atomic(path, report.tflite, overwrite=overwrite)
    report.path = path
    try:
        if report.backbone is not None:
            write_atomic(twin, report.backbone.tflite, overwrite=overwrite)
            report.backbone_path, report.backbone = twin, dataclasses.replace(report.backbone, path=twin)
        elif os.path.exists(twin):
            os.unlink(twin)  # an earlier export's: this head reads the model's input
    except BaseException:
        os.unlink(path)
        report.path = None
        raise
