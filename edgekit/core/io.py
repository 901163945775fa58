"""File output with one policy for everything edgekit writes (models, ``.tflite``, reports, JSON,
demo folders):

- an existing output is replaced only with ``overwrite`` (``--overwrite``);
- an output that is also an input of the same call is refused;
- a directory is replaced only when it holds nothing but what edgekit writes there (a SavedModel,
  a demo run): never ``.``, a home directory or a folder of the user's;
- everything is written under a temporary name beside the output and renamed into place at the
  end, so a failed or interrupted step leaves nothing half-written; without ``overwrite`` the final
  rename never replaces a file that appeared meanwhile (another run writing the same name fails
  with "exists" instead of one result silently replacing the other);
- once a stop was requested (:func:`request_stop`: the CLI's handler of SIGINT, SIGTERM and
  SIGHUP) no final rename happens, even when the handler's exception was swallowed on its way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
from typing import Iterable, List, Optional

from edgekit.core.errors import InputError


class Stopped(KeyboardInterrupt):
    """The run was asked to stop by signal ``signum``: unwinds like Ctrl-C, so every temporary
    file and child process is cleaned up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_stop: List[int] = []  # the signal that asked this process to stop, once one did


def request_stop(signum: int) -> Stopped:
    """Record that this process must stop (the first signal wins) and return the exception for
    the signal handler to raise. The record outlives the exception, which may never arrive:
    Python runs a handler between any two bytecodes of the main thread, also inside a ``__del__``
    or a weakref callback (TensorFlow runs many while it saves a model), where an exception is
    printed as "Exception ignored in ..." and dropped, and the save goes on; library code with a
    bare ``except`` drops or replaces it too. Every commit point (:func:`check_stop`) raises it
    again instead of committing."""
    if not _stop:
        _stop.append(signum)
    return Stopped(signum)


def stop_requested() -> Optional[int]:
    """The signal that asked this process to stop, or None."""
    return _stop[0] if _stop else None


def clear_stop() -> None:
    """Forget a stop request (a new run in the same process)."""
    _stop.clear()


def check_stop() -> None:
    """Raise :class:`Stopped` if a stop was requested, unless that stop is what is unwinding now
    (a clean-up in an ``except`` or ``finally`` may still write what it means to keep: the
    search's study)."""
    if not _stop:
        return
    exc, seen = sys.exc_info()[1], set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    raise Stopped(_stop[0])


# What a SavedModel directory holds: such a directory may be replaced with ``overwrite``.
SAVEDMODEL_ENTRIES = frozenset({"saved_model.pb", "keras_metadata.pb", "fingerprint.pb", "variables", "assets"})


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output(
    path,
    *,
    overwrite: bool = False,
    inputs: Iterable = (),
    what: str = "output",
    directory: bool = False,
    replaceable=None,
    param: Optional[str] = None,
) -> str:
    """Check ``path`` can be written under the policy above, before any work; returns it as a
    string. ``directory``: the output is a directory (a SavedModel, a demo run), which may
    replace an existing directory only when every entry of it is in ``replaceable`` (a set of
    names, or a function of a name; default: what a SavedModel holds). Messages name the output
    ``what``, or the parameter ``param`` that gave it."""

    def refuse(text: str, **values) -> InputError:
        subject = "{%s}" % param if param else "{what}"
        return InputError(
            subject + text, params=("overwrite",) + ((param,) if param else ()), what=what, path=path, **values
        )

    if path is None or not os.fspath(path).strip():
        raise refuse(": an empty path; give a file name")
    path = os.fspath(path)
    for item in inputs:
        if (
            item is not None
            and not isinstance(item, (bytes, bytearray))
            and isinstance(item, (str, os.PathLike))
            and os.path.exists(os.fspath(item))
            and os.path.exists(path)
            and _same(path, os.fspath(item))
        ):
            raise refuse(" {path} is also an input ({item}); give the output its own name", item=os.fspath(item))
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise refuse(" directory does not exist: {parent}", parent=parent)
    if not os.path.lexists(path):
        return path
    if os.path.isdir(path) and not directory:
        raise refuse(" {path} is a directory; give a file name")
    if directory and not os.path.isdir(path):
        raise refuse(" {path} is a file; give the name of a directory to write")
    if not overwrite:
        raise refuse(" {path} exists; pass {overwrite=True} to replace it")
    if os.path.isdir(path) and not os.path.islink(path):
        entries = set(os.listdir(path))
        allowed = replaceable if replaceable is not None else SAVEDMODEL_ENTRIES
        ours = allowed if callable(allowed) else allowed.__contains__
        home = os.path.expanduser("~")
        if (
            _same(path, os.getcwd())
            or _same(path, home)
            or os.path.abspath(path) == os.path.abspath(os.sep)
            or not all(ours(e) for e in entries)
        ):
            held = ", ".join(sorted(entries)[:3]) or "nothing"
            raise refuse(
                " {path} is a directory edgekit did not write (it holds {held}); edgekit replaces only its "
                "own outputs: give a new name",
                held=held + (" …" if len(entries) > 3 else ""),
            )
    return path


def _exists_meanwhile(path: str) -> InputError:
    return InputError(
        "{path} appeared while edgekit was writing it (another run?) and was left as it is; "
        "pass {overwrite=True} to replace it",
        params="overwrite",
        path=path,
    )


def commit_file(tmp: str, path: str, overwrite: bool) -> None:
    """Rename the finished ``tmp`` to ``path``; without ``overwrite`` never replace a file that
    exists by now (a hard link claims the name atomically). Not after a stop request."""
    check_stop()
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_meanwhile(path) from None
    except OSError:  # no hard links on this file system: claim the name, then replace it
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            raise _exists_meanwhile(path) from None
        os.close(fd)
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def commit_dir(tmp: str, path: str, overwrite: bool) -> None:
    """Rename the finished directory ``tmp`` to ``path``. With ``overwrite`` an existing directory
    (checked replaceable by :func:`check_output`) is moved aside first and removed after. Not
    after a stop request."""
    check_stop()
    parent, base = os.path.split(os.path.abspath(path))
    if overwrite and os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            old = os.path.join(parent, f".{base}.old-{os.getpid()}")
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
            return
        os.unlink(path)
    try:
        os.rename(tmp, path)  # fails on an existing file or non-empty directory
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise _exists_meanwhile(path) from None
        raise


@contextlib.contextmanager
def staging_dir(path: str):
    """A fresh temporary directory beside ``path``, removed when the block ends (whatever is left
    in it: the block commits what it finished)."""
    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(path))}.tmp-", dir=parent)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_atomic(path, data, overwrite: bool = False) -> None:
    """Write ``data`` (bytes or str) to a temporary file beside ``path``, then rename it into
    place (see :func:`commit_file`)."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    mode = "wb" if isinstance(data, (bytes, bytearray, memoryview)) else "w"
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        commit_file(tmp, path, overwrite)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def captured_native_stderr():
    """Redirect file descriptor 2 to a temporary file for the duration of the block.

    TensorFlow's and the TFLite converter's C++ code log to fd 2 regardless of
    TF_CPP_MIN_LOG_LEVEL (oneDNN notices, CUDA probing, calibration chatter). The CLI runs its
    TensorFlow work inside this block and shows the captured text only when something fails
    unexpectedly. Yields a function returning the captured text."""
    from edgekit.core.progress import pushed

    sys.stderr.flush()
    saved = os.dup(2)
    tmp = tempfile.TemporaryFile()
    os.dup2(tmp.fileno(), 2)
    live = pushed(saved)  # live progress still reaches the user's stderr
    live.__enter__()

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
        live.__exit__(None, None, None)
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        kept.append(text())
        tmp.close()


def read_toml(path: str, what: str) -> dict:
    """A TOML file's document; a missing file, a directory or bad TOML is one line naming ``what``."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a directory; give a .toml file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid TOML: {exc}") from None
