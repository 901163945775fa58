"""The one place that imports TensorFlow and Keras.

tfmot works only with Keras 2 (the ``tf_keras`` package), and TensorFlow picks its Keras when it
is first imported, so ``TF_USE_LEGACY_KERAS=1`` must be set before that import. Every other
module gets ``tf`` and ``keras`` from here and never imports them itself.
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) is noise on a CPU-only machine.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras", "is_keras_model"]


def is_keras_model(obj) -> bool:
    """True for a tf_keras model (Keras 2). A Keras 3 model is a different class."""
    return isinstance(obj, keras.Model)
