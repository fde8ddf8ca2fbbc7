"""Image decoding shared by every data source, predict and serving: one conversion path.

An image becomes ``uint8 [image_size, image_size, channels]`` where ``value / 255`` is
the model input; ``invert`` (Omniglot) turns black strokes on white into strokes as
1 on 0. ``ImageOptions`` holds these three settings (``data.image_options(config)``
gives a model's, ``ImageOptions.from_info`` an export's).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm")


class ImageError(ValueError):
    """An image file that cannot be read; the message names the file."""


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How a raw image becomes a model's input: an ``image_size`` square with ``channels``
    channels (1 or 3), inverted or not.

    ``as_dict`` and ``from_info`` use the keys the exported files record
    (``model_info.json``, the ONNX metadata): ``image_size``, ``channels``, ``invert``.
    """

    image_size: int
    channels: int
    invert: bool = False

    KEYS: ClassVar[tuple[str, ...]] = ("image_size", "channels", "invert")

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) \
                or self.image_size < 1:
            raise ValueError(f"ImageOptions: image_size must be a positive integer, got "
                             f"{self.image_size!r}")
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ValueError(f"ImageOptions: channels must be 1 or 3, got {self.channels!r}")
        if not isinstance(self.invert, bool):
            raise ValueError(f"ImageOptions: invert must be True or False, got {self.invert!r}")

    @classmethod
    def from_info(cls, info: Mapping, source: str = "model info") -> ImageOptions:
        """The options recorded in an export's ``info`` (``source`` names it in errors)."""
        missing = [k for k in cls.KEYS if k not in info]
        if missing:
            raise ValueError(f"{source}: lacks the preprocessing key(s) {missing}")
        try:
            return cls(int(info["image_size"]), int(info["channels"]), bool(info["invert"]))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err

    def as_dict(self) -> dict:
        """``{"image_size", "channels", "invert"}``, as the exported files record them."""
        return {"image_size": self.image_size, "channels": self.channels,
                "invert": self.invert}

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)


def to_model_array(image: Image.Image, options: ImageOptions) -> np.ndarray:
    """Any PIL image (any mode: 1, L, P, RGB, RGBA, CMYK, I;16, ...) as uint8 of
    ``options.shape``."""
    size, channels = options.image_size, options.channels
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
    if options.invert:
        arr = 255 - arr
    return arr


def decode_image(data: bytes, source: str, options: ImageOptions) -> np.ndarray:
    """Decode encoded image bytes; ``source`` names the file in any error."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_model_array(image, options)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # PIL's guard against decompression bombs (the warning counts when made an error)
        raise ImageError(f"{source}: too many pixels for an image to classify "
                         f"(limit {Image.MAX_IMAGE_PIXELS:,})") from err
    except UnidentifiedImageError as err:  # its message holds a BytesIO repr: say it plainly
        raise ImageError(f"{source}: not a readable image (unknown format or corrupt "
                         "data)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{source}: not a readable image ({err})") from err


def load_image(path: str | Path, options: ImageOptions) -> np.ndarray:
    """An image file as the model's uint8 input (``options``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"{path}: cannot read ({err})") from err
    return decode_image(data, str(path), options)


def is_image_file(path: str | Path) -> bool:
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)
