"""Image processor (models/segmentation_image_processor.py) and whole-image / sliding-window inference
(models/sliding_window.py): padding, label padding, post-processing back to the original size, save/load."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor
from transformers.modeling_outputs import SemanticSegmenterOutput

from models.segmentation_image_processor import SegmentationImageProcessor
from models.sliding_window import (
    check_scales,
    predict_logits,
    predict_segmentation,
    sliding_window_logits,
    window_starts,
)
from models.unet import UnetConfig, UnetForSemanticSegmentation

IGNORE = 255


def _image(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _mask(h, w, seed=0, classes=3):
    return np.random.default_rng(seed).integers(0, classes, (h, w)).astype(np.uint8)


def tiny_model(num_labels=3):
    torch.manual_seed(0)
    config = UnetConfig(
        encoder_name="tu-test_efficientnet", encoder_depth=3, decoder_channels=[16, 8, 8],
        id2label={i: f"c{i}" for i in range(num_labels)},
    )
    return UnetForSemanticSegmentation(config).eval()


class PointwiseModel(torch.nn.Module):
    """Logits from a 1x1 convolution: each pixel's logits depend on that pixel alone, so any tiling of the image
    must give exactly the whole-image logits."""

    def __init__(self, num_labels=4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, num_labels, 1)

    def forward(self, pixel_values):
        return SemanticSegmenterOutput(logits=self.conv(pixel_values))


def test_batch_is_normalised_and_padded_to_a_multiple_of_32():
    processor = SegmentationImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    images = [_image(50, 70), _image(33, 40, seed=1)]
    maps = [_mask(50, 70), _mask(33, 40, seed=1)]
    batch = processor(images, segmentation_maps=maps, return_tensors="pt")
    assert batch["pixel_values"].shape == (2, 3, 64, 96)
    assert batch["labels"].shape == (2, 64, 96) and batch["labels"].dtype == torch.int64
    first = torch.from_numpy(np.array(images[0])).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(batch["pixel_values"][0, :, :50, :70], (first - 0.5) / 0.5)
    assert torch.equal(batch["labels"][0, :50, :70], torch.from_numpy(maps[0]).long())
    assert (batch["labels"][1, 33:, :] == IGNORE).all() and (batch["labels"][1, :, 40:] == IGNORE).all()
    assert (batch["pixel_values"][1, :, 33:, :] == 0).all()


def test_resized_labels_stay_class_ids():
    processor = SegmentationImageProcessor(do_resize=True, size={"height": 64, "width": 64}, ignore_index=11)
    batch = processor([_image(50, 70)], segmentation_maps=[_mask(50, 70, classes=5)], return_tensors="pt")
    assert batch["labels"].shape == (1, 64, 64)
    assert set(batch["labels"].unique().tolist()) <= set(range(5))


def test_map_size_mismatch_is_explained():
    processor = SegmentationImageProcessor()
    with pytest.raises(ValueError, match="segmentation map of size"):
        processor([_image(50, 70)], segmentation_maps=[_mask(50, 60)])


@pytest.mark.parametrize(
    "settings",
    [{}, {"do_resize": True, "size": {"height": 64, "width": 64}}, {"do_resize": True, "size": {"shortest_edge": 40}}],
)
def test_post_processing_crops_padding_and_restores_original_sizes(settings):
    """Logits are made to say class 1 exactly on the image content and class 2 on the padding: after
    post-processing, every original pixel must be class 1."""
    processor = SegmentationImageProcessor(**settings)
    sizes = [(50, 70), (33, 40)]
    batch = processor([_image(h, w) for h, w in sizes], return_tensors="pt")
    logits = torch.zeros(2, 3, *batch["pixel_values"].shape[-2:])
    logits[:, 2] = 1.0
    for i, (h, w) in enumerate(sizes):
        rh, rw = processor.resized_size(h, w)
        logits[i, 1, :rh, :rw] = 2.0
    maps = processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), target_sizes=sizes)
    assert [tuple(m.shape) for m in maps] == sizes
    assert all((m == 1).all() for m in maps)
    unsized = processor.post_process_semantic_segmentation(logits)
    assert [tuple(m.shape) for m in unsized] == [tuple(logits.shape[-2:])] * 2
    with pytest.raises(ValueError, match="one per image"):
        processor.post_process_semantic_segmentation(logits, target_sizes=sizes[:1])


def test_post_processing_takes_the_resize_settings_given_to_the_preprocess_call():
    """A resize asked for in the call only (not stored in the processor) must be undone with the same settings: a
    40x40 image resized to 64x64 has no padding, and the left half of the logits is the left half of the image."""
    processor = SegmentationImageProcessor()
    settings = {"do_resize": True, "size": {"height": 64, "width": 64}}
    batch = processor([_image(40, 40)], return_tensors="pt", **settings)
    assert batch["pixel_values"].shape[-2:] == (64, 64)
    logits = torch.zeros(1, 2, 64, 64)
    logits[0, 1, :, :32] = 1.0
    (class_map,) = processor.post_process_semantic_segmentation(logits, target_sizes=[(40, 40)], **settings)
    assert class_map.shape == (40, 40)
    assert (class_map[:, :20] == 1).all() and (class_map[:, 20:] == 0).all()
    # Without them the processor's own settings (no resize) apply: the crop is then of the top-left 40x40 logits.
    (stored,) = processor.post_process_semantic_segmentation(logits, target_sizes=[(40, 40)])
    assert (stored == 1).float().mean() == pytest.approx(0.8)


def test_save_and_load_with_auto_image_processor(tmp_path):
    processor = SegmentationImageProcessor(
        do_resize=True, size={"height": 64, "width": 96}, ignore_index=11, image_mean=[0.4, 0.5, 0.6]
    )
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, SegmentationImageProcessor)
    assert loaded.ignore_index == 11 and loaded.resized_size(10, 10) == (64, 96)
    images = [_image(40, 50)]
    torch.testing.assert_close(
        loaded(images, return_tensors="pt")["pixel_values"], processor(images, return_tensors="pt")["pixel_values"]
    )


def test_window_grid_covers_the_image():
    assert window_starts(100, 64, 32) == [0, 32, 36]
    assert window_starts(64, 64, 32) == [0]
    assert window_starts(40, 64, 32) == [0]


def test_sliding_window_equals_whole_image_for_a_pointwise_model():
    model = PointwiseModel()
    x = torch.randn(2, 3, 96, 160)
    whole = predict_logits(model, x, mode="whole")
    torch.testing.assert_close(sliding_window_logits(model, x, window=(64, 64), stride=(32, 48)), whole)
    torch.testing.assert_close(predict_logits(model, x, mode="slide", window=64, flip=True), whole)


def test_sliding_window_on_the_unet():
    model = tiny_model()
    x = torch.randn(1, 3, 96, 128)
    whole = predict_logits(model, x, mode="whole")
    # A window covering the whole image is the whole-image prediction.
    torch.testing.assert_close(sliding_window_logits(model, x, window=(96, 128)), whole)
    # Smaller windows see less context near their borders: same shape, mostly the same classes.
    tiled = sliding_window_logits(model, x, window=(64, 64))
    assert tiled.shape == whole.shape
    assert (tiled.argmax(1) == whole.argmax(1)).float().mean() > 0.8
    with pytest.raises(ValueError, match="window"):
        predict_logits(model, x, mode="slide")
    with pytest.raises(ValueError, match="inference mode"):
        predict_logits(model, x, mode="tiles")


class SizeRecorder(torch.nn.Module):
    """Logits = a fixed per-class value everywhere; records the input sizes it is called with."""

    def __init__(self, values=(0.5, -1.0, 2.0)):
        super().__init__()
        self.values = torch.nn.Parameter(torch.tensor(values), requires_grad=False)  # also gives it a device
        self.sizes = []

    def forward(self, pixel_values):
        self.sizes.append(tuple(pixel_values.shape[-2:]))
        b, _, h, w = pixel_values.shape
        return SemanticSegmenterOutput(logits=self.values.view(1, -1, 1, 1).expand(b, -1, h, w).clone())


def test_multi_scale_runs_each_scale_padded_to_the_divisor_and_averages():
    model = SizeRecorder()
    x = torch.randn(1, 3, 96, 160)
    out = predict_logits(model, x, scales=(0.75, 1, 1.5))
    # 96x160 * 0.75 = 72x120 -> padded to 96x128; * 1.5 = 144x240 -> 160x256 (multiples of 32)
    assert model.sizes == [(96, 128), (96, 160), (160, 256)]
    assert out.shape == (1, 3, 96, 160)
    # Per-class constant logits survive the resizing and padding crop exactly.
    torch.testing.assert_close(out, model.values.view(1, -1, 1, 1).expand(1, 3, 96, 160))
    assert predict_logits(model, x, scales=[1.0]).equal(predict_logits(model, x))


def test_multi_scale_on_the_unet_and_through_predict_segmentation():
    model = tiny_model()
    x = torch.randn(1, 3, 64, 96)
    single = predict_logits(model, x)
    multi = predict_logits(model, x, scales=(0.5, 1.0, 2.0), flip=True)
    assert multi.shape == single.shape and not torch.allclose(multi, single)
    assert (multi.argmax(1) == single.argmax(1)).float().mean() > 0.5  # random weights: same broad picture
    processor = SegmentationImageProcessor.for_model(model.config)
    for mode in ("whole", "slide"):
        maps = predict_segmentation(model, processor, [_image(50, 70)], mode=mode, window=32, scales=(0.75, 1.25))
        assert maps[0].shape == (50, 70)
    # predict_segmentation hands the scales down: the padded 64x96 input is also run at half size.
    recorder = SizeRecorder()
    predict_segmentation(recorder, processor, [_image(50, 70)], scales=(0.5, 1.0))
    assert recorder.sizes == [(32, 64), (64, 96)]


@pytest.mark.parametrize("bad", [(), (0,), (-1.0,), (float("nan"),), (5.0,), ("big",)])
def test_bad_scales_are_refused(bad):
    with pytest.raises(ValueError, match="scale"):
        check_scales(bad)
    assert check_scales(None) == (1.0,) and check_scales(1.25) == (1.25,)


def test_predictions_come_back_at_the_original_resolution():
    model = tiny_model()
    processor = SegmentationImageProcessor.for_model(model.config)
    images = [_image(50, 70), np.asarray(_image(37, 41, seed=2))]
    for mode in ("whole", "slide"):
        maps = predict_segmentation(model, processor, images, mode=mode, window=32, flip=True)
        assert [m.shape for m in maps] == [(50, 70), (37, 41)]
        assert all(m.dtype == np.int64 and m.min() >= 0 and m.max() < 3 for m in maps)
    assert not model.training
