"""What a search reports: every trial with its measurements, the float32 baseline, the Pareto front
of the trials within the limits, and the files written for it (search.json, pareto.png, front/)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import TYPE_CHECKING, List, Optional

from edgekit.app.search import space as searchspace
from edgekit.app.search.study import public_url
from edgekit.core.errors import InputError
from edgekit.core.io import write_atomic
from edgekit.core.results import Result, fmt, table

OBJECTIVES = ("quality", "latency", "size")  # accuracy maximized (an error: MAE minimized), minimize, minimize


def quality(m: dict) -> float:
    """A measurement's quality figure: accuracy, or the MAE of a regression model (a study written
    before MAE was searched holds accuracy alone)."""
    return m["quality"] if "quality" in m else m["accuracy"]


def higher_is_better(baseline: dict) -> bool:
    return baseline.get("task", "classification") == "classification"


def quality_drop(baseline: dict, m: dict) -> float:
    """How much worse ``m``'s quality is than the float32 model's, in the search's unit: accuracy
    points, or for an error (MAE) percent of the float32 model's."""
    b, q = quality(baseline), quality(m)
    if higher_is_better(baseline):
        return 100 * (b - q)
    return 100 * (q - b) / b if b > 0 else (0.0 if q <= b else float("inf"))


if TYPE_CHECKING:
    from edgekit.app.search import Limits


@dataclasses.dataclass
class SearchResult(Result):
    """The study's trials (complete and failed), the float32 baseline and the front."""

    directory: str
    study: str
    storage: str
    objectives: list
    limits: dict
    space: dict
    baseline: dict
    trials: list
    front: list  # trial numbers on the Pareto front of the trials within the limits, by latency
    best_within_1pt: Optional[dict] = None
    chart: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        by_number = {t["number"]: t for t in self.trials}
        mcu = any("arena_bytes" in by_number[n] for n in self.front)
        spec = ".4f" if higher_is_better(self.baseline) else ".4g"
        rows = [
            [
                "float32",
                "input model as is",
                fmt(quality(self.baseline), spec),
                fmt(self.baseline["p50_ms"], ".3f"),
                fmt(self.baseline["size_bytes"] / 1024, ",.1f"),
                "1.0×",
                "1.0×",
            ]
            + (["-"] if mcu else [])
        ]
        if self.baseline.get("chance") is not None:
            nothing = "the most frequent class" if higher_is_better(self.baseline) else "always the mean target"
            rows.append(["chance", nothing, fmt(self.baseline["chance"], spec), "", "", "", ""])
            rows[-1] += [""] if mcu else []
        for n in self.front:
            t = by_number[n]
            rows.append(
                [
                    f"trial {n}",
                    t["name"],
                    fmt(quality(t), spec),
                    fmt(t["p50_ms"], ".3f"),
                    fmt(t["size_bytes"] / 1024, ",.1f"),
                    f"{self.baseline['p50_ms'] / t['p50_ms']:.1f}×",
                    f"{self.baseline['size_bytes'] / t['size_bytes']:.1f}×",
                ]
                + ([fmt(t.get("arena_bytes", 0) / 1024, ",.1f")] if mcu else [])
            )
        done = [t for t in self.trials if t["state"] == "COMPLETE"]
        failed = [t for t in self.trials if t["state"] == "FAIL"]
        collapsed = sum(1 for t in failed if t.get("collapsed"))
        metric = self.baseline.get("metric", "accuracy")
        headers = ("point", "recipe", metric, "p50 ms", "size KiB", "faster", "smaller") + (
            ("TFLM arena KiB",) if mcu else ()
        )
        lines = [
            f"Pareto front ({len(self.front)} of {len(done)} complete trials within the limits; {len(failed)} failed"
            + (f", {collapsed} of them by a fine-tune that collapsed the model" if collapsed else "")
            + "):",
            table(headers, rows, align="ll" + "r" * (len(headers) - 2)),
        ]
        b = self.best_within_1pt
        if b:
            within = "1 point" if higher_is_better(self.baseline) else "1%"
            lines.append(
                f"best within {within} of float32: trial {b['number']} ({b['name']}), {metric} "
                f"{quality(b):{spec}}, {b['speedup']:.1f}× faster and {b['smaller']:.1f}× smaller than float32"
            )
        return "\n".join(lines)


def save_results(result: SearchResult, directory: str, log) -> None:
    """search.json, the chart and, for each front member, its recipe TOML and its .tflite."""
    from edgekit.app.charts import pareto_png

    front_dir = os.path.join(directory, "front")
    staged = front_dir + ".tmp"
    shutil.rmtree(staged, ignore_errors=True)
    os.makedirs(staged)
    by_number = {t["number"]: t for t in result.trials}
    for n in result.front:
        t = by_number[n]
        header = (
            f"trial {n} of study {result.study}: {t['name']}\n{result.baseline.get('metric', 'accuracy')} "
            f"{quality(t):.4g}, p50 {t['p50_ms']:.3f} ms "
            f"on {t.get('host') or 'this machine'}, {t['size_bytes']:,} bytes\n"
        )
        quant = t["params"]["quant"]
        if t["recipe"] is None:
            header += f"nothing to apply: export the input model as it is (edgekit export MODEL --quant {quant})"
        elif quant != "int8":
            header += f"reproduce: edgekit optimize MODEL --recipe THIS.toml -o OUT.keras, then export --quant {quant}"
        else:
            header += "reproduce: edgekit optimize MODEL --data DATA --recipe THIS.toml -o OUT.tflite"
        write_atomic(os.path.join(staged, f"trial_{n:03d}.toml"), searchspace.to_toml(t["recipe"], header))
        src = os.path.join(directory, "trials", f"trial_{n:03d}.tflite")
        if os.path.isfile(src):  # trials of other workers: the recipe reproduces them
            shutil.copyfile(src, os.path.join(staged, f"trial_{n:03d}.tflite"))
    shutil.rmtree(front_dir, ignore_errors=True)
    os.replace(staged, front_dir)
    done = [t for t in result.trials if t["state"] == "COMPLETE" and t["feasible"]]
    if done:
        points = [
            {
                "name": "float32",
                "quality": quality(result.baseline),
                "size_bytes": result.baseline["size_bytes"],
                "latency_ms": {"p50": result.baseline["p50_ms"]},
            }
        ]
        points += [
            {
                "name": f"{t['number']}: {t['name']}" if t["number"] in result.front else "",
                "quality": quality(t),
                "size_bytes": t["size_bytes"],
                "latency_ms": {"p50": t["p50_ms"]},
            }
            for t in done
        ]
        metric = result.baseline.get("metric", "accuracy")
        result.chart = pareto_png(
            points,
            os.path.join(directory, "pareto.png"),
            title=f"search {result.study}: {metric} vs p50 latency ({len(done)} trials)",
            key="quality",
            label=f"test {metric} (.tflite)",
            higher=higher_is_better(result.baseline),
        )
    write_atomic(os.path.join(directory, "search.json"), result.to_json() + "\n", overwrite=True)
    log(
        f"wrote {os.path.join(directory, 'search.json')}, {front_dir}/ ({len(result.front)} recipes)"
        + (f", {os.path.join(directory, result.chart)}" if result.chart else "")
    )


def pareto(points: List[dict], higher: bool = True) -> List[int]:
    """Indices of the points no other point dominates on (quality: accuracy ↑ or an error ↓, p50 ↓,
    size ↓)."""
    keys = [(-quality(p) if higher else quality(p), p["p50_ms"], p["size_bytes"]) for p in points]
    return [
        i
        for i, a in enumerate(keys)
        if not any(all(x <= y for x, y in zip(b, a)) and b != a for j, b in enumerate(keys) if j != i)
    ]


def collect(st, directory: str, storage: Optional[str], limits: Limits, space: dict, baseline: dict) -> SearchResult:
    """Every trial of the study with its measurements, and the front of those within the limits."""
    rows = []
    for t in st.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):
            continue
        m = t.user_attrs.get("measured") or {}
        row = {
            "number": t.number,
            "state": t.state.name,
            "name": t.user_attrs.get("name"),
            "params": t.params,
            "recipe": t.user_attrs.get("recipe"),
            "worker": t.user_attrs.get("worker"),
            "error": t.user_attrs.get("error"),
            "collapsed": bool(t.user_attrs.get("collapsed")),
            "hand_made": t.user_attrs.get("hand_made"),
            "duplicate_of": t.user_attrs.get("duplicate_of"),
            **m,
        }
        if m:
            row["feasible"] = limits.met(m, baseline)
            row["beyond"] = sorted(k for k, v in limits.violations(m, baseline).items() if v > 0)
        else:
            row["feasible"] = False
        rows.append(row)
    feasible = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"] and r.get("duplicate_of") is None]
    front = sorted((feasible[i] for i in pareto(feasible, higher_is_better(baseline))), key=lambda r: r["p50_ms"])
    close = [r for r in feasible if quality_drop(baseline, r) <= 1.0]  # 1 point, or 1% of an error
    best = None
    if close:
        b = min(close, key=lambda r: (r["p50_ms"], r["size_bytes"]))
        best = {
            "number": b["number"],
            "name": b["name"],
            "quality": quality(b),
            "accuracy": b.get("accuracy"),
            "p50_ms": b["p50_ms"],
            "size_bytes": b["size_bytes"],
            "speedup": baseline["p50_ms"] / b["p50_ms"],
            "smaller": baseline["size_bytes"] / b["size_bytes"],
        }
    return SearchResult(
        directory=directory,
        study=st.study_name,
        storage=public_url(storage) if storage else os.path.join(directory, "study.log"),
        objectives=list(OBJECTIVES),
        limits=dataclasses.asdict(limits),
        space=space,
        baseline=baseline,
        trials=rows,
        front=[r["number"] for r in front],
        best_within_1pt=best,
    )


def check_limits(result: SearchResult, limits: Limits) -> None:
    """No complete trial within the limits: say which limit held them back, with the best value seen."""
    done = [t for t in result.trials if t["state"] == "COMPLETE"]
    if not done or result.front:
        return
    counts = {}
    for t in done:
        for k in t["beyond"]:
            counts[k] = counts.get(k, 0) + 1
    k = max(counts, key=counts.get)
    best = {
        "max_drop": "the smallest drop seen: "
        f"{min(quality_drop(result.baseline, t) for t in done):.2f} "
        + ("points" if higher_is_better(result.baseline) else "% of the float32 MAE"),
        "max_latency": f"the fastest seen: {min(t['p50_ms'] for t in done):.3f} ms",
        "max_size": f"the smallest seen: {min(t['size_bytes'] for t in done) / 1000:,.1f} KB",
        "board": "no trial's arena and flash fit the board",
    }[k]
    value = getattr(limits, k, None)
    raise InputError(
        "none of the {count} complete trials meets {%s}{value} ({best}); relax it or widen the search space" % k,
        params=k,
        count=len(done),
        value=f" {value:g}" if value is not None else "",
        best=best,
    )
