"""scripts/evaluate.py: report files from a saved model folder, and one clear error line for bad input."""

import json

import pytest
import torch

from models.segmentation_image_processor import SegmentationImageProcessor
from models.unet import UnetConfig, UnetForSemanticSegmentation
from scripts.evaluate import main

CLASSES = ["background", "circle", "square", "triangle", "diamond", "cross", "star"]
SHAPES = ["--dataset", "shapes", "--data-set", "num_train=0", "--data-set", "num_validation=3",
          "--data-set", "num_test=0", "--data-set", "image_size=64"]


@pytest.fixture
def seg_folder(tmp_path):
    torch.manual_seed(0)
    config = UnetConfig(encoder_name="tu-test_efficientnet", encoder_depth=3, decoder_channels=[16, 8, 8],
                        id2label=dict(enumerate(CLASSES)), train_crop_size=[32, 32])
    model = UnetForSemanticSegmentation(config)
    folder = tmp_path / "seg"
    model.save_pretrained(folder)
    SegmentationImageProcessor.for_model(config).save_pretrained(folder)
    return folder


def test_segment_report(seg_folder, tmp_path, cache_dir, capsys):
    out = tmp_path / "report"
    assert main(["--task", "segment", "--model", str(seg_folder), *SHAPES, "--cache-dir", cache_dir,
                 "--out", str(out), "--examples", "2", "--sliding-window", "32,32", "--flip"]) == 0
    printed = capsys.readouterr().out
    assert '"mIoU"' in printed and str(out) in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["mIoU"] <= 1 and metrics["settings"]["mode"] == "slide"
    assert (out / "confusion_matrix.png").is_file() and (out / "per_class.txt").is_file()
    assert len(list((out / "overlays").glob("*.png"))) == 2


def test_segment_report_with_multi_scale_tta(seg_folder, tmp_path, cache_dir):
    out = tmp_path / "report"
    assert main(["--task", "segment", "--model", str(seg_folder), *SHAPES, "--cache-dir", cache_dir,
                 "--out", str(out), "--examples", "0", "--flip", "--scales", "0.75,1,1.25"]) == 0
    settings = json.loads((out / "metrics.json").read_text())["settings"]
    assert settings["scales"] == [0.75, 1.0, 1.25] and settings["flip"] is True


def test_errors_are_one_line(seg_folder, tmp_path, cache_dir, capsys):
    assert main(["--task", "segment", "--model", str(tmp_path / "missing"), *SHAPES]) == 2
    assert "no such model folder" in capsys.readouterr().err
    assert main(["--task", "segment", "--model", str(seg_folder), "--dataset", "camvid", "--cache-dir", cache_dir]) == 2
    assert "--root" in capsys.readouterr().err
    # A split without masks cannot be scored as segmentation.
    root = tmp_path / "caps"
    root.mkdir()
    from tests.image_factory import write_photo

    write_photo(root / "a.png")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "caption": "x"}) + "\n")
    assert main(["--task", "segment", "--model", str(seg_folder), "--dataset", "imagefolder_captions",
                 "--root", str(root), "--split", "train", "--cache-dir", cache_dir]) == 2
    assert "no 'mask' column" in capsys.readouterr().err
    for bad in ("0.75,big", "0,1", ","):
        assert main(["--task", "segment", "--model", str(seg_folder), *SHAPES, "--scales", bad]) == 2
        assert "--scales" in capsys.readouterr().err


def test_a_model_of_other_classes_or_damaged_weights_is_refused(seg_folder, tmp_path, cache_dir, capsys):
    # Same number of classes, other names: the confusion matrix would be filled under the wrong names.
    config = json.loads((seg_folder / "config.json").read_text())
    config["id2label"]["1"] = "hexagon"
    (seg_folder / "config.json").write_text(json.dumps(config))
    assert main(["--task", "segment", "--model", str(seg_folder), *SHAPES, "--cache-dir", cache_dir]) == 2
    assert "are not the dataset's" in capsys.readouterr().err
    config["id2label"]["1"] = "circle"
    (seg_folder / "config.json").write_text(json.dumps(config))
    assert main(["--task", "segment", "--model", str(seg_folder), *SHAPES, "--cache-dir", cache_dir,
                 "--data-set", "ignore_index=250"]) == 2
    assert "the dataset's ignore_index is 250" in capsys.readouterr().err
    weights = seg_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    assert main(["--task", "segment", "--model", str(seg_folder), *SHAPES, "--cache-dir", cache_dir]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    weights.unlink()
    assert main(["--task", "segment", "--model", str(seg_folder), *SHAPES, "--cache-dir", cache_dir]) == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_examples_by_image_id_or_row(seg_folder, tmp_path, cache_dir, capsys):
    out = tmp_path / "chosen"
    assert main(["--task", "segment", "--model", str(seg_folder), *SHAPES, "--cache-dir", cache_dir,
                 "--out", str(out), "--examples", "validation_000002,0"]) == 0
    assert sorted(p.name for p in (out / "overlays").glob("*.png")) == ["validation_000000.png", "validation_000002.png"]
    capsys.readouterr()
    assert main(["--task", "segment", "--model", str(seg_folder), *SHAPES, "--cache-dir", cache_dir,
                 "--out", str(out), "--examples", "validation_000009"]) == 2
    assert "'validation_000009' is neither an image id nor a row index (0..2)" in capsys.readouterr().err
