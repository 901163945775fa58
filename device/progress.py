"""A live one-line progress indicator for the host side (the runner, calibration): never imported
by ``harness.py``, which only writes progress lines for its parent to draw."""

from __future__ import annotations

import shutil
import sys
import time


class Progress:
    """A live one-line progress indicator on stderr (``label: phase done/total``), redrawn at
    most 10 times a second and only after ``delay`` seconds, so short jobs print nothing. Silent
    when stderr is not a terminal or ``enabled`` is False."""

    def __init__(self, label: str, *, enabled=None, delay: float = 2.0, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = (hasattr(self.stream, "isatty") and self.stream.isatty()) if enabled is None else enabled
        self.label, self.delay = label, delay
        self.start = time.perf_counter()
        self._last = 0.0
        self._shown = False

    def update(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.start < self.delay or (now - self._last < 0.1 and done < total):
            return
        self._last = now
        self._draw(f"{self.label}: {phase} {done}/{total}")

    def show(self, text: str) -> None:
        """Draw ``text`` as the line (same delay and rate limit as :meth:`update`)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.start < self.delay or now - self._last < 0.1:
            return
        self._last = now
        self._draw(text)

    def _draw(self, text: str) -> None:
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self._shown = True
        self.stream.write("\r\x1b[K" + text[:width])
        self.stream.flush()

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
