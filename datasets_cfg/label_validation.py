"""Reading segmentation masks and checking their labels.

Every mask the data layer reads goes through ``validate_mask``: values outside the class list raise an error that
names the file and the values, 0/255 foreground masks are mapped only when the YAML says ``binary_mask: true``,
and ``reduce_labels`` (ADE20K-style "0 = unlabelled") is applied explicitly. The resulting ``LabelSpec`` is what
losses and metrics receive, so they all agree on ``ignore_index``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DatasetError


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """What a mask's values mean: ids ``0..len(class_names)-1`` are classes, ``ignore_index`` is skipped."""

    class_names: tuple[str, ...]
    ignore_index: int = 255
    binary_mask: bool = False
    reduce_labels: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.class_names))


def read_mask_file(path: str | Path, max_pixels: int = 64_000_000) -> np.ndarray:
    """Read a label map as an (H, W) integer array of the ids stored in the file.

    Palette PNGs (Pascal VOC) give their palette indices, not their colours; 16-bit PNGs give their 16-bit values.
    Colour masks are refused (unless all three channels are equal): their colours are not class ids.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError("mask file not found", path)
    try:
        img = Image.open(path)
        if img.size[0] * img.size[1] > max_pixels:
            raise DatasetError(f"mask is {img.size[0]}x{img.size[1]} pixels, over max_image_pixels", path)
        img.load()
    except UnidentifiedImageError:
        raise DatasetError("not an image file: a mask must be a PNG of class ids", path) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"corrupt or truncated mask ({err})", path) from None
    if img.mode in ("P", "L", "I;16", "I;16B", "I;16L", "I"):
        return np.asarray(img).astype(np.int64)
    if img.mode == "1":
        return np.asarray(img).astype(np.int64)  # bool -> 0/1
    if img.mode in ("RGB", "RGBA", "LA"):
        arr = np.asarray(img)
        if img.mode == "LA" or (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            return arr[..., 0].astype(np.int64)
        raise DatasetError(
            f"mask is a colour ({img.mode}) image; a mask must store one class id per pixel "
            "(an 8-bit grayscale, 16-bit or palette PNG). Convert the colours to class ids first",
            path,
        )
    raise DatasetError(f"unsupported mask mode {img.mode!r}; expected an 8/16-bit grayscale or palette PNG", path)


def validate_mask(mask: np.ndarray, spec: LabelSpec, where: str | Path | None = None) -> np.ndarray:
    """Apply the YAML's label rules to a raw mask and check every value.

    Returns a uint8 array (uint16 when ids exceed 255) holding class ids and ``spec.ignore_index`` only.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DatasetError(f"mask must be 2-D (H, W), got shape {mask.shape}", where)
    mask = mask.astype(np.int64, copy=False)
    values = np.unique(mask)
    if spec.binary_mask:
        if not set(values.tolist()) <= {0, 1, 255, spec.ignore_index}:
            raise DatasetError(
                f"binary_mask is set but the mask holds values {_fmt(values)}; expected only 0 and 255 (or 0 and 1)",
                where,
            )
        if spec.ignore_index == 255:
            raise DatasetError("binary_mask maps 255 to class 1, so ignore_index cannot be 255 too", where)
        mask = np.where(mask == 255, 1, mask)
        values = np.unique(mask)
    if spec.reduce_labels:
        mask = np.where(mask == 0, spec.ignore_index, np.where(mask == spec.ignore_index, mask, mask - 1))
        values = np.unique(mask)
    n = spec.num_classes
    bad = values[(values < 0) | ((values >= n) & (values != spec.ignore_index))]
    if bad.size:
        if set(values.tolist()) <= {0, 255} and 255 >= n and spec.ignore_index != 255:
            raise DatasetError(
                "mask holds only 0 and 255: this looks like a binary foreground mask saved as 0/255, which would "
                f"train class 255 of a {n}-class model. Set 'binary_mask: true' in the dataset YAML to map 255 -> 1",
                where,
            )
        raise DatasetError(
            f"mask holds value(s) {_fmt(bad)} outside the class ids 0..{n - 1} "
            f"(ignore_index is {spec.ignore_index}); fix the file or the dataset YAML's 'classes'",
            where,
        )
    dtype = np.uint8 if max(n - 1, spec.ignore_index) <= 255 else np.uint16
    return mask.astype(dtype)


def _fmt(values: np.ndarray, limit: int = 8) -> str:
    vals = [int(v) for v in values[:limit]]
    return ", ".join(map(str, vals)) + (", ..." if values.size > limit else "")
