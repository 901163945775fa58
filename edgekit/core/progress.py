"""Live progress for the host side (the runner, calibration, training), drawn by tqdm (which
LiteRT's wheel already depends on): one updating line on stderr when it is a terminal; otherwise
plain lines through the caller's ``plain`` function (a command's log, silent with ``--json -``),
or nothing. Never imported by ``harness.py``, which only writes progress lines for its parent to
draw."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time

_streams: list = []  # where live progress goes while file descriptor 2 is captured (innermost last)


def live_stream():
    """The stream live progress is drawn on: the user's stderr, even while the command line
    captures file descriptor 2 (TensorFlow's native logging) — see :func:`pushed`."""
    return _streams[-1] if _streams else sys.stderr


@contextlib.contextmanager
def pushed(fd: int):
    """Draw progress on a duplicate of ``fd`` (the real stderr) for the duration of the block."""
    live = os.fdopen(os.dup(fd), "w", buffering=1)
    _streams.append(live)
    try:
        yield live
    finally:
        _streams.remove(live)
        live.close()


def columns() -> int:
    """The terminal's width for a tqdm line (tqdm's own query reads 0 columns on some terminals)."""
    return max(40, shutil.get_terminal_size((100, 20)).columns) - 1


def is_terminal(s) -> bool:
    return bool(getattr(s, "isatty", None) and s.isatty())


class Progress:
    """``label: phase done/total`` (or any text with :meth:`show`) as one tqdm line, shown only
    after ``delay`` seconds so short jobs print nothing. Not on a terminal: with ``plain`` (a
    function of a line), one line when a phase completes and at most one every ``plain_every``
    seconds before; without, nothing. ``enabled=True`` draws the line on any stream, ``False``
    nothing."""

    def __init__(
        self, label: str, *, enabled=None, delay: float = 2.0, stream=None, plain=None, plain_every: float = 30.0
    ):
        self.stream = stream or live_stream()
        self.enabled = True if enabled is None else bool(enabled)
        self.terminal = is_terminal(self.stream) or enabled is True  # True: draw the line on any stream
        self.plain = plain
        self.label, self.delay, self.plain_every = label, delay, plain_every
        self.start = time.perf_counter()
        self._bar = None
        self._plain_at = self.start

    def _tqdm(self):
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(file=self.stream, leave=False, ncols=columns(), mininterval=0.1, bar_format="{desc}")
        return self._bar

    def update(self, phase: str, done: int, total: int) -> None:
        self.show(f"{self.label}: {phase} {done}/{total}", finished=done >= total)

    def show(self, text: str, finished: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.start < self.delay:
            return
        if self.terminal:
            self._tqdm().set_description_str(text)
        elif self.plain is not None and (finished or now - self._plain_at >= self.plain_every):
            self._plain_at = now
            self.plain(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Relay:
    """A stream for live progress drawn by another process: each line tqdm draws (the text after
    its last carriage return) goes to ``send`` as ``(slot, text)``; ``terminal`` is whether that
    process draws on a terminal (the line) or not (``plain`` lines instead)."""

    encoding = "utf-8"

    def __init__(self, send, slot: int, terminal: bool):
        self.send, self.slot, self.terminal = send, slot, terminal
        self.task = ""  # what the line is about (the job's current task): "task: <line>"

    def isatty(self) -> bool:
        return self.terminal

    def write(self, s: str) -> int:
        if "\r" in s or "\n" in s:
            line = s.replace("\n", "\r").rstrip("\r").rsplit("\r", 1)[-1].rstrip()
            if self.task:  # between lines (a conversion, say) the task itself stays on show
                line = f"{self.task}: {line}" if line else f"{self.task} ..."
            self.send(self.slot, line)
        return len(s)

    def flush(self) -> None:
        pass


def relay_to(stream) -> None:
    """Draw this process's live progress on ``stream`` (a :class:`Relay`) from now on."""
    _streams.append(stream)


class Lines:
    """One live line per slot on ``stream`` (a terminal), with log lines printed above them."""

    def __init__(self, count: int, stream=None):
        from tqdm import tqdm

        self.stream = stream or live_stream()
        self.bars = [
            tqdm(file=self.stream, position=i, leave=False, ncols=columns(), bar_format="{desc}") for i in range(count)
        ]

    def show(self, slot: int, text: str) -> None:
        self.bars[slot].set_description_str(text)

    def above(self, write, text: str) -> None:
        """``write(text)`` (a log line on stdout) with the live lines cleared and redrawn below it."""
        for bar in self.bars:
            bar.clear()
        self.stream.flush()
        write(text)
        sys.stdout.flush()
        for bar in self.bars:
            bar.refresh()

    def close(self) -> None:
        for bar in reversed(self.bars):
            bar.close()
