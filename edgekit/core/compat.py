"""The one place that imports TensorFlow, Keras and tfmot.

tfmot works only with Keras 2 (the ``tf_keras`` package) and picks its Keras when it is first
imported, as TensorFlow's ``tf.keras`` does, so ``TF_USE_LEGACY_KERAS=1`` is set before either is
imported. Every other module gets ``tf``, ``keras`` and :func:`tfmot` from here and never imports
them itself. Users get the same Keras as ``from edgekit import keras``.

A Keras 3 training script (``import keras`` first) is fine: tf_keras is a package of its own,
and TensorFlow resolves ``tf.keras`` lazily. What cannot work is tfmot imported before edgekit
without ``TF_USE_LEGACY_KERAS=1``: it is then bound to Keras 3, which it does not support, and
:func:`tfmot` says so.
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) is noise on a CPU-only machine.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras", "keras3", "tfmot", "is_keras_model"]


def is_keras_model(obj) -> bool:
    """True for a tf_keras model (Keras 2). A Keras 3 model is a different class."""
    return isinstance(obj, keras.Model)


def tfmot():
    """The ``tensorflow_model_optimization`` module, checked to work on tf_keras."""
    import tensorflow_model_optimization as mod
    from tensorflow_model_optimization.python.core.keras.compat import keras as tfmot_keras

    if tfmot_keras.Model is not keras.Model:
        from edgekit.core.errors import EdgekitError

        raise EdgekitError(
            "tensorflow_model_optimization was imported before edgekit without "
            "TF_USE_LEGACY_KERAS=1, so it is bound to Keras 3, which it does not support: import "
            "edgekit (or set TF_USE_LEGACY_KERAS=1) before tensorflow_model_optimization"
        )
    return mod


def keras3():
    """Keras 3 (the ``keras`` package TensorFlow 2.16+ installs), for translating Keras 3 models."""
    import keras as module

    if not module.__version__.startswith("3."):
        from edgekit.core.errors import EdgekitError

        raise EdgekitError(f"the keras package here is {module.__version__}, not Keras 3")
    return module
