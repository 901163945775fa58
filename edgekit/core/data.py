"""Data sets for training, calibration and verification (numpy only, no TensorFlow).

``DATA`` on the command line is ``digits`` (scikit-learn's 1,797 real 8x8 handwritten digits,
embedded in the scikit-learn wheel, resized here to 32x32x1 in [0, 1] with a fixed held-out test
split), the path of a ``.npz`` file holding either ``x`` (and optionally ``y``) or
``x_train``/``y_train``/``x_test``/``y_test``, or a directory of images (PNG/JPEG/BMP/GIF, decoded
with TensorFlow, resized to the model's input and scaled to [0, 1]).

For calibration the Python API also takes a numpy array, a :class:`Dataset`, a ``tf.data``
dataset or any iterable / generator function of samples or batches (``(x, y)`` pairs use ``x``):
see :func:`calibration_samples`.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from edgekit.core.errors import InputError
from edgekit.core.io import write_atomic
from edgekit.device.board.harness import one_hot_rows, real_valued

DIGITS_SIZE = 32
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """Arrays of one data set. ``y_*`` are integer class ids, real-valued targets (float32), or None
    when there are no labels."""

    name: str
    x_train: np.ndarray
    y_train: Optional[np.ndarray]
    x_test: np.ndarray
    y_test: Optional[np.ndarray]

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    @property
    def has_labels(self) -> bool:
        return self.y_test is not None

    def save_test_npz(self, path: str) -> str:
        """Write the test split as ``x`` (and ``y``) to ``path``: the harness' input format."""
        arrays = {"x": self.x_test}
        if self.y_test is not None:
            arrays["y"] = self.y_test
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_atomic(path, buffer.getvalue())
        return path


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a batch of square single-channel images (N, H, W) to (N, size, size), bilinear
    with half-pixel centres (as ``tf.image.resize``), as two matrix products."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        centres = np.clip(centres, 0, n_in - 1)
        lo = np.floor(centres).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = centres - lo
        w = np.zeros((n_out, n_in))
        w[np.arange(n_out), lo] += 1 - frac
        w[np.arange(n_out), hi] += frac
        return w

    rows = weights(images.shape[1], size)
    cols = weights(images.shape[2], size)
    return np.einsum("oh,nhw,pw->nop", rows, images, cols)


def digits(size: int = DIGITS_SIZE) -> Dataset:
    """scikit-learn's digits as (N, size, size, 1) float32 in [0, 1], with a fixed stratified
    80/20 split (1,437 train, 360 test)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    images = resize_bilinear(raw.images.astype(np.float64) / 16.0, size)
    x = np.clip(images, 0.0, 1.0).astype(np.float32)[..., None]
    y = raw.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=y
    )
    return Dataset("digits", x_train, y_train, x_test, y_test)


def python_source(vocab: int = 512, context: int = 32, max_tokens: int = 300_000, test_every: int = 10) -> Dataset:
    """A real text corpus available offline: the Python standard library's own top-level
    modules (sorted by name), split into tokens (words, numbers, single punctuation marks),
    the ``vocab - 1`` most frequent of the train files numbered 1…, everything else 0
    (unknown). Windows of ``context`` tokens, ``y`` the same window shifted by one (next-token
    targets); every ``test_every``-th file is held out for the test split."""
    import re
    import sysconfig
    from collections import Counter

    if vocab < 2 or context < 1 or max_tokens < 2 * (context + 1):
        raise InputError(
            f"python_source needs vocab >= 2, context >= 1 and max_tokens >= 2*(context+1); "
            f"received vocab={vocab}, context={context}, max_tokens={max_tokens}"
        )
    root = sysconfig.get_paths()["stdlib"]
    files = sorted(f for f in os.listdir(root) if f.endswith(".py"))
    word = re.compile(r"[A-Za-z_]\w*|\d+|[^\w\s]")
    train, test, total = [], [], 0
    for i, name in enumerate(files):
        with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
            tokens = word.findall(f.read())
        (test if i % test_every == test_every - 1 else train).append(tokens)
        total += len(tokens)
        if total >= max_tokens:
            break
    counts = Counter(t for doc in train for t in doc)
    ids = {t: i + 1 for i, (t, _) in enumerate(counts.most_common(vocab - 1))}

    def windows(docs):
        stream = np.array([ids.get(t, 0) for doc in docs for t in doc], dtype=np.int32)
        n = (len(stream) - 1) // context
        x = stream[: n * context].reshape(n, context)
        y = stream[1 : n * context + 1].reshape(n, context)
        return x, y.astype(np.int64)

    x_train, y_train = windows(train)
    x_test, y_test = windows(test)
    if len(x_test) == 0:
        raise InputError(f"python_source: max_tokens={max_tokens} leaves no test file; raise it")
    return Dataset("python-source", x_train, y_train, x_test, y_test)


def _labels(y: Optional[np.ndarray], n: int, key: str, path: str) -> Optional[np.ndarray]:
    """Labels as the verbs take them: class ids (int64; rows of one-hot or probabilities become
    their top class), or real-valued targets (float32) for regression; one row per sample."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != n:
        raise InputError(
            f"{path}: '{key}' must hold one label or target per sample ({n}), received shape {tuple(np.shape(y))}"
        )
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == bool):
        raise InputError(f"{path}: '{key}' must be numeric (class ids or targets), received dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        return y.astype(np.int64)
    if not np.all(np.isfinite(y)):
        raise InputError(f"{path}: '{key}' holds NaN or infinite values")
    if one_hot_rows(y):
        return y.argmax(axis=1)
    return y.astype(np.float32) if real_valued(y) else y.astype(np.int64)


def _features(x: np.ndarray, key: str, path: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise InputError(f"{path}: '{key}' must be a non-empty batch (N, ...) of samples, received shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InputError(f"{path}: '{key}' must be numeric, received dtype {x.dtype}")
    return x


NPZ_KEYS = ("x", "y", "x_train", "y_train", "x_test", "y_test")


def _npy_header(f):
    """(shape, dtype) from a .npy header (format versions 1, 2 and 3), without reading the data."""
    from numpy.lib import format as npformat

    version = npformat.read_magic(f)
    read = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
    shape, _, dtype = read(f)
    return tuple(int(d) for d in shape), np.dtype(dtype)


def check_npz(path: str) -> None:
    """Check a ``.npz`` file from its zip directory and ``.npy`` headers, before any array is
    read: a zip of numeric arrays (no pickled Python objects), each holding the bytes its header
    declares, within :mod:`edgekit.core.limits` (decompression bombs)."""
    import math

    from edgekit.core import limits

    if os.path.isdir(path):
        raise InputError(f"{path} is a directory, not a .npz file")
    if not os.path.isfile(path):
        raise InputError(f"data file not found: {path} (expected 'digits' or a .npz file)")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise InputError(
            f"cannot read {path}: not a .npz file (a zip archive of .npy arrays, as numpy.savez writes it)"
        ) from None
    with zf:
        for info in zf.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else None
            if key not in NPZ_KEYS:
                continue
            what = f"{path}: array '{key}'"
            limits.check_unpacked(what, info.file_size, info.compress_size)
            try:
                with zf.open(info) as f:
                    shape, dtype = _npy_header(f)
                    header = f.tell()
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise InputError(f"{what} is corrupt: {_first_line(exc)}") from None
            if dtype.hasobject:
                raise InputError(
                    f"{what} holds Python objects, which reading would unpickle; edgekit reads "
                    f"numeric arrays only: save numbers (e.g. x.astype('float32'))"
                )
            declared = math.prod(shape) * dtype.itemsize
            if declared != info.file_size - header:
                raise InputError(
                    f"{what} is corrupt: its header declares shape {shape} of {dtype} "
                    f"({declared:,} bytes) but it holds {info.file_size - header:,} bytes"
                )


def load_npz(path: str) -> Dataset:
    """Read ``x``/``y`` or ``x_train``/``y_train``/``x_test``/``y_test`` from a ``.npz`` file
    (checked first with :func:`check_npz`).

    With only ``x``, the same samples serve for calibration and verification."""
    check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k in NPZ_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"cannot read {path} as a .npz file: {_first_line(exc)}") from None
    name = os.path.basename(path)
    if "x_train" in arrays and "x_test" in arrays:
        x_train = _features(arrays["x_train"], "x_train", path)
        x_test = _features(arrays["x_test"], "x_test", path)
        if x_train.shape[1:] != x_test.shape[1:]:
            raise InputError(
                f"{path}: x_train samples {x_train.shape[1:]} and x_test samples {x_test.shape[1:]} differ in shape"
            )
        y_train = _labels(arrays.get("y_train"), len(x_train), "y_train", path)
        y_test = _labels(arrays.get("y_test"), len(x_test), "y_test", path)
        return Dataset(name, x_train, y_train, x_test, y_test)
    if "x" in arrays:
        x = _features(arrays["x"], "x", path)
        y = _labels(arrays.get("y"), len(x), "y", path)
        return Dataset(name, x, y, x, y)
    with zipfile.ZipFile(path) as zf:
        held = sorted(n[:-4] if n.endswith(".npy") else n for n in zf.namelist())
    raise InputError(
        f"{path} holds {held or 'no arrays'}; expected 'x' (and 'y') or 'x_train', 'y_train', 'x_test', 'y_test'"
    )


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _image_files(path: str):
    files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise InputError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [os.path.join(path, f) for f in files]


def _open_image(path: str):
    """A lazily decoded Pillow image, its size checked against :mod:`edgekit.core.limits` from the
    header before any pixel is decoded."""
    from PIL import Image

    from edgekit.core import limits

    Image.MAX_IMAGE_PIXELS = None  # edgekit.core.limits checks instead, with its own message
    try:
        img = Image.open(path)
    except Exception as exc:  # Pillow raises many types for a corrupt or mis-named file
        raise InputError(f"cannot decode {path} as an image: {_first_line(exc)}") from None
    try:
        limits.check_pixels(path, img.width, img.height)
    except BaseException:
        img.close()
        raise
    return img


def load_image_dir(path: str, input_shape: Sequence[int]) -> Dataset:
    """Every image in directory ``path`` (sorted by name), decoded (the first frame of an
    animation), resized (bilinear) to the height and width of ``input_shape`` (H, W, C),
    converted to C channels and scaled to [0, 1]. No labels. Each image's size is checked from
    its header first (:mod:`edgekit.core.limits`)."""
    files = _image_files(path)
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3) or None in input_shape:
        raise InputError(
            f"a directory of images needs a model with a (H, W, 1|3) input; this model's input is {tuple(input_shape)}"
        )
    from edgekit.core.compat import tf

    h, w, c = (int(d) for d in input_shape)
    images = []
    for name in files:
        img = _open_image(name)
        try:
            pixels = np.asarray(img.convert("L" if c == 1 else "RGB"), dtype=np.float32)
        except Exception as exc:  # truncated or corrupt image data
            raise InputError(f"cannot decode {name} as an image: {_first_line(exc)}") from None
        finally:
            img.close()
        pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], c) / 255.0
        images.append(tf.image.resize(pixels, (h, w)).numpy())
    x = np.stack(images).astype(np.float32)
    return Dataset(os.path.basename(os.path.normpath(path)), x, None, x, None)


def check_data_spec(spec: str) -> None:
    """Check a ``DATA`` argument before any long work: a known name, a ``.npz`` (headers and
    limits, :func:`check_npz`) or a directory of images (each image's size from its header)."""
    if spec in ("digits", "python-source"):
        return
    if os.path.isdir(spec):
        for name in _image_files(spec):
            _open_image(name).close()
        return
    if not spec.endswith(".npz"):
        raise InputError(
            f"unknown data '{spec}': expected 'digits', 'python-source', a path ending in .npz or a directory of images"
        )
    check_npz(spec)


def load_data(spec: str, input_shape: Optional[Sequence[int]] = None) -> Dataset:
    """``digits``, the path of a ``.npz`` file, or a directory of images (which needs the
    model's ``input_shape`` to resize to)."""
    if spec == "digits":
        return digits()
    if spec == "python-source":
        return python_source()
    if os.path.isdir(spec):
        if input_shape is None:
            raise InputError(f"{spec} is a directory; images need the model's input shape to resize to")
        return load_image_dir(spec, input_shape)
    if not spec.endswith(".npz"):
        raise InputError(
            f"unknown data '{spec}': expected 'digits', 'python-source', a path ending in .npz or a directory of images"
        )
    return load_npz(spec)


def _stream_batches(source, input_shape: Sequence[int], n: int):
    """Arrays of samples from a tf.data dataset, an iterable or a generator function, until
    ``n`` samples; each element is one sample or a batch, or an ``(x, y)`` pair."""
    if callable(source) and not hasattr(source, "__iter__"):
        source = source()
    if hasattr(source, "as_numpy_iterator"):
        source = source.as_numpy_iterator()
    rank = len(input_shape)
    got = 0
    try:
        iterator = iter(source)
    except TypeError:
        raise InputError(
            f"calibration data must be 'digits', a .npz path, an image directory, an array, a "
            f"Dataset, a tf.data dataset or an iterable of samples; received {type(source).__name__}"
        ) from None
    for element in iterator:
        if isinstance(element, (tuple, list)) and element:
            element = element[0]
        if isinstance(element, dict):
            raise InputError("calibration elements must be arrays or (x, y) pairs, received a dict")
        x = np.asarray(element)
        if x.ndim <= rank:  # one sample (a batch has one more axis than the model input)
            x = x[None]
        yield x
        got += len(x)
        if got >= n:
            return


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


def sample_indices(total: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` of ``total`` rows drawn without replacement with ``seed`` (all rows
    when ``total <= n``)."""
    if total <= n:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def calibration_samples(source, input_shape: Sequence[int], n: int, seed: int = 0, dtype="float32"):
    """``n`` samples (of ``dtype``, checked against ``input_shape``) from any calibration source,
    and a dict describing them (``source``, ``samples``, ``seed``, ``selection``).

    Arrays, Datasets and files are sampled without replacement with ``seed``; streams (tf.data,
    iterables, generators) give their first ``n`` samples."""
    if n < 1:
        raise InputError("{calib_samples} must be >= 1; received {value}", params="calib_samples", value=n)
    if isinstance(source, str):
        label, source = source, load_data(source, input_shape)
    else:
        label = type(source).__name__
    if isinstance(source, Dataset):
        label = source.name if label == "Dataset" else label
        source = source.x_train
    if isinstance(source, np.ndarray):
        x, selection = source, "random"
    else:
        batches = list(_stream_batches(source, input_shape, n))
        if not batches:
            raise InputError("the calibration data is empty: the dataset or generator gave no samples")
        try:
            x = np.concatenate(batches)[:n]
        except ValueError:
            raise InputError(
                f"calibration samples differ in shape ({sorted({b.shape[1:] for b in batches})}); "
                f"every sample must match the model input {tuple(input_shape)}"
            ) from None
        selection = "first"
    if len(x) == 0:
        raise InputError("the calibration data is empty (0 samples)")
    x = fit_to_input(x, input_shape, "calibration data", dtype)
    if selection == "random":
        x = x[sample_indices(len(x), n, seed)]
    return x, {"source": label, "samples": int(len(x)), "seed": seed, "selection": selection}


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
