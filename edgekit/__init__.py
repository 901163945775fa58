"""edgekit: from a Keras training script to a small, fast, verified int8 .tflite file and real
numbers from the board.

``import edgekit`` is cheap: TensorFlow is imported only when a function that needs it runs.

    import edgekit
    from edgekit import keras          # tf_keras (Keras 2), which tfmot needs; loaded on first use

    report = edgekit.export(model, "model.tflite", quant="int8", calibration=x_train,
                            validation_data=(x_test, y_test))
    pruned = edgekit.optimize.prune(model, edgekit.optimize.PruneConfig(sparsity=0.8))
    results = edgekit.bench(["model.tflite"], runs=200)
    fit = edgekit.mcu("model.tflite", board="pico")   # TFLM arena, flash, op coverage

Every error edgekit raises is an :class:`EdgekitError` (device errors included).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "export": "edgekit.converters",
    "convert": "edgekit.converters",
    "verify": "edgekit.converters",
    "inspect_tflite": "edgekit.converters",
    "ExportOptions": "edgekit.converters",
    "load_keras_model": "edgekit.core.saving",
    "save_model": "edgekit.core.saving",
    "ExportReport": "edgekit.converters",
    "Quant": "edgekit.converters",
    "bench": "edgekit.device",
    "mcu": "edgekit.converters",
    "MCUReport": "edgekit.converters",
    "BenchmarkResult": "edgekit.device",
    "load_data": "edgekit.core.data",
    "digits": "edgekit.core.data",
    "python_source": "edgekit.core.data",
    "from_keras3": "edgekit.core.bridge",
    "to_keras3": "edgekit.core.to_keras3",
    "Dataset": "edgekit.core.data",
    "run_demo": "edgekit.app.demo",
    "profile": "edgekit.models",
    "EdgekitError": "edgekit.core.errors",
    "CollapseError": "edgekit.core.errors",
    "InputError": "edgekit.core.errors",
    "VerificationError": "edgekit.core.errors",
    "UnsafeModelError": "edgekit.core.errors",
    "ResourceLimitError": "edgekit.core.errors",
    "HarnessError": "edgekit.core.errors",
    "BoardError": "edgekit.core.errors",
    "keras": "edgekit.core.compat",
}
# The packages a user reaches from here: ``edgekit.optimize.prune(...)``, ``edgekit.models.create(...)``,
# ``edgekit.search.search(...)`` after ``import edgekit``.
_MODULES = {
    "optimize": "edgekit.optimize",
    "models": "edgekit.models",
    "converters": "edgekit.converters",
    "device": "edgekit.device",
    "search": "edgekit.app.search",
    "limits": "edgekit.core.limits",
}

__all__ = sorted(set(_LAZY) | set(_MODULES)) + ["__version__"]


def __getattr__(name):
    if name in _MODULES:
        module = importlib.import_module(_MODULES[name])
        globals()[name] = module
        return module
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgekit' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_MODULES))
