"""DistilBERT, reproduced small: a BERT-style encoder halved by layer dropping and distillation.

    .venv/bin/python benchmarks/distilbert.py [--docs docs/techniques.md] [--json OUT.json] [--overwrite]
                                                                                   (make bench-distilbert)
    .venv/bin/python benchmarks/distilbert.py --smoke [--json OUT.json]               (tiny, in seconds)

The corpus is the Python standard library's own source (no download): snippets of ``context``
tokens from eight packages (asyncio, email, idlelib, lib2to3, multiprocessing, tkinter, unittest,
xml; their test folders left out), every fifth file of each held out. The teacher (tf_keras: token
and position embeddings, ``layers`` post-LayerNorm encoder layers of width ``dim``, 4 heads, a
4·dim GELU feed-forward) is pre-trained with a masked-token objective (15% of the tokens: 80%
masked, 10% random, 10% kept) on the training snippets, then fine-tuned to name a snippet's
package. The student keeps every other encoder layer (``edgekit optimize --depth 0.5``: the
``depth`` technique) and is distilled from the teacher (soft targets and the kept layers' hidden
states); beside it the same student fine-tuned on the labels alone, and a student of the same
shape trained from scratch. The student is exported int8 and timed against the teacher's float32
file, side by side in one run (1 thread, XNNPACK). Targets (the paper's: 97% of the quality, 40%
smaller, 60% faster, here with int8 too): student int8 accuracy ≥ 97% of the teacher's float
accuracy, its file ≤ 0.2× and its p50 ≤ 0.4× the teacher's float32, and it beats the student
trained without the teacher. Exits 1 when a target is missed (not in smoke mode).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import smoke  # benchmarks/smoke.py

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tools"))

PACKAGES = ("asyncio", "email", "idlelib", "lib2to3", "multiprocessing", "tkinter", "unittest", "xml")
MASK = 1  # token ids: 0 unknown, 1 the mask, 2… the most frequent tokens of the training files


@dataclass(frozen=True)
class Sizes:
    dim: int = 128
    layers: int = 4
    heads: int = 4
    context: int = 64
    vocab: int = 2000
    per_class: int = 800  # training snippets per package (at most)
    test_per_class: int = 400
    mlm_epochs: int = 4
    epochs: int = 6  # the teacher's fine-tune, the students' fine-tunes and the scratch student's training
    seeds: int = 2  # of each student
    runs: int = 200
    warmup: int = 20


FULL = Sizes()
SMOKE = Sizes(dim=16, layers=2, heads=2, context=16, vocab=200, per_class=24, test_per_class=8, mlm_epochs=1,
              epochs=1, seeds=1, runs=5, warmup=1)  # fmt: skip


def corpus(sz: Sizes):
    """(x_train, y_train, x_test, y_test): token windows and the package each comes from."""
    root = sysconfig.get_paths()["stdlib"]
    word = re.compile(r"[A-Za-z_]\w*|\d+|[^\w\s]")
    files = {"train": [], "test": []}
    for label, package in enumerate(PACKAGES):
        paths = sorted(
            os.path.join(d, f)
            for d, dirs, names in os.walk(os.path.join(root, package))
            if not re.search(r"(^|/)(idle_)?tests?(/|$)", os.path.relpath(d, root))
            for f in names
            if f.endswith(".py")
        )
        if not paths:
            raise SystemExit(f"benchmarks/distilbert.py: this Python has no standard-library package {package!r}")
        for i, path in enumerate(paths):
            with open(path, encoding="utf-8", errors="replace") as f:
                files["test" if i % 5 == 4 else "train"].append((label, word.findall(f.read())))
    counts = Counter(t for _, tokens in files["train"] for t in tokens)
    ids = {t: i + 2 for i, (t, _) in enumerate(counts.most_common(sz.vocab - 2))}
    rng = np.random.default_rng(0)
    out = []
    for split, cap in (("train", sz.per_class), ("test", sz.test_per_class)):
        xs, ys = [], []
        for label in range(len(PACKAGES)):
            stream = np.array([ids.get(t, 0) for lab, tokens in files[split] if lab == label for t in tokens], np.int32)
            w = stream[: len(stream) // sz.context * sz.context].reshape(-1, sz.context)
            w = w[rng.permutation(len(w))[:cap]]
            xs.append(w)
            ys.append(np.full(len(w), label, np.int64))
        order = rng.permutation(sum(len(w) for w in xs))
        out += [np.concatenate(xs)[order], np.concatenate(ys)[order]]
    return tuple(out)


def encoder(sz: Sizes, layers: int, name: str):
    """(classifier, masked-token model) sharing one encoder of ``layers`` layers."""
    from edgekit import keras

    L = keras.layers
    tokens = keras.Input((sz.context,), dtype="int32", name="tokens")
    x = L.Embedding(sz.vocab, sz.dim, name="token_embedding")(tokens)
    x = x + L.Embedding(sz.context, sz.dim, name="position_embedding")(np.arange(sz.context))
    for i in range(layers):
        a = L.MultiHeadAttention(sz.heads, sz.dim // sz.heads, name=f"layer{i}_attention")(x, x)
        x = L.LayerNormalization(epsilon=1e-6, name=f"layer{i}_attention_norm")(L.Add(name=f"layer{i}_add1")([x, a]))
        f = L.Dense(4 * sz.dim, activation="gelu", name=f"layer{i}_ffn_in")(x)
        f = L.Dense(sz.dim, name=f"layer{i}_ffn_out")(f)
        x = L.LayerNormalization(epsilon=1e-6, name=f"layer{i}_ffn_norm")(L.Add(name=f"layer{i}_add2")([x, f]))
    pooled = L.GlobalAveragePooling1D(name="pool")(x)
    classifier = keras.Model(tokens, L.Dense(len(PACKAGES), activation="softmax", name="package")(pooled), name=name)
    mlm = keras.Model(tokens, L.Dense(sz.vocab, name="mlm_logits")(x), name=f"{name}_mlm")
    return classifier, mlm


def pretrain(mlm, x, sz: Sizes, log) -> None:
    """Masked-token training: a fresh 15% of the positions each epoch, the loss on those alone."""
    from edgekit import keras

    rng = np.random.default_rng(1)
    mlm.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for epoch in range(sz.mlm_epochs):
        picked = rng.random(x.shape) < 0.15
        r = rng.random(x.shape)
        inp = np.where(picked & (r < 0.8), MASK, x)
        inp = np.where(picked & (r >= 0.8) & (r < 0.9), rng.integers(2, sz.vocab, x.shape), inp).astype(np.int32)
        h = mlm.fit(inp, x, sample_weight=picked.astype(np.float32), batch_size=32, epochs=1, verbose=0)
        log(f"  masked-token epoch {epoch + 1}/{sz.mlm_epochs}: loss {h.history['loss'][-1]:.3f}")


def run(sz: Sizes, log) -> dict:
    from edgekit import keras
    from edgekit.converters import export
    from edgekit.device import bench
    from edgekit.optimize import DepthConfig, FineTune, Recipe, accuracy, fine_tune, optimize

    x, y, xt, yt = corpus(sz)
    log(f"corpus: {len(x):,} training and {len(xt):,} test snippets of {sz.context} tokens, {len(PACKAGES)} packages")
    keras.utils.set_random_seed(0)
    teacher, mlm = encoder(sz, sz.layers, "teacher")
    pretrain(mlm, x, sz, log)
    ft = FineTune(sz.epochs, 32, 5e-4, "cosine")
    fine_tune(teacher, x, y, ft, seed=0)
    t_acc = accuracy(teacher, xt, yt)
    log(f"teacher ({sz.layers} layers, {teacher.count_params():,} params): test accuracy {t_acc:.4f}")
    out = {"teacher_accuracy": t_acc, "teacher_params": teacher.count_params(), "layers": sz.layers, "seeds": sz.seeds}
    acc, student = {"distilled": [], "labels_only": [], "scratch": []}, None
    for seed in range(sz.seeds):
        for key, config in (("distilled", DepthConfig(0.5)), ("labels_only", DepthConfig(0.5, distill=False))):
            res = optimize(teacher, Recipe.of([config], ft), x, y, validation_data=(xt, yt), seed=seed, allow_drop=True)
            acc[key].append(accuracy(res.model, xt, yt))
            if key == "distilled" and seed == 0:
                student = res.model  # the one exported and timed
        keras.utils.set_random_seed(seed)
        scratch, _ = encoder(sz, len(res.steps[0].details.kept), "scratch")
        fine_tune(scratch, x, y, FineTune(sz.epochs, 32, 1e-3, "cosine"), seed=seed)
        acc["scratch"].append(accuracy(scratch, xt, yt))
        log(f"students, seed {seed}: " + ", ".join(f"{k.replace('_', ' ')} {v[-1]:.4f}" for k, v in acc.items()))
    out.update({f"{k}_accuracy": float(np.mean(v)) for k, v in acc.items()})
    out.update(student_params=student.count_params(), student_layers=len(res.steps[0].details.kept))
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(calibration=x, validation_data=(xt, yt), layer_report=False, verify_samples=len(xt))
        files = {
            "teacher": export(teacher, os.path.join(tmp, "teacher.tflite"), "float32", **common),
            "int8": export(student, os.path.join(tmp, "int8.tflite"), "int8", **common),
            "dynamic": export(student, os.path.join(tmp, "dynamic.tflite"), "dynamic", **common),
            "student_float32": export(student, os.path.join(tmp, "float32.tflite"), "float32", **common),
        }
        npz = os.path.join(tmp, "test.npz")
        np.savez(npz, x=xt, y=yt)
        timed = bench([r.path for r in files.values()], runs=sz.runs, warmup=sz.warmup, inputs=npz)
    for (key, rep), r in zip(files.items(), timed):
        out[f"{key}_bytes"], out[f"{key}_p50_ms"], out[f"{key}_file_accuracy"] = (
            rep.size_bytes,
            r.latency_ms["p50"],
            rep.accuracy,
        )
    out["int8_fully_integer"] = files["int8"].fully_integer
    return out


def targets(r: dict) -> list:
    """The issue's targets, for the fully integer student and for the int8-weight (dynamic-range) one."""
    t = r["teacher_file_accuracy"]  # on the same verification samples as the students' files
    out = []
    for key, what in (("int8", "int8 (fully integer)"), ("dynamic", "int8 weights (dynamic range)")):
        out += [
            (f"student {what}: accuracy >= 97% of the teacher's float", r[f"{key}_file_accuracy"] >= 0.97 * t),
            (f"student {what}: file <= 0.2x the teacher's float32", r[f"{key}_bytes"] <= 0.2 * r["teacher_bytes"]),
            (f"student {what}: p50 <= 0.4x the teacher's float32", r[f"{key}_p50_ms"] <= 0.4 * r["teacher_p50_ms"]),
        ]
    out.append(
        (
            "the distilled student beats the same student trained without the teacher",
            r["distilled_accuracy"] > max(r["labels_only_accuracy"], r["scratch_accuracy"]),
        )
    )
    return out


def markdown(r: dict, seconds: float) -> str:
    t_b, t_ms, t_acc = r["teacher_bytes"], r["teacher_p50_ms"], r["teacher_file_accuracy"]

    def file_row(name, key, what):
        a, b, ms = r[f"{key}_file_accuracy"], r[f"{key}_bytes"], r[f"{key}_p50_ms"]
        return (name, what, f"{a:.4f} ({a / t_acc:.1%})", f"{b / 1e6:.2f} MB ({b / t_b:.2f}×)",
                f"{ms:.2f} ms ({ms / t_ms:.2f}×)")  # fmt: skip

    seeds = f"mean of {r['seeds']} seeds" if r["seeds"] > 1 else "1 seed"
    rows = [
        ("teacher", f"{r['layers']} layers, {r['teacher_params']:,} params, float32", f"{t_acc:.4f}",
         f"{t_b / 1e6:.2f} MB", f"{t_ms:.2f} ms"),
        file_row("student", "student_float32",
                 f"{r['student_layers']} layers (every other), {r['student_params']:,} params, distilled; float32"),
        file_row("student", "dynamic", "the same, int8 weights (`--quant dynamic`)"),
        file_row("student", "int8", "the same, fully integer (`--quant int8`)"),
        ("student, distilled", f"Keras, {seeds}", f"{r['distilled_accuracy']:.4f}", "", ""),
        ("student, labels only", f"the same student without the teacher, Keras, {seeds}",
         f"{r['labels_only_accuracy']:.4f}", "", ""),
        ("student from scratch", f"the same shape, random weights, labels only, Keras, {seeds}",
         f"{r['scratch_accuracy']:.4f}", "", ""),
    ]  # fmt: skip
    lines = ["| model | what | accuracy (of the teacher's) | size | p50 |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    met = "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in targets(r))
    lines += ["", f"Targets: {met}.", "", f"Measured by `make bench-distilbert` in {seconds / 60:.0f} min on this "
              f"machine ({os.cpu_count()} cores; p50: 1 thread, XNNPACK). The paper: DistilBERT keeps 97% of "
              "BERT-base's quality, 0.6× the size, 0.6× the time (float)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from edgekit.core.io import check_output, write_atomic

    ap = argparse.ArgumentParser(prog="benchmarks/distilbert.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", metavar="FILE.md", help="write the table between its distilbert markers")
    ap.add_argument("--json", metavar="OUT.json", help="write the figures as JSON")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT.json if it exists")
    smoke.add_flag(ap)
    args = ap.parse_args(argv)
    tiny = smoke.start(ap, args, "docs")
    if tiny:
        args.docs = smoke.copy("docs/techniques.md")
    if args.json:
        check_output(args.json, overwrite=args.overwrite, what="--json")
    t0 = time.perf_counter()
    r = run(SMOKE if tiny else FULL, lambda m: print(m, flush=True))
    seconds = time.perf_counter() - t0
    text = markdown(r, seconds)
    print(text)
    ok = True
    for name, passed in targets(r):
        print(f"{'PASS' if passed else 'FAIL'} {name}")
        ok = ok and passed
    if args.json:
        write_atomic(args.json, json.dumps(dict(r, seconds=seconds), indent=2) + "\n", overwrite=args.overwrite)
    if args.docs:
        from readme import replace  # tools/readme.py

        with open(args.docs, encoding="utf-8") as f:
            page = f.read()
        write_atomic(args.docs, replace(page, "distilbert", text), overwrite=True)
        print(f"updated the DistilBERT table in {args.docs}")
    return smoke.exit_code(ok, tiny)


if __name__ == "__main__":
    sys.exit(main())
