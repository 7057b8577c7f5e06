"""Plain folders: an ``images/`` + ``masks/`` pair, and Hugging Face ``imagefolder`` with ``metadata.jsonl``.

Both accept either a flat folder (one ``train`` split) or one subfolder per split (``train/``, ``validation/`` or
``val/``, ``test/``). ``datasets.load_dataset("imagefolder")`` reads the second layout too, but it neither checks
images nor lets us validate captions the way every other format here is validated, so it is parsed here and sent
through the same builder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from .builder import BadRecord
from .errors import DatasetError
from .formats import DatasetFormat, register_format

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Folder names accepted for each split, in order of preference.
SPLIT_DIRS = {"train": ("train", "training"), "validation": ("validation", "val", "valid", "dev"), "test": ("test",)}


def find_split_dirs(base: Path) -> dict[str, Path]:
    """``{split: folder}`` for the split subfolders of ``base``; ``{"train": base}`` when it has none."""
    found = {}
    for split, names in SPLIT_DIRS.items():
        for n in names:
            if (base / n).is_dir():
                found[split] = base / n
                break
    return found or {"train": base}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


@register_format
class ImageMaskFoldersFormat(DatasetFormat):
    """``images/NAME.jpg`` with ``masks/NAME{mask_suffix}.png`` (class ids), matched by file stem."""

    name = "image_mask_folders"
    has_masks = True
    options = {"image_dir": "images", "mask_dir": "masks", "mask_suffix": "", "mask_ext": ".png"}

    def _dirs(self) -> dict[str, tuple[Path, Path]]:
        opts = self.config.options
        image_base = self.path(opts["image_dir"], kind="image folder")
        mask_base = self.path(opts["mask_dir"], kind="mask folder")
        out = {}
        for split, img_dir in find_split_dirs(image_base).items():
            mask_dir = mask_base / img_dir.relative_to(image_base)
            if not mask_dir.is_dir():
                raise DatasetError(f"no mask folder for split {split!r} (expected {mask_dir})", mask_base)
            out[split] = (img_dir, mask_dir)
        return out

    def split_names(self) -> list[str]:
        return list(self._dirs())

    def records(self, split: str) -> Iterator[dict]:
        opts = self.config.options
        img_dir, mask_dir = self._dirs()[split]
        images = list_images(img_dir)
        stems = {p.stem for p in images}
        if not images:
            raise DatasetError("no images (.jpg, .png, ...) in this folder", img_dir)
        for img in images:
            mask = mask_dir / f"{img.stem}{opts['mask_suffix']}{opts['mask_ext']}"
            if not mask.is_file():
                yield BadRecord(DatasetError(f"no mask for image {img.name} (expected {mask.name})", mask_dir))
                continue
            yield {"image_id": img.stem, "image": img, "mask": mask}
        suffix = f"{opts['mask_suffix']}{opts['mask_ext']}"
        for m in sorted(mask_dir.glob(f"*{suffix}")):
            stem = m.name[: -len(suffix)] if suffix else m.stem
            if stem not in stems:
                yield BadRecord(DatasetError(f"mask {m.name} has no image in {img_dir}", m))


@register_format
class ImageFolderCaptionsFormat(DatasetFormat):
    """HF ``imagefolder``: images plus ``metadata.jsonl`` rows ``{"file_name": ..., "captions": [...]}``.

    A row may give ``captions`` (list), or one caption as ``caption`` / ``text`` (the names HF examples use);
    ``caption_field`` picks one explicitly.
    """

    name = "imagefolder_captions"
    has_captions = True
    options = {"caption_field": "auto", "metadata_file": "metadata.jsonl"}

    def split_names(self) -> list[str]:
        dirs = find_split_dirs(self.root)
        name = self.config.options["metadata_file"]
        if not any((d / name).is_file() for d in dirs.values()):
            raise DatasetError(f"no {name} in the root folder or its split folders", self.root)
        return [s for s, d in dirs.items() if (d / name).is_file()]

    def _captions(self, row: dict):
        field = self.config.options["caption_field"]
        if field != "auto":
            value = row.get(field)
        else:
            value = next((row[k] for k in ("captions", "caption", "text") if k in row), None)
        return [value] if isinstance(value, str) else value

    def records(self, split: str) -> Iterator[dict]:
        folder = find_split_dirs(self.root)[split]
        meta = folder / self.config.options["metadata_file"]
        for lineno, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield BadRecord(DatasetError(f"line {lineno} is not valid JSON ({err.msg})", meta))
                continue
            if not isinstance(row, dict) or "file_name" not in row:
                yield BadRecord(DatasetError(f"line {lineno} has no 'file_name'", meta))
                continue
            captions = self._captions(row)
            if captions is None:
                yield BadRecord(DatasetError(f"line {lineno} ({row['file_name']}) has no captions field", meta))
                continue
            path = folder / row["file_name"]
            yield {"image_id": Path(row["file_name"]).stem, "image": path, "captions": captions}
