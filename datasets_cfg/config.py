"""Dataset YAML files: parsing and validation.

A dataset YAML names a ``format`` (see ``datasets_cfg.formats``), the keys every format shares (below) and the
keys its format adds. An unknown key or format is an error that lists what is allowed, so a typo never turns into
a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from .errors import DatasetError

# Keys every dataset YAML may set, with their defaults.
COMMON_KEYS: dict[str, Any] = {
    "name": None,
    "format": None,
    "root": None,  # default root folder; the command line's --root wins
    "description": "",
    "classes": None,  # class names, index = class id stored in the mask
    "ignore_index": 255,  # mask value that losses and metrics skip
    "binary_mask": False,  # masks are 0/255 (or 0/1) foreground masks: map 255 -> 1
    "reduce_labels": False,  # 0 means "unlabelled": map 0 -> ignore_index and every other id to id - 1
    "on_error": "raise",  # "raise" on the first bad row, or "skip" it with a warning and a count
    "min_image_side": 8,  # smaller images are rejected (a 1x1 "photo" is a broken file, not data)
    "max_image_pixels": 64_000_000,  # larger images are rejected before they are decoded
}


@dataclasses.dataclass
class DatasetConfig:
    """A parsed dataset YAML. ``options`` holds the keys specific to ``format``."""

    name: str
    format: str
    root: str | None = None
    description: str = ""
    classes: list[str] | None = None
    ignore_index: int = 255
    binary_mask: bool = False
    reduce_labels: bool = False
    on_error: str = "raise"
    min_image_side: int = 8
    max_image_pixels: int = 64_000_000
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str | None = None  # the YAML file this came from

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)


def parse_config(data: dict[str, Any], source: str | None = None) -> DatasetConfig:
    """Validate a YAML mapping against the common keys and its format's keys."""
    from .formats import FORMATS

    where = source or "dataset config"
    if not isinstance(data, dict):
        raise DatasetError("a dataset YAML must be a mapping of keys to values", where)
    fmt_name = data.get("format")
    if fmt_name is None:
        raise DatasetError(f"missing key 'format' (one of: {', '.join(sorted(FORMATS))})", where)
    if fmt_name not in FORMATS:
        raise DatasetError(f"unknown format {fmt_name!r}; known formats: {', '.join(sorted(FORMATS))}", where)
    fmt = FORMATS[fmt_name]
    allowed = set(COMMON_KEYS) | set(fmt.options)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise DatasetError(
            f"unknown key(s) {', '.join(map(repr, unknown))} for format {fmt_name!r}; "
            f"allowed keys: {', '.join(sorted(allowed))}",
            where,
        )
    common = {k: data.get(k, default) for k, default in COMMON_KEYS.items()}
    options = {k: data.get(k, default) for k, default in fmt.options.items()}
    if common["on_error"] not in ("raise", "skip"):
        raise DatasetError(f"on_error must be 'raise' or 'skip', not {common['on_error']!r}", where)
    classes = common["classes"]
    if classes is not None:
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise DatasetError("'classes' must be a non-empty list of class names", where)
        if len(set(classes)) != len(classes):
            raise DatasetError("'classes' holds the same name twice", where)
    for key in ("ignore_index", "min_image_side", "max_image_pixels"):
        if not isinstance(common[key], int) or isinstance(common[key], bool) or common[key] < 0:
            raise DatasetError(f"{key!r} must be a non-negative integer, not {common[key]!r}", where)
    if classes is not None and common["ignore_index"] < len(classes):
        raise DatasetError(
            f"ignore_index {common['ignore_index']} is also a class id (classes are 0..{len(classes) - 1}); "
            "pick a value outside the class range",
            where,
        )
    if common["name"] is None:
        common["name"] = Path(source).stem if source else fmt_name
    cfg = DatasetConfig(**common, options=options, source=source)
    fmt.check_config(cfg)
    return cfg


def load_config(path: str | Path, **overrides: Any) -> DatasetConfig:
    """Read a dataset YAML; ``overrides`` replace its keys (e.g. ``on_error="skip"`` from a command line)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("dataset YAML not found", path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DatasetError(f"not a readable YAML file ({err})", path) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DatasetError("a dataset YAML must be a mapping of keys to values", path)
    data = dict(data)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return parse_config(data, source=str(path))


def parse_overrides(items: list[str], flag: str = "--data-set") -> dict[str, Any]:
    """``["num_train=100", "on_error=skip"]`` (command-line ``KEY=VALUE`` strings) -> YAML-typed overrides."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DatasetError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out
