"""SavedModels without Keras metadata (Keras 3's model.export, tf.saved_model.save): exported and
verified against TensorFlow running the serving signature; refused when their graph touches files;
the verbs that rewrite a Keras model say they need one."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_clean_error, run_cli

from edgekit.converters import export
from edgekit.core.compat import keras3, tf
from edgekit.core.errors import UnsafeModelError
from edgekit.core.modelfile import scan
from edgekit.core.saving import load_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small Keras 3 classifier trained on two kinds of windows, written with model.export()
    (a SavedModel, no Keras metadata), and its data as a .npz."""
    K = keras3()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16, 2)).astype(np.float32)
    y = (x[:, :, 0].mean(axis=1) > 0).astype(np.int64)
    K.utils.set_random_seed(0)
    L = K.layers
    m = K.Sequential([K.Input((16, 2)), L.Conv1D(8, 3, activation="relu"), L.GlobalAveragePooling1D(), L.Dense(2)])
    m.compile("adam", K.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    m.fit(x, y, epochs=30, batch_size=32, verbose=0)
    root = tmp_path_factory.mktemp("savedmodel")
    m.export(str(root / "model"), verbose=False)
    np.savez(root / "data.npz", x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    return root, m, x, y


def test_export_a_keras3_export_as_int8(exported):
    root, m, x, y = exported
    found = scan(root / "model")
    assert found.format == "savedmodel" and not found.has_keras_metadata and found.graph_ops
    graph = load_model(root / "model")
    np.testing.assert_allclose(graph.predict(x[:7]), m.predict(x[:7], verbose=0), rtol=1e-5, atol=1e-5)
    rep = export(graph, None, "int8", calibration=x[:300], validation_data=(x[300:], y[300:]))
    assert rep.fully_integer and rep.agreement >= 0.95 and rep.accuracy >= rep.keras_accuracy - 0.03, rep.summary()
    assert rep.keras_accuracy >= 0.9  # the reference is TensorFlow running the signature: the trained model


def test_cli_exports_it_and_the_other_verbs_say_they_need_keras(exported, tmp_path):
    root, *_ = exported
    out = run_cli("export", root / "model", "--quant", "int8", "--data", root / "data.npz", "-o", tmp_path / "m.tflite")
    assert out.returncode == 0, out.stderr
    assert "top-1 agreement with Keras" in out.stdout and (tmp_path / "m.tflite").stat().st_size > 0
    bad = run_cli("optimize", root / "model", "--data", root / "data.npz", "--prune", "0.5", "-o", tmp_path / "p.keras")
    assert_clean_error(bad, 2, "'edgekit export' converts and verifies it")
    assert not (tmp_path / "p.keras").exists()


def test_a_savedmodel_whose_graph_writes_files_is_refused(tmp_path):
    """Nothing of it runs: the scan reads the ops of its functions from saved_model.pb."""

    class Leaky(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            tf.io.write_file(str(tmp_path / "leaked.txt"), tf.strings.as_string(tf.reduce_sum(x)))
            return {"y": x * 2.0}

    module = Leaky()
    tf.saved_model.save(module, str(tmp_path / "leaky"), signatures={"serving_default": module.serve})
    with pytest.raises(UnsafeModelError, match="runs the TensorFlow op WriteFile"):
        load_model(tmp_path / "leaky")
    np.savez(tmp_path / "d.npz", x=np.ones((8, 4), np.float32))
    data = ("--data", tmp_path / "d.npz")
    proc = run_cli("export", tmp_path / "leaky", "--quant", "float32", *data, "-o", tmp_path / "o.tflite")
    assert_clean_error(proc, 2, "WriteFile")
    assert "--unsafe-load" in proc.stderr and not (tmp_path / "leaked.txt").exists()
    assert not (tmp_path / "o.tflite").exists()


def test_a_savedmodel_with_two_inputs_and_two_outputs_exports_int8_verified_per_output(tmp_path):
    class Two(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(8, 3)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, a, b):
            h = tf.matmul(tf.concat([a, b], axis=1), self.w)
            return {"logits": h, "total": tf.reduce_sum(h, axis=1, keepdims=True)}

    module = Two()
    tf.saved_model.save(module, str(tmp_path / "two"), signatures={"serving_default": module.serve})
    model = load_model(tmp_path / "two")
    assert model.input_names == ["a", "b"] and model.output_names == ["logits", "total"]
    rng = np.random.default_rng(1)
    x = {"a": rng.normal(size=(200, 4)).astype("float32"), "b": rng.normal(size=(200, 4)).astype("float32")}
    total = (np.concatenate([x["a"], x["b"]], 1) @ module.w.numpy()).sum(1, keepdims=True)
    report = export(
        model,
        None,
        "int8",
        calibration=x,
        validation_data=(x, {"total": total + 0.01}),
        task={"logits": "classification", "total": "regression"},
    )
    assert report.fully_integer and sorted(t["key"] for t in report.inputs) == ["a", "b"]
    per = {p["name"]: p for p in report.per_output}
    assert per["logits"]["task"] == "classification" and per["logits"]["agreement"] >= 0.95
    mae = per["total"]["metrics"]
    assert mae["keras"]["mae"] == pytest.approx(0.01, abs=1e-4)  # TensorFlow's own run of the signature
    assert mae["tflite"]["mae"] < 0.1 * float(np.mean(np.abs(total)))  # int8 within rounding of the float output
    assert "output total (regression)" in report.summary()
