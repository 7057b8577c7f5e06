"""Dataset YAMLs -> ``datasets.DatasetDict`` with typed ``Features``.

>>> from datasets_cfg import load_dataset_from_config
>>> ds = load_dataset_from_config("datasets_cfg/camvid.yaml", root="../shared/data/camvid")
>>> ds["train"].features  # image, mask, mask_classes (ClassLabel names = the YAML's classes), image_id

Columns: ``image_id`` (string), ``image`` (``datasets.Image``, RGB), ``captions`` (list of strings) for caption
datasets, ``mask`` (``datasets.Image``, one class id per pixel) and ``mask_classes`` (list of ``ClassLabel``: the
classes present; its ``names`` are the class list) for segmentation datasets, plus format-specific columns such
as the synthetic ``scene``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

# Importing the format modules registers them in FORMATS.
from . import coco, flickr, folders, shapes, voc_camvid  # noqa: F401
from .builder import build_dataset_dict, label_spec, make_format
from .config import DatasetConfig, load_config, parse_config, parse_overrides
from .errors import DatasetError
from .formats import FORMATS
from .label_validation import LabelSpec

CONFIG_DIR = Path(__file__).resolve().parent

__all__ = [
    "CONFIG_DIR",
    "DatasetConfig",
    "DatasetError",
    "FORMATS",
    "LabelSpec",
    "dataset_label_spec",
    "load_config",
    "load_dataset_from_config",
    "parse_config",
    "parse_overrides",
]


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path as given, or the name of one shipped in ``datasets_cfg/`` (``"camvid"`` -> camvid.yaml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = CONFIG_DIR / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    return shipped if shipped.is_file() else p


def load_dataset_from_config(
    config: str | Path | DatasetConfig | dict,
    root: str | Path | None = None,
    splits: list[str] | None = None,
    cache_dir: str | None = None,
    **overrides: Any,
) -> datasets.DatasetDict:
    """Build the ``DatasetDict`` a dataset YAML describes.

    Args:
        config: a YAML path, the name of a shipped YAML, a parsed ``DatasetConfig`` or a YAML-like dict.
        root: the dataset's folder (wins over the YAML's ``root``).
        splits: only these splits (default: all the format finds).
        cache_dir: where the Arrow cache goes (default: the ``datasets`` cache).
        overrides: YAML keys to replace, e.g. ``on_error="skip"`` or ``num_train=100`` for shapes.
    """
    if isinstance(config, DatasetConfig):
        cfg = config
    elif isinstance(config, dict):
        cfg = parse_config({**config, **overrides})
    else:
        cfg = load_config(resolve_config_path(config), **overrides)
    return build_dataset_dict(cfg, root=root, splits=splits, cache_dir=cache_dir)


def dataset_label_spec(config: str | Path | DatasetConfig, root: str | Path | None = None) -> LabelSpec | None:
    """The class names and ``ignore_index`` that losses and metrics must use for this dataset."""
    cfg = config if isinstance(config, DatasetConfig) else load_config(resolve_config_path(config))
    fmt = make_format(cfg, root)
    return label_spec(cfg, fmt) if fmt.has_masks else None
