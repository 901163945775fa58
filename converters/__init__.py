"""Keras → ``.tflite`` conversion, verification and inspection. Imported as ``edgekit.converters``.

Inspection needs only LiteRT's flatbuffer schema; conversion imports TensorFlow when called.
"""

from edgekit.converters.convert import (
    ExportReport,
    Quant,
    audit,
    check_model,
    convert,
    export,
    load_keras_model,
    verify,
)
from edgekit.converters.quant_debug import LayerError, layer_errors
from edgekit.converters.inspection import ModelInfo, OpInfo, TensorInfo, format_info, inspect_tflite, kernel_zeros

__all__ = [
    "ExportReport",
    "LayerError",
    "ModelInfo",
    "OpInfo",
    "Quant",
    "TensorInfo",
    "audit",
    "check_model",
    "convert",
    "export",
    "format_info",
    "inspect_tflite",
    "kernel_zeros",
    "layer_errors",
    "load_keras_model",
    "verify",
]
