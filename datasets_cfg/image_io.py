"""Reading photos from user files into RGB, with a clear error for everything that is not a usable photo."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DatasetError

# PIL's own bomb guard warns at 89 MP and raises at twice that with a message that names no file; we check the
# header size ourselves against the YAML's max_image_pixels instead.
Image.MAX_IMAGE_PIXELS = None


def open_image_file(path: str | Path, max_pixels: int = 64_000_000, min_side: int = 1) -> Image.Image:
    """Open an image file lazily (header only) after checking it exists, is an image and has a sane size."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("image file not found", path)
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise DatasetError("not an image file (the bytes are not in any image format PIL reads)", path) from None
    except OSError as err:
        raise DatasetError(f"corrupt or truncated image data ({err})", path) from None
    check_size(img.size, path, max_pixels=max_pixels, min_side=min_side)
    return img


def check_size(size: tuple[int, int], path, max_pixels: int, min_side: int) -> None:
    w, h = size
    if max_pixels and w * h > max_pixels:
        raise DatasetError(
            f"image is {w}x{h} pixels ({w * h / 1e6:.0f} MP), over the limit of {max_pixels / 1e6:.0f} MP; "
            "resize it first or raise max_image_pixels in the dataset YAML",
            path,
        )
    if min(w, h) < min_side:
        raise DatasetError(
            f"image is {w}x{h} pixels, smaller than min_image_side={min_side}; it is probably a broken or "
            "placeholder file (lower min_image_side in the dataset YAML if it is real)",
            path,
        )


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: RGBA is composited on white, CMYK and palette are converted,
    16-bit and 32-bit grayscale are scaled to 8 bits by their full range (not clipped)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if img.mode == "I" and arr.max(initial=0) > 65535:
            top = float(arr.max())
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as err:
        raise ValueError(f"image mode {img.mode!r} cannot be converted to RGB ({err}); save it as RGB first") from None


def load_rgb(path: str | Path, max_pixels: int = 64_000_000, min_side: int = 1) -> tuple[Image.Image, bytes | None]:
    """Decode an image file fully and return it as RGB, plus the original file bytes when they can be stored
    unchanged (already RGB JPEG/PNG), else ``None`` (the caller stores a re-encoded PNG)."""
    img = open_image_file(path, max_pixels=max_pixels, min_side=min_side)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"corrupt or truncated image data ({err})", path) from None
    keep_bytes = img.mode == "RGB" and img.format in ("JPEG", "PNG")
    try:
        rgb = to_rgb(img)
    except ValueError as err:  # a mode PIL reads but cannot convert (e.g. premultiplied "La")
        raise DatasetError(str(err), path) from None
    return rgb, (Path(path).read_bytes() if keep_bytes else None)


def encode_png(img: Image.Image | np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of an image or an (H, W) / (H, W, 3) uint8 array; level 1 favours speed over size."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
