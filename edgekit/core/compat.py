"""The one place that imports TensorFlow, Keras and tfmot.

edgekit works with tf_keras (Keras 2, the ``tf_keras`` package), which tfmot needs, and imports it
directly: it never resolves ``tf.keras`` and sets no environment variable of its own. Every other
module gets ``tf``, ``keras`` and :func:`tfmot` from here. Users get the same Keras as
``from edgekit import keras``.

One thing a user's process does see: tfmot (0.8) sets ``TF_USE_LEGACY_KERAS=1`` when it is first
imported (its own compat module; edgekit imports it with the optimize verbs and when loading a
quantization-aware file), so a ``tf.keras`` first resolved after that is tf_keras. A Keras 3
training script (``import keras``) is unaffected: ``keras`` is its own package.
"""

from __future__ import annotations

import os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) is noise on a CPU-only machine.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras", "keras3", "tfmot", "is_keras_model", "in_process_lambdas"]


def is_keras_model(obj) -> bool:
    """True for a tf_keras model (Keras 2). A Keras 3 model is a different class."""
    return isinstance(obj, keras.Model)


def tfmot():
    """The ``tensorflow_model_optimization`` module, checked to work on tf_keras (tfmot 0.8 binds
    itself to tf_keras whatever ``tf.keras`` is; another version might not)."""
    import tensorflow_model_optimization as mod
    from tensorflow_model_optimization.python.core.keras.compat import keras as tfmot_keras

    if tfmot_keras.Model is not keras.Model:
        from edgekit.core.errors import EdgekitError

        raise EdgekitError(
            "tensorflow_model_optimization is bound to another Keras than tf_keras, which edgekit's models are: "
            "set TF_USE_LEGACY_KERAS=1 before importing TensorFlow, or install tensorflow-model-optimization 0.8"
        )
    return mod


def keras3():
    """Keras 3 (the ``keras`` package TensorFlow 2.16+ installs), for translating Keras 3 models."""
    import keras as module

    if not module.__version__.startswith("3."):
        from edgekit.core.errors import EdgekitError

        raise EdgekitError(f"the keras package here is {module.__version__}, not Keras 3")
    return module


def in_process_lambdas():
    """A context in which tf_keras clones ``Lambda`` layers that already live in this process:
    tfmot's own transforms write them (a SeparableConv1D becomes expand, depthwise, pointwise,
    squeeze) and clone them through ``from_config``, which tf_keras's safe mode refuses. Nothing is
    read from a file here (files keep edgekit's own safe-mode check). tf_keras has no public scope
    for this: its ``SafeModeScope`` is the one way."""
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    return SafeModeScope(False)
