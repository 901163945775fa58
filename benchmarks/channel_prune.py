"""Channel pruning against magnitude pruning on the demo model, measured side by side in one run.

    .venv/bin/python benchmarks/channel_prune.py [--model runs/demo/model.keras] [--runs N]

Trains the demo's MobileNetV2-style model on digits (or loads ``--model``), then:
- channel pruning: 50% of the prunable channels removed (importance: |gamma| of the BatchNorm
  after each conv), BatchNorm statistics re-estimated, fine-tuned 15 epochs with a cosine-decayed
  learning rate from 2e-3, exported int8;
- unstructured magnitude pruning to 50% zeros, fine-tuned the same number of epochs, exported int8;
and benchmarks the three int8 files in one harness call (fresh process each, XNNPACK, 1 thread).

Targets: channel-pruned int8 p50 <= 0.6x the unpruned int8 p50; its accuracy within 1.5 points of
the unpruned float model; params <= 0.4x. The magnitude-pruned model's latency ratio is printed
beside it. Exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

from edgekit.app.demo import train_digits_model
from edgekit.converters import export, load_keras_model
from edgekit.core.data import digits
from edgekit.core.results import table
from edgekit.device import bench
from edgekit.optimize import ChannelPruneConfig, FineTune, PruneConfig, Recipe, Step, optimize

EPOCHS, LR = 15, 2e-3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a trained demo model (.keras); default: train one (20 epochs)")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=EPOCHS, help=f"fine-tune epochs (default {EPOCHS})")
    ap.add_argument("--importance", choices=("l1", "l2", "bn"), default="bn", help="channel importance (default bn)")
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args(argv)

    ds = digits()
    model = load_keras_model(args.model) if args.model else train_digits_model(ds)
    float_acc = float(np.mean(model.predict(ds.x_test, verbose=0).argmax(1) == ds.y_test))
    # retrained after surgery with a cosine schedule, as the demo does; the same for magnitude pruning
    ft = FineTune(args.epochs, 32, LR, "cosine")
    channel = optimize(
        model,
        Recipe((Step("channel_prune", ChannelPruneConfig(ratio=args.ratio, importance=args.importance), ft),)),
        ds.x_train,
        ds.y_train,
        validation_data=(ds.x_test, ds.y_test),
    )
    magnitude = optimize(
        model,
        Recipe((Step("prune", PruneConfig(sparsity=args.ratio), ft),)),
        ds.x_train,
        ds.y_train,
        validation_data=(ds.x_test, ds.y_test),
    )
    with tempfile.TemporaryDirectory() as tmp:
        reps = {
            name: export(
                m,
                os.path.join(tmp, f"{name}.tflite"),
                "int8",
                calibration=ds.x_train,
                validation_data=(ds.x_test, ds.y_test),
                layer_report=False,
            )
            for name, m in (("unpruned", model), ("channels", channel.model), ("magnitude", magnitude.model))
        }
        npz = ds.save_test_npz(os.path.join(tmp, "test.npz"))
        results = dict(zip(reps, bench([r.path for r in reps.values()], runs=args.runs, warmup=30, inputs=npz)))
    p50 = {k: r.latency_ms["p50"] for k, r in results.items()}
    d = channel.steps[0].details
    params_ratio = d.params[1] / d.params[0]
    ch_acc = reps["channels"].accuracy
    rows = [
        [
            f"channel-pruned {args.ratio:g} int8 p50 <= 0.6x unpruned int8",
            f"{p50['channels']:.3f} / {p50['unpruned']:.3f} ms = {p50['channels'] / p50['unpruned']:.2f}x",
            p50["channels"] <= 0.6 * p50["unpruned"],
        ],
        [
            "  magnitude-pruned 0.5 int8 p50 (for comparison)",
            f"{p50['magnitude']:.3f} / {p50['unpruned']:.3f} ms = {p50['magnitude'] / p50['unpruned']:.2f}x",
            True,
        ],
        [
            "channel-pruned int8 accuracy within 1.5 points of unpruned float",
            f"{ch_acc:.4f} vs {float_acc:.4f} (unpruned int8 {reps['unpruned'].accuracy:.4f}, "
            f"magnitude int8 {reps['magnitude'].accuracy:.4f})",
            ch_acc >= float_acc - 0.015,
        ],
        [
            "channel-pruned params <= 0.4x",
            f"{d['params'][1]:,} / {d['params'][0]:,} = {params_ratio:.3f}x; MACs {d['macs'][1] / d['macs'][0]:.3f}x",
            params_ratio <= 0.4,
        ],
        ["int8 file sizes", ", ".join(f"{k} {r.size_bytes:,} B" for k, r in reps.items()), True],
    ]
    print(table(("target", "measured", "ok"), [[t, m, "yes" if ok else "NO"] for t, m, ok in rows], align="lll"))
    return 0 if all(ok for _, _, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
