"""What every result object shares, and the text tables they print.

A result (``ExportReport``, ``ModelInfo``, ``Profile``, ``OptimizeResult``, ``WeightReport``,
``ChannelPruneResult``, ``FactorizeResult``, ``DemoReport``, the device's ``BenchmarkResult``)
has ``to_dict()`` (JSON-ready), ``to_json()`` and ``summary()`` (the text the command line
prints), so every command prints a result one way and writes the same JSON with ``--json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, List, Optional, Sequence


class Result:
    """``to_dict`` (default: the dataclass's fields), ``to_json`` and ``summary``."""

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def summary(self) -> str:  # pragma: no cover - every result defines it
        raise NotImplementedError


def fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if spec:
        return format(value, spec)
    return str(value)


def table(
    headers: Sequence[str], rows: List[Sequence[str]], markdown: bool = False, align: Optional[str] = None
) -> str:
    """A text table (or a GitHub Markdown one). ``align`` is one 'l'/'r' per column; by default
    the first column is left-aligned and the rest right-aligned."""
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        return ("| " + " | ".join(parts) + " |") if markdown else "  ".join(parts).rstrip()

    out = [line(cells[0])]
    if markdown:
        out.append(
            "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, align)) + "|"
        )
    else:
        out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)
