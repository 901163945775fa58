"""Builders by name: ``create(name, preset="reference", **overrides)`` and ``available()``.

Each entry has two presets: ``reference`` (the published configuration, e.g. MobileNetV2
1.0/224/1000) and ``digits`` (a small configuration for the embedded 32x32x1, 10-class digits data
that trains in seconds; for the language model, a 512-token vocabulary for the text corpus of
:func:`edgekit.core.data.text_corpus`). Keyword arguments override the preset; an unknown name, preset or
keyword is an error that lists what exists, never silently ignored.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Dict, List

from edgekit.core.errors import InputError
from edgekit.models.language import tied_lm
from edgekit.models.mlperf_tiny import ds_cnn, fc_autoencoder, resnet8
from edgekit.models.mobilenet_v1 import mobilenet_v1
from edgekit.models.mobilenet_v2 import DIGITS_CONFIG, mobilenet_v2
from edgekit.models.reference import resnet50, vgg16

PRESETS = ("reference", "digits")


@dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable
    summary: str
    presets: Dict[str, dict] = field(default_factory=dict)

    @property
    def parameters(self) -> List[str]:
        return [p for p in inspect.signature(self.builder).parameters if p != "name"]


_REGISTRY: Dict[str, Entry] = {}


def register(name: str, builder: Callable, summary: str, *, digits: dict) -> None:
    _REGISTRY[name] = Entry(name, builder, summary, {"reference": {}, "digits": dict(digits)})


def available() -> List[str]:
    return sorted(_REGISTRY)


def entry(name: str) -> Entry:
    if name not in _REGISTRY:
        raise InputError(f"unknown model '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create(name: str, /, preset: str = "reference", **overrides):
    """Build model ``name`` with ``preset``'s configuration and ``overrides`` on top."""
    e = entry(name)
    if preset not in PRESETS:
        raise InputError(f"unknown preset '{preset}' for {name}; expected one of: {', '.join(PRESETS)}")
    unknown = sorted(set(overrides) - set(e.parameters) - {"name"})
    if unknown:
        raise InputError(
            f"{name} does not take {', '.join(repr(k) for k in unknown)}; it takes: {', '.join(e.parameters)}"
        )
    return e.builder(**{**e.presets[preset], **overrides})


_SMALL = dict(input_shape=(32, 32, 1), classes=10)
register("mobilenet_v2", mobilenet_v2, "inverted residuals, linear bottlenecks (Sandler 2018)", digits=DIGITS_CONFIG)
register(
    "mobilenet_v1",
    mobilenet_v1,
    "depthwise-separable convs (Howard 2017); separable=False: Conv MobileNet",
    digits=dict(_SMALL, alpha=0.25),
)
register("ds_cnn", ds_cnn, "MLPerf Tiny keyword spotting DS-CNN", digits=_SMALL)
register("resnet8", resnet8, "MLPerf Tiny image classification ResNet-8", digits=_SMALL)
register("fc_autoencoder", fc_autoencoder, "MLPerf Tiny anomaly detection autoencoder", digits=dict(input_dim=32 * 32))
register("vgg16", vgg16, "VGG-16 reference point (Simonyan 2014)", digits=dict(_SMALL, width=0.125, fc_units=64))
register("resnet50", resnet50, "ResNet-50 reference point (He 2015)", digits=dict(_SMALL, width=0.25))
register(
    "tied_lm",
    tied_lm,
    "language model whose output projection is its embedding (Press & Wolf 2017); token ids in, next-token logits out",
    digits=dict(vocab=512, dim=64, context=32, layers=2, kernel=3),
)
