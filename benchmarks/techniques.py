"""The technique table: what each optimization technique buys, every number measured in one run.

    .venv/bin/python benchmarks/techniques.py [--model runs/demo/model.keras] [--docs docs/techniques.md]
                                              [--json OUT.json] [--overwrite]       (make bench-techniques)
    .venv/bin/python benchmarks/techniques.py --smoke [--rows tying,vgg,demo] [--json OUT.json]
                                              (every row at tiny sizes, into a copy of the docs page)

Each row runs the technique against its baseline on this machine: weight tying on a 30,000 × 500
language model (and a small one trained on the Python standard library's source, perplexity),
pruning on VGG-16 (weights=None: random weights, so only sizes mean something) and on the demo
model (accuracy), distillation of the demo model into a student with under a quarter of its
params (against the same student trained without a teacher, three seeds each), low-rank
factorization, int8 quantization, and efficient architectures against their standard twins.
Targets are checked; the command exits 1 if one is missed. ``--docs`` writes the Markdown table
between the page's ``<!-- techniques:begin -->`` / ``<!-- techniques:end -->`` markers. ``--rows``
runs some groups of rows only (without ``--docs``). ``--smoke``: every row at tiny sizes (:data:`SMOKE`)
in about half a minute; ``--rows tying,vgg`` and ``--rows demo`` take about 20 s each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import smoke  # benchmarks/smoke.py

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tools"))

MB = 1e6
# the groups of rows (--rows): weight tying, VGG-16 pruning, and the rows on the demo model
GROUPS = ("tying", "vgg", "demo")


@dataclass(frozen=True)
class Sizes:
    """How large every row runs: :data:`FULL` (``make bench-techniques``) or :data:`SMOKE`."""

    preset: str = "reference"  # of VGG-16, MobileNetV1/V2 and ResNet-50
    vocab: int = 30000  # the tied LM's
    dim: int = 500
    lm: Dict[str, Any] = field(default_factory=dict)  # overrides of the small tied LM's digits preset
    samples: Optional[int] = None  # per split, of digits and of the stdlib's source (None: all)
    model: Optional[str] = None  # the registered model trained as the demo's (None: the demo's own)
    train_epochs: Optional[int] = None  # its training (None: train_digits_model's default)
    max_epochs: Optional[int] = None  # caps every fine-tune
    seeds: Tuple[int, ...] = (0, 1, 2)  # of the distillation row
    mobilenet_v2: Dict[str, Any] = field(default_factory=dict)  # overrides of the student and of MobileNetV2
    runs: int = 300
    warmup: int = 30

    def epochs(self, n: int) -> int:
        return n if self.max_epochs is None else min(n, self.max_epochs)

    def data(self, ds):
        return ds if self.samples is None else smoke.subset(ds, self.samples, self.samples // 4)


FULL = Sizes()
# --smoke: the same rows and code, tiny: digits presets, shallow MobileNetV2s (the demo's model and the
# student: smoke.DEMO_CONFIG), a 2,000 x 16 LM and a one-block small one, 256 samples, one epoch, one seed
SMOKE = Sizes(
    "digits",
    vocab=2000,
    dim=16,
    lm=dict(dim=16, layers=1),
    samples=256,
    model=smoke.DEMO_MODEL,
    train_epochs=1,
    max_epochs=1,
    seeds=(0,),
    mobilenet_v2=smoke.DEMO_CONFIG,
    runs=10,
    warmup=2,
)


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


def _tying(log, sz: Sizes = FULL) -> List[Row]:
    from edgekit.core.compat import keras
    from edgekit.core.data import python_source
    from edgekit.models import create
    from edgekit.models.language import perplexity
    from edgekit.optimize import FineTune, fine_tune

    s = tied_lm_sizes(sz.vocab, sz.dim)
    log(f"  tied LM {sz.vocab}x{sz.dim} converted")
    ds = sz.data(python_source())
    ppl = {}
    for tied in (True, False):
        keras.utils.set_random_seed(0)
        model = create("tied_lm", preset="digits", tied=tied, **sz.lm)
        fine_tune(model, ds.x_train, ds.y_train, FineTune(sz.epochs(4), 64, 2e-3), metrics=())
        ppl[tied] = (model.count_params(), perplexity(model, ds.x_test, ds.y_test))
    embedding = model.get_layer("embedding")
    ratio = s[True, "int8"] / s[False, "int8"]
    return [
        Row(
            "parameter sharing (weight tying)",
            f"LM, vocab {sz.vocab:,}, dim {sz.dim}",
            f"params {s[False, 'params'] / MB:.2f}M → {s[True, 'params'] / MB:.2f}M; float32 "
            f"{s[False, 'float32'] / MB:.1f} → {s[True, 'float32'] / MB:.1f} MB; int8 {s[False, 'int8'] / MB:.1f} → "
            f"{s[True, 'int8'] / MB:.1f} MB ({ratio:.3f}×)",
            "int8 ≤ 0.55× untied",
            ratio <= 0.55,
        ),
        Row(
            "parameter sharing (weight tying)",
            f"LM, vocab {embedding.input_dim}, dim {embedding.output_dim}, {sz.epochs(4)} epochs on the Python "
            "stdlib's source",
            f"params {ppl[False][0]:,} → {ppl[True][0]:,}; test perplexity {ppl[False][1]:.1f} → {ppl[True][1]:.1f}",
        ),
    ]


def _vgg_pruning(tmp: str, log, sz: Sizes = FULL) -> List[Row]:
    from edgekit.converters import convert, export, inspect_tflite
    from edgekit.core.compat import keras
    from edgekit.models import create
    from edgekit.optimize import PruneConfig, callbacks, prune, strip, weight_report

    model = create("vgg16", preset=sz.preset)
    x = np.random.default_rng(0).random((4,) + tuple(model.input_shape[1:]), dtype=np.float32)
    dense = export(model, os.path.join(tmp, "vgg16.tflite"), "float32", validation_data=(x[:1], None))
    log("  VGG-16 float32 converted")
    pruned = prune(model, PruneConfig(sparsity=0.9, steps=2, ramp_fraction=0.5))
    del model
    pruned.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")  # masks only, weights kept
    # callbacks: tfmot's UpdatePruningStep and the schedule's length (fit is Keras's own)
    pruned.fit(x, np.zeros(4, np.int64), batch_size=2, epochs=1, verbose=0, callbacks=callbacks(pruned))
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


def _pruning_row(model, ds, tmp, base, common, log, sz: Sizes = FULL) -> Row:
    """90% zeros, fine-tuned against the unpruned model, then sparsity-preserving QAT, int8."""
    from edgekit.converters import export, kernel_zeros
    from edgekit.optimize import DistillConfig, FineTune, PruneConfig, QATConfig, Recipe, Step, optimize

    kd = DistillConfig(temperature=8.0, alpha=0.1)
    pruned = optimize(
        model,
        Recipe(
            (
                Step("prune", PruneConfig(sparsity=0.9), FineTune(sz.epochs(15), 32, 2e-3, "cosine", kd)),
                Step("qat", QATConfig(preserve="sparsity"), FineTune(sz.epochs(3), 32, 2e-4, "cosine", kd)),
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
        f"with distillation from the unpruned model ({sz.epochs(15)} epochs), then sparsity-preserving QAT "
        f"({sz.epochs(3)} epochs)",
        f"accuracy {base:.4f} float → {p_acc:.4f} int8 (Δ {100 * (p_acc - base):+.2f} points); "
        f"{zeros:.1%} of the .tflite's conv/FC weights are zeros",
        "drop < 1 point",
        p_acc > base - 0.01,
    )


def _distillation_row(model, ds, tmp, base, teacher_tflite, log, sz: Sizes = FULL) -> Row:
    """A student with under 1/4 of the params, with and without the teacher, three seeds."""
    from edgekit.converters import convert
    from edgekit.core.compat import keras
    from edgekit.device import bench
    from edgekit.models import create
    from edgekit.optimize import DistillConfig, FineTune, accuracy, distill, fine_tune

    ft = FineTune(sz.epochs(15), 32, 2e-3, "cosine")
    kd, scratch, kd_models = [], [], []
    for seed in sz.seeds:
        keras.utils.set_random_seed(seed)
        student = dict(dict(alpha=0.5, head_filters=256), **sz.mobilenet_v2)
        s0 = create("mobilenet_v2", preset="digits", name="student", **student)
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
    r_teacher, r_student = bench([teacher_tflite, s_path], runs=sz.runs, warmup=sz.warmup, inputs=npz)
    lat = r_student.latency_ms["p50"] / r_teacher.latency_ms["p50"]
    share = float(np.mean(kd)) / base
    return Row(
        "distillation",
        f"demo model → student with {s_params / model.count_params():.2f}× the params "
        f"({s_params:,}), {ft.epochs} epochs, {len(sz.seeds)} seed{'s' if len(sz.seeds) > 1 else ''}",
        f"student {np.mean(kd):.4f} = {share:.1%} of the teacher's {base:.4f}; without teacher "
        f"{np.mean(scratch):.4f}; int8 p50 {lat:.2f}× the teacher's",
        "≥ 97% of teacher, beats no-teacher, latency ≤ 0.6×",
        # bool: numpy's comparison gives numpy.bool_, which --json cannot write
        bool(share >= 0.97 and np.mean(kd) > np.mean(scratch) and lat <= 0.6 and s_params <= model.count_params() / 4),
    )


def _low_rank_row(model, ds, base, log, sz: Sizes = FULL) -> Row:
    from edgekit.core.compat import keras
    from edgekit.optimize import FactorizeConfig, FineTune, Recipe, Step, factorize_report, optimize

    keras.utils.set_random_seed(0)
    big = keras.Sequential([keras.Input((1000,)), keras.layers.Dense(1000, name="fc")])
    f = factorize_report(big, FactorizeConfig(rank=100))
    weights = sum(int(np.prod(f.model.get_layer(n).kernel.shape)) for n in ("fc_u", "fc_v"))
    budget = model.count_params() // 2
    fz = optimize(
        model,
        Recipe(
            (Step("factorize", FactorizeConfig(target_params=budget), FineTune(sz.epochs(10), 32, 2e-3, "cosine")),)
        ),
        ds.x_train,
        ds.y_train,
        validation_data=(ds.x_test, ds.y_test),
    )
    log("  factorized")
    return Row(
        "low-rank factorization",
        "Dense 1000×1000, rank 100; demo model to ½ its params",
        f"{1000 * 1000:,} → {weights:,} weights; demo {model.count_params():,} → {fz.model.count_params():,} "
        f"params, accuracy {base:.4f} → {fz.steps[0].accuracy:.4f} after {sz.epochs(10)} epochs",
        "200,000 weights",
        weights == 200_000,
    )


def _architecture_rows(base, q_acc, sz: Sizes = FULL) -> List[Row]:
    """Quantization's size on MobileNetV2 1.0/224 (accuracy on the demo model), efficient designs."""
    from edgekit.converters import convert
    from edgekit.models import create, profile

    preset = sz.preset
    mb = create("mobilenet_v2", preset=preset, **sz.mobilenet_v2)
    xm = np.random.default_rng(0).random((16,) + tuple(mb.input_shape[1:]), dtype=np.float32)
    f32, i8 = len(convert(mb, "float32")), len(convert(mb, "int8", xm, calib_samples=16))
    v1, v1c = (
        profile(create("mobilenet_v1", preset=preset)),
        profile(create("mobilenet_v1", preset=preset, separable=False)),
    )
    v2, r50 = profile(create("mobilenet_v2", preset=preset)), profile(create("resnet50", preset=preset))
    return [
        Row(
            "quantization",
            f"MobileNetV2 {'1.0/224' if preset == 'reference' else 'at smoke size'}; demo model",
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


def _demo_rows(model, ds, tmp: str, log, sz: Sizes = FULL) -> List[Row]:
    from edgekit.converters import export
    from edgekit.optimize import accuracy

    base = accuracy(model, ds.x_test, ds.y_test)
    common = dict(calibration=ds.x_train, validation_data=(ds.x_test, ds.y_test), layer_report=False)
    q = export(model, os.path.join(tmp, "teacher_int8.tflite"), "int8", **common)
    log("  demo int8 exported")
    return [
        _pruning_row(model, ds, tmp, base, common, log, sz),
        _distillation_row(model, ds, tmp, base, q.path, log, sz),
        _low_rank_row(model, ds, base, log, sz),
    ] + _architecture_rows(base, q.accuracy, sz)


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


def _train(ds, sz: Sizes = FULL):
    """The demo's model trained on ``ds`` (:data:`SMOKE`: the one of :func:`smoke.demo_model`)."""
    from edgekit.app.demo import train_digits_model

    if sz.model is None:
        return train_digits_model(ds)
    if sz.model == smoke.DEMO_MODEL:
        smoke.demo_model()  # registered in this process
    return train_digits_model(ds, sz.model, epochs=sz.train_epochs)


def run(
    model_path: Optional[str] = None, log: Callable[[str], None] = print, sz: Sizes = FULL, groups=GROUPS
) -> List[Row]:
    """The rows of ``groups`` (of :data:`GROUPS`), in the table's order."""
    from edgekit.converters import load_keras_model
    from edgekit.core.data import digits

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if "tying" in groups:
            log("weight tying ...")
            rows += _tying(log, sz)
        if "vgg" in groups:
            log("pruning VGG-16 ...")
            rows += _vgg_pruning(tmp, log, sz)
        if "demo" in groups:
            log("demo model: quantization, pruning, distillation, low-rank ...")
            ds = sz.data(digits())
            model = load_keras_model(model_path) if model_path else _train(ds, sz)
            rows += _demo_rows(model, ds, tmp, log, sz)
    return rows


def _check_args(ap, args) -> None:
    """Every argument checked now, not after the 16-minute run; in smoke mode the table is written
    into a copy of docs/techniques.md."""
    from edgekit.core.errors import InputError
    from edgekit.core.io import check_output

    args.rows = args.rows.split(",")
    unknown = sorted(set(args.rows) - set(GROUPS))
    if unknown:
        ap.error(f"--rows: unknown group {unknown[0]!r}; the groups are {','.join(GROUPS)}")
    if args.docs and set(args.rows) != set(GROUPS):
        ap.error("--docs writes the whole table: run every group of --rows")
    if smoke.start(ap, args, "docs"):
        args.docs = smoke.copy("docs/techniques.md")
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


def main(argv=None) -> int:
    from edgekit.core.results import table

    ap = argparse.ArgumentParser(prog="benchmarks/techniques.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a trained demo model (.keras); default: train one (20 epochs)")
    ap.add_argument("--docs", metavar="FILE.md", help="write the table between its techniques markers")
    ap.add_argument("--json", metavar="OUT.json", help="write the rows as JSON")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT.json if it exists")
    ap.add_argument(
        "--rows", default=",".join(GROUPS), help=f"the groups of rows to run (default all: {','.join(GROUPS)})"
    )
    smoke.add_flag(ap)
    args = ap.parse_args(argv)
    _check_args(ap, args)
    t0 = time.perf_counter()
    rows = run(args.model, lambda m: print(m, flush=True), SMOKE if args.smoke else FULL, args.rows)
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
    return smoke.exit_code(all(r.ok is not False for r in rows), args.smoke)


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
