"""Channel pruning: exact surgery, dependency groups for every supported pattern, budgets, recovery."""

import numpy as np
import pytest

from edgekit import keras
from edgekit.core.errors import InputError
from edgekit.optimize import ChannelPruneConfig, channel_prune, channel_prune_report, reestimate_batchnorm

L = keras.layers


def _bn_relu(x):
    return L.ReLU(6.0)(L.BatchNormalization(momentum=0.9)(x))


def residual():
    """Inverted residual blocks with Add (MobileNetV2-style)."""
    inp = keras.Input((16, 16, 3))
    x = _bn_relu(L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inp))
    for i in range(2):
        h = _bn_relu(L.Conv2D(32, 1, use_bias=False, name=f"b{i}_expand")(x))
        h = _bn_relu(L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"b{i}_dw")(h))
        h = L.BatchNormalization(momentum=0.9)(L.Conv2D(16, 1, use_bias=False, name=f"b{i}_project")(h))
        x = L.Add(name=f"b{i}_add")([x, h])
    x = L.GlobalAveragePooling2D()(_bn_relu(L.Conv2D(32, 1, name="head")(x)))
    return keras.Model(inp, L.Dense(5, activation="softmax", name="out")(x))


def concat_separable():
    inp = keras.Input((12, 12, 3))
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="a")(inp)
    b = L.SeparableConv2D(12, 3, padding="same", depth_multiplier=2, name="b")(inp)
    x = L.Concatenate(name="cat")([a, L.BatchNormalization()(b)])
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(16, 1, activation="relu", name="c")(x)
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    x = L.Dense(24, activation="relu", name="fc")(x)
    return keras.Model(inp, L.Dense(4, name="out")(x))


def squeeze_excite():
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv")(inp)
    s = L.GlobalAveragePooling2D(keepdims=True)(x)
    s = L.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(16, 1, activation="sigmoid", name="se_expand")(s)
    x = L.Multiply(name="se_mul")([x, s])
    return keras.Model(inp, L.Dense(3, name="out")(L.GlobalAveragePooling2D()(x)))


def with_barrier():
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv")(inp)
    x = L.Conv1D(8, 1, name="conv1d")(L.Reshape((100, 16))(x))  # channels before the Reshape stay
    return keras.Model(inp, L.Dense(3, name="out")(L.GlobalAveragePooling1D()(x)))


def mlp():
    return keras.Sequential(
        [
            keras.Input((20,)),
            L.Dense(32, activation="relu", name="h1"),
            L.Dropout(0.1),
            L.Dense(16, activation="relu", name="h2"),
            L.Dense(3, name="out"),
        ]
    )


PATTERNS = {
    "residual": residual,
    "concat_separable": concat_separable,
    "squeeze_excite": squeeze_excite,
    "mlp": mlp,
    "with_barrier": with_barrier,
}


def _randomize(model):
    """Random weights everywhere, BatchNorm statistics included, so the surgery is really tested."""
    rng = np.random.default_rng(0)
    for layer in model.layers:
        ws = layer.get_weights()
        if isinstance(layer, L.BatchNormalization):
            ws = [
                rng.uniform(0.5, 1.5, w.shape) if i in (0, 3) else rng.normal(0, 0.3, w.shape) for i, w in enumerate(ws)
            ]
        else:
            ws = [rng.normal(0, 0.3, w.shape) for w in ws]
        layer.set_weights([w.astype(np.float32) for w in ws])
    return model


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_surgery_with_nothing_removed_is_exact(name):
    keras.utils.set_random_seed(0)
    model = _randomize(PATTERNS[name]())
    x = np.random.default_rng(1).random((8,) + tuple(model.input_shape[1:]), dtype=np.float32)
    rebuilt = channel_prune(model, ChannelPruneConfig(ratio=0.0))
    assert rebuilt is not model and rebuilt.count_params() == model.count_params()
    assert np.abs(rebuilt.predict(x, verbose=0) - model.predict(x, verbose=0)).max() <= 1e-5


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pruned_model_is_valid_and_smaller(name):
    keras.utils.set_random_seed(0)
    model = _randomize(PATTERNS[name]())
    before = [w.copy() for w in model.get_weights()]
    rep = channel_prune_report(model, ChannelPruneConfig(ratio=0.5))
    x = np.random.default_rng(1).random((4,) + tuple(model.input_shape[1:]), dtype=np.float32)
    out = rep.model.predict(x, verbose=0)
    assert out.shape == model.predict(x, verbose=0).shape  # outputs are never pruned
    assert rep.params[1] < rep.params[0] and rep.params[1] == rep.model.count_params()
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # caller's model untouched
    assert rep.widths["out"] == (rep.widths["out"][0],) * 2


def test_dependency_groups():
    keras.utils.set_random_seed(0)
    rep = channel_prune_report(_randomize(residual()), ChannelPruneConfig(ratio=0.5))
    m = rep.model
    # the residual stream (stem conv and both projections) keeps one channel set: the adds still add
    assert rep.widths["b0_project"] == (16, 8) and rep.widths["b1_project"] == (16, 8)
    assert m.get_layer("b0_add").output.shape[-1] == 8
    # depthwise follows its input
    assert rep.widths["b0_dw"] == (32, 16) == rep.widths["b0_expand"]
    keras.utils.set_random_seed(0)
    rep = channel_prune_report(_randomize(concat_separable()), ChannelPruneConfig(ratio=0.5))
    assert rep.widths["a"] == (8, 4) and rep.widths["b"] == (12, 6) and rep.widths["dw"] == (20, 10)
    assert rep.widths["c"] == (16, 8)
    assert rep.model.get_layer("fc").kernel.shape == (6 * 6 * 8, 12)  # flatten: 36 positions × 8 channels
    keras.utils.set_random_seed(0)
    rep = channel_prune_report(_randomize(squeeze_excite()), ChannelPruneConfig(ratio=0.5))
    # the SE branch's gates and the conv they scale are one group
    assert rep.widths["conv"] == (16, 8) and rep.widths["se_expand"] == (16, 8) and rep.widths["se_reduce"] == (4, 2)
    keras.utils.set_random_seed(0)
    rep = channel_prune_report(_randomize(with_barrier()), ChannelPruneConfig(ratio=0.5))
    assert rep.widths["conv"] == (16, 16) and rep.widths["conv1d"] == (8, 4)
    assert rep.barriers == ["reshape (Reshape)"] or any("Reshape" in b for b in rep.barriers)


def test_importance_selects_the_weakest_channels():
    keras.utils.set_random_seed(0)
    model = _randomize(mlp())
    k, b = model.get_layer("h1").get_weights()
    k[:, :8] *= 1e-3  # eight nearly dead units
    model.get_layer("h1").set_weights([k, b])
    pruned = channel_prune(model, ChannelPruneConfig(ratio=0.25))
    kept = pruned.get_layer("h1").get_weights()[0]
    assert kept.shape == (20, 24) and np.allclose(kept, k[:, 8:])
    assert pruned.get_layer("h2").get_weights()[0].shape == (24, 12)
    # a layer named in skip is left alone: its inputs and outputs keep their width
    pruned = channel_prune(model, ChannelPruneConfig(ratio=0.25, skip=("h2",)))
    assert pruned.get_layer("h1").units == 32 and pruned.get_layer("h2").get_weights()[0].shape == (32, 16)
    # a function of the user's: prune the units with the largest index
    pruned = channel_prune(model, ChannelPruneConfig(ratio=0.5, importance=lambda l: -np.arange(l.units)))
    assert np.allclose(pruned.get_layer("h1").get_weights()[0], k[:, :16])


def test_budgets_and_blocks():
    keras.utils.set_random_seed(0)
    model = _randomize(residual())
    from edgekit.models import profile

    full = profile(model)
    rep = channel_prune_report(model, ChannelPruneConfig(target_macs=full.macs // 2))
    assert rep.macs[1] <= full.macs // 2 and 0 < rep.ratio < 0.95
    rep = channel_prune_report(model, ChannelPruneConfig(target_params=full.params // 3, round_to=2))
    assert rep.params[1] <= full.params // 3
    rep = channel_prune_report(model, ChannelPruneConfig(ratio=0.0, blocks=1))
    assert len(rep.dropped_blocks) == 1 and rep.dropped_blocks[0] in ("b0_add", "b1_add")
    names = {l.name for l in rep.model.layers}
    gone = rep.dropped_blocks[0].split("_")[0]
    assert not any(n.startswith(gone + "_") for n in names)
    with pytest.raises(InputError, match="residual block"):
        channel_prune(model, ChannelPruneConfig(blocks=3))
    with pytest.raises(InputError, match="out of reach"):
        channel_prune(model, ChannelPruneConfig(target_params=10))


def test_stages_prune_each_run_of_layers_by_its_own_ratio():
    keras.utils.set_random_seed(0)
    model = _randomize(mlp())  # h1 (32 units), h2 (16), then the output (never pruned)
    rep = channel_prune_report(model, ChannelPruneConfig(stages=(0.0, 0.5)))
    assert rep.widths["h1"] == (32, 32) and rep.widths["h2"] == (16, 8)
    assert rep.ratio == round(8 / 48, 4)  # measured: 8 of the 48 prunable units removed
    rep = channel_prune_report(model, ChannelPruneConfig(stages=(0.75, 0.25)))
    assert rep.widths["h1"] == (32, 8) and rep.widths["h2"] == (16, 12)
    assert rep.model.predict(np.zeros((2, 20), np.float32), verbose=0).shape == (2, 3)
    # one stage is the uniform ratio
    one = channel_prune_report(model, ChannelPruneConfig(stages=(0.5,)))
    assert one.widths == channel_prune_report(model, ChannelPruneConfig(ratio=0.5)).widths
    with pytest.raises(InputError, match=r"stages must be ratios in \[0, 1\)"):
        ChannelPruneConfig(stages=(0.5, 1.0))
    with pytest.raises(InputError, match="stages or one budget"):
        ChannelPruneConfig(stages=(0.5,), target_macs=10)


def test_latency_budget_is_measured_with_the_harness():
    from edgekit.app.measure import int8_latency

    # Timings are noisy here, so only the two ends are asserted: a budget the unpruned int8 model
    # meets prunes nothing; one no candidate can meet is refused with the measured time.
    keras.utils.set_random_seed(0)
    model = _randomize(residual())
    x = np.random.default_rng(0).random((16,) + tuple(model.input_shape[1:]), dtype=np.float32)
    rep = channel_prune_report(model, ChannelPruneConfig(target_latency=1e6), measure=int8_latency(x))
    assert rep.ratio == 0.0 and rep.params[0] == rep.params[1]
    with pytest.raises(
        InputError,
        match=r"target_latency=1e-06 ms is out of reach: .* leaves ([\d.]+ ms|a model that "
        r"does not prepare under XNNPACK)",
    ):
        channel_prune_report(model, ChannelPruneConfig(target_latency=1e-6), measure=int8_latency(x))
    with pytest.raises(InputError, match="needs `measure`"):
        channel_prune_report(model, ChannelPruneConfig(target_latency=1.0))


def test_bad_configs_are_clear_errors():
    with pytest.raises(InputError, match=r"ratio must be in \[0, 1\). Received ratio=1.5"):
        ChannelPruneConfig(ratio=1.5)
    with pytest.raises(InputError, match="importance must be one of"):
        ChannelPruneConfig(importance="random")
    with pytest.raises(InputError, match="one budget"):
        ChannelPruneConfig(target_params=10, target_macs=10)
    with pytest.raises(InputError, match="one budget"):
        ChannelPruneConfig(target_latency=1.0, target_macs=10)


def test_batchnorm_reestimation_matches_the_data(digits_ds):
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 1))
    x = L.BatchNormalization(name="bn")(L.Conv2D(4, 3, name="conv")(inp))
    model = keras.Model(inp, x)
    reestimate_batchnorm(model, digits_ds.x_train[:256], batch_size=64)
    conv_out = keras.Model(inp, model.get_layer("conv").output).predict(digits_ds.x_train[:256], verbose=0)
    mean, var = model.get_layer("bn").moving_mean.numpy(), model.get_layer("bn").moving_variance.numpy()
    assert np.allclose(mean, conv_out.reshape(-1, 4).mean(0), atol=1e-4)
    assert np.allclose(var, conv_out.reshape(-1, 4).var(0), rtol=0.05, atol=1e-5)
    assert model.get_layer("bn").momentum == 0.99  # restored


def test_cli_channel_prunes_with_recovery_and_reports_widths(tiny_keras_path, tmp_path):
    import json

    from conftest import assert_clean_error, run_cli

    out, report = tmp_path / "pruned.keras", tmp_path / "report.json"
    proc = run_cli(
        "optimize",
        tiny_keras_path,
        "--data",
        "digits",
        "--channel-prune",
        "0.5",
        "--epochs",
        "1",
        "-o",
        out,
        "--json",
        report,
    )
    assert proc.returncode == 0, proc.stderr
    assert "width before" in proc.stdout
    step = json.loads(report.read_text())["steps"][0]
    ch = step["channels"]
    assert step["technique"] == "channel_prune" and ch["params"][1] < ch["params"][0]
    widths = list(ch["widths"].values())  # tiny model: conv 8, depthwise 8, conv 16, dense 10
    assert widths == [[8, 4], [8, 4], [16, 8], [10, 10]] and step["accuracy"] is not None
    model = keras.models.load_model(str(out))
    assert model.count_params() == ch["params"][1]
    assert_clean_error(
        run_cli(
            "optimize",
            tiny_keras_path,
            "--data",
            "digits",
            "--channel-stages",
            "0.2,0.5",
            "--target-macs",
            "1000",
            "-o",
            tmp_path / "x.keras",
        ),
        contains="a ratio, stages or one budget",
    )
    bad = run_cli("optimize", tiny_keras_path, "--data", "digits", "--channel-stages", "0.5,1.5", "-o", out)
    assert_clean_error(bad, contains="must be in [0, 1), received 1.5")
    assert not (tmp_path / "x.keras").exists()


def test_a_shared_layer_is_a_barrier_not_a_refusal():
    """A tied embedding (one layer, two calls: the lookup and the output projection) is left as it is
    at both calls and listed among the barriers; the rest prunes, and nothing removed is exact."""
    from edgekit.models import tied_lm

    keras.utils.set_random_seed(0)
    model = tied_lm(50, 8, context=8, layers=1, kernel=3)
    hidden = keras.layers.Dense(16, activation="relu")(model.outputs[0])
    model = keras.Model(model.inputs, keras.layers.Dense(4)(hidden))
    x = np.random.default_rng(0).integers(0, 50, (4, 8)).astype(np.int32)
    exact = channel_prune_report(model, ChannelPruneConfig(ratio=0.0))
    assert np.abs(exact.model.predict(x, verbose=0) - model.predict(x, verbose=0)).max() <= 1e-5
    half = channel_prune_report(model, ChannelPruneConfig(ratio=0.5))
    assert "embedding (TiedEmbedding, shared)" in half.barriers and half.macs[1] < half.macs[0]
    assert half.model.predict(x, verbose=0).shape == (4, 8, 4)
