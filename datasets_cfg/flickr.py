"""Flickr8k / Flickr30k caption files.

Two layouts are read here:

- ``flickr_token``: the official ``Flickr8k.token.txt`` (Flickr30k: ``results_20130124.token``), one
  ``IMAGE#N<TAB>caption`` line per caption, plus the official split lists (``Flickr_8k.trainImages.txt`` …).
- ``flickr_captions_json``: ``captions.json`` = ``{"images": [{"file", "split", "captions": [...]}]}``, the layout
  of ``../shared/data/flickr8k``.

- ``flickr_karpathy``: Karpathy's ``dataset_flickr8k.json`` / ``dataset_flickr30k.json`` (parsed by ``karpathy.py``,
  shared with COCO).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Iterator

from .builder import BadRecord
from .errors import DatasetError
from .formats import DatasetFormat, register_format
from .json_files import list_key, read_json
from .karpathy import iter_karpathy, karpathy_split_names

# The official Flickr8k archive really spells its image folder "Flicker8k_Dataset".
_FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "validation": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}


@register_format
class FlickrTokenFormat(DatasetFormat):
    """Official Flickr token file + split lists. Without split lists every image goes to ``train``."""

    name = "flickr_token"
    has_captions = True
    options = {
        "captions_file": "Flickr8k.token.txt",
        "image_dir": "Flicker8k_Dataset",
        "split_files": dict(_FLICKR8K_SPLIT_FILES),
    }

    def split_names(self) -> list[str]:
        split_files = self.config.options["split_files"] or {}
        if not split_files:
            return ["train"]
        return [s for s, f in split_files.items() if (self.root / f).is_file()] or self._no_split_files(split_files)

    def _no_split_files(self, split_files) -> list[str]:
        raise DatasetError(
            f"none of the split files {sorted(split_files.values())} exists; set 'split_files: {{}}' in the YAML "
            "to put every image in the train split",
            self.root,
        )

    def _captions(self) -> tuple[OrderedDict, list[BadRecord]]:
        path = self.path(self.config.options["captions_file"])
        by_image: OrderedDict[str, list[str]] = OrderedDict()
        bad = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            if "\t" not in line:
                bad.append(BadRecord(DatasetError(f"line {lineno} has no tab between 'IMAGE#N' and the caption", path)))
                continue
            key, caption = line.split("\t", 1)
            image = key.rsplit("#", 1)[0].strip()
            by_image.setdefault(image, []).append(caption)
        return by_image, bad

    def records(self, split: str) -> Iterator[dict]:
        by_image, bad = self._captions()
        yield from bad
        split_files = self.config.options["split_files"] or {}
        if split_files:
            list_path = self.path(split_files[split])
            names = [n.strip() for n in list_path.read_text(encoding="utf-8").splitlines() if n.strip()]
        else:
            names = list(by_image)
        image_dir = self.path(self.config.options["image_dir"], kind="image folder")
        for name in names:
            if name not in by_image:
                yield BadRecord(DatasetError(f"image {name!r} is in a split list but has no captions", image_dir))
                continue
            yield {"image_id": Path(name).stem, "image": image_dir / name, "captions": by_image[name]}


@register_format
class FlickrCaptionsJsonFormat(DatasetFormat):
    """``captions.json`` with one entry per image; ``splits`` maps HF split names to the file's split names."""

    name = "flickr_captions_json"
    has_captions = True
    options = {
        "captions_file": "captions.json",
        "image_dir": "images",
        "splits": {"train": "train", "validation": "dev", "test": "test"},
    }

    def _entries(self) -> list[dict]:
        path = self.root / self.config.options["captions_file"]
        return list_key(read_json(path, "captions file"), "images", path, "captions.json file")

    def split_names(self) -> list[str]:
        present = {e.get("split") for e in self._entries() if isinstance(e, dict)}
        return [hf for hf, own in self.config.options["splits"].items() if own in present]

    def records(self, split: str) -> Iterator[dict]:
        path = self.root / self.config.options["captions_file"]
        own = self.config.options["splits"][split]
        image_dir = self.path(self.config.options["image_dir"], kind="image folder")
        for i, entry in enumerate(self._entries()):
            missing = [k for k in ("file", "split", "captions") if not isinstance(entry, dict) or k not in entry]
            if missing:
                yield BadRecord(DatasetError(f"entry {i} lacks field(s) {missing}", path))
                continue
            if entry["split"] != own:
                continue
            yield {"image_id": Path(entry["file"]).stem, "image": image_dir / entry["file"], "captions": entry["captions"]}


@register_format
class FlickrKarpathyFormat(DatasetFormat):
    """Karpathy's ``dataset_flickr8k.json`` / ``dataset_flickr30k.json`` with every image in ``image_dir``."""

    name = "flickr_karpathy"
    has_captions = True
    options = {"karpathy_json": "dataset_flickr8k.json", "image_dir": "Flicker8k_Dataset"}

    def split_names(self) -> list[str]:
        return karpathy_split_names(self.root / self.config.options["karpathy_json"])

    def records(self, split: str) -> Iterator[dict]:
        image_dir = self.path(self.config.options["image_dir"], kind="image folder")
        yield from iter_karpathy(
            self.root / self.config.options["karpathy_json"],
            lambda entry: image_dir / entry["filename"],
            split,
            image_id_fn=lambda entry: Path(entry["filename"]).stem,
        )
