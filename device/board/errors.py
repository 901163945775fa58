"""The board side's one error: what the harness, the TFLM child and the remote runner report.

The board side runs without the rest of edgekit (standard library, numpy, LiteRT), so its error
cannot derive from :class:`edgekit.EdgekitError`; edgekit's own device error,
:class:`edgekit.HarnessError`, derives from both, and the command line reports either as a
one-line error with exit code 2.
"""


class BoardError(ValueError):
    """A one-line, user-facing error on the board side: a bad model, bad inputs, no LiteRT
    or TFLM installed. ``missing``: the package this python lacks, when that is the error
    ("numpy", "LiteRT"), so the host can say how to set the board up."""

    exit_code = 2

    def __init__(self, message: str = "", missing: str = None):
        super().__init__(message)
        self.missing = missing
