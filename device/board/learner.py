"""Learning on the device with numpy and LiteRT only: a trainable export (``edgekit export
--trainable``) fitted to a user's own examples, and timed.

    learner = Learner("head.tflite")            # its frozen backbone: head.backbone.tflite, when there
    learner.fit(x, y, epochs=20)               # label-balanced batches through the `train` signature
    learner.predict(x_new); learner.evaluate(x_test, y_test)
    state = learner.save()                     # plain arrays: weights and optimizer slots
    Learner("head.tflite").load(state)          # where it left off

Run as a script, it measures one model like the harness measures inference: start-up, time per
train step and per inference (p50/p90), peak RSS, on the given data or random samples::

    python learner.py head.tflite [--data D.npz] [--steps 50] [--warmup 5] [--json OUT]
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

if __package__:  # imported as edgekit.device.board.learner
    from edgekit.device.board.harness import BoardError, _memory_mb, load_interpreter, predict_all, summarize_latency
else:  # run as a script, here or on a board, beside harness.py
    from harness import BoardError, _memory_mb, load_interpreter, predict_all, summarize_latency

SIGNATURES = ("infer", "train", "get_weights", "set_weights")
BACKBONE_SUFFIX = ".backbone.tflite"


def backbone_path(path: str) -> str:
    """Where the frozen backbone of the trainable head at ``path`` is written and read."""
    stem = path[: -len(".tflite")] if path.endswith(".tflite") else path
    return stem + BACKBONE_SUFFIX


def backbone_of(path: str):
    """The frozen backbone written beside a trainable head, or None."""
    twin = backbone_path(path)
    return twin if os.path.isfile(twin) else None


class Learner:
    """A trainable ``.tflite`` head (and its frozen backbone) that learns from ``fit``."""

    def __init__(self, path: str, backbone="auto", threads: int = 1):
        self.path = path
        self.interp = load_interpreter(path, threads=threads, xnnpack=False, allocate=False)
        missing = [s for s in SIGNATURES if s not in self.interp.get_signature_list()]
        if missing:
            raise BoardError(
                f"{path} is not a trainable export (it has no {', '.join(missing)} signature): export the model "
                f"with `edgekit export MODEL --trainable head`"
            )
        self._run = {s: self.interp.get_signature_runner(s) for s in SIGNATURES}
        details = self._run["train"].get_input_details()
        self.batch_size, self.width = (int(v) for v in details["features"]["shape"])
        self.classification = np.issubdtype(details["labels"]["dtype"], np.integer)
        state = self.save()
        layers = [int(k[4:]) for k in state if k.startswith("bias") and k[4:].isdigit()]
        self.outputs = int(state[f"bias{max(layers)}"].shape[-1])
        backbone = backbone_of(path) if backbone == "auto" else backbone
        self.backbone = load_interpreter(backbone, threads=threads) if backbone else None

    def features(self, x) -> np.ndarray:
        """What the head reads: the backbone's output for ``x`` (or ``x`` itself), flat float32."""
        if self.backbone is not None:
            out = predict_all(self.backbone, x)
            x = next(iter(out.values()))
        if len(x) == 0:
            raise BoardError("no samples: give at least one")
        f = np.asarray(x, np.float32)
        f = f.reshape(len(f), -1)
        if f.shape[1] != self.width:
            raise BoardError(
                f"the head reads {self.width} features per sample; this data gives {f.shape[1]}"
                + ("" if self.backbone is not None else f" (no backbone: is {self.path}'s .backbone.tflite missing?)")
            )
        return f

    def _targets(self, y, n: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != n:
            raise BoardError(f"{0 if y.ndim == 0 else len(y)} labels for {n} samples")
        if self.classification:
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= self.outputs:
                raise BoardError(f"labels must be class ids 0..{self.outputs - 1} (the head's outputs), one per sample")
            return y.astype(np.int32)
        if y.size != n * self.outputs:
            raise BoardError(f"targets must be {self.outputs} value(s) per sample; received shape {y.shape}")
        return y.astype(np.float32).reshape(n, self.outputs)

    def _batches(self, y: np.ndarray, n: int, rng, balanced: bool):
        """Index batches for one epoch: as many as cover the data once; a classifier's drawn with the
        classes in equal shares (a new class with 5 examples is seen as often as an old one)."""
        steps = max(1, -(-n // self.batch_size))
        if balanced and self.classification:
            by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
            for _ in range(steps):
                picks = rng.integers(0, len(by_class), self.batch_size)
                yield np.array([rng.choice(by_class[c]) for c in picks])
        else:
            order = rng.permutation(steps * self.batch_size) % n
            yield from order.reshape(steps, self.batch_size)

    def fit(self, x, y, epochs: int = 1, seed: int = 0, balanced: bool = True) -> list:
        """Train on ``(x, y)``; the mean loss of each epoch."""
        f = self.features(x)
        t = self._targets(y, len(f))
        rng = np.random.default_rng(seed)
        losses = []
        for _ in range(int(epochs)):
            epoch = [
                float(self._run["train"](features=f[i], labels=t[i])["loss"])
                for i in self._batches(t, len(f), rng, balanced)
            ]
            losses.append(float(np.mean(epoch)))
        return losses

    def predict(self, x) -> np.ndarray:
        """The head's output for ``x`` (probabilities, logits or values)."""
        f = self.features(x)
        return np.concatenate([self._run["infer"](features=f[i : i + 256])["output"] for i in range(0, len(f), 256)])

    def evaluate(self, x, y) -> float:
        """Accuracy (a classifier) or mean absolute error."""
        out = self.predict(x)
        t = self._targets(y, len(out))
        if self.classification:
            return float(np.mean(out.argmax(-1) == t))
        return float(np.mean(np.abs(out - t)))

    def save(self) -> dict:
        """Weights and optimizer state as plain arrays."""
        return {k: np.array(v) for k, v in self._run["get_weights"]().items()}

    def load(self, state: dict) -> None:
        """Continue from ``state`` (a :meth:`save`)."""
        want = self._run["set_weights"].get_input_details()
        wrong = sorted(set(want) ^ set(state))
        if wrong:
            raise BoardError(f"the state does not fit this head: {wrong[0]!r} is missing or unknown")
        for k, d in want.items():
            if tuple(np.shape(state[k])) != tuple(d["shape"]):
                raise BoardError(f"state {k!r} has shape {np.shape(state[k])}; this head's is {tuple(d['shape'])}")
        self._run["set_weights"](**{k: np.asarray(v, np.float32) for k, v in state.items()})


def measure(path: str, data=None, steps: int = 50, warmup: int = 5, seed: int = 0, state=None) -> dict:
    """Start-up, time per train step and per inference (one sample), peak RSS; ``state``: a .npz
    path for the weights after the steps (the same batches for a seed: compare two machines)."""
    t0 = time.perf_counter()
    learner = Learner(path)
    startup = (time.perf_counter() - t0) * 1000
    rng = np.random.default_rng(seed)
    if data is not None:
        with np.load(data) as f:
            if "x" not in f and "x_train" not in f:
                raise BoardError(f"{data} has no array 'x' (or 'x_train') of samples")
            x = f["x"] if "x" in f else f["x_train"]
            y = f["y"] if "y" in f else f.get("y_train")
        feats = learner.features(x)
    else:
        y, feats = None, rng.normal(size=(4 * learner.batch_size, learner.width)).astype(np.float32)
    if y is None:
        y = (
            rng.integers(0, learner.outputs, len(feats))
            if learner.classification
            else rng.normal(size=(len(feats), learner.outputs))
        )
    t = learner._targets(y, len(feats))
    train, infer = learner._run["train"], learner._run["infer"]
    step_ms, infer_ms = [], []
    for i in range(warmup + steps):
        idx = rng.integers(0, len(feats), learner.batch_size)
        s = time.perf_counter()
        train(features=feats[idx], labels=t[idx])
        m = time.perf_counter()
        infer(features=feats[idx[:1]])
        e = time.perf_counter()
        if i >= warmup:
            step_ms.append((m - s) * 1000)
            infer_ms.append((e - m) * 1000)
    if state:
        np.savez(state, **learner.save())
    return {
        "model": path,
        "batch_size": learner.batch_size,
        "startup_ms": startup,
        "train_step_ms": summarize_latency(step_ms),
        "infer_ms": summarize_latency(infer_ms),
        "memory_mb": _memory_mb(),
    }


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="learner.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data", help="a .npz with x (and y): samples the model reads")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", help="write the figures here (default: stdout)")
    ap.add_argument("--state", help="write the weights after the steps to this .npz")
    args = ap.parse_args(argv)
    try:
        result = measure(args.model, args.data, args.steps, args.warmup, state=args.state)
    except BoardError as exc:
        print(f"learner.py: error: {exc}", file=sys.stderr)
        return exc.exit_code
    text = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
