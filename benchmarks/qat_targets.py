"""QAT starts where post-training int8 is and stays there, measured in one run.

    .venv/bin/python benchmarks/qat_targets.py [--json OUT.json]
    .venv/bin/python benchmarks/qat_targets.py --smoke          (every row at tiny sizes)

A BatchNorm-heavy model of a user's structure (Conv without bias → BatchNorm → ReLU6; a depthwise →
BN → ReLU6 → 1×1 → BN residual branch; squeeze-excite; a Conv → BN → ReLU6 branch concatenated with a
Conv(relu) branch; strided conv → GAP → Dense → Dense), trained on 300 samples of 4 classes of
24×24×1 noisy bars, with a logits head (compiled ``from_logits=True``) and the same weights under a
softmax head; and the demo model. For each recipe (QAT alone; 50% pruning → QAT; 16 clusters with
BatchNorm folded → QAT; channels 0.45 → 16 clusters with BatchNorm kept → QAT) the steps before QAT
run first, then on that model:

- post-training int8 (PTQ): the ``.tflite``'s accuracy and cross-entropy on the test split;
- the QAT model before any step: its loss in training mode on the first batch against the PTQ
  file's on the same batch (the first step's loss), and its test accuracy;
- QAT, 2 epochs = 20 steps at 1e-4 (the fine-tune that wrecked the model), exported int8.

Targets: QAT int8 ≥ PTQ int8 − 1 point; the first step's loss within 10% of PTQ's (+ 0.01 nats, for a
model that fits its training batch); fully integer. Exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import smoke  # benchmarks/smoke.py

RECIPES = {
    "qat": [],
    "prune 0.5 → qat": [{"technique": "prune", "sparsity": 0.5}],
    "cluster 16 (BatchNorm folded) → qat": [{"technique": "cluster", "clusters": 16}],
    "channels 0.45 → cluster 16 (BatchNorm kept) → qat": [
        {"technique": "channel_prune", "ratio": 0.45, "importance": "bn"},
        {"technique": "cluster", "clusters": 16, "fold_batchnorm": False},
    ],
}


@dataclass(frozen=True)
class Sizes:
    samples: int = 300  # of the bars, per split
    epochs: int = 25  # training the bars model (10 steps each)
    step_epochs: int = 2  # the fine-tune of each step before QAT
    demo_epochs: int = 12  # training the demo model
    heads: tuple = ("logits", "softmax")
    recipes: tuple = tuple(RECIPES)
    demo: bool = True  # the demo model's row


FULL = Sizes()
# --smoke: the logits head, QAT alone and the longest recipe; the demo's row is the bars' code path
SMOKE = Sizes(
    samples=96,
    epochs=6,
    step_epochs=1,
    heads=("logits",),
    recipes=("qat", "channels 0.45 → cluster 16 (BatchNorm kept) → qat"),
    demo=False,
)


def bars(n: int, seed: int):
    """4 classes of 24x24x1 images: a noisy bar, horizontal / vertical / diagonal / anti-diagonal."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:24, 0:24].astype(np.float32)
    y = rng.integers(0, 4, n)
    x = np.zeros((n, 24, 24, 1), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(7, 17, 2)
        angle = [0.0, np.pi / 2, np.pi / 4, -np.pi / 4][y[i]] + rng.normal(0, 0.15)
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        img = np.exp(-((across / rng.uniform(0.8, 1.8)) ** 2)) * (np.abs(along) < rng.uniform(4, 9))
        x[i, :, :, 0] = img + rng.normal(0, 0.55, img.shape)
    return x, y.astype(np.int64)


def bars_model(logits: bool):
    """The BatchNorm-heavy model (see the module doc), compiled with its loss."""
    from edgekit import keras

    L = keras.layers
    inp = keras.Input((24, 24, 1))
    x = L.ReLU(6.0)(L.BatchNormalization(momentum=0.9)(L.Conv2D(16, 3, padding="same", use_bias=False)(inp)))
    r = L.ReLU(6.0)(L.BatchNormalization(momentum=0.9)(L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)))
    r = L.BatchNormalization(momentum=0.9)(L.Conv2D(16, 1, use_bias=False)(r))
    x = L.Add()([x, r])
    s = L.Dense(16, activation="sigmoid")(L.Dense(8, activation="relu")(L.GlobalAveragePooling2D()(x)))
    x = L.Multiply()([x, L.Reshape((1, 1, 16))(s)])
    a = L.ReLU(6.0)(L.BatchNormalization(momentum=0.9)(L.Conv2D(16, 3, padding="same", use_bias=False)(x)))
    b = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu")(L.Concatenate()([a, b]))
    x = L.Dense(32, activation="relu")(L.GlobalAveragePooling2D()(x))
    out = L.Dense(4, activation=None if logits else "softmax")(x)
    model = keras.Model(inp, out, name="logits" if logits else "softmax")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=logits), metrics=["accuracy"])
    return model


def trained_bars(sz: Sizes = FULL, seed: int = 0):
    """The logits model trained on the bars, the same weights under a softmax head, and the data."""
    from edgekit import keras

    keras.utils.set_random_seed(seed)
    x, y = bars(sz.samples, 1)
    x_test, y_test = bars(sz.samples, 2)
    logits = bars_model(logits=True)
    logits.fit(x, y, batch_size=32, epochs=sz.epochs, verbose=0)
    softmax = bars_model(logits=False)
    softmax.set_weights(logits.get_weights())
    return {"logits": logits, "softmax": softmax}, (x, y, x_test, y_test)


def _loss(model, out, y) -> float:
    """Cross-entropy of outputs ``out`` (the model's logits or probabilities)."""
    from edgekit import keras
    from edgekit.core.graph import emits_probabilities

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not emits_probabilities(model))
    return float(loss(y, out).numpy())


def measure(model, steps: list, data, step_epochs: int, seed: int = 0) -> dict:
    """One row: the steps before QAT, then PTQ, the QAT model's start and 20 steps of QAT."""
    from edgekit.converters import export
    from edgekit.device.board.harness import load_interpreter, predict
    from edgekit.optimize import FineTune, QATConfig, Recipe, optimize, qat

    x, y, x_test, y_test = data
    if steps:
        doc = {"fine_tune": {"epochs": step_epochs, "learning_rate": 1e-3}, "steps": steps}
        before = optimize(model, Recipe.from_dict(doc), x, y, validation_data=(x_test, y_test), seed=seed)
        model = before.model
    keras_acc = float(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test))
    ptq = export(model, None, "int8", calibration=x, layer_report=False, seed=seed)  # (the file's own accuracy)
    lite = predict(load_interpreter(model_content=ptq.tflite), x_test)
    ptq_acc = float(np.mean(lite.argmax(-1) == y_test))
    wrapped = qat(model, QATConfig(), calibration=x)
    start_acc = float(np.mean(wrapped.predict(x_test, verbose=0).argmax(-1) == y_test))
    first = _loss(model, wrapped(x[:32], training=True).numpy(), y[:32])
    first_ptq = _loss(model, predict(load_interpreter(model_content=ptq.tflite), x[:32]), y[:32])
    recipe = Recipe.of([QATConfig()], FineTune(epochs=2, batch_size=32, learning_rate=1e-4))
    result = optimize(model, recipe, x, y, validation_data=(x_test, y_test), seed=seed)
    rep = export(
        result.model, None, "int8", calibration=x, validation_data=(x_test, y_test), seed=seed, layer_report=False
    )
    return {
        "before_qat": keras_acc,
        "ptq_int8": ptq_acc,
        "qat_start": start_acc,
        "first_step_loss": first,
        "ptq_first_batch_loss": first_ptq,
        "qat_int8": float(rep.accuracy),
        "fully_integer": bool(rep.fully_integer),
    }


def run(sz: Sizes, log=print) -> list:
    from edgekit.app.demo import OPTIMIZED, train_digits_model
    from edgekit.core.data import digits

    models, data = trained_bars(sz)
    rows = []
    for head in sz.heads:
        for name in sz.recipes:
            steps = RECIPES[name]
            t0 = time.perf_counter()
            row = dict(model=f"bars ({head})", recipe=name, **measure(models[head], steps, data, sz.step_epochs))
            rows.append(row)
            log(f"  {row['model']}: {name}: {time.perf_counter() - t0:.0f} s")
    if not sz.demo:
        smoke.leave_out(["demo"], ["demo"], "the bars' QAT row's code path on another model")
        return rows
    ds = digits()
    demo = train_digits_model(ds, epochs=sz.demo_epochs)
    demo.compile("adam", "sparse_categorical_crossentropy")
    qat_doc = next(v[2] for v in OPTIMIZED if v[0] == "QAT int8")
    assert qat_doc["steps"] == [{"technique": "qat"}]  # the demo's QAT is this row's
    rows.append(
        dict(model="demo", recipe="qat", **measure(demo, [], (ds.x_train, ds.y_train, ds.x_test, ds.y_test), 0))
    )
    return rows


def checks(row: dict) -> dict:
    return {
        "QAT int8 ≥ PTQ int8 − 1 point": row["qat_int8"] >= row["ptq_int8"] - 0.01 - 1e-9,
        # + 0.01: a model that fits its training batch (the demo: losses near 1e-4) has no 10% to speak of
        "first step's loss ≤ 1.1× PTQ's": row["first_step_loss"] <= 1.1 * row["ptq_first_batch_loss"] + 0.01,
        "fully integer": row["fully_integer"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/qat_targets.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="OUT.json", help="write the rows as JSON")
    smoke.add_flag(ap)
    args = ap.parse_args(argv)
    smoke.start(ap, args)
    from edgekit.core.results import table

    t0 = time.perf_counter()
    rows = run(SMOKE if args.smoke else FULL, log=lambda m: print(m, flush=True))
    body, ok = [], True
    for r in rows:
        c = checks(r)
        ok &= all(c.values())
        body.append(
            [
                r["model"],
                r["recipe"],
                f"{r['before_qat']:.3f}",
                f"{r['ptq_int8']:.3f}",
                f"{r['qat_start']:.3f}",
                f"{r['first_step_loss']:.3g} / {r['ptq_first_batch_loss']:.3g}",
                f"{r['qat_int8']:.3f}",
                "yes" if all(c.values()) else "NO: " + ", ".join(k for k, v in c.items() if not v),
            ]
        )
    print(
        table(
            ("model", "recipe", "before QAT", "PTQ int8", "QAT start", "first loss / PTQ's", "QAT int8", "ok"),
            body,
            markdown=True,
            align="llrrrrrl",
        )
    )
    print(f"{time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([dict(r, checks=checks(r)) for r in rows], f, indent=2)
    return smoke.exit_code(ok, args.smoke)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
