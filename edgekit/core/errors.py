"""User-facing errors: one hierarchy under :class:`EdgekitError`, each also the built-in type a
caller would expect (``ValueError`` for bad input).

Each message is one line: what was wrong, what was expected, how to fix it, echoing the bad value.
A message that names parameters says which (``params``) and writes each as a field of its
template, so every caller names them in its own words::

    raise InputError("{min_agreement} must be in [0, 1]; received {value}", params="min_agreement", value=1.5)

``str(error)`` names them as Python does (`` `min_agreement` ``); the command line renders the same
error with its flags (``--min-agreement``, see :meth:`EdgekitError.render`). A field may carry a
value, ``{keep_float='auto'}`` (`` `keep_float='auto'` `` / ``--keep-float auto``), or
``{io=*}`` for the value the caller gave (``values['io']``); every field that is not a parameter is
one of the keyword ``values``, substituted as they are. A message without
``params`` is used as it is. The CLI prints ``edgekit: error: <message>`` and exits with the error's
``exit_code``, without a traceback.
"""

from __future__ import annotations

import string
import warnings
from typing import Callable, Optional, Sequence, Tuple, Union

from edgekit.device.board.errors import BoardError

__all__ = [
    "BoardError",
    "EdgekitDeprecationWarning",
    "EdgekitError",
    "HarnessError",
    "InputError",
    "Message",
    "ResourceLimitError",
    "UnsafeModelError",
    "VerificationError",
    "python_name",
    "renamed",
    "render",
]

# name, value as written after '=' (None for a bare parameter) -> the words for it
Namer = Callable[[str, Optional[str]], str]


def python_name(param: str, value: Optional[str]) -> str:
    """A parameter as a Python caller writes it: `` `name` `` or `` `name=value` ``."""
    return f"`{param}`" if value is None else f"`{param}={value}`"


class _Template(string.Formatter):
    def __init__(self, params: Tuple[str, ...], values: dict, name: Namer):
        self.params, self.values, self.name = params, values, name

    def get_field(self, field_name, args, kwargs):
        # the whole field is the key: a value may hold dots ({learning_rate=0.1})
        param, eq, value = field_name.partition("=")
        if param in self.params:
            if value == "*":  # the value the caller gave: values[param], never parsed as template text
                value = repr(self.values[param])
            return self.name(param, value if eq else None), field_name
        return self.values[field_name], field_name


class Message(str):
    """A one-line message that may name parameters: the text as Python names them, which
    :meth:`render` names in other words (see the module's doc). Errors hold one; results hold
    them among their warnings, where they are plain strings to everything else."""

    def __new__(cls, template: str, *, params: Union[str, Sequence[str]] = (), **values):
        params = (params,) if isinstance(params, str) else tuple(params)
        text = _Template(params, values, python_name).format(template) if params else template
        self = super().__new__(cls, text)
        self.template, self.params, self.values = template, params, values
        return self

    def render(self, name: Namer = python_name) -> str:
        """The text with each parameter named by ``name(param, value)``."""
        if not self.params:
            return self.template
        return _Template(self.params, self.values, name).format(self.template)

    def __reduce__(self):
        return _message, (self.template, self.params, self.values)


def _message(template, params, values):
    return Message(template, params=params, **values)


def render(text, name: Namer = python_name) -> str:
    """A message, an error or plain text, with its parameters named by ``name``."""
    message = getattr(text, "message", text)
    return message.render(name) if isinstance(message, Message) else str(text)


class EdgekitError(Exception):
    """Base class of the errors edgekit reports to users. Exit code 2 in the CLI. ``message``
    is a :class:`Message` template (with ``params``) or plain text."""

    exit_code = 2

    def __init__(self, message: Union[str, Message], *, params: Union[str, Sequence[str]] = (), **values):
        self.message = message if isinstance(message, Message) else Message(message, params=params, **values)
        super().__init__(str(self.message))

    @property
    def params(self) -> Tuple[str, ...]:
        return self.message.params

    def render(self, name: Namer = python_name) -> str:
        """The message with each parameter named by ``name(param, value)``."""
        return self.message.render(name)

    def __str__(self) -> str:
        return str(self.message)

    def __reduce__(self):  # across processes (the demo's workers) with its parameters
        m = self.message
        return _rebuild, (type(self), m.template, m.params, m.values)


def _rebuild(cls, template, params, values):
    return cls(template, params=params, **values)


class InputError(EdgekitError, ValueError):
    """Bad user input: a missing or corrupt file, data of the wrong shape, an unknown option."""


class VerificationError(EdgekitError):
    """A converted model failed a check (dtype audit, interpreter run, agreement). Exit code 1."""

    exit_code = 1


class CollapseError(VerificationError):
    """A fine-tune that ended far below where it started (:func:`edgekit.optimize.collapsed`):
    a failure, not a result, unless the user accepts it (``allow_drop``). Exit code 1."""


class UnsafeModelError(InputError):
    """A model file that would run Python code when loaded (a Lambda layer, an unknown module).
    Nothing of the file has run when this is raised."""


class ResourceLimitError(InputError):
    """A file that declares more than the limits allow (:mod:`edgekit.core.limits`): a
    decompression bomb or a corrupt header. Nothing was unpacked."""


class HarnessError(EdgekitError, BoardError):
    """A device error reported by edgekit's host side (runs here, over SSH, under QEMU): an
    unreachable board, a harness that failed. A :class:`BoardError` too, the error of the board
    side's own code (``edgekit.device.board``), which runs without the rest of edgekit."""


class EdgekitDeprecationWarning(DeprecationWarning):
    """A name edgekit still accepts for one release: the warning says its new name."""


def renamed(kwargs: dict, old: Union[str, Tuple[str, ...]], new: str, value):
    """The value of parameter ``new``, or of its older name(s) ``old`` popped from ``kwargs``
    with a :class:`EdgekitDeprecationWarning` (several old names, as ``eval_x, eval_y`` for
    ``validation_data``, give a tuple of their values). Both at once is an error."""
    names = (old,) if isinstance(old, str) else tuple(old)
    given = [n for n in names if n in kwargs]
    if not given:
        return value
    legacy = tuple(kwargs.pop(n, None) for n in names)
    if value is not None:
        raise InputError("give {%s} or its older name {%s}, not both" % (new, given[0]), params=(new, given[0]))
    warnings.warn(
        f"{', '.join(f'`{n}`' for n in names)} {'is' if len(names) == 1 else 'are'} now `{new}`; the old "
        f"name{'s' if len(names) > 1 else ''} will be removed in the next release",
        EdgekitDeprecationWarning,
        stacklevel=3,
    )
    return legacy[0] if len(names) == 1 else legacy
