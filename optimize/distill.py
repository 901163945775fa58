"""Knowledge distillation: a small student trained on a large teacher's softened outputs.

Inside your own training script::

    from edgekit.optimize import Distiller, DistillConfig

    d = Distiller(student, teacher, DistillConfig(temperature=4, alpha=0.1))
    d.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    d.fit(x, y, epochs=10, callbacks=[...])   # the teacher is frozen, the student trains
    student.save("student.keras")             # a plain model: prune, QAT, export as any other

or in one call, ``distill(student, teacher, x, y, config, FineTune(...))`` (returns a trained copy).
The loss is ``alpha · CE(y, student) + (1 − alpha) · T² · KL(softmax(t/T) ‖ softmax(s/T))`` on
logits ``s``, ``t`` (Hinton et al. 2015; T² keeps the soft gradients' scale as T changes). A
model ending in softmax is read as probabilities: ``log p`` are its logits up to a constant, which
softmax ignores, so the same loss holds. With ``features`` the student's intermediate outputs are
also pulled towards the teacher's (FitNets, Romero et al. 2015) through a learned linear map of
the channel axis when their widths differ; the map is training state, not part of the student.
For a regression or reconstruction model (``task``) the soft part matches the teacher's outputs
(mean squared difference) and the hard part is the mean squared error to the targets.
"""

from __future__ import annotations

from dataclasses import replace

from edgekit.core.compat import keras, tf
from edgekit.core.errors import InputError
from edgekit.core.graph import emits_probabilities
from edgekit.core.task import Task
from edgekit.optimize.common import copy_model
from edgekit.optimize.configs import DistillConfig, FineTune
from edgekit.optimize.registry import Technique, register


def _find(model, name: str, role: str):
    for layer in model.layers:
        if layer.name == name or getattr(getattr(layer, "layer", None), "name", None) == name:
            return layer
    names = ", ".join(l.name for l in model.layers[:12])
    raise InputError(
        f"distill features: the {role} has no layer '{name}'; its layers are {names}"
        + (" …" if len(model.layers) > 12 else "")
    )


class Distiller(keras.Model):
    """``fit`` trains ``student`` against ``teacher`` (frozen) as :class:`DistillConfig` says;
    ``predict``/``evaluate`` run the student. Labels are optional: without ``y`` the loss is the
    soft part alone. A pruned student needs its callbacks in ``fit`` as always
    (``callbacks=edgekit.optimize.callbacks(student)``; ``fine_tune`` passes them)."""

    def __init__(self, student, teacher, config: DistillConfig = DistillConfig(), task=Task.CLASSIFICATION, **kwargs):
        super().__init__(name=kwargs.pop("name", "distiller"), **kwargs)
        self.task = Task.parse(task)
        for role, m in (("student", student), ("teacher", teacher)):
            if not isinstance(m, keras.Model) or not getattr(m, "outputs", None):
                raise InputError(
                    f"distill: the {role} must be a built tf_keras model (functional or Sequential); "
                    f"received {type(m).__name__}"
                )
        s_in, t_in = tuple(student.inputs[0].shape[1:]), tuple(teacher.inputs[0].shape[1:])
        s_out, t_out = tuple(student.outputs[0].shape[1:]), tuple(teacher.outputs[0].shape[1:])
        if s_in != t_in or s_out != t_out:
            raise InputError(
                f"distill: student and teacher must take and give the same shapes; student "
                f"{s_in} -> {s_out}, teacher {t_in} -> {t_out}"
            )
        self.student, self.teacher, self.config = student, teacher, config
        self._student_probs, self._teacher_probs = emits_probabilities(student), emits_probabilities(teacher)
        self._s_net, self._t_net, self._maps = student, teacher, []
        if config.features:
            s_layers = [_find(student, s, "student") for s, _ in config.features]
            t_layers = [_find(teacher, t, "teacher") for _, t in config.features]
            for (s_name, t_name), sl, tl in zip(config.features, s_layers, t_layers):
                ss, ts = tuple(sl.output.shape[1:]), tuple(tl.output.shape[1:])
                if ss[:-1] != ts[:-1]:
                    raise InputError(
                        f"distill features: '{s_name}' {ss} and '{t_name}' {ts} differ in more than "
                        f"the channel axis; pair layers of the same spatial size"
                    )
                self._maps.append(
                    None
                    if ss[-1] == ts[-1]
                    else keras.layers.Dense(ts[-1], use_bias=False, name=f"map_{len(self._maps)}")
                )
            self._s_net = keras.Model(student.inputs, [student.outputs[0]] + [l.output for l in s_layers])
            self._t_net = keras.Model(teacher.inputs, [teacher.outputs[0]] + [l.output for l in t_layers])
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.soft_tracker = keras.metrics.Mean(name="soft_loss")
        self.hard_tracker = keras.metrics.Mean(name="hard_loss")

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def _logits(self, out, probabilities: bool):
        return tf.math.log(tf.clip_by_value(out, 1e-7, 1.0)) if probabilities else out

    def _hard(self, y, out):
        y = tf.convert_to_tensor(y)
        if self.task is not Task.CLASSIFICATION:
            return tf.reduce_mean(tf.square(out - tf.reshape(tf.cast(y, out.dtype), tf.shape(out))))
        if y.shape.rank == out.shape.rank and y.shape[-1] == out.shape[-1]:
            loss = keras.losses.categorical_crossentropy(y, out, from_logits=not self._student_probs)
        else:
            loss = keras.losses.sparse_categorical_crossentropy(y, out, from_logits=not self._student_probs)
        return tf.reduce_mean(loss)

    def soft_loss(self, teacher_out, student_out):
        """T² · KL(teacher_T ‖ student_T), averaged over samples (and positions); for regression and
        reconstruction the mean squared difference of the outputs."""
        if self.task is not Task.CLASSIFICATION:
            return tf.reduce_mean(tf.square(student_out - tf.stop_gradient(teacher_out)))
        t = float(self.config.temperature)
        p_t = tf.nn.softmax(self._logits(teacher_out, self._teacher_probs) / t, axis=-1)
        log_q = tf.nn.log_softmax(self._logits(student_out, self._student_probs) / t, axis=-1)
        log_p = tf.math.log(tf.clip_by_value(p_t, 1e-12, 1.0))
        return tf.reduce_mean(tf.reduce_sum(p_t * (log_p - log_q), axis=-1)) * (t * t)

    def _outputs(self, net, x, training):
        outs = net(x, training=training)
        return (outs[0], outs[1:]) if self.config.features else (outs, [])

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        t_out, t_feats = self._outputs(self._t_net, x, False)
        with tf.GradientTape() as tape:
            s_out, s_feats = self._outputs(self._s_net, x, True)
            soft = self.soft_loss(t_out, s_out)
            alpha = float(self.config.alpha) if y is not None else 0.0
            hard = self._hard(y, s_out) if y is not None else tf.constant(0.0)
            loss = alpha * hard + (1.0 - alpha) * soft
            for m, sf, tf_ in zip(self._maps, s_feats, t_feats):
                sf = m(sf) if m is not None else sf
                loss += float(self.config.feature_weight) * tf.reduce_mean(tf.square(sf - tf.stop_gradient(tf_)))
            if self.student.losses:
                loss += tf.add_n(self.student.losses)
        variables = self.student.trainable_variables + [
            v for m in self._maps if m is not None for v in m.trainable_variables
        ]
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return self._results(loss, soft, hard, y, s_out)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        t_out = self.teacher(x, training=False)
        s_out = self.student(x, training=False)
        soft = self.soft_loss(t_out, s_out)
        alpha = float(self.config.alpha) if y is not None else 0.0
        hard = self._hard(y, s_out) if y is not None else tf.constant(0.0)
        return self._results(alpha * hard + (1.0 - alpha) * soft, soft, hard, y, s_out)

    def _results(self, loss, soft, hard, y, s_out):
        self.loss_tracker.update_state(loss)
        self.soft_tracker.update_state(soft)
        self.hard_tracker.update_state(hard)
        if y is not None:
            self.compiled_metrics.update_state(y, s_out)
        return {m.name: m.result() for m in self.metrics}


def distill(
    student,
    teacher,
    x,
    y=None,
    config: DistillConfig = DistillConfig(),
    settings: FineTune = FineTune(epochs=10, learning_rate=1e-3),
    *,
    seed: int = 0,
):
    """Train a copy of ``student`` on ``x`` (and labels ``y``, optional) against ``teacher``;
    returns the trained student, a plain model (``student`` itself is left untouched)."""
    from edgekit.core.saving import as_tf_keras
    from edgekit.optimize.finetune import fine_tune

    model = copy_model(as_tf_keras(student))
    teacher = as_tf_keras(teacher)
    fine_tune(
        model,
        x,
        y,
        replace(settings, distill=config),
        teacher=teacher,
        seed=seed,
        **({} if y is not None else {"metrics": ()}),
    )
    return model


def _apply(model, config, step):
    """A step of its own: fine-tune a copy against the teacher (the recipe's, else its input model)."""
    student = copy_model(model)
    step.fine_tune(student, replace(step.settings, distill=config))
    return student, None


register(
    Technique(
        "distill", DistillConfig, _apply, order=50, describe=lambda c: f"distill T={c.temperature:g} alpha={c.alpha:g}"
    )
)
