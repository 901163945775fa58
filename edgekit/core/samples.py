"""Samples as a model takes them (numpy only): checked against its inputs, sampled, paired with
labels.

A model with one input takes an array (N, ...); a model with several takes a dict of arrays by
input name (a list or tuple in the inputs' order works too), every array holding the same N rows.
:func:`input_specs` reads a model's inputs, :func:`fit_inputs` checks samples against them,
:func:`calibration_samples` draws calibration samples from any source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgekit.core.errors import InputError


@dataclass(frozen=True)
class InputSpec:
    """One model input: its ``name``, sample ``shape`` (no batch axis; None for a free axis) and
    numpy ``dtype`` name."""

    name: str
    shape: tuple
    dtype: str


def _tensor_name(t) -> str:
    return str(getattr(t, "name", "") or "").split(":")[0]


def input_specs(model) -> list:
    """The :class:`InputSpec` of each input of ``model`` (a Keras model or anything with ``inputs``
    tensors), in order; names from ``model.input_names`` where the model has them."""
    names = list(getattr(model, "input_names", None) or [_tensor_name(t) for t in model.inputs])
    return [
        InputSpec(name, tuple(t.shape[1:]), np.dtype(getattr(t.dtype, "as_numpy_dtype", t.dtype)).name)
        for name, t in zip(names, model.inputs)
    ]


def output_names(model) -> list:
    """The names of ``model``'s outputs, in order (Keras's ``output_names`` where it has them)."""
    return list(getattr(model, "output_names", None) or [_tensor_name(t) for t in model.outputs])


def rows(x) -> int:
    """Samples in ``x``: an array, or a dict of arrays (one per input)."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take(x, idx):
    """Rows ``idx`` of an array or of each array of a dict."""
    return {k: np.asarray(v)[idx] for k, v in x.items()} if isinstance(x, dict) else np.asarray(x)[idx]


def _by_name(x, specs: Sequence[InputSpec], what: str) -> dict:
    """Samples of a several-input model as {input name: array}, from a dict or a list/tuple."""
    names = [s.name for s in specs]
    if isinstance(x, dict):
        missing = [n for n in names if n not in x]
        if missing:
            raise InputError(
                f"{what} has no array for input(s) {', '.join(missing)}; the model's inputs are {', '.join(names)} "
                f"(received {', '.join(map(str, x)) or 'none'})"
            )
        return {n: x[n] for n in names}
    if isinstance(x, (list, tuple)) and len(x) == len(names):
        return dict(zip(names, x))
    raise InputError(
        f"the model takes {len(names)} inputs ({', '.join(names)}); {what} must hold one array per input: a dict "
        f"by name, a list in that order, or a .npz with arrays named after them"
    )


def fit_inputs(x, specs: Sequence[InputSpec], what: str):
    """Samples ``x`` checked against the model inputs ``specs`` (:func:`fit_to_input` each): an
    array for a one-input model (a dict holding only that input works too), a dict by input name
    for several, every input with the same number of samples."""
    if len(specs) == 1:
        s = specs[0]
        if isinstance(x, dict):
            x = _by_name(x, specs, what)[s.name]
        return fit_to_input(x, s.shape, what, s.dtype)
    fitted = {
        s.name: fit_to_input(v, s.shape, f"{what} '{s.name}'", s.dtype)
        for s, v in zip(specs, _by_name(x, specs, what).values())
    }
    counts = {k: len(v) for k, v in fitted.items()}
    if len(set(counts.values())) > 1:
        raise InputError(
            f"{what}: the inputs hold different numbers of samples ({counts}); give one row per sample in each"
        )
    return fitted


def _stream_batches(source, specs: Sequence[InputSpec], n: int):
    """Batches of samples (arrays, or dicts for several inputs) from a tf.data dataset, an iterable
    or a generator function, until ``n`` samples; each element is one sample or a batch, or an
    ``(x, y)`` pair."""
    if callable(source) and not hasattr(source, "__iter__"):
        source = source()
    if hasattr(source, "as_numpy_iterator"):
        source = source.as_numpy_iterator()
    got = 0
    try:
        iterator = iter(source)
    except TypeError:
        raise InputError(
            f"calibration data must be 'digits', a .npz path, an image directory, an array, a "
            f"Dataset, a tf.data dataset or an iterable of samples; received {type(source).__name__}"
        ) from None
    for element in iterator:
        several = len(specs) > 1
        if (
            isinstance(element, (tuple, list))
            and element
            and (not several or len(element) == 2 and not _is_sample_list(element, specs))
        ):
            element = element[0]  # an (x, y) pair
        if isinstance(element, dict) and not several:
            element = _by_name(element, specs, "a calibration element")[specs[0].name]
        parts = _by_name(element, specs, "a calibration element") if several else {"": element}
        batch = {}
        for spec, (key, value) in zip(specs, parts.items()):
            value = np.asarray(value)
            batch[key] = value[None] if value.ndim <= len(spec.shape) else value  # one sample: add the batch axis
        yield batch if several else batch[""]
        got += rows(batch)
        if got >= n:
            return


def _is_sample_list(element, specs) -> bool:
    """Whether a 2-element list is the two inputs of a 2-input model (not an (x, y) pair, whose
    first element holds the inputs: a dict, list or tuple)."""
    first = element[0]
    if len(specs) != 2 or isinstance(first, (dict, list, tuple)):
        return False
    return np.ndim(first) >= len(specs[0].shape)


def _concat(batches: list, specs: Sequence[InputSpec], n: int):
    try:
        if isinstance(batches[0], dict):
            return {k: np.concatenate([b[k] for b in batches])[:n] for k in batches[0]}
        return np.concatenate(batches)[:n]
    except ValueError:
        raise InputError(
            f"calibration samples differ in shape; every sample must match the model input(s) "
            f"{', '.join(str(s.shape) for s in specs)}"
        ) from None


def sample_indices(total: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` of ``total`` rows drawn without replacement with ``seed`` (all rows
    when ``total <= n``)."""
    if total <= n:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def calibration_samples(source, specs: Sequence[InputSpec], n: int, seed: int = 0):
    """``n`` samples (checked against the model inputs ``specs``, :func:`fit_inputs`) from any
    calibration source, and a dict describing them (``source``, ``samples``, ``seed``,
    ``selection``).

    Arrays (a dict of them for several inputs), Datasets and files are sampled without replacement
    with ``seed``; streams (tf.data, iterables, generators) give their first ``n`` samples."""
    from edgekit.core.data import Dataset, load_data

    if n < 1:
        raise InputError("{calib_samples} must be >= 1; received {value}", params="calib_samples", value=n)
    if isinstance(source, str):
        label, source = source, load_data(source, specs[0].shape if len(specs) == 1 else None, [s.name for s in specs])
    else:
        label = "arrays" if isinstance(source, (dict, list, tuple)) else type(source).__name__
    if isinstance(source, Dataset):
        label = source.name if label == "Dataset" else label
        source = source.x_train
    if isinstance(source, np.ndarray) or (isinstance(source, (dict, list, tuple)) and len(specs) > 1):
        x, selection = source, "random"
    else:
        batches = list(_stream_batches(source, specs, n))
        if not batches:
            raise InputError("the calibration data is empty: the dataset or generator gave no samples")
        x, selection = _concat(batches, specs, n), "first"
    x = fit_inputs(x, specs, "calibration data")
    if rows(x) == 0:
        raise InputError("the calibration data is empty (0 samples)")
    if selection == "random":
        x = take(x, sample_indices(rows(x), n, seed))
    return x, {"source": label, "samples": int(rows(x)), "seed": seed, "selection": selection}


def fit_to_input(x: np.ndarray, input_shape: Sequence[int], what: str, dtype="float32") -> np.ndarray:
    """Check that samples ``x`` (N, ...) fit a model input of ``input_shape`` (no batch axis)
    and ``dtype``, and return them as that dtype (float32 by default; token ids of an integer
    input must be whole numbers). A missing trailing channel axis of size 1 is added."""
    expected = tuple(int(d) if d is not None else -1 for d in input_shape)
    x = np.asarray(x)
    received = x.shape
    sample = tuple(x.shape[1:])
    if len(sample) + 1 == len(expected) and expected[-1] == 1:
        x = x[..., None]
        sample = sample + (1,)
    fits = len(sample) == len(expected) and all(e in (-1, s) for e, s in zip(expected, sample))
    if not fits:
        want = "(N, " + ", ".join("?" if e == -1 else str(e) for e in expected) + ")"
        raise InputError(
            f"{what} has shape {received}; the model expects {want}. Pass data that matches the model's input"
        )
    if not np.issubdtype(x.dtype, np.number):
        raise InputError(f"{what} has dtype {x.dtype}; the model expects numbers ({np.dtype(dtype).name})")
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise InputError(f"{what} holds {bad} NaN or infinite values; clean the data first")
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        if not np.issubdtype(x.dtype, np.integer) and np.any(x != np.round(x)):
            raise InputError(
                f"{what} holds fractional values; the model's input is {dtype.name} "
                f"(token ids, indices): pass whole numbers"
            )
        info = np.iinfo(dtype)
        if x.size and (x.min() < info.min or x.max() > info.max):
            raise InputError(
                f"{what} holds values from {x.min():g} to {x.max():g}, outside the range of the "
                f"model's {dtype.name} input [{info.min}, {info.max}]"
            )
        return x.astype(dtype, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        out = x.astype(dtype, copy=False)
    if not np.all(np.isfinite(out)):
        big = float(np.max(np.abs(x.astype(np.float64))))
        raise InputError(
            f"{what} holds values up to {big:g}, beyond the range of the model's {dtype.name} "
            f"input (±{float(np.finfo(dtype).max):.3g}); scale the data first"
        )
    return out


def validation_pair(validation_data):
    """(x, y) of a Keras-style ``validation_data``: a tuple (x, y), (x,) or x alone (no labels)."""
    if validation_data is None:
        return None, None
    if isinstance(validation_data, (tuple, list)):
        if len(validation_data) not in (1, 2):
            raise InputError(
                "{validation_data} must be (x, y), (x,) or x; received a sequence of {n}",
                params="validation_data",
                n=len(validation_data),
            )
        return validation_data[0], validation_data[1] if len(validation_data) == 2 else None
    return validation_data, None
