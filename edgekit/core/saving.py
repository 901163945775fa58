"""Loading and saving Keras models, safely.

:func:`load_keras_model` reads the file first without running any of it
(:func:`edgekit.core.modelfile.scan`), then loads it with tf_keras and every custom object edgekit's
files may hold. :func:`save_model` writes under edgekit's output policy (:mod:`edgekit.core.io`).
"""

from __future__ import annotations

import os
import warnings

from edgekit.core.errors import InputError


def as_tf_keras(model, x=None):
    """``model`` as a tf_keras model: a Keras 3 model is translated (and the translation checked,
    on ``x`` when given: :func:`edgekit.core.bridge.from_keras3`); anything else must already be a
    built, single-input tf_keras model (:func:`check_model`)."""
    from edgekit.core.bridge import from_keras3, is_keras3_model

    if is_keras3_model(model):
        model = from_keras3(model, x=x)
    check_model(model)
    return model


def check_model(model) -> None:
    """A clear error for anything that is not a built tf_keras model."""
    from edgekit.core.compat import keras

    if isinstance(model, keras.Model):
        if not model.built or not model.inputs:
            raise InputError(
                f"model '{model.name}' has no defined inputs; build it with keras.Input(...) "
                f"(a functional or Sequential model with an input shape)"
            )
        return
    kind = f"{type(model).__module__}.{type(model).__name__}"
    if type(model).__module__.startswith("keras"):
        raise InputError(
            f"received a Keras 3 model ({kind}) where a tf_keras model is needed: translate it "
            f"first with edgekit.core.bridge.from_keras3(model) (the verbs and export do it themselves)"
        )
    from edgekit.core.savedmodel import is_savedmodel_graph

    if is_savedmodel_graph(model):
        raise InputError(
            f"{model.path} is a SavedModel without Keras metadata: edgekit exports and verifies it, but "
            f"rewriting it (pruning, clustering, QAT, channel pruning …) needs the Keras model: give its .keras file"
        )
    raise InputError(f"expected a Keras model, received {kind}")


def load_model(path, safe_mode: bool = True):
    """What ``edgekit export`` takes: a Keras model (:func:`load_keras_model`), or a SavedModel
    without Keras metadata as its serving signature
    (:class:`edgekit.core.savedmodel.SavedModelGraph`), loaded once the scan found nothing in its
    graphs that touches files or runs Python."""
    from edgekit.core.modelfile import scan
    from edgekit.core.savedmodel import SavedModelGraph

    found = scan(path, safe_mode=safe_mode)
    if found.format == "savedmodel" and not found.has_keras_metadata:
        return SavedModelGraph(path)
    return load_keras_model(path, safe_mode=safe_mode)


def load_keras_model(path, safe_mode: bool = True):
    """Load a ``.keras``/``.h5`` file or a SavedModel directory with tf_keras, including models
    written by ``edgekit optimize`` (tfmot wrappers, edgekit's QuantizeConfigs).

    The file is read first without running any of it (:func:`edgekit.core.modelfile.scan`): a model
    that would run Python when loaded (a Lambda layer, an unknown module) is refused with
    :class:`~edgekit.core.errors.UnsafeModelError` unless ``safe_mode=False``, and sizes are checked
    against :mod:`edgekit.core.limits`."""
    from edgekit.core.compat import keras
    from edgekit.core.modelfile import scan
    from edgekit.core.wrappers import custom_objects

    path = os.fspath(path)
    found = scan(path, safe_mode=safe_mode)
    if found.format == "savedmodel" and not found.has_keras_metadata:
        raise InputError(
            f"{path} is a SavedModel without Keras metadata (e.g. written by tf.saved_model.save or Keras 3's "
            f"model.export): 'edgekit export' converts and verifies it; the other verbs rewrite a Keras model: "
            f"give the .keras file the model was saved to"
        )
    if found.keras3:
        return _compiled_with(_load_keras3(path, safe_mode), found.loss)
    try:
        with warnings.catch_warnings(), custom_objects():
            warnings.simplefilter("ignore")
            model = keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:  # corrupt zip, wrong format, missing custom object ...
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        hint = (
            " (a Keras 3 file? its metadata.json names no keras_version 3.x)"
            if "batch_shape" in text or "Unrecognized keyword" in text
            else ""
        )
        raise InputError(
            f"cannot load {path} as a Keras model ({type(exc).__name__}: {text}){hint}; "
            f"expected a .keras or .h5 file or a SavedModel directory saved by tf_keras or Keras 3"
        ) from None
    check_model(model)
    return _compiled_with(model, found.loss)


def _compiled_with(model, loss):
    """``model`` (loaded without compiling: nothing of the file runs) with ``loss`` the file's
    compile configuration named, as ``model.loss``, which tells the verbs the model's task
    (:func:`edgekit.core.task.resolve`); the model is not compiled."""
    from edgekit.core.task import loss_name

    if loss is not None and getattr(model, "loss", None) is None and loss_name(loss):
        model.loss = loss_name(loss)
    return model


def _load_keras3(path: str, safe_mode: bool):
    """A ``.keras`` file written by Keras 3 (any backend): loaded with Keras 3, then translated to
    tf_keras and the translation checked (:mod:`edgekit.core.bridge`)."""
    from edgekit.core.bridge import from_keras3
    from edgekit.core.compat import keras3

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            k3 = keras3().saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise InputError(f"cannot load {path} with Keras 3 ({type(exc).__name__}: {text})") from None
    return from_keras3(k3)


def check_save_path(path: str, qat_model: bool) -> None:
    """A quantization-aware model needs a directory name (SavedModel), not .keras or .h5."""
    if qat_model and path.endswith((".keras", ".h5")):
        raise InputError(
            f"{path}: a quantization-aware model is saved as a SavedModel directory (tfmot's wrappers "
            f"do not reload from {os.path.splitext(path)[1]}); give a directory name, e.g. "
            f"{os.path.splitext(path)[0]}_qat"
        )


def save_model(model, path, overwrite: bool = False) -> str:
    """Save atomically under edgekit's output policy (:mod:`edgekit.core.io`). Pruning/clustering
    wrappers are stripped first. A QAT model is written as a SavedModel directory (tfmot's quantize
    wrappers do not reload from .keras or .h5: measured with tfmot 0.8, 'expected 5 variables, but
    received 3'); other models as given by the suffix."""
    from edgekit.core.bridge import is_keras3_model
    from edgekit.core.io import check_output, commit_dir, commit_file, staging_dir
    from edgekit.core.wrappers import is_qat, strip

    path = os.fspath(path)
    if is_keras3_model(model):
        if not path.endswith(".keras"):
            raise InputError(f"{path}: a Keras 3 model is saved as a .keras file; give a name ending in .keras")
        check_output(path, overwrite=overwrite)
        with staging_dir(path) as tmp:
            target = os.path.join(tmp, "model.keras")
            model.save(target)
            commit_file(target, path, overwrite)
        return path
    model = strip(model)
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
