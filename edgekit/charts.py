"""Charts of measured results (matplotlib, written atomically)."""

from __future__ import annotations



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
