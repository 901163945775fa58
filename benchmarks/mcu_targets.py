"""The MLPerf Tiny models on microcontrollers, measured with TFLM's real interpreter (tflite-micro).

For each MLPerf Tiny preset on digits (trained here, int8 export with ``target="mcu"``): flash, the
minimal tensor arena (checked minimal: TFLM fails at arena - 16 bytes), TFLM against LiteRT's
builtin kernels on the digits test split (top-1 agreement, largest difference in quantization
steps at the output and before the softmax), accuracy, and the profiler's arena estimate. The
MLPerf Tiny sizes (keyword spotting 49x10, CIFAR 32x32x3, visual wake words MobileNetV1 0.25 at
96x96x3, ToyADMOS 640) are trained one epoch on random data: their arena and flash are
properties of the architecture, and they check the estimate on models it was not fitted on.

    .venv/bin/python benchmarks/mcu_targets.py [--epochs N] [--docs docs/mcu.md] [--readme README.md]
                                               [--json OUT.json]                (make bench-mcu)
    .venv/bin/python benchmarks/mcu_targets.py --smoke [--models M,...] [--json OUT.json]   (tiny, seconds)

The export is the least-RAM one (``target="mcu"``: Dense and pointwise convolutions per tensor where
the metric holds, :mod:`edgekit.converters.least_ram`), measured against the per-channel export of
the same model in the same run.

Targets: agreement >= 0.99; at most 1 step before the softmax; the arena minimal; the estimate
within 25% of the measured arena; the digits presets' arenas together >= 25% below the per-channel
exports, fc_autoencoder's <= 6 KB, flash never larger. Exit 1 when one is missed. ``--smoke`` (:data:`SMOKE`): both
presets of DS-CNN and the autoencoder, each with one block, one epoch on 256 digits (32 random
samples for the reference sizes), no per-layer error report; ResNet-8 and MobileNetV1 only when
``--models`` names them (:data:`SMOKE_LEFT_OUT`); the tables go into copies of docs/mcu.md and README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import smoke  # benchmarks/smoke.py

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tools"))

PRESETS = ("ds_cnn", "resnet8", "mobilenet_v1", "fc_autoencoder")
# --smoke runs DS-CNN (a classifier: the logits twin) and the autoencoder under both presets; these two
# take the classifier's path too and have no depth to shrink: 18 s and 27 s for their rows (--models)
SMOKE_LEFT_OUT = ("resnet8", "mobilenet_v1")
# MLPerf Tiny's visual wake words model is MobileNetV1 0.25 at 96x96x3, two classes (the
# registry's reference preset is the ImageNet MobileNetV1 1.0/224)
MLPERF_TINY = {"mobilenet_v1": dict(alpha=0.25, input_shape=(96, 96, 3), classes=2)}


@dataclass(frozen=True)
class Sizes:
    """How large the run is: :data:`FULL` (``make bench-mcu``) or :data:`SMOKE`."""

    epochs: int = 10  # on digits
    samples: Optional[int] = None  # of digits, per split (None: all)
    random: int = 256  # random samples of the reference sizes (a quarter of them the test split)
    overrides: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # per model, of both presets
    layer_report: bool = True  # the export's per-layer error report (not read here; half a smoke row's time)


FULL = Sizes()
SMOKE = Sizes(
    1, samples=256, random=32, overrides={"ds_cnn": dict(blocks=1), "fc_autoencoder": dict(depth=1)}, layer_report=False
)


def _train(model, x, y, epochs: int, autoencoder: bool):
    from edgekit import keras

    keras.utils.set_random_seed(0)
    if autoencoder:
        model.compile(keras.optimizers.Adam(1e-3), "mse")
        model.fit(x, x, epochs=epochs, batch_size=32, verbose=0)
    else:
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def _logits_twin(model):
    """The same model with a linear last Dense (the softmax's input as the output), or None."""
    from edgekit import keras

    head = model.layers[-1]
    if type(head).__name__ != "Dense" or getattr(head.activation, "__name__", "") != "softmax":
        return None
    dense = keras.layers.Dense(head.units, name="logits")
    twin = keras.Model(model.input, dense(model.layers[-2].output))
    dense.set_weights(head.get_weights())
    return twin


def _minimal(path: str, arena: int, granularity: int) -> bool:
    from edgekit.device.board.micro import MICRO_PATH, RAN

    def outcome(n):
        out = subprocess.run([sys.executable, MICRO_PATH, f"--probe={n}", "--", path], capture_output=True, text=True)
        return json.loads(out.stdout)["outcome"]

    return outcome(arena) == RAN and outcome(arena - granularity) != RAN


def _data(model, preset: str, sz: Sizes):
    """(x_train, y_train, x_test, y_test): digits shaped for ``model``, or random data for the
    published sizes (y_test None)."""
    from edgekit.core.data import digits

    shape = tuple(model.input_shape[1:])
    if preset == "digits":
        d = digits() if sz.samples is None else smoke.subset(digits(), sz.samples, sz.samples // 4)
        return d.x_train.reshape((-1,) + shape), d.y_train, d.x_test.reshape((-1,) + shape), d.y_test
    rng = np.random.default_rng(0)
    x_train = rng.random((sz.random,) + shape, dtype=np.float32)
    return x_train, rng.integers(0, model.output_shape[-1], sz.random), x_train[: sz.random // 4], None


def measure(name: str, preset: str, epochs: int, tmp: str, sz: Sizes = FULL) -> dict:
    from edgekit.converters import export
    from edgekit.converters.least_ram import peak
    from edgekit.converters.mcu import mcu
    from edgekit.converters.tflm import flash_bytes
    from edgekit.models import registry

    t0 = time.perf_counter()
    config = dict(MLPERF_TINY.get(name, {}) if preset == "reference" else {}, **sz.overrides.get(name, {}))
    model = registry.create(name, preset=preset, **config)
    autoencoder = name == "fc_autoencoder"
    x_train, y_train, x_test, y_test = _data(model, preset, sz)
    if preset != "digits":  # the published sizes: random data, one epoch (architecture figures only)
        epochs = 1
    _train(model, x_train, y_train, epochs, autoencoder)
    path = os.path.join(tmp, f"{name}_{preset}.tflite")
    # random-data weights: the int8 model's agreement with them means nothing, so no sanity gate
    options = dict({} if preset == "digits" else {"min_cosine": None}, overwrite=True, layer_report=sz.layer_report)
    rep = export(model, path, calibration=x_train, validation_data=(x_test, y_test), target="mcu", **options)
    m = rep.mcu.to_dict()
    ram = m.get("least_ram") or {}
    row = {
        "model": name,
        "preset": preset,
        "params": int(model.count_params()),
        "size_bytes": rep.size_bytes,
        "flash_bytes": m["flash_bytes"],
        "arena_bytes": m["arena_bytes"],
        "head": m["allocations"].get("head"),
        "tail": m["allocations"].get("tail"),
        "estimate_bytes": m["estimate"]["arena_bytes"],
        "estimate_error_pct": m["estimate"]["error_pct"],
        "fits": m["fits_boards"],
        "minimal": _minimal(path, m["arena_bytes"], m["granularity"]),
        "host_invoke_ms": m["host_invoke_ms"]["p50"],
        # the least-RAM choices against today's per-channel export of the same model, in the same run
        "arena_per_channel": ram.get("arena_per_channel", m["arena_bytes"]),
        "flash_per_channel": flash_bytes(ram.get("size_per_channel", rep.size_bytes)),
        "metric": ram.get("metric"),
        "metric_per_channel": ram.get("per_channel"),
        "metric_per_tensor": ram.get("per_tensor"),
        "per_tensor": [c["layer"] for c in ram.get("choices", []) if c["kept"]],
        "considered": len(ram.get("choices", [])),
        "planned_lower_bound": peak(rep.tflite)[2],
    }
    if preset == "digits":
        row.update(
            agreement=m["agreement"],
            max_step_diff=m["max_step_diff"],
            identical=m["identical"],
            accuracy=m["accuracy"],
        )
        twin = _logits_twin(model)
        if twin is not None:
            tpath = os.path.join(tmp, f"{name}_logits.tflite")
            export(twin, tpath, calibration=x_train, validation_data=(x_test, None), **options)
            row["max_step_diff_logits"] = mcu(tpath, validation_data=(x_test, None), samples=len(x_test)).max_step_diff
        else:
            row["max_step_diff_logits"] = m["max_step_diff"]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _boards(fits: dict) -> str:
    return ", ".join(n for n, ok in fits.items() if ok) or "none"


def markdown(rows) -> str:
    from edgekit.core.results import table

    digits_rows = [r for r in rows if r["preset"] == "digits"]
    out = [
        table(
            [
                "model (digits)",
                "flash KB",
                "arena KB",
                "TFLM vs LiteRT top-1",
                "max steps (output / logits)",
                "TFLM accuracy",
                "fits",
            ],
            [
                [
                    r["model"],
                    f"{r['flash_bytes'] / 1024:,.1f}",
                    f"{r['arena_bytes'] / 1024:,.1f}",
                    "-" if r.get("agreement") is None else f"{r['agreement']:.4f}",
                    f"{r['max_step_diff']:g} / {r['max_step_diff_logits']:g}",
                    "-" if r.get("accuracy") is None else f"{r['accuracy']:.3f}",
                    _boards(r["fits"]),
                ]
                for r in digits_rows
            ],
            markdown=True,
            align="lrrrrrl",
        )
    ]
    out.append("")
    out.append(
        table(
            [
                "model",
                "preset",
                "params",
                "flash KB",
                "arena KB",
                "activations / persistent KB",
                "profiler estimate KB",
                "minimal",
                "fits",
            ],
            [
                [
                    r["model"],
                    r["preset"],
                    f"{r['params']:,}",
                    f"{r['flash_bytes'] / 1024:,.1f}",
                    f"{r['arena_bytes'] / 1024:,.1f}",
                    f"{r['head'] / 1024:,.1f} / {r['tail'] / 1024:,.1f}",
                    f"{r['estimate_bytes'] / 1024:,.1f} ({r['estimate_error_pct']:+.1f}%)",
                    "yes" if r["minimal"] else "NO",
                    _boards(r["fits"]),
                ]
                for r in rows
            ],
            markdown=True,
            align="llrrrrrll",
        )
    )
    out += ["", least_ram_table(rows)]
    return "\n".join(out) + "\n"


def _total_cut(rows) -> float:
    """How far below the per-channel exports the digits presets' arenas are together, in percent."""
    digits_rows = [r for r in rows if r["preset"] == "digits"]
    before = sum(r["arena_per_channel"] for r in digits_rows)
    return 100.0 * (1 - sum(r["arena_bytes"] for r in digits_rows) / before) if before else 0.0


def least_ram_table(rows) -> str:
    """Per model: today's per-channel export against the least-RAM one, measured side by side."""
    from edgekit.core.results import table

    def metric(r):
        if r["metric"] is None:
            return "-"
        return f"{r['metric']} {r['metric_per_channel']:.4f} -> {r['metric_per_tensor']:.4f}"

    body = [
        [
            r["model"],
            r["preset"],
            f"{r['arena_per_channel'] / 1024:,.1f} -> {r['arena_bytes'] / 1024:,.1f} "
            f"({100 * (r['arena_bytes'] / r['arena_per_channel'] - 1):+.0f}%)",
            f"{r['head'] / 1024:,.1f} / {r['planned_lower_bound'] / 1024:,.1f}",
            f"{r['flash_per_channel'] / 1024:,.1f} -> {r['flash_bytes'] / 1024:,.1f}",
            metric(r),
            f"{len(r['per_tensor'])} of {r['considered']}",
        ]
        for r in rows
    ]
    head = ["model", "preset", "arena KB", "activations planned / lower bound KB", "flash KB", "metric", "per tensor"]
    return (
        table(head, body, markdown=True, align="llrrrll")
        + f"\n\nDigits presets together: arena {_total_cut(rows):.1f}% below the per-channel exports.\n"
    )


def readme_table(rows) -> str:
    from edgekit.core.results import table

    def fits(r):
        return f"all {len(r['fits'])} boards" if all(r["fits"].values()) else _boards(r["fits"])

    return (
        table(
            ["MLPerf Tiny model (digits)", "flash KB", "arena KB (→ least RAM)", "TFLM = LiteRT", "fits"],
            [
                [
                    r["model"],
                    f"{r['flash_bytes'] / 1024:,.1f}",
                    f"{r['arena_per_channel'] / 1024:,.1f} → {r['arena_bytes'] / 1024:,.1f}",
                    "-" if r.get("agreement") is None else f"{r['agreement']:.3f}",
                    fits(r),
                ]
                for r in rows
                if r["preset"] == "digits"
            ],
            markdown=True,
            align="lrrrl",
        )
        + "\n"
    )


def missed(rows) -> list:
    out = []
    for r in rows:
        key = f"{r['model']} {r['preset']}"
        if not r["minimal"]:
            out.append(f"{key}: the arena found is not minimal")
        if abs(r["estimate_error_pct"]) > 25:
            out.append(f"{key}: profiler estimate off by {r['estimate_error_pct']:+.1f}%")
        if r["preset"] == "digits":
            if r.get("agreement") is not None and r["agreement"] < 0.99:
                out.append(f"{key}: TFLM vs LiteRT top-1 agreement {r['agreement']:.4f} < 0.99")
            if r["max_step_diff_logits"] > 1:
                out.append(f"{key}: {r['max_step_diff_logits']:g} quantization steps before the softmax")
            if r["model"] == "fc_autoencoder" and r["arena_bytes"] > 6 * 1024:
                out.append(f"{key}: arena {r['arena_bytes']:,} B > 6 KB")
        if r["flash_bytes"] > r["flash_per_channel"]:
            out.append(f"{key}: flash {r['flash_bytes']:,} B > the per-channel export's {r['flash_per_channel']:,} B")
    if any(r["preset"] == "digits" for r in rows) and _total_cut(rows) < 25:
        out.append(f"digits presets: arena together {_total_cut(rows):.1f}% below the per-channel exports (< 25%)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/mcu_targets.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, help=f"training epochs on digits (default {FULL.epochs})")
    ap.add_argument("--presets", default="digits,reference")
    ap.add_argument("--models", help=f"comma-separated (default {','.join(PRESETS)})")
    ap.add_argument("--docs", help="write the tables between the mcu markers of this Markdown file")
    ap.add_argument("--readme", help="write the short table between the mcu markers of this file")
    ap.add_argument("--json", help="write every row as JSON")
    smoke.add_flag(ap)
    args = ap.parse_args(argv)
    sz = SMOKE if smoke.start(ap, args, "docs", "readme") else FULL
    names = args.models.split(",") if args.models else list(PRESETS)
    if args.smoke:  # the tables written into copies
        args.docs, args.readme = smoke.copy("docs/mcu.md"), smoke.copy("README.md")
        names = names if args.models else smoke.leave_out(names, SMOKE_LEFT_OUT, "the classifier's path, full depth")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            for name in names:
                rows.append(measure(name, preset, args.epochs or sz.epochs, tmp, sz))
                r = rows[-1]
                print(
                    f"{name:15} {preset:9} flash {r['flash_bytes']:>9,} B  arena {r['arena_bytes']:>8,} B  "
                    f"estimate {r['estimate_error_pct']:+6.1f}%  "
                    + (
                        f"agreement {r['agreement']}  steps {r['max_step_diff']:g}/{r['max_step_diff_logits']:g}  "
                        if preset == "digits"
                        else ""
                    )
                    + f"{r['seconds']}s",
                    flush=True,
                )
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    from readme import replace  # tools/readme.py

    for path, text in ((args.docs, markdown(rows)), (args.readme, readme_table(rows))):
        if path:
            with open(path, encoding="utf-8") as f:
                doc = f.read()
            with open(path, "w", encoding="utf-8") as f:
                f.write(replace(doc, "mcu", text))
    problems = missed(rows)
    for p in problems:
        print(f"MISSED: {p}")
    return smoke.exit_code(not problems, args.smoke)


if __name__ == "__main__":
    sys.exit(main())
