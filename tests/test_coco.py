"""COCO formats: coco_mini from ../shared/data, plus tiny generated files for the corner cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets_cfg import (
    CONFIG_DIR,
    DatasetError,
    dataset_label_spec,
    load_config,
    load_dataset_from_config,
    parse_config,
)
from datasets_cfg.builder import BadRecord, make_format
from datasets_cfg.karpathy import iter_karpathy, karpathy_split_names

# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------

H, W = 16, 20  # (height, width) of every generated image


def _jpeg(path: Path, size=(W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 80, 40)).save(path, format="JPEG")


def _json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def _image_entry(image_id: int, h=H, w=W) -> dict:
    return {"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": h, "width": w}


def _rect(top, left, bottom, right) -> np.ndarray:
    """(H, W) bool mask of rows top..bottom-1, cols left..right-1."""
    m = np.zeros((H, W), bool)
    m[top:bottom, left:right] = True
    return m


def _rle(m: np.ndarray) -> dict:
    """Compressed RLE (JSON-safe: counts as str), as in COCO's result files."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(m: np.ndarray) -> dict:
    """Uncompressed RLE as COCO stores crowd regions: column-major run lengths, starting with a run of zeros."""
    flat = m.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def _ann(ann_id, image_id, cat, segmentation, iscrowd=0) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "segmentation": segmentation,
            "iscrowd": iscrowd, "area": 0.0, "bbox": [0, 0, 1, 1]}


CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]  # ids with gaps


def _masks(ds) -> dict[str, np.ndarray]:
    return {row["image_id"]: np.array(row["mask"]) for row in ds}


def _cfg(fmt: str, **kw) -> dict:
    return {"name": f"tiny_{fmt}", "format": fmt, **kw}


# ------------------------------------------------------------------------------------------------------------
# coco_mini (real data)
# ------------------------------------------------------------------------------------------------------------


def test_shipped_yamls_parse_and_have_no_root():
    for name in ("coco_captions", "coco_karpathy", "coco_instances", "coco_captions_masks"):
        cfg = load_config(CONFIG_DIR / f"{name}.yaml")
        assert cfg.format == name and cfg.root is None


def test_coco_mini_captions(shared_data, cache_dir):
    root = shared_data / "coco_mini"
    ds = load_dataset_from_config("coco_captions", root=root, cache_dir=cache_dir)
    assert list(ds) == ["train"]  # no captions_val2017.json: validation is left out
    train = ds["train"]
    assert train.num_rows == 80
    caps = train["captions"]
    assert sum(map(len, caps)) == 400 and {len(c) for c in caps} == {5}
    ids = train["image_id"]
    assert ids == sorted(ids, key=int)  # ascending COCO id
    row = train[ids.index("790")]
    assert row["captions"][0] == "a family is sitting down at a table to have cake"
    assert row["image"].mode == "RGB"


def _expected_masks(ann_file: Path, image_ids) -> dict[str, np.ndarray]:
    """The documented rule, computed independently with pycocotools' own ``COCO.annToMask``."""
    from pycocotools.coco import COCO

    coco = COCO(str(ann_file))
    class_of = {cat: i + 1 for i, cat in enumerate(sorted(coco.getCatIds()))}
    out = {}
    for image_id in image_ids:
        info = coco.loadImgs([image_id])[0]
        expected = np.zeros((info["height"], info["width"]), np.uint8)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
        for a in anns:
            if a["iscrowd"]:
                expected[coco.annToMask(a) == 1] = 255
        things = [(coco.annToMask(a), a) for a in anns if not a["iscrowd"]]
        for m, a in sorted(things, key=lambda t: (-int(t[0].sum()), t[1]["id"])):
            expected[m == 1] = class_of[a["category_id"]]
        out[str(image_id)] = expected
    return out


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on NumPy 2
def test_coco_mini_instances(shared_data, cache_dir):
    root = shared_data / "coco_mini"
    ann_file = root / "annotations" / "instances_train2017.json"
    data = json.loads(ann_file.read_text())
    train = load_dataset_from_config("coco_instances", root=root, cache_dir=cache_dir)["train"]
    assert train.num_rows == 80
    names = train.features["mask_classes"].feature.names
    assert names == ["background"] + [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    assert len(names) == 81 and names[1] == "person" and names[-1] == "toothbrush"
    spec = dataset_label_spec("coco_instances", root)
    assert spec.class_names == tuple(names) and spec.ignore_index == 255

    crowd_images = sorted({a["image_id"] for a in data["annotations"] if a["iscrowd"]})
    checked = crowd_images + [790, 30752, 37666]
    got = _masks(train.select([train["image_id"].index(str(i)) for i in checked]))
    expected = _expected_masks(ann_file, checked)
    for image_id in map(str, checked):
        np.testing.assert_array_equal(got[image_id], expected[image_id], err_msg=f"image {image_id}")
    # Crowd regions not covered by an object are ignore; every crowd image keeps some.
    assert all((got[str(i)] == 255).any() for i in crowd_images)
    row = train[train["image_id"].index("790")]
    assert row["mask_classes"] == sorted(np.unique(got["790"]).tolist())


def test_coco_mini_captions_masks(shared_data, cache_dir):
    root = shared_data / "coco_mini"
    joined = load_dataset_from_config("coco_captions_masks", root=root, cache_dir=cache_dir)["train"]
    assert joined.num_rows == 80
    assert {"captions", "mask", "mask_classes"} <= set(joined.column_names)
    assert sum(map(len, joined["captions"])) == 400
    row = joined[joined["image_id"].index("790")]
    assert row["captions"][0] == "a family is sitting down at a table to have cake"
    assert np.array(row["mask"]).shape == (row["image"].height, row["image"].width)


# ------------------------------------------------------------------------------------------------------------
# coco_karpathy and the shared Karpathy parser
# ------------------------------------------------------------------------------------------------------------


def _karpathy_tree(root: Path) -> None:
    entries = []
    for cocoid, split, folder in [(1, "train", "train2014"), (2, "restval", "val2014"), (3, "val", "val2014"),
                                  (4, "test", "val2014"), (5, "train", "train2014")]:
        name = f"COCO_{folder}_{cocoid:012d}.jpg"
        _jpeg(root / folder / name)
        sentences = [{"raw": f"image {cocoid} raw", "tokens": ["ignored"]}, {"tokens": ["a", "tokens", "only"]}]
        entries.append({"filepath": folder, "filename": name, "split": split, "cocoid": cocoid,
                        "sentences": sentences})
    _json(root / "dataset_coco.json", {"images": entries, "dataset": "coco"})


def test_karpathy_splits_and_restval(tmp_path, cache_dir):
    root = tmp_path / "coco"
    _karpathy_tree(root)
    ds = load_dataset_from_config(_cfg("coco_karpathy"), root=root, cache_dir=cache_dir)
    assert sorted(ds) == ["test", "train", "validation"]
    assert ds["train"]["image_id"] == ["1", "2", "5"]  # restval (2) folded into train, file order kept
    assert ds["validation"]["image_id"] == ["3"] and ds["test"]["image_id"] == ["4"]
    assert ds["test"][0]["captions"] == ["image 4 raw", "a tokens only"]  # raw wins; tokens when no raw

    ds = load_dataset_from_config(_cfg("coco_karpathy", restval_to_train=False), root=root, cache_dir=cache_dir)
    assert sorted(ds) == ["restval", "test", "train", "validation"]
    assert ds["train"]["image_id"] == ["1", "5"] and ds["restval"]["image_id"] == ["2"]


def test_iter_karpathy_flickr_layout(tmp_path):
    """The Flickr Karpathy files have no filepath and no cocoid: ids default to the file name."""
    path = _json(tmp_path / "dataset_flickr8k.json", {"images": [
        {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "x"}]},
        {"filename": "b.jpg", "split": "test", "sentences": [{"raw": "y"}]},
        {"split": "train", "sentences": []},  # no filename -> BadRecord, not a crash
    ]})
    assert karpathy_split_names(path) == ["train", "test"]
    recs = list(iter_karpathy(path, lambda e: tmp_path / "images" / e["filename"], "train"))
    assert recs[0] == {"image_id": "a.jpg", "image": tmp_path / "images" / "a.jpg", "captions": ["x"]}
    assert isinstance(recs[1], BadRecord) and "filename" in str(recs[1]["error"])
    recs = list(iter_karpathy(path, lambda e: Path(e["filename"]), "test", image_id_fn=lambda e: e["filename"][:-4]))
    assert recs[0]["image_id"] == "b"


def test_karpathy_unknown_split_value(tmp_path, cache_dir):
    _json(tmp_path / "dataset_coco.json", {"images": [{"filename": "a.jpg", "split": "dev", "sentences": []}]})
    with pytest.raises(DatasetError, match=r"dataset_coco\.json.*'dev'"):
        load_dataset_from_config(_cfg("coco_karpathy"), root=tmp_path, cache_dir=cache_dir)


# ------------------------------------------------------------------------------------------------------------
# coco_captions: missing files, captions order, empty caption lists
# ------------------------------------------------------------------------------------------------------------


def _captions_tree(root: Path, image_ids=(3, 1), captions=None, write_images=True) -> Path:
    images = [_image_entry(i) for i in image_ids]
    if write_images:
        for img in images:
            _jpeg(root / "train2017" / img["file_name"])
    if captions is None:
        # Listed out of id order: records must follow annotation ids.
        captions = [{"id": 12, "image_id": i, "caption": f"second of {i}"} for i in image_ids]
        captions += [{"id": 11 if i == 1 else 2, "image_id": i, "caption": f"first  of {i} "} for i in image_ids]
    return _json(root / "annotations" / "captions_train2017.json", {"images": images, "annotations": captions})


def test_captions_order_and_ids(tmp_path, cache_dir):
    _captions_tree(tmp_path)
    train = load_dataset_from_config(_cfg("coco_captions"), root=tmp_path, cache_dir=cache_dir)["train"]
    assert train["image_id"] == ["1", "3"]
    assert train[0]["captions"] == ["first of 1", "second of 1"]  # builder collapses whitespace


def test_missing_captions_json(tmp_path, cache_dir):
    cfg = _cfg("coco_captions", splits={"train": "train", "validation": "val"})
    with pytest.raises(DatasetError, match=r"captions_train2017\.json"):
        load_dataset_from_config(cfg, root=tmp_path, cache_dir=cache_dir)  # no split at all

    _captions_tree(tmp_path)
    assert list(load_dataset_from_config(cfg, root=tmp_path, cache_dir=cache_dir)) == ["train"]
    with pytest.raises(DatasetError, match="validation"):
        load_dataset_from_config(cfg, root=tmp_path, splits=["validation"], cache_dir=cache_dir)
    fmt = make_format(parse_config(cfg), tmp_path)
    with pytest.raises(DatasetError, match=r"captions_val2017\.json"):
        next(fmt.records("validation"))


def test_missing_image_file_raises_or_skips(tmp_path, cache_dir):
    _captions_tree(tmp_path)
    missing = tmp_path / "train2017" / "000000000003.jpg"
    missing.unlink()
    with pytest.raises(DatasetError, match="000000000003.jpg"):
        load_dataset_from_config(_cfg("coco_captions"), root=tmp_path, cache_dir=cache_dir)
    with pytest.warns(UserWarning, match=r"skipped 1 bad row.*000000000003\.jpg"):
        ds = load_dataset_from_config(_cfg("coco_captions", on_error="skip"), root=tmp_path, cache_dir=cache_dir)
    assert ds["train"]["image_id"] == ["1"]


def test_empty_caption_list(tmp_path, cache_dir):
    _captions_tree(tmp_path, captions=[{"id": 1, "image_id": 1, "caption": "only image 1 has one"},
                                       {"id": 2, "image_id": 99, "caption": "no such image"}])
    with pytest.raises(DatasetError, match=r"000000000003\.jpg.*empty caption list"), pytest.warns(UserWarning):
        load_dataset_from_config(_cfg("coco_captions"), root=tmp_path, cache_dir=cache_dir)
    with pytest.warns(UserWarning) as record:
        ds = load_dataset_from_config(_cfg("coco_captions", on_error="skip"), root=tmp_path, cache_dir=cache_dir)
    messages = " | ".join(str(w.message) for w in record)
    assert "1 caption(s) name an image_id that is not in 'images'" in messages
    assert "skipped 1 bad row" in messages
    assert ds["train"]["image_id"] == ["1"]


# ------------------------------------------------------------------------------------------------------------
# coco_instances: overlap rule, crowd RLE, classes, empty images
# ------------------------------------------------------------------------------------------------------------

BIG, SMALL = _rect(0, 0, 12, 12), _rect(2, 2, 6, 6)  # 144 and 16 pixels, SMALL inside BIG
TIE_A, TIE_B = _rect(12, 12, 16, 16), _rect(12, 14, 16, 18)  # 16 pixels each, overlapping in cols 14-15
CROWD = _rect(8, 8, 16, 20)


def _instances_tree(root: Path, extra_images=(), name="instances_train2017.json") -> Path:
    images = [_image_entry(7)] + [_image_entry(i) for i in extra_images]
    for img in images:
        _jpeg(root / "train2017" / img["file_name"])
    anns = [
        _ann(21, 7, 1, _rle(TIE_B)),  # file order is not paint order
        _ann(30, 7, 1, _uncompressed_rle(CROWD), iscrowd=1),
        _ann(5, 7, 3, _rle(SMALL)),  # lower id than BIG: area, not id, decides
        _ann(10, 7, 1, [[0, 0, 12, 0, 12, 12, 0, 12]]),  # BIG as a polygon
        _ann(20, 7, 7, _rle(TIE_A)),
    ]
    return _json(root / "annotations" / name, {"images": images, "annotations": anns, "categories": CATEGORIES})


def test_instances_overlap_rule_and_crowd(tmp_path, cache_dir):
    _instances_tree(tmp_path, extra_images=[2])
    train = load_dataset_from_config(_cfg("coco_instances"), root=tmp_path, cache_dir=cache_dir)["train"]
    assert train.features["mask_classes"].feature.names == ["background", "person", "car", "dog"]  # by COCO id
    masks = _masks(train)
    assert list(masks) == ["2", "7"]
    assert not masks["2"].any()  # no annotations: all background (skip_empty: false)

    person, car, dog = 1, 2, 3
    expected = np.zeros((H, W), np.uint8)
    expected[CROWD] = 255  # crowd first, so every object below wins over it
    expected[BIG] = person  # largest object first ...
    expected[SMALL] = car  # ... smaller ones on top
    expected[TIE_A] = dog  # equal areas: ascending annotation id, so id 21 ...
    expected[TIE_B] = person  # ... paints over id 20
    np.testing.assert_array_equal(masks["7"], expected)
    assert (masks["7"] == 255).sum() == CROWD.sum() - (CROWD & (BIG | TIE_A | TIE_B)).sum() > 0
    assert train[1]["mask_classes"] == [0, person, car, dog]  # ignore is not a class


def test_crowd_as_class_custom_ignore_and_skip_empty(tmp_path, cache_dir):
    _instances_tree(tmp_path, extra_images=[2])
    cfg = _cfg("coco_instances", crowd="class", skip_empty=True, ignore_index=100)
    train = load_dataset_from_config(cfg, root=tmp_path, cache_dir=cache_dir)["train"]
    assert train["image_id"] == ["7"]  # the empty image is dropped
    mask = _masks(train)["7"]
    assert not (mask == 100).any() and mask[15, 19] == 1  # the crowd region is its category, person

    train = load_dataset_from_config(_cfg("coco_instances", ignore_index=100), root=tmp_path, cache_dir=cache_dir)
    assert _masks(train["train"])["7"][15, 19] == 100


def test_instances_classes_from_yaml(tmp_path, cache_dir):
    _instances_tree(tmp_path)
    with pytest.raises(DatasetError, match="'classes' has 3 names but the instances file has 3 categories"):
        load_dataset_from_config(_cfg("coco_instances", classes=["a", "b", "c"]), root=tmp_path, cache_dir=cache_dir)
    renamed = ["void", "person", "car", "dog"]
    ds = load_dataset_from_config(_cfg("coco_instances", classes=renamed), root=tmp_path, cache_dir=cache_dir)
    assert ds["train"].features["mask_classes"].feature.names == renamed
    with pytest.raises(DatasetError, match="category_map"):
        load_dataset_from_config(_cfg("coco_instances", category_map="coco_ids"), root=tmp_path, cache_dir=cache_dir)


def test_instances_bad_annotation(tmp_path, cache_dir):
    path = _instances_tree(tmp_path, extra_images=[2])
    data = json.loads(path.read_text())
    data["annotations"].append(_ann(99, 2, 42, _rle(SMALL)))  # category 42 is not listed
    _json(path, data)
    with pytest.raises(DatasetError, match=r"instances_train2017\.json.*annotation 99 has category_id 42"):
        load_dataset_from_config(_cfg("coco_instances"), root=tmp_path, cache_dir=cache_dir)
    with pytest.warns(UserWarning, match="skipped 1 bad row"):
        ds = load_dataset_from_config(_cfg("coco_instances", on_error="skip"), root=tmp_path, cache_dir=cache_dir)
    assert ds["train"]["image_id"] == ["7"]


def test_mask_size_comes_from_the_json(tmp_path, cache_dir):
    path = _instances_tree(tmp_path)
    _jpeg(tmp_path / "train2017" / "000000000007.jpg", size=(W + 4, H))  # the file disagrees with the json
    with pytest.raises(DatasetError, match=f"mask is {W}x{H} but its image is {W + 4}x{H}"):
        load_dataset_from_config(_cfg("coco_instances"), root=tmp_path, cache_dir=cache_dir)
    assert path.is_file()


# ------------------------------------------------------------------------------------------------------------
# coco_captions_masks: the join
# ------------------------------------------------------------------------------------------------------------


def test_captions_masks_inner_join_warns_with_counts(tmp_path, cache_dir):
    _instances_tree(tmp_path, extra_images=[2])  # instances: images 2, 7
    _captions_tree(tmp_path, image_ids=(7, 5))  # captions: images 5, 7
    with pytest.warns(UserWarning, match=r"1 image\(s\) only in captions_train2017\.json and 1 only in instances"):
        ds = load_dataset_from_config(_cfg("coco_captions_masks"), root=tmp_path, cache_dir=cache_dir)
    train = ds["train"]
    assert train["image_id"] == ["7"]
    assert train[0]["captions"] == ["first of 7", "second of 7"]
    assert np.array(train[0]["mask"])[3, 3] == 2  # car, on top of person
    with pytest.raises(DatasetError, match="join: strict"):
        load_dataset_from_config(_cfg("coco_captions_masks", join="strict"), root=tmp_path, cache_dir=cache_dir)


def test_captions_masks_needs_both_files(tmp_path, cache_dir):
    _captions_tree(tmp_path)
    with pytest.raises(DatasetError, match=r"instances_train2017\.json"):
        load_dataset_from_config(_cfg("coco_captions_masks"), root=tmp_path, cache_dir=cache_dir)


def test_captions_masks_disagreeing_image_entries(tmp_path, cache_dir):
    _instances_tree(tmp_path)
    path = _captions_tree(tmp_path, image_ids=(7,))
    data = json.loads(path.read_text())
    data["images"][0]["height"] = H + 1  # the two files describe image 7 differently
    _json(path, data)
    with pytest.raises(DatasetError, match="image 7: file_name/height/width differ"):
        load_dataset_from_config(_cfg("coco_captions_masks"), root=tmp_path, cache_dir=cache_dir)
