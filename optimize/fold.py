"""Fold BatchNormalization into the Conv2D / DepthwiseConv2D / Dense layer before it.

``y = γ (W x + b − μ) / √(σ² + ε) + β`` is a layer with kernel ``W·γ/√(σ²+ε)`` (per output
channel) and bias ``(b − μ)·γ/√(σ²+ε) + β``: the same function in inference mode, one layer
fewer. The TFLite converter folds BatchNorm the same way when it converts, *after* any weight
clustering — which multiplies each output channel of a clustered kernel by its own factor. Folding
first keeps clustered kernels at their k shared values in the file (see ``export(per_channel=False)``).
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from edgekit.core.compat import keras
from edgekit.core.graph import calls, functional, rewrite

_FOLDABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _consumers(model) -> Dict[int, int]:
    """How many layers (or model outputs) read each tensor."""
    counts: Dict[int, int] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or len(calls(layer)) != 1:
            continue
        args = layer.input
        for t in args if isinstance(args, (list, tuple)) else [args]:
            counts[id(t)] = counts.get(id(t), 0) + 1
    for t in model.outputs:
        counts[id(t)] = counts.get(id(t), 0) + 1
    return counts


def _foldable(layer, bn, consumers) -> bool:
    return (
        type(layer) in _FOLDABLE  # exact classes: subclasses may compute something else
        and getattr(layer.activation, "__name__", "") == "linear"
        and len(calls(layer)) == 1
        and consumers.get(id(layer.output), 0) == 1
        and bn.axis in ([-1], [len(bn.input_shape) - 1])
        and len(calls(bn)) == 1
    )


def fold_batchnorm(model):
    """A new functional model where every BatchNormalization that directly follows a linear
    Conv2D / DepthwiseConv2D / Dense (its only consumer) is folded into it. Other layers are
    copied with their weights; the outputs are equal in inference mode (float rounding)."""
    model = functional(model, "fold_batchnorm")
    consumers = _consumers(model)
    producer = {id(l.output): l for l in model.layers if len(calls(l)) == 1}
    folded_into = {}  # id(conv) -> bn
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and len(calls(layer)) == 1:
            prev = producer.get(id(layer.input))
            if prev is not None and _foldable(prev, layer, consumers):
                folded_into[id(prev)] = layer
    if not folded_into:
        return model
    skip = {id(bn) for bn in folded_into.values()}

    def replace(layer, mapped):
        if id(layer) in skip:
            return mapped  # the folded conv's output
        bn = folded_into.get(id(layer))
        if bn is None:
            return None
        clone = layer.__class__.from_config(dict(layer.get_config(), use_bias=True))
        out = clone(mapped)
        weights = layer.get_weights()
        kernel = weights[0]
        bias = (
            weights[1]
            if layer.use_bias
            else np.zeros(
                kernel.shape[-1]
                if not isinstance(layer, keras.layers.DepthwiseConv2D)
                else kernel.shape[2] * kernel.shape[3],
                kernel.dtype,
            )
        )
        bw = dict(zip([w.name.split("/")[-1].split(":")[0] for w in bn.weights], bn.get_weights()))
        gamma = bw.get("gamma", np.ones_like(bw["moving_mean"]))
        beta = bw.get("beta", np.zeros_like(bw["moving_mean"]))
        factor = gamma / np.sqrt(bw["moving_variance"] + bn.epsilon)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = kernel * factor.reshape(kernel.shape[2], kernel.shape[3])
        else:
            kernel = kernel * factor
        clone.set_weights(
            [kernel.astype(weights[0].dtype), ((bias - bw["moving_mean"]) * factor + beta).astype(weights[0].dtype)]
        )
        return out

    return rewrite(model, replace, "fold_batchnorm")
