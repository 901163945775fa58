"""Recurrent layers in a form TFLite's builtin ops can hold.

The converter turns a Keras ``LSTM`` into the fused, fully integer ``UNIDIRECTIONAL_SEQUENCE_LSTM``
only when the batch size is static; with the usual ``None`` batch it fails on ``TensorListReserve``.
``GRU`` and ``SimpleRNN`` have no fused op: with a ``None`` batch they fail the same way, and with a
static batch the converter process crashes (a segfault, TF 2.21: TF#76672 → LiteRT#557). Measured
here (64 steps × 3 features, 32 units, int8): LSTM at batch 1 → 9 KB, fused; GRU and SimpleRNN
unrolled (``unroll=True``: the loop written out step by step in FULLY_CONNECTED, LOGISTIC, TANH, MUL,
ADD) → fully integer, 166–334 KB for 64 steps. The fused LSTM has no int16x8 kernel: int16x8 unrolls
LSTMs too.

:func:`for_conversion` gives the converter a twin of such a model at a batch of 1 (one window at a
time, as a board runs it): the same layers and weights, every GRU and SimpleRNN (also inside
``Bidirectional``) unrolled, an LSTM kept fused — unless another LSTM reads the same tensor (both
directions of a ``Bidirectional``, parallel LSTMs): the converter calibrates such fused LSTMs wrongly,
so they are unrolled too. The fused op keeps its state in variable tensors between invokes: the
harness resets them before every window. What cannot be converted with builtins is a clear error
naming the layer: a stateful RNN (its state lives in resource variables), a recurrent layer over
sequences of no fixed length that must be unrolled, and recurrent layers edgekit does not know
(``ConvLSTM2D``, a custom cell).
"""

from __future__ import annotations

from typing import List

import numpy as np

from edgekit.core.errors import InputError

FUSED = ("LSTM",)  # converted to the fused op at a static batch
UNROLLED = ("GRU", "SimpleRNN")  # written out step by step
WRAPPERS = ("Bidirectional",)


def _keras():
    from edgekit.core.compat import keras

    return keras


def _inner(layer) -> List:
    """The recurrent layers a layer holds: itself, or both directions of a Bidirectional."""
    name = type(layer).__name__
    if name in WRAPPERS:
        return [layer.forward_layer, layer.backward_layer]
    return [layer]


def recurrent_layers(model) -> List:
    """The model's recurrent layers (a Bidirectional counted once), in model order."""
    keras = _keras()
    return [l for l in model.layers if isinstance(l, (keras.layers.RNN, keras.layers.Bidirectional))]


def _check(layer, fuse_lstm: bool = True) -> None:
    """A clear error for a recurrent layer TFLite's builtins cannot hold."""
    for rnn in _inner(layer):
        kind = type(rnn).__name__
        if kind not in FUSED + UNROLLED:
            raise InputError(
                f"layer '{layer.name}' ({kind}) is a recurrent layer TFLite's builtin ops cannot hold; "
                f"use LSTM, GRU or SimpleRNN (or a Conv1D stack)"
            )
        if rnn.stateful:
            raise InputError(
                f"layer '{layer.name}' ({kind}) is stateful: its state would live in variables the board's "
                f"interpreter does not keep between calls; build it with stateful=False (the exported model "
                f"then reads one whole window per call)"
            )
        shape = layer.input_shape
        shape = shape[0] if isinstance(shape, list) else shape  # called with its initial state too
        steps = shape[1] if isinstance(shape, tuple) and len(shape) > 1 else None
        if (kind in UNROLLED or not fuse_lstm) and steps is None:
            raise InputError(
                f"layer '{layer.name}' ({kind}) reads sequences of any length; TFLite holds a {kind} only "
                f"written out step by step, which needs a fixed length: build the model with "
                f"keras.Input((STEPS, FEATURES))"
            )


def for_conversion(model, fuse_lstm: bool = True):
    """``model`` itself when it has no recurrent layer, else its twin for the converter (see the
    module doc): batch 1, GRU and SimpleRNN unrolled (LSTMs too without ``fuse_lstm``: the fused op
    has no int16x8 kernel), the same weights; checked to compute the same outputs."""
    rnns = recurrent_layers(model)
    if not rnns:
        return model
    for layer in rnns:
        _check(layer, fuse_lstm)
    if all(r.unroll for l in rnns for r in _inner(l)) and all(t.shape[0] == 1 for t in model.inputs):
        return model  # already written out at a batch of 1 (a streaming model's step): nothing to rewrite
    keras = _keras()
    unrolled = UNROLLED if fuse_lstm else UNROLLED + FUSED
    shared = _shared_input_lstms(model) if fuse_lstm else set()

    def clone(layer):
        config = layer.get_config()
        if type(layer).__name__ in WRAPPERS:
            for key in ("layer", "backward_layer"):
                inner = config.get(key)
                if inner and (inner.get("class_name") in unrolled or layer.name in shared):
                    inner["config"]["unroll"] = True
        elif isinstance(layer, keras.layers.RNN) and (type(layer).__name__ in unrolled or layer.name in shared):
            config["unroll"] = True
        return type(layer).from_config(config)

    # A static batch of 1: the fused LSTM needs it, and a written-out recurrence otherwise builds its
    # zero state with a FILL of the input's dynamic shape, which TFLM cannot prepare.
    inputs = [
        keras.Input(batch_shape=(1,) + tuple(t.shape[1:]), dtype=t.dtype, name=t.name.split(":")[0])
        for t in model.inputs
    ]
    from edgekit.core.compat import in_process_lambdas
    from edgekit.core.wrappers import custom_objects

    with custom_objects(), in_process_lambdas():  # a QAT model's wrappers and tfmot's own lambdas
        twin = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
    twin.set_weights(model.get_weights())
    if any(type(l).__name__ in WRAPPERS and type(l.forward_layer).__name__ in FUSED for l in rnns):
        twin = _computed_zero_states(twin)
    _same_outputs(model, twin)
    return twin


def _computed_zero_states(model):
    """``model`` with every written-out Bidirectional LSTM started from zero states computed from its
    input (a zero-kernel Dense of the first step) instead of constants: with constant zeros, the
    backward direction's first step has a dead gate (its forget gate times a zero cell state is
    folded away), and the int8 quantizer leaves that step's SPLIT in float (measured: one float
    SPLIT of 64, TF 2.21). A computed zero keeps every gate live: the file is fully integer."""
    from edgekit.core.graph import calls, rewrite

    keras = _keras()
    L = keras.layers

    def replace(layer, mapped):
        if not (type(layer).__name__ in WRAPPERS and type(layer.forward_layer).__name__ in FUSED):
            return None
        if len(calls(layer)[0].keras_inputs) != 1 or not isinstance(mapped, type(model.inputs[0])):
            return None  # called with its own initial state or a mask: left as it is
        steps = int(mapped.shape[1])
        first = L.Flatten(name=f"{layer.name}_first_step")(L.Cropping1D((0, steps - 1))(mapped))
        states = []
        for rnn in (layer.forward_layer, layer.backward_layer):
            zero = L.Dense(rnn.units, use_bias=False, kernel_initializer="zeros", name=f"{rnn.name}_zero_state")
            h = zero(first)
            states += [h, h]  # h and c
        clone = type(layer).from_config(layer.get_config())
        out = clone(mapped, initial_state=states)
        clone.set_weights(layer.get_weights())
        return out

    from edgekit.core.compat import in_process_lambdas
    from edgekit.core.wrappers import custom_objects

    if any(len(calls(layer)) > 1 for layer in model.layers):
        return model  # a shared layer: rewrite cannot rebuild it; the quantizer's float SPLIT is reported
    with custom_objects(), in_process_lambdas():  # a QAT model's wrappers and tfmot's own lambdas
        return rewrite(model, replace, "convert", keep_batch=True)


def _shared_input_lstms(model) -> set:
    """The LSTM layers (and Bidirectional LSTMs) that read a tensor another LSTM reads too: the
    converter calibrates such fused LSTMs wrongly (measured on random weights, 16 steps, 8 units:
    int8 output SNR 9 dB and top-1 agreement 0.91 for two LSTMs on one input, 40 dB and 1.0 for
    one; the same two unrolled: 32 dB, 1.0), so they are written out step by step."""
    from edgekit.core.compat import tf
    from edgekit.core.graph import calls

    readers: dict = {}
    for layer in recurrent_layers(model):
        if any(type(r).__name__ in FUSED for r in _inner(layer)):
            weight = 2 if type(layer).__name__ in WRAPPERS else 1  # both directions read the input
            for call in calls(layer):
                for t in tf.nest.flatten(call.input_tensors):
                    readers.setdefault(id(t), []).extend([layer.name] * weight)
    return {name for names in readers.values() if len(names) > 1 for name in names}


def _same_outputs(model, twin) -> None:
    """The twin computes what the model computes, on one random window."""
    from edgekit.core.bridge import sample_inputs

    x = sample_inputs(model, 1)

    def outputs(m):
        out = m(x, training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        return np.concatenate([np.asarray(o, dtype=np.float64).reshape(1, -1) for o in outs], axis=1)

    a, b = outputs(model), outputs(twin)
    if a.shape != b.shape or np.max(np.abs(a - b)) > 1e-4 * max(1.0, float(np.max(np.abs(a)))):
        raise InputError(
            f"model '{model.name}' computes differently once its recurrent layers are written out for TFLite "
            f"(max |Δ| {np.max(np.abs(a - b)) if a.shape == b.shape else float('inf'):.3g})"
        )
