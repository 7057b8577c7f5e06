"""Turn a parsed dataset YAML into a ``datasets.DatasetDict`` (cached Arrow via ``Dataset.from_generator``).

This is the only place that decodes user images and masks, so every format gets the same checks: images become
RGB (RGBA, grayscale, CMYK, palette and 16-bit files are converted), corrupt and non-image files raise a
``DatasetError`` naming the file, masks go through ``validate_mask`` and must match their image's size. With
``on_error: skip`` a bad row is dropped instead, and one warning per split gives the count and the first reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Iterator

import datasets
import numpy as np
from PIL import Image

from .config import DatasetConfig
from .errors import DatasetError
from .formats import FORMATS, DatasetFormat, features_for
from .image_io import check_size, encode_png, load_rgb
from .label_validation import LabelSpec, read_mask_file, validate_mask

logger = logging.getLogger(__name__)

# Bump when the encoding of rows changes, so that stale Arrow caches are not reused.
_ROW_FORMAT_VERSION = 1


class BadRecord(dict):
    """A record a format could not parse; the builder raises or skips it by ``on_error``."""

    def __init__(self, error: DatasetError):
        super().__init__(error=error)


def label_spec(config: DatasetConfig, fmt: DatasetFormat | None = None) -> LabelSpec | None:
    names = fmt.class_names() if fmt is not None else config.classes
    if names is None:
        return None
    return LabelSpec(tuple(names), config.ignore_index, bool(config.binary_mask), bool(config.reduce_labels))


def resolve_root(config: DatasetConfig, root: str | Path | None) -> Path | None:
    fmt_cls = FORMATS[config.format]
    root = root if root is not None else config.root
    if root is None:
        if fmt_cls.needs_root:
            raise DatasetError(
                f"format {config.format!r} reads files: give the dataset folder with --root (or 'root:' in the YAML)",
                config.source,
            )
        return None
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError("dataset root folder not found", root)
    return root


def make_format(config: DatasetConfig, root: str | Path | None = None) -> DatasetFormat:
    return FORMATS[config.format](config, resolve_root(config, root))


def build_dataset_dict(
    config: DatasetConfig,
    root: str | Path | None = None,
    splits: list[str] | None = None,
    cache_dir: str | None = None,
) -> datasets.DatasetDict:
    fmt = make_format(config, root)
    available = fmt.split_names()
    wanted = splits or available
    missing = [s for s in wanted if s not in available]
    if missing:
        raise DatasetError(f"split(s) {missing} not in this dataset (it has {available})", config.source)
    features = features_for(fmt)
    spec = label_spec(config, fmt) if fmt.has_masks else None
    out = {}
    for split in wanted:
        fingerprint = _fingerprint(config, fmt, split)
        try:
            out[split] = datasets.Dataset.from_generator(
                _generate_rows,
                features=features,
                cache_dir=cache_dir,
                gen_kwargs={"fmt": fmt, "split": split, "spec": spec},
                split=datasets.NamedSplit(split),
                fingerprint=fingerprint,
            )
        except datasets.exceptions.DatasetGenerationError as err:
            cause = err.__cause__ or err.__context__
            if isinstance(cause, DatasetError):
                raise cause from None
            raise
    return datasets.DatasetDict(out)


def _fingerprint(config: DatasetConfig, fmt: DatasetFormat, split: str) -> str:
    stamps = []
    for f in fmt.source_files():
        try:
            st = f.stat()
            stamps.append((str(f), st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append((str(f), None, None))
    key = {
        "v": _ROW_FORMAT_VERSION,
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "source"},
        "root": str(fmt.root.resolve()) if fmt.root else None,
        "split": split,
        "files": stamps,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _generate_rows(fmt: DatasetFormat, split: str, spec: LabelSpec | None) -> Iterator[dict]:
    skipped, first_reason = 0, None
    masks, foreground_masks = 0, 0
    for record in fmt.records(split):
        try:
            if isinstance(record, BadRecord):
                raise record["error"]
            row = encode_record(record, fmt, spec)
        except DatasetError as err:
            if fmt.config.on_error == "raise":
                raise
            skipped += 1
            first_reason = first_reason or str(err)
            continue
        if "mask_classes" in row:
            masks += 1
            foreground_masks += any(c != 0 for c in row["mask_classes"])
        yield row
    if masks and not foreground_masks and spec.num_classes > 1:
        # Each mask alone is valid, so only the split as a whole shows the 0/255 trap: with ignore_index 255 a
        # 0/255 foreground mask reads as "background + ignored", and the model scores a perfect mIoU by
        # predicting background everywhere.
        trap = (" These look like 0/255 foreground masks read with ignore_index 255, which ignores every "
                "foreground pixel: set 'binary_mask: true' and an ignore_index other than 255 in the dataset YAML."
                if spec.ignore_index == 255 and not spec.binary_mask else "")
        raise DatasetError(
            f"none of the {masks} masks of split '{split}' holds any class but 0 ({spec.class_names[0]}), so "
            f"there is nothing to learn or score for the other {spec.num_classes - 1} class(es).{trap}",
            fmt.config.source,
        )
    if skipped:
        msg = f"{fmt.config.name}/{split}: skipped {skipped} bad row(s) (on_error: skip); first: {first_reason}"
        warnings.warn(msg, stacklevel=2)
        logger.warning(msg)


def encode_record(record: dict, fmt: DatasetFormat, spec: LabelSpec | None) -> dict:
    """Decode, check and encode one record into a row of the format's ``Features``."""
    cfg = fmt.config
    image_id = str(record["image_id"])
    src = record["image"]
    if isinstance(src, np.ndarray):
        if src.ndim != 3 or src.shape[2] != 3 or src.dtype != np.uint8:
            raise DatasetError(f"generated image must be (H, W, 3) uint8, got {src.shape} {src.dtype}", image_id)
        size = (src.shape[1], src.shape[0])
        check_size(size, image_id, cfg.max_image_pixels, cfg.min_image_side)
        image = {"bytes": encode_png(src), "path": f"{image_id}.png"}
    else:
        rgb, raw = load_rgb(src, max_pixels=cfg.max_image_pixels, min_side=cfg.min_image_side)
        size = rgb.size
        image = {"bytes": raw if raw is not None else encode_png(rgb), "path": Path(src).name}
    row = {"image_id": image_id, "image": image}
    if fmt.has_captions:
        row["captions"] = clean_captions(record.get("captions"), where=src if not isinstance(src, np.ndarray) else image_id)
    if fmt.has_masks:
        raw_mask = record.get("mask")
        if raw_mask is None:
            raise DatasetError("no mask for this image", src if not isinstance(src, np.ndarray) else image_id)
        where = raw_mask if isinstance(raw_mask, (str, Path)) else image_id
        arr = read_mask_file(raw_mask, cfg.max_image_pixels) if isinstance(raw_mask, (str, Path)) else raw_mask
        if (arr.shape[1], arr.shape[0]) != tuple(size):
            raise DatasetError(
                f"mask is {arr.shape[1]}x{arr.shape[0]} but its image is {size[0]}x{size[1]}; "
                "a mask must have its image's size",
                where,
            )
        mask = validate_mask(arr, spec, where)
        # uint8 -> 8-bit grayscale PNG, uint16 -> 16-bit PNG: both decode back to the same ids.
        row["mask"] = {"bytes": encode_png(Image.fromarray(mask), compress_level=6), "path": None}
        present = np.unique(mask)
        row["mask_classes"] = [int(v) for v in present if v < spec.num_classes]
    for key in fmt.extra_features():
        row[key] = record[key]
    return row


def clean_captions(captions, where) -> list[str]:
    if captions is None:
        raise DatasetError("missing 'captions' for this image", where)
    if isinstance(captions, str) or not isinstance(captions, (list, tuple)):
        raise DatasetError(f"captions must be a list of strings, got {type(captions).__name__}", where)
    cleaned = []
    for c in captions:
        if not isinstance(c, str):
            raise DatasetError(f"caption {c!r} is not a string", where)
        c = " ".join(c.split())
        if not c:
            raise DatasetError("an empty caption string", where)
        cleaned.append(c)
    if not cleaned:
        raise DatasetError("empty caption list: every image needs at least one caption", where)
    return cleaned
