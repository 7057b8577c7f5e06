"""Pascal VOC 2012 and CamVid (SegNet layout): split lists or split folders of photos with label-map PNGs.

VOC's ``SegmentationClass/*.png`` are palette PNGs whose *indices* are the class ids (255 = object borders, ignored);
``read_mask_file`` returns the indices, never the palette colours. CamVid's ``trainannot/*.png`` are 8-bit label
maps with 11 = unlabelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .builder import BadRecord
from .errors import DatasetError
from .formats import DatasetFormat, register_format


@register_format
class VOCFormat(DatasetFormat):
    """``JPEGImages/ID.jpg`` + ``SegmentationClass/ID.png`` for the ids listed in ``ImageSets/Segmentation/*.txt``."""

    name = "voc"
    has_masks = True
    options = {
        "image_dir": "JPEGImages",
        "mask_dir": "SegmentationClass",
        "split_dir": "ImageSets/Segmentation",
        "splits": {"train": "train", "validation": "val", "test": "test"},
    }

    def split_names(self) -> list[str]:
        split_dir = self.path(self.config.options["split_dir"], kind="split list folder")
        return [hf for hf, own in self.config.options["splits"].items() if (split_dir / f"{own}.txt").is_file()]

    def records(self, split: str) -> Iterator[dict]:
        opts = self.config.options
        list_path = self.path(opts["split_dir"], f"{opts['splits'][split]}.txt")
        image_dir = self.path(opts["image_dir"], kind="image folder")
        mask_dir = self.path(opts["mask_dir"], kind="mask folder")
        for line in list_path.read_text(encoding="utf-8").splitlines():
            image_id = line.strip()
            if image_id:
                yield {"image_id": image_id, "image": image_dir / f"{image_id}.jpg", "mask": mask_dir / f"{image_id}.png"}


@register_format
class CamVidFormat(DatasetFormat):
    """SegNet-tutorial layout: ``train/NAME.jpg|png`` with ``trainannot/NAME.png`` (and val/, test/)."""

    name = "camvid"
    has_masks = True
    options = {"splits": {"train": "train", "validation": "val", "test": "test"}, "annot_suffix": "annot"}

    def split_names(self) -> list[str]:
        return [hf for hf, own in self.config.options["splits"].items() if (self.root / own).is_dir()]

    def records(self, split: str) -> Iterator[dict]:
        own = self.config.options["splits"][split]
        image_dir = self.path(own, kind="image folder")
        mask_dir = self.path(own + self.config.options["annot_suffix"], kind="label folder")
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not images:
            raise DatasetError("no images in this folder", image_dir)
        for img in images:
            mask = mask_dir / f"{img.stem}.png"
            if not mask.is_file():
                yield BadRecord(DatasetError(f"no label map {mask.name} for {img.name}", mask_dir))
                continue
            yield {"image_id": img.stem, "image": img, "mask": mask}
