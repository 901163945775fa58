"""The search space of ``edgekit search``: which recipes a trial may try, and the recipe a trial's
choices make.

A space file is TOML; each key is one dimension. A list is a choice, a table ``{low, high}`` (with
``step`` or ``log = true``) a range, a single value is fixed. Keys the file leaves out keep their
defaults (:data:`DEFAULT_SPACE`), so a file can narrow or widen one dimension only::

    channel_ratio = {low = 0.0, high = 0.75, step = 0.05}   # share of channels removed (0: none)
    stages = [1, 3]                                         # 3: a channel_ratio per third of the model
    sparsity = [0.0, 0.5, 0.8]                              # magnitude pruning (0: none)
    clusters = [0, 16]                                      # weight clustering (0: none)
    qat = [false, true]                                     # quantization-aware training
    quant = ["int8"]                                        # export mode: "int8" and/or "int16x8"
    distill = [false, true]                                 # fine-tunes learn from the input model too
    epochs = {low = 2, high = 16}                           # fine-tune length after pruning
    learning_rate = {low = 2e-4, high = 3e-3, log = true}

A trial's recipe: channel pruning (importance ``|gamma|`` of the following BatchNorm when the model
has BatchNorm layers, else L1) and magnitude pruning are fine-tuned for ``epochs`` at
``learning_rate`` with a cosine schedule; clustering and QAT, which only nudge weights, are
fine-tuned gently (2 epochs at most, learning rate 1e-4, as the demo's variants). With nothing to
apply, the trial exports the input model as it is.

With ``stages`` N > 1 a trial draws one channel ratio per stage (the model's prunable layers in
order, split in N runs), each from ``channel_ratio``'s range: early layers hold most of the
latency, late ones most of the params, and the sampler learns from each trial's measured latency,
size and accuracy how much each stage can give (NetAdapt and AMC do this per layer).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Dict, List, Optional

from edgekit.core.errors import InputError
from edgekit.core.io import read_toml

DEFAULT_SPACE: Dict[str, Any] = {
    "channel_ratio": {"low": 0.0, "high": 0.75, "step": 0.05},
    "stages": [1, 3],
    "sparsity": [0.0, 0.5, 0.8],
    "clusters": [0, 16],
    "qat": [False, True],
    "quant": ["int8"],
    "distill": [False, True],
    "epochs": {"low": 2, "high": 16},
    "learning_rate": {"low": 2e-4, "high": 3e-3, "log": True},
}
QUANTS = ("int8", "int16x8")
# The demo's hand-made recipes (edgekit.app.demo.OPTIMIZED) as points of the space: a new study
# tries them first, so its front is never worse than them. Dimensions a point leaves out are
# irrelevant to its recipe and chosen by the sampler.
HAND_MADE: Dict[str, Dict[str, Any]] = {
    "int8": {},
    "channels 0.5": {"channel_ratio": 0.5, "epochs": 8, "learning_rate": 2e-3},
    "pruned 0.8 (distilled)": {"sparsity": 0.8, "epochs": 6, "learning_rate": 7e-4, "distill": True},
    "clustered 16": {"clusters": 16},
    "QAT int8": {"qat": True},
}
_NONE = {
    "channel_ratio": 0.0,
    "stages": 1,
    "sparsity": 0.0,
    "clusters": 0,
    "qat": False,
    "quant": "int8",
    "distill": False,
}
GENTLE = {"epochs": 2, "learning_rate": 1e-4}  # the fine-tune of clustering and QAT steps
# what each dimension may hold: (check, how to say it)
_VALUES = {
    "channel_ratio": (lambda v: _number(v) and 0 <= v < 1, "a share in [0, 1)"),
    "stages": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8, "a count from 1 to 8"),
    "sparsity": (lambda v: _number(v) and 0 <= v < 1, "a share in [0, 1)"),
    "clusters": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and (v == 0 or 2 <= v <= 256),
        "0 (none) or a count from 2 to 256",
    ),
    "qat": (lambda v: isinstance(v, bool), "true or false"),
    "quant": (lambda v: v in QUANTS, f"one of {', '.join(QUANTS)}"),
    "distill": (lambda v: isinstance(v, bool), "true or false"),
    "epochs": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1000,
        "an integer from 1 to 1000",
    ),
    "learning_rate": (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_space(path: Optional[str] = None, overrides: Optional[dict] = None) -> Dict[str, Any]:
    """The default space with the dimensions of the TOML file at ``path`` (and ``overrides``)
    replaced, checked: every dimension non-empty and within its values, no contradiction."""
    doc: Dict[str, Any] = {}
    where = path or "space"
    if path is not None:
        doc = read_toml(path, "search space")
    doc.update(overrides or {})
    unknown = sorted(set(doc) - set(DEFAULT_SPACE))
    if unknown:
        raise InputError(f"{where}: unknown dimension {unknown[0]!r}; a search space has {', '.join(DEFAULT_SPACE)}")
    space = dict(DEFAULT_SPACE, **doc)
    for key, dim in space.items():
        _check_dimension(key, dim, where)
    if choices(space["qat"]) == [True] and "int8" not in choices(space["quant"]):
        raise InputError(
            f"{where}: qat = true exports int8 only, but quant allows only {choices(space['quant'])}: "
            'add "int8" to quant or allow qat = false'
        )
    return space


def _check_dimension(key: str, dim, where: str) -> None:
    check, says = _VALUES[key]
    at = f"{where}: {key}"
    if isinstance(dim, dict):
        extra = sorted(set(dim) - {"low", "high", "step", "log"})
        if extra or not {"low", "high"} <= set(dim):
            raise InputError(
                f"{at}: a range is a table {{low = ..., high = ...}} with optional step or log; received {dim!r}"
            )
        if key in ("qat", "quant", "distill", "stages"):
            raise InputError(f"{at} is a choice, not a range: give a list such as [false, true]")
        low, high = dim["low"], dim["high"]
        for v in (low, high):
            if not check(v):
                raise InputError(f"{at}: {v!r} is not {says}")
        if low > high:
            raise InputError(f"{at}: low {low} is above high {high}: nothing to search")
        if dim.get("log") and (low <= 0 or dim.get("step")):
            raise InputError(f"{at}: a log range needs low > 0 and no step")
        if "step" in dim and not (_number(dim["step"]) and dim["step"] > 0):
            raise InputError(f"{at}: step must be a positive number; received {dim['step']!r}")
        return
    values = dim if isinstance(dim, list) else [dim]
    if not values:
        raise InputError(f"{at} is an empty list: give at least one value (or leave the key out for its default)")
    for v in values:
        if not check(v):
            raise InputError(f"{at}: {v!r} is not {says}")


def contains(dim, value) -> bool:
    """Whether ``value`` is one of dimension ``dim``'s (a choice, a fixed value or a range's grid point)."""
    if not isinstance(dim, dict):
        return value in choices(dim)
    if not (_number(value) and dim["low"] - 1e-12 <= value <= dim["high"] + 1e-12):
        return False
    step = dim.get("step")
    return not step or abs((value - dim["low"]) / step - round((value - dim["low"]) / step)) < 1e-6


def hand_made(space: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The :data:`HAND_MADE` points that lie in ``space`` (by name), as Optuna's enqueued params
    (a uniform channel ratio given to every stage where the space has no single-stage choice)."""
    points = {}
    n = 1 if 1 in choices(space["stages"]) else choices(space["stages"])[0]
    for name, point in HAND_MADE.items():
        params = dict(_NONE, **point, stages=n)
        if n > 1:
            ratio = params.pop("channel_ratio")
            params.update({f"channel_ratio_{i + 1}": ratio for i in range(n)})
        if all(contains(space[_dimension(k)], v) for k, v in params.items()):
            points[name] = params
    return points


def _dimension(param: str) -> str:
    """The space's dimension of an Optuna param: ``channel_ratio_2`` is drawn from ``channel_ratio``."""
    return "channel_ratio" if param.startswith("channel_ratio_") else param


def choices(dim) -> list:
    """The values a choice dimension allows (a fixed value: itself)."""
    return dim if isinstance(dim, list) else [dim] if not isinstance(dim, dict) else []


def suggest(trial, space: Dict[str, Any]) -> Dict[str, Any]:
    """A trial's values, asked of Optuna's ``trial`` (its sampler chooses); with ``stages`` N > 1,
    ``channel_ratio`` is the list of the N stages' ratios (params ``channel_ratio_1`` ...)."""
    params = {"stages": trial.suggest_categorical("stages", choices(space["stages"]))}
    for key, dim in space.items():
        if key == "stages":
            continue
        if key == "channel_ratio" and params["stages"] > 1:
            params[key] = [_ask(trial, f"{key}_{i + 1}", key, dim) for i in range(params["stages"])]
        else:
            params[key] = _ask(trial, key, key, dim)
    if params["qat"] and params["quant"] != "int8":  # QAT writes int8 ranges: an int16x8 choice means no QAT
        params["qat"] = False
    return params


def _ask(trial, name: str, key: str, dim):
    """One value of dimension ``key`` (a range, a choice or a fixed value) as Optuna's param ``name``."""
    if not isinstance(dim, dict):
        return trial.suggest_categorical(name, choices(dim))
    integer = (
        all(isinstance(dim[k], int) for k in ("low", "high"))
        and isinstance(dim.get("step", 1), int)
        and not dim.get("log")
        and key in ("epochs", "clusters")
    )
    if integer:
        return trial.suggest_int(name, dim["low"], dim["high"], step=dim.get("step", 1))
    return trial.suggest_float(
        name, float(dim["low"]), float(dim["high"]), step=dim.get("step"), log=bool(dim.get("log"))
    )


def recipe_doc(params: Dict[str, Any], batchnorm: bool) -> Optional[dict]:
    """The recipe (a TOML document's tables, as :meth:`edgekit.optimize.Recipe.from_dict` reads
    them) of a trial's values; None when there is nothing to apply."""
    steps: List[dict] = []
    ratios = _ratios(params)
    sparsity, clusters = float(params["sparsity"]), int(params["clusters"])
    if any(ratios):
        share = {"ratio": ratios[0]} if len(ratios) == 1 else {"stages": ratios}
        steps.append({"technique": "channel_prune", **share, "importance": "bn" if batchnorm else "l1"})
    if sparsity > 0:
        steps.append({"technique": "prune", "sparsity": sparsity})
    gentle = dict(GENTLE, epochs=min(GENTLE["epochs"], int(params["epochs"])))
    if clusters:
        # BatchNorm stays when QAT follows: tfmot's cluster-preserving QAT keeps clusters through
        # Conv→BN→ReLU, not through the Conv→ReLU folding would leave (see the demo's PCQAT)
        steps.append(
            {
                "technique": "cluster",
                "clusters": clusters,
                **({"fold_batchnorm": False} if params["qat"] else {}),
                **gentle,
            }
        )
    if params["qat"]:
        steps.append({"technique": "qat", **gentle})
    if not steps:
        return None
    fine_tune = {
        "epochs": int(params["epochs"]),
        "learning_rate": float(f"{params['learning_rate']:.3g}"),
        "schedule": "cosine",
    }
    if params["distill"]:
        fine_tune["distill"] = True
    return {"fine_tune": fine_tune, "steps": steps}


def describe(params: Dict[str, Any]) -> str:
    """A short name of a trial's recipe: "channels 0.45 + prune 0.5 + QAT int8"."""
    parts = []
    ratios = _ratios(params)
    if any(ratios):
        parts.append("channels " + "/".join(f"{r:.2f}" for r in ratios))
    if params["sparsity"] > 0:
        parts.append(f"prune {params['sparsity']:g}")
    if params["clusters"]:
        parts.append(f"cluster {params['clusters']}")
    if params["qat"]:
        parts.append("QAT")
    if parts and params["distill"]:
        parts.append("distill")
    return " + ".join(parts + [params["quant"]])


def _ratios(params: Dict[str, Any]) -> List[float]:
    """A trial's channel ratio, one per stage."""
    ratio = params["channel_ratio"]
    return [round(float(r), 4) for r in (ratio if isinstance(ratio, (list, tuple)) else [ratio])]


def to_toml(doc: Optional[dict], header: str) -> str:
    """A recipe document as TOML (its values are numbers, strings and booleans), after ``header``
    comment lines."""
    import tomli_w

    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments if doc is None else comments + "\n" + tomli_w.dumps(doc)


def fingerprint(space: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(space, sort_keys=True).encode()).hexdigest()[:16]
