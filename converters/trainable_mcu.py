"""A trainable head for microcontrollers: one signature that TFLM runs.

TFLM's interpreter runs a file's first subgraph only and plans memory for that subgraph and those it
calls through IF, WHILE or CALL_ONCE (tflite-micro's ``MarkAllocationLifetimes``), while it prepares
them all: the scratch buffers of a second signature's SUM and MEAN are left without an address and
TFLM crashes allocating the four-signature export. So ``export --trainable … --target mcu`` writes
the same head, with the same weights, optimizer and checks, as one signature whose IF picks the work:

    step(mode, features, labels, <state…>) -> output, loss, <state…>

- ``mode`` 0: inference (``output`` for the batch of ``batch_size``; ``loss`` 0);
- ``mode`` 1: one optimizer step on the batch (``output`` before the update, and ``loss``);
- ``mode`` 2: the ``state`` inputs become the weights and optimizer slots (a saved state restored);

and every call returns the state after it (the weights and slots by name, as ``get_weights`` does),
so the board persists it as it likes. The state inputs are read by mode 2 only. Inference runs on a
whole batch: a single sample is padded to ``batch_size`` rows.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from edgekit.core.errors import VerificationError

SIGNATURE = "step"
INFER, TRAIN, SET = 0, 1, 2


def step_module(head, o):
    """The head's ``tf.Module`` (:func:`edgekit.converters.trainable.module`) with the ``step`` signature."""
    from edgekit.converters.trainable import module, state_names
    from edgekit.core.compat import tf

    m = module(head, o)
    batch, names = int(o.batch_size), state_names(head, o.optimizer)
    label_spec = tf.TensorSpec([batch], tf.int32) if head.classification else tf.TensorSpec([batch, head.outputs])
    specs = [tf.TensorSpec([], tf.int32), tf.TensorSpec([batch, head.features], tf.float32), label_spec]
    specs += [tf.TensorSpec(v.shape, tf.float32, name=n) for v, n in zip(m.state(), names)]  # in by name

    @tf.function(input_signature=specs)
    def step(mode, features, labels, *state):
        def read():
            return [v.read_value() for v in m.state()]

        def infer():
            return [m.infer(features)["output"], tf.constant(0.0)] + read()

        def train():
            out = m.infer(features)["output"]
            loss = m.train(features, labels)["loss"]
            with tf.control_dependencies([loss]):
                return [tf.identity(out), loss] + read()

        def assign():
            with tf.control_dependencies([v.assign(s) for v, s in zip(m.state(), state)]):
                return [tf.zeros([batch, head.outputs]), tf.constant(0.0)] + read()

        r = tf.cond(tf.equal(mode, TRAIN), train, lambda: tf.cond(tf.equal(mode, SET), assign, infer))
        return dict(zip(["output", "loss"] + names, r))

    m.step_signature = step
    return m


def check_step(tflite: bytes, m_ref, head, feats: np.ndarray, labels: np.ndarray, o, keras_out) -> Tuple[float, float]:
    """(mode 0 against the Keras head, the state after ``check_steps`` mode-1 calls against TensorFlow's
    on the same batches); a mode-2 call restoring the first state must give it back exactly."""
    from edgekit.converters.trainable import differences, state_names
    from edgekit.device.board.harness import load_interpreter

    step = load_interpreter(model_content=tflite, xnnpack=False, allocate=False).get_signature_runner(SIGNATURE)
    b, n, names = int(o.batch_size), len(feats), state_names(head, o.optimizer)
    dtype = np.int32 if head.classification else np.float32
    first = {k: v.numpy() for k, v in m_ref.get_weights().items()}

    def call(mode, x, y, state):
        return step(mode=np.array(mode, np.int32), features=x, labels=y.astype(dtype), **state)

    outs = []
    for i in range(0, n, b):
        rows = np.arange(i, i + b) % n  # the last batch padded with the first samples
        outs.append(call(INFER, feats[rows], labels[rows], first)["output"][: min(b, n - i)])
    for s in range(int(o.check_steps)):
        idx = np.arange(s * b, s * b + b) % n
        mine = call(TRAIN, feats[idx], labels[idx], first)
        m_ref.train(feats[idx], labels[idx].astype(dtype))
    diffs = differences(np.concatenate(outs), mine, m_ref, head, keras_out)
    restored = call(SET, feats[:b], labels[:b], first)
    if any(not np.array_equal(restored[k], first[k]) for k in names):
        raise VerificationError("the trainable head's step does not restore a saved state (mode 2)")
    return diffs


def export_step(head, o, feats, labels, keras_out) -> Tuple[bytes, List[str], float, float, object]:
    """The ``step`` file, its signatures, its checks against Keras and TensorFlow, and TFLM's report
    of it (the arena for training, measured with TFLM's interpreter)."""
    from edgekit.converters.mcu import mcu
    from edgekit.converters.trainable import convert_head

    tflite = convert_head(step_module(head, o), {SIGNATURE: "step_signature"})
    infer_diff, train_diff = check_step(tflite, step_module(head, o), head, feats, labels, o, keras_out)
    return tflite, [SIGNATURE], infer_diff, train_diff, mcu(tflite, allow_float=True, name="trainable head")
