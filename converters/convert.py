"""Keras → ``.tflite``, verified after every conversion.

:func:`convert` returns the flatbuffer bytes; :func:`export` converts, verifies and only then writes
the file (to a temporary name, renamed into place), returning an :class:`ExportReport`.

Verification (see :func:`verify`):
1. audit — every op and tensor dtype is read from the file; in ``int8`` mode a float op or a
   custom/Flex op is an error naming it;
2. the model allocates and runs under the interpreter configuration a board uses (XNNPACK);
3. agreement with the Keras model on held-out data: top-1 agreement, and the accuracy of both
   when labels exist; ``min_agreement`` turns a low agreement into an error.
"""

from __future__ import annotations

import enum
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from edgekit._io import write_atomic
from edgekit.converters.inspection import inspect_tflite
from edgekit.data import fit_to_input
from edgekit.errors import InputError, VerificationError

DEFAULT_CALIB_SAMPLES = 256
DEFAULT_VERIFY_SAMPLES = 1000


class Quant(str, enum.Enum):
    """Conversion modes. ``int8`` is full-integer: int8 weights, activations, input and output."""

    FLOAT32 = "float32"
    INT8 = "int8"

    @classmethod
    def parse(cls, value) -> "Quant":
        try:
            return cls(value.value if isinstance(value, cls) else str(value))
        except ValueError:
            choices = ", ".join(q.value for q in cls)
            raise InputError(f"unknown quantization mode '{value}'; expected one of: {choices}") from None


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and what verification measured."""

    mode: str
    path: Optional[str]
    size_bytes: int
    gzip_bytes: int
    fully_integer: bool
    op_counts: dict
    input: dict
    output: dict
    accuracy: Optional[dict]  # {"keras": ..., "tflite": ...} when labels exist
    agreement: Optional[float]  # top-1 agreement with the Keras model, 0-1
    verify_samples: int
    calib_samples: int
    seed: int
    convert_seconds: float
    verify_seconds: float
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def _keras():
    from edgekit._compat import keras, tf

    return tf, keras


def check_model(model) -> None:
    """A clear error for anything that is not a built tf_keras model."""
    _, keras = _keras()
    if isinstance(model, keras.Model):
        if not model.built or not model.inputs:
            raise InputError(
                f"model '{model.name}' has no defined inputs; build it with keras.Input(...) "
                f"(a functional or Sequential model with an input shape)"
            )
        if len(model.inputs) != 1:
            raise InputError(
                f"model '{model.name}' has {len(model.inputs)} inputs; export supports one input"
            )
        return
    kind = f"{type(model).__module__}.{type(model).__name__}"
    if type(model).__module__.startswith("keras"):
        raise InputError(
            f"received a Keras 3 model ({kind}); edgekit works with tf_keras (Keras 2): "
            f"import tf_keras as keras, or `from edgekit._compat import keras`"
        )
    raise InputError(f"expected a tf_keras.Model, received {kind}")


def load_keras_model(path: str):
    """Load a ``.keras``/``.h5`` file or a SavedModel directory with tf_keras."""
    _, keras = _keras()
    if not os.path.exists(path):
        raise InputError(f"model file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # corrupt zip, wrong format, missing custom object ...
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise InputError(
            f"cannot load {path} as a Keras model ({type(exc).__name__}: {text}); "
            f"expected a .keras or .h5 file saved by tf_keras"
        ) from None
    check_model(model)
    return model


def _input_shape(model) -> tuple:
    return tuple(model.inputs[0].shape[1:])


def _sample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(x) <= n:
        return x
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return x[idx]


def convert(
    model,
    quant="int8",
    calib: Optional[np.ndarray] = None,
    *,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    seed: int = 0,
) -> bytes:
    """Convert a tf_keras model to ``.tflite`` bytes (TFLite builtin ops only).

    ``int8`` needs ``calib``: samples (N, ...) shaped like the model input, of which
    ``calib_samples`` (drawn with ``seed``) calibrate the activation ranges."""
    tf, _ = _keras()
    quant = Quant.parse(quant)
    check_model(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quant is Quant.INT8:
        if calib is None:
            raise InputError("int8 conversion needs calibration data (--calib digits or a .npz)")
        if calib_samples < 1:
            raise InputError(f"`calib_samples` must be >= 1. Received calib_samples={calib_samples}")
        data = _sample(fit_to_input(calib, _input_shape(model), "calibration data"), calib_samples, seed)

        def representative_dataset():
            for i in range(len(data)):
                yield [data[i : i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return converter.convert()
    except Exception as exc:
        text = " ".join(str(exc).split())
        raise InputError(
            f"the TFLite converter rejected model '{model.name}' in {quant.value} mode: {text[:400]}"
        ) from None


def verify(
    model,
    tflite: bytes,
    quant="int8",
    x: Optional[np.ndarray] = None,
    y: Optional[np.ndarray] = None,
    *,
    min_agreement: Optional[float] = None,
    verify_samples: int = DEFAULT_VERIFY_SAMPLES,
    seed: int = 0,
    threads: int = 1,
):
    """Audit ``tflite`` and compare it with ``model``; returns (ModelInfo, measurements dict).

    Raises :class:`VerificationError` when the audit fails, the model does not prepare under
    XNNPACK, or top-1 agreement is below ``min_agreement``."""
    from edgekit.device.harness import HarnessError, load_interpreter, predict

    quant = Quant.parse(quant)
    info = inspect_tflite(tflite)
    if quant is Quant.INT8:
        bad = info.custom_ops or info.float_ops
        if bad:
            op = bad[0]
            raise VerificationError(
                f"int8 model is not fully integer: {op.op} (op #{op.index}) computes on "
                f"{'/'.join(sorted(set(op.input_dtypes + op.output_dtypes)))}; "
                f"{len(bad)} such op(s) in all; the layer has no int8 kernel, replace it or export as float32"
            )
    try:
        interp = load_interpreter(model_content=tflite, threads=threads, xnnpack=True)
    except HarnessError as exc:
        raise VerificationError(str(exc).replace("model bytes", "the converted model")) from None

    measured = {"accuracy": None, "agreement": None, "verify_samples": 0}
    if x is not None:
        if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
            raise InputError(f"`min_agreement` must be in [0, 1]. Received min_agreement={min_agreement}")
        xs = fit_to_input(x, _input_shape(model), "verification data")
        idx = np.arange(len(xs))
        if len(xs) > verify_samples:
            idx = np.sort(np.random.default_rng(seed).choice(len(xs), verify_samples, replace=False))
        xs = xs[idx]
        lite = predict(interp, xs)
        ref = np.asarray(model.predict(xs, batch_size=64, verbose=0))
        lite2 = lite.reshape(len(lite), -1)
        ref2 = ref.reshape(len(ref), -1)
        agreement = float(np.mean(lite2.argmax(1) == ref2.argmax(1)))
        measured.update(agreement=agreement, verify_samples=int(len(xs)))
        if y is not None:
            ys = np.asarray(y)[idx]
            measured["accuracy"] = {
                "keras": float(np.mean(ref2.argmax(1) == ys)),
                "tflite": float(np.mean(lite2.argmax(1) == ys)),
            }
        if min_agreement is not None and agreement < min_agreement:
            raise VerificationError(
                f"{quant.value} model agrees with the Keras model on {agreement:.1%} of "
                f"{len(xs)} samples, below the required {min_agreement:.1%} (min_agreement); "
                f"calibrate with more representative data or export as float32"
            )
    return info, measured


def export(
    model,
    path: Optional[str],
    quant="int8",
    *,
    calib: Optional[np.ndarray] = None,
    eval_x: Optional[np.ndarray] = None,
    eval_y: Optional[np.ndarray] = None,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    verify_samples: int = DEFAULT_VERIFY_SAMPLES,
    min_agreement: Optional[float] = None,
    seed: int = 0,
    overwrite: bool = True,
) -> ExportReport:
    """Convert, verify, then write ``path`` atomically (nothing is written if a step fails).

    ``path=None`` converts and verifies without writing. ``eval_x``/``eval_y`` are held-out data
    for the agreement check (defaults to the calibration data, without labels)."""
    quant = Quant.parse(quant)
    if path is not None:
        path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise InputError(f"output directory does not exist: {parent}")
        if os.path.exists(path) and not overwrite:
            raise InputError(f"{path} exists; pass --overwrite to replace it")
    t0 = time.perf_counter()
    tflite = convert(model, quant, calib, calib_samples=calib_samples, seed=seed)
    t1 = time.perf_counter()
    if eval_x is None:
        eval_x, eval_y = calib, None
    info, measured = verify(
        model, tflite, quant, eval_x, eval_y, min_agreement=min_agreement,
        verify_samples=verify_samples, seed=seed,
    )
    t2 = time.perf_counter()
    notes = []
    if measured["agreement"] is None:
        notes.append("no verification data: agreement with the Keras model was not measured")
    if path is not None:
        write_atomic(path, tflite)
    return ExportReport(
        mode=quant.value,
        path=path,
        size_bytes=info.size_bytes,
        gzip_bytes=info.gzip_bytes,
        fully_integer=info.fully_integer,
        op_counts=info.op_counts,
        input=dict(info.inputs[0]),
        output=dict(info.outputs[0]),
        accuracy=measured["accuracy"],
        agreement=measured["agreement"],
        verify_samples=measured["verify_samples"],
        calib_samples=(min(calib_samples, len(calib)) if quant is Quant.INT8 else 0),
        seed=seed,
        convert_seconds=round(t1 - t0, 3),
        verify_seconds=round(t2 - t1, 3),
        warnings=notes,
    )
