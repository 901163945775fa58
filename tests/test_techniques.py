"""Distillation, low-rank factorization, weight tying and the text corpus."""

import numpy as np
import pytest
from conftest import assert_clean_error, run_cli

from edgekit import keras
from edgekit.core.errors import InputError
from edgekit.optimize import (
    DistillConfig,
    Distiller,
    FactorizeConfig,
    FineTune,
    PruneConfig,
    Recipe,
    callbacks,
    distill,
    factorize_report,
    optimize,
    prune,
    weight_report,
)

L = keras.layers


def _mlp(seed, hidden=32, softmax=False, name=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8,)),
            L.Dense(hidden, activation="relu", name="hidden"),
            L.Dense(5, activation="softmax" if softmax else None, name="out"),
        ],
        name=name,
    )


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    return x, (x[:, :5].argmax(axis=1)).astype(np.int64)


def _kl(t_logits, s_logits, temp):
    def softmax(z):
        z = z / temp - (z / temp).max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    p, q = softmax(t_logits.astype(np.float64)), softmax(s_logits.astype(np.float64))
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1)) * temp**2)


def test_the_soft_loss_is_the_temperature_scaled_kl_to_the_teacher():
    teacher, student = _mlp(0, 64), _mlp(1, 8)
    x, _ = _data(32)
    d = Distiller(student, teacher, DistillConfig(temperature=3.0))
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    assert float(d.soft_loss(t, s)) == pytest.approx(_kl(t, s, 3.0), rel=1e-4)
    assert float(d.soft_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    # A teacher ending in softmax gives the same soft targets: log p are its logits up to a constant.
    soft_teacher = keras.Sequential([keras.Input((8,)), teacher.layers[0], L.Dense(5, activation="softmax")])
    soft_teacher.layers[-1].set_weights(teacher.layers[-1].get_weights())
    d2 = Distiller(student, soft_teacher, DistillConfig(temperature=3.0))
    assert float(d2.soft_loss(soft_teacher.predict(x, verbose=0), s)) == pytest.approx(_kl(t, s, 3.0), rel=1e-3)


def test_distillation_pulls_the_student_to_the_teacher_and_returns_a_plain_model():
    teacher, student = _mlp(0, 64), _mlp(1, 8)
    x, y = _data(512)
    before = [w.copy() for w in student.get_weights()]
    trained = distill(
        student,
        teacher,
        x,
        None,
        DistillConfig(temperature=2.0),
        FineTune(epochs=30, batch_size=64, learning_rate=1e-2),
    )
    assert type(trained) in (keras.Sequential, keras.Model) and trained is not student
    assert all(np.array_equal(a, b) for a, b in zip(before, student.get_weights()))  # caller's model untouched
    t = teacher.predict(x, verbose=0)
    kl_before, kl_after = _kl(t, student.predict(x, verbose=0), 2.0), _kl(t, trained.predict(x, verbose=0), 2.0)
    assert kl_after < 0.3 * kl_before
    agree_before = np.mean(student.predict(x, verbose=0).argmax(1) == t.argmax(1))
    agree = np.mean(trained.predict(x, verbose=0).argmax(1) == t.argmax(1))
    assert agree > agree_before + 0.3


def test_distiller_with_features_callbacks_and_evaluate():
    teacher, student = _mlp(0, 64), _mlp(1, 8)
    x, y = _data(128)
    d = Distiller(student, teacher, DistillConfig(features=(("hidden", "hidden"),), alpha=0.5))
    d.compile(keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    seen = []
    hist = d.fit(
        x,
        y,
        epochs=3,
        batch_size=32,
        verbose=0,
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(logs))],
    )
    assert len(seen) == 3 and {"loss", "soft_loss", "hard_loss", "accuracy"} <= set(hist.history)
    assert d._maps[0] is not None and d._maps[0].kernel.shape == (8, 64)  # 8 student units -> 64 teacher units
    assert set(d.evaluate(x, y, verbose=0, return_dict=True)) >= {"loss", "accuracy"}
    with pytest.raises(InputError, match="has no layer 'nope'"):
        Distiller(student, teacher, DistillConfig(features=(("nope", "hidden"),)))
    other = keras.Sequential([keras.Input((8,)), L.Dense(3)])
    with pytest.raises(InputError, match="same shapes"):
        Distiller(other, teacher)
    with pytest.raises(InputError, match="alpha"):
        DistillConfig(alpha=2)


def test_pruning_composes_with_distillation_in_a_recipe():
    teacher = _mlp(0, 64)
    x, y = _data(256)
    # Prune the teacher itself and recover by distilling from the unpruned model (the recipe's input).
    recipe = Recipe.from_dict(
        {
            "fine_tune": {"epochs": 2, "distill": {"temperature": 2.0}},
            "steps": [{"technique": "prune", "sparsity": 0.8}],
        }
    )
    result = optimize(teacher, recipe, x, y, validation_data=(x, y))
    assert weight_report(result.model).zeros == pytest.approx(0.8, abs=0.02)  # UpdatePruningStep ran
    assert recipe.steps[0].fine_tune.distill == DistillConfig(temperature=2.0)
    with pytest.raises(InputError, match="learn from the model itself"):
        optimize(teacher, Recipe.from_dict({"steps": [{"technique": "distill"}]}), x, y)
    pruned = prune(_mlp(1, 8), PruneConfig(sparsity=0.5))
    d = Distiller(pruned, teacher)
    d.compile("adam")
    d.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=callbacks(pruned))
    from edgekit.optimize import strip

    assert weight_report(strip(pruned)).zeros == pytest.approx(0.5, abs=0.02)


def test_factorized_dense_is_the_truncated_svd():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((1000,)), L.Dense(1000, activation="relu", name="big"), L.Dense(10, name="head")]
    )
    rep = factorize_report(model, FactorizeConfig(rank=100))
    big = {l.layer: l for l in rep.layers}["big"]
    assert (big.rank, big.params_before, big.params_after) == (100, 1_000_000, 200_000)
    assert {l.layer: l.rank for l in rep.layers}["head"] == 0  # 1000x10 would not get smaller: kept
    u, v = rep.model.get_layer("big_u").kernel.numpy(), rep.model.get_layer("big_v").kernel.numpy()
    w = model.get_layer("big").kernel.numpy().astype(np.float64)
    uu, s, vt = np.linalg.svd(w, full_matrices=False)
    truncated = (uu[:, :100] * s[:100]) @ vt[:100]
    np.testing.assert_allclose(u @ v, truncated, atol=1e-5)
    err = np.linalg.norm(w - truncated) / np.linalg.norm(w)
    assert big.error == pytest.approx(err, rel=1e-4)
    np.testing.assert_array_equal(rep.model.get_layer("big_v").bias.numpy(), model.get_layer("big").bias.numpy())
    assert rep.params == (model.count_params(), rep.model.count_params())


def test_factorized_conv_matches_the_low_rank_kernel_and_budgets():
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 16))
    h = L.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv")(inp)
    out = L.Dense(4, name="head")(L.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    rep = factorize_report(model, FactorizeConfig(rank=8, layers=("conv",)))
    w = model.get_layer("conv").kernel.numpy()
    m = w.reshape(-1, 64).astype(np.float64)
    uu, s, vt = np.linalg.svd(m, full_matrices=False)
    low = ((uu[:, :8] * s[:8]) @ vt[:8]).reshape(w.shape).astype(np.float32)
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    ref.get_layer("conv").kernel.assign(low)
    x = np.random.default_rng(0).random((4, 12, 12, 16), dtype=np.float32)
    np.testing.assert_allclose(rep.model.predict(x, verbose=0), ref.predict(x, verbose=0), atol=1e-4)
    assert rep.model.get_layer("conv_u").kernel.shape == (3, 3, 16, 8)
    assert rep.model.get_layer("conv_v").kernel.shape == (1, 1, 8, 64)
    # energy: the least rank keeping that share of sum(s^2)
    e = factorize_report(model, FactorizeConfig(energy=0.5, layers=("conv",)))
    share = np.cumsum(s**2) / np.sum(s**2)
    assert e.layers[0].rank == int(np.argmax(share >= 0.5)) + 1
    # a parameter budget is met
    budget = factorize_report(model, FactorizeConfig(target_params=6000))
    assert budget.params[1] <= 6000 < model.count_params()
    with pytest.raises(InputError, match="even rank 1"):
        factorize_report(model, FactorizeConfig(target_params=100))
    with pytest.raises(InputError, match="rank or target_params"):
        FactorizeConfig(rank=2, target_params=10)


def test_factorize_recipe_step_fine_tunes(digits_ds):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((32, 32, 1)), L.Flatten(), L.Dense(256, activation="relu"), L.Dense(10, activation="softmax")]
    )
    x, y = digits_ds.x_train, digits_ds.y_train
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, verbose=0)
    recipe = Recipe.from_dict(
        {"fine_tune": {"epochs": 2, "learning_rate": 1e-3}, "steps": [{"technique": "factorize", "rank": 16}]}
    )
    result = optimize(model, recipe, x, y, validation_data=(digits_ds.x_test, digits_ds.y_test))
    assert result.model.count_params() < 0.15 * model.count_params()
    assert result.steps[0].accuracy > result.baseline_accuracy - 0.05
    assert result.to_dict()["steps"][0]["factorize"]["layers"][0]["rank"] == 16


def test_tie_shares_one_matrix_and_equals_the_untied_model_when_weights_agree():
    from edgekit.models import TiedEmbedding, tie, tied_lm

    untied = tied_lm(50, 16, context=6, layers=1, kernel=2, tied=False)
    emb = untied.get_layer("embedding").get_weights()[0]
    untied.get_layer("logits").set_weights([emb.T.copy()])
    tied = tie(untied, embedding="embedding", output="logits")
    assert isinstance(tied.get_layer("embedding"), TiedEmbedding)
    assert tied.count_params() == untied.count_params() - 50 * 16
    x = np.random.default_rng(0).integers(0, 50, (4, 6))
    np.testing.assert_allclose(tied.predict(x, verbose=0), untied.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(InputError, match="not an Embedding"):
        tie(untied, embedding="block0_conv", output="logits")
    with pytest.raises(InputError, match="has no layer"):
        tie(untied, embedding="embedding", output="nope")
    # a Keras 3 model is translated first, as every verb does
    import keras as k3

    tokens = k3.Input((6,), dtype="int32")
    h = k3.layers.Embedding(50, 16, name="embedding")(tokens)
    k3_model = k3.Model(tokens, k3.layers.Dense(50, use_bias=False, name="logits")(h))
    k3_model.get_layer("logits").set_weights([k3_model.get_layer("embedding").get_weights()[0].T.copy()])
    tied3 = tie(k3_model, embedding="embedding", output="logits")
    assert isinstance(tied3.get_layer("embedding"), TiedEmbedding)
    np.testing.assert_allclose(tied3.predict(x, verbose=0), k3_model.predict(x, verbose=0), atol=1e-5)


def test_python_source_corpus_is_next_token_windows():
    from edgekit.core.data import python_source

    ds = python_source(vocab=128, context=16, max_tokens=40_000)
    assert ds.x_train.shape[1] == 16 and ds.x_train.dtype == np.int32 and len(ds.x_test) > 10
    assert ds.x_train.max() < 128 and ds.x_train.min() >= 0
    np.testing.assert_array_equal(ds.x_train[:, 1:], ds.y_train[:, :-1])  # y is x shifted by one token
    assert np.mean(ds.x_test > 0) > 0.5  # mostly known tokens


def test_cli_distill_and_factorize(digits_ds, tmp_path):
    keras.utils.set_random_seed(0)

    def net(units):
        return keras.Sequential(
            [
                keras.Input((32, 32, 1)),
                L.Flatten(),
                L.Dense(units, activation="relu"),
                L.Dense(10, activation="softmax"),
            ]
        )

    teacher, student = net(64), net(8)
    teacher.save(str(tmp_path / "t.keras"))
    student.save(str(tmp_path / "s.keras"))
    out = tmp_path / "d.keras"
    proc = run_cli(
        "optimize",
        tmp_path / "s.keras",
        "--distill-from",
        tmp_path / "t.keras",
        "--data",
        "digits",
        "--epochs",
        "1",
        "-o",
        out,
        "--json",
        tmp_path / "r.json",
    )
    assert proc.returncode == 0, proc.stderr
    assert "distill T=4 alpha=0.1" in proc.stdout and out.exists()
    proc = run_cli(
        "optimize",
        tmp_path / "t.keras",
        "--factorize-rank",
        "4",
        "--data",
        "digits",
        "--epochs",
        "1",
        "-o",
        tmp_path / "f.keras",
    )
    assert proc.returncode == 0, proc.stderr
    assert "rank" in proc.stdout and "1024x64" in proc.stdout
    proc = run_cli(
        "optimize",
        tmp_path / "t.keras",
        "--factorize-rank",
        "4",
        "--factorize-energy",
        "0.5",
        "--data",
        "digits",
        "-o",
        tmp_path / "g.keras",
    )
    assert_clean_error(proc, contains="give one of --factorize-rank, --factorize-energy")
