"""On-device learning, measured: a backbone trained on digits 0-4 learns 5-9 on the device.

    .venv/bin/python benchmarks/learning.py [--json OUT.json] [--overwrite]          (make bench-learning)
    .venv/bin/python benchmarks/learning.py --smoke [--json OUT.json]                  (tiny, in seconds)

The demo's model (MobileNetV2, digits preset, 5 classes) is trained on the digits 0-4 of the
training split and exported with ``--trainable head --classes 10`` (the head widened to ten
classes, the new ones at zero; the backbone int8). On the device — :class:`Learner`, numpy and
LiteRT only — the head learns from k = 5, 10 and 20 training examples of each of the digits 5-9
(label-balanced batches; once from those alone, once with k examples of each of 0-4 kept beside
them). Accuracy on the held-out 5-9 and 0-4 digits before and after, against: the same head trained
in Keras on the same features (the reference), a nearest-class-mean head on the same features, and
the whole Keras model fine-tuned on the same examples (the upper bound). Beside them: time per
train step against one inference, peak RSS of a training process against an inference process (the
plain int8 file, the harness), the trainable export's size against the plain int8 file's. Targets:
k = 20 within 1 point of the Keras-trained head and at least the nearest-class-mean head; training
RSS <= 1.5x inference's. Exits 1 when a target is missed (not in smoke mode).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import smoke  # benchmarks/smoke.py

KS = (5, 10, 20)


@dataclass(frozen=True)
class Sizes:
    model: dict
    epochs: int = 20  # the backbone's training on 0-4
    head_epochs: int = 60  # passes over the k examples per class, on the device and in Keras
    finetune_epochs: int = 30
    runs: int = 200


FULL = Sizes(model={})
SMOKE = Sizes(model=dict(smoke.DEMO_CONFIG), epochs=1, head_epochs=2, finetune_epochs=1, runs=5)


def _split(ds, k: int, classes, seed: int = 0):
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(ds.y_train == c), k, replace=False) for c in classes])
    return ds.x_train[idx], ds.y_train[idx]


def _ncm(train_f, train_y, test_f) -> np.ndarray:
    """Nearest class mean (cosine) over the classes in ``train_y``."""
    classes = np.unique(train_y)
    means = np.stack([train_f[train_y == c].mean(0) for c in classes])
    means /= np.linalg.norm(means, axis=1, keepdims=True) + 1e-12
    f = test_f / (np.linalg.norm(test_f, axis=1, keepdims=True) + 1e-12)
    return classes[np.argmax(f @ means.T, axis=1)]


def _keras_head(head_arrays, feats, y, sz: Sizes, batch: int, lr: float, seed: int):
    """The same head trained in Keras (Adam, the same batches' size and epochs) on ``feats``."""
    from edgekit import keras

    keras.utils.set_random_seed(seed)
    k, b = head_arrays
    inp = keras.Input((k.shape[0],))
    model = keras.Model(inp, keras.layers.Dense(k.shape[1], activation="softmax")(inp))
    model.layers[-1].set_weights([k, b])
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy")
    steps = max(1, -(-len(feats) // batch))
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    for _ in range(sz.head_epochs * steps):  # label-balanced batches, as the device draws them
        pick = np.array([rng.choice(by_class[c]) for c in rng.integers(0, len(by_class), batch)])
        model.train_on_batch(feats[pick], y[pick])
    return model


def _accuracies(pred, y) -> dict:
    new, old = y >= 5, y < 5
    return {"new": float(np.mean(pred[new] == y[new])), "old": float(np.mean(pred[old] == y[old]))}


def run(sz: Sizes, tmp: str, log) -> dict:
    from edgekit import keras
    from edgekit.converters import export
    from edgekit.converters.trainable import TrainableOptions, export_trainable, split_head
    from edgekit.core.data import digits
    from edgekit.device.board.learner import Learner
    from edgekit.models import create
    from edgekit.optimize import FineTune, fine_tune

    ds = digits()
    old = ds.y_train < 5
    keras.utils.set_random_seed(0)
    model = create("mobilenet_v2", preset="digits", classes=5, name="digits_0_4", **sz.model)
    fine_tune(model, ds.x_train[old], ds.y_train[old], FineTune(sz.epochs, 32, 2e-3, "cosine"))
    opts = TrainableOptions(trainable="head", classes=10, optimizer="adam", learning_rate=1e-3, batch_size=16)
    path = os.path.join(tmp, "head.tflite")
    rep = export_trainable(model, path, "int8", calibration=ds.x_train[old], options=opts)
    plain = export(model, os.path.join(tmp, "plain.tflite"), "int8", calibration=ds.x_train[old], layer_report=False)
    log(f"backbone trained on 0-4; head {rep.size_bytes:,} B + backbone {rep.backbone.size_bytes:,} B")
    head = split_head(model, "head", classes=10)
    backbone = keras.Model(model.inputs, head.boundary)
    test_f = Learner(path).features(ds.x_test)
    out = {"head_bytes": rep.size_bytes, "backbone_bytes": rep.backbone.size_bytes, "plain_bytes": plain.size_bytes}
    before = Learner(path)
    out["before"] = _accuracies(before.predict(ds.x_test).argmax(-1), ds.y_test)
    rows = []
    for k in KS:
        for replay in (False, True):
            x, y = _split(ds, k, range(0, 10) if replay else range(5, 10), seed=k)
            learner = Learner(path)
            learner.fit(x, y, epochs=sz.head_epochs, seed=0)
            device = _accuracies(learner.predict(ds.x_test).argmax(-1), ds.y_test)
            feats = learner.features(x)
            ref = _keras_head((head.kernels[-1], head.biases[-1]), feats, y, sz, 16, 1e-3, 0)
            reference = _accuracies(ref.predict(test_f, verbose=0).argmax(-1), ds.y_test)
            ncm = _accuracies(_ncm(feats, y, test_f), ds.y_test)
            full = _full_finetune(model, backbone, head, x, y, sz)
            upper = _accuracies(full.predict(ds.x_test, verbose=0).argmax(-1), ds.y_test)
            rows.append(dict(k=k, replay=replay, device=device, keras=reference, ncm=ncm, full=upper))
            log(f"k={k}{' + 0-4 replay' if replay else ''}: device {device}, keras head {reference}, "
                f"nearest mean {ncm}, full fine-tune {upper}")  # fmt: skip
    out["rows"] = rows
    out.update(_costs(path, plain.path, tmp, ds, sz))
    return out


def _full_finetune(model, backbone, head, x, y, sz: Sizes):
    """The whole model with the ten-class head, fine-tuned in Keras on the same examples."""
    from edgekit import keras
    from edgekit.optimize import FineTune, fine_tune

    keras.utils.set_random_seed(0)
    clone = keras.models.clone_model(backbone)
    clone.set_weights(backbone.get_weights())
    dense = keras.layers.Dense(10, activation="softmax")
    full = keras.Model(clone.inputs, dense(clone.outputs[0]))
    dense.set_weights([head.kernels[-1], head.biases[-1]])
    fine_tune(full, x, y, FineTune(sz.finetune_epochs, 16, 5e-4, "cosine"))
    return full


def _costs(head_path: str, plain_path: str, tmp: str, ds, sz: Sizes) -> dict:
    """Time per train step against one inference (backbone and head, in the same process), and peak
    RSS of a training process against an inference process (the plain int8 file in the harness), each
    measured in its own child by `edgekit bench` (--learn for the head)."""
    from edgekit.device import bench

    npz = os.path.join(tmp, "x.npz")
    np.savez(npz, x=ds.x_test[:64])
    (learned,) = bench([head_path], runs=sz.runs, warmup=10, inputs=npz, learn=True, progress=False)
    (infer,) = bench([plain_path], runs=sz.runs, warmup=10, inputs=npz, progress=False)
    if not (learned.ok and infer.ok):
        raise RuntimeError(f"the learning benchmark failed: {learned.error or infer.error}")
    return {
        "train_step_ms": learned.latency_ms["p50"],
        "inference_ms": learned.data["inference_ms"]["p50"],
        "plain_infer_ms": infer.latency_ms["p50"],
        "train_peak_mb": learned.peak_rss_mb,
        "infer_peak_mb": infer.peak_rss_mb,
    }


def report(r: dict) -> bool:
    from edgekit.core.results import table

    def pair(a):
        return f"{a['new']:.3f} / {a['old']:.3f}"

    print(f"before (5-9 / 0-4 accuracy): {pair(r['before'])}")
    print(
        table(
            ("k per class", "data", "on the device", "Keras head", "nearest class mean", "full fine-tune"),
            [
                [
                    str(x["k"]),
                    "5-9 + 0-4" if x["replay"] else "5-9",
                    pair(x["device"]),
                    pair(x["keras"]),
                    pair(x["ncm"]),
                    pair(x["full"]),
                ]
                for x in r["rows"]
            ],  # fmt: skip
            align="llllll",
        )
    )
    print(
        f"train step {r['train_step_ms']:.3f} ms = {r['train_step_ms'] / r['inference_ms']:.1f}x one inference "
        f"(backbone + head; the plain int8 file {r['plain_infer_ms']:.3f} ms); "
        f"peak RSS training {r['train_peak_mb']:.1f} MiB, "
        f"inference {r['infer_peak_mb']:.1f} MiB; files: head {r['head_bytes']:,} B + backbone "
        f"{r['backbone_bytes']:,} B against the plain int8 {r['plain_bytes']:,} B"
    )
    k20 = [x for x in r["rows"] if x["k"] == 20]
    ok = True
    for name, passed in (
        ("k=20: on the device within 1 point of the Keras head (5-9)",
         all(x["device"]["new"] >= x["keras"]["new"] - 0.01 for x in k20)),
        ("k=20: on the device >= nearest class mean (5-9)", all(x["device"]["new"] >= x["ncm"]["new"] for x in k20)),
        ("peak RSS training <= 1.5x inference", r["train_peak_mb"] <= 1.5 * r["infer_peak_mb"]),
    ):  # fmt: skip
        print(f"{'PASS' if passed else 'FAIL'} {name}")
        ok = ok and passed
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/learning.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="OUT.json", help="write the figures as JSON")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT.json if it exists")
    smoke.add_flag(ap)
    args = ap.parse_args(argv)
    tiny = smoke.start(ap, args)
    from edgekit.core.io import check_output, write_atomic

    if args.json:
        check_output(args.json, overwrite=args.overwrite, what="--json")
    with tempfile.TemporaryDirectory(prefix="edgekit-learning-") as tmp:
        r = run(SMOKE if tiny else FULL, tmp, lambda m: print(m, flush=True))
    ok = report(r)
    if args.json:
        write_atomic(args.json, json.dumps(r, indent=2) + "\n", overwrite=args.overwrite)
    return smoke.exit_code(ok, tiny)


if __name__ == "__main__":
    sys.exit(main())
