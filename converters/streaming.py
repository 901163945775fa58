"""Streaming export: a recurrent model as one step over a hop of frames, its state explicit.

A watch or a keyword spotter does not hold a whole window: it feeds frames as they arrive. The
streaming twin of a model whose recurrent layers read the window — LSTM, GRU and SimpleRNN layers
(``return_sequences`` chains of them), per-frame layers before them (Dense, normalization,
activations), any head after the last — takes ``frame`` (``hop`` × features, batch 1) and each
recurrent layer's state (``NAME_state0``, an LSTM also ``NAME_state1``) and returns the head's
output on everything seen so far and the new states (``NAME_state0_next`` …). Fed a window frame by
frame from zero states, its last output is the whole-window model's: :func:`export_streaming`
checks exactly that on the verification windows, on the ``.tflite`` itself, after the step model's
usual verification. The recurrent layers are written out for ``hop`` steps (``unroll``), so every
op is a builtin with an int8 kernel in LiteRT and TFLM.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import numpy as np

from edgekit.core.errors import InputError, VerificationError
from edgekit.core.samples import calibration_samples, fit_inputs, input_specs, sample_indices, validation_pair

# Layers that compute each frame on its own (so they run as well on a hop as on the whole window)
PER_FRAME = (
    "Dense",
    "Dropout",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "LayerNormalization",
    "BatchNormalization",
    "GaussianNoise",
    "SpatialDropout1D",
)
RECURRENT = ("LSTM", "GRU", "SimpleRNN")


@dataclasses.dataclass
class Streaming:
    """A model's streaming twin: ``step`` (tf_keras) and how it is fed: ``hop`` frames of ``steps``
    per window, the states as (input name, output name, shape)."""

    step: object
    hop: int
    steps: int
    states: List[tuple]

    def zero_states(self, n: int) -> dict:
        return {i: np.zeros((n,) + shape, np.float32) for i, _, shape in self.states}

    def frames(self, windows: np.ndarray):
        """The hops of ``windows`` (N, steps, features), in order."""
        for t in range(0, self.steps, self.hop):
            yield windows[:, t : t + self.hop]

    def step_inputs(self, windows: np.ndarray, n: int, seed: int) -> dict:
        """``n`` of the step model's inputs (frame and states) met while the float step model reads
        ``windows`` frame by frame, drawn with ``seed``: what calibrates and verifies the step."""
        seen = {k: [] for k in ["frame"] + [i for i, _, _ in self.states]}
        states = self.zero_states(len(windows))
        for frame in self.frames(windows):
            feed = {"frame": frame, **states}
            for k, v in feed.items():
                seen[k].append(np.asarray(v))
            states = self._advance(feed)[1]
        arrays = {k: np.concatenate(v) for k, v in seen.items()}
        idx = sample_indices(len(arrays["frame"]), n, seed)
        return {k: v[idx] for k, v in arrays.items()}

    def _advance(self, feed: dict) -> tuple:
        out = self.step(feed, training=False)
        names = self.step.output_names
        by_name = dict(zip(names, out))
        return np.asarray(out[0]), {i: np.asarray(by_name[o]) for i, o, _ in self.states}


def _layers(model) -> list:
    """The model's layers as one chain from its input (what streaming needs), or a clear error."""
    keras = _keras()
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InputError(
            f"streaming export feeds one input a frame at a time; model '{model.name}' has {len(model.inputs)} "
            f"input(s) and {len(model.outputs)} output(s): export the whole window"
        )
    previous = model.inputs[0]
    for layer in layers:  # each layer's first call is the model's (a streaming twin calls it again)
        tensors = _flat(layer.get_input_at(0))
        if len(tensors) != 1 or tensors[0] is not previous:
            raise InputError(
                f"streaming export needs the layers as one chain from the input; layer '{layer.name}' "
                f"({type(layer).__name__}) branches or merges: export the whole window instead"
            )
        previous = layer.get_output_at(0)
    return layers


def _flat(x) -> list:
    from edgekit.core.compat import tf

    return tf.nest.flatten(x)


def _keras():
    from edgekit.core.compat import keras

    return keras


def _check(layers: list, model) -> None:
    rnns = [i for i, l in enumerate(layers) if type(l).__name__ in RECURRENT]
    for i, layer in enumerate(layers):
        kind = type(layer).__name__
        if kind == "Bidirectional":
            raise InputError(
                f"layer '{layer.name}' (Bidirectional) reads the window backwards too, which needs frames not yet "
                f"seen: a streaming model's recurrent layers run forwards only"
            )
        if kind in RECURRENT:
            if layer.stateful or getattr(layer, "go_backwards", False):
                raise InputError(
                    f"layer '{layer.name}' ({kind}) is stateful or reads backwards: build it with the defaults"
                )
            if i != rnns[-1] and not layer.return_sequences:
                raise InputError(
                    f"layer '{layer.name}' ({kind}) feeds another recurrent layer without return_sequences"
                )
            continue
        if (not rnns or i < rnns[-1]) and kind not in PER_FRAME:
            raise InputError(
                f"layer '{layer.name}' ({kind}) looks across time steps before the last recurrent layer; streaming "
                f"export covers recurrent models (per-frame layers: {', '.join(PER_FRAME)}) — export the whole window"
            )
    if rnns and layers[rnns[-1]].return_sequences:
        last = layers[rnns[-1]]
        raise InputError(
            f"layer '{last.name}' ({type(last).__name__}) returns every step (return_sequences=True) to the layers "
            f"after it: a streaming step returns the output on the frames seen so far; build the last recurrent "
            f"layer with return_sequences=False, or export the whole window"
        )
    if not rnns:
        raise InputError(
            f"streaming export runs a model's recurrent layers (LSTM, GRU, SimpleRNN) frame by frame; model "
            f"'{model.name}' has none: export the whole window"
        )


def streaming_model(model, hop: int = 1) -> Streaming:
    """The streaming twin of a tf_keras ``model`` (see the module doc), ``hop`` frames per step."""
    keras = _keras()
    layers = _layers(model)
    _check(layers, model)
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 2 or shape[0] is None:
        raise InputError(f"streaming export needs windows of fixed length (STEPS, FEATURES); the input is {shape}")
    steps, features = int(shape[0]), int(shape[1])
    if int(hop) < 1 or steps % int(hop):
        raise InputError(
            "{hop} must divide the window's {steps} steps; received {value}", params="hop", steps=steps, value=hop
        )
    frame = keras.Input(batch_shape=(1, int(hop), features), name="frame")
    x, inputs, outputs, states = frame, [frame], [], []
    for layer in layers:  # each layer copied with its weights: the model's own layers stay as they are
        if type(layer).__name__ not in RECURRENT:
            twin = type(layer).from_config(layer.get_config())
            x = twin(x)
            twin.set_weights(layer.get_weights())
            continue
        config = dict(layer.get_config(), return_state=True, unroll=True, stateful=False)
        twin = type(layer).from_config(config)
        n = 2 if type(layer).__name__ == "LSTM" else 1
        given = [keras.Input(batch_shape=(1, int(layer.units)), name=f"{layer.name}_state{k}") for k in range(n)]
        result = twin(x, initial_state=given if n > 1 else given[0])
        twin.set_weights(layer.get_weights())
        x = result[0]
        inputs += given
        for k, s in enumerate(result[1:]):
            name = f"{layer.name}_state{k}"
            outputs.append(keras.layers.Activation("linear", name=f"{name}_next")(s))
            states.append((name, f"{name}_next", (int(layer.units),)))
    step = keras.Model(inputs, [x] + outputs, name=f"{model.name}_streaming")
    return Streaming(step, int(hop), steps, states)


def run_tflite(interp, stream: Streaming, windows: np.ndarray) -> np.ndarray:
    """The ``.tflite`` step model run over ``windows`` frame by frame, as a board runs it: each
    window from zero states, each new state fed back (dequantized, then quantized to the input's
    scale); the last step's dequantized output per window."""
    from edgekit.device.board.harness import dequantize, io_names, quantize

    ins, outs = io_names(interp)
    in_details = dict(zip(ins, interp.get_input_details()))
    out_details = dict(zip(outs, interp.get_output_details()))
    head = next(n for n in outs if n not in {o for _, o, _ in stream.states})
    results = []
    for window in windows:
        states = {i: np.zeros((1,) + shape, np.float32) for i, _, shape in stream.states}
        for t in range(0, stream.steps, stream.hop):
            feed = {"frame": window[None, t : t + stream.hop], **states}
            for name, value in feed.items():
                interp.set_tensor(in_details[name]["index"], quantize(np.asarray(value, np.float32), in_details[name]))
            interp.invoke()
            states = {
                i: dequantize(interp.get_tensor(out_details[o]["index"]), out_details[o]) for i, o, _ in stream.states
            }
        results.append(dequantize(interp.get_tensor(out_details[head]["index"]), out_details[head])[0])
    return np.stack(results)


def export_streaming(model, options, calibration, validation_data, progress=None):
    """:func:`edgekit.converters.export` of ``model``'s streaming twin (``options.streaming``): the
    step model converted and verified on the frames and states met reading the windows, then run
    frame by frame over the verification windows against the whole-window model
    (``ExportReport.streaming``). Float32 must match it within 1e-5 of its scale."""
    from edgekit.converters.export import _prepare, export
    from edgekit.core.task import Task
    from edgekit.device.board.harness import load_interpreter

    keras_model, resolved = _prepare(model, options, validation_pair(validation_data)[1])
    stream = streaming_model(keras_model, options.hop)
    specs = input_specs(keras_model)
    eval_x, eval_y = validation_pair(validation_data)
    calib_w = (
        calibration_samples(calibration, specs, options.calib_samples, options.seed)[0]
        if calibration is not None
        else None
    )
    eval_w = fit_inputs(eval_x, specs, "validation_data") if eval_x is not None else calib_w
    if eval_w is None:
        raise InputError(
            "{streaming} needs windows to verify on: pass {validation_data} or {calibration}",
            params=("streaming", "validation_data", "calibration"),
        )
    tasks = [resolved[0].task] + [Task.REGRESSION] * len(stream.states)  # the states: real values, compared by SNR
    step_calib = stream.step_inputs(calib_w, options.calib_samples, options.seed) if calib_w is not None else None
    step_eval = stream.step_inputs(eval_w, options.verify_samples, options.seed)
    keep = None if options.keep_float == "auto" else options.keep_float  # 'auto' aims at the whole window's agreement
    inner = dataclasses.replace(
        options, streaming=False, hop=1, task=[t.value for t in tasks], min_agreement=None, keep_float=keep
    )
    report = export(
        stream.step, None, calibration=step_calib, validation_data=(step_eval, None), progress=progress, options=inner
    )
    idx = sample_indices(len(eval_w), options.verify_samples, options.seed)
    windows = eval_w[idx]
    lite = run_tflite(load_interpreter(model_content=report.tflite, xnnpack=True), stream, windows)
    ref = np.asarray(keras_model.predict(windows, batch_size=64, verbose=0)).reshape(lite.shape)
    figures = _equivalence(
        ref, lite, resolved[0].task, None if eval_y is None or eval_x is None else np.asarray(eval_y)[idx]
    )
    figures.update(
        hop=stream.hop, steps=stream.steps, windows=int(len(windows)), states=[i for i, _, _ in stream.states]
    )
    _gate(options, figures)
    notes = list(report.warnings)
    if options.quant.value == "int8" and figures.get("agreement", 1.0) < 0.99:
        notes.append(
            f"read frame by frame, the int8 model agrees with the whole window on {figures['agreement']:.1%}: its "
            f"state is rounded to int8 at every step; int16 activations (int16x8) keep it (docs/export.md#streaming)"
        )
    task = resolved[0]
    return dataclasses.replace(report, streaming=figures, task=task.task.value, task_reason=task.reason, warnings=notes)


def _equivalence(ref, lite, task, y) -> dict:
    from edgekit.core.task import Task, predicted_classes, quality

    figures = {
        "max_abs_diff": float(np.max(np.abs(lite.astype(np.float64) - ref))),
        "scale": float(np.max(np.abs(ref))),
    }
    if task is Task.CLASSIFICATION:
        figures["agreement"] = float(np.mean(predicted_classes(lite) == predicted_classes(ref)))
        if y is not None:
            figures.update(
                accuracy=quality(task, lite, y)["accuracy"], keras_accuracy=quality(task, ref, y)["accuracy"]
            )
    elif y is not None:
        figures.update(metrics={"keras": quality(task, ref, y), "tflite": quality(task, lite, y)})
    return figures


def _gate(options, figures: dict) -> None:
    from edgekit.converters.convert import Quant

    if options.quant is Quant.FLOAT32 and figures["max_abs_diff"] > 1e-5 * max(1.0, figures["scale"]):
        raise VerificationError(
            f"the float32 streaming model read frame by frame differs from the whole-window model by "
            f"{figures['max_abs_diff']:.3g}: a layer does not compute frame by frame as it does on the window"
        )
    agreement = figures.get("agreement")
    if options.min_agreement is not None and agreement is not None and agreement < options.min_agreement:
        raise VerificationError(
            "the streaming {mode} model read frame by frame agrees with the whole-window Keras model on "
            "{agreement:.1%} of {n} windows, below {min_agreement} {required:.1%}",
            params="min_agreement",
            mode=options.quant.value,
            agreement=agreement,
            n=figures["windows"],
            required=options.min_agreement,
        )


def describe(figures: Optional[dict]) -> Optional[str]:
    """The export summary's line about streaming."""
    if not figures:
        return None
    line = (
        f"streaming: {figures['hop']} frame(s) per invoke, {figures['steps'] // figures['hop']} invokes per window, "
        f"state {', '.join(figures['states'])}; on {figures['windows']} windows fed frame by frame against the "
        f"whole-window Keras model: max |Δ| {figures['max_abs_diff']:.3g}"
    )
    if figures.get("agreement") is not None:
        line += f", top-1 agreement {figures['agreement']:.4f}"
    if figures.get("accuracy") is not None:
        line += f", accuracy keras {figures['keras_accuracy']:.4f} / tflite {figures['accuracy']:.4f}"
    return line
