"""Regenerate the README sections that the tool measures, between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` markers, so the tables in the README are never typed by hand.

    python -m edgekit.readme [README.md]        (``make readme``)
"""

from __future__ import annotations

import re
import sys
from typing import Callable, Dict

from edgekit._io import captured_native_stderr, write_atomic


def _models() -> str:
    from edgekit.cli import models_table

    return models_table(markdown=True)


SECTIONS: Dict[str, Callable[[], str]] = {"models": _models}


def _span(text: str, name: str):
    m = re.search(rf"<!-- {name}:begin -->\n(.*?)<!-- {name}:end -->", text, re.S)
    if m is None:
        raise ValueError(f"no <!-- {name}:begin --> ... <!-- {name}:end --> markers in the README")
    return m.span(1)


def section(text: str, name: str) -> str:
    """The content between ``name``'s markers in ``text`` (without the markers)."""
    start, end = _span(text, name)
    return text[start:end]


def update(text: str) -> str:
    for name, generate in SECTIONS.items():
        start, end = _span(text, name)
        text = text[:start] + generate().rstrip("\n") + "\n" + text[end:]
    return text


def main(argv=None) -> int:
    path = (argv or sys.argv[1:] or ["README.md"])[0]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    with captured_native_stderr():  # TF's C++ start-up lines
        text = update(text)
    write_atomic(path, text, overwrite=True)
    print(f"updated {', '.join(SECTIONS)} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
