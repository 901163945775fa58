"""What an optimization achieved, read from the weights themselves: per layer the kernel's share
of zeros, 2:4 compliance, distinct values, and params."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional

import numpy as np

from edgekit.core.results import Result, table

KERNEL_NAMES = ("kernel:0", "depthwise_kernel:0", "kernel", "depthwise_kernel")


def m_by_n_compliant(kernel: np.ndarray, m: int = 2, n: int = 4) -> Optional[bool]:
    """True when every group of ``n`` consecutive input weights holds at least ``m`` zeros, in
    the layout TFLite uses (Dense [out, in], Conv2D [out, h, w, in]; groups along ``in``, the
    last group zero-padded). None when the kernel has fewer than ``n`` inputs (2:4 does not apply)."""
    k = np.asarray(kernel)
    if k.ndim == 2:
        rows = k.T
    elif k.ndim == 4:
        rows = np.transpose(k, (3, 0, 1, 2)).reshape(-1, k.shape[2])
    else:
        return None
    if rows.shape[1] < n:
        return None
    pad = (-rows.shape[1]) % n
    if pad:
        rows = np.concatenate([rows, np.zeros((rows.shape[0], pad), rows.dtype)], axis=1)
    groups = rows.reshape(rows.shape[0], -1, n)
    return bool(np.all(np.sum(groups == 0, axis=2) >= m))


@dataclass(frozen=True)
class LayerWeights:
    layer: str
    kind: str
    shape: tuple
    params: int
    zeros: float
    unique: int
    two_four: Optional[bool]


@dataclass(frozen=True)
class WeightReport(Result):
    """Per-layer kernel facts and the model's parameter count."""

    layers: List[LayerWeights]
    params: int

    @property
    def kernel_params(self) -> int:
        return sum(l.params for l in self.layers)

    @property
    def zeros(self) -> float:
        """Share of zeros over all kernels."""
        total = self.kernel_params
        return sum(l.zeros * l.params for l in self.layers) / total if total else 0.0

    def layer(self, name: str) -> LayerWeights:
        for l in self.layers:
            if l.layer == name:
                return l
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "params": self.params,
            "kernel_params": self.kernel_params,
            "zeros": self.zeros,
            "layers": [dict(asdict(l), shape=list(l.shape)) for l in self.layers],
        }

    def summary(self) -> str:
        """Per layer: kernel shape, params, share of zeros, 2:4 compliance, distinct values."""
        rows = [
            [
                l.layer,
                l.kind,
                "×".join(map(str, l.shape)),
                f"{l.params:,}",
                f"{l.zeros:.3f}",
                "-" if l.two_four is None else ("yes" if l.two_four else "no"),
                f"{l.unique:,}",
            ]
            for l in self.layers
        ]
        return table(("layer", "type", "kernel", "params", "zeros", "2:4", "distinct values"), rows)


def layer_kernel(layer):
    """The kernel variable of a layer, looking inside tfmot wrappers (pruning, clustering, QAT)."""
    inner = layer
    while hasattr(inner, "layer") and inner.layer is not inner:
        inner = inner.layer
    for w in layer.weights:
        last = w.name.split("/")[-1]
        if last in KERNEL_NAMES and hasattr(w, "numpy"):
            return type(inner).__name__, w.numpy()
    return None, None


def _recurrent_kernels(layer):
    """(label, kind, kernel) of each input and recurrent kernel of a recurrent layer (both
    directions of a Bidirectional), wrapped or not; nothing for other layers."""
    inner = layer
    while hasattr(inner, "layer") and inner.layer is not inner and type(inner).__name__ != "Bidirectional":
        inner = inner.layer
    if not hasattr(inner, "cell") and type(inner).__name__ != "Bidirectional":
        return []
    out = []
    for w in layer.weights:
        parts = w.name.split(":")[0].split("/")
        if parts[-1] in ("kernel", "recurrent_kernel") and hasattr(w, "numpy"):
            direction = [p for p in parts if p.startswith(("forward_", "backward_"))]
            label = "/".join([layer.name] + direction[:1] + ([parts[-1]] if parts[-1] != "kernel" else []))
            out.append((label, type(inner).__name__, w.numpy()))
    return out


def weight_report(model) -> WeightReport:
    """Measure every layer that has a kernel (Dense, Conv2D, DepthwiseConv2D, …), wrapped or not;
    a recurrent layer's input and recurrent kernels (of both directions) each on a row."""
    rows = []
    for layer in model.layers:
        kind, k = layer_kernel(layer)
        kernels = _recurrent_kernels(layer) or ([(layer.name, kind, k)] if k is not None else [])
        for name, kind, k in kernels:
            rows.append(
                LayerWeights(
                    name,
                    kind,
                    tuple(int(d) for d in k.shape),
                    int(k.size),
                    float(np.mean(k == 0)),
                    int(len(np.unique(k))),
                    None if kind.startswith("Depthwise") else m_by_n_compliant(k),
                )
            )
    return WeightReport(rows, model_params(model))


# Variables tfmot's wrappers add: masks, schedules, centroids, quantization ranges.
_WRAPPER_VARIABLES = (
    "mask",
    "threshold",
    "pruning_step",
    "optimizer_step",
    "_min",
    "_max",
    "cluster_centroids",
    "pulling_indices",
    "ori_weights",
)


def model_params(model) -> int:
    """The model's own parameters, not counting the variables tfmot's wrappers add."""
    seen, total = set(), 0
    for w in model.weights:
        last = w.name.split("/")[-1]
        if id(w) in seen or any(t in last for t in _WRAPPER_VARIABLES):
            continue
        seen.add(id(w))
        total += int(np.prod(w.shape))
    return total
