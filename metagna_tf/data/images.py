"""Image decoding shared by every data source and by predict: one conversion path.

An image becomes ``uint8 [size, size, channels]`` where ``value / 255`` is the
model input. ``invert`` (Omniglot) turns black strokes on white into strokes
as 1 on 0.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm")


class ImageError(ValueError):
    """An image file that cannot be read; the message names the file."""


def to_model_array(image: Image.Image, size: int, channels: int, invert: bool = False) -> np.ndarray:
    """Any PIL image (any mode: 1, L, P, RGB, RGBA, CMYK, I;16, ...) as uint8 (size, size, C)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit integer greyscale: rescale to 8 bits from the image's own range
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        image = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        top = max(float(arr.max()), 1.0) if arr.max() > 1 else 1.0
        image = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(image, dtype=np.uint8)
    if channels == 1:
        arr = arr[:, :, None]
    if invert:
        arr = 255 - arr
    return arr


def decode_image(data: bytes, source: str, size: int, channels: int,
                 invert: bool = False) -> np.ndarray:
    """Decode encoded image bytes; ``source`` names the file in any error."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_model_array(image, size, channels, invert)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # PIL's guard against decompression bombs (the warning counts when made an error)
        raise ImageError(f"{source}: too many pixels for an image to classify "
                         f"(limit {Image.MAX_IMAGE_PIXELS:,})") from err
    except UnidentifiedImageError as err:  # its message holds a BytesIO repr: say it plainly
        raise ImageError(f"{source}: not a readable image (unknown format or corrupt "
                         "data)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{source}: not a readable image ({err})") from err


def load_image(path: str | Path, size: int, channels: int, invert: bool = False) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"{path}: cannot read ({err})") from err
    return decode_image(data, str(path), size, channels, invert)


def is_image_file(path: str | Path) -> bool:
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)
