"""One trial of a search, and the float32 baseline: a recipe applied (``edgekit.optimize``), the
model exported and verified, the file measured by the device harness on the target."""

from __future__ import annotations

import os

import numpy as np

from edgekit.app.search import space as searchspace
from edgekit.core.errors import EdgekitError


def measure(path: str, target, inputs: str, task: str) -> dict:
    """The device harness's figures for one .tflite file on the target (and under QEMU): ``quality``
    is the task's on-device figure (accuracy, or MAE)."""
    from edgekit.device import bench

    hosts = [target.host] if target.host else []
    r = bench(
        [path],
        runs=target.runs,
        warmup=target.warmup,
        threads=target.threads,
        inputs=inputs,
        hosts=hosts,
        ssh_config=target.ssh_config,
        remote_python=target.remote_python,
        progress=False,
    )[0]
    if not r.ok:
        raise EdgekitError(f"benchmark on {target.label()} failed: {r.error}")
    quality = r.accuracy if task == "classification" else r.mae
    m = {
        "quality": quality,
        "accuracy": r.accuracy,
        "mae": r.mae,
        "p50_ms": r.latency_ms["p50"],
        "peak_rss_mb": r.peak_rss_mb,
        "size_bytes": os.path.getsize(path),
        "host": target.host,
    }
    if target.qemu:
        q = bench([path], runs=1, warmup=0, inputs=inputs, qemu=[target.qemu], progress=False)[0]
        if not q.ok:
            raise EdgekitError(f"ARM64 ({target.qemu}, QEMU) run failed: {q.error}")
        on_arm = q.accuracy if task == "classification" else q.mae
        m.update(qemu_quality=on_arm, qemu_accuracy=q.accuracy, qemu_mae=q.mae)
        with np.load(inputs) as f:  # ARM64's int8 kernels may round one step apart: one sample's worth is allowed
            one = 1.0 / max(1, len(f["y"])) if "y" in f.files else 0.0
        allowed = one if task == "classification" else 0.01 * abs(quality or 0.0)  # an error: 1% of it
        if on_arm is not None and quality is not None and abs(on_arm - quality) > allowed + 1e-9:
            metric = "accuracy" if task == "classification" else "MAE"
            raise EdgekitError(
                f"ARM64 kernels (QEMU {target.qemu}) give {metric} {on_arm:.4f}, this machine {quality:.4f}"
            )
    return m


def measure_baseline(model, ds, directory: str, target, inputs: str, seed: int, task: str) -> dict:
    """The input model exported float32 and measured like every trial, and the figure of a model
    that learned nothing (the most frequent class; always the mean target)."""
    from edgekit.converters import export
    from edgekit.core.task import Task, baseline

    path = os.path.join(directory, "trials", "float32.tflite")
    export(
        model, None, "float32", validation_data=(ds.x_test, ds.y_test), seed=seed, layer_report=False, task=task
    ).save(path, overwrite=True)
    kind = Task(task)
    measured = measure(path, target, inputs, task)
    return dict(measured, chance=baseline(kind, ds.x_test, ds.y_test), task=task, metric=kind.metric)


def run_trial(trial, params, model, ds, directory, target, inputs, seed, batchnorm, task) -> dict:
    """Optimize (a step that collapses the model fails the trial), export (verified), measure: the
    trial's measurements (``task``: the model's, :mod:`edgekit.core.task`)."""
    from edgekit.converters import export
    from edgekit.optimize import Recipe, optimize

    doc = searchspace.recipe_doc(params, batchnorm)
    trial.set_user_attr("recipe", doc)
    candidate, warnings = model, []
    if doc is not None:
        result = optimize(
            model,
            Recipe.from_dict(doc, where=f"trial {trial.number}"),
            ds.x_train,
            ds.y_train,
            validation_data=(ds.x_test, ds.y_test),
            seed=seed,
            task=task,
        )
        candidate, warnings = result.model, result.warnings
    path = os.path.join(directory, "trials", f"trial_{trial.number:03d}.tflite")
    rep = export(
        candidate,
        None,
        params["quant"],
        calibration=ds.x_train,
        validation_data=(ds.x_test, ds.y_test),
        seed=seed,
        layer_report=False,
        target="mcu" if target.board else "litert",
        board=target.board,
        task=task,
    )
    rep.save(path, overwrite=True)
    m = measure(path, target, inputs, task)
    m.update(agreement=rep.agreement, cosine=rep.cosine, warnings=[str(w) for w in warnings + list(rep.warnings)])
    if rep.mcu:
        m.update(arena_bytes=rep.mcu.arena_bytes, flash_bytes=rep.mcu.flash_bytes, fits=rep.mcu.fits)
    return m
