"""Photo files -> ``[H, W, 3]`` uint8 RGB arrays, whatever the file holds.

* EXIF orientation is applied (a phone's portrait JPEG is stored sideways with a rotation tag).
* Grey-scale (``L``, ``I;16``, ``1``), palette (``P``), ``CMYK`` and ``YCbCr`` images are converted to RGB
  (a grey photo becomes three equal channels).
* Transparency (``RGBA``, ``LA``, palette transparency) is composited over mid-grey (128): the face
  networks were trained on opaque photos, and grey is the least informative background.
* Anything Pillow cannot read -- a missing path, a text file, a truncated JPEG -- raises
  :class:`PhotoError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["BACKGROUND_GREY", "PHOTO_SUFFIXES", "PhotoError", "list_photos", "load_photo"]

#: grey level transparent pixels are composited over
BACKGROUND_GREY = 128
#: file suffixes a folder of photos is searched for (case-insensitive)
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class PhotoError(ValueError):
    """A photo cannot be used; the message names the file (or face) and what to do."""


def load_photo(path: str | Path) -> np.ndarray:
    """Read ``path`` as ``[H, W, 3]`` uint8 RGB, upright (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise PhotoError(f"{path}: no such photo file")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            if has_alpha:
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (BACKGROUND_GREY,) * 3 + (255,))
                image = Image.alpha_composite(background, image)
            if image.mode == "I;16":  # 16-bit grey: keep the top 8 bits
                image = Image.fromarray((np.asarray(image, np.uint16) >> 8).astype(np.uint8))
            rgb = np.array(image.convert("RGB"), dtype=np.uint8)  # a writable copy
    except (UnidentifiedImageError, OSError) as err:
        raise PhotoError(f"{path}: not a readable image ({err})") from None
    if min(rgb.shape[:2]) < 8:
        raise PhotoError(
            f"{path}: the image is {rgb.shape[1]}x{rgb.shape[0]} pixels, too small to hold a face"
        )
    return np.ascontiguousarray(rgb)


def list_photos(path: str | Path) -> list[Path]:
    """One photo, or every photo in a folder (sorted by name; not recursive)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
        if not found:
            raise PhotoError(f"{path}: a folder without photos ({', '.join(PHOTO_SUFFIXES)})")
        return found
    if not path.exists():
        raise PhotoError(f"{path}: no such photo file or folder")
    return [path]
