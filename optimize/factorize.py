"""Low-rank factorization: a big weight matrix replaced by two thin ones (truncated SVD).

A ``Dense`` kernel W (n_in × n_out) = U Σ Vᵀ; keeping the r largest singular values gives
W ≈ (U_r √Σ_r)(√Σ_r V_rᵀ): a ``Dense(r, use_bias=False)`` then the original ``Dense(n_out)`` with
its bias and activation, r·(n_in + n_out) weights instead of n_in·n_out (a 1000×1000 layer at
rank 100: 200,000 instead of 1,000,000). A ``Conv2D`` kernel (k, k, c_in, c_out) is the same
matrix with rows k·k·c_in: a k×k conv with r filters (same strides, padding, dilation) then a
1×1 conv with the bias and activation. By Eckart–Young the truncated SVD is the best rank-r
approximation in the Frobenius norm; its relative error is √(Σ dropped σ²) / √(Σ σ²). Only
layers that get smaller are factorized; fine-tune afterwards to recover accuracy.

Inside your own training script::

    from edgekit.optimize import FactorizeConfig, factorize_report

    result = factorize_report(model, FactorizeConfig(energy=0.9))
    print(result.summary())
    small = result.model     # a new tf_keras model; fine-tune it, then export
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgekit.core.compat import keras
from edgekit.core.errors import InputError
from edgekit.core.graph import functional, rewrite
from edgekit.core.results import Result, table
from edgekit.optimize.common import check_model, check_selection, with_overrides
from edgekit.optimize.configs import layer_selection, selects
from edgekit.optimize.registry import Technique, register


@dataclass(frozen=True)
class FactorizeConfig:
    """Low-rank factorization by truncated SVD of ``Dense`` (W ≈ U·V: two Dense layers) and
    ``Conv2D`` (a k×k conv with r filters, then a 1×1 conv) kernels. The rank of each layer:
    ``rank`` (fixed), else the least rank keeping ``energy`` of the sum of squared singular
    values, or with ``target_params`` the one energy threshold, shared by all layers, that brings
    the model to that budget. A layer is factorized only when it gets smaller; ``layers``/``skip``
    select them."""

    rank: Optional[int] = None
    energy: float = 0.9
    target_params: Optional[int] = None
    layers: Optional[Tuple[Any, ...]] = None
    skip: Tuple[Any, ...] = ()

    def __post_init__(self):
        if self.rank is not None and self.target_params is not None:
            raise InputError("give rank or target_params, not both")
        if self.rank is not None and int(self.rank) < 1:
            raise InputError(f"rank must be >= 1. Received rank={self.rank}")
        if not 0.0 < float(self.energy) <= 1.0:
            raise InputError(f"energy must be in (0, 1]. Received energy={self.energy}")
        if self.target_params is not None and int(self.target_params) < 1:
            raise InputError(f"target_params must be >= 1. Received target_params={self.target_params}")
        object.__setattr__(self, "layers", layer_selection(self.layers, "layers"))
        object.__setattr__(self, "skip", layer_selection(self.skip, "skip") or ())


@dataclass(frozen=True)
class FactorizedLayer:
    layer: str
    kind: str  # Dense | Conv2D
    shape: tuple  # the kernel's matrix: (rows, columns)
    rank: int  # 0: left as it was
    params_before: int
    params_after: int
    error: float  # relative Frobenius error of the kernel, ||W - U V|| / ||W||
    energy: float  # share of the sum of squared singular values kept

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FactorizeResult(Result):
    model: object
    layers: List[FactorizedLayer]
    params: tuple  # (before, after), the whole model

    def to_dict(self) -> dict:
        return {"params": list(self.params), "layers": [l.to_dict() for l in self.layers]}

    def summary(self, label: Optional[str] = None) -> str:
        """Per layer: rank, params before/after, relative error, kept energy (under ``label``)."""
        rows = [
            [
                l.layer,
                l.kind,
                f"{l.shape[0]}x{l.shape[1]}",
                str(l.rank) if l.rank else "kept",
                f"{l.params_before:,}",
                f"{l.params_after:,}",
                f"{l.error:.4f}",
                f"{l.energy:.3f}",
            ]
            for l in self.layers
        ]
        rows.append(["(model)", "", "", "", f"{self.params[0]:,}", f"{self.params[1]:,}", "", ""])
        text = table(
            ("layer", "kind", "matrix", "rank", "params before", "after", "rel. error", "energy"),
            rows,
            align="lllrrrrr",
        )
        return f"{label}:\n{text}" if label else text


def _factorizable(layer) -> bool:
    if type(layer) is keras.layers.Dense:
        return len(layer.kernel.shape) == 2
    if type(layer) is keras.layers.Conv2D:
        return layer.groups == 1
    return False


def _matrix(layer) -> np.ndarray:
    k = layer.get_weights()[0]
    return k.reshape(-1, k.shape[-1])


def _rank_for_energy(s: np.ndarray, energy: float) -> int:
    e = np.cumsum(s**2)
    return int(np.searchsorted(e, energy * e[-1] - 1e-12 * e[-1]) + 1)


def _plan(model, config: FactorizeConfig, energy: Optional[float]) -> Dict[str, tuple]:
    """{layer name: (rank, singular values, U, Vt)} for the selected layers; rank 0 = unchanged."""
    plan = {}
    for layer in model.layers:
        if (
            not _factorizable(layer)
            or (config.layers is not None and not selects(layer, config.layers))
            or selects(layer, config.skip)
        ):
            continue
        w = _matrix(layer).astype(np.float64)
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        m, n = w.shape
        r = int(config.rank) if config.rank is not None else _rank_for_energy(s, energy)
        r = min(r, len(s))
        plan[layer.name] = (r if r * (m + n) < m * n else 0, s, u, vt)
    return plan


def _build(model, plan):
    def replace(layer, mapped):
        entry = plan.get(layer.name)
        if entry is None or entry[0] == 0:
            return None
        r, s, u, vt = entry
        root = np.sqrt(s[:r])
        first_w = (u[:, :r] * root).astype(np.float32)
        second_w = (root[:, None] * vt[:r]).astype(np.float32)
        weights = layer.get_weights()
        config = layer.get_config()
        if isinstance(layer, keras.layers.Dense):
            first = keras.layers.Dense(r, use_bias=False, name=f"{layer.name}_u", dtype=config.get("dtype"))
            second = keras.layers.Dense.from_config(dict(config, name=f"{layer.name}_v"))
            out = second(first(mapped))
            first.set_weights([first_w])
        else:
            kh, kw, cin, _ = weights[0].shape
            first = keras.layers.Conv2D(
                r,
                (kh, kw),
                strides=layer.strides,
                padding=layer.padding,
                dilation_rate=layer.dilation_rate,
                data_format=layer.data_format,
                use_bias=False,
                name=f"{layer.name}_u",
                dtype=config.get("dtype"),
            )
            second = keras.layers.Conv2D.from_config(
                dict(
                    config,
                    name=f"{layer.name}_v",
                    kernel_size=(1, 1),
                    strides=(1, 1),
                    padding="valid",
                    dilation_rate=(1, 1),
                )
            )
            out = second(first(mapped))
            first.set_weights([first_w.reshape(kh, kw, cin, r)])
            second_w = second_w.reshape(1, 1, r, -1)
        second.set_weights([second_w] + weights[1:])
        return out

    return rewrite(model, replace, "factorize")


def _layers_report(model, plan) -> List[FactorizedLayer]:
    rows = []
    for layer in model.layers:
        if layer.name not in plan:
            continue
        r, s, _, _ = plan[layer.name]
        m, n = _matrix(layer).shape
        kept = float(np.sum(s[:r] ** 2) / np.sum(s**2)) if r else 1.0
        rows.append(
            FactorizedLayer(
                layer=layer.name,
                kind=type(layer).__name__,
                shape=(m, n),
                rank=r,
                params_before=m * n,
                params_after=r * (m + n) if r else m * n,
                error=float(np.sqrt(max(0.0, 1.0 - kept))) if r else 0.0,
                energy=kept,
            )
        )
    return rows


def factorize_report(model, config: FactorizeConfig = FactorizeConfig(), **overrides) -> FactorizeResult:
    """Factorize ``model`` (see :class:`FactorizeConfig`); a new model, per-layer ranks, params
    and reconstruction errors. The caller's model is left untouched."""
    config = with_overrides(config, overrides)
    model = check_model(model, "factorize")
    model = functional(model, "factorize")
    check_selection(model, config.layers, "factorize")
    before = model.count_params()
    if config.target_params is not None:
        if config.target_params >= before:
            plan = _plan(model, config, 1.0)
            plan = {k: (0,) + v[1:] for k, v in plan.items()}
        else:
            plan = _plan_for_budget(model, config, before)
    else:
        plan = _plan(model, config, float(config.energy))
    if not plan:
        raise InputError("factorize: the model has no Dense or Conv2D layer to factorize (check layers/skip)")
    new = _build(model, plan)
    return FactorizeResult(new, _layers_report(model, plan), (before, new.count_params()))


def _plan_for_budget(model, config: FactorizeConfig, before: int):
    """The largest energy threshold (shared by all layers) whose model fits target_params."""
    full = _plan(model, config, 1.0)

    def params(energy: float):
        total = before
        plan = {}
        for name, (_, s, u, vt) in full.items():
            m, n = u.shape[0], vt.shape[1]
            r = _rank_for_energy(s, energy)
            r = r if r * (m + n) < m * n else 0
            plan[name] = (r, s, u, vt)
            total -= (m * n - r * (m + n)) if r else 0
        return total, plan

    # The total is not monotonic in the threshold (a layer whose rank stops paying off is kept
    # whole), so every threshold at which some layer's rank changes is tried.
    candidates = np.unique(np.concatenate([np.cumsum(s**2) / np.sum(s**2) for _, s, _, _ in full.values()]))
    if len(candidates) > 4000:
        candidates = candidates[np.linspace(0, len(candidates) - 1, 4000).astype(int)]
    best_total, best = params(1e-9)
    if best_total > config.target_params:
        raise InputError(
            f"factorize: even rank 1 everywhere leaves {best_total:,} params, above target_params "
            f"{config.target_params:,}; raise the budget or select more layers"
        )
    for energy in candidates:
        total, plan = params(float(energy))
        if best_total < total <= config.target_params:
            best_total, best = total, plan
    return best


def factorize(model, config: FactorizeConfig = FactorizeConfig(), **overrides):
    """:func:`factorize_report`'s model."""
    return factorize_report(model, config, **overrides).model


def _apply(model, config, step):
    rep = factorize_report(model, config)
    step.fine_tune(rep.model)
    return rep.model, replace(rep, model=None)


def _describe(c) -> str:
    return "factorize " + (
        f"rank {c.rank}" if c.rank else f"to {c.target_params:,} params" if c.target_params else f"energy {c.energy:g}"
    )


register(Technique("factorize", FactorizeConfig, _apply, _describe, order=20))
