"""The search targets on the demo model, everything measured in one run.

    .venv/bin/python benchmarks/search_targets.py [--out runs/bench-search] [--trials 12] [--epochs 20]
                                                  [--docs docs/search.md] [--readme README.md]   (make bench-search)

Trains the demo model (MobileNetV2 digits preset, as `make demo`), then on this machine:
- the demo's hand-made "channels 0.5 + int8" recipe, fine-tuned, exported and measured;
- `edgekit search` with multi-objective TPE on benchmarks/search_space.toml (channel pruning, its
  fine-tune and distillation: what changes speed and size on this CPU), ``--trials`` trials;
- random search, same space, budget and seed.
Checks: the TPE front holds a point that dominates or equals the hand-made variant (accuracy ≥,
p50 ≤ within the noise — both files re-measured side by side, alternating, 5 rounds — size ≤);
reports how far the fastest point within 1 point of float32 is from float32 in speed and size
(goal ≥ 5× faster, ≥ 15× smaller: printed, not a pass/fail of this CPU, where int8 runs no faster
than float32); the hypervolume of the TPE front against the random one (objectives normalized by
float32: error, p50 ratio, size ratio; reference point: 5 points below float32, as slow and as
large as float32). Exits 1 when the hand-made variant is not matched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tools"))

NOISE = 0.05  # p50 within 5% counts as equal: the spread of back-to-back harness runs on this machine


def hand_made(model, ds, out: str, seed: int) -> str:
    """The demo's "channels 0.5 + int8" recipe, exported int8."""
    from edgekit.app.demo import OPTIMIZED
    from edgekit.converters import export
    from edgekit.optimize import Recipe, optimize

    name, _, doc, options = next(v for v in OPTIMIZED if v[0] == "channels 0.5 + int8")
    result = optimize(model, Recipe.from_dict(doc, where=name), ds.x_train, ds.y_train, seed=seed)
    path = os.path.join(out, "hand_channels_0.5_int8.tflite")
    export(
        result.model,
        None,
        "int8",
        calibration=ds.x_train,
        validation_data=(ds.x_test, ds.y_test),
        seed=seed,
        layer_report=False,
        **options,
    ).save(path, overwrite=True)
    return path


def side_by_side(paths, inputs: str, rounds: int = 5, runs: int = 200) -> list:
    """p50 of each file, the median over ``rounds`` rounds of back-to-back runs; accuracy."""
    from edgekit.device import bench

    p50 = {p: [] for p in paths}
    acc = {}
    for _ in range(rounds):
        for r in bench(paths, runs=runs, warmup=20, inputs=inputs, progress=False):
            p50[r.model].append(r.latency_ms["p50"])
            acc[r.model] = r.accuracy
    return [
        {"path": p, "p50_ms": float(np.median(p50[p])), "accuracy": acc[p], "size_bytes": os.path.getsize(p)}
        for p in paths
    ]


def hypervolume(result, baseline: dict) -> float:
    """Hypervolume of the front (error, p50 / float32, size / float32) up to the reference point."""
    from optuna._hypervolume import compute_hypervolume  # Optuna's WFG hypervolume (no public API yet)

    ref = np.array([1 - baseline["accuracy"] + 0.05, 1.0, 1.0])
    pts = [
        [1 - t["accuracy"], t["p50_ms"] / baseline["p50_ms"], t["size_bytes"] / baseline["size_bytes"]]
        for t in result.trials
        if t["number"] in result.front
    ]
    pts = np.array([p for p in pts if np.all(np.array(p) < ref)])
    return float(compute_hypervolume(pts, ref)) if len(pts) else 0.0


def target_rows(h, dominating, candidates, measured, by_number, tpe, hv, seconds) -> list:
    """(target, measured, ok) rows of the run."""
    baseline = tpe.baseline
    best = tpe.best_within_1pt
    rows = [
        (
            "hand-made channels 0.5 + int8",
            f"accuracy {h['accuracy']:.4f}, p50 {h['p50_ms']:.3f} ms, {h['size_bytes'] / 1024:,.1f} KiB",
            True,
        )
    ]
    if dominating:
        n, m = max(dominating, key=lambda d: d[1]["accuracy"])
        rows.append(
            (
                "a front point dominates or equals it",
                f"trial {n} ({by_number[n]['name']}): accuracy "
                f"{m['accuracy']:.4f}, p50 {m['p50_ms']:.3f} ms, {m['size_bytes'] / 1024:,.1f} KiB",
                True,
            )
        )
    else:
        rows.append(
            (
                "a front point dominates or equals it",
                "none of "
                + ", ".join(
                    f"trial {n} ({m['accuracy']:.4f}, {m['p50_ms']:.3f} ms, {m['size_bytes'] / 1024:,.1f} KiB)"
                    for n, m in zip(candidates, measured[1:])
                ),
                False,
            )
        )
    rows.append(
        (
            "best within 1 point of float32 (goal ≥ 5× faster, ≥ 15× smaller)",
            f"trial {best['number']} ({best['name']}): {best['speedup']:.1f}× faster, {best['smaller']:.1f}× "
            f"smaller, accuracy {best['accuracy']:.4f} vs float32 {baseline['accuracy']:.4f}"
            if best
            else "none",
            True,
        )
    )
    rows.append(
        (
            "hypervolume TPE / random (same space, budget, seed)",
            f"{hv['tpe']:.4f} / {hv['random']:.4f} = {hv['tpe'] / hv['random']:.2f}×"
            if hv["random"]
            else f"{hv['tpe']:.4f} / 0",
            True,
        )
    )
    rows.append(("wall time TPE / random", f"{seconds['tpe']:.0f} s / {seconds['random']:.0f} s", True))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/search_targets.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench-search")
    ap.add_argument("--trials", type=int, default=12, help="trials of each study (default 12; the issue allows 24)")
    ap.add_argument(
        "--space",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "search_space.toml"),
        help="the search space (default benchmarks/search_space.toml)",
    )
    ap.add_argument("--epochs", type=int, default=20, help="training epochs of the demo model (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--docs", help="write the results between the search markers of this Markdown file")
    ap.add_argument("--readme", help="and the front between the README's search markers")
    args = ap.parse_args(argv)

    from edgekit.app.demo import train_digits_model
    from edgekit.app.search import search
    from edgekit.app.search.space import load_space
    from edgekit.core.data import digits

    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    ds = digits()
    t0 = time.perf_counter()
    model = train_digits_model(ds, epochs=args.epochs, seed=args.seed)
    print(f"trained the demo model in {time.perf_counter() - t0:.0f} s", flush=True)
    hand = hand_made(model, ds, args.out, args.seed)
    studies, seconds = {}, {}
    for sampler in ("tpe", "random"):
        t0 = time.perf_counter()
        studies[sampler] = search(
            model,
            ds,
            directory=os.path.join(args.out, sampler),
            trials=args.trials,
            sampler=sampler,
            space=load_space(args.space),
            seed=args.seed,
            log=lambda m: print(m, flush=True),
        )
        seconds[sampler] = time.perf_counter() - t0
        print(studies[sampler].summary(), flush=True)
    tpe = studies["tpe"]
    baseline = tpe.baseline
    inputs = os.path.join(args.out, "tpe", "test.npz")
    # the front's candidates against the hand-made file, re-measured side by side
    by_number = {t["number"]: t for t in tpe.trials}
    candidates = [
        n
        for n in tpe.front
        if by_number[n]["accuracy"] >= 0
        and os.path.isfile(os.path.join(args.out, "tpe", "front", f"trial_{n:03d}.tflite"))
    ]
    paths = [hand] + [os.path.join(args.out, "tpe", "front", f"trial_{n:03d}.tflite") for n in candidates]
    measured = side_by_side(paths, inputs)
    h = measured[0]
    dominating = [
        (n, m)
        for n, m in zip(candidates, measured[1:])
        if m["accuracy"] >= h["accuracy"]
        and m["p50_ms"] <= h["p50_ms"] * (1 + NOISE)
        and m["size_bytes"] <= h["size_bytes"]
    ]
    hv = {s: hypervolume(r, baseline) for s, r in studies.items()}
    rows = target_rows(h, dominating, candidates, measured, by_number, tpe, hv, seconds)
    from edgekit.core.results import table

    text = table(
        ("target", "measured", "ok"), [[a, b, "yes" if ok else "NO"] for a, b, ok in rows], markdown=True, align="lll"
    )
    front = tpe.summary()
    print(text)
    with open(os.path.join(args.out, "search_targets.json"), "w") as f:
        json.dump({"rows": rows, "hypervolume": hv, "side_by_side": measured, "seconds": seconds}, f, indent=2)
    _write_docs(args, text, front)
    return 0 if all(ok for _, _, ok in rows) else 1


def _write_docs(args, text: str, front: str) -> None:
    """The table and the front between the search markers of --docs and --readme."""
    if not (args.docs or args.readme):
        return
    from readme import replace  # tools/readme.py

    for path, key, body in (
        (args.docs, "search", f"{text}\n\n```\n{front}\n```\n"),
        (args.readme, "search", f"```\n{front}\n```\n"),
    ):
        if path:
            with open(path, encoding="utf-8") as f:
                doc = f.read()
            with open(path, "w", encoding="utf-8") as f:
                f.write(replace(doc, key, body))
    if args.docs:
        shutil.copyfile(
            os.path.join(args.out, "tpe", "pareto.png"), os.path.join(os.path.dirname(args.docs), "search-pareto.png")
        )


if __name__ == "__main__":
    sys.exit(main())
