"""The root of edgekit's errors, and the device harness's own.

It lives here, in the standalone device package (standard library only), because the harness
must not import the rest of edgekit, yet its errors belong to the one hierarchy:
``except edgekit.EdgekitError`` catches every error edgekit reports, device errors included.
``edgekit.errors`` re-exports it with the rest of the hierarchy.
"""


class EdgekitError(Exception):
    """Base class of the errors edgekit reports to users. Exit code 2 in the CLI."""

    exit_code = 2


class HarnessError(EdgekitError, ValueError):
    """A one-line, user-facing error of the device harness: a bad model, bad inputs, no LiteRT
    installed, an unreachable board."""
