"""Every kind of bad input the data layer can meet gives one clear DatasetError naming the file at fault
(or, with ``on_error: skip``, a warning with the count of skipped rows)."""

import json

import numpy as np
import pytest
import yaml

from datasets_cfg import DatasetError, load_config, load_dataset_from_config
from tests.image_factory import png_header_only, write_mask, write_photo


def _captions_dir(tmp_path, rows):
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return tmp_path


def _load_captions(root, cache_dir, **kw):
    return load_dataset_from_config("imagefolder_captions", root=root, cache_dir=cache_dir, **kw)


def test_missing_root(tmp_path, cache_dir):
    with pytest.raises(DatasetError, match="root folder not found"):
        _load_captions(tmp_path / "nowhere", cache_dir)


def test_root_required(cache_dir):
    with pytest.raises(DatasetError, match="--root"):
        load_dataset_from_config("camvid", cache_dir=cache_dir)


def test_missing_image_file_is_named(tmp_path, cache_dir):
    _captions_dir(tmp_path, [{"file_name": "ghost.jpg", "caption": "x"}])
    with pytest.raises(DatasetError, match=r"ghost\.jpg: image file not found"):
        _load_captions(tmp_path, cache_dir)


def test_missing_caption_file(tmp_path, cache_dir):
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("a.jpg\n")
    with pytest.raises(DatasetError, match=r"Flickr8k\.token\.txt: file not found"):
        load_dataset_from_config("flickr8k", root=tmp_path, cache_dir=cache_dir)


def test_corrupt_image_bytes(tmp_path, cache_dir):
    good = write_photo(tmp_path / "good.jpg", w=64, h=64).read_bytes()
    (tmp_path / "bad.jpg").write_bytes(good[: len(good) // 2])
    _captions_dir(tmp_path, [{"file_name": "bad.jpg", "caption": "x"}])
    with pytest.raises(DatasetError, match=r"bad\.jpg: corrupt or truncated"):
        _load_captions(tmp_path, cache_dir)


def test_non_image_file_with_image_extension(tmp_path, cache_dir):
    (tmp_path / "notes.png").write_text("this is a text file, not a picture")
    _captions_dir(tmp_path, [{"file_name": "notes.png", "caption": "x"}])
    with pytest.raises(DatasetError, match=r"notes\.png: not an image file"):
        _load_captions(tmp_path, cache_dir)


@pytest.mark.parametrize("w,h,message", [(1, 1, "smaller than min_image_side"), (20000, 20000, "over the limit")])
def test_tiny_and_huge_images(tmp_path, cache_dir, w, h, message):
    if w > 1000:
        png_header_only(tmp_path / "img.png", w, h)
    else:
        write_photo(tmp_path / "img.png", w=w, h=h)
    _captions_dir(tmp_path, [{"file_name": "img.png", "caption": "x"}])
    with pytest.raises(DatasetError, match=message):
        _load_captions(tmp_path, cache_dir)


def test_empty_caption_list(tmp_path, cache_dir):
    write_photo(tmp_path / "a.png")
    _captions_dir(tmp_path, [{"file_name": "a.png", "captions": []}])
    with pytest.raises(DatasetError, match="empty caption list"):
        _load_captions(tmp_path, cache_dir)


@pytest.mark.parametrize("blank", ["", "   \t "])
def test_empty_or_whitespace_caption_is_named(tmp_path, cache_dir, blank):
    write_photo(tmp_path / "a.png")
    _captions_dir(tmp_path, [{"file_name": "a.png", "captions": ["a red circle", blank]}])
    with pytest.raises(DatasetError, match=r"a\.png: an empty caption string"):
        _load_captions(tmp_path, cache_dir)


def test_missing_dataset_field(tmp_path, cache_dir):
    write_photo(tmp_path / "images" / "a.jpg")
    (tmp_path / "captions.json").write_text(json.dumps({"images": [{"file": "a.jpg", "split": "train"}]}))
    with pytest.raises(DatasetError, match=r"lacks field\(s\) \['captions'\]"):
        load_dataset_from_config("flickr8k_captions_json", root=tmp_path, cache_dir=cache_dir)


def test_caption_line_without_tab(tmp_path, cache_dir):
    write_photo(tmp_path / "Flicker8k_Dataset" / "a.jpg")
    (tmp_path / "Flickr8k.token.txt").write_text("a.jpg#0\tfine caption\na.jpg#1 no tab here\n")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("a.jpg\n")
    with pytest.raises(DatasetError, match="line 2 has no tab"):
        load_dataset_from_config("flickr8k", root=tmp_path, cache_dir=cache_dir)


def test_skip_bad_rows_warns_with_count(tmp_path, cache_dir):
    write_photo(tmp_path / "a.png")
    (tmp_path / "b.png").write_text("not an image")
    rows = [{"file_name": "a.png", "caption": "ok"}, {"file_name": "b.png", "caption": "x"}, {"file_name": "c.png", "caption": "y"}]
    _captions_dir(tmp_path, rows)
    with pytest.warns(UserWarning, match=r"skipped 2 bad row\(s\).*b\.png: not an image file"):
        ds = _load_captions(tmp_path, cache_dir, on_error="skip")
    assert ds["train"]["image_id"] == ["a"]


def test_mask_size_differs_from_image(tmp_path, cache_dir):
    write_photo(tmp_path / "images" / "a.png", w=32, h=24)
    write_mask(tmp_path / "masks" / "a.png", np.zeros((20, 30), np.uint8))
    with pytest.raises(DatasetError, match=r"a\.png: mask is 30x20 but its image is 32x24"):
        load_dataset_from_config("image_mask_folders", root=tmp_path, cache_dir=cache_dir)


def test_mask_value_outside_classes_names_file_and_value(tmp_path, cache_dir):
    m = np.zeros((24, 32), np.uint8)
    m[0, 0] = 7
    write_photo(tmp_path / "images" / "a.png")
    write_mask(tmp_path / "masks" / "a.png", m)
    with pytest.raises(DatasetError, match=r"masks/a\.png: mask holds value\(s\) 7 outside the class ids 0\.\.1"):
        load_dataset_from_config("image_mask_folders", root=tmp_path, cache_dir=cache_dir)


def test_sixteen_bit_mask_value_outside_classes(tmp_path, cache_dir):
    m = np.zeros((24, 32), np.uint16)
    m[0, 0] = 300
    write_photo(tmp_path / "images" / "a.png")
    write_mask(tmp_path / "masks" / "a.png", m)
    with pytest.raises(DatasetError, match="value.s. 300 outside"):
        load_dataset_from_config("image_mask_folders", root=tmp_path, cache_dir=cache_dir)


def test_0_255_mask_explains_the_trap(tmp_path, cache_dir):
    m = np.zeros((24, 32), np.uint8)
    m[5:, 5:] = 255
    write_photo(tmp_path / "images" / "a.png")
    write_mask(tmp_path / "masks" / "a.png", m)
    with pytest.raises(DatasetError, match="binary_mask: true"):
        load_dataset_from_config("image_mask_folders", root=tmp_path, cache_dir=cache_dir, ignore_index=100)


def test_0_255_masks_under_ignore_index_255_are_refused(tmp_path, cache_dir):
    # The shipped YAML's defaults (ignore_index 255, binary_mask false): each mask alone is valid, but the
    # foreground of every one of them would be ignored and an all-background model would score mIoU 1.0.
    for name in ("a", "b"):
        m = np.zeros((24, 32), np.uint8)
        m[5:, 5:] = 255
        write_photo(tmp_path / "images" / f"{name}.png")
        write_mask(tmp_path / "masks" / f"{name}.png", m)
    with pytest.raises(DatasetError, match=r"none of the 2 masks .* holds any class but 0 .*binary_mask: true"):
        load_dataset_from_config("image_mask_folders", root=tmp_path, cache_dir=cache_dir)
    m = np.zeros((24, 32), np.uint8)
    m[:3, :3] = 1  # one real foreground pixel in one mask: a valid dataset with some void labels
    write_mask(tmp_path / "masks" / "a.png", m)
    assert load_dataset_from_config("image_mask_folders", root=tmp_path, cache_dir=cache_dir)["train"].num_rows == 2


def test_colour_mask_is_refused(tmp_path, cache_dir):
    write_photo(tmp_path / "images" / "a.png")
    write_photo(tmp_path / "masks" / "a.png")  # an RGB picture where a class-id map belongs
    with pytest.raises(DatasetError, match="colour .RGB. image"):
        load_dataset_from_config("image_mask_folders", root=tmp_path, cache_dir=cache_dir)


@pytest.mark.parametrize("mode,ext", [("RGBA", "png"), ("L", "png"), ("CMYK", "jpg"), ("P", "png"), ("I;16", "png")])
def test_photo_modes_are_converted_to_rgb(tmp_path, cache_dir, mode, ext):
    write_photo(tmp_path / f"a.{ext}", mode=mode)
    _captions_dir(tmp_path, [{"file_name": f"a.{ext}", "caption": "x"}])
    img = _load_captions(tmp_path, cache_dir)["train"][0]["image"]
    assert img.mode == "RGB" and img.size == (32, 24)
    assert np.asarray(img).std() > 1  # converted, not blanked


def test_sixteen_bit_photo_uses_full_range(tmp_path, cache_dir):
    write_photo(tmp_path / "a.png", mode="I;16")
    _captions_dir(tmp_path, [{"file_name": "a.png", "caption": "x"}])
    arr = np.asarray(_load_captions(tmp_path, cache_dir)["train"][0]["image"])
    assert arr.max() > 100  # 16-bit values were scaled down, not clipped to 255 or truncated to near-zero


def test_yaml_unknown_key(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text(yaml.safe_dump({"format": "camvid", "classes": ["a"], "ignore_idx": 3}))
    with pytest.raises(DatasetError, match="unknown key.*'ignore_idx'.*allowed keys"):
        load_config(p)


def test_yaml_unknown_format(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text(yaml.safe_dump({"format": "cocoo"}))
    with pytest.raises(DatasetError, match="unknown format 'cocoo'; known formats: .*camvid"):
        load_config(p)


def test_yaml_not_a_mapping_and_missing_file(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("- just\n- a list\n")
    with pytest.raises(DatasetError, match="mapping"):
        load_config(p)
    with pytest.raises(DatasetError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_ignore_index_inside_class_range_is_refused():
    with pytest.raises(DatasetError, match="ignore_index 1 is also a class id"):
        load_dataset_from_config({"format": "camvid", "classes": ["a", "b"], "ignore_index": 1})
