"""The demo's report: :class:`DemoReport` (``report.json``), its table and ``report.md``."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from typing import Optional

from edgekit.core.results import Result, fmt, table


@dataclass
class DemoReport(Result):
    """What the demo measured (``report.json``)."""

    edgekit_version: str
    created: str
    dataset: dict
    model: dict
    bench: dict
    variants: list
    total_seconds: float
    pareto_png: Optional[str] = None
    stages: dict = field(default_factory=dict)  # seconds of each stage: training, each export and fine-tune, benchmark
    workers: int = 1  # processes the exports and variants ran in, side by side: their stages overlap

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["pareto_png"] is None:
            del d["pareto_png"]
        return d

    def summary(self) -> str:
        chance = self.dataset.get("chance")
        return format_variants(self.variants) + (
            f"\nchance (always the most frequent class): accuracy {chance:.4f}" if chance is not None else ""
        )


_HEADERS = (
    "variant",
    "size KiB",
    "gzip KiB",
    "x float32",
    "accuracy",
    "agreement",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "mean ms",
    "peak RSS MiB",
    "fully int8",
)


def _rows(variants):
    rows = []
    for v in variants:
        lat = v["latency_ms"]
        rows.append(
            [
                v["name"],
                fmt(v["size_bytes"] / 1024, ",.1f"),
                fmt(v["gzip_bytes"] / 1024, ",.1f"),
                fmt(v["size_vs_float32"], ".3f"),
                fmt(v["accuracy"], ".4f"),
                fmt(v["agreement"], ".4f"),
                fmt(lat["p50"], ".3f"),
                fmt(lat["p90"], ".3f"),
                fmt(lat["p99"], ".3f"),
                fmt(lat["mean"], ".3f"),
                fmt(v["peak_rss_mb"], ".1f"),
                "yes" if v["fully_integer"] else "no",
            ]
        )
    return rows


def format_variants(variants, markdown: bool = False) -> str:
    return table(_HEADERS, _rows(variants), markdown=markdown, align="l" + "r" * 10 + "l")


def render_markdown(report) -> str:
    report = report.to_dict() if isinstance(report, Result) else report
    m, d, b = report["model"], report["dataset"], report["bench"]
    plat = b.get("platform") or {}
    runtime = b.get("runtime") or {}
    lines = [
        "# edgekit demo report",
        "",
        f"- data: {d['name']}, {d['train']} train / {d['test']} test samples, input {tuple(d['input_shape'])}"
        + (f"; chance (always the most frequent class) {d['chance']:.4f}" if d.get("chance") is not None else ""),
        f"- model: {m['name']}, {m['params']:,} params, {m['epochs']} epochs ({m['train_seconds']} s), "
        f"Keras test accuracy {m['keras_accuracy']:.4f}",
        f"- benchmark: {b['warmup']} warm-up + {b['runs']} timed runs, {b['threads']} thread(s), "
        f"XNNPACK, {runtime.get('name', '?')} {runtime.get('version', '')} on "
        f"{plat.get('machine', platform.machine())}, each model in a fresh process",
        f"- created {report['created']} by edgekit {report['edgekit_version']}",
    ]
    int8 = next((v for v in report["variants"] if v["name"] == "int8"), None)
    if int8 and int8.get("mcu"):
        lines.append(f"- int8 on a microcontroller: {int8['mcu']} (`edgekit mcu`, docs/mcu.md)")
    lines += [
        "",
        "Accuracy: each `.tflite` run by the LiteRT interpreter on the test split. Agreement: share of "
        "test samples where the `.tflite` and the Keras model predict the same class. Sizes are the "
        "files' own.",
        "",
        format_variants(report["variants"], markdown=True),
        "",
    ]
    optimized = [v for v in report["variants"] if v.get("optimization")]
    if optimized:
        lines += [
            "Optimized variants: the trained model pruned, clustered or quantization-aware trained with "
            "edgekit.optimize (tfmot), fine-tuned on the train split, then exported int8. Zeros and distinct "
            "values are read from the Keras weights after stripping; gzip size shows what clustering buys.",
            "",
            table(
                ("variant", "recipe", "fine-tune epochs", "Keras accuracy", "kernel zeros", "max distinct/kernel"),
                [
                    [
                        v["name"],
                        v["optimization"]["recipe"],
                        "+".join(map(str, v["optimization"]["fine_tune_epochs"])),
                        fmt(v["optimization"]["keras_accuracy"], ".4f"),
                        fmt(v["optimization"]["kernel_zeros"], ".3f"),
                        fmt(v["optimization"]["max_unique_per_kernel"], ","),
                    ]
                    for v in optimized
                ],
                markdown=True,
            ),
            "",
        ]
    if report.get("stages"):
        lines += [
            f"Where the {report['total_seconds']:.0f} s went (seconds): "
            + ", ".join(f"{k} {v:g}" for k, v in report["stages"].items()),
            "",
        ]
    if report.get("pareto_png"):
        lines += ["![accuracy against latency; marker area is the file size](pareto.png)", ""]
    return "\n".join(lines)
