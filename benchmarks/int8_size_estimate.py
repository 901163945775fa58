"""Check the profiler's int8 size estimate against real full-integer .tflite files.

    .venv/bin/python benchmarks/int8_size_estimate.py [--preset digits|reference] [--steps N] [--models M,...]
    .venv/bin/python benchmarks/int8_size_estimate.py --smoke [--models M,...]     (every model, shallow)

For each registered model: build the preset, train it for a few steps on digits (so BatchNorm
statistics move and folded biases are real, as in any trained model), convert to full-integer
int8, and compare the file's size with ``edgekit.profile(model).int8_bytes``. Target: within 15%
for every model's digits preset. Exits 1 if a model misses it. The reference presets (up to 138M
params) take minutes each and are only checked with ``--preset reference``. ``--smoke``: the digits
presets made shallow (:data:`SMOKE_OVERRIDES`), one training step each; the models whose builder has
no depth to shrink (:data:`SMOKE_LEFT_OUT`) run through the same ``measure`` only when named in
``--models``, and the run prints that it left them out.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import smoke  # benchmarks/smoke.py

from edgekit.converters import convert, inspect_tflite
from edgekit.core.data import digits
from edgekit.core.results import table
from edgekit.models import available, create, profile

TOLERANCE = 0.15
# --smoke: fewer blocks (conversion time grows with the layer count); the other builders have no depth knob
SMOKE_OVERRIDES = {"mobilenet_v2": smoke.DEMO_CONFIG, "ds_cnn": dict(blocks=1), "fc_autoencoder": dict(depth=1)}
SMOKE_OVERRIDES["tied_lm"] = dict(layers=1)
# the same code path as the others (an image classifier on digits), and no depth knob: 175 and 84 layers
# take 35 s and 12 s to train one step and convert (--models runs them)
SMOKE_LEFT_OUT = ("resnet50", "mobilenet_v1")


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


def measure(name: str, preset: str, steps: int, ds, **overrides) -> dict:
    model = create(name, preset=preset, **overrides)
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
    ap.add_argument("--steps", type=int, help="training steps before conversion (default 4)")
    ap.add_argument("--models", help="the registered models, comma-separated (default: all)")
    smoke.add_flag(ap)
    args = ap.parse_args(argv)
    overrides = SMOKE_OVERRIDES if smoke.start(ap, args) else {}
    steps = args.steps or (1 if args.smoke else 4)
    names = args.models.split(",") if args.models else available()
    if args.smoke and not args.models:
        names = smoke.leave_out(names, SMOKE_LEFT_OUT, "no depth to shrink: 175 and 84 layers, 35 s and 12 s")
    unknown = sorted(set(names) - set(available()))
    if unknown:
        ap.error(f"--models: unknown model {unknown[0]!r}; registered: {','.join(available())}")
    ds = digits()
    rows = [measure(name, args.preset, steps, ds, **overrides.get(name, {})) for name in names]
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
    return smoke.exit_code(all(abs(r["error"]) <= TOLERANCE for r in rows), args.smoke)


if __name__ == "__main__":
    sys.exit(main())
