"""Synthetic sensor data for sequence models: 3-axis accelerometer windows of four activities.

Nothing is downloaded: the windows are generated from a seed, so tests and benchmarks train
recurrent and 1-D convolutional models on data with the structure a watch's sensor stream has
(gravity on one axis, periodic motion at an activity's cadence, noise), in seconds.
"""

from __future__ import annotations

import numpy as np

from edgekit.core.data import Dataset

ACTIVITIES = ("still", "walk", "run", "jump")
RATE_HZ = 25.0  # samples per second of the windows


def _windows(n: int, steps: int, rng) -> tuple:
    """``n`` windows of ``steps`` × 3 (x, y, z in g) and their activity ids."""
    y = rng.integers(0, len(ACTIVITIES), n)
    t = np.arange(steps, dtype=np.float64) / RATE_HZ
    x = np.empty((n, steps, 3), np.float32)
    for i, activity in enumerate(y):
        tilt = rng.normal(0, 0.15, 3)
        base = np.array([0.0, 0.0, 1.0]) + tilt  # gravity, on a wrist that is never quite level
        phase = rng.uniform(0, 2 * np.pi)
        if activity == 0:  # still: gravity and sensor noise
            cadence, amplitude, sharpness = 0.0, 0.0, 1.0
        elif activity == 1:  # walk: ~1.8 steps/s, gentle
            cadence, amplitude, sharpness = rng.uniform(1.5, 2.1), rng.uniform(0.2, 0.4), 1.0
        elif activity == 2:  # run: ~2.8 steps/s, strong
            cadence, amplitude, sharpness = rng.uniform(2.5, 3.2), rng.uniform(0.7, 1.1), 1.0
        else:  # jump: ~1 jump/s, short spikes
            cadence, amplitude, sharpness = rng.uniform(0.8, 1.3), rng.uniform(1.2, 1.8), 6.0
        wave = np.sin(2 * np.pi * cadence * t + phase)
        if sharpness > 1:
            wave = np.sign(wave) * np.abs(wave) ** sharpness
        direction = np.array([0.3, 0.4, 1.0]) + rng.normal(0, 0.2, 3)
        sway = 0.3 * amplitude * np.sin(np.pi * cadence * t + rng.uniform(0, 2 * np.pi))
        signal = base[None, :] + amplitude * wave[:, None] * direction[None, :]
        signal[:, 0] += sway
        x[i] = signal + rng.normal(0, 0.08, (steps, 3))
    return x, y.astype(np.int64)


def motion(train: int = 800, test: int = 200, steps: int = 64, seed: int = 0) -> Dataset:
    """Windows of ``steps`` 3-axis accelerometer samples (25 Hz), labelled with one of
    :data:`ACTIVITIES`; ``train`` and ``test`` windows, generated from ``seed``."""
    rng = np.random.default_rng(seed)
    x_train, y_train = _windows(train, steps, rng)
    x_test, y_test = _windows(test, steps, rng)
    return Dataset("motion", x_train, y_train, x_test, y_test)
