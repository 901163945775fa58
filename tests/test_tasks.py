"""Tasks other than classification: regression and reconstruction (autoencoders, anomaly
detection), through export and optimize, in Keras 3 and tf_keras; how the task is determined."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_clean_error, run_cli

from edgekit.converters import export
from edgekit.core.compat import keras, keras3
from edgekit.core.errors import CollapseError, InputError
from edgekit.core.task import Task, baseline, quality, resolve
from edgekit.optimize import FineTune, PruneConfig, Recipe, collapsed, optimize


def _waves(n: int, seed: int):
    """Noisy sine windows (64 steps) and their frequency (1-4 Hz), the regression target."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 64)
    f = rng.uniform(1, 4, n)
    x = np.sin(2 * np.pi * f[:, None] * t[None, :])[..., None] + 0.1 * rng.normal(size=(n, 64, 1))
    return x.astype(np.float32), f.astype(np.float32)


@pytest.fixture(scope="module")
def regression():
    """A Keras 3 Conv1D regression model compiled with MSE, trained, and its data."""
    K = keras3()
    x, y = _waves(600, 0)
    xt, yt = _waves(200, 1)
    K.utils.set_random_seed(0)
    m = K.Sequential(
        [
            K.Input((64, 1)),
            K.layers.Conv1D(16, 5, activation="relu"),
            K.layers.MaxPooling1D(2),
            K.layers.Conv1D(16, 5, activation="relu"),
            K.layers.GlobalAveragePooling1D(),
            K.layers.Dense(16, activation="relu"),
            K.layers.Dense(1),
        ]
    )
    m.compile("adam", "mse")
    m.fit(x, y, epochs=30, batch_size=32, verbose=0)
    return m, x, y, xt, yt


def test_int8_regression_keeps_its_mae(regression):
    """The export verifies a regression model by its MAE against the targets (no top-1 agreement),
    and the int8 file's MAE is within 2% of the Keras model's."""
    m, x, y, xt, yt = regression
    rep = export(m, None, "int8", calibration=x, validation_data=(xt, yt))
    assert rep.task == "regression" and "mse" in rep.task_reason and rep.agreement is None
    keras_mae, lite_mae = rep.metrics["keras"]["mae"], rep.metrics["tflite"]["mae"]
    assert keras_mae < 0.2 * baseline(Task.REGRESSION, xt, yt)  # the model learned the task
    assert abs(lite_mae - keras_mae) <= 0.02 * keras_mae, (keras_mae, lite_mae)
    assert rep.fully_integer and "verified as regression" in rep.summary() and "MAE keras" in rep.summary()
    with pytest.raises(InputError, match="top-1 agreement, for classifiers; this model's task is regression"):
        export(m, None, "int8", calibration=x, validation_data=(xt, yt), min_agreement=0.9)


def test_pruning_a_regression_model_keeps_its_mae(regression):
    """Fine-tunes minimise the MSE to the targets (shaped as the output: (N,) against (N, 1)
    broadcasts in Keras's losses), the steps are scored by MAE, and a fine-tune too short to recover
    is a collapse in MAE terms."""
    m, x, y, xt, yt = regression
    result = optimize(m, Recipe.of([PruneConfig(sparsity=0.5)], FineTune(10, 32, 2e-3)), x, y, validation_data=(xt, yt))
    assert result.task == "regression" and result.metric == "MAE" and result.baseline_accuracy is None
    assert result.steps[0].score <= 1.05 * result.baseline_score, (result.baseline_score, result.steps[0].score)
    assert abs(result.steps[0].weights.zeros - 0.5) < 0.02
    assert "test MAE" in result.summary() and "always the mean target" in result.summary()
    with pytest.raises(CollapseError, match=r"test MAE .* \(\+\d+%; a model that learned nothing scores"):
        optimize(m, Recipe.of([PruneConfig(sparsity=0.5)], FineTune(1, 32, 5e-4)), x, y, validation_data=(xt, yt))


def test_search_minimises_a_regression_models_on_device_mae(regression, tmp_path):
    """A regression model's search objective is its MAE measured on the device, minimised; the
    limits' --max-drop is percent of the float32 model's MAE; the summary speaks MAE."""
    import optuna

    from edgekit.app.search import Limits, search

    m, x, y, xt, yt = regression
    space = {"channel_ratio": [0.0, 0.25], "sparsity": [0.0], "clusters": [0], "qat": [False], "distill": False}
    res = search(
        m, x, y, validation_data=(xt, yt), directory=str(tmp_path / "s"), trials=2, space=dict(space, epochs=2),
        limits=Limits(max_drop=50.0), log=None, hand_made=False, sampler="random",
    )  # fmt: skip
    assert res.baseline["task"] == "regression" and res.baseline["metric"] == "MAE" and res.baseline["accuracy"] is None
    keras_mae = float(np.mean(np.abs(m.predict(xt, verbose=0)[:, 0] - yt)))
    assert res.baseline["quality"] == pytest.approx(keras_mae, rel=1e-4)  # float32 on the device = Keras
    assert res.baseline["chance"] > 3 * res.baseline["quality"]  # the mean target's MAE: the model learned
    done = [t for t in res.trials if t["state"] == "COMPLETE"]
    assert done and all(t["quality"] == t["mae"] for t in done)
    study = optuna.load_study(study_name=res.study, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s" / "study.log"))))  # fmt: skip
    assert study.directions[0] == optuna.study.StudyDirection.MINIMIZE
    assert "MAE" in res.summary() and "always the mean target" in res.summary()


def test_search_refuses_an_autoencoder_in_one_line(tmp_path):
    from edgekit.app.search import search

    inp = keras.Input((16,))
    ae = keras.Model(inp, keras.layers.Dense(16)(keras.layers.Dense(4)(inp)))
    ae.compile("adam", "mse")  # its loss and an output shaped like its input: reconstruction
    x = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    with pytest.raises(InputError, match=r"accuracy \(classifiers\) or MAE \(regression\).*task is reconstruction"):
        search(ae, x, x, validation_data=(x, x), directory=str(tmp_path / "s"), trials=1, log=None)
    assert not (tmp_path / "s").exists()


def test_autoencoder_keeps_its_anomaly_ranking():
    """A dense autoencoder (tf_keras, not compiled: its output shaped like its input says
    reconstruction) scores samples by reconstruction error; with labels marking planted anomalies
    the int8 file's ROC AUC is within 0.01 of the Keras model's; optimize fine-tunes it on its
    inputs, without labels."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(4, 32))
    normal = lambda n: (rng.normal(size=(n, 4)) @ basis + 0.05 * rng.normal(size=(n, 32))).astype(np.float32)  # noqa: E731
    x = normal(800)
    xt = np.concatenate([normal(150), rng.normal(scale=2.0, size=(50, 32)).astype(np.float32)])
    labels = np.r_[np.zeros(150), np.ones(50)].astype(np.int64)
    keras.utils.set_random_seed(0)
    inp = keras.Input((32,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    h = keras.layers.Dense(4)(h)
    h = keras.layers.Dense(16, activation="relu")(h)
    ae = keras.Model(inp, keras.layers.Dense(32)(h))
    ae.compile("adam", "mse")
    ae.fit(x, x, epochs=40, batch_size=32, verbose=0)
    ae.loss = None  # as loaded without its compile configuration: the output's shape decides
    assert str(resolve(ae)) == "reconstruction (an output shaped like its input)"
    rep = export(ae, None, "int8", calibration=x, validation_data=(xt, labels))
    assert rep.task == "reconstruction"
    k, t = rep.metrics["keras"], rep.metrics["tflite"]
    assert k["auc"] > 0.9 and abs(t["auc"] - k["auc"]) <= 0.01, (k, t)
    result = optimize(ae, Recipe.of([PruneConfig(sparsity=0.5)], FineTune(5, 32, 1e-3)), x, None)
    assert result.task == "reconstruction" and result.baseline_score is None and result.steps[0].weights.zeros > 0.45
    result = optimize(
        ae, Recipe.of([PruneConfig(sparsity=0.5)], FineTune(5, 32, 1e-3)), x, None, validation_data=(xt, labels)
    )
    assert result.steps[0].score <= 1.5 * result.baseline_score < result.chance


def test_the_task_is_determined_in_order():
    """Given, then the compiled loss, then a softmax/sigmoid output, then real-valued targets, then
    an output shaped like the input, else classification (said to be assumed)."""
    inp = keras.Input((8,))
    logits = keras.Model(inp, keras.layers.Dense(3)(inp))
    assert resolve(logits).task is Task.CLASSIFICATION and "assumed" in resolve(logits).reason
    assert resolve(logits, y=np.array([0.5, 1.5])).task is Task.REGRESSION
    assert resolve(logits, task="regression").reason == "given"
    assert resolve(logits, loss="mean_absolute_error").task is Task.REGRESSION
    assert resolve(logits, loss={"module": "keras.losses", "class_name": "Huber", "config": {}}).task is Task.REGRESSION
    assert resolve(logits, loss="sparse_categorical_crossentropy", y=np.array([0.5])).task is Task.CLASSIFICATION
    sigmoid = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(inp))
    assert str(resolve(sigmoid)) == "classification (its sigmoid output)"
    mirror = keras.Model(inp, keras.layers.Dense(8)(inp))
    assert resolve(mirror, loss="mse").task is Task.RECONSTRUCTION
    with pytest.raises(InputError, match="must be one of classification, regression, reconstruction"):
        resolve(logits, task="ranking")
    # a regression model's fine-tunes minimise the loss it was compiled with
    from edgekit.core.task import fit_loss

    found = resolve(logits, loss="mae")
    assert found.loss == "mae" and fit_loss(found.task, logits, keras, found.loss) is keras.losses.get("mae")
    assert resolve(logits, loss="categorical_crossentropy").loss is None
    # a single sigmoid unit is a binary classifier: its class is whether it is above 0.5
    assert quality(Task.CLASSIFICATION, np.array([[0.2], [0.9]]), np.array([0, 1])) == {"accuracy": 1.0}


def test_collapse_of_an_error_metric():
    """An error may rise by the larger of 10% and half the distance to a model that learned nothing."""
    assert not collapsed(0.10, 0.109, 0.2, higher_is_better=False)
    assert collapsed(0.10, 0.16, 0.2, higher_is_better=False)
    assert not collapsed(0.10, 0.14, 0.2, higher_is_better=False)


def test_cli_regression_from_a_keras3_file(regression, tmp_path):
    """The task comes from the loss saved in the .keras file; the export report says so, and
    --min-agreement on a regression model is a one-line error."""
    m, x, y, xt, yt = regression
    m.save(tmp_path / "reg.keras")
    np.savez(tmp_path / "reg.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    common = ("export", tmp_path / "reg.keras", "--quant", "int8", "--data", tmp_path / "reg.npz")
    out = run_cli(*common, "-o", tmp_path / "r.tflite")
    assert out.returncode == 0, out.stderr
    assert "verified as regression (the model's loss, mse)" in out.stdout
    bad = run_cli(*common, "-o", tmp_path / "s.tflite", "--min-agreement", "0.9")
    assert_clean_error(bad, 2, "--min-agreement is top-1 agreement")
    assert "--task classification" in bad.stderr
    assert not (tmp_path / "s.tflite").exists()
