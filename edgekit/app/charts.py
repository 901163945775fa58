"""Charts of measured results (matplotlib, written atomically).

The accuracy/latency chart reads at a glance: the Pareto front (the variants no other variant
beats on both accuracy and latency) is drawn as a line, the dominated variants are faded, the
float32 baseline is marked with a star and a dashed line at its accuracy, marker area is the file
size (with a legend of sizes), and every label is placed where it overlaps no other label, marker
or the axes' edge (:func:`pareto_figure` returns the labels so a test can check).
"""

from __future__ import annotations

import os
import tempfile
from typing import List, Tuple

BASELINE = "float32"
# label positions tried around a point, in points: right, left, above, below, the diagonals, then further out
_OFFSETS = [
    (dx * r, dy * r)
    for r in (1, 1.6, 2.3, 3.2, 4.5, 6, 8)
    for dx, dy in ((10, -2), (-10, -2), (0, 12), (0, -14), (10, 10), (-10, 10), (10, -14), (-10, -14))
]


def pareto_front(variants, key: str = "accuracy", higher: bool = True) -> List[int]:
    """Indices of the variants no other variant dominates (at least as good by ``key`` — higher, or
    lower for an error — and as fast, and better in one), by increasing latency."""
    pts = [(v["latency_ms"]["p50"], v[key] if higher else -v[key]) for v in variants]
    front = [
        i
        for i, (x, y) in enumerate(pts)
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(pts) if j != i)
    ]
    return sorted(front, key=lambda i: pts[i][0])


def _area(size_bytes: int, largest: int) -> float:
    return 40 + 900 * size_bytes / largest


def pareto_figure(
    variants, title: str = "accuracy vs latency", key="accuracy", label="test accuracy (.tflite)", higher=True
):
    """(figure, label texts) of the chart of ``key`` (``label`` on its axis; ``higher``: better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 5.2), dpi=110)
    front = pareto_front(variants, key, higher)
    largest = max(v["size_bytes"] for v in variants)
    xs = [v["latency_ms"]["p50"] for v in variants]
    ys = [v[key] for v in variants]
    ax.plot(
        [xs[i] for i in front], [ys[i] for i in front], "-", color="tab:blue", lw=1.6, zorder=1, label="Pareto front"
    )
    areas = []
    for i, v in enumerate(variants):
        on_front = i in front
        marker = "*" if v["name"] == BASELINE else "o"
        areas.append(_area(v["size_bytes"], largest) * (2.2 if marker == "*" else 1))
        ax.scatter(
            [xs[i]],
            [ys[i]],
            s=areas[-1],
            marker=marker,
            color="tab:blue" if on_front else "0.6",
            alpha=0.85 if on_front else 0.35,
            edgecolors="black" if on_front else "none",
            linewidths=0.6,
            zorder=2,
        )
    baseline = next((v for v in variants if v["name"] == BASELINE), None)
    if baseline is not None:
        ax.axhline(
            baseline[key],
            color="0.3",
            ls="--",
            lw=0.8,
            zorder=0,
            label=f"float32 baseline ({baseline[key]:.4g})",
        )
    ax.margins(x=0.22, y=0.18)
    ax.set_xlabel("p50 latency (ms), LiteRT + XNNPACK, 1 thread")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _size_legend(ax, largest)
    fig.tight_layout()
    labels = _place_labels(fig, ax, variants, xs, ys, front, areas)
    return fig, labels


def _size_legend(ax, largest: int) -> None:
    """The front/baseline legend, plus marker areas for three file sizes."""
    handles, names = ax.get_legend_handles_labels()
    for fraction in (0.25, 0.5, 1.0):
        size = largest * fraction
        handles.append(ax.scatter([], [], s=_area(size, largest), color="0.6", alpha=0.5))
        names.append(f"{size / 1024:,.0f} KiB file")
    ax.legend(
        handles,
        names,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=7.5,
        labelspacing=1.3,
        borderpad=0.9,
        frameon=False,
    )


def _place_labels(fig, ax, variants, xs, ys, front, areas) -> list:
    """Each label at the first offset where its box overlaps no placed label, no marker or the
    outside of the axes (the dominated variants' labels are grey). Where no offset is free, the
    point gets a number and its label goes to a list beside the chart."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    blocked = []
    for x, y, area in zip(xs, ys, areas):  # a box around each marker (area in points², radius in pixels)
        cx, cy = ax.transData.transform((x, y))
        r = 0.5 * area**0.5 * fig.dpi / 72
        blocked.append(matplotlib_bbox(cx - r, cy - r, cx + r, cy + r))
    texts, listed = [], []
    order = sorted(range(len(variants)), key=lambda i: (i not in front, xs[i]))
    for i in order:
        v = variants[i]
        if not v["name"]:  # an unlabelled point (a search's dominated trials)
            continue
        words = f"{v['name']}\n{v['size_bytes'] / 1024:,.0f} KiB"
        text = ax.annotate(
            words,
            (xs[i], ys[i]),
            textcoords="offset points",
            xytext=_OFFSETS[0],
            fontsize=7.5,
            color="black" if i in front else "0.45",
            ha="left",
            va="center",
            zorder=3,
        )
        for dx, dy in _OFFSETS:
            text.set_position((dx, dy))
            text.set_ha("left" if dx > 0 else "right" if dx < 0 else "center")
            box = text.get_window_extent(renderer).expanded(1.04, 1.08)
            if _inside(box, frame) and not any(box.overlaps(b) for b in blocked):
                break
        else:  # nowhere free: a number by the point, the label in the list
            listed.append(words.replace("\n", ", "))
            text.set_text(str(len(listed)))
            for dx, dy in _OFFSETS:
                text.set_position((dx * 0.6, dy * 0.6))
                box = text.get_window_extent(renderer)
                if _inside(box, frame) and not any(box.overlaps(b) for b in blocked):
                    break
        blocked.append(text.get_window_extent(renderer))
        texts.append(text)
    if listed:
        texts.append(
            fig.text(
                0.995,
                0.02,
                "\n".join(f"{k}: {w}" for k, w in enumerate(listed, 1)),
                ha="right",
                va="bottom",
                fontsize=7.5,
            )
        )
    return texts


def matplotlib_bbox(x0, y0, x1, y1):
    from matplotlib.transforms import Bbox

    return Bbox([[x0, y0], [x1, y1]])


def _inside(box, frame) -> bool:
    return box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1


def label_overlaps(fig, labels) -> List[Tuple[str, str]]:
    """Pairs of labels whose boxes overlap once the figure is drawn (none, by construction)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text().split("\n")[0], t.get_window_extent(renderer)) for t in labels]
    return [(a, b) for k, (a, ba) in enumerate(boxes) for b, bb in boxes[k + 1 :] if ba.overlaps(bb)]


def pareto_png(variants, path: str, title: str = "accuracy vs latency", **axis) -> str:
    """The chart of :func:`pareto_figure` (``axis``: its ``key``, ``label``, ``higher``), written as
    a PNG atomically; returns the file name."""
    import matplotlib.pyplot as plt

    fig, _ = pareto_figure(variants, title, **axis)
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
