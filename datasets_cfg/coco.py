"""COCO formats: official caption and instance annotation files, and Karpathy's caption splits.

Formats (each a YAML ``format:``):

- ``coco_captions``: ``{annotations_dir}/captions_{split}{year}.json`` + images in ``{split}{year}/``.
  Records: ``image_id`` (the COCO id as a string), ``image`` (path), ``captions`` (all of the image's captions,
  in annotation-id order).
- ``coco_karpathy``: Karpathy's ``dataset_coco.json``; ``restval`` joins ``train`` unless ``restval_to_train:
  false`` (then it is a split of its own, ``restval``). The parser is ``karpathy.iter_karpathy``, shared with
  the Flickr formats, whose Karpathy files have the same layout.
- ``coco_instances``: ``{annotations_dir}/instances_{split}{year}.json`` -> semantic masks (H, W).
- ``coco_captions_masks``: both files of a split joined on the image id: ``captions`` and ``mask`` columns.

Images are yielded in ascending COCO image id, so row order does not depend on the order inside the JSON.

Semantic mask rule (instances -> one class id per pixel), deterministic:

1. Every pixel starts as background, class 0.
2. ``crowd: ignore`` (default): crowd regions (``iscrowd: 1``) are painted ``ignore_index`` first.
   ``crowd: class`` treats them as ordinary instances of their category instead.
3. Non-crowd instances are painted with their class in *descending pixel area* (the pixel count of the decoded
   mask), equal areas in *ascending annotation id*; a later paint overwrites, so a smaller object lying on a
   larger one stays visible, and of two equal-area objects the one with the higher annotation id wins.

Labelled objects are painted over crowd regions because an object's outline is certain, while a crowd region
only says "several objects of this class, not delineated, are somewhere here"; ignore is kept only where no
object was outlined.

Class ids with ``category_map: contiguous`` (the only map so far): 0 = ``background``, then the JSON's categories
sorted by COCO category id -> 1..N (COCO's 80 categories, whose ids run 1..90 with gaps, become 1..80), names from
the JSON. Masks are built at the ``height`` x ``width`` of the JSON's image entry; the builder checks that against
the image file.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from pycocotools import mask as mask_utils

from .builder import BadRecord
from .config import DatasetConfig
from .errors import DatasetError
from .formats import DatasetFormat, register_format
from .json_files import list_key, read_json
from .karpathy import iter_karpathy, karpathy_split_names

logger = logging.getLogger(__name__)

BACKGROUND = "background"
CATEGORY_MAPS = ("contiguous",)
CROWD_MODES = ("ignore", "class")
JOIN_MODES = ("inner", "strict")


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------------


def _warn(message: str) -> None:
    # Both channels, like the builder: warnings reach notebooks and pytest, logging reaches command lines.
    warnings.warn(message, stacklevel=3)
    logger.warning(message)


# ----------------------------------------------------------------------------------------------------------------
# Instance annotations -> semantic masks
# ----------------------------------------------------------------------------------------------------------------


def segmentation_rle(segmentation: Any, height: int, width: int) -> dict:
    """One annotation's ``segmentation`` (polygons, uncompressed or compressed RLE) as a pycocotools RLE.

    Same decoding as ``pycocotools.coco.COCO.annToRLE``, except that polygons with fewer than 3 points are
    dropped first: they have no area, and pycocotools reads a 4-number first polygon as a *box*.
    Raises ``ValueError`` for a segmentation it cannot decode.
    """
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if not polygons:
            # An object whose outline has no area still exists: an empty mask, not an error.
            return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(v) for v in segmentation["size"]] != [height, width]:
            raise ValueError(f"RLE size {segmentation['size']} differs from the image's [height, width] "
                             f"[{height}, {width}]")
        if isinstance(segmentation["counts"], list):
            return mask_utils.frPyObjects(segmentation, height, width)
        return segmentation
    raise ValueError("segmentation is neither a list of polygons nor an RLE {'counts', 'size'}")


def paint_semantic_mask(
    annotations: Iterable[dict],
    height: int,
    width: int,
    class_of: dict[int, int],
    ignore_index: int = 255,
    crowd: str = "ignore",
) -> np.ndarray:
    """(height, width) uint8 (uint16 when ids exceed 255) mask of one image, by the rule in the module docstring.

    ``class_of`` maps COCO category id -> class id. Raises ``ValueError`` naming the annotation id for an
    annotation with an unknown category or an undecodable segmentation.
    """
    top = max([ignore_index, *class_of.values()])
    out = np.zeros((height, width), dtype=np.uint8 if top <= 255 else np.uint16)
    crowds, things = [], []
    for ann in annotations:
        ann_id = ann.get("id")
        if not isinstance(ann_id, int):
            raise ValueError(f"an annotation of image {ann.get('image_id')} has no integer 'id'")
        if ann.get("category_id") not in class_of:
            raise ValueError(f"annotation {ann_id} has category_id {ann.get('category_id')!r}, not in 'categories'")
        try:
            rle = segmentation_rle(ann.get("segmentation"), height, width)
        except Exception as err:  # pycocotools raises bare Exception / TypeError for malformed input
            raise ValueError(f"annotation {ann_id}: cannot decode its segmentation ({err})") from None
        if ann.get("iscrowd") and crowd == "ignore":
            crowds.append(rle)
        else:
            things.append((-int(mask_utils.area(rle)), ann_id, class_of[ann["category_id"]], rle))
    for rle in crowds:
        out[_decode(rle)] = ignore_index
    for _, _, class_id, rle in sorted(things, key=lambda t: (t[0], t[1])):
        out[_decode(rle)] = class_id
    return out


def _decode(rle: dict) -> np.ndarray:
    """(H, W) bool mask of an RLE."""
    with warnings.catch_warnings():
        # pycocotools' compiled decoder calls numpy's __array__ the pre-NumPy-2 way: a harmless DeprecationWarning
        # per image that its module name (_mask) keeps out of reach of a "pycocotools.*" filter.
        warnings.filterwarnings("ignore", message=r"__array__ implementation", category=DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


# ----------------------------------------------------------------------------------------------------------------
# Official annotation files: split layout shared by the three official-file formats
# ----------------------------------------------------------------------------------------------------------------

_SPLIT_OPTIONS: dict[str, Any] = {
    "year": 2017,  # the year in the file and folder names: 2014 or 2017
    "splits": {"train": "train", "validation": "val"},  # Hugging Face split -> COCO split
    "annotations_dir": "annotations",  # folder of the JSON files, relative to the root
    "image_dir": "{split}{year}",  # image folder template, relative to the root ({split} is the COCO split)
}
_INSTANCE_OPTIONS: dict[str, Any] = {
    "category_map": "contiguous",  # background = 0, categories sorted by id -> 1..N
    "crowd": "ignore",  # iscrowd regions -> ignore_index ("ignore") or their category ("class")
    "skip_empty": False,  # drop images without any annotation (default: keep them as all-background)
}


def _check_choice(config: DatasetConfig, key: str, allowed: tuple) -> None:
    if config.options[key] not in allowed:
        raise DatasetError(f"{key!r} must be one of {', '.join(map(repr, allowed))}, not {config.options[key]!r}",
                           config.source)


def _check_bool(config: DatasetConfig, key: str) -> None:
    if not isinstance(config.options[key], bool):
        raise DatasetError(f"{key!r} must be true or false, not {config.options[key]!r}", config.source)


class _OfficialFiles(DatasetFormat):
    """Paths and splits of the official ``{kind}_{split}{year}.json`` files; subclasses say which kinds."""

    kinds: tuple[str, ...] = ()  # "captions", "instances"

    @classmethod
    def check_config(cls, config: DatasetConfig) -> None:
        super().check_config(config)
        opts = config.options
        splits = opts["splits"]
        if not isinstance(splits, dict) or not splits or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in splits.items()
        ):
            raise DatasetError("'splits' must map Hugging Face split names to COCO split names, "
                               "e.g. {train: train, validation: val}", config.source)
        if not isinstance(opts["year"], (int, str)) or isinstance(opts["year"], bool):
            raise DatasetError(f"'year' must be a year such as 2017, not {opts['year']!r}", config.source)
        for key in ("annotations_dir", "image_dir"):
            if not isinstance(opts[key], str):
                raise DatasetError(f"{key!r} must be a folder path (a string)", config.source)
        try:
            opts["image_dir"].format(split="train", year=2017)
        except (KeyError, IndexError, ValueError) as err:
            raise DatasetError(f"'image_dir' may use only {{split}} and {{year}} ({err!r})", config.source) from None

    def json_path(self, kind: str, split: str) -> Path:
        coco_split = self.config.options["splits"][split]
        name = f"{kind}_{coco_split}{self.config.options['year']}.json"
        return self.root / self.config.options["annotations_dir"] / name

    def image_dir(self, split: str) -> Path:
        coco_split = self.config.options["splits"][split]
        return self.root / self.config.options["image_dir"].format(split=coco_split, year=self.config.options["year"])

    def split_names(self) -> list[str]:
        """The configured splits whose JSON file(s) exist; a DatasetError naming the files when none does."""
        found, expected = [], []
        for split in self.config.options["splits"]:
            paths = [self.json_path(kind, split) for kind in self.kinds]
            missing = [p for p in paths if not p.is_file()]
            if missing:
                # Not an error: COCO downloads often hold only some splits. records() raises if one is asked for.
                logger.info("%s: split %r left out, missing %s", self.config.name, split, ", ".join(map(str, missing)))
            else:
                found.append(split)
            expected += missing
        if not found:
            raise DatasetError(
                f"no split has its annotation file(s): none of {', '.join(map(str, expected))} exists; "
                "check --root and the YAML's 'year', 'splits' and 'annotations_dir'",
                self.root,
            )
        return found

    def source_files(self) -> list[Path]:
        return [self.json_path(kind, s) for s in self.config.options["splits"] for kind in self.kinds]

    def _check_split(self, split: str) -> None:
        if split not in self.config.options["splits"]:
            configured = ", ".join(self.config.options["splits"])
            raise DatasetError(f"split {split!r} is not in the YAML's 'splits' ({configured})", self.config.source)

    def _load(self, kind: str, split: str) -> tuple[Path, dict]:
        """(path, parsed JSON) with its ``images`` list checked; a missing file names the split that needs it."""
        self._check_split(split)
        path = self.json_path(kind, split)
        if not path.is_file():
            raise DatasetError(f"{kind} file for split {split!r} not found; download it or drop the split from "
                               "the YAML's 'splits'", path)
        data = read_json(path, f"COCO {kind} file")
        list_key(data, "images", path, f"COCO {kind} file")
        list_key(data, "annotations", path, f"COCO {kind} file")
        return path, data

    @staticmethod
    def _images_by_id(data: dict, path: Path) -> dict[int, dict]:
        """Image entries by id (entries without an id are a broken file, not a bad row)."""
        images: dict[int, dict] = {}
        for i, img in enumerate(data["images"]):
            if not isinstance(img, dict) or not isinstance(img.get("id"), int):
                raise DatasetError(f"images[{i}] has no integer 'id'; this is not a COCO annotation file", path)
            if img["id"] in images:
                raise DatasetError(f"image id {img['id']} appears twice in 'images'", path)
            images[img["id"]] = img
        return images

    def _image_path(self, img: dict, split: str, json_path: Path) -> Path:
        name = img.get("file_name")
        if not isinstance(name, str) or not name:
            raise DatasetError(f"image {img['id']} has no 'file_name'", json_path)
        return self.image_dir(split) / name


# ----------------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------------


def group_captions(data: dict, image_ids: set[int], path: Path) -> dict[int, list[str]]:
    """image id -> its captions in ascending annotation id; warns with the count of captions of unknown images."""
    by_image: dict[int, list[tuple[int, str]]] = {i: [] for i in image_ids}
    orphans = 0
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or "caption" not in ann:
            raise DatasetError(f"an annotation without 'caption': {ann!r}; is this a captions file?", path)
        if ann.get("image_id") not in by_image:
            orphans += 1
            continue
        # A missing annotation id sorts last but keeps file order (sorted() is stable).
        by_image[ann["image_id"]].append((ann.get("id", float("inf")), ann["caption"]))
    if orphans:
        _warn(f"{path}: {orphans} caption(s) name an image_id that is not in 'images'; they are left out")
    return {i: [c for _, c in sorted(caps, key=lambda t: t[0])] for i, caps in by_image.items()}


@register_format
class CocoCaptions(_OfficialFiles):
    """Official COCO captions: ``{annotations_dir}/captions_{split}{year}.json`` and ``{split}{year}/*.jpg``."""

    name = "coco_captions"
    has_captions = True
    options = dict(_SPLIT_OPTIONS)
    kinds = ("captions",)

    def records(self, split: str) -> Iterator[dict]:
        path, data = self._load("captions", split)
        images = self._images_by_id(data, path)
        captions = group_captions(data, set(images), path)
        for image_id in sorted(images):
            try:
                image = self._image_path(images[image_id], split, path)
            except DatasetError as err:
                yield BadRecord(err)
                continue
            yield {"image_id": str(image_id), "image": image, "captions": captions[image_id]}


# ----------------------------------------------------------------------------------------------------------------
# Karpathy splits of COCO
# ----------------------------------------------------------------------------------------------------------------


@register_format
class CocoKarpathy(DatasetFormat):
    """Karpathy's ``dataset_coco.json``; images at ``{root}/{filepath}/{filename}`` (``train2014/``, ``val2014/``)."""

    name = "coco_karpathy"
    has_captions = True
    options = {
        "karpathy_json": "dataset_coco.json",  # relative to the root (or absolute)
        "restval_to_train": True,  # Karpathy's "restval" images join "train"; false: a split named "restval"
    }

    @classmethod
    def check_config(cls, config: DatasetConfig) -> None:
        super().check_config(config)
        _check_bool(config, "restval_to_train")
        if not isinstance(config.options["karpathy_json"], str) or not config.options["karpathy_json"]:
            raise DatasetError("'karpathy_json' must be a file path", config.source)

    def json_path(self) -> Path:
        return self.root / self.config.options["karpathy_json"]

    def split_names(self) -> list[str]:
        return karpathy_split_names(self.json_path(), self.config.options["restval_to_train"])

    def source_files(self) -> list[Path]:
        return [self.json_path()]

    def records(self, split: str) -> Iterator[dict]:
        root = self.root
        yield from iter_karpathy(
            self.json_path(),
            lambda e: root / e.get("filepath", "") / e["filename"],
            split,
            restval_to_train=self.config.options["restval_to_train"],
        )


# ----------------------------------------------------------------------------------------------------------------
# Instances -> semantic masks
# ----------------------------------------------------------------------------------------------------------------


@register_format
class CocoInstances(_OfficialFiles):
    """Official COCO instances: ``{annotations_dir}/instances_{split}{year}.json`` -> (H, W) semantic masks."""

    name = "coco_instances"
    has_masks = True
    options = {**_SPLIT_OPTIONS, **_INSTANCE_OPTIONS}
    kinds = ("instances",)

    def __init__(self, config: DatasetConfig, root: Path | None):
        super().__init__(config, root)
        self._categories: list[tuple[int, str]] | None = None  # (COCO id, name) sorted by id, from the JSON
        self._names: list[str] | None = None

    @classmethod
    def check_config(cls, config: DatasetConfig) -> None:
        super().check_config(config)
        _check_choice(config, "category_map", CATEGORY_MAPS)
        _check_choice(config, "crowd", CROWD_MODES)
        _check_bool(config, "skip_empty")

    @classmethod
    def provides_classes(cls) -> bool:
        return True

    @staticmethod
    def _read_categories(data: dict, path: Path) -> list[tuple[int, str]]:
        cats = list_key(data, "categories", path, "COCO instances file")
        if not cats:
            raise DatasetError("'categories' is empty; an instances file must list its categories", path)
        out = []
        for c in cats:
            if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
                raise DatasetError(f"a category without an integer 'id' and a 'name': {c!r}", path)
            out.append((c["id"], c["name"]))
        if len({i for i, _ in out}) != len(out):
            raise DatasetError("two categories share an id", path)
        return sorted(out)

    def categories(self) -> list[tuple[int, str]]:
        """(COCO category id, name) sorted by id, read from the first split's instances file (cached)."""
        if self._categories is None:
            split = self.split_names()[0]
            path, data = self._load("instances", split)
            self._categories = self._read_categories(data, path)
        return self._categories

    def class_names(self) -> list[str]:
        """``background`` + the JSON's category names by id; the YAML's ``classes``, if any, must have that length."""
        if self._names is not None:
            return self._names
        cats = self.categories()
        from_json = [BACKGROUND] + [name for _, name in cats]
        names = from_json
        if self.config.classes is not None:
            if len(self.config.classes) != len(from_json):
                raise DatasetError(
                    f"'classes' has {len(self.config.classes)} names but the instances file has {len(cats)} "
                    f"categories, i.e. {len(from_json)} classes with background; remove 'classes' from the YAML "
                    "(COCO formats read them from the JSON) or list exactly that many",
                    self.config.source,
                )
            names = list(self.config.classes)
            if names[1:] != from_json[1:]:
                # Renaming is allowed (the YAML wins) but a reordered list would silently swap classes.
                _warn(f"{self.config.source}: 'classes' differs from the instances file's category names; "
                      "the YAML's names are used in the order of the category ids")
        if self.config.ignore_index < len(names):
            raise DatasetError(
                f"ignore_index {self.config.ignore_index} is also a class id (classes are 0..{len(names) - 1})",
                self.config.source,
            )
        self._names = names
        return names

    def class_of(self) -> dict[int, int]:
        """COCO category id -> class id (contiguous: 1..N by ascending category id)."""
        return {cat_id: i + 1 for i, (cat_id, _) in enumerate(self.categories())}

    def _mask_records(self, split: str, path: Path, data: dict, keep: set[int] | None = None
                      ) -> Iterator[tuple[int, dict]]:
        """(image id, record {image_id, image, mask} or BadRecord) in ascending image id; only ids in ``keep``."""
        if self._read_categories(data, path) != self.categories():
            raise DatasetError(
                f"its categories differ from those of split {self.split_names()[0]!r}; all splits must share one "
                "class list", path)
        images = self._images_by_id(data, path)
        all_ids = set(images)
        if keep is not None:
            images = {i: img for i, img in images.items() if i in keep}
        anns: dict[int, list[dict]] = {i: [] for i in images}
        orphans = 0
        for ann in data["annotations"]:
            if isinstance(ann, dict) and ann.get("image_id") in anns:
                anns[ann["image_id"]].append(ann)
            elif not isinstance(ann, dict) or ann.get("image_id") not in all_ids:
                orphans += 1  # (images left out by ``keep`` were reported by the caller)
        if orphans:
            _warn(f"{path}: {orphans} annotation(s) name an image_id that is not in 'images'; they are left out")
        class_of, opts = self.class_of(), self.config.options
        skipped_empty = 0
        for image_id in sorted(images):
            if opts["skip_empty"] and not anns[image_id]:
                skipped_empty += 1
                continue
            img = images[image_id]
            try:
                image = self._image_path(img, split, path)
                h, w = img.get("height"), img.get("width")
                if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
                    raise DatasetError(f"image {image_id} needs positive integer 'height' and 'width'", path)
                try:
                    mask = paint_semantic_mask(anns[image_id], h, w, class_of, self.config.ignore_index,
                                               opts["crowd"])
                except ValueError as err:
                    raise DatasetError(f"image {image_id}: {err}", path) from None
                yield image_id, {"image_id": str(image_id), "image": image, "mask": mask}
            except DatasetError as err:
                yield image_id, BadRecord(err)
        if skipped_empty:
            logger.info("%s: skip_empty dropped %d image(s) without annotations", path, skipped_empty)

    def records(self, split: str) -> Iterator[dict]:
        path, data = self._load("instances", split)
        for _, record in self._mask_records(split, path, data):
            yield record


# ----------------------------------------------------------------------------------------------------------------
# Captions + instances joined by image id
# ----------------------------------------------------------------------------------------------------------------


@register_format
class CocoCaptionsMasks(CocoInstances):
    """Captions and instance masks of the same images: ``captions_*`` and ``instances_*`` joined on image id."""

    name = "coco_captions_masks"
    has_captions = True
    has_masks = True
    options = {**_SPLIT_OPTIONS, **_INSTANCE_OPTIONS,
               "join": "inner"}  # "inner": drop images in only one file (warns with counts); "strict": raise
    kinds = ("captions", "instances")

    @classmethod
    def check_config(cls, config: DatasetConfig) -> None:
        super().check_config(config)
        _check_choice(config, "join", JOIN_MODES)

    def records(self, split: str) -> Iterator[dict]:
        cap_path, cap_data = self._load("captions", split)
        cap_images = self._images_by_id(cap_data, cap_path)
        captions = group_captions(cap_data, set(cap_images), cap_path)
        del cap_data  # only the grouped captions are needed; a full COCO captions JSON is large
        inst_path, inst_data = self._load("instances", split)
        inst_images = self._images_by_id(inst_data, inst_path)
        both = set(cap_images) & set(inst_images)
        only_captions, only_instances = len(cap_images) - len(both), len(inst_images) - len(both)
        if only_captions or only_instances:
            msg = (f"{self.config.name}/{split}: {only_captions} image(s) only in {cap_path.name} and "
                   f"{only_instances} only in {inst_path.name}")
            if self.config.options["join"] == "strict":
                raise DatasetError(msg + " (join: strict); use the files of one COCO release, or join: inner",
                                   cap_path.parent)
            _warn(msg + f"; join: inner drops them ({only_captions + only_instances} image(s) in all)")
        for image_id, record in self._mask_records(split, inst_path, inst_data, keep=both):
            a, b = cap_images[image_id], inst_images[image_id]
            if any(a.get(k) != b.get(k) for k in ("file_name", "height", "width")):
                record = BadRecord(DatasetError(
                    f"image {image_id}: file_name/height/width differ between {cap_path.name} and "
                    f"{inst_path.name}; use the files of one COCO release", cap_path.parent))
            elif not isinstance(record, BadRecord):
                record["captions"] = captions[image_id]
            yield record
