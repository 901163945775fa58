"""Data sets for training, calibration and verification (numpy only, no TensorFlow).

``DATA`` on the command line is ``digits`` (scikit-learn's 1,797 real 8x8 handwritten digits,
embedded in the scikit-learn wheel, resized here to 32x32x1 in [0, 1] with a fixed held-out test
split), the path of a ``.npz`` file holding either ``x`` (and optionally ``y``) or
``x_train``/``y_train``/``x_test``/``y_test`` — for a model with several inputs or outputs, arrays
named after them (:func:`load_npz`) — or a directory of images (PNG/JPEG/BMP/GIF, decoded with
TensorFlow, resized to the model's input and scaled to [0, 1]).

For calibration the Python API also takes arrays, a :class:`Dataset`, a ``tf.data`` dataset or any
iterable / generator function of samples or batches: see
:func:`edgekit.core.samples.calibration_samples`.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from edgekit.core.errors import InputError
from edgekit.core.io import write_atomic
from edgekit.device.board.harness import one_hot_rows, real_valued

DIGITS_SIZE = 32
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """Arrays of one data set. ``x_*``: an array, or a dict of arrays by input name for a model with
    several inputs. ``y_*``: integer class ids, real-valued targets (float32), a dict of those by
    output name for several outputs, or None when there are no labels."""

    name: str
    x_train: Union[np.ndarray, dict]
    y_train: Union[np.ndarray, dict, None]
    x_test: Union[np.ndarray, dict]
    y_test: Union[np.ndarray, dict, None]

    @property
    def input_shape(self):
        """The sample shape, or a dict of them by input name."""
        if isinstance(self.x_train, dict):
            return {k: tuple(v.shape[1:]) for k, v in self.x_train.items()}
        return tuple(self.x_train.shape[1:])

    @property
    def has_labels(self) -> bool:
        return self.y_test is not None

    def save_test_npz(self, path: str) -> str:
        """Write the test split to ``path`` as ``x`` (and ``y``), or arrays named after the inputs (and
        outputs): the harness' input format."""
        arrays = dict(self.x_test) if isinstance(self.x_test, dict) else {"x": self.x_test}
        if isinstance(self.y_test, dict):
            arrays.update(self.y_test)
        elif self.y_test is not None:
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
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[:-4]
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


def _split(arrays: dict, key: str, path: str, read):
    """(train, test) of ``key``: ``key_train`` and ``key_test``, or ``key`` for both; None if absent."""
    if f"{key}_train" in arrays and f"{key}_test" in arrays:
        return read(arrays[f"{key}_train"], f"{key}_train"), read(arrays[f"{key}_test"], f"{key}_test")
    if key in arrays:
        return (read(arrays[key], key),) * 2
    return None


def _grouped(arrays: dict, keys: Sequence[str], path: str, read) -> Optional[tuple]:
    """(train, test) of several keys as dicts by key (those present), or None when none is."""
    found = {k: v for k in keys if (v := _split(arrays, k, path, read)) is not None}
    if not found:
        return None
    return {k: v[0] for k, v in found.items()}, {k: v[1] for k, v in found.items()}


def load_npz(path: str, inputs: Sequence[str] = (), outputs: Sequence[str] = ()) -> Dataset:
    """Read a ``.npz`` file (checked first with :func:`check_npz`): samples in ``x`` (and labels in
    ``y``), or — for a model whose ``inputs`` and ``outputs`` are named — arrays named after each
    input (and output); ``NAME_train``/``NAME_test`` pairs split any of them (``x_train``/``x_test``).

    With only ``x`` (or only the unsplit names), the same samples serve for calibration and
    verification."""
    check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"cannot read {path} as a .npz file: {_first_line(exc)}") from None
    features = lambda a, k: _features(a, k, path)  # noqa: E731
    several = len(inputs) > 1
    xs = None if several else _split(arrays, "x", path, features)
    if xs is None:
        xs = _grouped(arrays, inputs, path, features)
        if xs is not None and len(xs[0]) < len(inputs):
            missing = ", ".join(n for n in inputs if n not in xs[0])
            raise InputError(f"{path} has no array for input(s) {missing}; name one array after each model input")
        if xs is not None and not several:
            xs = tuple(v[inputs[0]] for v in xs)
    if xs is None:
        names = ", ".join(f"'{n}'" for n in inputs) if several else "'x'"
        raise InputError(
            f"{path} holds {sorted(arrays) or 'no arrays'}; expected {names} (and labels), or the same names with "
            f"_train and _test"
        )
    n_train, n_test = (len(next(iter(x.values()))) if isinstance(x, dict) else len(x) for x in xs)
    shapes = [{k: v.shape[1:] for k, v in x.items()} if isinstance(x, dict) else x.shape[1:] for x in xs]
    if shapes[0] != shapes[1]:
        raise InputError(f"{path}: the train samples {shapes[0]} and the test samples {shapes[1]} differ in shape")
    ys, keyed = None, lambda a, k: (a, k)  # each label array with the key it was read from, for messages
    if len(outputs) > 1:
        ys = _grouped(arrays, outputs, path, keyed)
    elif (found := _split(arrays, "y", path, keyed)) is not None or outputs:
        ys = found if found is not None else _split(arrays, outputs[0], path, keyed)
    label = lambda y, n: _labels(y[0], n, y[1], path)  # noqa: E731
    if isinstance(ys, tuple) and isinstance(ys[0], dict):
        ys = tuple({k: label(v, n) for k, v in y.items()} for y, n in zip(ys, (n_train, n_test)))
    elif ys is not None:
        ys = label(ys[0], n_train), label(ys[1], n_test)
    y_train, y_test = ys if ys is not None else (None, None)
    return Dataset(os.path.basename(path), xs[0], y_train, xs[1], y_test)


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


def load_data(spec: str, input_shape=None, inputs: Sequence[str] = (), outputs: Sequence[str] = ()) -> Dataset:
    """``digits``, the path of a ``.npz`` file (arrays named after the model's ``inputs`` and
    ``outputs`` where it has several, :func:`load_npz`), or a directory of images (which needs the
    model's ``input_shape`` to resize to)."""
    if spec == "digits":
        return digits()
    if spec == "python-source":
        return python_source()
    if os.path.isdir(spec):
        if input_shape is None or len(inputs) > 1:
            raise InputError(f"{spec} is a directory; images need a one-input model whose input shape they resize to")
        return load_image_dir(spec, input_shape)
    if not spec.endswith(".npz"):
        raise InputError(
            f"unknown data '{spec}': expected 'digits', 'python-source', a path ending in .npz or a directory of images"
        )
    return load_npz(spec, inputs, outputs)


def load_for(spec: str, model) -> Dataset:
    """:func:`load_data` for ``model`` (a Keras model or a SavedModel graph): its input shape,
    input and output names."""
    from edgekit.core.samples import input_specs, output_names

    specs = input_specs(model)
    shape = specs[0].shape if len(specs) == 1 else None
    return load_data(spec, shape, [s.name for s in specs], output_names(model))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
