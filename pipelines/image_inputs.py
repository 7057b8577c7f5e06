"""What the pipelines accept as an image, turned into an 8-bit RGB ``PIL.Image`` with a clear error otherwise.

Accepted: a ``PIL.Image`` in any mode, the path of a local image file (``str`` or ``pathlib.Path``), or a numpy
array ((H, W) or (H, W, 3/4), uint8; (H, W) uint16 for 16-bit grayscale). RGBA is composited on white, grayscale,
palette, CMYK and 16-bit images are converted to RGB (``datasets_cfg.image_io.to_rgb``, the same conversion the
datasets apply). Every failure is a ``ValueError`` that names the file (or the input's position) and says what to
do: a missing file, bytes that are not an image, a corrupt or truncated image, an image over ``max_image_pixels``.

URLs are not fetched: the toolkit never reaches the network on its own; download the file and pass its path.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from datasets_cfg.image_io import load_rgb, open_image_file, to_rgb

# The same default limit as the dataset YAMLs' max_image_pixels: past it a decoded image (and the model's
# activations over it) would take gigabytes.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000


def describe_input(image) -> str:
    """A short name for an input in error messages: its path, its file name, or its type."""
    if isinstance(image, (str, Path)):
        return str(image)
    filename = getattr(image, "filename", None)
    if isinstance(image, Image.Image) and filename:
        return str(filename)
    return f"the {type(image).__name__} input"


class ImageTooLargeError(ValueError):
    """An input over ``max_image_pixels``. Its message gives a Python caller's remedy (the ``max_image_pixels=``
    parameter); a command line or a web page, whose users set the limit another way or not at all, words its own
    with ``message`` from the size and limit kept here."""

    def __init__(self, name: str, size: tuple[int, int], max_image_pixels: int):
        self.name, self.size, self.max_image_pixels = name, tuple(size), max_image_pixels
        super().__init__(self.message("pass a larger max_image_pixels= to the pipeline"))

    def message(self, advice: str, name: str | None = None) -> str:
        width, height = self.size
        return (f"{name or self.name}: image is {width}x{height} pixels ({width * height / 1e6:.0f} MP), over the "
                f"limit of {self.max_image_pixels / 1e6:.0f} MP; resize it first or {advice}")

    def __reduce__(self):  # the default would call __init__ with the message alone
        return type(self), (self.name, self.size, self.max_image_pixels)


def _check_pixels(size: tuple[int, int], name: str, max_image_pixels: int | None) -> None:
    width, height = size
    if max_image_pixels and width * height > max_image_pixels:
        raise ImageTooLargeError(name, (width, height), max_image_pixels)


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        return Image.fromarray(array)
    if array.dtype == np.uint16 and array.ndim == 2:
        return Image.fromarray(array)  # mode I;16, which to_rgb scales by the full 16-bit range
    raise ValueError(
        f"{name}: arrays must be uint8 (H, W), (H, W, 3) or (H, W, 4), or uint16 (H, W); got {array.dtype} of "
        f"shape {array.shape}. Convert it to uint8 RGB (or pass a PIL image or a file path)"
    )


def load_image(image, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """One pipeline input as a fully decoded 8-bit RGB ``PIL.Image`` (see the module docstring).

    Args:
        image: a ``PIL.Image``, a local file path, or a numpy array.
        max_image_pixels: width x height above which the input is refused (None or 0: no limit).

    Raises:
        ValueError: naming the input, for anything that is not a usable image (``ImageTooLargeError`` for one over
            ``max_image_pixels``).
    """
    name = describe_input(image)
    if isinstance(image, (str, Path)):
        text = str(image)
        if text.startswith(("http://", "https://")):
            raise ValueError(f"{text}: URLs are not downloaded by this pipeline; download the image and pass its path")
        # Header first: the size is checked before anything is decoded (a decompression bomb never gets decoded).
        header = open_image_file(text, max_pixels=0)
        _check_pixels(header.size, text, max_image_pixels)
        header.close()
        rgb, _ = load_rgb(text, max_pixels=0)
        return rgb
    if isinstance(image, np.ndarray):
        image = _from_array(image, name)
    if not isinstance(image, Image.Image):
        raise ValueError(
            f"{name}: expected a PIL image, a local file path or a numpy array, not {type(image).__name__}"
        )
    _check_pixels(image.size, name, max_image_pixels)
    if min(image.size) < 1:
        raise ValueError(f"{name}: image is {image.width}x{image.height} pixels: it has no pixels to look at")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{name}: corrupt or truncated image data ({err})") from None
    except AssertionError:
        # PIL asserts (with no message) when a lazily opened image is loaded after its file was closed.
        raise ValueError(
            f"{name}: its pixels cannot be read: the file it was opened from is closed. Call image.load() "
            "before closing it (or leaving its `with Image.open(...)` block), or pass the file path"
        ) from None
    try:
        return to_rgb(image)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def image_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) of a PIL image, the order tensors and class maps use."""
    return image.height, image.width


__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "ImageTooLargeError", "describe_input", "image_size", "load_image"]
