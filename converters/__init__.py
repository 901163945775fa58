"""Keras → ``.tflite`` conversion, verification and inspection. Imported as ``edgekit.converters``.

Inspection needs only LiteRT's flatbuffer schema; conversion imports TensorFlow when called.
"""

from edgekit.converters.convert import (
    ExportReport,
    Quant,
    check_model,
    convert,
    export,
    load_keras_model,
    verify,
)
from edgekit.converters.inspection import ModelInfo, OpInfo, TensorInfo, format_info, inspect_tflite

__all__ = [
    "ExportReport",
    "ModelInfo",
    "OpInfo",
    "Quant",
    "TensorInfo",
    "check_model",
    "convert",
    "export",
    "format_info",
    "inspect_tflite",
    "load_keras_model",
    "verify",
]
