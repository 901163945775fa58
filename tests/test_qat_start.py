"""QAT starts where post-training int8 is, on a BatchNorm-heavy model nobody tuned for edgekit.

The structure of a user's model that collapsed under QAT (issue: 0.809 -> 0.398 after 20 steps):
Conv(no bias) -> BN -> ReLU6; a depthwise -> BN -> ReLU6 -> 1x1 -> BN residual branch; squeeze-excite;
a Conv -> BN -> ReLU6 branch concatenated with a Conv(relu) branch; strided conv -> GAP -> Dense ->
Dense, with logits or softmax outputs. Two causes, both measured: tfmot's graph transformer swapped the
concatenation's inputs once the BN branch's layers had moved in its config (tfmot#1061), and it
quantized depthwise kernels on one grid for all channels where the int8 converter uses one per channel.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from edgekit import keras

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "benchmarks"))
import qat_targets  # noqa: E402

L = keras.layers


@pytest.fixture(scope="module")
def trained():
    """The logits model trained on 300 samples (BatchNorm momentum 0.9, so 25 epochs of 10 steps
    settle its statistics), and the same weights under a softmax head (benchmarks/qat_targets.py's)."""
    models, data = qat_targets.trained_bars()
    return dict(models, data=data)


@pytest.mark.parametrize("head", ["logits", "softmax"])
def test_qat_starts_at_post_training_int8_and_stays_there(trained, head):
    """benchmarks/qat_targets.py's row for QAT alone: the wrapped model before any step computes what
    the int8 file computes (accuracy within 2 samples, the first step's loss within 10% of the file's;
    it may start below it: the file rounds a softmax output to steps of 1/256, which raises its
    cross-entropy), and 20 steps at 1e-4 — the fine-tune that wrecked the model — keep int8 within
    a point of PTQ, fully integer."""
    x_test = trained["data"][2]
    row = qat_targets.measure(trained[head], [], trained["data"], step_epochs=0)
    assert row["before_qat"] >= 0.7, f"the float model did not train ({row['before_qat']:.3f})"
    assert abs(row["qat_start"] - row["ptq_int8"]) <= 2 / len(x_test), row
    assert all(qat_targets.checks(row).values()), (qat_targets.checks(row), row)
    assert row["first_step_loss"] <= 1.1 * row["ptq_first_batch_loss"], row  # the bars' loss is far above 0.01


def test_a_concatenation_keeps_its_input_order_under_qat():
    """tfmot alone swaps them when one branch is Conv -> BN -> ReLU (tfmot#1061); edgekit's QAT does not."""
    from edgekit.optimize import QATConfig, qat

    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 3))
    a = L.ReLU()(L.BatchNormalization(momentum=0.9)(L.Conv2D(4, 3, padding="same", use_bias=False)(inp)))
    b = L.Conv2D(2, 1, activation="relu")(inp)
    model = keras.Model(inp, L.Concatenate()([a, b]))
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(np.float32)
    out, wrapped = model.predict(x, verbose=0), qat(model, QATConfig(), calibration=x).predict(x, verbose=0)
    assert out.shape == wrapped.shape
    # channel for channel, within quantization error (swapped halves would differ by the signal itself)
    err = np.abs(out - wrapped).mean(axis=(0, 1, 2))
    assert np.all(err <= 0.1 * np.abs(out).mean(axis=(0, 1, 2)) + 1e-3), err


def test_depthwise_kernels_get_one_range_per_channel():
    from edgekit.optimize import QATConfig, qat

    keras.utils.set_random_seed(2)
    inp = keras.Input((8, 8, 4))
    model = keras.Model(inp, L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(inp))
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 4)).astype(np.float32)
    wrapped = qat(model, QATConfig(), calibration=x)
    ranges = [w for w in wrapped.weights if w.name.split("/")[-1].startswith("depthwise_kernel_m")]
    assert ranges and all(tuple(w.shape) == (8,) for w in ranges), [(w.name, w.shape) for w in wrapped.weights]
    kernel = model.layers[1].depthwise_kernel.numpy()
    expected = np.abs(kernel).reshape(-1, 8).max(axis=0)
    top = next(w for w in ranges if w.name.split("/")[-1].startswith("depthwise_kernel_max"))
    np.testing.assert_allclose(top.numpy(), expected, rtol=1e-6)
