"""Keras → ``.tflite`` bytes (TFLite builtin ops only) in every mode of :class:`Quant`.

:func:`convert` returns the flatbuffer bytes; :func:`edgekit.converters.export` converts,
verifies (:mod:`edgekit.converters.verify`) and only then writes the file. int8 calibrates the
float model once (:func:`calibrate`, TF's QuantizationDebugger path) and quantizes it with the
MLIR quantizer (:func:`quantize`), so the per-layer error report and ``keep_float`` reuse one
calibration.
"""

from __future__ import annotations

import enum
import warnings
from typing import Optional, Sequence

import numpy as np

from edgekit.converters.recurrent import for_conversion
from edgekit.converters.share import share_weights as _share_weights
from edgekit.core.errors import InputError, renamed
from edgekit.core.samples import calibration_samples, fit_inputs, input_specs, rows
from edgekit.core.savedmodel import is_savedmodel_graph
from edgekit.core.saving import as_tf_keras

DEFAULT_CALIB_SAMPLES = 256


def _keras():
    from edgekit.core.compat import keras, tf

    return tf, keras


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
        return {Quant.INT8: ("int8", "uint8", "float32"), Quant.INT16X8: ("int16", "float32")}.get(self, ("float32",))

    def check_io(self, io: Optional[str]) -> str:
        io = self.io_types[0] if io is None else str(io)
        if io not in self.io_types:
            raise InputError(
                "{io=*} does not apply to {mode} models; use one of: {choices}",
                params="io",
                io=io,
                mode=self.value,
                choices=", ".join(self.io_types),
            )
        return io


def fit(model, x, what: str):
    """Samples ``x`` checked against ``model``'s inputs (:func:`edgekit.core.samples.fit_inputs`)."""
    return fit_inputs(x, input_specs(model), what)


def _representative(data, progress_label: Optional[str]):
    """The converter's representative dataset: one sample at a time, a dict by input name (the
    signature's names) for a model with several inputs."""
    from edgekit.core.progress import Progress

    def gen():
        n = rows(data)
        bar = Progress(progress_label or "calibrating", enabled=None if progress_label else False)
        try:
            for i in range(n):
                bar.update("calibration samples", i + 1, n)
                yield {k: v[i : i + 1] for k, v in data.items()} if isinstance(data, dict) else [data[i : i + 1]]
        finally:
            bar.close()

    return gen


def _converter(
    model,
    quant: Quant,
    calib: Optional[np.ndarray],
    io: str,
    sparse: bool,
    progress_label: Optional[str] = None,
    per_channel: bool = True,
):
    """A TFLiteConverter set up for ``quant`` (builtin ops only); recurrent layers in the form the
    builtins hold (:func:`edgekit.converters.recurrent.for_conversion`)."""
    tf, _ = _keras()
    if is_savedmodel_graph(model):
        converter = model.converter()
    else:
        rewritten = for_conversion(model, fuse_lstm=quant is not Quant.INT16X8)
        converter = tf.lite.TFLiteConverter.from_keras_model(rewritten)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quant is not Quant.FLOAT32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quant is Quant.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if quant.integer:
        converter.representative_dataset = _representative(calib, progress_label)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
            if quant is Quant.INT8
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
    calibration=None,
    *,
    io: Optional[str] = None,
    sparse: bool = False,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    seed: int = 0,
    keep_float: Sequence[str] = (),
    progress: Optional[str] = None,
    per_channel: bool = True,
    share: bool = True,
    **legacy,
) -> bytes:
    """Convert a tf_keras model to ``.tflite`` bytes (TFLite builtin ops only).

    ``int8`` and ``int16x8`` need ``calibration`` (older name ``calib``): any source
    :func:`edgekit.core.samples.calibration_samples` takes (an array, 'digits', a .npz path, an image
    directory, a tf.data dataset, a generator),
    of which ``calib_samples`` (drawn with ``seed``) calibrate the activation ranges. ``io`` sets
    the input/output dtype of integer models, ``sparse`` encodes zero weights sparsely,
    ``keep_float`` names output tensors (see :func:`layer_errors`) of int8 ops to leave in float.
    ``progress`` labels a progress line on a terminal during calibration. ``per_channel=False``
    quantizes each weight tensor with one scale (for clustered models: k values stay k values).
    ``share`` stores a weight that several ops read (a tied embedding) once
    (:func:`edgekit.converters.share.share_weights`)."""
    calib = renamed(legacy, "calib", "calibration", calibration)
    if legacy:
        raise TypeError(f"convert() got an unexpected keyword argument '{next(iter(legacy))}'")
    quant = Quant.parse(quant)
    model = model if is_savedmodel_graph(model) else as_tf_keras(model)
    io = quant.check_io(io)
    check_options(quant, keep_float=keep_float, per_channel=per_channel)
    data = calibration_data(model, quant, calib, calib_samples, seed)[0]
    return _convert(
        model,
        quant,
        data,
        io=io,
        sparse=sparse,
        keep_float=keep_float,
        progress=progress,
        per_channel=per_channel,
        share=share,
    )[0]


def check_options(quant: Quant, *, keep_float=(), per_channel: bool = True) -> None:
    """The conversion options that exclude each other (:class:`ExportOptions` checks them here too)."""
    if keep_float and quant is not Quant.INT8:
        raise InputError(
            "{keep_float} applies to {quant='int8'}, not {mode}", params=("keep_float", "quant"), mode=quant.value
        )
    if not per_channel and quant not in (Quant.INT8, Quant.INT16X8, Quant.DYNAMIC):
        raise InputError(
            "{per_channel=False} applies to int8, int16x8 and dynamic models, not {mode}",
            params="per_channel",
            mode=quant.value,
        )


def calibration_data(model, quant: Quant, calib, samples: int, seed: int):
    """(calibration samples, what they are) for an integer mode (None, None otherwise): ``samples`` of
    ``calib`` (any source :func:`edgekit.core.samples.calibration_samples` takes) drawn with ``seed``."""
    if not quant.integer:
        return None, None
    if calib is None:
        raise InputError(
            "{quant=*} needs {calib}, calibration data ('digits', a .npz, an image directory or an array)",
            params=("quant", "calib"),
            quant=quant.value,
        )
    return calibration_samples(calib, input_specs(model), samples, seed)


def _convert(
    model,
    quant: Quant,
    data,
    *,
    io,
    sparse,
    keep_float,
    progress,
    per_channel,
    share,
    calibrated: Optional[bytes] = None,
) -> tuple:
    """:func:`convert` of checked options and calibration samples ``data``, also returning what
    weight sharing merged. ``calibrated``: the model already calibrated on ``data``
    (:func:`calibrate`, as the layer report keeps it), so int8 quantizes it instead of calibrating
    again."""
    what = f"model '{model.name}'"
    if quant is Quant.INT8 and (keep_float or calibrated is not None):

        def run():
            cal = (
                calibrated
                if calibrated is not None
                else calibrate(_converter(model, quant, data, io, sparse, progress, per_channel))
            )
            return quantize(cal, io, keep_float, sparse, per_channel)

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


def quantize(calibrated: bytes, io: str, keep_float: Sequence[str], sparse: bool, per_channel: bool) -> bytes:
    """Quantize a calibrated model to int8 with the ops producing ``keep_float`` tensors left in
    float (the MLIR quantizer's node denylist). The same ops, tensors and outputs as the
    converter's own int8 path (tested); only the conversion metadata differ."""
    tf, _ = _keras()
    from tensorflow.lite.python import convert as tflite_convert

    model = tflite_convert.mlir_quantize(
        calibrated,
        disable_per_channel=not per_channel,
        input_data_type=getattr(tf, io),
        output_data_type=getattr(tf, io),
        denylisted_nodes=list(keep_float),
    )
    return tflite_convert.mlir_sparsify(model) if sparse else model


def _layer_in(part: str, layers: dict):
    """The Keras layer a ``model/layer/op``-style name segment names: the longest run of path
    segments after the model's that is a layer name (keras.applications names hold '/' themselves:
    ``expanded_conv/squeeze_excite/Conv``), or without a model the second segment."""
    segs = [s for s in part.split("/") if s]
    if not layers:
        return segs[1] if len(segs) > 1 else None
    for start in (1, 0):
        for end in range(len(segs), start, -1):
            candidate = "/".join(segs[start:end])
            if candidate in layers:
                return candidate
    return None


def layer_of_tensor(name: str, model=None) -> str:
    """The Keras layer a .tflite tensor came from, read from its name (the converter names a fused
    op's output after every layer fused into it; the one with a kernel is chosen)."""
    layers = {l.name: l for l in model.layers} if model is not None else {}
    found = []
    for part in name.split(";"):
        layer = _layer_in(part, layers)
        if layer is not None and layer not in found:
            found.append(layer)
    kernels = [n for n in found if layers and any(hasattr(layers[n], a) for a in ("kernel", "depthwise_kernel"))]
    if not found and model is not None and model.layers and name.startswith("StatefulPartitionedCall"):
        found = [model.layers[-1].name]  # the graph output (e.g. a softmax) keeps the call's name
    return (kernels or found or [name])[0]


def op_layer(info, op, model=None) -> str:
    """The Keras layer ``op`` came from, by its output tensor's name."""
    name = info.tensors[op.outputs[0]].name if op.outputs else ""
    return layer_of_tensor(name, model) if name else f"op #{op.index}"
