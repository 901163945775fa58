"""Streaming export against the whole window, side by side in one run (issue targets).

    .venv/bin/python benchmarks/streaming.py [--steps 64] [--units 16] [--epochs 20] [--json OUT.json]
                                                                                     (make bench-streaming)
    .venv/bin/python benchmarks/streaming.py --smoke [--json OUT.json]       (one tiny model, one epoch)

Recurrent classifiers (tf_keras) trained on ``edgekit.core.synthetic.motion`` windows (``--steps`` ×
3 accelerometer axes, four activities): LSTM(seq) → GRU, LSTM, GRU and SimpleRNN, each exported
whole-window int8 and as its streaming twin (``export --streaming``, one frame per invoke) in
float32, int8 and int16x8, verified frame by frame on the test windows against the whole-window
Keras model; TFLM's arena of the int8 files (``edgekit mcu``). Targets: float32 frame by frame =
whole window (max |Δ| ≤ 1e-5); int8 and int16x8 the same top-1 on ≥ 99% of windows; the per-frame
arena ≤ 0.5× the whole window's. Exits 1 when a target is missed (not in smoke mode).
"""

from __future__ import annotations

import argparse
import json
import sys

import smoke  # benchmarks/smoke.py

from edgekit import keras
from edgekit.converters import export
from edgekit.core.results import table
from edgekit.core.synthetic import motion

MODELS = ("stack", "lstm", "gru", "simple_rnn")


def build(kind: str, steps: int, units: int):
    L = keras.layers
    inp = keras.Input((steps, 3))
    if kind == "stack":
        h = L.GRU(units)(L.LSTM(units, return_sequences=True)(inp))
    else:
        h = {"lstm": L.LSTM, "gru": L.GRU, "simple_rnn": L.SimpleRNN}[kind](units)(inp)
    model = keras.Model(inp, L.Dense(4, activation="softmax")(h), name=kind)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    return model


def measure(kind: str, ds, steps: int, units: int, epochs: int) -> dict:
    keras.utils.set_random_seed(0)
    model = build(kind, steps, units)
    model.fit(ds.x_train, ds.y_train, epochs=epochs, batch_size=32, verbose=0)
    common = dict(calibration=ds.x_train, validation_data=(ds.x_test, ds.y_test), layer_report=False)
    whole = export(model, None, "int8", target="mcu", **common)
    exact = export(model, None, "float32", streaming=True, **common).streaming
    int8 = export(model, None, "int8", streaming=True, target="mcu", **common)
    wide = export(model, None, "int16x8", streaming=True, **common)
    return {
        "model": kind,
        "keras_accuracy": exact["keras_accuracy"],
        "whole_bytes": whole.size_bytes,
        "whole_arena": whole.mcu.arena_bytes,
        "whole_agreement": whole.agreement,
        "float32_max_diff": exact["max_abs_diff"],
        "int8_bytes": int8.size_bytes,
        "int8_arena": int8.mcu.arena_bytes,
        "int8_agreement": int8.streaming["agreement"],
        "int16x8_bytes": wide.size_bytes,
        "int16x8_agreement": wide.streaming["agreement"],
        "windows": exact["windows"],
    }


def report(rows: list) -> bool:
    print(
        table(
            (
                "model",
                "keras acc",
                "whole int8 B",
                "arena B",
                "stream int8 B",
                "arena B",
                "arena ×",
                "f32 max |Δ|",
                "int8 top-1",
                "int16x8 top-1",
            ),
            [
                [
                    r["model"],
                    f"{r['keras_accuracy']:.3f}",
                    f"{r['whole_bytes']:,}",
                    f"{r['whole_arena']:,}",
                    f"{r['int8_bytes']:,}",
                    f"{r['int8_arena']:,}",
                    f"{r['int8_arena'] / r['whole_arena']:.2f}",
                    f"{r['float32_max_diff']:.1e}",
                    f"{r['int8_agreement']:.3f}",
                    f"{r['int16x8_agreement']:.3f}",
                ]
                for r in rows
            ],
            align="lrrrrrrrrr",
        )
    )
    ok = True
    for name, passed in (
        ("float32 frame by frame = whole window (max |Δ| <= 1e-5)", all(r["float32_max_diff"] <= 1e-5 for r in rows)),
        ("int8 streaming: same top-1 on >= 99% of windows", all(r["int8_agreement"] >= 0.99 for r in rows)),
        ("int16x8 streaming: same top-1 on >= 99% of windows", all(r["int16x8_agreement"] >= 0.99 for r in rows)),
        ("per-frame arena <= 0.5x the whole window's", all(r["int8_arena"] <= 0.5 * r["whole_arena"] for r in rows)),
    ):
        print(f"{'PASS' if passed else 'FAIL'} {name}")
        ok = ok and passed
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/streaming.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--units", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", help="write the rows as JSON")
    smoke.add_flag(ap)
    args = ap.parse_args(argv)
    tiny = smoke.start(ap, args)
    if tiny:
        args.steps, args.units, args.epochs, args.models = 8, 4, 1, "gru"
    ds = motion(train=64 if tiny else 512, test=16 if tiny else 256, steps=args.steps, seed=0)
    rows = [measure(kind, ds, args.steps, args.units, args.epochs) for kind in args.models.split(",")]
    ok = report(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return smoke.exit_code(ok, tiny)


if __name__ == "__main__":
    sys.exit(main())
