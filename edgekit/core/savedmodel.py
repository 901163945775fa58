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
    """The serving signature of the SavedModel at ``path``: its inputs and outputs (TensorSpecs in
    ``inputs``/``outputs`` and their names in ``input_names``/``output_names``, sorted as the
    ``.tflite`` signature lists them), as a Keras model has them."""

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
        if not specs or not isinstance(outputs, dict) or not outputs:
            raise InputError(
                f"{self.path}: signature {self.signature!r} takes no named inputs or gives no named outputs; save it "
                f"with tf.saved_model.save(model, path, signatures=...) or Keras 3's model.export(path)"
            )
        for name, spec in specs.items():
            if spec.shape.rank is None or any(d is None for d in spec.shape[1:]):
                raise InputError(
                    f"{self.path}: input {name!r} has shape {spec.shape}; a .tflite file needs every "
                    f"dimension but the batch fixed: save the SavedModel with a fixed input shape"
                )
        self.input_names, self.output_names = sorted(specs), sorted(outputs)  # the .tflite signature's order
        self.inputs = [specs[n] for n in self.input_names]
        self.outputs = [tf.TensorSpec(outputs[n].shape, outputs[n].dtype, n) for n in self.output_names]
        self.layers: list = []
        self.loss = None
        self.name = os.path.basename(os.path.normpath(self.path))

    @property
    def input_shape(self):
        shapes = [tuple(t.shape) for t in self.inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    def predict(self, x, batch_size: int = 64, verbose: int = 0):
        """The signature's outputs on ``x`` (an array, or a dict by input name), in batches (of the
        signature's own batch size if it fixes one): an array, or a list in ``output_names`` order."""
        from edgekit.core.compat import tf
        from edgekit.core.samples import rows

        xs = x if isinstance(x, dict) else {self.input_names[0]: x}
        fixed = self.inputs[0].shape[0]
        step = int(fixed) if fixed is not None else batch_size
        n = rows(xs)
        outs = {k: [] for k in self.output_names}
        for i in range(0, n, step):
            feed = {}
            for spec, name in zip(self.inputs, self.input_names):
                batch = np.asarray(xs[name][i : i + step])
                if len(batch) < step and fixed is not None:  # pad a last short batch to the fixed size
                    batch = np.concatenate([batch, np.repeat(batch[-1:], step - len(batch), axis=0)])
                feed[name] = tf.constant(batch, dtype=spec.dtype)
            result = self._fn(**feed)
            for k in self.output_names:
                outs[k].append(result[k].numpy()[: n - i])
        merged = [np.concatenate(outs[k]) for k in self.output_names]
        return merged[0] if len(merged) == 1 else merged

    def converter(self):
        """TensorFlow's TFLite converter of the serving signature."""
        from edgekit.core.compat import tf

        return tf.lite.TFLiteConverter.from_saved_model(self.path, signature_keys=[self.signature])


def is_savedmodel_graph(model) -> bool:
    return isinstance(model, SavedModelGraph)
