"""Keras (tf_keras) model builders for edge architectures. Imported as ``edgekit.models``."""

from edgekit.models.mobilenet_v2 import DIGITS_CONFIG, PAPER_BLOCKS, make_divisible, mobilenet_v2
from edgekit.models.profiler import LayerProfile, Profile, layer_macs, profile

__all__ = [
    "DIGITS_CONFIG",
    "LayerProfile",
    "PAPER_BLOCKS",
    "Profile",
    "layer_macs",
    "make_divisible",
    "mobilenet_v2",
    "profile",
]
