"""Each file format the data layer reads, on small files written by the tests."""

import json

import numpy as np
import pytest
from PIL import Image

from datasets_cfg import DatasetError, load_dataset_from_config
from tests.image_factory import write_mask, write_photo


def test_flickr_token_official_layout(tmp_path, cache_dir):
    img_dir = tmp_path / "Flicker8k_Dataset"
    for i, name in enumerate(["a.jpg", "b.jpg", "c.jpg"]):
        write_photo(img_dir / name, seed=i)
    lines = [f"{n}#{k}\t{n[0]} caption number {k} ." for n in ("a.jpg", "b.jpg", "c.jpg") for k in range(5)]
    (tmp_path / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("a.jpg\nb.jpg\n")
    (tmp_path / "Flickr_8k.devImages.txt").write_text("c.jpg\n")
    ds = load_dataset_from_config("flickr8k", root=tmp_path, cache_dir=cache_dir)
    assert sorted(ds) == ["train", "validation"]  # no test list written -> no test split
    assert ds["train"]["image_id"] == ["a", "b"]
    row = ds["validation"][0]
    assert row["captions"] == [f"c caption number {k} ." for k in range(5)]
    assert row["image"].mode == "RGB" and row["image"].size == (32, 24)


def test_flickr_token_without_split_lists_puts_all_in_train(tmp_path, cache_dir):
    write_photo(tmp_path / "flickr30k-images" / "1.jpg")
    (tmp_path / "results_20130124.token").write_text("1.jpg#0\tA dog .\n1.jpg#1\tA brown dog .\n")
    ds = load_dataset_from_config("flickr30k", root=tmp_path, cache_dir=cache_dir)
    assert list(ds) == ["train"] and ds["train"][0]["captions"] == ["A dog .", "A brown dog ."]


def test_flickr_captions_json_layout(tmp_path, cache_dir):
    for n in ("x.jpg", "y.jpg"):
        write_photo(tmp_path / "images" / n)
    entries = [
        {"file": "x.jpg", "split": "train", "captions": ["one", "two"]},
        {"file": "y.jpg", "split": "dev", "captions": ["three"]},
    ]
    (tmp_path / "captions.json").write_text(json.dumps({"images": entries}))
    ds = load_dataset_from_config("flickr8k_captions_json", root=tmp_path, cache_dir=cache_dir)
    assert {s: ds[s].num_rows for s in ds} == {"train": 1, "validation": 1}
    assert ds["validation"][0]["captions"] == ["three"]


def _voc_tree(root, masks):
    for name, mask in masks.items():
        write_photo(root / "JPEGImages" / f"{name}.jpg", w=mask.shape[1], h=mask.shape[0])
        write_mask(root / "SegmentationClass" / f"{name}.png", mask, palette=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(masks) + "\n")


def test_voc_palette_masks_give_indices_and_keep_255_as_ignore(tmp_path, cache_dir):
    mask = np.zeros((24, 32), np.uint8)
    mask[2:10, 3:12] = 15  # person
    mask[1, :] = 255  # VOC's object border
    _voc_tree(tmp_path, {"2007_000001": mask})
    ds = load_dataset_from_config("voc2012", root=tmp_path, cache_dir=cache_dir)
    row = ds["train"][0]
    np.testing.assert_array_equal(np.array(row["mask"]), mask)
    assert row["mask_classes"] == [0, 15]
    assert ds["train"].features["mask_classes"].feature.names[15] == "person"


def test_camvid_layout(tmp_path, cache_dir):
    mask = np.arange(24 * 32).reshape(24, 32) % 12  # every class id 0..10 plus 11 = unlabelled
    write_photo(tmp_path / "train" / "f1.png")
    write_mask(tmp_path / "trainannot" / "f1.png", mask.astype(np.uint8))
    ds = load_dataset_from_config("camvid", root=tmp_path, cache_dir=cache_dir)
    assert list(ds) == ["train"]
    np.testing.assert_array_equal(np.array(ds["train"][0]["mask"]), mask)
    assert ds["train"][0]["mask_classes"] == list(range(11))


def test_image_mask_folders_with_split_subfolders_and_suffix(tmp_path, cache_dir):
    m = np.zeros((24, 32), np.uint8)
    m[5:9, 5:9] = 2
    for split in ("train", "val"):
        write_photo(tmp_path / "images" / split / "p.jpg")
        write_mask(tmp_path / "masks" / split / "p_mask.png", m)
    cfg = {"format": "image_mask_folders", "classes": ["bg", "a", "b"], "mask_suffix": "_mask"}
    ds = load_dataset_from_config(cfg, root=tmp_path, cache_dir=cache_dir)
    assert sorted(ds) == ["train", "validation"]
    np.testing.assert_array_equal(np.array(ds["validation"][0]["mask"]), m)


def test_image_mask_folders_binary_0_255_mapped_when_asked(tmp_path, cache_dir):
    m = np.zeros((24, 32), np.uint8)
    m[:, 16:] = 255
    write_photo(tmp_path / "images" / "p.png")
    write_mask(tmp_path / "masks" / "p.png", m)
    ds = load_dataset_from_config("image_mask_folders", root=tmp_path, cache_dir=cache_dir, binary_mask=True, ignore_index=254)
    np.testing.assert_array_equal(np.array(ds["train"][0]["mask"]), (m == 255).astype(np.uint8))


def test_sixteen_bit_mask_is_read_as_ids(tmp_path, cache_dir):
    m = np.zeros((24, 32), np.uint16)
    m[3:6, :] = 1
    write_photo(tmp_path / "images" / "p.png")
    write_mask(tmp_path / "masks" / "p.png", m)
    assert Image.open(tmp_path / "masks" / "p.png").mode == "I;16"
    ds = load_dataset_from_config("image_mask_folders", root=tmp_path, cache_dir=cache_dir)
    np.testing.assert_array_equal(np.array(ds["train"][0]["mask"]), m)


def test_imagefolder_metadata_jsonl_with_list_or_single_caption(tmp_path, cache_dir):
    write_photo(tmp_path / "a.png")
    write_photo(tmp_path / "b.png", seed=3)
    rows = [{"file_name": "a.png", "captions": ["first", "second"]}, {"file_name": "b.png", "text": "only one"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_dataset_from_config("imagefolder_captions", root=tmp_path, cache_dir=cache_dir)
    assert ds["train"]["captions"] == [["first", "second"], ["only one"]]


def test_cache_is_rebuilt_when_a_file_changes(tmp_path, cache_dir):
    write_photo(tmp_path / "a.png")
    meta = tmp_path / "metadata.jsonl"
    meta.write_text(json.dumps({"file_name": "a.png", "caption": "old"}) + "\n")
    assert load_dataset_from_config("imagefolder_captions", root=tmp_path, cache_dir=cache_dir)["train"][0]["captions"] == ["old"]
    meta.write_text(json.dumps({"file_name": "a.png", "caption": "a new caption"}) + "\n")
    assert load_dataset_from_config("imagefolder_captions", root=tmp_path, cache_dir=cache_dir)["train"][0]["captions"] == ["a new caption"]


def test_unknown_split_request_is_an_error(tmp_path, cache_dir):
    write_photo(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "caption": "x"}) + "\n")
    with pytest.raises(DatasetError, match="split"):
        load_dataset_from_config("imagefolder_captions", root=tmp_path, splits=["test"], cache_dir=cache_dir)


def test_flickr_karpathy_json(tmp_path, cache_dir):
    images = []
    for i, split in enumerate(["train", "train", "val", "test", "restval"]):
        name = f"{1000 + i}_abc.jpg"
        write_photo(tmp_path / "Flicker8k_Dataset" / name, seed=i)
        sentences = [{"raw": f"Caption {i}.{k}", "tokens": ["caption"]} for k in range(5)]
        images.append({"filename": name, "split": split, "sentences": sentences, "imgid": i})
    (tmp_path / "dataset_flickr8k.json").write_text(json.dumps({"images": images, "dataset": "flickr8k"}))
    ds = load_dataset_from_config("flickr8k_karpathy", root=tmp_path, cache_dir=cache_dir)
    assert {s: ds[s].num_rows for s in ds} == {"train": 3, "validation": 1, "test": 1}  # restval joins train
    assert ds["validation"][0]["image_id"] == "1002_abc"
    assert ds["test"][0]["captions"] == [f"Caption 3.{k}" for k in range(5)]
