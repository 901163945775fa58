"""Tables for the terminal and Markdown, from the same rows."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence


def fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if spec:
        return format(value, spec)
    return str(value)


def table(headers: Sequence[str], rows: List[Sequence[str]], markdown: bool = False,
          align: Optional[str] = None) -> str:
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
        out.append("|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                                  for w, a in zip(widths, align)) + "|")
    else:
        out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)
