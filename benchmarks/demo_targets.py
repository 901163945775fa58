"""Check the foundation targets on the demo, everything measured in one run.

    .venv/bin/python benchmarks/demo_targets.py [--out runs/bench-demo] [--report REPORT.json]
    .venv/bin/python benchmarks/demo_targets.py --smoke [--out DIR]      (every check, on a tiny demo)

Runs the demo (or reads an existing report.json with --report) and checks:
- float accuracy >= 0.97 on the digits test split, int8 .tflite accuracy within 1 point of it;
- the int8 model is fully integer (read from the file) with int8 input and output;
- int8 file <= 0.3x the float32 file;
- int8 p50 latency < float32 p50 latency (same run, same harness settings);
- optimized variants (when the report has them): every pruned kernel >= 0.79 zeros after a
  fine-tune; 2:4 in every group of 4 input weights of every pruned kernel; clustered kernels
  <= 16 distinct values and the gzip'd clustered int8 file <= 0.6x the gzip'd plain int8 one;
  80%-pruned int8 accuracy within 1 point of the float model, QAT int8 within 0.5, PCQAT int8
  within 1.5.
Exits 1 if a target is missed. Latency is measured on this (shared, noisy) machine: the target
is a ratio of two models measured back to back, never an absolute time. ``--smoke``: the whole demo
(every variant, so every check) on the registered DS-CNN (24k params, a BatchNorm after every
conv, as the demo's model has), one epoch of training and of each fine-tune, 3 timed runs;
written to a temporary directory unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import smoke  # benchmarks/smoke.py

from edgekit.converters import inspect_tflite


def check(report: dict) -> list:
    v = {x["name"]: x for x in report["variants"]}
    f32, i8 = v["float32"], v["int8"]
    info = inspect_tflite(i8["tflite"])
    float_acc = report["model"]["keras_accuracy"]
    rows = [
        ("Keras float accuracy >= 0.97", f"{float_acc:.4f}", float_acc >= 0.97),
        ("float32 .tflite accuracy", f"{f32['accuracy']:.4f}", abs(f32["accuracy"] - float_acc) <= 0.01),
        (
            "int8 accuracy within 1 point of float",
            f"{i8['accuracy']:.4f} ({(i8['accuracy'] - float_acc) * 100:+.2f} pt)",
            i8["accuracy"] >= float_acc - 0.01,
        ),
        (
            "int8 fully integer, int8 I/O (read from the file)",
            f"{info.fully_integer}, {info.inputs[0]['dtype']}/{info.outputs[0]['dtype']}",
            info.fully_integer and info.inputs[0]["dtype"] == "INT8" and info.outputs[0]["dtype"] == "INT8",
        ),
        (
            "int8 size <= 0.3x float32",
            f"{i8['size_bytes']:,} / {f32['size_bytes']:,} = {i8['size_bytes'] / f32['size_bytes']:.3f}x",
            i8["size_bytes"] <= 0.3 * f32["size_bytes"],
        ),
        (
            "int8 p50 < float32 p50",
            f"{i8['latency_ms']['p50']:.3f} / {f32['latency_ms']['p50']:.3f} ms = "
            f"{i8['latency_ms']['p50'] / f32['latency_ms']['p50']:.2f}x",
            i8["latency_ms"]["p50"] < f32["latency_ms"]["p50"],
        ),
    ]
    if "pruned 0.8 + int8" in v:
        rows += optimized_rows(v, float_acc)
    rows.append(
        (
            "demo wall time (s), target <= 300",
            f"{report.get('total_seconds')}",
            report.get("total_seconds") is None or report["total_seconds"] <= 300,
        )
    )
    return rows


def optimized_rows(v: dict, float_acc: float) -> list:
    pruned, two4, clustered = v["pruned 0.8 + int8"], v["2:4 + int8"], v["clustered 16 + int8"]
    qat, pcqat, i8 = v["QAT int8"], v["PCQAT int8"], v["int8"]

    def within(variant, points):
        acc = variant["accuracy"]
        return (f"{acc:.4f} ({(acc - float_acc) * 100:+.2f} pt)", acc >= float_acc - points / 100)

    rows = [
        (
            "pruned 0.8 (fine-tune < 20 steps is in the tests): every pruned kernel >= 0.79 zeros",
            f"min {pruned['optimization']['min_zeros_pruned']:.4f}",
            pruned["optimization"]["min_zeros_pruned"] >= 0.79,
        ),
        (
            "2:4: every group of 4 input weights has >= 2 zeros, every pruned kernel",
            str(two4["optimization"]["two_four_compliant"]),
            two4["optimization"]["two_four_compliant"],
        ),
        (
            "cluster 16: <= 16 distinct values per clustered kernel",
            str(_max_clustered_unique(clustered)),
            _max_clustered_unique(clustered) <= 16,
        ),
        (
            "cluster 16: gzip int8 <= 0.6x gzip plain int8",
            f"{clustered['gzip_bytes']:,} / {i8['gzip_bytes']:,} = {clustered['gzip_bytes'] / i8['gzip_bytes']:.3f}x",
            clustered["gzip_bytes"] <= 0.6 * i8["gzip_bytes"],
        ),
        ("80%-pruned int8 accuracy within 1 point of float", *within(pruned, 1.0)),
        ("QAT int8 accuracy within 0.5 point of float", *within(qat, 0.5)),
        ("PCQAT int8 accuracy within 1.5 points of float", *within(pcqat, 1.5)),
        (
            "PCQAT keeps zeros (kernels) and <= 16 values",
            f"{pcqat['optimization']['kernel_zeros']:.3f}, {_max_clustered_unique(pcqat)}",
            pcqat["optimization"]["kernel_zeros"] >= 0.75 and _max_clustered_unique(pcqat) <= 16,
        ),
    ]
    return rows


def _max_clustered_unique(variant) -> int:
    """Distinct values of the kernels tfmot clusters (Dense/Conv2D; depthwise kernels are not)."""
    layers = variant["optimization"]["weights"]["layers"]
    return max(l["unique"] for l in layers if l["kind"] != "DepthwiseConv2D")


# run_demo's settings: the demo's own, or the smallest that still runs every variant
FULL = {}
SMOKE = dict(epochs=1, runs=3, warmup=1, fine_tune_epochs=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="where the demo writes (default runs/bench-demo)")
    parser.add_argument("--report", help="check an existing report.json instead of running the demo")
    smoke.add_flag(parser)
    args = parser.parse_args(argv)
    settings = SMOKE if smoke.start(parser, args) else FULL
    args.out = args.out or (os.path.join(smoke.temp_dir(), "demo") if args.smoke else "runs/bench-demo")
    if args.report:
        with open(args.report) as f:
            report = json.load(f)
    else:
        from edgekit.app.demo import run_demo

        if args.smoke:  # DS-CNN (24k params, BatchNorm after every conv): small, and every variant's pattern
            settings = dict(settings, model_name="ds_cnn")
        report = run_demo(args.out, **settings).to_dict()
    rows = check(report)
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, ok in rows:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<{width}}  {value}")
    missed = [r for r in rows if not r[2]]
    if missed:
        print(f"\n{len(missed)} target(s) missed", file=sys.stderr)
    else:
        print(f"\nall {len(rows)} targets met ({os.path.abspath(args.report or args.out)})")
    return smoke.exit_code(not missed, args.smoke)


if __name__ == "__main__":
    sys.exit(main())
