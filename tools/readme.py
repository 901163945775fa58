"""Regenerate the documentation's measured sections, between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` markers, so no table in README.md or docs/ is typed by hand.

    python tools/readme.py [FILE.md ...]        (``make readme``; default: README.md and docs/*.md)

Only the sections a file has are rewritten. Sections whose figures take a long run (the technique
table) are written by their benchmark (``benchmarks/techniques.py --docs``), not here.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from typing import Callable, Dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _models() -> str:
    from edgekit.app.cli.models import models_table

    return models_table(markdown=True)


def _boards() -> str:
    from edgekit.converters.mcu import boards_table

    return boards_table(markdown=True)


SECTIONS: Dict[str, Callable[[], str]] = {"models": _models, "boards": _boards}


def span(text: str, name: str):
    m = re.search(rf"<!-- {name}:begin -->\n(.*?)<!-- {name}:end -->", text, re.S)
    if m is None:
        raise ValueError(f"no <!-- {name}:begin --> ... <!-- {name}:end --> markers")
    return m.span(1)


def section(text: str, name: str) -> str:
    """The content between ``name``'s markers in ``text`` (without the markers)."""
    start, end = span(text, name)
    return text[start:end]


def replace(text: str, name: str, content: str) -> str:
    start, end = span(text, name)
    return text[:start] + content.rstrip("\n") + "\n" + text[end:]


def update(text: str) -> str:
    for name, generate in SECTIONS.items():
        if f"<!-- {name}:begin -->" in text:
            text = replace(text, name, generate())
    return text


def main(argv=None) -> int:
    from edgekit.core.io import captured_native_stderr, write_atomic

    paths = (argv or sys.argv[1:]) or [os.path.join(ROOT, "README.md")] + sorted(
        glob.glob(os.path.join(ROOT, "docs", "*.md"))
    )
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with captured_native_stderr():  # TF's C++ start-up lines
            new = update(text)
        if new != text:
            write_atomic(path, new, overwrite=True)
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
