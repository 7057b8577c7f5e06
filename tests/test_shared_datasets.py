"""The real files in ../shared/data (Flickr8k captions.json, CamVid). COCO is covered in test_coco.py.
Skipped with a message when ../shared/data is absent, except under CI=true."""

import numpy as np

from datasets_cfg import dataset_label_spec, load_dataset_from_config


def test_flickr8k_captions_json(shared_data, cache_dir):
    ds = load_dataset_from_config("flickr8k_captions_json", root=shared_data / "flickr8k", cache_dir=cache_dir)
    assert {s: ds[s].num_rows for s in ds} == {"train": 6000, "validation": 1000}
    counts = {len(c) for s in ds for c in ds[s]["captions"]}
    assert counts == {5}
    first = ds["train"][0]
    assert first["image_id"] == "1000268201_693b08cb0e"
    assert first["captions"][0] == "A child in a pink dress is climbing up a set of stairs in an entry way ."
    assert first["image"].size == (224, 224) and first["image"].mode == "RGB"
    assert not set(ds["train"]["image_id"]) & set(ds["validation"]["image_id"])


def test_camvid(shared_data, cache_dir):
    root = shared_data / "camvid"
    ds = load_dataset_from_config("camvid", root=root, cache_dir=cache_dir)
    assert {s: ds[s].num_rows for s in ds} == {"train": 367, "validation": 101}
    spec = dataset_label_spec("camvid", root=root)
    assert spec.num_classes == 11 and spec.ignore_index == 11 and spec.class_names[8] == "car"
    seen = set()
    for row in ds["validation"].select(range(0, 101, 10)):
        mask = np.array(row["mask"])
        assert mask.shape == (360, 480) and row["image"].size == (480, 360)
        seen |= set(np.unique(mask).tolist())
    assert seen <= set(range(12)) and {0, 1, 3, 11} <= seen  # sky, building, road and unlabelled all occur
    # The stored mask is the file's label map, byte for byte in value.
    from PIL import Image

    name = ds["train"][0]["image_id"]
    np.testing.assert_array_equal(np.array(ds["train"][0]["mask"]), np.array(Image.open(root / "trainannot" / f"{name}.png")))
