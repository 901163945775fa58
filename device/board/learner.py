"""Learning on the device with numpy and LiteRT only: a trainable export (``edgekit export
--trainable``) fitted to a user's own examples, and timed.

    learner = Learner("head.tflite")            # its frozen backbone: head.backbone.tflite, when there
    learner.fit(x, y, epochs=20)               # label-balanced batches through the `train` signature
    learner.predict(x_new); learner.evaluate(x_test, y_test)
    state = learner.save()                     # plain arrays: weights and optimizer slots
    Learner("head.tflite").load(state)          # where it left off

Run as a script, it measures one model like the harness measures inference: start-up, time per
train step and per inference (p50/p90), peak RSS, on the given data or random samples::

    python learner.py head.tflite [--data D.npz] [--steps 50] [--warmup 5] [--threads 1] [--json OUT]

It prints one JSON object on stdout (``edgekit bench --learn`` runs it so, here, over SSH and under
QEMU); on failure ``{"error": "..."}`` and exit 2, as the harness does.
"""

from __future__ import annotations

import json
import os
import sys
import time

try:
    import numpy as np
except ImportError:  # reported by main() as the harness reports it
    np = None

if __package__:  # imported as edgekit.device.board.learner
    from edgekit.device.board import harness
else:  # run as a script, here or on a board, beside harness.py
    import harness
BoardError = harness.BoardError
LEARNER_PATH = os.path.abspath(__file__)  # what `edgekit bench --learn` runs in each child process

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

    def __init__(self, path: str, backbone="auto", threads: int = 1, xnnpack: bool = True):
        self.path = path
        self.interp = harness.load_interpreter(path, threads=threads, xnnpack=False, allocate=False)
        missing = [s for s in SIGNATURES if s not in self.interp.get_signature_list()]
        if missing == list(SIGNATURES) and "step" in self.interp.get_signature_list():
            raise BoardError(f"{path} is a microcontroller's trainable head (one `step` signature, for TFLM): "
                             "export it without --target mcu for LiteRT")  # fmt: skip
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
        self.backbone_file = backbone_of(path) if backbone == "auto" else backbone
        self.backbone = (
            harness.load_interpreter(self.backbone_file, threads=threads, xnnpack=xnnpack)
            if self.backbone_file
            else None
        )

    def features(self, x) -> np.ndarray:
        """What the head reads: the backbone's output for ``x`` (or ``x`` itself), flat float32."""
        if self.backbone is not None:
            out = harness.predict_all(self.backbone, x)
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


def _training_data(path, learner: Learner, rng) -> tuple:
    """Features and targets to time the steps on: a .npz's ``x`` (or ``x_train``/``x_test``) through
    the backbone, at most 256 samples, with its labels when it has them; else random."""
    x = y = None
    if path is not None:
        arrays = harness._load_npz(path)
        key = next((k for k in ("x", "x_train", "x_test") if k in arrays), None)
        if key is None:
            raise BoardError(f"{path} holds {sorted(arrays)}; expected an array 'x' of samples (and 'y' of labels)")
        x, y = arrays[key][:256], arrays.get("y" + key[1:])
        y = None if y is None else y[:256]
        feats = learner.features(x)
    else:
        feats = rng.normal(size=(4 * learner.batch_size, learner.width)).astype(np.float32)
    if y is None:
        shape = len(feats) if learner.classification else (len(feats), learner.outputs)
        y = rng.integers(0, learner.outputs, shape) if learner.classification else rng.normal(size=shape)
    elif learner.classification and harness.one_hot_rows(y):
        y = y.argmax(axis=1)
    return x, feats, learner._targets(y, len(feats))


def _inference_ms(learner: Learner, x, feats, runs: int, seed: int) -> list:
    """One inference as the board runs it: the backbone's invoke (inputs set once), its output read and
    the head's ``infer`` on it; the head alone without a backbone."""
    infer, bb = learner._run["infer"], learner.backbone
    if bb is not None:
        for d, a in zip(bb.get_input_details(), harness.prepare_inputs(bb, x, seed=seed)):
            bb.set_tensor(d["index"], a)
        out = bb.get_output_details()[0]
    times = []
    for _ in range(runs):
        s = time.perf_counter()
        if bb is not None:
            bb.invoke()
            f = harness.dequantize(bb.get_tensor(out["index"]), out).reshape(1, -1).astype(np.float32)
        else:
            f = feats[:1]
        infer(features=f)
        times.append((time.perf_counter() - s) * 1000)
    return times


def measure(path, data=None, steps=50, warmup=5, seed=0, state=None, threads=1, xnnpack=True, progress=None) -> dict:
    """Train ``path`` in this process and return a JSON-ready dict like the harness's: start-up
    (loading head and backbone, the first train step), ``steps`` timed train steps after ``warmup``
    (``latency_ms``: one optimizer step on a batch), one inference (backbone and head, one sample),
    the mean loss of the first and last five steps, and the process's RSS. ``data``: a .npz whose
    samples (and labels) the steps train on, else random; ``state``: a .npz path for the weights
    after the steps (the same batches for a seed: compare two machines)."""
    if int(steps) < 1 or int(warmup) < 0:
        raise BoardError(f"steps must be >= 1 and warmup >= 0. Received steps={steps}, warmup={warmup}")
    report = progress or (lambda phase, done, total: None)
    harness._runtime()  # import LiteRT first: the footprint below is the model's, not the library's
    board_before = harness.board_facts()
    rss_before = harness._memory_mb()["rss"]
    t0 = time.perf_counter()
    learner = Learner(path, threads=threads, xnnpack=xnnpack)
    load_ms = (time.perf_counter() - t0) * 1000
    rss_loaded = harness._memory_mb()["rss"]
    rng = np.random.default_rng(seed)
    x, feats, t = _training_data(data, learner, rng)
    train = learner._run["train"]
    step_ms, losses = [], []
    for i in range(int(warmup) + int(steps)):
        report("train", i, int(warmup) + int(steps))
        idx = rng.integers(0, len(feats), learner.batch_size)
        s = time.perf_counter()
        losses.append(float(train(features=feats[idx], labels=t[idx])["loss"]))
        step_ms.append((time.perf_counter() - s) * 1000)
    report("inference", 0, int(steps))
    inference = harness.summarize_latency(_inference_ms(learner, x, feats, int(steps), seed))
    if state:
        np.savez(state, **learner.save())
    step = harness.summarize_latency(step_ms[int(warmup) :])
    return {
        "schema_version": harness.SCHEMA_VERSION,
        "mode": "learn",
        "model": str(path),
        "model_size_bytes": os.path.getsize(path),
        "backbone_size_bytes": os.path.getsize(learner.backbone_file) if learner.backbone_file else None,
        "batch_size": learner.batch_size,
        "runs": int(steps),
        "warmup": int(warmup),
        "threads": int(threads),
        "xnnpack": bool(xnnpack),
        "inputs": str(data) if data else "random",
        "latency_ms": step,  # one train step: what `edgekit bench --learn` compares
        "train_step_ms": step,
        "inference_ms": inference,
        "step_per_inference": step["p50"] / inference["p50"] if inference["p50"] > 0 else None,
        "startup_ms": {"load": load_ms, "first_invoke": step_ms[0]},
        "loss": {"first": float(np.mean(losses[:5])), "last": float(np.mean(losses[-5:]))},
        **harness.process_figures(board_before, harness.board_facts(), rss_before, rss_loaded),
    }


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="learner.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--runs", "--steps", dest="steps", type=int, default=50, help="timed train steps")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-xnnpack", dest="xnnpack", action="store_false", help="the backbone without XNNPACK")
    ap.add_argument("--inputs", "--data", dest="data", help="a .npz with x (and y): samples the model reads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true", help="progress lines on stderr, as the harness writes them")
    ap.add_argument("--json", help="write the figures here (default: stdout)")
    ap.add_argument("--state", help="write the weights after the steps to this .npz")
    args = ap.parse_args(argv)
    try:
        if np is None:
            raise BoardError(f"no numpy for this python ({sys.executable}): install numpy and ai-edge-litert", "numpy")
        result = measure(
            args.model, args.data, args.steps, args.warmup, args.seed, args.state, args.threads, args.xnnpack,
            harness.stderr_progress() if args.progress else None,
        )  # fmt: skip
    except BoardError as exc:
        print(json.dumps({"error": str(exc), "model": args.model, "missing": exc.missing}))
        return getattr(exc, "exit_code", 2)  # the harness's own error, run as a script, has none
    if args.json:
        with open(args.json, "w") as f:
            f.write(json.dumps(result, indent=2) + "\n")
    else:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
