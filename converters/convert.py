"""Keras → ``.tflite``, verified after every conversion.

:func:`convert` returns the flatbuffer bytes; :func:`export` converts, verifies and only then writes
the file (to a temporary name, renamed into place), returning an :class:`ExportReport`.

Modes (:class:`Quant`): float32, float16, dynamic, int8 (full integer), int16x8; optional sparse
weight encoding. Verification (see :func:`verify`):
1. audit — every op and tensor dtype is read from the file; a custom/Flex op is an error in every
   mode, and in the integer modes so is a float op (other than the I/O edges with float32 I/O),
   naming the op and the Keras layer it came from;
2. the model allocates and runs under the interpreter configuration a board uses (XNNPACK); a
   failure names the reason and the fix;
3. agreement with the Keras model on held-out data: top-1 agreement, output SNR and cosine, and
   the accuracy of both when labels exist; ``min_agreement`` turns a low agreement into an error;
4. int8: each layer's quantization error (:mod:`edgekit.converters.quant_debug`), worst first,
   and optionally layers kept in float until the agreement holds.
"""

from __future__ import annotations

import enum
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np

from edgekit._io import check_output, write_atomic
from edgekit.converters.inspection import inspect_tflite
from edgekit.converters.share import share_weights as _share_weights
from edgekit.data import calibration_samples, fit_to_input, sample_indices
from edgekit.errors import InputError, VerificationError

DEFAULT_CALIB_SAMPLES = 256
DEFAULT_VERIFY_SAMPLES = 1000


class Quant(str, enum.Enum):
    """Conversion modes.

    - ``float32``: as trained.
    - ``float16``: float16 weights (half the size), float compute.
    - ``dynamic``: int8 weights, float activations (dynamic-range quantization).
    - ``int8``: full integer, int8 weights and activations; I/O ``int8`` (default), ``uint8`` or
      ``float32`` (a QUANTIZE/DEQUANTIZE pair at the edges).
    - ``int16x8``: int16 activations, int8 weights; I/O ``int16`` (default) or ``float32``.
    """

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    INT16X8 = "int16x8"

    @classmethod
    def parse(cls, value) -> "Quant":
        try:
            return cls(value.value if isinstance(value, cls) else str(value))
        except ValueError:
            choices = ", ".join(q.value for q in cls)
            raise InputError(f"unknown quantization mode '{value}'; expected one of: {choices}") from None

    @property
    def integer(self) -> bool:
        """Full-integer modes: calibrated activations, integer compute end to end."""
        return self in (Quant.INT8, Quant.INT16X8)

    @property
    def io_types(self) -> tuple:
        """Allowed input/output dtypes, the default first."""
        return {Quant.INT8: ("int8", "uint8", "float32"), Quant.INT16X8: ("int16", "float32")}.get(
            self, ("float32",))

    def check_io(self, io: Optional[str]) -> str:
        io = self.io_types[0] if io is None else str(io)
        if io not in self.io_types:
            raise InputError(
                f"--io {io} does not apply to {self.value} models; use one of: {', '.join(self.io_types)}"
            )
        return io


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
    snr_db: Optional[float]  # output SNR against the Keras model (None when identical)
    cosine: Optional[float]  # mean cosine similarity of the outputs
    verify_samples: int
    calib_samples: int
    seed: int
    convert_seconds: float
    verify_seconds: float
    warnings: list = field(default_factory=list)
    io: str = "float32"
    sparse: bool = False
    per_channel: bool = True  # int8 weights quantized per output channel (False: one scale per tensor)
    calib: Optional[dict] = None  # source, samples, seed, selection
    worst_layers: list = field(default_factory=list)  # int8: per-layer error, worst first
    kept_float: list = field(default_factory=list)  # Keras layers left in float
    shared_weights: list = field(default_factory=list)  # weights stored once for several ops

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


def load_keras_model(path, safe_mode: bool = True):
    """Load a ``.keras``/``.h5`` file or a SavedModel directory with tf_keras, including models
    written by ``edgekit optimize`` (tfmot wrappers, edgekit's QuantizeConfigs).

    The file is read first without running any of it (:func:`edgekit.modelfile.scan`): a model
    that would run Python when loaded (a Lambda layer, an unknown module) is refused with
    :class:`~edgekit.errors.UnsafeModelError` unless ``safe_mode=False``, and sizes are checked
    against :mod:`edgekit.limits`."""
    from edgekit.modelfile import scan

    path = os.fspath(path)
    found = scan(path, safe_mode=safe_mode)
    if found.format == "savedmodel" and not found.has_keras_metadata:
        raise InputError(f"{path} is a SavedModel without Keras metadata (e.g. written by tf.saved_model.save "
                         f"or Keras 3's model.export): give the .keras file the model was saved to instead")
    _, keras = _keras()
    import edgekit.models  # noqa: F401 - registers the builders' custom layers (TiedEmbedding)
    from edgekit.optimize.techniques import custom_objects

    try:
        with warnings.catch_warnings(), custom_objects():
            warnings.simplefilter("ignore")
            model = keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:  # corrupt zip, wrong format, missing custom object ...
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise InputError(
            f"cannot load {path} as a Keras model ({type(exc).__name__}: {text}); "
            f"expected a .keras or .h5 file or a SavedModel directory saved by tf_keras"
        ) from None
    check_model(model)
    return model


def _input_shape(model) -> tuple:
    return tuple(model.inputs[0].shape[1:])


def _input_dtype(model) -> str:
    """The model input's dtype: float32, or an integer type for token ids."""
    return np.dtype(model.inputs[0].dtype.as_numpy_dtype).name


def _fit(model, x, what: str) -> np.ndarray:
    return fit_to_input(x, _input_shape(model), what, _input_dtype(model))


def _representative(data: np.ndarray, progress_label: Optional[str]):
    from edgekit.device.harness import Progress

    def gen():
        bar = Progress(progress_label or "calibrating", enabled=None if progress_label else False)
        try:
            for i in range(len(data)):
                bar.update("calibration samples", i + 1, len(data))
                yield [data[i : i + 1]]
        finally:
            bar.close()

    return gen


def _converter(model, quant: Quant, calib: Optional[np.ndarray], io: str, sparse: bool,
               progress_label: Optional[str] = None, per_channel: bool = True):
    """A TFLiteConverter set up for ``quant`` (builtin ops only)."""
    tf, _ = _keras()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quant is not Quant.FLOAT32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quant is Quant.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if quant.integer:
        converter.representative_dataset = _representative(calib, progress_label)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if quant is Quant.INT8
            else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        converter.inference_input_type = converter.inference_output_type = getattr(tf, io)
    if sparse:
        converter.optimizations = list(converter.optimizations) + [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if not per_channel:
        # One scale per weight tensor: a clustered kernel keeps its k values in the file.
        converter._experimental_disable_per_channel = True
    return converter


def _run_converter(what: str, quant: Quant, fn):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    except InputError:
        raise
    except Exception as exc:
        text = " ".join(str(exc).split())
        raise InputError(f"the TFLite converter rejected {what} in {quant.value} mode: {text[:400]}") from None


def convert(
    model,
    quant="int8",
    calib=None,
    *,
    io: Optional[str] = None,
    sparse: bool = False,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    seed: int = 0,
    keep_float: Sequence[str] = (),
    progress: Optional[str] = None,
    per_channel: bool = True,
    share: bool = True,
) -> bytes:
    """Convert a tf_keras model to ``.tflite`` bytes (TFLite builtin ops only).

    ``int8`` and ``int16x8`` need ``calib``: any source :func:`edgekit.data.calibration_samples`
    takes (an array, 'digits', a .npz path, an image directory, a tf.data dataset, a generator),
    of which ``calib_samples`` (drawn with ``seed``) calibrate the activation ranges. ``io`` sets
    the input/output dtype of integer models, ``sparse`` encodes zero weights sparsely,
    ``keep_float`` names output tensors (see :func:`layer_errors`) of int8 ops to leave in float.
    ``progress`` labels a progress line on a terminal during calibration. ``per_channel=False``
    quantizes each weight tensor with one scale (for clustered models: k values stay k values).
    ``share`` stores a weight that several ops read (a tied embedding) once
    (:func:`edgekit.converters.share.share_weights`)."""
    return _convert(model, quant, calib, io=io, sparse=sparse, calib_samples=calib_samples, seed=seed,
                    keep_float=keep_float, progress=progress, per_channel=per_channel, share=share)[0]


def _convert(model, quant, calib, *, io, sparse, calib_samples, seed, keep_float, progress, per_channel,
             share, calibrated: Optional[bytes] = None) -> tuple:
    """:func:`convert`, also returning what weight sharing merged. ``calibrated``: the model
    already calibrated on ``calib`` (:func:`calibrate`, as the layer report keeps it), so int8
    quantizes it instead of calibrating again."""
    quant = Quant.parse(quant)
    check_model(model)
    io = quant.check_io(io)
    data = None
    if quant.integer:
        if calib is None:
            raise InputError(f"{quant.value} conversion needs calibration data (--calib digits, a .npz "
                             f"or an image directory)")
        data, _ = calibration_samples(calib, _input_shape(model), calib_samples, seed, _input_dtype(model))
    if keep_float and quant is not Quant.INT8:
        raise InputError(f"keeping layers in float applies to int8 models, not {quant.value}")
    if not per_channel and quant not in (Quant.INT8, Quant.INT16X8, Quant.DYNAMIC):
        raise InputError(f"per-tensor weights apply to int8, int16x8 and dynamic models, not {quant.value}")
    what = f"model '{model.name}'"
    if quant is Quant.INT8 and (keep_float or calibrated is not None):
        def run():
            cal = calibrated if calibrated is not None else calibrate(
                _converter(model, quant, data, io, sparse, progress, per_channel))
            return _quantize(cal, io, keep_float, sparse, per_channel)
        tflite = _run_converter(what, quant, run)
    else:
        tflite = _run_converter(what, quant, _converter(model, quant, data, io, sparse, progress, per_channel).convert)
    return _share_weights(tflite) if share else (tflite, [])


def calibrate(converter) -> bytes:
    """The float model with the activation ranges recorded on the converter's representative
    data (TF's QuantizationDebugger path); :func:`_quantize` makes it int8."""
    converter.experimental_new_quantizer = True
    converter._experimental_calibrate_only = True  # noqa: SLF001 - TF's documented debugger path
    return converter.convert()


def _quantize(calibrated: bytes, io: str, keep_float: Sequence[str], sparse: bool, per_channel: bool) -> bytes:
    """Quantize a calibrated model to int8 with the ops producing ``keep_float`` tensors left in
    float (the MLIR quantizer's node denylist). The same ops, tensors and outputs as the
    converter's own int8 path (tested); only the conversion metadata differ."""
    tf, _ = _keras()
    from tensorflow.lite.python import convert as tflite_convert

    model = tflite_convert.mlir_quantize(
        calibrated, disable_per_channel=not per_channel, input_data_type=getattr(tf, io),
        output_data_type=getattr(tf, io), denylisted_nodes=list(keep_float),
    )
    return tflite_convert.mlir_sparsify(model) if sparse else model


def layer_of_tensor(name: str, model=None) -> str:
    """The Keras layer a .tflite tensor came from, read from its name (the converter names a fused
    op's output after every layer fused into it; the one with a kernel is chosen)."""
    layers = {l.name: l for l in model.layers} if model is not None else {}
    found = []
    for part in name.split(";"):
        segs = part.split("/")
        if len(segs) > 1 and (not layers or segs[1] in layers) and segs[1] not in found:
            found.append(segs[1])
    kernels = [n for n in found if layers and any(hasattr(layers[n], a) for a in ("kernel", "depthwise_kernel"))]
    if not found and model is not None and name.startswith("StatefulPartitionedCall"):
        found = [model.layers[-1].name]  # the graph output (e.g. a softmax) keeps the call's name
    return (kernels or found or [name])[0]


def op_layer(info, op, model=None) -> str:
    """The Keras layer ``op`` came from, by its output tensor's name."""
    name = info.tensors[op.outputs[0]].name if op.outputs else ""
    return layer_of_tensor(name, model) if name else f"op #{op.index}"


def audit(info, quant, io: Optional[str] = None, model=None, allow_float: bool = False) -> list:
    """Raise :class:`VerificationError` for an op a board cannot run as asked; returns the
    float ops accepted (those of layers kept in float with ``allow_float``).

    Every mode: custom and Flex ops are errors (a board's LiteRT wheel has builtins only).
    ``int8``/``int16x8``: every op computes on integers, except a QUANTIZE of the graph input and
    a DEQUANTIZE of the graph output when the I/O is float32."""
    quant = Quant.parse(quant)
    io = quant.check_io(io)
    if info.custom_ops:
        op = info.custom_ops[0]
        raise VerificationError(
            f"{op.op} (op #{op.index}, layer {op_layer(info, op, model)}) is not a TFLite builtin; "
            f"a board's LiteRT wheel cannot run it: replace the layer with builtin-convertible ones"
        )
    if not quant.integer:
        return []
    graph_in = {t["index"] for t in info.inputs}
    graph_out = {t["index"] for t in info.outputs}

    def at_edge(op) -> bool:
        return io == "float32" and (
            (op.op == "QUANTIZE" and set(op.inputs) <= graph_in)
            or (op.op == "DEQUANTIZE" and set(op.outputs) <= graph_out)
        )

    bad = [op for op in info.float_ops if not at_edge(op)]
    if bad and not allow_float:
        op = bad[0]
        raise VerificationError(
            f"{quant.value} model is not fully integer: {op.op} (op #{op.index}, layer "
            f"{op_layer(info, op, model)}) computes on "
            f"{'/'.join(sorted(set(op.input_dtypes + op.output_dtypes)))}; {len(bad)} such op(s) in all; "
            f"the layer has no integer kernel: replace it, or export as float32/dynamic"
        )
    return bad


def _output_similarity(ref: np.ndarray, lite: np.ndarray) -> dict:
    """SNR (dB) of the .tflite outputs against the Keras outputs, and their mean cosine."""
    ref = ref.astype(np.float64)
    err = lite.astype(np.float64) - ref
    noise = float(np.mean(err**2))
    signal = float(np.mean(ref**2))
    snr = float("inf") if noise == 0 else 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(lite, axis=1)
    cos = np.where(norms > 0, np.sum(ref * lite, axis=1) / np.where(norms > 0, norms, 1), 1.0)
    return {"snr_db": round(float(snr), 2) if np.isfinite(snr) else None, "cosine": float(np.mean(cos))}


_PREPARE_FIXES = {
    "sparse": "sparse int8 weights have no XNNPACK kernel: export without --sparse, or run the "
              "model with the delegate off (bench --no-xnnpack)",
    "default": "the board's default interpreter (XNNPACK) would fail the same way: export in another "
               "mode or replace the layer",
}


def verify(
    model,
    tflite: bytes,
    quant="int8",
    x: Optional[np.ndarray] = None,
    y: Optional[np.ndarray] = None,
    *,
    io: Optional[str] = None,
    sparse: bool = False,
    allow_float: bool = False,
    min_agreement: Optional[float] = None,
    verify_samples: int = DEFAULT_VERIFY_SAMPLES,
    seed: int = 0,
    threads: int = 1,
):
    """Audit ``tflite`` (:func:`audit`), prepare and run it under XNNPACK, compare it with
    ``model`` on ``x``; returns (ModelInfo, measurements dict with ``agreement``, ``accuracy``,
    ``snr_db``, ``cosine``, ``verify_samples``).

    Raises :class:`VerificationError` when the audit fails, the model does not prepare under
    XNNPACK, or top-1 agreement is below ``min_agreement``."""
    from edgekit.device.harness import HarnessError, load_interpreter, predict

    quant = Quant.parse(quant)
    info = inspect_tflite(tflite)
    audit(info, quant, io, model, allow_float=allow_float)
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise InputError(f"`min_agreement` must be in [0, 1]. Received min_agreement={min_agreement}")
    try:
        interp = load_interpreter(model_content=tflite, threads=threads, xnnpack=True)
    except HarnessError as exc:
        reason = str(exc).replace("model bytes", "the converted model")
        raise VerificationError(
            f"{reason} -- {_PREPARE_FIXES['sparse' if sparse else 'default']}"
        ) from None

    measured = {"accuracy": None, "agreement": None, "snr_db": None, "cosine": None, "verify_samples": 0}
    if x is not None:
        xs = _fit(model, x, "verification data")
        idx = sample_indices(len(xs), verify_samples, seed)
        xs = xs[idx]
        lite = predict(interp, xs)
        ref = np.asarray(model.predict(xs, batch_size=64, verbose=0))
        # Top-1 over the last axis: per sample for (N, classes), per position for sequences (N, T, vocab).
        lite_top, ref_top = lite.argmax(-1), ref.argmax(-1)
        agreement = float(np.mean(lite_top == ref_top))
        measured.update(agreement=agreement, verify_samples=int(len(xs)),
                        **_output_similarity(ref.reshape(len(ref), -1), lite.reshape(len(lite), -1)))
        if y is not None:
            ys = np.asarray(y)[idx]
            if ys.size != ref_top.size:
                want = "(N,)" if ref_top.ndim == 1 else f"(N, {', '.join(map(str, ref_top.shape[1:]))})"
                raise InputError(f"labels have shape {np.shape(y)}; the model's output "
                                 f"{tuple(ref.shape[1:])} needs one label per class axis: {want}")
            ys = ys.reshape(ref_top.shape)
            measured["accuracy"] = {
                "keras": float(np.mean(ref_top == ys)),
                "tflite": float(np.mean(lite_top == ys)),
            }
        if min_agreement is not None and agreement < min_agreement:
            raise VerificationError(
                f"{quant.value} model agrees with the Keras model on {agreement:.1%} of "
                f"{len(xs)} samples, below the required {min_agreement:.1%} (min_agreement); "
                f"calibrate with more representative data, keep sensitive layers in float "
                f"(--keep-float auto) or export as float32"
            )
    return info, measured


def export(
    model,
    path: Optional[str],
    quant="int8",
    *,
    calib=None,
    eval_x: Optional[np.ndarray] = None,
    eval_y: Optional[np.ndarray] = None,
    io: Optional[str] = None,
    sparse: bool = False,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    verify_samples: int = DEFAULT_VERIFY_SAMPLES,
    min_agreement: Optional[float] = None,
    keep_float=None,
    layer_report: bool = True,
    seed: int = 0,
    overwrite: bool = False,
    progress: Optional[str] = None,
    per_channel: bool = True,
    share_weights: bool = True,
) -> ExportReport:
    """Convert, verify, then write ``path`` atomically (nothing is written if a step fails).

    ``path=None`` converts and verifies without writing. ``calib`` is any calibration source
    (see :func:`convert`); ``eval_x``/``eval_y`` are held-out data for the agreement check
    (default: the calibration samples, without labels). For int8, ``layer_report`` measures
    each layer's quantization error (the worst are in ``worst_layers``), and ``keep_float``
    leaves layers in float: a list of Keras layer names, or ``"auto"`` to keep the most
    sensitive ones until ``min_agreement`` holds. ``per_channel=False`` gives each weight tensor
    one scale (clustered models keep their k values per kernel in the file). ``share_weights``
    stores a weight read by several ops (a tied embedding) once; ``shared_weights`` in the report
    lists what was merged and the bytes saved. Pruning and clustering wrappers are stripped first."""
    from edgekit.converters.quant_debug import _layer_errors, keep_float_auto, tensors_of_layers

    quant = Quant.parse(quant)
    check_model(model)
    if any(type(layer).__name__ in ("PruneLowMagnitude", "ClusterWeights") for layer in model.layers):
        from edgekit.optimize import strip

        model = strip(model)  # the wrappers' masks and indices are training state, not the model
    io = quant.check_io(io)
    qat_model = any(type(layer).__name__.startswith("Quantize") for layer in model.layers)
    if qat_model and keep_float:
        raise InputError("--keep-float does not apply to a quantization-aware model: leave the layer out of QAT "
                         "instead (QATConfig(skip=...), --qat-skip)")
    if isinstance(keep_float, str) and keep_float != "auto":
        keep_float = [k.strip() for k in keep_float.split(",") if k.strip()]
    if keep_float and quant is not Quant.INT8:
        raise InputError(f"--keep-float applies to int8 models, not {quant.value}")
    if keep_float == "auto" and min_agreement is None:
        raise InputError("--keep-float auto needs --min-agreement F: the agreement to reach")
    if path is not None:
        path = check_output(path, overwrite=overwrite)
    calib_x, calib_info = None, None
    if quant.integer:
        if calib is None:
            raise InputError(f"{quant.value} export needs calibration data (--calib digits, a .npz "
                             f"or an image directory)")
        calib_x, calib_info = calibration_samples(calib, _input_shape(model), calib_samples, seed, _input_dtype(model))
    if eval_x is None and calib_x is not None:
        eval_x, eval_y = calib_x, None
    elif eval_x is None and isinstance(calib, np.ndarray):
        eval_x, eval_y = calib, None

    t0 = time.perf_counter()
    errors, calibrated = [], None
    # TF's QuantizationDebugger cannot run a model whose ranges come from QAT (measured:
    # "Please check if the quantized model is in debug mode"), so QAT models get no layer report.
    if quant is Quant.INT8 and eval_x is not None and (layer_report or keep_float) and not qat_model:
        errors, calibrated = _layer_errors(model, calib_x, _fit(model, eval_x, "verification data"),
                                           progress=progress)
    kept_tensors = tensors_of_layers(errors, keep_float) if isinstance(keep_float, list) and keep_float else []
    if kept_tensors and not errors:
        raise InputError("--keep-float LAYER needs verification data to find the layer's ops")
    tflite, shared = _convert(model, quant, calib_x, io=io, sparse=sparse,
                              calib_samples=calib_samples if calib_x is None else len(calib_x), seed=seed,
                              keep_float=kept_tensors, progress=progress, per_channel=per_channel,
                              share=share_weights, calibrated=calibrated if per_channel else None)
    t1 = time.perf_counter()
    kept = [e for e in errors if e.tensor in kept_tensors]
    common = dict(io=io, sparse=sparse, verify_samples=verify_samples, seed=seed)
    if keep_float == "auto":
        info, measured = verify(model, tflite, quant, eval_x, eval_y, **common)
        if measured["agreement"] is None:
            raise InputError("--keep-float auto needs verification data")
        if measured["agreement"] < min_agreement:
            tflite, info, measured, kept, shared = keep_float_auto(
                model, calib_x, eval_x, eval_y, errors, min_agreement=min_agreement, io=io, sparse=sparse,
                seed=seed, verify_samples=verify_samples, calibrated=calibrated)
    else:
        info, measured = verify(model, tflite, quant, eval_x, eval_y, min_agreement=min_agreement,
                                allow_float=bool(kept), **common)
    t2 = time.perf_counter()
    notes = []
    if measured["agreement"] is None:
        notes.append("no verification data: agreement with the Keras model was not measured")
    kept_layers = list(dict.fromkeys(e.layer for e in kept))
    if shared:
        notes.append(f"stored once: {len(shared)} weight(s) read by several ops, "
                     f"{sum(s['bytes'] for s in shared):,} bytes saved")
    if kept_layers:
        notes.append(f"kept in float: {', '.join(kept_layers)} (the model is not fully integer)")
    if path is not None:
        write_atomic(path, tflite, overwrite=overwrite)
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
        snr_db=measured["snr_db"],
        cosine=measured["cosine"],
        verify_samples=measured["verify_samples"],
        calib_samples=calib_info["samples"] if calib_info else 0,
        seed=seed,
        convert_seconds=round(t1 - t0, 3),
        verify_seconds=round(t2 - t1, 3),
        warnings=notes,
        io=io,
        sparse=sparse,
        per_channel=per_channel,
        calib=calib_info,
        worst_layers=[e.to_dict() for e in errors[:5]],
        kept_float=kept_layers,
        shared_weights=shared,
    )
