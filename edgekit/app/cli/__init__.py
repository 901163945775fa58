"""The ``edgekit`` command: one module per command in this package.

Exit codes: 0 success; 1 a check failed (verification, a model that did not benchmark);
2 bad input or usage; 70 an internal error; 130 interrupted (SIGINT), 143 SIGTERM, 129 SIGHUP (also
when the signal's exception was lost on its way, see ``_on_signal``: nothing is committed after it).
Errors are one line on stderr, without a traceback (set ``EDGEKIT_DEBUG=1`` to see one for an
internal error). The library's errors name parameters (:class:`edgekit.core.errors.Message`);
each is rendered here with the command's own flags (``--min-agreement``), which its parser
knows (:meth:`Parser.name`).

Only the invoked command's arguments are built, and TensorFlow is imported only by the commands
that need it, so ``edgekit --help``, ``edgekit bench`` and ``edgekit inspect`` start quickly.
TensorFlow's native logging (fd 2) is captured while the TensorFlow commands run and shown only
with an internal error, or always with ``EDGEKIT_DEBUG=1``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import sys
import tempfile
from typing import List, Optional

from edgekit.app.cli._common import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, Parser, err
from edgekit.core.io import Stopped, clear_stop, request_stop, stop_requested

# The commands, in --help order: each is the module of that name in this package.
COMMANDS = ("demo", "export", "optimize", "search", "bench", "mcu", "device", "inspect", "models", "profile")


def command_module(name: str):
    return importlib.import_module(f"edgekit.app.cli.{name}")


def build_parser(command: Optional[str] = None) -> Parser:
    """The parser; the arguments of ``command`` only (the others are listed by name and help).
    ``parser.command_parser`` is that command's parser (None without one)."""
    from edgekit import __version__

    parser = Parser(
        prog="edgekit",
        description="Keras → verified int8 .tflite → measured on the board.",
        epilog="Run 'edgekit COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    parser.command_parser = None
    for name in COMMANDS:
        module = command_module(name)
        if name == command:
            parser.command_parser = module.add_parser(sub)
        else:
            sub.add_parser(name, help=module.HELP, add_help=False)
    return parser


def _command(argv: List[str]) -> Optional[str]:
    return next((a for a in argv if not a.startswith("-")), None)


# SIGINT, SIGTERM or SIGHUP: unwinds like Ctrl-C, so every temporary file and child process is cleaned up.
Terminated = Stopped

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _on_signal(signum, frame):
    """Record the stop (in core: every commit point of :mod:`edgekit.core.io` sees it), then raise
    it. Raised inside a finalizer or a weakref callback, or caught by a library's bare
    ``except``, the exception is lost (measured: SIGHUP during a QAT model's SavedModel save,
    3 times in 52, "Exception ignored in: <function WeakKeyDictionary...remove>" and the save
    went on); the record is not: the next commit raises it again and :func:`main` exits
    128 + signum."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)  # a second signal must not interrupt the clean-up
    raise request_stop(signum)


def _stopped(signum: int) -> int:
    if signum == signal.SIGINT:
        err("interrupted")
    else:
        err(f"stopped by signal {signal.Signals(signum).name}; nothing was left half-written")
    return 128 + signum


def main(argv: Optional[List[str]] = None) -> int:
    from edgekit.core.errors import BoardError, EdgekitError, render
    from edgekit.core.io import captured_native_stderr

    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command(argv)
    with captured_native_stderr() as early:  # a command's parser may import TensorFlow (optimize's registry)
        try:
            parser = build_parser(command if command in COMMANDS else None)
        except BaseException:
            print(early(), file=sys.__stderr__, end="")
            raise
    args = parser.parse_args(argv)
    clear_stop()
    for s in STOP_SIGNALS:  # SIGINT where Python's own handler is (one ignored at start stays so, as Python leaves it)
        if s != signal.SIGINT or signal.getsignal(s) is signal.default_int_handler:
            signal.signal(s, _on_signal)
    # Temporary files of this run (TensorFlow's converter writes SavedModels there) go into one
    # private directory, removed however the run ends.
    private_tmp = tempfile.mkdtemp(prefix="edgekit-")
    tempfile.tempdir = private_tmp
    os.environ["TMPDIR"] = private_tmp
    quiet = getattr(args, "quiet_native", False) and not os.environ.get("EDGEKIT_DEBUG")
    native = captured_native_stderr() if quiet else contextlib.nullcontext(lambda: "")
    captured = lambda: ""  # noqa: E731
    try:
        with native as captured:
            code = args.run(args)
        # a stop whose exception was lost on its way (see _on_signal): the run ended all the same
        return code if stop_requested() is None else _stopped(stop_requested())
    except KeyboardInterrupt as exc:
        return _stopped(stop_requested() or getattr(exc, "signum", signal.SIGINT))
    except BrokenPipeError:  # the reader closed stdout (`edgekit inspect M | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (EdgekitError, BoardError) as exc:
        if stop_requested() is not None:  # the stop's exception replaced by a library's on its way
            return _stopped(stop_requested())
        err(f"error: {' '.join(render(exc, parser.command_parser.name).split())}")
        return getattr(exc, "exit_code", EXIT_USAGE)
    except Exception as exc:
        if stop_requested() is not None:  # e.g. TensorFlow's AssertionError('Concurrent access?')
            return _stopped(stop_requested())
        if os.environ.get("EDGEKIT_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:300]
        log = captured().strip()
        if log:
            print(log, file=sys.stderr)
        err(f"internal error: {type(exc).__name__}: {text} (set EDGEKIT_DEBUG=1 for the traceback)")
        return EXIT_INTERNAL
    finally:
        shutil.rmtree(private_tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
