"""Images as data: a table's image column (file paths), a folder in the usual layout, and decoding.

An image column holds file paths; relative ones are read against the table's folder. ``load_task`` checks
every file once (it exists, and its header and, for PNG, its checksums read), so a missing or broken image is one
``DataError`` line before anything runs. A deployed model takes paths, encoded bytes or uint8 arrays
(H x W grayscale, H x W x 3 RGB, H x W x 4 RGBA) of any size: ``decode`` turns each into the R x R pixels a
candidate reads, squeezed to a square (the aspect ratio is not kept) by PIL's bilinear filter, which averages
over the whole footprint when it shrinks (no aliasing). Decoding is part of every image model's measured cost.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes with a single intensity channel


def batch_size(resolution: int) -> int:
    """Images decoded and run at a time: as many pixels as 64 images of 64 x 64 (5 at 224 px, 256 at 32), so that
    a network's activations stay at a few hundred MB whatever the resolution (at 224 px, 64 images took GBs)."""
    return max(4, min(256, 2**18 // (resolution * resolution)))


def _pil():
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib, a core dependency: only a broken install lacks it
        raise DataError("reading images needs Pillow; install with pip install pillow") from None
    return Image


def read_folder(folder: Path) -> pd.DataFrame:
    """``DIR/label/*.png|jpg|...`` -> a table with columns ``image`` (absolute paths) and ``label``."""
    rows = [(str(f.resolve()), sub.name) for sub in sorted(p for p in folder.iterdir() if p.is_dir())
            for f in sorted(sub.iterdir()) if f.suffix.lower() in SUFFIXES]
    if not rows:
        raise DataError(f"folder {folder} holds no images in the layout DIR/label/*.png (or .jpg, .bmp, .tif, "
                        ".webp); give a table with an image column (--image COL) instead")
    labels = sorted({label for _, label in rows})
    if len(labels) < 2:
        raise DataError(f"folder {folder} has images of a single class ({labels[0]!r}); a classifier needs at least "
                        "two class folders")
    return pd.DataFrame(rows, columns=["image", "label"])


def image_paths(col: pd.Series, name: str, base: Path | None) -> tuple[np.ndarray, int]:
    """An image column's values as absolute paths, each file checked -> (paths, channels: 1 when every image is
    grayscale, else 3). ``base``: the folder relative paths are read against (None: the working directory)."""
    Image = _pil()
    paths, gray = np.empty(len(col), dtype=object), True
    for i, value in enumerate(col.to_numpy()):
        if not isinstance(value, str) or not value.strip():
            shown = value.item() if isinstance(value, np.generic) else value
            raise DataError(f"image column {name!r} holds {shown!r} in row {i + 1}, not a file path")
        path = Path(value)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise DataError(f"image file {value} (column {name!r}, row {i + 1}) not found")
        try:
            with Image.open(path) as im:
                gray &= im.mode in GRAY_MODES
                im.verify()
        except Exception as exc:  # PIL raises many types for a file it cannot read
            raise DataError(f"cannot read image {value} (column {name!r}, row {i + 1}): "
                            f"{str(exc).splitlines()[0][:120] or type(exc).__name__}") from None
        paths[i] = str(path.resolve())
    return paths, 1 if gray else 3


def decode(values, resolution: int, channels: int) -> np.ndarray:
    """Images (paths, encoded bytes or uint8 arrays) -> (n, channels, resolution, resolution) float32, 0..255."""
    Image = _pil()
    mode = "L" if channels == 1 else "RGB"
    values = list(np.asarray(values, dtype=object).reshape(-1)) if not isinstance(values, list) else values
    out = np.empty((len(values), channels, resolution, resolution), dtype=np.float32)
    for i, value in enumerate(values):
        try:
            im = _open(Image, value)
            with im:
                small = im.convert(mode).resize((resolution, resolution), Image.Resampling.BILINEAR)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"cannot read image {_shown(value)} (row {i + 1}): "
                            f"{str(exc).splitlines()[0][:120] or type(exc).__name__}") from None
        pixels = np.asarray(small, dtype=np.float32)
        out[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    return out


def _open(Image, value):
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim not in (2, 3) or (value.ndim == 3 and value.shape[2] not in (3, 4)):
            raise DataError(f"an image array must be uint8, H x W or H x W x 3 (or 4); got {value.dtype} "
                            f"{value.shape}")
        return Image.fromarray(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(value)))
    if isinstance(value, (str, Path)):
        if not Path(value).is_file():
            raise DataError(f"image file {value} not found")
        return Image.open(value)
    raise DataError(f"an image must be a file path, encoded bytes or a uint8 array, not {type(value).__name__}")


def _shown(value) -> str:
    return str(value) if isinstance(value, (str, Path)) else f"<{type(value).__name__}>"
