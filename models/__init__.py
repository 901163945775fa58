"""Keras (tf_keras) model builders for edge architectures. Imported as ``edgekit.models``."""

from edgekit.models.mobilenet_v2 import DIGITS_CONFIG, PAPER_BLOCKS, make_divisible, mobilenet_v2

__all__ = ["mobilenet_v2", "DIGITS_CONFIG", "PAPER_BLOCKS", "make_divisible"]
