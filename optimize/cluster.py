"""Weight clustering (parameter sharing) over tfmot: each kernel keeps k distinct values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np

from edgekit.core.compat import keras, tfmot
from edgekit.core.errors import InputError
from edgekit.core.wrappers import custom_objects, is_clustered
from edgekit.optimize.common import (
    check_model,
    check_selection,
    copy_model,
    selected,
    with_overrides,
    wrap_and_fine_tune,
)
from edgekit.optimize.configs import layer_selection
from edgekit.optimize.registry import Technique, register
from edgekit.optimize.weights import layer_kernel

CLUSTER_INITS = ("kmeans++", "linear", "density-based", "random")


@dataclass(frozen=True)
class ClusterConfig:
    """Weight clustering (parameter sharing): each selected kernel keeps ``clusters`` distinct
    values. ``preserve_sparsity`` keeps zeros at zero (None: when the kernels are already sparse,
    e.g. after pruning). ``fold_batchnorm`` first folds BatchNorm into the layer before it, so
    the converter does not rescale each output channel of a clustered kernel afterwards."""

    clusters: int = 16
    init: str = "kmeans++"
    preserve_sparsity: Optional[bool] = None
    fold_batchnorm: bool = True
    layers: Optional[Tuple[Any, ...]] = None
    skip: Tuple[Any, ...] = ()

    def __post_init__(self):
        if int(self.clusters) < 2:
            raise InputError(f"clusters must be >= 2. Received clusters={self.clusters}")
        if self.init not in CLUSTER_INITS:
            raise InputError(f"init must be one of {', '.join(CLUSTER_INITS)}. Received init={self.init!r}")
        object.__setattr__(self, "layers", layer_selection(self.layers, "layers"))
        object.__setattr__(self, "skip", layer_selection(self.skip, "skip") or ())


def is_sparse(model, threshold: float = 0.25) -> bool:
    """The kernels hold on average at least ``threshold`` zeros (the model was pruned)."""
    zeros = [
        float(np.mean(k == 0)) for k in (layer_kernel(l)[1] for l in model.layers) if k is not None and k.size >= 16
    ]
    return bool(zeros) and float(np.mean(zeros)) >= threshold


def _inits():
    c = tfmot().clustering.keras.CentroidInitialization
    return {"kmeans++": c.KMEANS_PLUS_PLUS, "linear": c.LINEAR, "density-based": c.DENSITY_BASED, "random": c.RANDOM}


def _clusterable(layer) -> bool:
    from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import ClusteringRegistry

    return ClusteringRegistry.supports(layer)


def cluster(model, config: ClusterConfig = ClusterConfig(), **overrides):
    """Weight clustering (see :class:`ClusterConfig`). Returns a new model with tfmot's clustering
    wrappers (BatchNorm folded into the preceding layers by default); ``strip`` (or export)
    leaves plain layers whose kernels hold at most ``clusters`` distinct values — export with
    ``per_channel=False`` to keep them so in the file. Kernels with no more weights than clusters
    (no more non-zero weights, when the zeros are kept) are left alone."""
    from edgekit.optimize.fold import fold_batchnorm

    config = with_overrides(config, overrides)
    model = check_model(model, "cluster")
    base = copy_model(model)
    if config.fold_batchnorm:
        base = fold_batchnorm(base)
    check_selection(base, config.layers, "cluster")
    preserve = is_sparse(base) if config.preserve_sparsity is None else bool(config.preserve_sparsity)
    kwargs = {
        "number_of_clusters": int(config.clusters),
        "cluster_centroids_init": _inits()[config.init],
        "preserve_sparsity": preserve,
    }

    def wrap(layer):
        kernel = layer_kernel(layer)[1]
        # the weights tfmot's k-means places centroids among: the non-zeros when it keeps the zeros
        # (fewer than the clusters: "Expected num_to_sample <= points.rows()" from TensorFlow)
        points = 0 if kernel is None else int(np.count_nonzero(kernel)) if preserve else kernel.size
        if not selected(layer, config.layers, config.skip) or not _clusterable(layer) or points <= config.clusters:
            return layer
        return tfmot().clustering.keras.cluster_weights(layer, **kwargs)

    with custom_objects():
        clustered = keras.models.clone_model(base, clone_function=wrap)
    if not is_clustered(clustered):
        raise InputError(
            "cluster: no layer was selected for clustering (check {layers}/{skip}; a kernel with no more weights "
            "than clusters, or no more non-zero weights when the zeros are kept, is left alone)",
            params=("layers", "skip"),
        )
    return clustered


register(
    Technique(
        "cluster",
        ClusterConfig,
        wrap_and_fine_tune(cluster, "ClusterWeights"),
        order=40,
        describe=lambda c: f"cluster {c.clusters}",
    )
)
