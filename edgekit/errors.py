"""User-facing errors.

Each message is one line: what was wrong, what was expected, how to fix it, echoing the bad value.
The CLI prints it as ``edgekit: error: <message>`` and exits non-zero without a traceback.
"""

from __future__ import annotations


class EdgekitError(Exception):
    """Base class of the errors edgekit reports to users. Exit code 2 in the CLI."""

    exit_code = 2


class InputError(EdgekitError, ValueError):
    """Bad user input: a missing or corrupt file, data of the wrong shape, an unknown option."""


class VerificationError(EdgekitError):
    """A converted model failed a check (dtype audit, interpreter run, agreement). Exit code 1."""

    exit_code = 1


class UnsafeModelError(InputError):
    """A model file that would run Python code when loaded (a Lambda layer, an unknown module).
    Nothing of the file has run when this is raised."""


class ResourceLimitError(InputError):
    """A file that declares more than the limits allow (:mod:`edgekit.limits`): a decompression
    bomb or a corrupt header. Nothing was unpacked."""
