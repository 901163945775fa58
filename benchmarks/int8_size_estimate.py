"""Check the profiler's int8 size estimate against real full-integer .tflite files.

    .venv/bin/python benchmarks/int8_size_estimate.py [--preset digits|reference] [--steps N]

For each registered model: build the preset, train it for a few steps on digits (so BatchNorm
statistics move and folded biases are real, as in any trained model), convert to full-integer
int8, and compare the file's size with ``edgekit.profile(model).int8_bytes``. Target: within 15%
for every model's digits preset. Exits 1 if a model misses it. The reference presets (up to 138M
params) take minutes each and are only checked with ``--preset reference``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from edgekit.converters import convert, inspect_tflite
from edgekit.core.data import digits
from edgekit.core.results import table
from edgekit.models import available, create, profile

TOLERANCE = 0.15


def _data_for(model, ds, n: int, seed: int = 0):
    """Inputs and targets shaped for ``model``: digits where it fits, random data otherwise."""
    shape = tuple(model.input_shape[1:])
    rng = np.random.default_rng(seed)
    if model.inputs[0].dtype.is_integer:  # token ids: next-token targets
        vocab = int(model.output_shape[-1])
        x = rng.integers(0, vocab, (n,) + shape).astype(np.int32)
        return x, np.roll(x, -1, axis=1), "sparse_categorical_crossentropy"
    if shape == ds.input_shape:
        x = ds.x_train[:n]
    elif int(np.prod(shape)) == int(np.prod(ds.input_shape)):
        x = ds.x_train[:n].reshape((-1,) + shape)
    else:
        x = rng.random((n,) + shape, dtype=np.float32)
    out = tuple(model.output_shape[1:])
    if out == shape:  # an autoencoder reconstructs its input
        return x, x, "mse"
    y = ds.y_train[:n] % out[-1]
    return x, y, "sparse_categorical_crossentropy"


def measure(name: str, preset: str, steps: int, ds) -> dict:
    model = create(name, preset=preset)
    x, y, loss = _data_for(model, ds, 32 * steps)
    model.compile("adam", loss)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    estimate = profile(model).int8_bytes
    real = inspect_tflite(convert(model, "int8", calibration=x, calib_samples=64)).size_bytes
    return {
        "model": name,
        "params": model.count_params(),
        "estimate": estimate,
        "real": real,
        "error": estimate / real - 1.0,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=("digits", "reference"), default="digits")
    ap.add_argument("--steps", type=int, default=4, help="training steps before conversion (default 4)")
    args = ap.parse_args(argv)
    ds = digits()
    rows = [measure(name, args.preset, args.steps, ds) for name in available()]
    print(
        table(
            ("model", "params", "estimated int8 B", "real int8 .tflite B", "error", "within 15%"),
            [
                [
                    r["model"],
                    f"{r['params']:,}",
                    f"{r['estimate']:,}",
                    f"{r['real']:,}",
                    f"{r['error']:+.1%}",
                    "yes" if abs(r["error"]) <= TOLERANCE else "NO",
                ]
                for r in rows
            ],
            align="lrrrrl",
        )
    )
    return 0 if all(abs(r["error"]) <= TOLERANCE for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
