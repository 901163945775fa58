"""User-facing errors: one hierarchy under :class:`EdgekitError`, each also the built-in type a
caller would expect (``ValueError`` for bad input).

Each message is one line: what was wrong, what was expected, how to fix it, echoing the bad value.
Library messages name parameters in backticks (`` `min_agreement` ``); the command line
translates them to its flags (``--min-agreement``). The CLI prints ``edgekit: error: <message>``
and exits with the error's ``exit_code``, without a traceback.
"""

from __future__ import annotations

from edgekit.device.errors import EdgekitError, HarnessError

__all__ = ["EdgekitError", "HarnessError", "InputError", "ResourceLimitError", "UnsafeModelError",
           "VerificationError"]


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
