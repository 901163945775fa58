"""A weight that several ops read (a tied embedding) is stored once in every mode."""

import numpy as np
import pytest

from edgekit.converters import export, inspect_tflite
from edgekit.converters.share import share_weights
from edgekit.device.board.harness import load_interpreter, predict

VOCAB, DIM, CONTEXT = 400, 32, 12


@pytest.fixture(scope="module")
def lm_data():
    from edgekit import keras

    rng = np.random.default_rng(0)
    # A learnable sequence: each token is the previous one plus 1 or 2 (mod vocab).
    x = np.cumsum(rng.integers(1, 3, (256, CONTEXT + 1)), axis=1) % VOCAB
    keras.utils.set_random_seed(0)
    return x[:, :-1].astype(np.int32), x[:, 1:].astype(np.int32)


@pytest.fixture(scope="module")
def lms(lm_data):
    from edgekit import keras
    from edgekit.models.language import tied_lm

    x, y = lm_data
    models = {}
    for tied in (True, False):
        m = tied_lm(VOCAB, DIM, context=CONTEXT, layers=1, tied=tied)
        m.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x, y, epochs=4, batch_size=32, verbose=0)
        models[tied] = m
    return models


def _matrix_copies(info) -> int:
    return sum(1 for t in info.tensors if t.constant and tuple(t.shape) == (VOCAB, DIM))


@pytest.mark.parametrize("mode", ["float32", "float16", "dynamic", "int8"])
def test_tied_matrix_is_stored_once(lms, lm_data, tmp_path, mode):
    x, y = lm_data
    kw = dict(calibration=x, calib_samples=64, validation_data=(x[:64], y[:64]), layer_report=False)
    tied = export(lms[True], str(tmp_path / "tied.tflite"), mode, **kw)
    untied = export(lms[False], str(tmp_path / "untied.tflite"), mode, **kw)
    assert _matrix_copies(inspect_tflite(tied.path)) == 1
    assert _matrix_copies(inspect_tflite(untied.path)) == 2
    if mode in ("dynamic", "int8"):  # the converter quantizes the matrix once per consumer
        assert len(tied.shared_weights) == 1 and tied.shared_weights[0]["shape"] == [VOCAB, DIM]
        assert any("stored once" in w for w in tied.warnings)
    # the saving is most of one matrix: float32 4 B/weight, float16 2, int8 1
    per_weight = {"float32": 4, "float16": 2, "dynamic": 1, "int8": 1}[mode]
    assert untied.size_bytes - tied.size_bytes >= 0.9 * VOCAB * DIM * per_weight
    assert tied.accuracy >= tied.keras_accuracy - 0.02
    assert tied.agreement >= 0.97


def test_sharing_changes_only_the_projection_quantization(lms, lm_data):
    """The pass moves the projection from per-row to per-tensor scales; the interpreter's output
    moves by a few output steps at most and predicts the same tokens."""
    from edgekit.converters.convert import convert

    x, _ = lm_data
    raw = convert(lms[True], "int8", x, calib_samples=64, share=False)
    shared, log = share_weights(raw)
    assert [e["kind"] for e in log] == ["requantized per tensor"]
    assert len(shared) < len(raw) - VOCAB * DIM
    before = load_interpreter(model_content=raw, threads=1, xnnpack=True)
    after = load_interpreter(model_content=shared, threads=1, xnnpack=True)
    a, b = predict(before, x[:64]), predict(after, x[:64])
    step = after.get_output_details()[0]["quantization"][0]
    assert np.abs(a - b).max() <= 4 * step
    assert np.mean(a.argmax(-1) == b.argmax(-1)) >= 0.98
    # idempotent: nothing left to share, the bytes are returned as they are
    assert share_weights(shared) == (shared, [])


def test_token_inputs_must_be_whole_numbers(lms, lm_data):
    from edgekit.core.errors import InputError

    x, _ = lm_data
    with pytest.raises(InputError, match="fractional values.*int32"):
        export(lms[True], None, "int8", calibration=x + 0.5, layer_report=False)


def test_cli_exports_a_tied_lm_from_token_npz(lms, lm_data, tmp_path):
    """Token ids and next-token labels from a .npz: the report has per-position accuracy and the merge."""
    import json

    from conftest import run_cli

    x, y = lm_data
    model_path = str(tmp_path / "lm.keras")
    lms[True].save(model_path)
    data = str(tmp_path / "tokens.npz")
    np.savez(data, x_train=x[:192], y_train=y[:192], x_test=x[192:], y_test=y[192:])
    out, report = tmp_path / "lm.tflite", tmp_path / "lm.json"
    proc = run_cli(
        "export", model_path, "--quant", "int8", "--calib", data, "-o", out, "--json", report, "--no-layer-errors"
    )
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(report.read_text())
    assert rep["input"]["dtype"] == "INT32" and rep["fully_integer"]
    assert rep["shared_weights"][0]["bytes"] == VOCAB * DIM
    assert rep["verify_samples"] == 64 and rep["accuracy"] >= rep["keras_accuracy"] - 0.02
    assert _matrix_copies(inspect_tflite(str(out))) == 1
