"""The verbs: ``prune``, ``cluster``, ``qat`` over tfmot, plus ``strip``, ``save_model`` and
``load_model``.

Each verb takes a tf_keras model and a frozen config and returns a **new** model: the caller's
model is copied first (tfmot wraps the original layer objects, so training the wrapped model
would otherwise change the caller's weights). Wrappers of an earlier technique are stripped
before the next one is applied. The callbacks a technique needs are wired into the returned
model's ``fit``, so the user's own ``model.fit(...)`` works as is.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import re
from typing import Optional

import numpy as np

from edgekit._compat import keras, tf
from edgekit.errors import InputError
from edgekit.optimize.configs import ClusterConfig, PruneConfig, QATConfig, selects
from edgekit.optimize.weights import layer_kernel

import tensorflow_model_optimization as tfmot  # noqa: E402  (after _compat: tf_keras)

from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude  # noqa: E402
from tensorflow_model_optimization.python.core.clustering.keras.cluster_wrapper import ClusterWeights  # noqa: E402
from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import (  # noqa: E402
    ClusteringRegistry,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_registry as _q8,
)

_sparsity = tfmot.sparsity.keras
_clustering = tfmot.clustering.keras
_quant = tfmot.quantization.keras

_INITS = {
    "kmeans++": _clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
    "linear": _clustering.CentroidInitialization.LINEAR,
    "density-based": _clustering.CentroidInitialization.DENSITY_BASED,
    "random": _clustering.CentroidInitialization.RANDOM,
}


# -- the model the user gave ---------------------------------------------------------------

def check_model(model, verb: str) -> None:
    """The models tfmot can wrap: tf_keras, functional or Sequential, no nested models."""
    from edgekit.converters import check_model as check_keras

    if not isinstance(model, keras.Model):
        check_keras(model)  # says what it is instead (a Keras 3 model, ...)
    if not (getattr(model, "_is_graph_network", False) or isinstance(model, keras.Sequential)):
        raise InputError(
            f"{verb}: {type(model).__name__} is a subclassed model; tfmot wraps the layers of functional "
            "or Sequential models only: rebuild it with the functional API")
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise InputError(
                f"{verb}: layer '{layer.name}' is a nested model; tfmot needs a flat model: rebuild it with "
                f"the nested model's layers inline (e.g. call keras.applications models on an Input "
                f"with `input_tensor=`)")
    check_keras(model)


def strip(model):
    """A copy without pruning or clustering wrappers: plain layers holding the pruned/clustered
    weights, ready for export (QAT wrappers stay: the converter reads them)."""
    if any(isinstance(l, PruneLowMagnitude) for l in model.layers):
        model = _sparsity.strip_pruning(model)
    if any(isinstance(l, ClusterWeights) for l in model.layers):
        model = _clustering.strip_clustering(model)
    return model


def copy_model(model):
    """A copy with its own weights (stripped of earlier pruning/clustering wrappers)."""
    model = strip(model)
    with custom_objects():
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _selected(layer, layers, skip) -> bool:
    if skip and selects(layer, skip):
        return False
    return layers is None or selects(layer, layers)


def _check_selection(model, spec, verb):
    """Every explicit selection entry must match some layer (a typo is an error, not a no-op)."""
    for s in spec or ():
        if not any(selects(l, (s,)) for l in model.layers):
            names = ", ".join(l.name for l in model.layers[:12])
            raise InputError(f"{verb}: no layer matches {s!r}; the model's layers are {names}"
                             + (" …" if len(model.layers) > 12 else ""))


# -- fit wiring ----------------------------------------------------------------------------

def fit_steps(arguments: dict) -> Optional[int]:
    """Batches a ``fit`` call will run (epochs × batches per epoch), None when unknowable."""
    epochs = int(arguments.get("epochs", 1)) - int(arguments.get("initial_epoch", 0))
    per_epoch = arguments.get("steps_per_epoch")
    x = arguments.get("x")
    if per_epoch is None:
        if isinstance(x, tf.data.Dataset):
            n = int(x.cardinality().numpy())
            per_epoch = n if n > 0 else None
        elif hasattr(x, "__len__") and not isinstance(x, dict):
            first = x[0] if isinstance(x, (list, tuple)) else x
            size = len(first) if hasattr(first, "__len__") else None
            if isinstance(x, keras.utils.Sequence):
                size, batch = len(x), 1
            else:
                batch = arguments.get("batch_size") or 32
            per_epoch = math.ceil(size / batch) if size else None
    return max(1, epochs) * per_epoch if per_epoch else None


def _wire_fit(model, callbacks, before_fit=None) -> None:
    """Make ``model.fit`` add ``callbacks()`` (unless the caller passed one of the same type) and
    call ``before_fit(arguments)`` first."""
    original = model.fit
    signature = inspect.signature(original)

    def fit(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs)
        if before_fit:
            before_fit(bound.arguments)
        given = list(bound.arguments.get("callbacks") or [])
        for cb in callbacks():
            if not any(isinstance(c, type(cb)) for c in given):
                given.append(cb)
        bound.arguments["callbacks"] = given
        return original(*bound.args, **bound.kwargs)

    fit.__doc__ = original.__doc__
    object.__setattr__(model, "fit", fit)  # not a tracked Keras attribute
    object.__setattr__(model, "_edgekit_fit_hooks", (callbacks, before_fit))  # a Distiller wires them too


# -- prune ---------------------------------------------------------------------------------

@keras.utils.register_keras_serializable(package="edgekit")
class FitLengthSchedule(_sparsity.PruningSchedule):
    """Polynomial ramp (cubic, as tfmot's PolynomialDecay) from 0 to ``target`` over steps
    0…``end_step``, masks updated every ``frequency`` steps with the last update exactly at
    ``end_step``; held afterwards. ``end_step`` can be set when the fine-tune length becomes
    known (at ``fit``): it is a variable read at run time."""

    def __init__(self, target: float, end_step: int = -1, frequency: int = 1):
        self.target = float(target)
        self.end_step = tf.Variable(int(end_step), dtype=tf.int64, trainable=False)
        self.frequency = tf.Variable(max(1, int(frequency)), dtype=tf.int64, trainable=False)

    def set_length(self, steps: int, ramp_fraction: float) -> None:
        # tfmot's wrapper never updates masks at step 0 (measured): the last update must be at >= 1.
        if int(steps) < 2:
            raise InputError(f"prune: a fine-tune of {steps} step(s) cannot prune; masks are updated from the "
                             "second step on: fine-tune for at least 2 batches")
        end = max(1, int(math.floor(ramp_fraction * (int(steps) - 1))))
        self.end_step.assign(end)
        self.frequency.assign(max(1, end // 32))

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        end = self.end_step
        in_range = tf.logical_and(step >= 0, step <= end)
        on_beat = tf.equal(tf.math.floormod(end - step, self.frequency), 0)
        frac = tf.where(end > 0, tf.cast(step, tf.float32) / tf.cast(tf.maximum(end, 1), tf.float32), 1.0)
        frac = tf.clip_by_value(frac, 0.0, 1.0)
        sparsity = self.target * (1.0 - tf.pow(1.0 - frac, 3.0))
        return tf.logical_and(in_range, on_beat), sparsity

    def get_config(self):
        return {"class_name": "FitLengthSchedule",
                "config": {"target": self.target, "end_step": int(self.end_step.numpy()),
                           "frequency": int(self.frequency.numpy())}}

    @classmethod
    def from_config(cls, config):
        return cls(**config.get("config", config))


def _m_by_n_applicable(layer, n=4) -> bool:
    if type(layer) not in (keras.layers.Dense, keras.layers.Conv2D):
        return False
    return int(layer.kernel.shape[-2]) >= n


def prune(model, config: PruneConfig = PruneConfig(), **overrides):
    """Magnitude pruning (see :class:`PruneConfig`). Returns a new model with tfmot's pruning
    wrappers whose ``fit`` carries the ``UpdatePruningStep`` callback; ``strip`` (or export)
    removes the wrappers. Layers tfmot cannot prune are left alone, as are — for 2:4 — layers
    other than Dense/Conv2D and those with fewer than 4 input channels."""
    if overrides:
        config = PruneConfig(**{**config.__dict__, **overrides})
    check_model(model, "prune")
    base = copy_model(model)
    _check_selection(base, config.layers, "prune")
    schedule = FitLengthSchedule(config.sparsity if config.pattern == "unstructured" else 0.5)
    if config.steps:
        schedule.set_length(config.steps, config.ramp_fraction)
    kwargs = {"pruning_schedule": schedule}
    if config.pattern == "2:4":
        kwargs["sparsity_m_by_n"] = (2, 4)

    def wrap(layer):
        if not _selected(layer, config.layers, config.skip) or not PruneRegistry.supports(layer):
            if config.layers is not None and selects(layer, config.layers) and not PruneRegistry.supports(layer):
                raise InputError(f"prune: layer '{layer.name}' ({type(layer).__name__}) cannot be pruned by tfmot; "
                                 "remove it from `layers`")
            return layer
        if config.pattern == "2:4" and not _m_by_n_applicable(layer):
            return layer
        return _sparsity.prune_low_magnitude(layer, **kwargs)

    with custom_objects():
        pruned = keras.models.clone_model(base, clone_function=wrap)
    if not any(isinstance(l, PruneLowMagnitude) for l in pruned.layers):
        raise InputError("prune: no layer was selected for pruning (check `layers`/`skip`; 2:4 needs Dense or "
                         "Conv2D layers with >= 4 input channels)")

    def before_fit(arguments):
        if int(schedule.end_step.numpy()) >= 0:
            return
        steps = fit_steps(arguments)
        if steps is None:
            raise InputError("prune: cannot tell how many steps fit() will run; pass steps_per_epoch to fit() "
                             "or PruneConfig(steps=N)")
        schedule.set_length(steps, config.ramp_fraction)

    _wire_fit(pruned, lambda: [_sparsity.UpdatePruningStep()], before_fit)
    pruned._edgekit_schedule = schedule
    return pruned


# -- cluster -------------------------------------------------------------------------------

def _is_sparse(model, threshold: float = 0.25) -> bool:
    zeros = [float(np.mean(k == 0)) for k in (layer_kernel(l)[1] for l in model.layers) if k is not None and k.size >= 16]
    return bool(zeros) and float(np.mean(zeros)) >= threshold


def _is_clustered(model) -> bool:
    """Some kernel of 512+ weights holds at most 256 distinct values and at most one per 8
    weights (tfmot's cluster-preserving QAT then keeps each such layer's clusters; depthwise
    kernels are never clustered). An unclustered kernel has about one value per weight."""
    kernels = [k for k in (layer_kernel(l)[1] for l in model.layers if not isinstance(l, keras.layers.DepthwiseConv2D))
               if k is not None and k.size >= 512]
    return any(len(np.unique(k)) <= min(256, k.size // 8) for k in kernels)


def cluster(model, config: ClusterConfig = ClusterConfig(), **overrides):
    """Weight clustering (see :class:`ClusterConfig`). Returns a new model with tfmot's clustering
    wrappers (BatchNorm folded into the preceding layers by default); ``strip`` (or export)
    leaves plain layers whose kernels hold at most ``clusters`` distinct values — export with
    ``per_channel=False`` to keep them so in the file. Kernels with no more weights than clusters
    are left alone."""
    if overrides:
        config = ClusterConfig(**{**config.__dict__, **overrides})
    check_model(model, "cluster")
    base = copy_model(model)
    if config.fold_batchnorm:
        from edgekit.optimize.fold import fold_batchnorm

        base = fold_batchnorm(base)
    _check_selection(base, config.layers, "cluster")
    preserve = _is_sparse(base) if config.preserve_sparsity is None else bool(config.preserve_sparsity)
    kwargs = {"number_of_clusters": int(config.clusters), "cluster_centroids_init": _INITS[config.init],
              "preserve_sparsity": preserve}

    def wrap(layer):
        kernel = layer_kernel(layer)[1]
        if (not _selected(layer, config.layers, config.skip) or not ClusteringRegistry.supports(layer)
                or kernel is None or kernel.size <= config.clusters):
            return layer
        return _clustering.cluster_weights(layer, **kwargs)

    with custom_objects():
        clustered = keras.models.clone_model(base, clone_function=wrap)
    if not any(isinstance(l, ClusterWeights) for l in clustered.layers):
        raise InputError("cluster: no layer was selected for clustering (check `layers`/`skip`)")
    clustered._edgekit_preserve_sparsity = preserve
    return clustered


# -- qat -----------------------------------------------------------------------------------

def _tfmot_supports(layer) -> bool:
    return _q8.Default8BitQuantizeRegistry().supports(layer)


def qat(model, config: QATConfig = QATConfig(), **overrides):
    """Quantization-aware training (see :class:`QATConfig`): a new model with fake-quantization
    that the int8 export turns into a fully integer ``.tflite``. Layers tfmot's registry rejects
    get edgekit's QuantizeConfigs (Multiply, Rescaling, other activations, …); a layer nobody
    can quantize is an error naming it and saying how to skip it or give a config."""
    from edgekit.optimize.quantize_configs import CUSTOM_OBJECTS, edgekit_config

    if overrides:
        config = QATConfig(**{**config.__dict__, **overrides})
    check_model(model, "qat")
    base = copy_model(model)
    _check_selection(base, config.layers, "qat")
    preserve = config.preserve
    if preserve == "auto":
        sparse, clustered = _is_sparse(base), _is_clustered(base)
        preserve = "both" if sparse and clustered else "sparsity" if sparse else "clusters" if clustered else "none"
    combine = tfmot.experimental.combine
    scheme = {
        "none": lambda: None,  # tfmot's default 8-bit scheme
        "sparsity": combine.Default8BitPrunePreserveQuantizeScheme,
        "clusters": lambda: combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False),
        "both": lambda: combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True),
    }[preserve]()

    def annotate(layer):
        if isinstance(layer, keras.layers.InputLayer) or not _selected(layer, config.layers, config.skip):
            return layer
        own = config.configs.get(layer.name)
        if own is None and (not _tfmot_supports(layer) or isinstance(layer, keras.layers.Activation)):
            own = edgekit_config(layer)  # None: tfmot decides (BatchNormalization folds into its conv)
        return _quant.quantize_annotate_layer(layer, quantize_config=own)

    with custom_objects():
        annotated = keras.models.clone_model(base, clone_function=annotate)
        scope = dict(CUSTOM_OBJECTS, **{type(c).__name__: type(c) for c in config.configs.values()})
        with _quant.quantize_scope(scope):
            try:
                quantized = _quant.quantize_apply(annotated, scheme) if scheme else _quant.quantize_apply(annotated)
            except (RuntimeError, ValueError) as exc:
                text = " ".join(str(exc).split())
                m = re.search(r"Layer (\S+?):<class '[\w.]*?(\w+)'> is not supported", text)
                if m:
                    name, kind = m.groups()
                    raise InputError(
                        f"qat: layer '{name}' ({kind}) has no QuantizeConfig; leave it in float with "
                        f"QATConfig(skip=('{name}',)) (--qat-skip {name}), or pass "
                        f"QATConfig(configs={{'{name}': YourQuantizeConfig()}})") from None
                raise InputError(f"qat: tfmot cannot quantize this model: {text[:300]}") from None
    quantized._edgekit_preserve = preserve
    return quantized


# -- saving and loading --------------------------------------------------------------------

@contextlib.contextmanager
def custom_objects():
    """Every custom object an optimized model may hold: tfmot's wrappers, quantizers and
    schemes, edgekit's QuantizeConfigs and pruning schedule."""
    from edgekit.optimize.quantize_configs import CUSTOM_OBJECTS

    with contextlib.ExitStack() as stack:
        stack.enter_context(_sparsity.prune_scope())
        stack.enter_context(_clustering.cluster_scope())
        stack.enter_context(_quant.quantize_scope(dict(CUSTOM_OBJECTS)))
        stack.enter_context(keras.utils.custom_object_scope({"FitLengthSchedule": FitLengthSchedule}))
        yield


def is_qat(model) -> bool:
    return any(type(l).__name__.startswith("Quantize") for l in model.layers)


def check_save_path(path: str, qat_model: bool) -> None:
    """A quantization-aware model needs a directory name (SavedModel), not .keras or .h5."""
    if qat_model and path.endswith((".keras", ".h5")):
        raise InputError(f"{path}: a quantization-aware model is saved as a SavedModel directory (tfmot's wrappers "
                         f"do not reload from {os.path.splitext(path)[1]}); give a directory name, e.g. "
                         f"{os.path.splitext(path)[0]}_qat")


def save_model(model, path, overwrite: bool = False) -> str:
    """Save atomically under edgekit's output policy (:mod:`edgekit._io`). Pruning/clustering
    wrappers are stripped first. A QAT model is written as a SavedModel directory (tfmot's quantize
    wrappers do not reload from .keras or .h5: measured with tfmot 0.8, 'expected 5 variables, but
    received 3'); other models as given by the suffix."""
    from edgekit._io import check_output, commit_dir, commit_file, staging_dir

    model = strip(model)
    path = os.fspath(path)
    check_save_path(path, is_qat(model))
    as_dir = is_qat(model) or not path.endswith((".keras", ".h5"))
    check_output(path, overwrite=overwrite, directory=as_dir)
    with staging_dir(path) as tmp:
        target = os.path.join(tmp, "model" + ("" if as_dir else os.path.splitext(path)[1]))
        if as_dir:
            model.save(target, save_format="tf", include_optimizer=False)
            commit_dir(target, path, overwrite)
        else:
            model.save(target)
            commit_file(target, path, overwrite)
    return path


def load_model(path: str):
    """Load a model edgekit (or tfmot) wrote, with every custom object it may need."""
    from edgekit.converters import load_keras_model

    return load_keras_model(path)
