"""Keras → ``.tflite`` conversion, verification and inspection. Imported as ``edgekit.converters``.

Inspection needs only LiteRT's flatbuffer schema; conversion imports TensorFlow when called.
"""

from edgekit.converters.convert import Quant, convert
from edgekit.converters.export import ExportOptions, ExportReport, export
from edgekit.converters.inspection import ModelInfo, OpInfo, TensorInfo, inspect_tflite, kernel_zeros
from edgekit.converters.mcu import MCUReport, mcu
from edgekit.converters.quant_debug import LayerError, layer_errors
from edgekit.converters.verify import Verification, audit, verify
from edgekit.core.saving import check_model, load_keras_model

__all__ = [
    "ExportOptions",
    "ExportReport",
    "LayerError",
    "MCUReport",
    "ModelInfo",
    "OpInfo",
    "Quant",
    "TensorInfo",
    "Verification",
    "audit",
    "check_model",
    "convert",
    "export",
    "inspect_tflite",
    "kernel_zeros",
    "layer_errors",
    "load_keras_model",
    "mcu",
    "verify",
]
