"""On-device learning: a trainable export (builtin ops only) trained through LiteRT by the
board-side Learner exactly as TensorFlow trains it, new classes learned from a few examples, the
state saved and restored, here and under QEMU ARM64."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_clean_error, run_cli

from edgekit import keras
from edgekit.converters.trainable import TrainableOptions, builtin_check, export_trainable
from edgekit.device.board import learner as learner_module
from edgekit.device.board.errors import BoardError
from edgekit.device.board.harness import load_interpreter
from edgekit.device.board.learner import Learner

L = keras.layers


def _clusters(n: int, classes: int, seed: int):
    """Gaussian clusters in 8-D, one per class."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 3, (8, 8))
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(size=(n, 8))).astype(np.float32), y


@pytest.fixture(scope="module")
def trained():
    """Dense(16, relu) → Dense(12, relu) → Dense(3, softmax), trained on classes 0-2 of 5."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    h = L.Dense(12, activation="relu", name="features")(L.Dense(16, activation="relu")(inp))
    model = keras.Model(inp, L.Dense(3, activation="softmax", name="head")(h))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = _clusters(600, 3, 0)
    model.fit(x, y, epochs=10, verbose=0)
    return model


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_a_trainable_head_has_builtin_ops_only_and_trains_as_tensorflow_does(trained, optimizer, tmp_path):
    x, _ = _clusters(64, 3, 1)
    opts = TrainableOptions(trainable=2, optimizer=optimizer, classes=5, batch_size=8)
    rep = export_trainable(trained, tmp_path / "h.tflite", "int8", calibration=x, options=opts)
    names = builtin_check((tmp_path / "h.tflite").read_bytes())
    assert not any(n.startswith(("FLEX", "CUSTOM")) for n in names) and "ASSIGN_VARIABLE" in names
    assert rep.backbone.fully_integer and os.path.isfile(rep.backbone_path) and rep.added_classes == 2
    assert rep.infer_max_diff <= 1e-5 and rep.train_max_diff <= 1e-5, (rep.infer_max_diff, rep.train_max_diff)
    assert len(rep.state) == {"sgd": 4, "momentum": 8, "adam": 13}[optimizer]


def test_twenty_sgd_steps_in_the_file_equal_numpy_sgd(trained, tmp_path):
    """An independent reference: a softmax head's SGD step in numpy, W -= lr * f^T (p - onehot) / B."""
    x, _ = _clusters(64, 3, 2)
    export_trainable(trained, tmp_path / "h.tflite", "int8", calibration=x,
                     options=TrainableOptions(classes=4, batch_size=8, learning_rate=0.05))  # fmt: skip
    learner = Learner(str(tmp_path / "h.tflite"))
    feats = learner.features(x)
    w, b = learner.save()["kernel0"].astype(np.float64), learner.save()["bias0"].astype(np.float64)
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx, y = rng.integers(0, 64, 8), rng.integers(0, 4, 8)
        learner._run["train"](features=feats[idx], labels=y.astype(np.int32))
        z = feats[idx] @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - np.eye(4)[y]) / 8
        w, b = w - 0.05 * feats[idx].T.astype(np.float64) @ g, b - 0.05 * g.sum(0)
    state = learner.save()
    assert np.abs(state["kernel0"] - w).max() <= 1e-5 and np.abs(state["bias0"] - b).max() <= 1e-5


def test_the_learner_learns_new_classes_and_keeps_its_state(trained, tmp_path):
    x, y = _clusters(64, 3, 3)
    path = str(tmp_path / "h.tflite")
    opts = TrainableOptions(classes=5, optimizer="adam", learning_rate=0.05, batch_size=8)
    export_trainable(trained, path, "int8", calibration=x, options=opts)
    learner = Learner(path)
    assert (learner.batch_size, learner.width, learner.outputs) == (8, 12, 5) and learner.backbone is not None
    new_x, new_y = _clusters(400, 5, 4)
    few = np.concatenate([np.flatnonzero(new_y == c)[:10] for c in range(5)])  # 10 examples of each class
    test = np.isin(new_y, (3, 4))
    assert learner.evaluate(new_x[test], new_y[test]) == 0.0  # new classes start at zero
    losses = learner.fit(new_x[few], new_y[few], epochs=30)
    assert losses[-1] < losses[0] and learner.evaluate(new_x[test], new_y[test]) >= 0.9
    assert learner.evaluate(new_x, new_y) >= 0.8  # the old classes too (their examples were among the ten)
    again = Learner(path)
    again.load(learner.save())
    assert np.abs(again.predict(new_x) - learner.predict(new_x)).max() == 0.0
    with pytest.raises(BoardError, match=r"labels must be class ids 0..4"):
        learner.fit(new_x[:8], np.full(8, 7))
    with pytest.raises(BoardError, match=r"the state does not fit this head: 'bias0' is missing"):
        again.load({"kernel0": np.zeros((12, 5), np.float32)})
    with pytest.raises(BoardError, match="not a trainable export"):
        Learner(learner.backbone and path.replace(".tflite", ".backbone.tflite"))


def test_cli_exports_a_trainable_head_and_refuses_what_it_cannot_train(trained, tmp_path):
    model = tmp_path / "m.keras"
    trained.save(model)
    x, y = _clusters(120, 3, 5)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "out.tflite"
    proc = run_cli("export", model, "--quant", "int8", "--data", tmp_path / "d.npz", "--trainable", "head",
                   "--optimizer", "momentum", "-o", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "signatures infer, train, get_weights, set_weights; builtin ops only" in proc.stdout
    before = {p: p.stat().st_mtime_ns for p in (out, tmp_path / "out.backbone.tflite")}
    again = run_cli("export", model, "--quant", "int8", "--data", tmp_path / "d.npz", "--trainable", "head", "-o", out)
    assert_clean_error(again, contains="--overwrite")
    assert {p: p.stat().st_mtime_ns for p in before} == before
    bad = run_cli("export", model, "--quant", "int8", "--data", tmp_path / "d.npz", "--trainable", "4",
                  "-o", tmp_path / "x.tflite")  # fmt: skip
    assert_clean_error(bad, contains="the model ends in 3 Dense layer(s) that can train on the device")
    assert not (tmp_path / "x.tflite").exists() and not (tmp_path / "x.backbone.tflite").exists()
    # the board side alone (numpy + LiteRT): measured and the state written
    script = subprocess.run(
        [sys.executable, learner_module.__file__, str(out), "--steps", "5", "--state", str(tmp_path / "s.npz")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert script.returncode == 0, script.stderr
    assert '"train_step_ms"' in script.stdout and "kernel0" in np.load(tmp_path / "s.npz")
    missing = subprocess.run([sys.executable, learner_module.__file__, str(tmp_path / "no.tflite")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and '"error": "model file not found' in missing.stdout and not missing.stderr


def test_a_head_that_cannot_train_is_a_clear_error(tmp_path):
    inp = keras.Input((8,))
    model = keras.Model(inp, L.Dense(3, activation="tanh", name="squash")(L.Dense(4)(inp)))
    x, _ = _clusters(32, 3, 6)
    with pytest.raises(Exception, match=r"layer 'squash' has activation 'tanh'"):
        export_trainable(model, None, "int8", calibration=x)


def test_a_logits_classifier_trains_as_one_and_a_stale_backbone_goes(tmp_path):
    """A linear output compiled with from_logits is a classifier (cross-entropy on its logits); a head
    that reads the model's input writes no backbone, and an earlier export's beside it is removed
    (with overwrite) rather than read by the Learner."""
    inp = keras.Input((8,))
    model = keras.Model(inp, L.Dense(3, name="logits")(inp))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _clusters(64, 3, 7)
    path = tmp_path / "h.tflite"
    (tmp_path / "h.backbone.tflite").write_bytes(b"stale")
    with pytest.raises(Exception, match="--overwrite|overwrite"):
        export_trainable(model, path, "int8", calibration=x, options=TrainableOptions(classes=4, batch_size=8))
    assert not path.exists() and (tmp_path / "h.backbone.tflite").read_bytes() == b"stale"
    rep = export_trainable(model, path, "int8", calibration=x, options=TrainableOptions(classes=4, batch_size=8),
                           overwrite=True)  # fmt: skip
    assert rep.backbone is None and not (tmp_path / "h.backbone.tflite").exists() and rep.infer_max_diff <= 1e-5
    learner = Learner(str(path))
    assert learner.classification and learner.outputs == 4 and learner.backbone is None
    learner.fit(x, y, epochs=20)
    assert learner.evaluate(x, y) >= 0.8
    for bad in (y.reshape(-1, 1), np.eye(4)[y], y[:0]):
        with pytest.raises(BoardError, match="labels"):
            learner.evaluate(x, bad)


_TFLM_STEPS = r"""
import json, sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
path, arena, plan = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
calls = np.load(sys.argv[4])
it = runtime.Interpreter.from_bytes(open(path, "rb").read(), arena_size=arena)
for i in range(int(calls["n"])):
    for name, pos in plan["inputs"].items():
        it.set_input(calls[f"{i}_{name}"], pos)
    it.invoke()
np.savez(sys.argv[5], **{name: it.get_output(pos) for name, pos in plan["outputs"].items()})
"""


def test_a_microcontroller_head_trains_under_tflm_as_under_litert(trained, tmp_path):
    """target='mcu': one `step` signature (TFLM runs one subgraph); two ReLU/softmax Dense layers with
    Adam use no op TFLM lacks; TFLM's interpreter, in the arena edgekit measured, takes the same train
    steps as LiteRT (weights within 1e-5) and restores a saved state."""
    import json

    from edgekit.converters import flatbuffer as fb
    from edgekit.converters.tflm import tflm_supports

    x, _ = _clusters(64, 3, 8)
    opts = TrainableOptions(trainable=2, optimizer="adam", batch_size=8, classes=4, target="mcu")
    rep = export_trainable(trained, tmp_path / "h.tflite", "int8", calibration=x, options=opts)
    assert rep.signatures == ["step"] and rep.infer_max_diff <= 1e-5 and rep.train_max_diff <= 1e-5
    assert all(tflm_supports(op) for op in rep.ops) and rep.mcu.arena_bytes > 0
    feats = np.random.default_rng(1).normal(size=(8, 16)).astype(np.float32)  # what the first Dense reads
    model = fb.schema().ModelT.InitFromPackedBuf(bytearray(rep.tflite), 0)
    (sig,), graph = model.signatureDefs, model.subgraphs[0]
    plan = {
        way: {t.name.decode(): list(getattr(graph, way)).index(t.tensorIndex) for t in getattr(sig, way)}
        for way in ("inputs", "outputs")
    }
    runner = load_interpreter(model_content=rep.tflite, xnnpack=False).get_signature_runner("step")
    inputs = runner.get_input_details()
    zeros = {n: np.zeros(d["shape"], d["dtype"]) for n, d in inputs.items() if n not in ("mode", "features", "labels")}
    first = runner(mode=np.array(0, np.int32), features=feats, labels=np.zeros(8, np.int32), **zeros)
    state = {k: v for k, v in first.items() if k not in ("output", "loss")}  # the weights as exported
    calls = {}
    for i in range(10):
        labels = np.arange(i, i + 8, dtype=np.int32) % 4
        args = dict(mode=np.array(1, np.int32), features=feats + i, labels=labels, **state)
        lite = runner(**args)
        calls.update({f"{i}_{k}": np.asarray(v) for k, v in args.items()})
    np.savez(tmp_path / "calls.npz", n=10, **calls)
    child = subprocess.run(
        [sys.executable, "-c", _TFLM_STEPS, str(tmp_path / "h.tflite"), str(rep.mcu.arena_bytes), json.dumps(plan),
         str(tmp_path / "calls.npz"), str(tmp_path / "tflm.npz")], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    tflm = np.load(tmp_path / "tflm.npz")
    assert max(float(np.max(np.abs(tflm[k] - lite[k]))) for k in lite) <= 1e-5
