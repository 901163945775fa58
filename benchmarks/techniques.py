"""The technique table: what each optimization technique buys, every number measured in one run.

    .venv/bin/python benchmarks/techniques.py [--model runs/demo/model.keras] [--docs docs/techniques.md]
                                              [--json OUT.json] [--overwrite]       (make bench-techniques)

Each row runs the technique against its baseline on this machine: weight tying on a 30,000 × 500
language model (and a small one trained on the Python standard library's source, perplexity),
pruning on VGG-16 (weights=None: random weights, so only sizes mean something) and on the demo
model (accuracy), distillation of the demo model into a student with under a quarter of its
params (against the same student trained without a teacher, three seeds each), low-rank
factorization, int8 quantization, and efficient architectures against their standard twins.
Targets are checked; the command exits 1 if one is missed. ``--docs`` writes the Markdown table
between the page's ``<!-- techniques:begin -->`` / ``<!-- techniques:end -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tools"))

MB = 1e6


@dataclass
class Row:
    technique: str
    example: str
    measured: str
    target: str = ""
    ok: Optional[bool] = None  # None: no target


def tied_lm_sizes(vocab: int = 30000, dim: int = 500) -> dict:
    """Params and float32/int8 ``.tflite`` bytes of the tied and untied LM (one block, kernel 1:
    30.25M vs 15.25M params at 30,000 × 500), and what weight sharing merged."""
    from edgekit.converters import export
    from edgekit.models import tied_lm

    x = np.random.default_rng(0).integers(0, vocab, (64, 32))
    out = {"merged_bytes": 0}
    for tied in (True, False):
        model = tied_lm(vocab, dim, context=32, layers=1, kernel=1, tied=tied)
        out[tied, "params"] = model.count_params()
        for mode in ("float32", "int8"):
            rep = export(
                model, None, mode, calibration=x, calib_samples=64, validation_data=(x[:16], None), layer_report=False
            )
            out[tied, mode] = rep.size_bytes
            out["merged_bytes"] += sum(s["bytes"] for s in rep.shared_weights) if tied else 0
    return out


def _tying(log) -> List[Row]:
    from edgekit.core.compat import keras
    from edgekit.core.data import python_source
    from edgekit.models import create
    from edgekit.models.language import perplexity
    from edgekit.optimize import FineTune, fine_tune

    s = tied_lm_sizes()
    log("  tied LM 30000x500 converted")
    ds = python_source()
    ppl = {}
    for tied in (True, False):
        keras.utils.set_random_seed(0)
        model = create("tied_lm", preset="digits", tied=tied)
        fine_tune(model, ds.x_train, ds.y_train, FineTune(4, 64, 2e-3), metrics=())
        ppl[tied] = (model.count_params(), perplexity(model, ds.x_test, ds.y_test))
    ratio = s[True, "int8"] / s[False, "int8"]
    return [
        Row(
            "parameter sharing (weight tying)",
            "LM, vocab 30,000, dim 500",
            f"params {s[False, 'params'] / MB:.2f}M → {s[True, 'params'] / MB:.2f}M; float32 "
            f"{s[False, 'float32'] / MB:.1f} → {s[True, 'float32'] / MB:.1f} MB; int8 {s[False, 'int8'] / MB:.1f} → "
            f"{s[True, 'int8'] / MB:.1f} MB ({ratio:.3f}×)",
            "int8 ≤ 0.55× untied",
            ratio <= 0.55,
        ),
        Row(
            "parameter sharing (weight tying)",
            "LM, vocab 512, dim 64, 4 epochs on the Python stdlib's source",
            f"params {ppl[False][0]:,} → {ppl[True][0]:,}; test perplexity {ppl[False][1]:.1f} → {ppl[True][1]:.1f}",
        ),
    ]


def _vgg_pruning(tmp: str, log) -> List[Row]:
    from edgekit.converters import convert, export, inspect_tflite
    from edgekit.core.compat import keras
    from edgekit.models import create
    from edgekit.optimize import PruneConfig, prune, strip, weight_report

    model = create("vgg16")
    x = np.random.default_rng(0).random((4, 224, 224, 3), dtype=np.float32)
    dense = export(model, os.path.join(tmp, "vgg16.tflite"), "float32", validation_data=(x[:1], None))
    log("  VGG-16 float32 converted")
    pruned = prune(model, PruneConfig(sparsity=0.9, steps=2, ramp_fraction=0.5))
    del model
    pruned.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")  # masks only, weights kept
    pruned.fit(x, np.zeros(4, np.int64), batch_size=2, epochs=1, verbose=0)
    pruned = strip(pruned)
    zeros = weight_report(pruned).zeros
    path = os.path.join(tmp, "vgg16_sparse_int8.tflite")
    with open(path, "wb") as f:  # int8 + sparse has no XNNPACK kernel: the size is the point here
        f.write(convert(pruned, "int8", x, calib_samples=4, sparse=True))
    size = inspect_tflite(path).size_bytes
    log("  VGG-16 90% sparse int8 converted")
    from edgekit.device import load_interpreter, predict

    interp = load_interpreter(path, xnnpack=False)  # XNNPACK has no sparse int8 kernel
    t0 = time.perf_counter()
    out = predict(interp, x[:1])
    runs = (
        f"one inference {time.perf_counter() - t0:.1f} s on LiteRT's reference kernels"
        if np.all(np.isfinite(out))
        else "did not run"
    )
    return [
        Row(
            "pruning",
            "VGG-16 (weights=None), 90% sparse + int8 + sparse encoding",
            f"{dense.size_bytes / MB:.0f} MB float32 → {size / MB:.1f} MB (kernel zeros {zeros:.3f}; {runs})",
            "≤ 53 MB",
            size <= 53 * MB,
        )
    ]


def _pruning_row(model, ds, tmp, base, common, log) -> Row:
    """90% zeros, fine-tuned against the unpruned model, then sparsity-preserving QAT, int8."""
    from edgekit.converters import export, kernel_zeros
    from edgekit.optimize import DistillConfig, FineTune, PruneConfig, QATConfig, Recipe, Step, optimize

    kd = DistillConfig(temperature=8.0, alpha=0.1)
    pruned = optimize(
        model,
        Recipe(
            (
                Step("prune", PruneConfig(sparsity=0.9), FineTune(15, 32, 2e-3, "cosine", kd)),
                Step("qat", QATConfig(preserve="sparsity"), FineTune(3, 32, 2e-4, "cosine", kd)),
            )
        ),
        ds.x_train,
        ds.y_train,
    ).model
    p = export(pruned, os.path.join(tmp, "pruned_int8.tflite"), "int8", **common)
    p_acc, zeros = p.accuracy, kernel_zeros(p.path)
    log("  demo 90% pruned")
    return Row(
        "pruning (accuracy)",
        f"demo model ({model.count_params():,} params), 90% sparse + int8: prune "
        "with distillation from the unpruned model (15 epochs), then sparsity-preserving QAT (3 epochs)",
        f"accuracy {base:.4f} float → {p_acc:.4f} int8 (Δ {100 * (p_acc - base):+.2f} points); "
        f"{zeros:.1%} of the .tflite's conv/FC weights are zeros",
        "drop < 1 point",
        p_acc > base - 0.01,
    )


def _distillation_row(model, ds, tmp, base, teacher_tflite, log) -> Row:
    """A student with under 1/4 of the params, with and without the teacher, three seeds."""
    from edgekit.converters import convert
    from edgekit.core.compat import keras
    from edgekit.device import bench
    from edgekit.models import create
    from edgekit.optimize import DistillConfig, FineTune, accuracy, distill, fine_tune

    ft = FineTune(15, 32, 2e-3, "cosine")
    kd, scratch, kd_models = [], [], []
    for seed in (0, 1, 2):
        keras.utils.set_random_seed(seed)
        s0 = create("mobilenet_v2", preset="digits", alpha=0.5, head_filters=256, name="student")
        d = distill(s0, model, ds.x_train, ds.y_train, DistillConfig(temperature=8.0, alpha=0.1), ft, seed=seed)
        kd.append(accuracy(d, ds.x_test, ds.y_test))
        kd_models.append(d)
        fine_tune(s0, ds.x_train, ds.y_train, ft, seed=seed)
        scratch.append(accuracy(s0, ds.x_test, ds.y_test))
        log(f"  student seed {seed}: distilled {kd[-1]:.4f}, without teacher {scratch[-1]:.4f}")
    s_params = kd_models[0].count_params()
    s_path = os.path.join(tmp, "student_int8.tflite")
    with open(s_path, "wb") as f:
        f.write(convert(kd_models[0], "int8", ds.x_train))
    npz = ds.save_test_npz(os.path.join(tmp, "test.npz"))
    r_teacher, r_student = bench([teacher_tflite, s_path], runs=300, warmup=30, inputs=npz)
    lat = r_student.latency_ms["p50"] / r_teacher.latency_ms["p50"]
    share = float(np.mean(kd)) / base
    return Row(
        "distillation",
        f"demo model → student with {s_params / model.count_params():.2f}× the params "
        f"({s_params:,}), 15 epochs, 3 seeds",
        f"student {np.mean(kd):.4f} = {share:.1%} of the teacher's {base:.4f}; without teacher "
        f"{np.mean(scratch):.4f}; int8 p50 {lat:.2f}× the teacher's",
        "≥ 97% of teacher, beats no-teacher, latency ≤ 0.6×",
        share >= 0.97 and np.mean(kd) > np.mean(scratch) and lat <= 0.6 and s_params <= model.count_params() / 4,
    )


def _low_rank_row(model, ds, base, log) -> Row:
    from edgekit.core.compat import keras
    from edgekit.optimize import FactorizeConfig, FineTune, Recipe, Step, factorize_report, optimize

    keras.utils.set_random_seed(0)
    big = keras.Sequential([keras.Input((1000,)), keras.layers.Dense(1000, name="fc")])
    f = factorize_report(big, FactorizeConfig(rank=100))
    weights = sum(int(np.prod(f.model.get_layer(n).kernel.shape)) for n in ("fc_u", "fc_v"))
    budget = model.count_params() // 2
    fz = optimize(
        model,
        Recipe((Step("factorize", FactorizeConfig(target_params=budget), FineTune(10, 32, 2e-3, "cosine")),)),
        ds.x_train,
        ds.y_train,
        validation_data=(ds.x_test, ds.y_test),
    )
    log("  factorized")
    return Row(
        "low-rank factorization",
        "Dense 1000×1000, rank 100; demo model to ½ its params",
        f"{1000 * 1000:,} → {weights:,} weights; demo {model.count_params():,} → "
        f"{fz.model.count_params():,} params, accuracy {base:.4f} → {fz.steps[0].accuracy:.4f} after 10 epochs",
        "200,000 weights",
        weights == 200_000,
    )


def _architecture_rows(base, q_acc) -> List[Row]:
    """Quantization's size on MobileNetV2 1.0/224 (accuracy on the demo model), efficient designs."""
    from edgekit.converters import convert
    from edgekit.models import create, profile

    mb = create("mobilenet_v2")
    xm = np.random.default_rng(0).random((16, 224, 224, 3), dtype=np.float32)
    f32, i8 = len(convert(mb, "float32")), len(convert(mb, "int8", xm, calib_samples=16))
    v1, v1c = profile(create("mobilenet_v1")), profile(create("mobilenet_v1", separable=False))
    v2, r50 = profile(create("mobilenet_v2")), profile(create("resnet50"))
    return [
        Row(
            "quantization",
            "MobileNetV2 1.0/224; demo model",
            f"float32 {f32 / MB:.1f} MB → int8 {i8 / MB:.1f} MB ({i8 / f32:.3f}×); demo accuracy "
            f"{base:.4f} → {q_acc:.4f} (Δ {100 * (q_acc - base):+.2f} points)",
            "drop < 1 point",
            q_acc > base - 0.01,
        ),
        Row(
            "efficient architecture",
            "MobileNetV1 vs its standard-conv twin; MobileNetV2 vs ResNet-50",
            f"params {v1c.params / MB:.1f}M → {v1.params / MB:.1f}M ({v1.params / v1c.params:.3f}×), MACs "
            f"{v1c.macs / 1e9:.2f}G → {v1.macs / 1e9:.2f}G ({v1.macs / v1c.macs:.3f}×); params "
            f"{r50.params / MB:.1f}M → {v2.params / MB:.1f}M ({v2.params / r50.params:.3f}×), MACs "
            f"{r50.macs / 1e9:.2f}G → {v2.macs / 1e9:.2f}G ({v2.macs / r50.macs:.3f}×)",
        ),
    ]


def _demo_rows(model, ds, tmp: str, log) -> List[Row]:
    from edgekit.converters import export
    from edgekit.optimize import accuracy

    base = accuracy(model, ds.x_test, ds.y_test)
    common = dict(calibration=ds.x_train, validation_data=(ds.x_test, ds.y_test), layer_report=False)
    q = export(model, os.path.join(tmp, "teacher_int8.tflite"), "int8", **common)
    log("  demo int8 exported")
    return [
        _pruning_row(model, ds, tmp, base, common, log),
        _distillation_row(model, ds, tmp, base, q.path, log),
        _low_rank_row(model, ds, base, log),
    ] + _architecture_rows(base, q.accuracy)


def markdown(rows: List[Row], seconds: float) -> str:
    lines = ["| technique | example | baseline → result (measured) | target |", "|---|---|---|---|"]
    for r in rows:
        target = "" if r.ok is None else f"{r.target}: {'met' if r.ok else 'MISSED'}"
        lines.append(f"| {r.technique} | {r.example} | {r.measured} | {target} |")
    lines.append("")
    lines.append(
        f"Measured by `make bench-techniques` in {seconds / 60:.0f} min on this machine ({os.cpu_count()} cores)."
    )
    return "\n".join(lines) + "\n"


def run(model_path: Optional[str] = None, log: Callable[[str], None] = print) -> List[Row]:
    from edgekit.app.demo import train_digits_model
    from edgekit.converters import load_keras_model
    from edgekit.core.data import digits

    ds = digits()
    with tempfile.TemporaryDirectory() as tmp:
        log("weight tying ...")
        rows = _tying(log)
        log("pruning VGG-16 ...")
        rows += _vgg_pruning(tmp, log)
        log("demo model: quantization, pruning, distillation, low-rank ...")
        model = load_keras_model(model_path) if model_path else train_digits_model(ds)
        rows += _demo_rows(model, ds, tmp, log)
    return rows


def main(argv=None) -> int:
    from edgekit.core.results import table

    ap = argparse.ArgumentParser(prog="benchmarks/techniques.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a trained demo model (.keras); default: train one (20 epochs)")
    ap.add_argument("--docs", metavar="FILE.md", help="write the table between its techniques markers")
    ap.add_argument("--json", metavar="OUT.json", help="write the rows as JSON")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT.json if it exists")
    args = ap.parse_args(argv)
    # every argument is checked now, not after the 16-minute run
    from edgekit.core.errors import InputError
    from edgekit.core.io import check_output

    if args.model:
        from edgekit.core.modelfile import scan

        scan(args.model)
    if args.json:
        check_output(args.json, overwrite=args.overwrite, what="--json")
    if args.docs:
        from readme import span as _span  # tools/readme.py

        if not os.path.isfile(args.docs):
            raise InputError(f"--docs {args.docs} not found (the page whose techniques table to update)")
        with open(args.docs, encoding="utf-8") as f:
            _span(f.read(), "techniques")
    t0 = time.perf_counter()
    rows = run(args.model, log=lambda m: print(m, flush=True))
    seconds = time.perf_counter() - t0
    print(
        table(
            ("technique", "example", "measured", "target", "ok"),
            [
                [r.technique, r.example, r.measured, r.target, "-" if r.ok is None else "yes" if r.ok else "NO"]
                for r in rows
            ],
            align="lllll",
        )
    )
    if args.json:
        from edgekit.core.io import write_atomic

        write_atomic(
            args.json,
            json.dumps({"seconds": seconds, "rows": [asdict(r) for r in rows]}, indent=2) + "\n",
            overwrite=args.overwrite,
        )
    if args.docs:
        from readme import replace  # tools/readme.py

        from edgekit.core.io import write_atomic

        with open(args.docs, encoding="utf-8") as f:
            text = f.read()
        write_atomic(args.docs, replace(text, "techniques", markdown(rows, seconds)), overwrite=True)
        print(f"updated the techniques table in {args.docs}")
    return 0 if all(r.ok is not False for r in rows) else 1


def cli(argv=None) -> int:
    """:func:`main` with edgekit's errors as one line (exit 2), like the ``edgekit`` command."""
    from edgekit.core.errors import EdgekitError

    try:
        return main(argv)
    except EdgekitError as exc:
        print(f"techniques: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(cli())
