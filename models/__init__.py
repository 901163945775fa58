"""Keras (tf_keras) model builders for edge architectures. Imported as ``edgekit.models``."""

from edgekit.models.language import TiedEmbedding, tie, tied_lm
from edgekit.models.mlperf_tiny import ds_cnn, fc_autoencoder, resnet8
from edgekit.models.mobilenet_v1 import mobilenet_v1
from edgekit.models.mobilenet_v2 import DIGITS_CONFIG, PAPER_BLOCKS, make_divisible, mobilenet_v2
from edgekit.models.profiler import LayerProfile, Profile, layer_macs, profile
from edgekit.models.reference import resnet50, vgg16
from edgekit.models.registry import PRESETS, available, create

__all__ = [
    "PRESETS",
    "available",
    "create",
    "ds_cnn",
    "fc_autoencoder",
    "mobilenet_v1",
    "resnet8",
    "resnet50",
    "TiedEmbedding",
    "tie",
    "tied_lm",
    "vgg16",
    "DIGITS_CONFIG",
    "LayerProfile",
    "PAPER_BLOCKS",
    "Profile",
    "layer_macs",
    "make_divisible",
    "mobilenet_v2",
    "profile",
]
