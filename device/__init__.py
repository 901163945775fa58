"""The device: measuring ``.tflite`` files the way a board runs them. Imported as ``edgekit.device``.

- ``board/`` runs on the board: the harness (``harness.py``: numpy + LiteRT, no TensorFlow, runs
  as a script on its own), the TFLM child (``micro.py``) and the remote runner (``remote.py``,
  standard library only). It imports nothing else of edgekit.
- ``host/`` runs here: :func:`bench` starts the harness in a fresh child process per model, here,
  on boards over SSH (``ssh.py``) or on ARM64 under QEMU (``qemu.py``).

Names are loaded on first use, so importing a board-side module never starts the host side.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "BoardError": "edgekit.device.board.errors",
    "HARNESS_PATH": "edgekit.device.board.harness",
    "load_interpreter": "edgekit.device.board.harness",
    "measure": "edgekit.device.board.harness",
    "predict": "edgekit.device.board.harness",
    "runtime_info": "edgekit.device.board.harness",
    "summarize_latency": "edgekit.device.board.harness",
    "BenchmarkResult": "edgekit.device.host.children",
    "bench": "edgekit.device.host.runner",
    "ratios": "edgekit.device.host.runner",
    "Host": "edgekit.device.host.ssh",
    "setup": "edgekit.device.host.ssh",
    "HarnessError": "edgekit.core.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgekit.device' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
