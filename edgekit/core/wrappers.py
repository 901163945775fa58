"""tfmot's wrappers as every layer meets them: whether a model is pruned, clustered or
quantization-aware, stripping the training wrappers, and the scope that loads them.

The optimize layer puts the wrappers on; the converters meet them in the models they export;
loading meets them in files. All of that is here, in one place below both. TensorFlow and tfmot
are imported when a function runs, so importing this module (and the converters) stays cheap.
"""

from __future__ import annotations

import contextlib

import numpy as np

from edgekit.core.errors import InputError


def tfmot():
    from edgekit.core.compat import tfmot as module

    return module()


def is_pruned(model) -> bool:
    """Some layer is wrapped for magnitude pruning."""
    return any(type(l).__name__ == "PruneLowMagnitude" for l in model.layers)


def is_clustered(model) -> bool:
    """Some layer is wrapped for weight clustering."""
    return any(type(l).__name__ == "ClusterWeights" for l in model.layers)


def is_qat(model) -> bool:
    """The model is quantization-aware (tfmot's quantize wrappers)."""
    return any(type(l).__name__.startswith("Quantize") for l in model.layers)


def pruning_steps(model) -> int:
    """The fewest steps any pruning wrapper of ``model`` has taken (-1: never stepped)."""
    steps = [int(np.asarray(l.pruning_step.numpy())) for l in model.layers if type(l).__name__ == "PruneLowMagnitude"]
    return min(steps) if steps else 0


def strip(model):
    """A copy without pruning or clustering wrappers: plain layers holding the pruned/clustered
    weights, ready for export (QAT wrappers stay: the converter reads them). A model whose pruning
    wrappers never stepped — fitted without the callbacks pruning needs, or not fitted — has
    no zeros, and stripping it is an error that says so rather than a silently dense model."""
    if is_pruned(model):
        if pruning_steps(model) < 0:
            raise InputError(
                "the model's pruning wrappers never stepped, so it has no zeros: fine-tune it with "
                "callbacks=edgekit.optimize.callbacks(model) in fit (edgekit.optimize.fine_tune adds them)"
            )
        model = tfmot().sparsity.keras.strip_pruning(model)
    if is_clustered(model):
        model = tfmot().clustering.keras.strip_clustering(model)
    return model


@contextlib.contextmanager
def custom_objects():
    """Every custom object a model edgekit wrote may hold: tfmot's wrappers, quantizers and
    schemes, and edgekit's own (:mod:`edgekit.core.layers`)."""
    from edgekit.core.compat import keras
    from edgekit.core.layers import CUSTOM_OBJECTS

    mod = tfmot()
    with contextlib.ExitStack() as stack:
        stack.enter_context(mod.sparsity.keras.prune_scope())
        stack.enter_context(mod.clustering.keras.cluster_scope())
        stack.enter_context(mod.quantization.keras.quantize_scope(dict(CUSTOM_OBJECTS)))
        stack.enter_context(keras.utils.custom_object_scope(dict(CUSTOM_OBJECTS)))
        yield
