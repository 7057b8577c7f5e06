"""Joint image+mask augmentation (models/segmentation_augment.py): masks stay class ids, padding is ignore_index,
presets by name, YAML or flags."""

import dataclasses

import numpy as np
import pytest

from models.segmentation_augment import (
    PRESETS,
    AugmentConfig,
    apply_transform,
    eval_transform,
    load_augment_config,
    train_transform,
)

IGNORE = 11


def _pair(h=90, w=120, classes=5):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # Blocky mask: nearest-neighbour resampling keeps its values, any interpolation would invent new ones.
    blocks = rng.integers(0, classes, (-(-h // 15), -(-w // 15)))
    mask = np.kron(blocks, np.ones((15, 15), dtype=np.int64))[:h, :w].astype(np.uint8)
    return image, mask


def test_train_pipeline_crops_and_keeps_class_ids():
    image, mask = _pair()
    # Scaled by 0.5-0.6, a 90x120 image is smaller than the crop, so it must be padded.
    transform = train_transform(AugmentConfig(crop_size=(64, 96), scale_range=(0.5, 0.6)), IGNORE, seed=0)
    for _ in range(6):
        out_image, out_mask = apply_transform(transform, image, mask)
        assert out_image.shape == (64, 96, 3) and out_mask.shape == (64, 96)
        assert IGNORE in out_mask and set(np.unique(out_mask).tolist()) <= set(range(5)) | {IGNORE}
    transform = train_transform(AugmentConfig(crop_size=(64, 96), scale_range=(0.5, 2.0)), IGNORE, seed=0)
    for _ in range(12):
        out_image, out_mask = apply_transform(transform, image, mask)
        assert out_image.shape == (64, 96, 3) and out_image.dtype == np.uint8
        assert out_mask.shape == (64, 96) and out_mask.dtype == mask.dtype
        assert set(np.unique(out_mask).tolist()) <= set(range(5)) | {IGNORE}


def test_flip_moves_image_and_mask_together():
    config = AugmentConfig(crop_size=(96, 128), scale_range=(1.0, 1.0), color_jitter=0.0)
    image, mask = _pair(96, 128)
    image[:, :, 0] = mask * 40  # the red channel encodes the mask, so a joint transform keeps them equal
    transform = train_transform(config, IGNORE, seed=3)
    flipped = 0
    for _ in range(10):
        out_image, out_mask = apply_transform(transform, image, mask)
        assert np.array_equal(out_image[:, :, 0], out_mask * 40)
        flipped += not np.array_equal(out_mask, mask)
    assert 0 < flipped < 10


def test_colour_jitter_changes_the_image_only_within_its_strength():
    """Brightness/contrast/saturation factors in 1 +- 0.2, applied to 80 % of the crops: the image changes in some
    draws and not in others, the mask never, and no channel's mean moves by more than about the factor allows."""
    config = AugmentConfig(crop_size=(96, 128), scale_range=(1.0, 1.0), hflip=False, color_jitter=0.2)
    image, mask = _pair(96, 128)
    image = (image // 2 + 64).astype(np.uint8)  # mid-grey range: the factors are not hidden by clipping at 0 or 255
    transform = train_transform(config, IGNORE, seed=1)
    changed = 0
    for _ in range(20):
        out_image, out_mask = apply_transform(transform, image, mask)
        assert np.array_equal(out_mask, mask)
        changed += not np.array_equal(out_image, image)
        ratio = out_image.reshape(-1, 3).mean(0) / image.reshape(-1, 3).mean(0)
        assert (np.abs(ratio - 1) < 0.5).all()
    assert 5 <= changed < 20
    still = train_transform(dataclasses.replace(config, color_jitter=0.0), IGNORE, seed=1)
    assert all(np.array_equal(apply_transform(still, image, mask)[0], image) for _ in range(5))


def test_eval_pipeline_only_pads_with_ignore_index():
    image, mask = _pair(90, 120)
    out_image, out_mask = apply_transform(eval_transform(PRESETS["camvid"], IGNORE), image, mask)
    assert out_image.shape == (96, 128, 3)
    assert np.array_equal(out_image[:90, :120], image) and np.array_equal(out_mask[:90, :120], mask)
    assert (out_mask[90:] == IGNORE).all() and (out_mask[:, 120:] == IGNORE).all()
    resized = eval_transform(AugmentConfig(eval_size=(64, 64)), IGNORE)
    _, small = apply_transform(resized, image, mask)
    assert small.shape == (64, 64) and set(np.unique(small).tolist()) <= set(range(5))


# One saturated colour per class: a blend of two class colours along an edge never equals a third one exactly.
PALETTE = np.array([[0, 0, 0], [250, 10, 10], [10, 250, 10], [10, 10, 250], [250, 250, 10]], dtype=np.uint8)


def _misaligned_pixels(out_image, out_mask):
    """Pixels whose (resampled) colour is exactly one class's colour but whose mask names another class."""
    distance = np.abs(out_image[:, :, None, :].astype(int) - PALETTE[None, None].astype(int)).sum(-1)
    pure = (distance.min(-1) == 0) & (out_mask != IGNORE)
    return int((distance.argmin(-1)[pure] != out_mask[pure]).sum())


def test_rescaled_masks_stay_aligned_with_their_images():
    """OpenCV's INTER_NEAREST would put the mask up to half a pixel up-left of the linearly resampled image
    (about 1 % of edge pixels mislabelled); every rescale here must keep them aligned."""
    _, mask = _pair(96, 128)
    mask = mask % len(PALETTE)
    image = PALETTE[mask]
    for scale in (0.8, 0.9, 1.15, 1.3):
        config = AugmentConfig(crop_size=(64, 96), scale_range=(scale, scale), hflip=False, color_jitter=0.0)
        transform = train_transform(config, IGNORE, seed=0)
        assert _misaligned_pixels(*apply_transform(transform, image, mask)) == 0, scale
    for size in ((75, 100), (120, 160)):
        transform = eval_transform(AugmentConfig(eval_size=size), IGNORE)
        assert _misaligned_pixels(*apply_transform(transform, image, mask)) == 0, size


def test_same_seed_same_augmentation():
    image, mask = _pair()
    config = PRESETS["default"]
    a = apply_transform(train_transform(config, IGNORE, seed=5), image, mask)
    b = apply_transform(train_transform(config, IGNORE, seed=5), image, mask)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_presets_yaml_and_overrides(tmp_path):
    assert load_augment_config("camvid").crop_size == (352, 480)
    assert load_augment_config("shapes", crop_size="64").crop_size == (64, 64)
    assert load_augment_config("camvid", crop_size=None).crop_size == (352, 480)
    path = tmp_path / "aug.yaml"
    path.write_text("crop_size: [128, 160]\nscale_range: [0.8, 1.2]\nhflip: false\n")
    config = load_augment_config(path, color_jitter=0.0)
    assert config == AugmentConfig(crop_size=(128, 160), scale_range=(0.8, 1.2), hflip=False, color_jitter=0.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: load_augment_config("cityscapes"), "unknown augmentation preset"),
        (lambda: load_augment_config("camvid", rotate=10), "unknown augmentation setting"),
        (lambda: AugmentConfig(crop_size=(100, 100)), "multiple of 32"),
        (lambda: AugmentConfig(scale_range=(2.0, 1.0)), "scale_range"),
        (lambda: train_transform(AugmentConfig(crop_size=None), IGNORE), "crop size"),
        (lambda: AugmentConfig(focus_classes=(0, 2), focus_crop_prob=0.5), "cannot be centred on"),
        (lambda: AugmentConfig(focus_classes=(2,), focus_crop_prob=1.5), "focus_crop_prob"),
        (lambda: train_transform(AugmentConfig(focus_classes=(9,), focus_crop_prob=0.5), IGNORE, num_classes=5),
         "not class ids"),
        (
            lambda: apply_transform(
                eval_transform(PRESETS["none"], IGNORE), np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8))
            ),
            "integer class ids",
        ),
    ],
)
def test_bad_settings_are_explained(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_unknown_yaml_key_is_refused(tmp_path):
    path = tmp_path / "aug.yaml"
    path.write_text("crop: 64\n")
    with pytest.raises(ValueError, match="unknown augmentation key"):
        load_augment_config(path)


def test_focus_crops_find_a_small_rare_object():
    # A 12x12 patch of class 3 in a 256x256 image of class 1: a random 64x64 crop holds some of it about 6 % of the
    # time, a focus crop always does.
    image = np.zeros((256, 256, 3), np.uint8)
    mask = np.ones((256, 256), np.uint8)
    mask[200:212, 30:42] = 3
    base = AugmentConfig(crop_size=(64, 64), scale_range=(1.0, 1.0), hflip=False, color_jitter=0.0)
    focused = AugmentConfig(**{**base.__dict__, "focus_classes": (3,), "focus_crop_prob": 1.0})

    def share_with_rare(config):
        t = train_transform(config, IGNORE, seed=0, num_classes=5)
        return np.mean([(apply_transform(t, image, mask)[1] == 3).any() for _ in range(100)])

    assert share_with_rare(focused) == 1.0
    assert share_with_rare(base) < 0.3


def test_focus_classes_by_name_from_the_command_line():
    import argparse

    from models.segmentation_task import SegmentationTask

    task = SegmentationTask.__new__(SegmentationTask)
    task.class_names = ["background", "road", "pole", "sign"]
    task.args = argparse.Namespace(focus_classes="pole,3", focus_crop_prob=None)
    assert task._focus_overrides() == {"focus_classes": (2, 3), "focus_crop_prob": 0.5}
    task.args = argparse.Namespace(focus_classes="lamp", focus_crop_prob=None)
    with pytest.raises(ValueError, match="neither a class name"):
        task._focus_overrides()
