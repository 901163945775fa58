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


def pareto_png(variants, path: str, title: str = "accuracy vs latency") -> str:
    """Plot accuracy against p50 latency, marker area proportional to the gzip'd ``.tflite`` size
    (what pruning and clustering shrink; the label gives both sizes), and write a PNG atomically.
    Returns the file name (relative to the report)."""
    import os
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=110)
    largest = max(v["gzip_bytes"] for v in variants)
    for v in variants:
        x, y = v["latency_ms"]["p50"], v["accuracy"]
        ax.scatter([x], [y], s=60 + 1400 * v["gzip_bytes"] / largest, alpha=0.55)
        ax.annotate(f"{v['name']}\n{v['size_bytes'] / 1024:,.0f} KiB, gzip {v['gzip_bytes'] / 1024:,.0f}",
                    (x, y), textcoords="offset points", xytext=(9, -3), fontsize=8)
    ax.margins(x=0.25, y=0.12)
    ax.set_xlabel("p50 latency (ms), LiteRT + XNNPACK, 1 thread")
    ax.set_ylabel("test accuracy (.tflite)")
    ax.set_title(title + " (marker area: gzip'd size)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".pareto-", suffix=".png", dir=directory)
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return os.path.basename(path)
