"""Models with several inputs and outputs: data as .npz arrays named after them (or dicts in
Python), calibration and verification per input, reports per output, through export, optimize,
bench and mcu, in Keras 3 and tf_keras."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_clean_error, run_cli

from edgekit.converters import export
from edgekit.core.compat import keras3
from edgekit.core.data import load_npz
from edgekit.core.errors import InputError
from edgekit.core.samples import InputSpec, calibration_samples, fit_inputs
from edgekit.optimize import FineTune, PruneConfig, Recipe, optimize


def _sensor_data(n: int, seed: int):
    """An accelerometer window (32×3) and 4 metadata features; a 3-class activity label from the
    window's energy and a heart-rate-like target from both inputs."""
    rng = np.random.default_rng(seed)
    accel = rng.normal(size=(n, 32, 3)).astype(np.float32) * rng.uniform(0.5, 2.0, (n, 1, 1)).astype(np.float32)
    meta = rng.normal(size=(n, 4)).astype(np.float32)
    energy = accel.std(axis=(1, 2))
    activity = np.digitize(energy, np.quantile(energy, [1 / 3, 2 / 3])).astype(np.int64)
    rate = (energy + 0.5 * meta[:, 1]).astype(np.float32)
    return {"accel": accel, "meta": meta}, activity, rate


@pytest.fixture(scope="module")
def two_in_two_out(tmp_path_factory):
    """A Keras 3 model with inputs accel and meta and outputs activity (softmax) and rate (linear),
    compiled with a loss per output and trained; its data as a .npz of named arrays."""
    K = keras3()
    K.utils.set_random_seed(0)
    x, act, rate = _sensor_data(600, 0)
    xt, act_t, rate_t = _sensor_data(200, 1)
    a, m = K.Input((32, 3), name="accel"), K.Input((4,), name="meta")
    h = K.layers.GlobalAveragePooling1D()(K.layers.Conv1D(12, 3, activation="relu")(a))
    h = K.layers.Dense(16, activation="relu")(K.layers.Concatenate()([h, m]))
    model = K.Model(
        [a, m], [K.layers.Dense(3, activation="softmax", name="activity")(h), K.layers.Dense(1, name="rate")(h)]
    )
    model.compile("adam", {"activity": "sparse_categorical_crossentropy", "rate": "mae"})
    model.fit(x, {"activity": act, "rate": rate}, epochs=60, batch_size=32, verbose=0)
    d = tmp_path_factory.mktemp("multi")
    path = d / "two.keras"
    model.save(path)
    npz = d / "two.npz"
    arrays = {f"{k}_train": v for k, v in x.items()} | {f"{k}_test": v for k, v in xt.items()}
    np.savez(npz, **arrays, activity_train=act, activity_test=act_t, rate_train=rate, rate_test=rate_t)
    return model, path, npz, (x, act, rate), (xt, act_t, rate_t)


def test_npz_arrays_named_after_inputs_and_outputs_load_as_dicts(two_in_two_out, tmp_path):
    _, _, npz, (x, act, rate), (xt, _, _) = two_in_two_out
    ds = load_npz(str(npz), ["accel", "meta"], ["activity", "rate"])
    assert set(ds.x_train) == {"accel", "meta"} and ds.x_test["meta"].shape == (200, 4)
    assert ds.y_train["activity"].dtype == np.int64 and ds.y_train["rate"].dtype == np.float32
    np.testing.assert_array_equal(ds.x_train["accel"], x["accel"])
    np.savez(tmp_path / "half.npz", accel=x["accel"])
    with pytest.raises(InputError, match="no array for input.s. meta"):
        load_npz(str(tmp_path / "half.npz"), ["accel", "meta"], ["activity", "rate"])


def test_several_inputs_are_checked_and_sampled_together():
    specs = [InputSpec("accel", (32, 3), "float32"), InputSpec("meta", (4,), "float32")]
    x, _, _ = _sensor_data(50, 0)
    fitted = fit_inputs([x["accel"], x["meta"]], specs, "data")  # a list in the inputs' order
    assert list(fitted) == ["accel", "meta"]
    with pytest.raises(InputError, match="takes 2 inputs .accel, meta.; data must hold one array per input"):
        fit_inputs(x["accel"], specs, "data")
    with pytest.raises(InputError, match="different numbers of samples"):
        fit_inputs({"accel": x["accel"], "meta": x["meta"][:10]}, specs, "data")
    drawn, info = calibration_samples(x, specs, 20, seed=3)
    assert info["samples"] == 20 and info["source"] == "arrays"
    rows = [np.flatnonzero((x["meta"] == r).all(1))[0] for r in drawn["meta"]]
    np.testing.assert_array_equal(drawn["accel"], x["accel"][rows])  # the same rows of every input
    stream = ({"accel": x["accel"][i], "meta": x["meta"][i]} for i in range(50))  # one sample per element
    drawn, info = calibration_samples(stream, specs, 8)
    assert info["selection"] == "first" and drawn["accel"].shape == (8, 32, 3)
    pairs = (((x["accel"][i : i + 4], x["meta"][i : i + 4]), np.zeros(4)) for i in range(0, 50, 4))  # (inputs, y)
    drawn, _ = calibration_samples(pairs, specs, 8)
    np.testing.assert_array_equal(drawn["meta"], x["meta"][:8])


def test_int8_export_calibrates_each_input_and_verifies_each_output(two_in_two_out):
    model, _, _, (x, _, _), (xt, act_t, rate_t) = two_in_two_out
    rep = export(model, None, "int8", calibration=x, validation_data=(xt, {"activity": act_t, "rate": rate_t}))
    assert rep.fully_integer and rep.task == "several"
    assert [t["key"] for t in rep.inputs] == ["accel", "meta"] and {t["key"] for t in rep.outputs} == {
        "activity",
        "rate",
    }
    per = {p["name"]: p for p in rep.per_output}
    assert per["activity"]["task"] == "classification" and per["rate"]["task"] == "regression"
    assert "loss" in per["rate"]["reason"] and per["activity"]["agreement"] >= 0.97
    assert per["activity"]["keras_accuracy"] > 0.8  # the model learned its tasks ...
    mae = per["rate"]["metrics"]
    assert mae["keras"]["mae"] < 0.5 * float(np.mean(np.abs(rate_t - rate_t.mean())))
    assert abs(mae["tflite"]["mae"] - mae["keras"]["mae"]) <= 0.05 * mae["keras"]["mae"]  # ... and int8 keeps them
    assert rep.agreement == per["activity"]["agreement"] and rep.cosine == min(p["cosine"] for p in per.values())
    text = rep.summary()
    assert "inputs accel INT8 [1, 32, 3], meta INT8 [1, 4]" in text and "output rate (regression): MAE" in text


def test_cli_export_bench_mcu_and_optimize_with_named_arrays(two_in_two_out, tmp_path):
    _, path, npz, _, _ = two_in_two_out
    out = tmp_path / "two.tflite"
    proc = run_cli("export", path, "--quant", "int8", "--data", npz, "-o", out, "--json", tmp_path / "e.json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "e.json").read_text())
    assert {p["name"] for p in doc["per_output"]} == {"activity", "rate"}
    proc = run_cli("bench", out, "--data", npz, "--runs", "5", "--json", tmp_path / "b.json")
    assert proc.returncode == 0, proc.stderr
    measured = json.loads((tmp_path / "b.json").read_text())["results"][0]["outputs"]
    per = {p["name"]: p for p in doc["per_output"]}
    assert measured["activity"]["accuracy"] == pytest.approx(per["activity"]["accuracy"])  # the same file, same data
    assert measured["rate"]["mae"] == pytest.approx(per["rate"]["metrics"]["tflite"]["mae"], rel=1e-5)
    proc = run_cli("mcu", out, "--data", npz, "--json", tmp_path / "m.json")
    assert proc.returncode == 0, proc.stderr
    mcu = json.loads((tmp_path / "m.json").read_text())
    assert mcu["arena_bytes"] > 0 and mcu["samples"] == 200 and mcu["max_step_diff"] <= 1  # TFLM = LiteRT
    proc = run_cli("optimize", path, "--prune", "0.5", "--epochs", "2", "--data", npz, "-o", tmp_path / "p.tflite")
    assert proc.returncode == 0, proc.stderr
    assert "output rate (test MAE): input" in proc.stdout and "output rate (regression): MAE" in proc.stdout
    np.savez(tmp_path / "x_only.npz", x=np.zeros((4, 32, 3), np.float32))
    assert_clean_error(
        run_cli("export", path, "--quant", "int8", "--data", tmp_path / "x_only.npz", "-o", tmp_path / "bad.tflite"),
        contains="expected 'accel', 'meta'",
    )
    assert not (tmp_path / "bad.tflite").exists()


def test_optimize_fine_tunes_every_output_and_scores_the_first(two_in_two_out):
    """A tf_keras model with two outputs: the fine-tune minimises a loss per output (the compiled
    ones), the steps are scored by the first output and the others are reported beside it."""
    model, _, _, (x, act, rate), (xt, act_t, rate_t) = two_in_two_out
    recipe = Recipe.of([PruneConfig(sparsity=0.5)], FineTune(epochs=10, learning_rate=2e-3))
    y, y_test = {"activity": act, "rate": rate}, {"activity": act_t, "rate": rate_t}
    res = optimize(model, recipe, [x["accel"], x["meta"]], y, validation_data=(xt, y_test))  # a list: inputs' order
    assert res.task == "classification" and res.output_tasks == ["classification", "regression"]
    assert res.baseline_outputs["rate"][0] == "MAE" and res.steps[0].outputs["rate"] is not None
    assert res.steps[0].score >= res.baseline_score - 0.1  # the first output kept its accuracy ...
    assert res.steps[0].outputs["rate"] <= 1.5 * res.baseline_outputs["rate"][1]  # ... and the second its MAE
    with pytest.raises(InputError, match="labels or targets of output.s. rate"):
        optimize(model, recipe, x, {"activity": act}, validation_data=(xt, {"activity": act_t}))
