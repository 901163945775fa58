"""Measurements that need both sides of the kit: a model converted by the converters and timed by
the device harness. The optimize layer asks for them as plain functions (``measure=``), so it never
depends on either."""

from __future__ import annotations

import os
import tempfile
from typing import Callable

from edgekit.converters import convert
from edgekit.core.samples import rows
from edgekit.device.board.errors import BoardError
from edgekit.device.board.harness import measure


def int8_latency(calib, runs: int = 50, samples: int = 64) -> Callable[[object], float]:
    """A ``measure`` for latency budgets (``ChannelPruneConfig(target_latency=...)``): the model
    converted to int8 (calibrated on up to ``samples`` of ``calib``) and timed with the device
    harness on this machine — p50 in ms over ``runs`` invokes, XNNPACK, 1 thread. A model that does
    not prepare under XNNPACK (measured: 1-channel layers can fail) measures ``inf``."""

    def p50_ms(model) -> float:
        tflite = convert(model, "int8", calib, calib_samples=min(samples, rows(calib)), share=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "candidate.tflite")
            with open(path, "wb") as f:
                f.write(tflite)
            try:
                return float(measure(path, runs=runs, warmup=10)["latency_ms"]["p50"])
            except BoardError:
                return float("inf")

    return p50_ms
