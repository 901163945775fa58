"""A small language model whose output projection reuses the input embedding (weight tying).

Press & Wolf 2017, "Using the Output Embedding to Improve Language Models": the logits are
``h @ E.T`` with ``E`` the (vocab, dim) embedding, so a vocab × dim matrix is stored once instead
of twice. The body is causal 1-D convolutions (TFLite builtins only: recurrent layers convert to
tensor-list ops that a board's LiteRT wheel cannot run), predicting token t+1 from tokens ≤ t.
"""

from __future__ import annotations

from edgekit._compat import keras, tf


@keras.utils.register_keras_serializable(package="edgekit")
class TiedEmbedding(keras.layers.Embedding):
    """An ``Embedding`` that is also the output projection: ``layer(ids)`` looks rows up,
    ``layer(h, attend=True)`` returns ``h @ embeddings.T`` (logits over the vocabulary)."""

    def call(self, inputs, attend: bool = False):
        if attend:
            return tf.matmul(inputs, self.embeddings, transpose_b=True)
        return super().call(inputs)

    def compute_output_shape(self, input_shape, attend: bool = False):
        if attend:
            return tuple(input_shape[:-1]) + (self.input_dim,)
        return super().compute_output_shape(input_shape)


def tied_lm(vocab: int = 30000, dim: int = 500, *, context: int = 32, layers: int = 2, kernel: int = 3,
            tied: bool = True, name: str = "tied_lm"):
    """Next-token model over ``context`` token ids: embedding (vocab × dim), ``layers`` causal
    Conv1D blocks with residual adds and LayerNorm, and logits over ``vocab`` at every position.
    ``tied=False`` builds the same model with its own output Dense (no bias), for comparison:
    vocab 30,000, dim 500, ``layers=1, kernel=1``: 30.25M params untied, 15.25M tied."""
    if vocab < 2 or dim < 1 or context < 1 or layers < 0 or kernel < 1:
        raise ValueError(f"tied_lm needs vocab >= 2, dim, context, kernel >= 1 and layers >= 0. Received "
                         f"vocab={vocab}, dim={dim}, context={context}, layers={layers}, kernel={kernel}")
    tokens = keras.Input(shape=(context,), dtype="int32", name="tokens")
    embedding = TiedEmbedding(vocab, dim, name="embedding") if tied else keras.layers.Embedding(
        vocab, dim, name="embedding")
    x = embedding(tokens)
    for i in range(layers):
        h = keras.layers.Conv1D(dim, kernel, padding="causal", activation="relu", name=f"block{i}_conv")(x)
        x = keras.layers.Add(name=f"block{i}_add")([x, h])
        x = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_norm")(x)
    if tied:
        logits = embedding(x, attend=True)
    else:
        logits = keras.layers.Dense(vocab, use_bias=False, name="logits")(x)
    return keras.Model(tokens, logits, name=name)
