"""Independent jobs in worker processes, their log and live progress shown by this process.

The demo's variants are independent once the model is trained, and TensorFlow keeps about one
and a half of two cores busy while it trains a small model and one while it traces or converts
(measured: training 1.4 cores; two processes of one thread each train as fast each as one
process of two threads). So the jobs run in fresh interpreters (``spawn``: TensorFlow's threads
do not survive ``fork``), each with its share of the cores for TensorFlow's thread pools. A job
is a module-level function called with the job's arguments and ``log``: its log lines and the
live line it draws (:mod:`edgekit.core.progress`) come back here, where the log lines are
printed and each worker's live line is drawn on the terminal, one line per worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queue_module
import signal
import sys
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Callable, List, Optional, Sequence, Tuple

_send = None  # in a worker: put a message for the parent
_slot = 0
_relay = None  # in a worker: where its live line goes


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _init(messages, counter, threads: int, terminal: bool, logging: bool) -> None:
    """A worker's start: its slot (0, 1, ...), its progress relayed, TensorFlow's thread pools
    sized. An interrupt stops the parent, which stops the workers."""
    global _send, _slot, _relay
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with counter.get_lock():
        _slot = counter.value
        counter.value += 1
    _send = messages.put if logging else None
    from edgekit.core import progress

    if logging:
        _relay = progress.Relay(lambda slot, text: messages.put(("live", slot, text)), _slot, terminal)
        progress.relay_to(_relay)
    from edgekit.core.compat import tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _log(text: str) -> None:
    _send(("log", _slot, text))


def doing(what: str) -> None:
    """In a job: name what this worker's live line is about from now on (``what: <the line>``)."""
    if _relay is not None:
        _relay.task = what
        _relay.write("\r")


def _call(fn, args, kwargs):
    try:
        return fn(*args, log=_log if _send else None, **kwargs)
    finally:
        if _send:
            _send(("done", _slot, ""))


def _ready():
    return _slot


@contextlib.contextmanager
def _main_not_rerun():
    """A spawned interpreter runs the parent's ``__main__`` script again unless its top level is
    guarded by ``if __name__ == "__main__"``; the jobs live in edgekit's modules and need none of
    it, so the workers start without it."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__.pop(k) for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__spec__ = None  # what an interactive session has
    try:
        yield
    finally:
        main.__dict__.update(saved)


class Workers:
    """``count`` worker processes (default: one per core, at most ``jobs``), each with
    ``cores() // count`` threads for TensorFlow. ``log`` prints the jobs' lines (None: silent,
    and no live lines either). Use as a context manager: leaving it early (an error, Ctrl-C)
    stops the workers at once."""

    def __init__(self, count: Optional[int] = None, *, jobs: int = 1, log: Optional[Callable[[str], None]] = None):
        from edgekit.core import progress

        self.count = max(1, min(jobs, count or cores()))
        self.log = log
        ctx = multiprocessing.get_context("spawn")
        self.messages = ctx.Queue()
        self.terminal = progress.is_terminal(progress.live_stream()) and log is not None
        with _main_not_rerun():
            self.pool = ProcessPoolExecutor(
                self.count,
                mp_context=ctx,
                initializer=_init,
                initargs=(
                    self.messages,
                    ctx.Value("i", 0),
                    max(1, cores() // self.count),
                    self.terminal,
                    log is not None,
                ),
            )
            # start every worker now: they import TensorFlow while the caller does other work
            for _ in range(self.count):
                self.pool.submit(_ready)
        # every worker this pool started, kept here: stopping reads this list as well as the pool's
        # own, from which its manager thread may already have dropped a worker (seen once: a
        # sleeping worker left running after a failed job stopped the pool)
        self.started = self.processes()

    def run(self, jobs: Sequence[Tuple[Callable, tuple]]) -> List:
        """Run each ``(fn, args)`` (``fn(*args, log=...)``) in the workers, in this order as workers
        free up; returns their results in the same order. A job's exception is raised here once
        the others are stopped."""

        futures = [self.pool.submit(_call, fn, tuple(args), {}) for fn, args in jobs]
        if self.log is None:  # nothing comes back but the results
            wait(futures, return_when=FIRST_EXCEPTION)
        else:
            self._show(futures)
        for f in futures:  # a failed job, before waiting for the others
            if f.done() and f.exception() is not None:
                raise f.exception()
        return [f.result() for f in futures]

    def _show(self, futures) -> None:
        """Print the jobs' lines and draw their live lines until every job is done (or one failed)."""
        from edgekit.core.progress import Lines

        lines = Lines(self.count) if self.terminal else None
        done = 0
        try:
            while done < len(futures) and not any(f.done() and f.exception() is not None for f in futures):
                try:
                    kind, slot, text = self.messages.get(timeout=0.5)
                except queue_module.Empty:
                    continue
                if kind == "done":
                    done += 1
                elif kind == "live" and lines is not None:
                    lines.show(slot, text)
                elif kind == "log" and lines is not None:
                    lines.above(self.log, text)
                elif kind == "log":
                    self.log(text)
        finally:
            if lines is not None:
                lines.close()

    def __enter__(self) -> "Workers":
        return self

    def processes(self) -> list:
        """The worker processes. ProcessPoolExecutor has no public way to reach (or stop) them
        before Python 3.14's ``terminate_workers``: its ``_processes`` is read here, only here."""
        return list(getattr(self.pool, "_processes", {}).values())

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.pool.shutdown(wait=True)
            return
        processes = list({p.pid: p for p in self.started + self.processes()}.values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.terminate()
        for p in processes:
            p.join(5)
            if p.is_alive():  # still starting up under load after 5 s: no second chance
                p.kill()
                p.join()
