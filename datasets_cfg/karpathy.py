"""Karpathy's caption split files: ``dataset_coco.json``, ``dataset_flickr8k.json``, ``dataset_flickr30k.json``.

``{"images": [{"filename", "filepath"?, "split": train|restval|val|test, "sentences": [{"raw", "tokens"}], ...}]}``
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from .builder import BadRecord
from .errors import DatasetError
from .json_files import list_key, read_json

# Karpathy's split names -> Hugging Face split names ("restval" is looked up separately: see karpathy_hf_split).
_KARPATHY_TO_HF = {"train": "train", "val": "validation", "test": "test"}
KARPATHY_SPLITS = ("train", "restval", "val", "test")


# ----------------------------------------------------------------------------------------------------------------


def karpathy_hf_split(karpathy_split: str, restval_to_train: bool = True) -> str:
    """Hugging Face split name of a Karpathy split: train/restval -> train, val -> validation, test -> test.

    With ``restval_to_train=False``, ``restval`` stays a split of its own named ``restval``.
    """
    if karpathy_split == "restval":
        return "train" if restval_to_train else "restval"
    return _KARPATHY_TO_HF[karpathy_split]


def read_karpathy_json(json_path: str | Path) -> list[dict]:
    """The ``images`` list of a Karpathy split file, checked to hold objects with a known ``split``."""
    json_path = Path(json_path)
    images = list_key(read_json(json_path, "Karpathy split file"), "images", json_path, "Karpathy split file")
    for i, entry in enumerate(images):
        split = entry.get("split") if isinstance(entry, dict) else None
        if split not in KARPATHY_SPLITS:
            raise DatasetError(
                f"images[{i}] has split {split!r}; a Karpathy split file uses only {', '.join(KARPATHY_SPLITS)}",
                json_path,
            )
    return images


def karpathy_split_names(json_path: str | Path, restval_to_train: bool = True) -> list[str]:
    """The Hugging Face splits that hold at least one image, in the order train, validation, test, restval."""
    present = {karpathy_hf_split(e["split"], restval_to_train) for e in read_karpathy_json(json_path)}
    return [s for s in ("train", "validation", "test", "restval") if s in present]


def _default_karpathy_id(entry: dict) -> str:
    return str(entry["cocoid"]) if "cocoid" in entry else str(entry["filename"])


def iter_karpathy(
    json_path: str | Path,
    image_path_fn: Callable[[dict], Path],
    split: str | None = None,
    *,
    restval_to_train: bool = True,
    image_id_fn: Callable[[dict], str] | None = None,
) -> Iterator[dict]:
    """Records ``{"image_id", "image", "captions"}`` of one Hugging Face split of a Karpathy split file.

    Args:
        json_path: ``dataset_coco.json`` / ``dataset_flickr8k.json`` / ``dataset_flickr30k.json``.
        image_path_fn: image entry (a dict with at least ``filename``) -> image file path; e.g. for COCO
            ``lambda e: root / e["filepath"] / e["filename"]``, for Flickr
            ``lambda e: root / "images" / e["filename"]``.
        split: ``"train"``, ``"validation"``, ``"test"`` (``"restval"`` when ``restval_to_train`` is False), or
            None for every image.
        restval_to_train: fold Karpathy's ``restval`` images into ``train`` (the usual "Karpathy train", 113k
            COCO images).
        image_id_fn: image entry -> ``image_id``; default ``str(cocoid)`` when the entry has one, else ``filename``.

    Captions are each sentence's ``raw`` text (its ``tokens`` joined by spaces when ``raw`` is absent), in file
    order. An entry that cannot be read is yielded as a ``BadRecord`` so that ``on_error`` decides; an image with
    no sentences yields an empty caption list, which the builder reports.
    """
    json_path = Path(json_path)
    id_fn = image_id_fn or _default_karpathy_id
    for i, entry in enumerate(read_karpathy_json(json_path)):
        if split is not None and karpathy_hf_split(entry["split"], restval_to_train) != split:
            continue
        try:
            yield _karpathy_record(entry, i, json_path, image_path_fn, id_fn)
        except DatasetError as err:
            yield BadRecord(err)


def _karpathy_record(entry: dict, i: int, json_path: Path, image_path_fn, id_fn) -> dict:
    if not isinstance(entry.get("filename"), str) or not entry["filename"]:
        raise DatasetError(f"images[{i}] has no 'filename'; every image entry needs one", json_path)
    sentences = entry.get("sentences", [])
    if not isinstance(sentences, list):
        raise DatasetError(f"images[{i}] ({entry['filename']}): 'sentences' must be a list", json_path)
    captions = []
    for s in sentences:
        if isinstance(s, dict) and isinstance(s.get("raw"), str):
            captions.append(s["raw"])
        elif isinstance(s, dict) and isinstance(s.get("tokens"), list):
            captions.append(" ".join(map(str, s["tokens"])))
        else:
            raise DatasetError(
                f"images[{i}] ({entry['filename']}): a sentence without 'raw' text or 'tokens': {s!r}", json_path
            )
    return {"image_id": id_fn(entry), "image": Path(image_path_fn(entry)), "captions": captions}
