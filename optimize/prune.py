"""Magnitude pruning (unstructured or 2:4) over tfmot, with a schedule fitted to the fine-tune's
length (:class:`edgekit.core.layers.FitLengthSchedule`): tfmot's default ``frequency=100`` prunes
nothing in a fine-tune shorter than 100 steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

from edgekit.core.compat import keras, tfmot
from edgekit.core.errors import InputError
from edgekit.core.layers import FitLengthSchedule
from edgekit.core.wrappers import custom_objects, is_pruned
from edgekit.optimize.common import (
    check_model,
    check_selection,
    copy_model,
    selected,
    with_overrides,
    wrap_and_fine_tune,
)
from edgekit.optimize.configs import layer_selection, selects
from edgekit.optimize.registry import Technique, register

PATTERNS = ("unstructured", "2:4")


@dataclass(frozen=True)
class PruneConfig:
    """Magnitude pruning to ``sparsity`` (unstructured) or 2:4 (``pattern="2:4"``: 2 zeros in every
    4 consecutive input weights, tfmot's ``sparsity_m_by_n``).

    The sparsity ramps up (polynomial, as tfmot's PolynomialDecay) over the first
    ``ramp_fraction`` of the fine-tune and is held for the rest, so the target is reached however
    short the fine-tune is. ``steps`` is the fine-tune length in batches; None takes it from the
    ``fit`` call (epochs × batches per epoch) through :func:`edgekit.optimize.callbacks`."""

    sparsity: float = 0.8
    pattern: str = "unstructured"
    layers: Optional[Tuple[Any, ...]] = None
    skip: Tuple[Any, ...] = ()
    ramp_fraction: float = 0.75
    steps: Optional[int] = None

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise InputError(f"pattern must be one of {', '.join(PATTERNS)}. Received pattern={self.pattern!r}")
        if self.pattern == "unstructured" and not 0.0 < float(self.sparsity) < 1.0:
            raise InputError(f"sparsity must be in (0, 1). Received sparsity={self.sparsity}")
        if not 0.0 < float(self.ramp_fraction) <= 1.0:
            raise InputError(f"ramp_fraction must be in (0, 1]. Received ramp_fraction={self.ramp_fraction}")
        if self.steps is not None and int(self.steps) < 1:
            raise InputError(f"steps must be >= 1. Received steps={self.steps}")
        object.__setattr__(self, "layers", layer_selection(self.layers, "layers"))
        object.__setattr__(self, "skip", layer_selection(self.skip, "skip") or ())


def _prunable(layer) -> bool:
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

    return PruneRegistry.supports(layer)


def _m_by_n_applicable(layer, n=4) -> bool:
    if type(layer) not in (keras.layers.Dense, keras.layers.Conv2D):
        return False
    return int(layer.kernel.shape[-2]) >= n


def prune(model, config: PruneConfig = PruneConfig(), **overrides):
    """Magnitude pruning (see :class:`PruneConfig`): a new model with tfmot's pruning wrappers.
    Fit it with ``callbacks=edgekit.optimize.callbacks(pruned)`` (``fine_tune`` does);
    ``strip`` (or export) removes the wrappers. Layers tfmot cannot prune are left alone, as are —
    for 2:4 — layers other than Dense/Conv2D and those with fewer than 4 input channels."""
    config = with_overrides(config, overrides)
    model = check_model(model, "prune")
    base = copy_model(model)
    check_selection(base, config.layers, "prune")
    schedule = FitLengthSchedule(
        config.sparsity if config.pattern == "unstructured" else 0.5, ramp_fraction=config.ramp_fraction
    )
    if config.steps:
        schedule.set_length(config.steps)
    kwargs = {"pruning_schedule": schedule}
    if config.pattern == "2:4":
        kwargs["sparsity_m_by_n"] = (2, 4)

    def wrap(layer):
        if not selected(layer, config.layers, config.skip) or not _prunable(layer):
            if config.layers is not None and selects(layer, config.layers) and not _prunable(layer):
                raise InputError(
                    "prune: layer '{name}' ({kind}) cannot be pruned by tfmot; remove it from {layers}",
                    params="layers",
                    name=layer.name,
                    kind=type(layer).__name__,
                )
            return layer
        if config.pattern == "2:4" and not _m_by_n_applicable(layer):
            return layer
        return tfmot().sparsity.keras.prune_low_magnitude(layer, **kwargs)

    with custom_objects():
        pruned = keras.models.clone_model(base, clone_function=wrap)
    if not is_pruned(pruned):
        raise InputError(
            "prune: no layer was selected for pruning (check {layers}/{skip}; 2:4 needs Dense or "
            "Conv2D layers with >= 4 input channels)",
            params=("layers", "skip"),
        )
    return pruned


register(
    Technique(
        "prune",
        PruneConfig,
        wrap_and_fine_tune(prune, "PruneLowMagnitude"),
        order=30,
        describe=lambda c: "prune 2:4" if c.pattern == "2:4" else f"prune {c.sparsity:g}",
    )
)
