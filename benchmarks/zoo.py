"""The models people actually have, through every verb: keras.applications models (tf_keras and
Keras 3, weights=None, small inputs), a keras.io-style Sequential convnet and an LSTM-free text
classifier, sequence models, and models of other tasks (:data:`TASKS`: a regression CNN, a dense
anomaly-detection autoencoder, a classifier as a SavedModel without Keras metadata, written by
``tf.saved_model.save`` (tf_keras) or ``model.export()`` (Keras 3), a two-input classifier and a
two-output model (class + regression)). Each verb either works —
checked from the artifact — or ends in a one-line error naming the layer and the fix; an internal
error is a failure of edgekit.

    .venv/bin/python benchmarks/zoo.py [--models NAME,...] [--flavours tf_keras,keras3] [--verbs ...]
                                       [--docs docs/models.md] [--json OUT.json]      (make bench-zoo)
    .venv/bin/python benchmarks/zoo.py --models DenseNet121 --verbs qat --update benchmarks/zoo.json \
                                       --docs docs/models.md       (re-measure some cells, keep the rest)
    .venv/bin/python benchmarks/zoo.py --smoke [--json OUT.json]       (a few cells, every verb and flavour)

Verbs and what "works" means:
- export: int8 export, verified, fully integer;
- prune: 50% magnitude pruning (2 epochs on 64 random samples) reaches 0.5 ± 0.02 zeros in every
  pruned kernel;
- cluster: 16 clusters leave at most 16 distinct values per clustered kernel;
- qat: quantization-aware training exports fully int8;
- channels: channel pruning at ratio 0 rebuilds the model with outputs within 1e-5, at ratio 0.5
  gives a valid model with fewer MACs.

``--smoke``: the cells of :data:`SMOKE_CELLS` (unless --models/--flavours/--verbs pick others), merged
into a copy of benchmarks/zoo.json (as ``--update`` does) and written into a copy of docs/models.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import numpy as np
import smoke  # benchmarks/smoke.py

from edgekit.core.samples import rows, take

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tools"))

APPLICATIONS = (
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "MobileNetV3Large",
    "EfficientNetB0",
    "EfficientNetV2B0",
    "ResNet50",
    "DenseNet121",
    "NASNetMobile",
    "ConvNeXtTiny",
)
SEQUENCES = ("LSTM", "GRU", "BidirectionalLSTM", "Conv1DNet", "TransformerClassifier", "TiedTransformerLM")
TASKS = ("RegressionCNN", "Autoencoder", "SavedModelClassifier", "TwoInputs", "TwoOutputs")
MODELS = APPLICATIONS + ("SequentialConvnet", "TextClassifier") + SEQUENCES + TASKS
VERBS = ("export", "prune", "cluster", "qat", "channels")
FLAVOURS = ("tf_keras", "keras3")
# --smoke: every verb on the small models, one flavour each, and one keras.applications cell (its
# cheapest: 4 s; an application's five verbs take a minute)
SMOKE_CELLS = (
    [("SequentialConvnet", "tf_keras", v) for v in VERBS]
    + [("TextClassifier", "keras3", v) for v in VERBS]
    + [("MobileNet", "tf_keras", "channels")]
    + [("SavedModelClassifier", "keras3", "export"), ("Autoencoder", "tf_keras", "prune")]
)


def build(name: str, flavour: str, size: int = 32):
    """Model ``name`` in ``flavour`` (``tf_keras`` or ``keras3``), random weights, 10 classes."""
    if flavour == "keras3":
        import keras
    else:
        from edgekit import keras
    L = keras.layers
    if name == "SequentialConvnet":  # keras.io's MNIST convnet
        return keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                L.Conv2D(32, 3, activation="relu"),
                L.MaxPooling2D(),
                L.Conv2D(64, 3, activation="relu"),
                L.MaxPooling2D(),
                L.Flatten(),
                L.Dropout(0.5),
                L.Dense(10, activation="softmax"),
            ],
            name="convnet",
        )
    if name == "TextClassifier":  # token ids → embedding → 1-D convs → pooled → classes, no recurrence
        tokens = keras.Input((64,), dtype="int32")
        x = L.Embedding(2000, 32)(tokens)
        x = L.Conv1D(32, 5, activation="relu")(x)
        x = L.GlobalMaxPooling1D()(x)
        x = L.Dense(32, activation="relu")(x)
        return keras.Model(tokens, L.Dense(4, activation="softmax")(x), name="text_classifier")
    if name in SEQUENCES:
        return _sequence_model(name, keras)
    if name in TASKS:
        return _task_model(name, keras, flavour)
    return getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None, classes=10)


def _sequence_model(name: str, keras):
    """A watch's or a phone assistant's model: recurrent and 1-D conv nets on 64 x 3 sensor windows,
    a transformer classifier on 32 token ids, a transformer language model whose output projection
    is its token embedding (tied) over a 2,000-token vocabulary."""
    L = keras.layers
    if name in ("TransformerClassifier", "TiedTransformerLM"):
        tokens = keras.Input((32,), dtype="int32")
        embed = L.Embedding(2000, 32, name="tokens")
        x = embed(tokens)
        x = L.LayerNormalization()(x + L.MultiHeadAttention(4, 8)(x, x))
        x = L.LayerNormalization()(x + L.Dense(32)(L.Dense(64, activation="gelu")(x)))
        if name == "TransformerClassifier":
            return keras.Model(tokens, L.Dense(10, activation="softmax")(L.GlobalAveragePooling1D()(x)), name=name)
        from edgekit.models import tie  # the output projection becomes the token embedding's matrix

        lm = keras.Model(tokens, L.Dense(2000, activation="softmax", use_bias=False, name="logits")(x), name=name)
        return tie(lm, "tokens", "logits")
    window = keras.Input((64, 3))
    if name == "LSTM":
        h = L.LSTM(32)(window)
    elif name == "GRU":
        h = L.GRU(32)(window)
    elif name == "BidirectionalLSTM":
        h = L.Bidirectional(L.LSTM(16))(window)
    else:  # Conv1DNet
        h = L.Conv1D(16, 5, activation="relu")(window)
        h = L.MaxPooling1D()(h)
        h = L.Conv1D(32, 5, activation="relu")(h)
        h = L.GlobalAveragePooling1D()(h)
    return keras.Model(window, L.Dense(10, activation="softmax")(L.Dense(32, activation="relu")(h)), name=name)


def _task_model(name: str, keras, flavour: str):
    """A watch's heart-rate estimate (Conv1D regression on 64 x 3 windows, compiled with MSE), a
    machine monitor's autoencoder (64 → 16 → 4 → 16 → 64, MSE), a classifier shipped as a SavedModel
    (loaded as edgekit's export takes it: :class:`edgekit.core.savedmodel.SavedModelGraph`)."""
    import tempfile

    L = keras.layers
    if name == "RegressionCNN":
        window = keras.Input((64, 3))
        h = L.GlobalAveragePooling1D()(L.Conv1D(32, 5, activation="relu")(L.Conv1D(16, 5, activation="relu")(window)))
        model = keras.Model(window, L.Dense(1)(L.Dense(16, activation="relu")(h)), name=name)
    elif name == "Autoencoder":
        inp = keras.Input((64,))
        h = L.Dense(4)(L.Dense(16, activation="relu")(inp))
        model = keras.Model(inp, L.Dense(64)(L.Dense(16, activation="relu")(h)), name=name)
    elif name == "TwoInputs":  # an accelerometer window and metadata features, one class head
        accel, meta = keras.Input((32, 3), name="accel"), keras.Input((4,), name="meta")
        h = L.GlobalAveragePooling1D()(L.Conv1D(16, 5, activation="relu")(accel))
        h = L.Dense(16, activation="relu")(L.Concatenate()([h, meta]))
        model = keras.Model([accel, meta], L.Dense(10, activation="softmax")(h), name=name)
        model.compile("adam", "sparse_categorical_crossentropy")
        return model
    elif name == "TwoOutputs":  # a class head and a regression head on one window
        window = keras.Input((64, 3), name="window")
        h = L.GlobalAveragePooling1D()(L.Conv1D(16, 5, activation="relu")(window))
        h = L.Dense(16, activation="relu")(h)
        heads = [L.Dense(10, activation="softmax", name="activity")(h), L.Dense(1, name="rate")(h)]
        model = keras.Model(window, heads, name=name)
        model.compile("adam", {"activity": "sparse_categorical_crossentropy", "rate": "mse"})
        return model
    else:
        model = _sequence_model("Conv1DNet", keras)
        import atexit
        import shutil

        root = tempfile.mkdtemp(prefix="edgekit-zoo-")
        atexit.register(shutil.rmtree, root, True)  # the converter reads the directory when it runs
        path = os.path.join(root, "saved")
        if flavour == "keras3":
            model.export(path, verbose=False)
        else:
            from edgekit.core.compat import tf

            tf.saved_model.save(model, path)
        from edgekit.core.saving import load_model

        return load_model(path)
    model.compile("adam", "mse")
    return model


def sample(model, n: int, seed: int = 0):
    """Random inputs for ``model`` (a dict for several) and labels or targets for each output's task
    (a dict for several outputs)."""
    from edgekit.core.bridge import sample_inputs
    from edgekit.core.samples import output_names
    from edgekit.core.savedmodel import is_savedmodel_graph
    from edgekit.core.task import Task, resolve_each

    rng = np.random.default_rng(seed)
    if is_savedmodel_graph(model):
        x = rng.random((n,) + tuple(model.input_shape[1:]), np.float32)
    else:
        x = sample_inputs(model, n, seed)
    if not isinstance(x, dict) and np.issubdtype(x.dtype, np.integer):
        x = x % 2000
    ys = {}
    for name, out, r in zip(output_names(model), model.outputs, resolve_each(model)):
        if r.task is Task.REGRESSION:
            ys[name] = rng.normal(size=(n, 1)).astype(np.float32)
        elif r.task is Task.CLASSIFICATION:  # a label per sample, or per position of a language model
            ys[name] = rng.integers(0, int(out.shape[-1]), (n,) + tuple(int(d) for d in out.shape[1:-1]))
    if len(model.outputs) > 1:
        return x, ys
    return x, next(iter(ys.values()), None)


def _export(model, x, y):
    from edgekit.converters import export

    rep = export(
        model, None, "int8", calibration=x, calib_samples=rows(x), validation_data=(x, None), layer_report=False
    )
    figure = f"agreement {rep.agreement:.2f}" if rep.agreement is not None else f"verified as {rep.task}"
    return rep.fully_integer, f"fully int8, {rep.size_bytes:,} B, {figure}, cosine {rep.cosine:.4f}"


def _prune(model, x, y):
    from edgekit.optimize import FineTune, PruneConfig, Recipe, optimize

    result = optimize(model, Recipe.of([PruneConfig(sparsity=0.5)], FineTune(2, 32, 1e-4)), x, y)
    pruned = [l for l in result.steps[0].weights.layers if l.zeros > 0]
    ok = bool(pruned) and all(abs(l.zeros - 0.5) <= 0.02 for l in pruned)
    return ok, f"{len(pruned)} kernels at {min(l.zeros for l in pruned):.2f}-{max(l.zeros for l in pruned):.2f} zeros"


def _cluster(model, x, y):
    from edgekit.optimize import ClusterConfig, FineTune, Recipe, optimize

    result = optimize(model, Recipe.of([ClusterConfig(clusters=16)], FineTune(1, 32, 1e-5)), x, y)
    layers = [l for l in result.steps[0].weights.layers if l.params > 16]
    clustered = [l for l in layers if l.unique <= 16]
    return bool(clustered), f"{len(clustered)}/{len(layers)} kernels at <= 16 values"


def _qat(model, x, y):
    from edgekit.converters import export
    from edgekit.optimize import FineTune, QATConfig, Recipe, optimize

    result = optimize(model, Recipe.of([QATConfig()], FineTune(1, 32, 1e-5)), x, y)
    rep = export(
        result.model, None, "int8", calibration=x, calib_samples=rows(x), validation_data=(x, None), layer_report=False
    )
    figure = f"agreement with the QAT model {rep.agreement:.2f}" if rep.agreement is not None else rep.task
    return rep.fully_integer, f"QAT export fully int8, {figure}, cosine {rep.cosine:.4f}"


def _channels(model, x, y):
    from edgekit.core.saving import as_tf_keras
    from edgekit.optimize import ChannelPruneConfig, channel_prune_report

    tfk = as_tf_keras(model)
    same = channel_prune_report(tfk, ChannelPruneConfig(ratio=0.0))
    four = take(x, slice(0, 4))
    outs = [m.predict(four, verbose=0) for m in (same.model, tfk)]
    outs = [o if isinstance(o, list) else [o] for o in outs]  # several outputs: each compared
    delta = max(float(np.max(np.abs(a - b))) for a, b in zip(*outs))
    half = channel_prune_report(tfk, ChannelPruneConfig(ratio=0.5))
    ok = delta <= 1e-5 and half.macs[1] < half.macs[0]
    return ok, f"ratio 0: max |Δ| {delta:.1e}; ratio 0.5: MACs {half.macs[1] / half.macs[0]:.2f}×"


CHECKS = {"export": _export, "prune": _prune, "cluster": _cluster, "qat": _qat, "channels": _channels}


def run_one(name: str, flavour: str, verb: str, size: int = 32) -> dict:
    """One cell: ``{"status": "ok" | "failed" | "error" | "internal", "detail": ...}``."""
    from edgekit.core.errors import EdgekitError

    t0 = time.perf_counter()
    try:
        model = build(name, flavour, size)
        x, y = sample(model, 64)
        ok, detail = CHECKS[verb](model, x, y)
        status = "ok" if ok else "failed"
    except EdgekitError as exc:
        status, detail = "error", " ".join(str(exc).split())[:240]
    except Exception as exc:  # an internal error: what the zoo exists to find
        status, detail = "internal", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        traceback.print_exc()
    return {
        "model": name,
        "flavour": flavour,
        "verb": verb,
        "status": status,
        "detail": detail,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def markdown(rows) -> str:
    """The zoo table: one row per model and flavour, one column per verb."""
    from edgekit.core.results import table

    marks = {"ok": "ok", "failed": "FAILED", "error": "clear error", "internal": "INTERNAL"}
    cells = {}
    for r in rows:
        cells.setdefault((r["model"], r["flavour"]), {})[r["verb"]] = marks[r["status"]]
    verbs = [v for v in VERBS if any(r["verb"] == v for r in rows)]
    body = [[m, f, *[c.get(v, "-") for v in verbs]] for (m, f), c in cells.items()]
    per_verb = []
    for v in verbs:
        done = [r for r in rows if r["verb"] == v]
        per_verb.append(f"{v} {sum(r['status'] == 'ok' for r in done)}/{len(done)}")
    return (
        table(["model", "flavour", *verbs], body, markdown=True, align="ll" + "l" * len(verbs))
        + f"\n\nWorks per verb: {', '.join(per_verb)}; internal errors: "
        f"{sum(r['status'] == 'internal' for r in rows)}.\n"
    )


def _cells(ap, args) -> list:
    """The (model, flavour, verb) cells to measure; in smoke mode :data:`SMOKE_CELLS` (unless picked)
    and the copies of zoo.json and docs/models.md to write."""
    picked = any(getattr(args, k) is not None for k in ("models", "flavours", "verbs"))
    if smoke.start(ap, args, "docs", "update"):
        args.update, args.docs = smoke.copy("benchmarks/zoo.json"), smoke.copy("docs/models.md")
        if not picked:
            return list(SMOKE_CELLS)
    models, flavours, verbs = (
        (getattr(args, k) or ",".join(d)).split(",")
        for k, d in (("models", MODELS), ("flavours", FLAVOURS), ("verbs", VERBS))
    )
    return [(m, f, v) for m in models for f in flavours for v in verbs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/zoo.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated (default: all of MODELS)")
    ap.add_argument("--flavours", help=f"comma-separated (default {','.join(FLAVOURS)})")
    ap.add_argument("--verbs", help=f"comma-separated (default {','.join(VERBS)})")
    ap.add_argument("--size", type=int, default=32, help="input height and width of the applications (default 32)")
    ap.add_argument("--docs", help="write the table between the zoo markers of this Markdown file")
    ap.add_argument("--json", help="write every cell as JSON")
    ap.add_argument(
        "--update",
        metavar="JSON",
        help="start from the cells of an earlier run's JSON, re-measure "
        "the selected ones and write the merged cells back to it",
    )
    smoke.add_flag(ap)
    args = ap.parse_args(argv)
    cells = _cells(ap, args)
    earlier = []
    if args.update:
        with open(args.update) as f:
            earlier = json.load(f)
        args.json = args.json or args.update
    rows = []
    for name, flavour, verb in cells:
        rows.append(run_one(name, flavour, verb, args.size))
        r = rows[-1]
        print(f"{name:18} {flavour:8} {verb:8} {r['status']:8} {r['seconds']:6.1f}s  {r['detail']}", flush=True)
    fresh = {(r["model"], r["flavour"], r["verb"]) for r in rows}
    rows = [r for r in earlier if (r["model"], r["flavour"], r["verb"]) not in fresh] + rows
    order = {(m, f, v): i for i, (m, f, v) in enumerate((m, f, v) for m in MODELS for f in FLAVOURS for v in VERBS)}
    rows.sort(key=lambda r: order.get((r["model"], r["flavour"], r["verb"]), len(order)))
    text = markdown(rows)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    if args.docs:
        from readme import replace  # tools/readme.py

        with open(args.docs, encoding="utf-8") as f:
            doc = f.read()
        with open(args.docs, "w", encoding="utf-8") as f:
            f.write(replace(doc, "zoo", text))
    internal = [r for r in rows if r["status"] == "internal"]
    return 1 if internal else 0


if __name__ == "__main__":
    sys.exit(main())
