"""Sequence models: recurrent layers and 1-D convnets through export, in tf_keras and Keras 3."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import run_cli

from edgekit import keras
from edgekit.converters import export, inspect_tflite
from edgekit.core.errors import InputError
from edgekit.core.synthetic import motion

L = keras.layers
STEPS = 16


@pytest.fixture(scope="module")
def windows():
    return motion(train=192, test=64, steps=STEPS, seed=0)


def _model(kind: str, flavour=keras, steps=STEPS, **rnn):
    layers = flavour.layers
    inp = flavour.Input((steps, 3))
    if kind == "lstm":
        h = layers.LSTM(8, name="rnn", **rnn)(inp)
    elif kind == "gru":
        h = layers.GRU(8, name="rnn", **rnn)(inp)
    elif kind == "simple_rnn":
        h = layers.SimpleRNN(8, name="rnn", **rnn)(inp)
    elif kind == "bidirectional":
        h = layers.Bidirectional(layers.LSTM(4))(inp)
    elif kind == "stack":
        h = layers.GRU(8)(layers.LSTM(8, return_sequences=True)(inp))
    else:  # conv1d: every 1-D layer QAT has a config for
        x = layers.MaxPooling1D()(layers.Conv1D(8, 3, activation="relu")(inp))
        x = layers.AveragePooling1D()(layers.SeparableConv1D(8, 3, activation="relu")(x))
        h = layers.Concatenate()([layers.GlobalMaxPooling1D()(x), layers.GlobalAveragePooling1D()(x)])
    model = flavour.Model(inp, layers.Dense(4, activation="softmax")(h), name=kind)
    model.compile(flavour.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    return model


def _trained(kind, windows, flavour=keras):
    flavour.utils.set_random_seed(0)
    model = _model(kind, flavour)
    model.fit(windows.x_train, windows.y_train, epochs=3, batch_size=32, verbose=0)
    return model


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn", "bidirectional", "stack", "conv1d"])
def test_sequence_models_export_fully_integer_and_verified(kind, windows):
    model = _trained(kind, windows)
    common = dict(calibration=windows.x_train, validation_data=(windows.x_test, windows.y_test), layer_report=False)
    exact = export(model, None, "float32", **common)
    # every window starts from the zero state: a fused LSTM's state tensors are reset between samples
    assert exact.agreement == 1.0 and exact.cosine > 0.99999, (exact.agreement, exact.cosine)
    rep = export(model, None, "int8", **common)
    ops = {op.op for op in inspect_tflite(rep.tflite).ops}
    assert rep.fully_integer and rep.agreement >= 0.9, (rep.agreement, rep.cosine)
    # fused where the converter calibrates it right: not two LSTMs on one input (a Bidirectional: unrolled)
    assert ("UNIDIRECTIONAL_SEQUENCE_LSTM" in ops) == (kind in ("lstm", "stack")), ops
    assert not any(op.startswith(("FLEX", "CUSTOM")) for op in ops)


def test_a_keras3_lstm_exports_as_the_fused_int8_op(windows):
    import keras as k3

    model = _trained("lstm", windows, flavour=k3)
    rep = export(model, None, "int8", calibration=windows.x_train, validation_data=(windows.x_test, windows.y_test))
    assert rep.fully_integer and rep.agreement >= 0.9
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in {op.op for op in inspect_tflite(rep.tflite).ops}


def test_int16x8_writes_the_lstm_out_step_by_step(windows):
    model = _trained("lstm", windows)
    rep = export(model, None, "int16x8", calibration=windows.x_train, validation_data=(windows.x_test, None))
    ops = {op.op for op in inspect_tflite(rep.tflite).ops}
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ops and "FULLY_CONNECTED" in ops
    assert rep.fully_integer and rep.agreement >= 0.95


def test_recurrent_layers_tflite_cannot_hold_are_named(windows):
    x = windows.x_train[:8]
    stateful = keras.Sequential([keras.Input((STEPS, 3), batch_size=1), L.LSTM(4, stateful=True, name="s"), L.Dense(2)])
    with pytest.raises(InputError, match=r"layer 's' \(LSTM\) is stateful.*stateful=False"):
        export(stateful, None, "int8", calibration=x)
    ragged = _model("gru", steps=None)
    with pytest.raises(InputError, match=r"\(GRU\) reads sequences of any length.*keras.Input\(\(STEPS, FEATURES\)\)"):
        export(ragged, None, "int8", calibration=x)


@pytest.mark.parametrize("kind", ["lstm", "gru", "bidirectional"])
def test_recurrent_int8_runs_under_tflm_like_litert(kind, windows):
    """The fused LSTM, and a GRU or Bidirectional LSTM written out at a batch of 1 (at a free batch
    their zero state was a FILL of the input's shape, which TFLM cannot prepare)."""
    model = _trained(kind, windows)
    rep = export(
        model,
        None,
        "int8",
        calibration=windows.x_train,
        validation_data=(windows.x_test, windows.y_test),
        target="mcu",
        layer_report=False,
    )
    fused = rep.mcu.ops.get("UNIDIRECTIONAL_SEQUENCE_LSTM")
    assert rep.mcu.fully_integer and rep.mcu.arena_bytes > 0 and fused == (1 if kind == "lstm" else None)
    assert "FILL" not in rep.mcu.ops and rep.mcu.agreement >= 0.99, rep.mcu.brief()


@pytest.mark.parametrize("kind", ["lstm", "bidirectional", "conv1d"])
def test_qat_of_sequence_models_exports_fully_integer(kind, windows):
    from edgekit.optimize import FineTune, QATConfig, Recipe, optimize

    model = _trained(kind, windows)
    result = optimize(
        model,
        Recipe.of([QATConfig()], FineTune(1, 32, 1e-4)),
        windows.x_train,
        windows.y_train,
        validation_data=(windows.x_test, windows.y_test),
    )
    rep = export(
        result.model,
        None,
        "int8",
        calibration=windows.x_train,
        validation_data=(windows.x_test, windows.y_test),
        layer_report=False,
    )
    assert rep.fully_integer and rep.agreement >= 0.9, (rep.agreement, rep.cosine)
    left = [str(w) for w in result.warnings if "in float" in str(w)]
    if kind == "conv1d":
        assert not left and not any(type(l).__name__ == "MaxPooling1D" for l in result.model.layers)
    else:  # the recurrent layer is named as left in float, calibrated by the export
        assert len(left) == 1 and f"{result.model.layers[1].name} (" in left[0] and "calibrates" in left[0], left


def test_pruning_and_clustering_reach_recurrent_kernels(windows):
    from edgekit.optimize import ChannelPruneConfig, ClusterConfig, FineTune, PruneConfig, Recipe, optimize

    model = _trained("gru", windows)
    ft = FineTune(1, 32, 1e-4)
    pruned = optimize(model, Recipe.of([PruneConfig(sparsity=0.5)], ft), windows.x_train, windows.y_train)
    rows = {l.layer: l for l in pruned.steps[0].weights.layers}
    assert abs(rows["rnn/recurrent_kernel"].zeros - 0.5) <= 0.02 and abs(rows["rnn"].zeros - 0.5) <= 0.02
    clustered = optimize(model, Recipe.of([ClusterConfig(clusters=8)], ft), windows.x_train, windows.y_train)
    assert {l.layer: l.unique for l in clustered.steps[0].weights.layers}["rnn/recurrent_kernel"] <= 8
    channels = optimize(model, Recipe.of([ChannelPruneConfig(ratio=0.5)], ft), windows.x_train, windows.y_train)
    assert channels.steps[0].details.barriers == ["rnn (GRU)"]  # its units are left alone, and said so


def _tokens(n: int, seed: int):
    """Sequences of 16 token ids (0-99); the class: how many ids below 20 (0-1, 2-3, 4-5, 6+)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 100, (n, 16)).astype(np.int32)
    return x, np.minimum((x < 20).sum(1) // 2, 3)


def _encoder(flavour, blocks: int = 1):
    """Token and position embeddings, transformer blocks (attention, LayerNorm, GELU feed-forward)."""
    layers = flavour.layers
    tokens = flavour.Input((16,), dtype="int32")
    x = layers.Embedding(100, 16)(tokens)
    if flavour is keras:
        x = x + layers.Embedding(16, 16)(np.arange(16))
    else:
        x = x + layers.Embedding(16, 16)(flavour.ops.arange(16))
    for _ in range(blocks):
        x = layers.LayerNormalization()(x + layers.MultiHeadAttention(2, 8)(x, x))
        x = layers.LayerNormalization()(x + layers.Dense(16)(layers.Dense(32, activation="gelu")(x)))
    model = flavour.Model(tokens, layers.Dense(4, activation="softmax")(layers.GlobalAveragePooling1D()(x)))
    model.compile(flavour.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("flavour", ["tf_keras", "keras3"])
def test_a_transformer_encoder_exports_fully_integer(flavour):
    import keras as k3

    f = keras if flavour == "tf_keras" else k3
    x, y = _tokens(256, 0)
    x_test, y_test = _tokens(128, 1)
    f.utils.set_random_seed(0)
    model = _encoder(f)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    rep = export(model, None, "int8", calibration=x, validation_data=(x_test, y_test), layer_report=False)
    ops = {op.op for op in inspect_tflite(rep.tflite).ops}
    assert rep.fully_integer and rep.agreement >= 0.95, (rep.agreement, rep.cosine)
    assert {"BATCH_MATMUL", "SOFTMAX", "GELU"} <= ops and not any(op.startswith(("FLEX", "CUSTOM")) for op in ops)


def _encoder_with_add_layers():
    """A token encoder whose int16x8 file LiteRT aborts on while preparing it (allocate_tensors)."""
    L = keras.layers
    tokens = keras.Input((16,), dtype="int32")
    x = L.Add()([L.Embedding(100, 16)(tokens), L.Embedding(16, 16)(np.arange(16))])
    x = L.LayerNormalization()(L.Add()([x, L.MultiHeadAttention(2, 8)(x, x)]))
    return keras.Model(tokens, L.Dense(4, activation="softmax")(L.GlobalAveragePooling1D()(x)))


@pytest.mark.parametrize("build", [lambda: _encoder(keras), _encoder_with_add_layers], ids=["invoke", "prepare"])
def test_an_interpreter_crash_on_an_int16x8_transformer_is_an_error_not_the_end(tmp_path, build):
    """LiteRT aborts the process preparing or running these models in int16x8 (SIGABRT in
    allocate_tensors() or invoke()): the verification does both in a child, and the export fails with
    what happened, writing nothing."""
    from edgekit.core.errors import VerificationError

    x, _ = _tokens(32, 0)
    keras.utils.set_random_seed(0)
    out = tmp_path / "m.tflite"
    crashed = r"LiteRT's interpreter crashed \(SIGABRT\) preparing or running the int16x8 model"
    with pytest.raises(VerificationError, match=crashed):
        export(build(), str(out), "int16x8", calibration=x, validation_data=(x, None), io="float32")
    with pytest.raises(VerificationError, match=crashed):  # without verification data: prepared and run on zeros
        export(build(), str(out), "int16x8", calibration=x, io="float32")
    assert not out.exists()


def test_qat_and_pruning_of_a_transformer_encoder():
    """QAT quantizes the embeddings, dense layers, LayerNorms and the position table's addition
    (x + a constant, rebuilt as a layer), leaves attention in float for the export to calibrate (and
    says so), and the file is fully integer; pruning reaches attention's kernels."""
    from edgekit.optimize import FineTune, PruneConfig, QATConfig, Recipe, optimize

    x, y = _tokens(256, 0)
    keras.utils.set_random_seed(0)
    model = _encoder(keras)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    ft = FineTune(1, 32, 1e-4)
    result = optimize(model, Recipe.of([QATConfig()], ft), x, y)
    kinds = {
        type(getattr(l, "layer", l)).__name__ for l in result.model.layers if type(l).__name__ == "QuantizeWrapperV2"
    }
    assert {"LayerNormalization", "ConstantAdd", "Dense"} <= kinds, kinds
    # the layer's name carries a suffix when another test in the same worker built one first
    in_float = re.compile(r"multi_head_attention(_\d+)? \(MultiHeadAttention\) in float")
    assert any(in_float.search(str(w)) for w in result.warnings), result.warnings
    rep = export(result.model, None, "int8", calibration=x, validation_data=(x, None), layer_report=False)
    assert rep.fully_integer and rep.agreement >= 0.95, (rep.agreement, rep.cosine)
    pruned = optimize(model, Recipe.of([PruneConfig(sparsity=0.5)], ft), x, y)
    rows = {l.kind: l.zeros for l in pruned.steps[0].weights.layers}
    assert abs(rows["MultiHeadAttention"] - 0.5) <= 0.02, rows


def test_structured_pruning_removes_attention_heads_and_feed_forward_width():
    """Channel pruning is a transformer's structured pruning: whole heads go from every attention
    layer (its query, key, value and output weights), units from the feed-forward block; removing a
    head equals zeroing its share of the output projection, and the smaller model exports int8."""
    from edgekit.optimize import ChannelPruneConfig, channel_prune_report

    x, _ = _tokens(64, 0)
    keras.utils.set_random_seed(0)
    model = _encoder(keras)
    mha = next(l for l in model.layers if isinstance(l, keras.layers.MultiHeadAttention))
    dense = [l.name for l in model.layers if isinstance(l, keras.layers.Dense)]

    def weakest_second_head(layer):
        return [2.0, 1.0] if layer is mha else np.ones(layer.output.shape[-1])

    rep = channel_prune_report(model, ChannelPruneConfig(ratio=0.5, importance=weakest_second_head, skip=dense))
    assert rep.widths[mha.name] == (2, 1) and rep.params[1] < rep.params[0] and rep.macs[1] < rep.macs[0]
    weights = mha.get_weights()
    weights[6][1] = 0.0  # the output projection's rows of head 1
    mha.set_weights(weights)
    assert np.abs(rep.model.predict(x, verbose=0) - model.predict(x, verbose=0)).max() <= 1e-5
    both = channel_prune_report(model, ChannelPruneConfig(ratio=0.5))
    assert both.widths[mha.name] == (2, 1) and both.widths[dense[0]] == (32, 16), both.widths
    out = export(both.model, None, "int8", calibration=x, validation_data=(x, None), layer_report=False)
    assert out.fully_integer and out.agreement >= 0.9


def test_depth_drops_every_other_repeated_block_exactly():
    """The blocks are found in the graph: a residual stack whose blocks 1 and 3 add nothing gives
    the same outputs without them; a model without repeated blocks is a one-line error."""
    from edgekit.core.errors import InputError
    from edgekit.optimize import DepthConfig, depth_report, repeated_blocks
    from edgekit.optimize.depth import hidden_pairs

    L = keras.layers
    inp = keras.Input((8,))
    x = L.Dense(16, name="stem")(inp)
    for i in range(4):
        x = L.Add(name=f"add{i}")([x, L.Dense(16, name=f"out{i}")(L.Dense(32, activation="relu", name=f"in{i}")(x))])
    model = keras.Model(inp, L.Dense(3, activation="softmax", name="head")(x))
    for i in (1, 3):
        layer = model.get_layer(f"out{i}")
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    blocks = repeated_blocks(model)
    assert [b.layers for b in blocks] == [(f"in{i}", f"out{i}", f"add{i}") for i in range(4)]
    rep = depth_report(model, DepthConfig(keep=0.5))
    assert rep.kept == [0, 2] and {"in1", "out3"}.isdisjoint(l.name for l in rep.model.layers)
    assert rep.params == (model.count_params(), model.count_params() - 2 * (16 * 32 + 32 + 32 * 16 + 16))
    x_ = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    assert np.abs(rep.model.predict(x_, verbose=0) - model.predict(x_, verbose=0)).max() <= 1e-6
    assert hidden_pairs(rep.blocks, rep.kept) == (("add0", "add1"), ("add2", "add3"))
    plain = keras.Sequential([keras.Input((8,)), L.Dense(4), L.Dense(3)])
    with pytest.raises(InputError, match="no repeated blocks to drop"):
        depth_report(plain)
    from edgekit.optimize.depth import kept_blocks

    assert [kept_blocks(n, 0.5) for n in (2, 3, 4, 5, 7)] == [[0], [0, 2], [0, 2], [0, 2, 4], [0, 2, 4, 6]]


def test_depth_blocks_of_a_bert_style_encoder_end_with_their_own_layer_norm():
    """An embedding LayerNorm looks like each layer's last one: the blocks still start at the
    attention and end with the layer's own norm, so a kept layer keeps all of its weights."""
    from edgekit.optimize import repeated_blocks

    tokens = keras.Input((8,), dtype="int32")
    x = L.LayerNormalization(name="emb_norm")(L.Embedding(50, 8)(tokens))
    for i in range(3):
        x = L.LayerNormalization(name=f"ln1_{i}")(L.Add()([x, L.MultiHeadAttention(2, 4, name=f"mha{i}")(x, x)]))
        x = L.LayerNormalization(name=f"ln2_{i}")(L.Add()([x, L.Dense(8, name=f"ffn{i}")(x)]))
    model = keras.Model(tokens, L.Dense(2)(L.GlobalAveragePooling1D()(x)))
    blocks = repeated_blocks(model)
    assert [(b.layers[0], b.last) for b in blocks] == [(f"mha{i}", f"ln2_{i}") for i in range(3)]


def test_depth_halves_a_keras3_transformer_and_distils_it(tmp_path):
    """`edgekit optimize --depth 0.5` on a two-layer Keras 3 encoder keeps its first layer, learns
    from the teacher (outputs and hidden states) and the student exports fully integer."""
    import keras as k3

    x, y = _tokens(256, 0)
    k3.utils.set_random_seed(0)
    model = _encoder(k3, blocks=2)
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    model.save(tmp_path / "teacher.keras")
    np.savez(tmp_path / "tokens.npz", x_train=x, y_train=y, x_test=x[:64], y_test=y[:64])
    data, out = ("--data", tmp_path / "tokens.npz"), ("-o", tmp_path / "student.tflite", "--json", tmp_path / "r.json")
    depth = ("--depth", "0.5", "--epochs", "3", "--lr", "2e-3")
    proc = run_cli("optimize", tmp_path / "teacher.keras", *data, *depth, *out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    step = json.loads((tmp_path / "r.json").read_text())["steps"][0]
    assert step["depth"]["blocks"] == 2 and step["depth"]["kept"] == [0], step
    assert step["depth"]["params"][1] < step["depth"]["params"][0]
    assert "depth 0.5: kept blocks 0 of 2" in proc.stdout


@pytest.fixture(scope="module")
def stack(windows):
    """A trained LSTM(return_sequences) → GRU → Dense classifier (tf_keras)."""
    keras.utils.set_random_seed(0)
    model = _model("stack")
    model.fit(windows.x_train, windows.y_train, epochs=20, batch_size=32, verbose=0)
    return model


def test_streaming_export_runs_frame_by_frame_like_the_whole_window(stack, windows):
    """The streaming twin takes a frame and the states and returns the new ones; read frame by frame
    from zero states its last output is the whole-window model's (float32 to 1e-5; int16x8 to the
    same top-1), and it needs a fraction of the whole window's TFLM arena."""
    common = dict(calibration=windows.x_train, validation_data=(windows.x_test, windows.y_test), layer_report=False)
    for hop in (1, 4):
        exact = export(stack, None, "float32", streaming=True, hop=hop, **common)
        s = exact.streaming
        assert s["hop"] == hop and s["steps"] == STEPS and s["windows"] == 64
        assert s["max_abs_diff"] <= 1e-5 and s["agreement"] == 1.0
    assert [t["key"] for t in exact.inputs if t["key"] == "frame"] == ["frame"] and len(exact.inputs) == 4  # h, c; h
    wide = export(stack, None, "int16x8", streaming=True, **common)
    assert wide.fully_integer and wide.streaming["agreement"] >= 0.98  # measured 1.0 (128 windows: 1.0)
    int8 = export(stack, None, "int8", streaming=True, target="mcu", **common)
    whole = export(stack, None, "int8", target="mcu", **common)
    assert int8.fully_integer and int8.streaming["agreement"] >= 0.9  # measured 0.977 on 128 windows
    assert int8.mcu.arena_bytes <= 0.5 * whole.mcu.arena_bytes  # measured 10,640 vs 70,080 B
    assert "streaming: 1 frame(s) per invoke, 16 invokes per window" in int8.summary()


def test_streaming_names_what_it_cannot_run_frame_by_frame(windows):
    conv = keras.Sequential([keras.Input((STEPS, 3)), L.Conv1D(4, 3), L.GlobalAveragePooling1D(), L.Dense(2)])
    with pytest.raises(InputError, match=r"layer 'conv1d.*' \(Conv1D\) looks across time steps"):
        export(conv, None, "float32", validation_data=windows.x_test, streaming=True)
    with pytest.raises(InputError, match="branches or merges"):
        export(_model("conv1d"), None, "float32", validation_data=windows.x_test, streaming=True)
    with pytest.raises(InputError, match="reads the window backwards"):
        export(_model("bidirectional"), None, "float32", validation_data=windows.x_test, streaming=True)
    per_step = keras.Sequential([keras.Input((STEPS, 3)), L.GRU(4, return_sequences=True), L.Flatten(), L.Dense(2)])
    with pytest.raises(InputError, match=r"returns every step \(return_sequences=True\)"):
        export(per_step, None, "float32", validation_data=windows.x_test, streaming=True)
    with pytest.raises(InputError, match="must divide the window's 16 steps"):
        export(_model("gru"), None, "float32", validation_data=windows.x_test, streaming=True, hop=5)
    with pytest.raises(InputError, match="applies to"):
        export(_model("gru"), None, "float32", validation_data=windows.x_test, hop=2)


def test_cli_streaming_export_and_its_per_frame_benchmark(stack, windows, tmp_path):
    from conftest import assert_clean_error, run_cli

    path, data = tmp_path / "stack.keras", tmp_path / "w.npz"
    stack.save(path)
    np.savez(data, x_train=windows.x_train, y_train=windows.y_train, x_test=windows.x_test, y_test=windows.y_test)
    out = tmp_path / "stream.tflite"
    proc = run_cli("export", path, "--quant", "int16x8", "--data", data, "--streaming", "--hop", "2", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "2 frame(s) per invoke, 8 invokes per window" in proc.stdout
    proc = run_cli("bench", out, "--runs", "20", "--json", tmp_path / "b.json")  # one invoke: one hop of frames
    assert proc.returncode == 0, proc.stderr
    assert_clean_error(
        run_cli("export", path, "--quant", "int8", "--data", data, "--hop", "2", "-o", tmp_path / "x.tflite"),
        contains="--hop applies to --streaming",
    )
