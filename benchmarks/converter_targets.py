"""Check the converter targets, everything measured in one run.

    .venv/bin/python benchmarks/converter_targets.py [--demo-report runs/demo/report.json]
    .venv/bin/python benchmarks/converter_targets.py --smoke [--demo-report R.json]   (every row, tiny)

- MobileNetV2 1.0/224 (3,538,984 params, random weights, calibrated on random images): int8
  file <= 0.29x the float32 file; the inspection's measured parts (weights, quantization
  parameters) and the graph remainder; int8 export including verification on 100 samples and
  the per-layer error report <= 60 s.
- A 90%-sparse MLP (784-1000-1000-10): float32 with --sparse <= 0.2x dense; int8 + sparse,
  which does not prepare under XNNPACK, is refused by verification.
- Tied-embedding LM (vocab 30,000, dim 500): the int8 file <= 0.55x the untied int8 file (the
  float32 ratio is printed beside it).
- keras.applications MobileNetV3Small and EfficientNetB0 (96x96, random weights): edgekit's int8
  export with verification (100 samples), the per-layer error report and the sanity gate <= 1.5x
  the wall time of TensorFlow's plain converter on the same model and the same 256 calibration
  samples, each timed in a fresh process, alternating, best of two.
- With --demo-report: the demo's int8 accuracy within 1 point of Keras, top-1 agreement >= 98%.
Exits 1 if a target is missed. ``--smoke`` (:data:`SMOKE`): the demo's MobileNetV2 at smoke size on
16 images, a small convnet instead of the keras.applications models (each still timed in a fresh
process, one round), a 784-64-64-10 MLP and a 2,000 x 16 LM.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

import numpy as np
import smoke  # benchmarks/smoke.py
import techniques
from techniques import tied_lm_sizes

from edgekit import keras
from edgekit.converters import export, inspect_tflite
from edgekit.core.errors import VerificationError
from edgekit.core.results import table
from edgekit.models import create


@dataclass(frozen=True)
class Sizes:
    """How large every row runs: :data:`FULL` (``make bench-converter``) or :data:`SMOKE`."""

    mobilenet_v2: Dict[str, Any] = field(default_factory=dict)  # create("mobilenet_v2", **this)
    images: int = 100  # random images: MobileNetV2's calibration and verification
    applications: Tuple[str, ...] = ("MobileNetV3Small", "EfficientNetB0")  # "smoke": a small convnet
    size: int = 96  # their input's height and width
    calibration: int = 256
    verify: int = 100
    rounds: int = 2  # each timed in a fresh process, alternating, best of the rounds
    hidden: int = 1000  # the sparse MLP's width
    vocab: int = 30000  # the tied LM's
    dim: int = 500


FULL = Sizes()
SMOKE = Sizes(
    dict(preset="digits", **smoke.DEMO_CONFIG),
    images=16,
    applications=("smoke",),
    size=32,
    calibration=16,
    verify=8,
    rounds=1,
    hidden=64,
    vocab=techniques.SMOKE.vocab,
    dim=techniques.SMOKE.dim,
)


def mobilenet_v2_rows(tmp: str, sz: Sizes = FULL) -> list:
    model = create("mobilenet_v2", **sz.mobilenet_v2)
    rng = np.random.default_rng(0)
    x = rng.random((sz.images,) + tuple(model.input_shape[1:]), dtype=np.float32)
    f32 = export(model, os.path.join(tmp, "mbv2_f32.tflite"), "float32", validation_data=(x[:10], None))
    t0 = time.perf_counter()
    i8 = export(
        model,
        os.path.join(tmp, "mbv2_int8.tflite"),
        "int8",
        calibration=x,
        calib_samples=sz.images,
        validation_data=(x, None),
        verify_samples=sz.images,
    )
    seconds = time.perf_counter() - t0
    info = inspect_tflite(i8.path)
    measured = (info.weight_bytes + info.quant_params_bytes) / info.size_bytes
    return [
        (
            "MobileNetV2 1.0/224 int8 <= 0.29x float32",
            f"{i8.size_bytes:,} / {f32.size_bytes:,} = {i8.size_bytes / f32.size_bytes:.3f}x",
            i8.size_bytes <= 0.29 * f32.size_bytes,
        ),
        (
            "inspect: weights + quant params, read per tensor, >= 99% of the file",
            f"{info.weight_bytes:,} + {info.quant_params_bytes:,} = {measured:.1%}; graph {info.graph_bytes:,} B",
            measured >= 0.99,
        ),
        (
            "int8 export + verify (100 samples) + layer errors <= 60 s",
            f"{seconds:.1f} s (convert {i8.convert_seconds:.1f}, verify {i8.verify_seconds:.1f})",
            seconds <= 60.0,
        ),
        (
            "MobileNetV2 int8 fully integer, agreement on random images",
            f"{i8.fully_integer}, {i8.agreement:.2f}",
            i8.fully_integer,
        ),
    ]


_TIMED = """
import sys, time, numpy as np
from edgekit import keras
from edgekit.core.compat import tf
name, how, size, n, verify = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
if name == "smoke":
    L = keras.layers
    model = keras.Sequential([keras.Input((size, size, 3)), L.Conv2D(16, 3, strides=2), L.BatchNormalization(),
                              L.ReLU(), L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax")])
else:
    model = getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None, classes=10)
x = np.random.default_rng(0).random((n + verify, size, size, 3), dtype=np.float32)
t0 = time.perf_counter()
if how == "plain":
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(n))
    conv.convert()
else:
    from edgekit.converters import export
    export(model, None, "int8", calibration=x[:n], calib_samples=n, validation_data=x[n:])
print(time.perf_counter() - t0)
"""


def export_time_rows(sz: Sizes = FULL) -> list:
    """edgekit's export against TensorFlow's plain converter, each in a fresh process."""
    import subprocess

    rows = []
    for name in sz.applications:
        times = {"plain": [], "edgekit": []}
        for _ in range(sz.rounds):
            for how in times:
                argv = [name, how, str(sz.size), str(sz.calibration), str(sz.verify)]
                out = subprocess.run(
                    [sys.executable, "-c", _TIMED, *argv], capture_output=True, text=True, check=True
                ).stdout
                times[how].append(float(out.strip().splitlines()[-1]))
        plain, ours = min(times["plain"]), min(times["edgekit"])
        rows.append(
            (
                f"{name} {sz.size}x{sz.size} int8: export + verify + layer report + gate <= 1.5x the plain converter",
                f"{ours:.1f} s vs {plain:.1f} s = {ours / plain:.2f}x",
                ours <= 1.5 * plain,
            )
        )
    return rows


def sparse_rows(tmp: str, sz: Sizes = FULL) -> list:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(sz.hidden, activation="relu"),
            keras.layers.Dense(sz.hidden, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    for layer in model.layers:
        k, b = layer.get_weights()
        k[np.abs(k) < np.quantile(np.abs(k), 0.9)] = 0
        layer.set_weights([k, b])
    x = np.random.default_rng(0).random((64, 784), dtype=np.float32)
    dense = export(model, os.path.join(tmp, "mlp.tflite"), "float32", validation_data=(x, None))
    sparse = export(model, os.path.join(tmp, "mlp_sparse.tflite"), "float32", validation_data=(x, None), sparse=True)
    try:
        export(
            model,
            os.path.join(tmp, "mlp_int8_sparse.tflite"),
            "int8",
            calibration=x,
            validation_data=(x, None),
            sparse=True,
            layer_report=False,
        )
        caught = "written (not caught)"
    except VerificationError as exc:
        caught = f"refused: {str(exc)[:70]}..."
    return [
        (
            "90%-sparse MLP float32 --sparse <= 0.2x dense",
            f"{sparse.size_bytes:,} / {dense.size_bytes:,} = "
            f"{sparse.size_bytes / dense.size_bytes:.3f}x, agreement {sparse.agreement:.2f}",
            sparse.size_bytes <= 0.2 * dense.size_bytes,
        ),
        ("int8 + sparse that fails under XNNPACK is caught", caught, caught.startswith("refused")),
    ]


def tied_rows(sz: Sizes = FULL) -> list:
    """Tied-embedding LM, vocab 30,000, dim 500: the int8 file holds the matrix once."""
    s = tied_lm_sizes(sz.vocab, sz.dim)
    (tp, t32), (up, u32) = (s[True, "params"], s[True, "float32"]), (s[False, "params"], s[False, "float32"])
    t8, u8 = s[True, "int8"], s[False, "int8"]
    return [
        (
            f"tied LM {sz.vocab}x{sz.dim}: params, float32 file tied vs untied",
            f"{tp:,} vs {up:,}; {t32:,} / {u32:,} = {t32 / u32:.3f}x",
            t32 <= 0.55 * u32,
        ),
        (
            "tied LM int8 file <= 0.55x the untied int8 file",
            f"{t8:,} / {u8:,} = {t8 / u8:.3f}x; merged {s['merged_bytes']:,} B",
            t8 <= 0.55 * u8,
        ),
    ]


def demo_rows(path: str) -> list:
    report = json.load(open(path))
    i8 = {v["name"]: v for v in report["variants"]}["int8"]
    keras_acc = report["model"]["keras_accuracy"]
    return [
        (
            "demo int8 accuracy within 1 point of Keras",
            f"{i8['accuracy']:.4f} vs {keras_acc:.4f}",
            i8["accuracy"] >= keras_acc - 0.01,
        ),
        ("demo int8 top-1 agreement >= 98%", f"{i8['agreement']:.4f}", i8["agreement"] >= 0.98),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo-report", help="a demo report.json to check the accuracy targets on")
    smoke.add_flag(ap)
    args = ap.parse_args(argv)
    sz = SMOKE if smoke.start(ap, args) else FULL
    with tempfile.TemporaryDirectory() as tmp:
        rows = mobilenet_v2_rows(tmp, sz) + export_time_rows(sz) + sparse_rows(tmp, sz) + tied_rows(sz)
    if args.demo_report:
        rows += demo_rows(args.demo_report)
    elif args.smoke:
        print("smoke: no --demo-report, so no demo rows (demo_targets.py --smoke --out DIR writes DIR/report.json)")
    print(table(("target", "measured", "ok"), [[t, m, "yes" if ok else "NO"] for t, m, ok in rows], align="lll"))
    return smoke.exit_code(all(ok for _, _, ok in rows), args.smoke)


if __name__ == "__main__":
    sys.exit(main())
