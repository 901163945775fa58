"""Per-layer int8 quantization error, and int8 models with their most sensitive layers kept float.

:func:`layer_errors` runs TF's ``QuantizationDebugger``: every int8 op is run on the float
result of the previous op and compared with the float op, on held-out samples. The error of a
layer is its RMSE divided by the output's quantization step (``scale``): about 0.29 (1/sqrt(12))
is pure rounding noise; well above 1 means the layer loses information in int8. The worst layers
are named in the export report; :func:`keep_float_auto` leaves the worst ones in float, more at
each step, until agreement with the Keras model reaches the threshold.
"""

from __future__ import annotations

import csv
import io as _io
import math
import warnings
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence

import numpy as np

from edgekit.converters.convert import Quant, _convert, _converter, layer_of_tensor, quantize
from edgekit.converters.inspection import inspect_tflite
from edgekit.converters.verify import DEFAULT_VERIFY_SAMPLES, dead_output, verify
from edgekit.core.errors import InputError, VerificationError
from edgekit.core.samples import rows, take

DEFAULT_DEBUG_SAMPLES = 32


@dataclass(frozen=True)
class LayerError:
    op: str
    layer: str  # the Keras layer the op came from
    tensor: str  # the op's output tensor in the .tflite (what keep_float names)
    rmse_over_scale: float
    mean_squared_error: float
    max_abs_error: float
    scale: float

    def to_dict(self) -> dict:
        return asdict(self)


def layer_errors(
    model, calib: np.ndarray, debug_x: np.ndarray, *, samples: int = DEFAULT_DEBUG_SAMPLES
) -> List[LayerError]:
    """Per-op int8 error of ``model`` calibrated on ``calib``, measured on up to ``samples`` of
    ``debug_x``; worst first."""
    return _layer_errors(model, calib, debug_x, samples)[0]


def _layer_errors(
    model, calib: np.ndarray, debug_x: np.ndarray, samples: int = DEFAULT_DEBUG_SAMPLES, progress: Optional[str] = None
) -> tuple:
    """:func:`layer_errors` and the calibrated model the debugger made (the export quantizes it
    rather than calibrating a second time)."""
    from edgekit.core.compat import tf

    xs = take(debug_x, slice(0, max(1, samples)))

    order = list(xs) if isinstance(xs, dict) else []  # the debugger sets a list, in the file's input order

    def debug_data():
        for i in range(rows(xs)):
            yield [xs[n][i : i + 1] for n in order] if isinstance(xs, dict) else [xs[i : i + 1]]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converter = _converter(model, Quant.INT8, calib, "int8", False, progress)
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_data)
        if order:  # a SavedModel's file orders its inputs its own way: by signature name
            from edgekit.device.board.harness import io_names, load_interpreter

            names = io_names(load_interpreter(model_content=debugger.calibrated_model, xnnpack=False, allocate=False))[
                0
            ]
            order[:] = names if sorted(names) == sorted(order) else order
        try:
            debugger.run()
        except RuntimeError as exc:  # the debugger's int8 model does not prepare under XNNPACK
            int8 = inspect_tflite(quantize(debugger.calibrated_model, "int8", (), False, True))
            why = dead_output(int8, model) or " ".join(str(exc).split())
            raise VerificationError(f"the int8 model does not run: {why}") from None
    buf = _io.StringIO()
    debugger.layer_statistics_dump(buf)
    buf.seek(0)
    found = []
    for r in csv.DictReader(buf):
        scale, mse = float(r["scale"]), float(r["mean_squared_error"])
        found.append(
            LayerError(
                op=r["op_name"],
                layer=layer_of_tensor(r["tensor_name"], model),
                tensor=r["tensor_name"],
                rmse_over_scale=math.sqrt(mse) / scale if scale > 0 else float("inf"),
                mean_squared_error=mse,
                max_abs_error=float(r["max_abs_error"]),
                scale=scale,
            )
        )
    return sorted(found, key=lambda e: -e.rmse_over_scale), debugger.calibrated_model


def tensors_of_layers(errors: Sequence[LayerError], layers: Sequence[str]) -> List[str]:
    """The output tensors of the int8 ops that came from Keras ``layers``."""
    known = {e.layer for e in errors}
    unknown = [l for l in layers if l not in known]
    if unknown:
        raise InputError(
            "{keep_float} names {unknown}, which is not a quantized layer of this model; quantized layers: {known}",
            params="keep_float",
            unknown=", ".join(unknown),
            known=", ".join(sorted(known)),
        )
    return [e.tensor for e in errors if e.layer in layers]


def keep_float_auto(
    model,
    calib: np.ndarray,
    eval_x,
    eval_y,
    errors: Sequence[LayerError],
    *,
    min_agreement: float,
    io: str = "int8",
    sparse: bool = False,
    seed: int = 0,
    verify_samples: Optional[int] = None,
    calibrated: Optional[bytes] = None,
    task="classification",
):
    """Re-convert with the worst 1, 2, 4, ... layers of ``errors`` kept float until top-1
    agreement with ``model`` on ``eval_x`` reaches ``min_agreement`` (``task``: as :func:`verify`
    takes it, per output for several). Returns (tflite bytes,
    Verification, kept LayerErrors, shared weights). ``calibrated``: ``model`` already
    calibrated on ``calib``, quantized at each step instead of calibrating again."""
    layers: List[str] = []
    for e in errors:
        if e.layer not in layers:
            layers.append(e.layer)
    k = 1
    while True:
        kept_layers = layers[:k]
        kept = [e for e in errors if e.layer in kept_layers]
        tflite, shared = _convert(
            model,
            Quant.INT8,
            calib,
            io=io,
            sparse=sparse,
            keep_float=[e.tensor for e in kept],
            progress=None,
            per_channel=True,
            share=True,
            calibrated=calibrated,
        )
        checked = verify(
            model,
            tflite,
            "int8",
            eval_x,
            eval_y,
            io=io,
            sparse=sparse,
            allow_float=True,
            seed=seed,
            verify_samples=verify_samples or DEFAULT_VERIFY_SAMPLES,
            task=task,
        )
        if checked.agreement is not None and checked.agreement >= min_agreement:
            return tflite, checked, kept, shared
        if k >= len(layers):
            raise VerificationError(
                "int8 agreement stays at {agreement:.1%} with all {count} quantized layers kept in float, below "
                "{min_agreement} {required:.1%}: export as float32",
                params="min_agreement",
                agreement=checked.agreement,
                count=len(layers),
                required=min_agreement,
            )
        k = min(2 * k, len(layers))
