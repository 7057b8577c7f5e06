"""The registry of dataset formats a YAML's ``format:`` key can name.

A format turns a root folder into *records*, plain dicts with these keys:

- ``image_id`` (str): a stable id, usually the file name;
- ``image``: a file path, or an (H, W, 3) uint8 array for generated data;
- ``captions`` (list of str): only for formats with ``has_captions``;
- ``mask``: a file path or an (H, W) integer array of raw class ids: only for formats with ``has_masks``;
- any key named in ``extra_features`` (e.g. the synthetic scene truth).

``datasets_cfg.builder`` does the rest once for every format: decoding, RGB conversion, label validation,
skipping bad rows and writing Arrow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterator

import datasets

from .config import DatasetConfig
from .errors import DatasetError

FORMATS: dict[str, type["DatasetFormat"]] = {}


def register_format(cls):
    FORMATS[cls.name] = cls
    return cls


class DatasetFormat:
    name: ClassVar[str]
    has_captions: ClassVar[bool] = False
    has_masks: ClassVar[bool] = False
    needs_root: ClassVar[bool] = True
    # Format-specific YAML keys and their defaults.
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: DatasetConfig, root: Path | None):
        self.config = config
        self.root = root

    @classmethod
    def check_config(cls, config: DatasetConfig) -> None:
        """Raise DatasetError for a YAML this format cannot use (called by ``parse_config``)."""
        if cls.has_masks and config.classes is None and not cls.provides_classes():
            raise DatasetError(f"format {cls.name!r} needs a 'classes' list", config.source)

    @classmethod
    def provides_classes(cls) -> bool:
        """True when the format reads its class list from the data (e.g. COCO categories)."""
        return False

    def class_names(self) -> list[str] | None:
        return self.config.classes

    def split_names(self) -> list[str]:
        raise NotImplementedError

    def records(self, split: str) -> Iterator[dict]:
        raise NotImplementedError

    def extra_features(self) -> dict[str, Any]:
        return {}

    def source_files(self) -> list[Path]:
        """Files whose size and modification time identify this dataset's contents: the Arrow cache is rebuilt
        when any of them changes. Default: every file under the root (a stat each, no reads)."""
        if self.root is None:
            return []
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    # Helpers shared by the formats.
    def path(self, *parts: str, must_exist: bool = True, kind: str = "file") -> Path:
        p = self.root.joinpath(*parts)
        if must_exist and not p.exists():
            raise DatasetError(f"{kind} not found (check --root and the dataset YAML)", p)
        return p


def features_for(fmt: DatasetFormat) -> datasets.Features:
    feats: dict[str, Any] = {"image_id": datasets.Value("string"), "image": datasets.Image()}
    if fmt.has_captions:
        feats["captions"] = datasets.List(datasets.Value("string"))
    if fmt.has_masks:
        feats["mask"] = datasets.Image()
        feats["mask_classes"] = datasets.List(datasets.ClassLabel(names=list(fmt.class_names())))
    feats.update(fmt.extra_features())
    return datasets.Features(feats)
