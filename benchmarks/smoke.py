"""``--smoke``, shared by every benchmark: the script's own code paths end to end at tiny sizes
(tiny models, a few samples, one epoch, a few runs), in seconds. ``make test`` runs every script
(tests/test_benchmarks.py), so an API change that breaks a benchmark fails there, not in a
16-minute ``make bench-*`` run weeks later.

A smoke run writes only into a temporary directory (or the ``--out`` it is given) and refuses the
options that write committed files (``--docs``, ``--readme``, ``--update``): where a script writes
such a file, the smoke run writes a copy of it in the temporary directory (:func:`copy`), so the
writing runs too; edgekit's deprecation warnings are errors in it (benchmarks use the new names);
its targets are printed but not enforced (a one-epoch model on 256 samples meets none); any
exception fails it. Models are the registry's ``digits`` presets made shallow where the builder
allows it (conversion time grows with the layer count, not the params); a model that cannot be made
small and takes the code path of another is left out with a printed line (:func:`leave_out`); the
demo's model is :func:`demo_model`.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
import warnings

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
# The demo's model (MobileNetV2, digits preset) at smoke size: the stem (Conv → BatchNorm → ReLU6, 16
# channels) and the classifier, no inverted-residual block and no head conv: 7 layers instead of 83,
# every variant of the demo still applies (channels to prune, Conv → BatchNorm → ReLU for PCQAT, a Dense
# for 2:4; fewer channels leave an 80%-pruned kernel too few weights for 16 clusters). Conversion and
# tfmot's wrapping take time per layer, not per parameter.
DEMO_MODEL = "smoke_mobilenet_v2"
DEMO_CONFIG = dict(stem_filters=16, blocks=(), head_filters=None)

HELP = (
    "run every code path at tiny sizes in seconds (what `make test` runs): writes only to a temporary "
    "directory, prints the targets without enforcing them"
)


def add_flag(ap) -> None:
    ap.add_argument("--smoke", action="store_true", help=HELP)


def start(ap, args, *writes: str) -> bool:
    """In smoke mode: refuse the options ``writes`` (they write committed files) and make
    edgekit's deprecation warnings errors. Returns whether this is a smoke run."""
    if not args.smoke:
        return False
    given = ["--" + n.replace("_", "-") for n in writes if getattr(args, n, None)]
    if given:
        ap.error(f"--smoke writes nothing outside a temporary directory: drop {', '.join(given)}")
    from edgekit.core.errors import EdgekitDeprecationWarning

    warnings.simplefilter("error", EdgekitDeprecationWarning)
    warnings.filterwarnings("error", category=DeprecationWarning, module="edgekit")  # as pyproject.toml's pytest
    return True


def temp_dir() -> str:
    """A fresh temporary directory, removed when the process exits."""
    path = tempfile.mkdtemp(prefix="edgekit-smoke-")
    atexit.register(shutil.rmtree, path, True)
    return path


def copy(path: str) -> str:
    """A copy of the committed file ``path`` (relative to the repository) in a temporary directory:
    what a smoke run writes instead of the file itself."""
    out = os.path.join(temp_dir(), os.path.basename(path))
    shutil.copyfile(os.path.join(ROOT, path), out)
    return out


def demo_model() -> str:
    """The registry name of the demo's model at smoke size (:data:`DEMO_CONFIG`), registered in
    this process: ``train_digits_model(ds, demo_model())`` and ``run_demo(model_name=demo_model())``
    train it as they train the demo's model."""
    from edgekit.models import DIGITS_CONFIG, available, mobilenet_v2
    from edgekit.models.registry import register

    if DEMO_MODEL not in available():
        register(
            DEMO_MODEL, mobilenet_v2, "the demo's MobileNetV2 at smoke size", digits={**DIGITS_CONFIG, **DEMO_CONFIG}
        )
    return DEMO_MODEL


def leave_out(names, left_out, why: str) -> list:
    """``names`` without ``left_out`` (models whose rows take the code path of others and cannot be
    made small), printing that the run left them out and ``why``."""
    out = [n for n in left_out if n in names]
    if out:
        print(f"smoke: left out {', '.join(out)} ({why}; name them to run them)", flush=True)
    return [n for n in names if n not in left_out]


def subset(ds, train: int = 256, test: int = 64):
    """A :class:`edgekit.Dataset` of the first ``train`` / ``test`` samples of each split (digits'
    split is stratified and shuffled: every class is there)."""
    return dataclasses.replace(
        ds, x_train=ds.x_train[:train], y_train=ds.y_train[:train], x_test=ds.x_test[:test], y_test=ds.y_test[:test]
    )


def exit_code(ok: bool, smoke: bool) -> int:
    """1 when a target is missed; 0 in smoke mode whatever the targets (they need full sizes)."""
    if smoke:
        print(f"smoke run done: every code path ran; targets {'met' if ok else 'missed'} at smoke sizes, not enforced")
        return 0
    return 0 if ok else 1
