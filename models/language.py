"""A small language model whose output projection reuses the input embedding (weight tying).

Press & Wolf 2017, "Using the Output Embedding to Improve Language Models": the logits are
``h @ E.T`` with ``E`` the (vocab, dim) embedding, so a vocab × dim matrix is stored once instead
of twice. The body is causal 1-D convolutions (TFLite builtins only: recurrent layers convert to
tensor-list ops that a board's LiteRT wheel cannot run), predicting token t+1 from tokens ≤ t.
"""

from __future__ import annotations

import numpy as np

from edgekit.core.compat import keras
from edgekit.core.errors import InputError
from edgekit.core.graph import emits_probabilities, functional, rewrite
from edgekit.core.layers import TiedEmbedding


def tied_lm(
    vocab: int = 30000,
    dim: int = 500,
    *,
    context: int = 32,
    layers: int = 2,
    kernel: int = 3,
    tied: bool = True,
    name: str = "tied_lm",
):
    """Next-token model over ``context`` token ids: embedding (vocab × dim), ``layers`` causal
    Conv1D blocks with residual adds and LayerNorm, and logits over ``vocab`` at every position.
    ``tied=False`` builds the same model with its own output Dense (no bias), for comparison:
    vocab 30,000, dim 500, ``layers=1, kernel=1``: 30.25M params untied, 15.25M tied."""
    if vocab < 2 or dim < 1 or context < 1 or layers < 0 or kernel < 1:
        raise InputError(
            f"tied_lm needs vocab >= 2, dim, context, kernel >= 1 and layers >= 0. Received "
            f"vocab={vocab}, dim={dim}, context={context}, layers={layers}, kernel={kernel}"
        )
    tokens = keras.Input(shape=(context,), dtype="int32", name="tokens")
    embedding = (
        TiedEmbedding(vocab, dim, name="embedding") if tied else keras.layers.Embedding(vocab, dim, name="embedding")
    )
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


def tie(model, embedding: str, output: str):
    """A new model in which the ``output`` Dense layer (units = vocabulary, input width = the
    embedding's dimension) multiplies by the ``embedding`` layer's matrix instead of its own
    kernel: one vocab × dim matrix instead of two. The embedding's weights are kept, the Dense
    kernel dropped (its bias and softmax kept); fine-tune afterwards. Other layers are copied."""
    model = functional(model, "tie")
    names = {l.name: l for l in model.layers}
    for n in (embedding, output):
        if n not in names:
            raise InputError(f"tie: the model has no layer '{n}'; its layers are {', '.join(list(names)[:12])}")
    emb, dense = names[embedding], names[output]
    if not isinstance(emb, keras.layers.Embedding):
        raise InputError(f"tie: '{embedding}' is a {type(emb).__name__}, not an Embedding")
    if type(dense) is not keras.layers.Dense:
        raise InputError(f"tie: '{output}' is a {type(dense).__name__}, not a Dense layer")
    act = getattr(dense.activation, "__name__", "")
    if act not in ("linear", "softmax"):
        raise InputError(
            f"tie: '{output}' has activation {act!r}; a tied projection gives logits (linear) "
            f"or probabilities (softmax)"
        )
    vocab, dim = emb.input_dim, emb.output_dim
    if tuple(dense.kernel.shape) != (dim, vocab):
        raise InputError(
            f"tie: '{output}' maps {dense.kernel.shape[0]} -> {dense.kernel.shape[1]} units; "
            f"tying to '{embedding}' ({vocab} tokens x {dim}) needs {dim} -> {vocab}"
        )
    tied = {}

    def replace(layer, mapped):
        if layer is emb:
            config = dict(emb.get_config(), output_bias=dense.use_bias)
            tied["layer"] = TiedEmbedding.from_config(config)
            out = tied["layer"](mapped)
            tied["layer"].set_weights(emb.get_weights() + ([dense.get_weights()[1]] if dense.use_bias else []))
            return out
        if layer is dense:
            if "layer" not in tied:
                raise InputError(
                    f"tie: '{output}' comes before '{embedding}' in the model; the output "
                    f"projection must follow the embedding"
                )
            out = tied["layer"](mapped, attend=True)
            return keras.layers.Softmax(name=f"{output}_softmax")(out) if act == "softmax" else out
        return None

    return rewrite(model, replace, "tie")


def perplexity(model, x, y, batch_size: int = 64) -> float:
    """exp(mean next-token cross-entropy) of a language model on token windows ``x`` with
    targets ``y`` (its outputs are logits, or probabilities after a softmax)."""

    out = model.predict(x, batch_size=batch_size, verbose=0).astype(np.float64)
    if emits_probabilities(model):
        logp = np.log(np.clip(out, 1e-12, 1.0))
    else:
        out -= out.max(axis=-1, keepdims=True)
        logp = out - np.log(np.exp(out).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(logp, np.asarray(y)[..., None].astype(np.int64), axis=-1)
    return float(np.exp(-picked.mean()))
