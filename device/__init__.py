"""On-board benchmark harness: numpy + LiteRT only, no TensorFlow. Imported as ``edgekit.device``.

``harness.py`` runs on a board on its own; :func:`bench` runs it in a fresh child process per model,
here, on boards over SSH (``remote.py`` is the board side) or on ARM64 under QEMU (``qemu.py``).
"""

from edgekit.device.harness import (
    HarnessError,
    load_interpreter,
    measure,
    predict,
    runtime_info,
    summarize_latency,
)
from edgekit.device.children import HARNESS_PATH, BenchmarkResult
from edgekit.device.runner import bench, ratios
from edgekit.device.ssh import Host, setup

__all__ = [
    "BenchmarkResult",
    "Host",
    "HARNESS_PATH",
    "HarnessError",
    "bench",
    "load_interpreter",
    "measure",
    "predict",
    "ratios",
    "runtime_info",
    "setup",
    "summarize_latency",
]
