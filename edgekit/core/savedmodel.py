"""A SavedModel without Keras metadata — what ``tf.saved_model.save``, Keras 3's ``model.export()``
and most model zoos write — as the export takes it: its serving signature, run by TensorFlow.

:class:`SavedModelGraph` has the part of a Keras model's interface the export uses (``name``,
``inputs``, ``outputs``, ``predict``, no ``layers``), so the export converts it with the TFLite
converter's SavedModel path and verifies the ``.tflite`` against TensorFlow running the signature.
It is loaded only after :func:`edgekit.core.modelfile.scan` found no op in its graphs that reads or
writes files or runs Python (:data:`edgekit.core.modelfile.UNSAFE_GRAPH_OPS`). The verbs that
rewrite a Keras model (pruning, QAT, channel pruning …) need the Keras file and say so.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from edgekit.core.errors import InputError

SERVING = "serving_default"


class SavedModelGraph:
    """The serving signature of the SavedModel at ``path``: one input and one output (TensorSpecs
    in ``inputs``/``outputs``, as a Keras model has them)."""

    def __init__(self, path: str, signature: Optional[str] = None):
        from edgekit.core.compat import tf

        self.path = os.fspath(path)
        try:
            loaded = tf.saved_model.load(self.path)
        except Exception as exc:  # TF raises many types for a SavedModel it cannot restore
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise InputError(f"cannot load {self.path} as a SavedModel ({type(exc).__name__}: {text})") from None
        keys = sorted(loaded.signatures.keys())
        self.signature = signature or (SERVING if SERVING in keys else (keys[0] if len(keys) == 1 else None))
        if self.signature not in keys:
            raise InputError(
                f"{self.path} has no serving signature {signature or SERVING!r} (its signatures: "
                f"{', '.join(keys) or 'none'}); save it with tf.saved_model.save(model, path, signatures=...) "
                f"or Keras 3's model.export(path)"
            )
        self._loaded = loaded  # keeps the function's variables alive
        self._fn = loaded.signatures[self.signature]
        specs = self._fn.structured_input_signature[1]
        outputs = self._fn.structured_outputs
        if len(specs) != 1 or not isinstance(outputs, dict) or len(outputs) != 1:
            raise InputError(
                f"{self.path}: signature {self.signature!r} takes {len(specs)} input(s) and gives "
                f"{len(outputs) if isinstance(outputs, dict) else '?'} output(s); edgekit exports SavedModels with one "
                f"input and one output so far: export the Keras model instead"
            )
        (self._in_name, spec), (self._out_name, out) = next(iter(specs.items())), next(iter(outputs.items()))
        if spec.shape.rank is None or any(d is None for d in spec.shape[1:]):
            raise InputError(
                f"{self.path}: input {self._in_name!r} has shape {spec.shape}; a .tflite file needs every "
                f"dimension but the batch fixed: save the SavedModel with a fixed input shape"
            )
        self.inputs = [spec]
        self.outputs = [tf.TensorSpec(out.shape, out.dtype, self._out_name)]
        self.layers: list = []
        self.loss = None
        self.name = os.path.basename(os.path.normpath(self.path))

    @property
    def input_shape(self) -> tuple:
        return tuple(self.inputs[0].shape)

    def predict(self, x, batch_size: int = 64, verbose: int = 0) -> np.ndarray:
        """The signature's output on ``x``, in batches (of the signature's own batch size if it
        fixes one)."""
        from edgekit.core.compat import tf

        fixed = self.inputs[0].shape[0]
        step = int(fixed) if fixed is not None else batch_size
        dtype = self.inputs[0].dtype
        outs = []
        for i in range(0, len(x), step):
            batch = np.asarray(x[i : i + step])
            short = fixed is not None and len(batch) < step
            if short:  # pad a last short batch to the fixed size
                batch = np.concatenate([batch, np.repeat(batch[-1:], step - len(batch), axis=0)])
            out = self._fn(**{self._in_name: tf.constant(batch, dtype=dtype)})[self._out_name].numpy()
            outs.append(out[: len(x) - i] if short else out)
        return np.concatenate(outs)

    def converter(self):
        """TensorFlow's TFLite converter of the serving signature."""
        from edgekit.core.compat import tf

        return tf.lite.TFLiteConverter.from_saved_model(self.path, signature_keys=[self.signature])


def is_savedmodel_graph(model) -> bool:
    return isinstance(model, SavedModelGraph)
