"""Pruning, clustering and QAT over tfmot: each test asserts the property measured from the weights
or the exported file, on tiny models with a few fine-tune steps."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from conftest import assert_clean_error, run_cli

from edgekit import keras
from edgekit.core.errors import InputError
from edgekit.optimize import (
    ClusterConfig,
    FineTune,
    PruneConfig,
    QATConfig,
    Recipe,
    callbacks,
    cluster,
    load_model,
    m_by_n_compliant,
    optimize,
    prune,
    qat,
    save_model,
    strip,
    weight_report,
)

L = keras.layers


def _small(seed=0):
    """A classifier with enough weights per layer for sparsity to be measured to 0.01."""
    keras.utils.set_random_seed(seed)
    i = keras.Input((32, 32, 1))
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(i)
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(64, activation="relu")(x)
    return keras.Model(i, L.Dense(10, activation="softmax")(x))


@pytest.fixture(scope="module")
def trained(digits_ds):
    m = _small()
    m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", ["accuracy"])
    m.fit(digits_ds.x_train, digits_ds.y_train, epochs=4, batch_size=32, verbose=0)
    return m


def _snapshot(model):
    return [w.copy() for w in model.get_weights()]


def test_prune_reaches_the_target_in_under_20_steps_inside_a_plain_fit(trained, digits_ds):
    before = _snapshot(trained)
    pruned = prune(trained, PruneConfig(sparsity=0.8))
    pruned.compile("adam", "sparse_categorical_crossentropy")
    # The user's own fit with the callbacks pruning needs: 256 samples / 16 = 16 steps.
    pruned.fit(
        digits_ds.x_train[:256],
        digits_ds.y_train[:256],
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=callbacks(pruned),
    )
    report = weight_report(strip(pruned))
    assert len(report.layers) == 4
    for layer in report.layers:
        assert layer.zeros >= 0.79, layer
    # the caller's model is untouched
    assert all(np.array_equal(a, b) for a, b in zip(before, trained.get_weights()))


def test_a_pruned_model_that_never_stepped_is_an_error_not_a_dense_file(trained, digits_ds, tmp_path):
    from edgekit.converters import export

    pruned = prune(trained, PruneConfig(sparsity=0.8))  # wrapped, never fine-tuned with its callbacks
    with pytest.raises(InputError, match="never stepped.*edgekit.optimize.callbacks"):
        export(pruned, str(tmp_path / "p.tflite"), "float32")
    with pytest.raises(InputError, match="never stepped"):
        strip(pruned)
    assert not (tmp_path / "p.tflite").exists()
    pruned.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(Exception, match="UpdatePruningStep"):  # tfmot itself refuses to train without them
        pruned.fit(digits_ds.x_train[:32], digits_ds.y_train[:32], batch_size=16, verbose=0)


def test_two_four_pattern_every_group_of_four_has_two_zeros(trained, digits_ds):
    pruned = prune(trained, pattern="2:4")
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(digits_ds.x_train[:64], digits_ds.y_train[:64], batch_size=16, verbose=0, callbacks=callbacks(pruned))
    report = weight_report(strip(pruned))
    stem, rest = report.layers[0], report.layers[1:]
    assert stem.two_four is None and stem.zeros == 0.0  # 1 input channel: 2:4 does not apply, left alone
    assert all(l.two_four is True for l in rest)
    assert all(l.zeros >= 0.5 for l in rest)


def test_m_by_n_check_reads_groups_along_the_input_axis():
    dense = np.ones((8, 3), np.float32)  # [in, out]
    dense[0::4] = dense[1::4] = 0  # inputs 0,1 and 4,5 zero for every output
    assert m_by_n_compliant(dense) is True
    dense[1, 2] = 1.0
    assert m_by_n_compliant(dense) is False
    conv = np.zeros((3, 3, 2, 4), np.float32)
    assert m_by_n_compliant(conv) is None  # fewer than 4 inputs


def test_prune_layer_selection_and_errors(trained):
    pruned = prune(trained, sparsity=0.5, layers=("re:dense.*",), steps=4)
    wrapped = [type(l.layer).__name__ for l in pruned.layers if type(l).__name__ == "PruneLowMagnitude"]
    assert wrapped == ["Dense", "Dense"]  # the regex matched the two Dense layers only
    assert [
        type(l.layer).__name__
        for l in prune(trained, layers=(keras.layers.Conv2D,), steps=4).layers
        if type(l).__name__ == "PruneLowMagnitude"
    ] == ["Conv2D", "Conv2D"]
    with pytest.raises(InputError, match="no layer matches 'nope'"):
        prune(trained, layers=("nope",))
    with pytest.raises(InputError, match="cannot tell how many batches"):
        p = prune(trained)
        p.compile("adam", "sparse_categorical_crossentropy")
        from edgekit.core.compat import tf

        def batches():  # a finite stream of unknown length
            for _ in range(2):
                yield np.zeros((4, 32, 32, 1), np.float32), np.zeros(4)

        gen = tf.data.Dataset.from_generator(
            batches, output_signature=(tf.TensorSpec((None, 32, 32, 1), tf.float32), tf.TensorSpec((None,), tf.float64))
        )
        p.fit(gen, epochs=1, verbose=0, callbacks=callbacks(p))


def test_cluster_16_keeps_16_values_and_shrinks_the_gzipped_int8_file(trained, digits_ds, tmp_path):
    from edgekit.converters import export

    clustered = cluster(trained, ClusterConfig(clusters=16))
    clustered.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    clustered.fit(digits_ds.x_train[:128], digits_ds.y_train[:128], batch_size=32, verbose=0)
    stripped = strip(clustered)
    report = weight_report(stripped)
    assert all(l.unique <= 16 for l in report.layers)
    sizes = {}
    for name, m in (("plain", trained), ("clustered", stripped)):
        r = export(
            m,
            str(tmp_path / f"{name}.tflite"),
            "int8",
            calibration=digits_ds.x_train,
            validation_data=(digits_ds.x_test, None),
            calib_samples=64,
            layer_report=False,
        )
        sizes[name] = len(gzip.compress(open(r.path, "rb").read(), 9))
    assert sizes["clustered"] < 0.9 * sizes["plain"], sizes  # small model: the graph weighs; the demo checks 0.6x


def test_collaborative_prune_cluster_qat_keeps_zeros_and_clusters_into_int8(trained, digits_ds, tmp_path):
    from edgekit.converters import export, inspect_tflite

    recipe = Recipe.of(
        [QATConfig(), PruneConfig(sparsity=0.8), ClusterConfig(clusters=8)],  # any order: the registry's
        FineTune(epochs=1, batch_size=64),
    )
    result = optimize(
        trained,
        recipe,
        digits_ds.x_train[:512],
        digits_ds.y_train[:512],
        validation_data=(digits_ds.x_test, digits_ds.y_test),
        allow_drop=True,  # one epoch after 80% pruning: the property measured is the zeros and clusters
    )
    assert [s.step for s in result.steps] == ["prune 0.8", "cluster 8", "qat"]
    final = result.steps[-1].weights
    for layer in final.layers:  # PCQAT: zeros and clusters survive quantization-aware training
        assert layer.zeros >= 0.79 and layer.unique <= 8, layer
    r = export(
        result.model,
        str(tmp_path / "pcqat.tflite"),
        "int8",
        calibration=digits_ds.x_train,
        validation_data=(digits_ds.x_test, None),
        calib_samples=64,
        layer_report=False,
    )
    assert r.fully_integer
    from edgekit.device import load_interpreter

    info = inspect_tflite(r.path)
    interp = load_interpreter(r.path)
    weights = [t for t in info.tensors if t.constant and t.dtype == "INT8" and len(t.shape) in (2, 4)]
    assert len(weights) == 4
    for t in weights:  # the zeros are still there in the int8 file
        assert np.mean(interp.get_tensor(t.index) == 0) >= 0.79, t.name
    assert inspect_tflite(r.path).fully_integer


def _with(mid):
    i = keras.Input((16, 16, 1))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(i)
    x = mid(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(i, L.Dense(4, activation="softmax")(x))


def _se(x):
    s = L.GlobalAveragePooling2D()(x)
    s = L.Dense(8, activation="sigmoid")(s)
    return L.Multiply()([x, L.Reshape((1, 1, 8))(s)])


QAT_LAYERS = {
    "multiply": _se,
    "reshape": lambda x: L.Reshape((8, 32, 8))(x),
    "rescaling": lambda x: L.Rescaling(0.5, 0.1)(x),
    "upsampling_nearest": lambda x: L.UpSampling2D()(x),
    "upsampling_bilinear": lambda x: L.UpSampling2D(interpolation="bilinear")(x),
    "conv2d_transpose": lambda x: L.Conv2DTranspose(8, 3, strides=2, padding="same")(x),
    "sigmoid": lambda x: L.Activation("sigmoid")(x),
    "hard_sigmoid": lambda x: L.Activation("hard_sigmoid")(x),
    "swish": lambda x: L.Activation("swish")(x),
}


@pytest.mark.parametrize("name", sorted(QAT_LAYERS))
def test_qat_on_common_layers_exports_fully_integer(name, tmp_path):
    from edgekit.converters import export

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((96, 16, 16, 1), dtype=np.float32)
    y = (x.mean(axis=(1, 2, 3)) * 4 % 4).astype(int)
    model = _with(QAT_LAYERS[name])
    q = qat(model)
    q.compile("adam", "sparse_categorical_crossentropy")
    q.fit(x, y, epochs=1, batch_size=32, verbose=0)
    r = export(
        q, str(tmp_path / f"{name}.tflite"), "int8", calibration=x, validation_data=(x, None), layer_report=False
    )
    assert r.fully_integer and r.agreement >= 0.9, (r.agreement, r.op_counts)


def test_qat_errors_name_the_layer_and_the_fix(tmp_path):
    i = keras.Input((4, 4, 4, 1))
    x = L.Conv3D(2, 2, name="cube")(i)
    model = keras.Model(i, L.Dense(2)(L.Flatten()(x)))
    with pytest.raises(
        InputError,
        match=r"layer 'cube' \(Conv3D\) has no QuantizeConfig; leave it in float with "
        r"QATConfig\(skip=\('cube',\)\)",
    ):
        qat(model)
    q = qat(model, QATConfig(skip=("cube",)))
    assert any(l.name == "cube" for l in q.layers)


def test_keras3_models_are_translated_and_subclassed_models_refused():
    import keras as keras3

    k3 = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(8), keras3.layers.Dense(2)])
    pruned = prune(k3)  # translated to tf_keras (checked), then wrapped
    assert any(type(l).__name__ == "PruneLowMagnitude" for l in pruned.layers)
    sub3 = keras3.Model()  # a subclassed Keras 3 model has no graph to translate
    with pytest.raises(InputError, match="subclassed Keras 3 model"):
        prune(sub3)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 4), np.float32))
    with pytest.raises(InputError, match="subclassed model"):
        qat(sub)


def test_recipe_toml_and_its_errors(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        '[fine_tune]\nepochs = 3\n\n[[steps]]\ntechnique = "prune"\nsparsity = 0.7\npattern = "unstructured"\n'
        'skip = ["predictions"]\n\n[[steps]]\ntechnique = "cluster"\nclusters = 8\nepochs = 1\n\n'
        '[[steps]]\ntechnique = "qat"\n'
    )
    recipe = Recipe.from_toml(str(path))
    assert recipe.describe() == "prune 0.7 → cluster 8 → qat"
    assert [s.fine_tune.epochs for s in recipe.steps] == [3, 1, 3]
    assert recipe.steps[0].config == PruneConfig(sparsity=0.7, skip=("predictions",))
    for text, message in [
        ('[[steps]]\ntechnique = "prune"\nsparsty = 0.5\n', "unknown key 'sparsty' for prune"),
        ('[[steps]]\ntechnique = "qat"\n[[steps]]\ntechnique = "prune"\n', "qat must be the last step"),
        ('[[steps]]\ntechnique = "dstill"\n', "technique must be one of"),
        ('[fine_tune]\ndistill = {temp = 2}\n[[steps]]\ntechnique = "prune"\n', "distill has unknown key 'temp'"),
        ("[[steps]\n", "not valid TOML"),
        ('[[steps]]\ntechnique = "prune"\nsparsity = 1.5\n', "sparsity must be in (0, 1)"),
    ]:
        path.write_text(text)
        with pytest.raises(InputError, match=__import__("re").escape(message)):
            Recipe.from_toml(str(path))


def test_qat_model_saves_as_savedmodel_and_reloads(tmp_path):
    model = _with(_se)
    q = qat(model)
    x = np.random.default_rng(0).random((4, 16, 16, 1), dtype=np.float32)
    with pytest.raises(InputError, match="give a directory name"):
        save_model(q, str(tmp_path / "q.keras"))
    assert not (tmp_path / "q.keras").exists()
    path = save_model(q, str(tmp_path / "q_qat"))
    back = load_model(path)
    np.testing.assert_allclose(back.predict(x, verbose=0), q.predict(x, verbose=0), atol=1e-6)
    # exports with the default settings (no per-layer report for QAT: TF's debugger cannot run it)
    from edgekit.converters import export

    r = export(back, str(tmp_path / "q.tflite"), "int8", calibration=x, validation_data=(x, None))
    assert r.fully_integer and r.worst_layers == []


def test_cli_optimize_prune_and_report(tiny_keras_path, npz, digits_ds, tmp_path):
    data = npz(
        x_train=digits_ds.x_train[:256],
        y_train=digits_ds.y_train[:256],
        x_test=digits_ds.x_test[:100],
        y_test=digits_ds.y_test[:100],
    )
    out, report = tmp_path / "pruned.keras", tmp_path / "r.json"
    proc = run_cli(
        "optimize",
        tiny_keras_path,
        "--data",
        data,
        "--prune",
        "0.8",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "-o",
        out,
        "--json",
        report,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(report.read_text())
    (step,) = doc["steps"]
    pruned_layers = [l for l in step["weights"]["layers"] if l["kind"] != "DepthwiseConv2D"]
    assert all(l["zeros"] >= 0.79 for l in pruned_layers)
    reloaded = keras.models.load_model(str(out))  # a plain tf_keras model: wrappers stripped
    # the step's accuracy is the written model's, on the .npz's test split
    top = reloaded.predict(digits_ds.x_test[:100], verbose=0).argmax(-1)
    assert step["step"] == "prune 0.8"
    assert step["accuracy"] == pytest.approx(float(np.mean(top == digits_ds.y_test[:100])), abs=1e-12)
    assert weight_report(reloaded).layer(reloaded.layers[-1].name).zeros >= 0.79
    assert "zeros" in proc.stdout and "wrote" in proc.stdout


def test_cli_optimize_qat_straight_to_a_verified_int8_tflite(tiny_keras_path, npz, digits_ds, tmp_path):
    from edgekit.converters import inspect_tflite

    data = npz(
        x_train=digits_ds.x_train[:256],
        y_train=digits_ds.y_train[:256],
        x_test=digits_ds.x_test[:100],
        y_test=digits_ds.y_test[:100],
    )
    out, report = tmp_path / "qat.tflite", tmp_path / "r.json"
    proc = run_cli("optimize", tiny_keras_path, "--data", data, "--qat", "--epochs", "1", "-o", out, "--json", report)
    assert proc.returncode == 0, proc.stderr
    assert inspect_tflite(str(out)).fully_integer and "top-1 agreement with Keras" in proc.stdout
    doc = json.loads(report.read_text())
    assert doc["steps"][0]["step"] == "qat" and doc["export"]["fully_integer"] and doc["export"]["agreement"] >= 0.95


def test_cli_optimize_bad_input_writes_nothing(tiny_keras_path, tmp_path):
    out = tmp_path / "q.keras"
    assert_clean_error(
        run_cli("optimize", tiny_keras_path, "--data", "digits", "--qat", "-o", out), contains="SavedModel directory"
    )
    assert_clean_error(run_cli("optimize", tiny_keras_path, "--data", "digits", "-o", out), contains="nothing to do")
    assert_clean_error(
        run_cli("optimize", tiny_keras_path, "--data", "digits", "--prune", "1.5", "-o", out), contains="must be in"
    )
    assert not out.exists()


def test_fold_batchnorm_is_exact_and_keeps_clusters_in_the_int8_file(digits_ds, tmp_path):
    from edgekit.converters import export, inspect_tflite
    from edgekit.device import load_interpreter
    from edgekit.optimize import fold_batchnorm

    keras.utils.set_random_seed(1)
    i = keras.Input((32, 32, 1))
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(i)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    y = L.DepthwiseConv2D(3, padding="same")(x)
    y = L.BatchNormalization()(y)
    x = L.Add()([x, y])  # residual: BN after Add is not foldable
    x = L.BatchNormalization(name="after_add")(x)
    x = L.Conv2D(32, 1, activation="relu")(x)  # activation inside: the next BN is not foldable
    x = L.BatchNormalization(name="after_relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(32)(x)
    x = L.BatchNormalization()(x)
    model = keras.Model(i, L.Dense(10, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits_ds.x_train[:256], digits_ds.y_train[:256], epochs=1, verbose=0)  # non-trivial BN statistics
    folded = fold_batchnorm(model)
    bns = [l.name for l in folded.layers if isinstance(l, L.BatchNormalization)]
    assert sorted(bns) == ["after_add", "after_relu"]
    x = digits_ds.x_test[:64]
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)

    c = strip(cluster(model, ClusterConfig(clusters=8)))
    r = export(
        c,
        str(tmp_path / "c.tflite"),
        "int8",
        calibration=digits_ds.x_train,
        validation_data=(x, None),
        calib_samples=32,
        layer_report=False,
        per_channel=False,
    )
    interp = load_interpreter(r.path)
    for t in inspect_tflite(r.path).tensors:  # Conv2D/Dense kernels: at most 8 int8 values each
        if (
            t.constant
            and t.dtype == "INT8"
            and len(t.shape) in (2, 4)
            and t.shape[-1] != 1
            and "depthwise" not in t.name
        ):
            assert len(np.unique(interp.get_tensor(t.index))) <= 8, t.name
    assert r.per_channel is False and r.fully_integer


def test_qat_preserve_auto_reads_the_weights(trained, digits_ds):
    plain = qat(trained)
    assert plain._edgekit_preserve == "none"  # a trained, unclustered model: plain QAT
    p = prune(trained, steps=2)
    p.compile("adam", "sparse_categorical_crossentropy")
    p.fit(digits_ds.x_train[:64], digits_ds.y_train[:64], batch_size=32, verbose=0, callbacks=callbacks(p))
    assert qat(strip(p))._edgekit_preserve == "sparsity"
    c = strip(cluster(strip(p), clusters=8))
    assert qat(c)._edgekit_preserve == "both"


def test_optimize_warns_when_qat_loses_zeros_or_clusters():
    from edgekit.optimize.recipe import _lost
    from edgekit.optimize.weights import LayerWeights, WeightReport

    before = WeightReport(
        [
            LayerWeights("a", "Conv2D", (1, 1, 64, 64), 4096, 0.8, 16, False),
            LayerWeights("b", "Conv2D", (1, 1, 64, 64), 4096, 0.8, 16, False),
        ],
        8192,
    )
    after = WeightReport(
        [
            LayerWeights("a", "Conv2D", (1, 1, 64, 64), 4096, 0.8, 16, False),
            LayerWeights("b", "Conv2D", (1, 1, 64, 64), 4096, 0.07, 3800, False),
        ],
        8192,
    )
    notes = _lost(before, after)
    assert notes[0] == "b: zeros 0.80 → 0.07 after QAT" and len(notes) == 2
    assert _lost(before, before) == []


def test_training_progress_is_one_live_line_on_a_terminal_and_plain_lines_elsewhere():
    import io

    from edgekit.optimize.finetune import TrainingProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    model = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    x, y = np.zeros((64, 4), "float32"), np.zeros(64, "int64")
    live, lines = Terminal(), []
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[TrainingProgress("training", lines.append, live)])
    text = live.getvalue()
    assert "training" in text and "8/8" in text and "epoch 2/2" in text and "loss" in text and lines == []
    plain = io.StringIO()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[TrainingProgress("training", lines.append, plain)])
    assert plain.getvalue() == "" and len(lines) == 2
    assert lines[1].strip().startswith("training: epoch 2/2 loss") and "accuracy" in lines[1] and "ETA 0 s" in lines[1]


def test_qat_of_a_model_with_a_custom_layer_names_it():
    from edgekit.core.errors import InputError
    from edgekit.optimize import qat

    class Scale(L.Layer):  # a custom layer, as keras.applications' ConvNeXt has (LayerScale)
        def call(self, x):
            return x * 0.5

    i = keras.Input((8,))
    model = keras.Model(i, L.Dense(4)(Scale(name="my_scale")(L.Dense(8)(i))))
    with pytest.raises(InputError, match=r"custom layers \(Scale: 'my_scale', 1 in all\)"):
        qat(model)


def test_qat_of_a_batchnorm_after_a_concat_and_an_average_pool_exports_int8(tmp_path):
    """DenseNet's pattern: BatchNormalization after a concatenation (tfmot folds only Conv+BN) and
    an AveragePooling2D (TFLite's int8 kernel needs one scale in and out)."""
    from edgekit.converters import export
    from edgekit.core.saving import load_keras_model, save_model
    from edgekit.optimize import qat

    keras.utils.set_random_seed(0)
    i = keras.Input((16, 16, 3))
    x = L.Concatenate()([L.Conv2D(8, 3, padding="same")(i), i])
    x = L.ReLU()(L.BatchNormalization(name="standalone_bn")(x))
    x = L.AveragePooling2D(2)(L.Conv2D(8, 1)(x))
    model = keras.Model(i, L.Dense(3)(L.GlobalAveragePooling2D()(x)))
    xs = np.random.default_rng(0).random((32, 16, 16, 3), dtype=np.float32)
    q = qat(model, calibration=xs)
    save_model(q, tmp_path / "q", overwrite=False)  # reloads with every custom object
    rep = export(load_keras_model(str(tmp_path / "q")), None, calibration=xs, validation_data=(xs, None))
    assert rep.fully_integer and rep.cosine > 0.99 and rep.op_counts.get("AVERAGE_POOL_2D") == 1


@pytest.fixture(scope="module")
def accurate(digits_ds, tmp_path_factory):
    """A classifier at ~0.95 test accuracy (chance 0.10), saved too: room for a collapse to show."""
    keras.utils.set_random_seed(0)
    i = keras.Input((32, 32, 1))
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(i)
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = L.Dense(64, activation="relu")(L.Flatten()(x))
    m = keras.Model(i, L.Dense(10, activation="softmax")(x))
    m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    m.fit(digits_ds.x_train, digits_ds.y_train, epochs=2, batch_size=32, verbose=0)
    path = str(tmp_path_factory.mktemp("accurate") / "accurate.keras")
    m.save(path)
    return m, path


def test_a_fine_tune_that_collapses_the_model_fails_unless_the_drop_is_allowed(accurate, digits_ds):
    """A step ending further below its start than the larger of 10 points and half the distance
    to chance is a CollapseError (exit 1 in the CLI); allow_drop keeps it, with a warning."""
    from edgekit.core.errors import CollapseError
    from edgekit.optimize import Step, accuracy, chance_level, collapse_bound

    trained, ds = accurate[0], digits_ds
    x, y, val = ds.x_train[:256], ds.y_train[:256], (ds.x_test, ds.y_test)
    chance = float(np.bincount(ds.y_test).max() / len(ds.y_test))
    assert chance_level(ds.y_test) == pytest.approx(chance, abs=1e-12)
    start = accuracy(trained, ds.x_test, ds.y_test)
    assert start > 0.8  # the fixture is a real classifier, so a collapse has room to show
    # Adam at learning rate 0.5 after removing 90% of the weights: the model is wrecked
    wreck = Recipe((Step("prune", PruneConfig(sparsity=0.9), FineTune(1, 32, 0.5)),))
    with pytest.raises(CollapseError, match="collapsed the model") as err:
        optimize(trained, wreck, x, y, validation_data=val)
    assert err.value.exit_code == 1 and "allow_drop" in err.value.params
    kept = optimize(trained, wreck, x, y, validation_data=val, allow_drop=True)
    end = kept.steps[0].accuracy
    assert start - end > collapse_bound(start, chance)
    assert kept.chance == pytest.approx(chance) and any("collapsed" in str(w) for w in kept.warnings)
    assert "(chance: the most frequent class)" in kept.summary()
    # a step that costs a few points is a result, not a collapse
    mild = optimize(
        trained, Recipe((Step("prune", PruneConfig(sparsity=0.5), FineTune(1, 32, 1e-3)),)), x, y, validation_data=val
    )
    assert mild.steps[0].accuracy > start - collapse_bound(start, chance)


def test_cli_optimize_stops_on_a_collapse_and_writes_nothing(accurate, tmp_path):
    out = tmp_path / "wrecked.keras"
    argv = ("optimize", accurate[1], "--data", "digits", "--prune", "0.9", "--epochs", "1", "--lr", "0.5")
    assert_clean_error(run_cli(*argv, "-o", out), 1, "collapsed the model")
    assert not out.exists()
    proc = run_cli(*argv, "-o", out, "--allow-drop")
    assert proc.returncode == 0, proc.stderr
    assert "kept, as --allow-drop asks" in proc.stdout + proc.stderr and out.exists()


def test_clustering_after_pruning_leaves_kernels_with_fewer_non_zeros_than_clusters_alone():
    """80% pruning leaves an 8x8 kernel 13 non-zero weights: tfmot's k-means of 16 centroids among
    them failed inside TensorFlow (num_to_sample <= points.rows()); the layer is left alone and said."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8,)), L.Dense(8, activation="relu", name="small"), L.Dense(64, activation="relu"), L.Dense(10)]
    )
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 64)
    ft = FineTune(1, 32, 1e-3)
    result = optimize(model, Recipe.of([PruneConfig(sparsity=0.8), ClusterConfig(clusters=16)], ft), x, y)
    layers = {l.layer: l for l in result.steps[-1].weights.layers}
    assert layers["small"].unique > 16  # not clustered
    assert all(l.unique <= 16 + 1 for name, l in layers.items() if name != "small")  # 16 centroids and the zeros
    assert any("1 Dense kernel(s)" in str(w) and "too small" in str(w) for w in result.warnings), result.warnings
