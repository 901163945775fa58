"""On-board benchmark harness: numpy + LiteRT only, no TensorFlow. Imported as ``edgekit.device``.

``harness.py`` runs on a board on its own; :func:`bench` runs it in a fresh child process per model.
"""

from edgekit.device.harness import (
    HarnessError,
    load_interpreter,
    measure,
    predict,
    runtime_info,
    summarize_latency,
)
from edgekit.device.runner import HARNESS_PATH, BenchmarkResult, bench

__all__ = [
    "BenchmarkResult",
    "HARNESS_PATH",
    "HarnessError",
    "bench",
    "load_interpreter",
    "measure",
    "predict",
    "runtime_info",
    "summarize_latency",
]
