"""Evaluation report files (models/segmentation_report.py): metrics JSON, per-class table, confusion-matrix picture
and overlays, from predictions at the original resolution."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from datasets_cfg import load_config, load_dataset_from_config, resolve_config_path
from metrics.segmentation_metrics import confusion_matrix, scores_from_confusion
from models.segmentation_image_processor import SegmentationImageProcessor
from models.segmentation_report import (
    class_palette,
    colorize,
    evaluate_segmentation,
    overlay_figure,
    per_class_table,
    save_confusion_matrix,
    write_report,
)
from models.unet import UnetConfig, UnetForSemanticSegmentation

CLASSES = ["background", "circle", "square", "triangle", "diamond", "cross", "star"]


@pytest.fixture
def validation(cache_dir):
    config = load_config(resolve_config_path("shapes"), num_train=0, num_validation=3, num_test=0, image_size=64)
    return load_dataset_from_config(config, cache_dir=cache_dir)["validation"]


@pytest.fixture
def model():
    torch.manual_seed(0)
    config = UnetConfig(
        encoder_name="tu-test_efficientnet", encoder_depth=3, decoder_channels=[16, 8, 8],
        id2label=dict(enumerate(CLASSES)), train_crop_size=[32, 32],
    )
    return UnetForSemanticSegmentation(config).eval()


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_evaluate_segmentation_writes_every_report_file(validation, model, tmp_path, mode):
    processor = SegmentationImageProcessor.for_model(model.config)
    result = evaluate_segmentation(model, processor, validation, tmp_path, mode=mode, flip=True, examples=[1])
    files = result["files"]
    document = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: no NaN
    assert document["mIoU"] == pytest.approx(result["mIoU"])
    assert document["num_pixels"] == 3 * 64 * 64 and document["settings"]["mode"] == mode
    assert set(document["per_class"]) == set(CLASSES)
    assert np.asarray(document["confusion_matrix"]).sum() == 3 * 64 * 64
    table = (tmp_path / "per_class.txt").read_text()
    assert all(name in table for name in CLASSES) and "mean" in table
    assert Image.open(files["confusion_matrix"]).format == "PNG"
    assert len(files["overlays"]) == 1
    overlay = Image.open(files["overlays"][0])
    assert overlay.size[0] >= 3 * 64 and overlay.size[1] > 64


def test_a_split_with_nothing_labelled_is_refused_not_scored_as_nan(validation, model, tmp_path):
    processor = SegmentationImageProcessor.for_model(model.config)
    ignored = validation.map(lambda row: {"mask": Image.fromarray(np.full((64, 64), 255, dtype=np.uint8))})
    with pytest.raises(ValueError, match="nothing to score: the 3 evaluated rows have no labelled pixels"):
        evaluate_segmentation(model, processor, ignored, tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_report_uses_the_same_scores_as_the_metrics(tmp_path):
    ref = np.array([[0, 0, 1, 1], [2, 2, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 1, 0]])
    scores = scores_from_confusion(confusion_matrix(pred, ref, 4, 255))
    names = ["a", "b", "c", "d"]
    write_report(scores, names, tmp_path, {"mode": "whole"})
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["per_class"]["b"]["iou"] == pytest.approx(scores["per_class_iou"][1])
    assert document["per_class"]["d"]["iou"] is None  # absent from both: undefined, not 0
    assert document["mIoU"] == pytest.approx(scores["mIoU"])
    lines = per_class_table(scores, names).splitlines()
    assert lines[4].split()[0] == "c" and lines[-1].startswith("mean")


def test_pictures(tmp_path):
    palette = class_palette(4)
    assert palette.shape == (4, 3) and len({tuple(c) for c in palette}) == 4
    colours = colorize(np.array([[0, 3], [255, 1]]), palette, ignore_index=255)
    assert tuple(colours[1, 0]) == (0, 0, 0) and tuple(colours[0, 1]) == tuple(palette[3])
    photo = Image.new("RGB", (40, 30), (128, 128, 128))
    figure = overlay_figure(photo, np.zeros((30, 40), int), ["bg", "fg"], reference=np.ones((30, 40), int))
    assert figure.size[0] == 3 * 40 + 2 * 4
    with pytest.raises(ValueError, match="prediction of size"):
        overlay_figure(photo, np.zeros((40, 30), int), ["bg", "fg"])
    picture = Image.open(save_confusion_matrix(np.array([[5, 1], [0, 0]]), ["bg", "fg"], tmp_path / "cm.png"))
    assert picture.format == "PNG" and min(picture.size) > 100
    with pytest.raises(ValueError, match="for 3 classes"):
        save_confusion_matrix(np.ones((2, 2)), ["a", "b", "c"], tmp_path / "bad.png")
