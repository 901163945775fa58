"""Resource limits for reading files edgekit did not make (decompression bombs).

A small archive can unpack into gigabytes: a ``.keras`` zip member, a ``.npz`` array, an HDF5
dataset with a compression filter, an image whose header claims 30,000 × 30,000 pixels. edgekit
checks what a file *declares* (zip central directory, ``.npy`` header, HDF5 dataset shape, image
header) against these limits before it unpacks anything, the way Pillow's ``MAX_IMAGE_PIXELS``
does. Each error gives the figure and the environment variable that raises the limit:

- ``EDGEKIT_MAX_UNPACKED_MB`` (default 8192): the most bytes one archive member or array may
  unpack to;
- ``EDGEKIT_MAX_RATIO`` (default 100): the most a member of 16 MiB or more may expand over its
  stored size (weights compress about 1.1×, so far more than that is a bomb, not a model);
- ``EDGEKIT_MAX_IMAGE_PIXELS`` (default 89,478,485, Pillow's own limit): pixels of one image.

In Python, :func:`override` changes them for a block: ``with edgekit.core.limits.override(max_ratio=1000): ...``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace

RATIO_FLOOR_BYTES = 16 << 20  # below this, any compression ratio is harmless


def _env_number(name: str, default, kind=int):
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = kind(text)
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass(frozen=True)
class Limits:
    max_unpacked_bytes: int
    max_ratio: float
    max_image_pixels: int

    @classmethod
    def from_env(cls) -> "Limits":
        return cls(
            max_unpacked_bytes=_env_number("EDGEKIT_MAX_UNPACKED_MB", 8192) << 20,
            max_ratio=float(_env_number("EDGEKIT_MAX_RATIO", 100.0, float)),
            max_image_pixels=_env_number("EDGEKIT_MAX_IMAGE_PIXELS", 89_478_485),
        )


_current = [None]


def current() -> Limits:
    """The limits in force (the environment's, unless :func:`override` is active)."""
    return _current[0] or Limits.from_env()


@contextlib.contextmanager
def override(**changes):
    """Use other limits for the block (``max_unpacked_bytes``, ``max_ratio``, ``max_image_pixels``)."""
    saved = _current[0]
    _current[0] = replace(current(), **changes)
    try:
        yield _current[0]
    finally:
        _current[0] = saved


def check_unpacked(what: str, unpacked: int, stored: int) -> None:
    """An error when ``unpacked`` bytes (declared by the file) exceed the size limit, or when
    they are more than ``max_ratio`` times the ``stored`` bytes they come from."""
    from edgekit.core.errors import ResourceLimitError

    lim = current()
    if unpacked > lim.max_unpacked_bytes:
        raise ResourceLimitError(
            f"{what} unpacks to {unpacked:,} bytes, above the limit of {lim.max_unpacked_bytes:,}; "
            f"if you trust the file, raise it: EDGEKIT_MAX_UNPACKED_MB={unpacked // (1 << 20) + 1}"
        )
    if unpacked >= RATIO_FLOOR_BYTES and unpacked > lim.max_ratio * max(stored, 1):
        ratio = unpacked / max(stored, 1)
        raise ResourceLimitError(
            f"{what} unpacks to {unpacked:,} bytes from {stored:,} ({ratio:,.0f}× compression, above the "
            f"limit of {lim.max_ratio:g}×): a decompression bomb, not model data; if you trust the file, "
            f"raise the limit: EDGEKIT_MAX_RATIO={int(ratio) + 1}"
        )


def check_pixels(what: str, width: int, height: int) -> None:
    from edgekit.core.errors import ResourceLimitError

    lim = current()
    if int(width) * int(height) > lim.max_image_pixels:
        raise ResourceLimitError(
            f"{what} is {width:,} × {height:,} = {int(width) * int(height):,} pixels, above the limit of "
            f"{lim.max_image_pixels:,} (a decompression bomb?); if you trust the file, raise it: "
            f"EDGEKIT_MAX_IMAGE_PIXELS={int(width) * int(height)}"
        )
