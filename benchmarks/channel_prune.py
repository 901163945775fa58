"""Channel pruning against magnitude pruning on the demo model, measured side by side in one run.

    .venv/bin/python benchmarks/channel_prune.py [--model runs/demo/model.keras] [--runs N]
    .venv/bin/python benchmarks/channel_prune.py --smoke      (every row at tiny sizes, in seconds)

Trains the demo's MobileNetV2-style model on digits (or loads ``--model``), then:
- channel pruning: 50% of the prunable channels removed (importance: |gamma| of the BatchNorm
  after each conv), BatchNorm statistics re-estimated, fine-tuned 15 epochs with a cosine-decayed
  learning rate from 2e-3, exported int8;
- unstructured magnitude pruning to 50% zeros, fine-tuned the same number of epochs, exported int8;
and benchmarks the three int8 files in one harness call (fresh process each, XNNPACK, 1 thread).

Targets: channel-pruned int8 p50 <= 0.6x the unpruned int8 p50; its accuracy within 1.5 points of
the unpruned float model; params <= 0.4x. The magnitude-pruned model's latency ratio is printed
beside it. Exits 1 if a target is missed. ``--smoke``: the same rows on the demo's model at smoke
size (:func:`smoke.demo_model`, one epoch on 256 digits), one-epoch fine-tunes, 10 timed runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Optional

import numpy as np
import smoke  # benchmarks/smoke.py

from edgekit.app.demo import DEFAULT_EPOCHS, DEFAULT_MODEL, train_digits_model
from edgekit.converters import export, load_keras_model
from edgekit.core.data import digits
from edgekit.core.results import table
from edgekit.device import bench
from edgekit.optimize import ChannelPruneConfig, FineTune, PruneConfig, Recipe, Step, optimize

LR = 2e-3


@dataclass(frozen=True)
class Sizes:
    """How large the run is: :data:`FULL` (``make bench-channels``) or :data:`SMOKE`."""

    samples: Optional[int] = None  # per split of digits (None: all)
    model: str = DEFAULT_MODEL  # the registered model trained when --model is not given
    train_epochs: int = DEFAULT_EPOCHS
    epochs: int = 15  # each fine-tune's
    runs: int = 300
    warmup: int = 30
    allow_drop: bool = False  # a one-epoch fine-tune may collapse the model: kept, as the demo keeps it


FULL = Sizes()
SMOKE = Sizes(samples=256, model=smoke.DEMO_MODEL, train_epochs=1, epochs=1, runs=10, warmup=2, allow_drop=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help=f"a trained demo model (.keras); default: train one ({DEFAULT_EPOCHS} epochs)")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, help=f"fine-tune epochs (default {FULL.epochs})")
    ap.add_argument("--importance", choices=("l1", "l2", "bn"), default="bn", help="channel importance (default bn)")
    ap.add_argument("--runs", type=int, help=f"timed runs (default {FULL.runs})")
    smoke.add_flag(ap)
    args = ap.parse_args(argv)
    sz = SMOKE if smoke.start(ap, args) else FULL
    if args.smoke:
        smoke.demo_model()

    ds = digits() if sz.samples is None else smoke.subset(digits(), sz.samples, sz.samples // 4)
    model = load_keras_model(args.model) if args.model else train_digits_model(ds, sz.model, epochs=sz.train_epochs)
    float_acc = float(np.mean(model.predict(ds.x_test, verbose=0).argmax(1) == ds.y_test))
    # retrained after surgery with a cosine schedule, as the demo does; the same for magnitude pruning
    ft = FineTune(args.epochs or sz.epochs, 32, LR, "cosine")
    steps = {
        "channel": Step("channel_prune", ChannelPruneConfig(ratio=args.ratio, importance=args.importance), ft),
        "magnitude": Step("prune", PruneConfig(sparsity=args.ratio), ft),
    }
    channel, magnitude = (
        optimize(
            model,
            Recipe((step,)),
            ds.x_train,
            ds.y_train,
            validation_data=(ds.x_test, ds.y_test),
            allow_drop=sz.allow_drop,
        )
        for step in steps.values()
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
        timed = bench([r.path for r in reps.values()], runs=args.runs or sz.runs, warmup=sz.warmup, inputs=npz)
        results = dict(zip(reps, timed))
    rows = _rows(args.ratio, reps, {k: r.latency_ms["p50"] for k, r in results.items()}, channel, float_acc)
    print(table(("target", "measured", "ok"), [[t, m, "yes" if ok else "NO"] for t, m, ok in rows], align="lll"))
    return smoke.exit_code(all(ok for _, _, ok in rows), args.smoke)


def _rows(ratio: float, reps: dict, p50: dict, channel, float_acc: float) -> list:
    """(target, measured, ok) of the three int8 exports ``reps``, their ``p50`` and the channel step."""
    d = channel.steps[0].details
    params_ratio = d.params[1] / d.params[0]
    ch_acc = reps["channels"].accuracy
    return [
        [
            f"channel-pruned {ratio:g} int8 p50 <= 0.6x unpruned int8",
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
            f"{d.params[1]:,} / {d.params[0]:,} = {params_ratio:.3f}x; MACs {d.macs[1] / d.macs[0]:.3f}x",
            params_ratio <= 0.4,
        ],
        ["int8 file sizes", ", ".join(f"{k} {r.size_bytes:,} B" for k, r in reps.items()), True],
    ]


if __name__ == "__main__":
    sys.exit(main())
