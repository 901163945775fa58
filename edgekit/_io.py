"""Atomic file output: a failed step never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


def write_atomic(path: str, data) -> None:
    """Write ``data`` (bytes or str) to a temporary file beside ``path``, then rename it."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    mode = "wb" if isinstance(data, (bytes, bytearray, memoryview)) else "w"
    try:
        with open(tmp, mode) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def captured_native_stderr():
    """Redirect file descriptor 2 to a temporary file for the duration of the block.

    TensorFlow's and the TFLite converter's C++ code log to fd 2 regardless of
    TF_CPP_MIN_LOG_LEVEL (oneDNN notices, CUDA probing, calibration chatter). The CLI runs its
    TensorFlow work inside this block and shows the captured text only when something fails
    unexpectedly. Yields a function returning the captured text."""
    sys.stderr.flush()
    saved = os.dup(2)
    tmp = tempfile.TemporaryFile()
    os.dup2(tmp.fileno(), 2)

    kept = []  # the text, once the block has ended

    def text() -> str:
        if kept:
            return kept[0]
        sys.stderr.flush()
        tmp.seek(0)
        return tmp.read().decode("utf-8", "replace")

    try:
        yield text
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        kept.append(text())
        tmp.close()
