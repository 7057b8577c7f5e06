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
    # --sliding-window without a size: the model's training crop (32x32), the same windows as above.
    again = tmp_path / "report_crop"
    assert main(["--task", "segment", "--model", str(seg_folder), *SHAPES, "--cache-dir", cache_dir,
                 "--out", str(again), "--examples", "0", "--sliding-window", "--flip"]) == 0
    assert json.loads((again / "metrics.json").read_text())["mIoU"] == pytest.approx(metrics["mIoU"])


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
    for flag, bad in (("--sliding-window", "abc"), ("--sliding-window", "0,32"), ("--stride", "8,8,8")):
        assert main(["--task", "segment", "--model", str(seg_folder), *SHAPES, "--sliding-window", "32",
                     flag, bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {flag} {bad!r}: give H,W"), err
    with pytest.raises(SystemExit):
        main(["--task", "segment", "--model", str(seg_folder), *SHAPES, "--max-samples", "0"])
    assert "--max-samples must be at least 1" in capsys.readouterr().err


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


def save_small_captioner(folder, cache_dir, image_size=64, seed=0):
    from datasets_cfg import load_dataset_from_config
    from models.caption_tokenizer import train_caption_tokenizer
    from models.captioner import build_captioner, save_captioner

    captions = load_dataset_from_config("shapes", num_train=8, num_validation=0, num_test=0, image_size=64,
                                        cache_dir=cache_dir)["train"]["captions"]
    tokenizer = train_caption_tokenizer(captions)
    torch.manual_seed(seed)
    model, processor = build_captioner(
        tokenizer, "resnet10t", "lstm", image_size=image_size, encoder_options={"feature_stage": 3, "grid_size": 4},
        decoder_options={"hidden_size": 16, "embedding_size": 8, "attention_size": 8}, max_length=8, num_beams=2,
    )
    return save_captioner(model, tokenizer, processor, folder)


@pytest.fixture
def caption_folder(tmp_path, cache_dir):
    return save_small_captioner(tmp_path / "cap", cache_dir)


def test_caption_report_from_the_command_line(caption_folder, tmp_path, cache_dir, capsys):
    out = tmp_path / "report"
    assert main(["--task", "caption", "--model", str(caption_folder), *SHAPES, "--cache-dir", cache_dir,
                 "--out", str(out), "--examples", "1", "--num-beams", "2"]) == 0
    printed = capsys.readouterr().out
    assert '"BLEU-4"' in printed and '"metrics_mode": "fast"' in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"} <= set(metrics) and metrics["metrics_mode"] == "fast"
    assert metrics["num_images"] == 3 and (out / "samples.png").is_file() and (out / "predictions.jsonl").is_file()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 3


def test_a_model_folder_of_another_task_is_named_before_anything_loads(seg_folder, caption_folder, tmp_path, capsys):
    cases = [
        ("caption", seg_folder, "holds a 'captionseg_unet' model (that is a --task segment model); --task caption "
                                "evaluates 'captioner' or 'vision-encoder-decoder' models"),
        ("segment", caption_folder, "holds a 'captioner' model (that is a --task caption model)"),
        ("caption-seg", caption_folder, "--task caption-seg evaluates 'caption_seg' models"),
        ("segment", tmp_path, "no readable config.json"),
    ]
    for task, folder, message in cases:
        assert main(["--task", task, "--model", str(folder), *SHAPES]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --model") and message in err[0], err


def test_length_penalty_reaches_beam_search_and_is_recorded(caption_folder, tmp_path, cache_dir, monkeypatch):
    from transformers.generation.utils import GenerationMixin

    seen = []
    original = GenerationMixin.generate

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("length_penalty"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    out = tmp_path / "report"
    assert main(["--task", "caption", "--model", str(caption_folder), *SHAPES, "--cache-dir", cache_dir,
                 "--out", str(out), "--examples", "0", "--num-beams", "2", "--length-penalty", "-0.5"]) == 0
    assert seen and set(seen) == {-0.5}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["length_penalty"] == -0.5 and metrics["num_beams"] == 2
    # Without the flag the report records the model's own generation config.
    assert main(["--task", "caption", "--model", str(caption_folder), *SHAPES, "--cache-dir", cache_dir,
                 "--out", str(tmp_path / "default"), "--examples", "0"]) == 0
    metrics = json.loads((tmp_path / "default" / "metrics.json").read_text())
    assert metrics["length_penalty"] == 1.0 and metrics["num_beams"] == 2


@pytest.mark.parametrize("argv, message", [
    (["--task", "segment", "--length-penalty", "1.2"], "--length-penalty is for --task caption, not --task segment"),
    (["--task", "caption", "--length-penalty", "nan"], "--length-penalty must be a finite number"),
])
def test_length_penalty_errors(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--model", str(tmp_path), *SHAPES])
    assert message in capsys.readouterr().err


def test_an_ensemble_of_one_captioner_twice_captions_as_it_does_alone(caption_folder, tmp_path, cache_dir):
    common = [*SHAPES, "--cache-dir", cache_dir, "--examples", "1", "--num-beams", "2"]
    assert main(["--task", "caption", "--model", str(caption_folder), *common, "--out", str(tmp_path / "alone")]) == 0
    assert main(["--task", "caption", "--model", str(caption_folder), "--ensemble-with", str(caption_folder),
                 *common, "--out", str(tmp_path / "twice"), "--ensemble-weights", "3,1"]) == 0
    alone, twice = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("alone", "twice"))
    assert twice["ensemble"] == [str(caption_folder)] * 2 and twice["ensemble_weights"] == pytest.approx([0.75, 0.25])
    assert {k: twice[k] for k in alone} == alone
    assert (tmp_path / "twice" / "predictions.jsonl").read_text() == (tmp_path / "alone" / "predictions.jsonl").read_text()
    assert any((tmp_path / "twice" / "attention").iterdir())  # drawn from the first member's attention


def test_an_ensemble_of_two_captioners_is_reported(caption_folder, tmp_path, cache_dir):
    other = save_small_captioner(tmp_path / "other", cache_dir, seed=1)
    out = tmp_path / "report"
    assert main(["--task", "caption", "--model", str(caption_folder), "--ensemble-with", str(other), *SHAPES,
                 "--cache-dir", cache_dir, "--examples", "0", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ensemble"] == [str(caption_folder), str(other)]
    assert metrics["ensemble_weights"] == pytest.approx([0.5, 0.5]) and metrics["num_images"] == 3
    assert "| ensemble | " in (out / "metrics.md").read_text()


def test_ensemble_members_that_do_not_fit_get_one_error_line(caption_folder, seg_folder, tmp_path, cache_dir, capsys,
                                                             monkeypatch):
    import scripts.evaluate as evaluate_script

    smaller = save_small_captioner(tmp_path / "small", cache_dir, image_size=32)
    loads, real_load = [], evaluate_script.load_dataset_from_config

    def counted_load(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(evaluate_script, "load_dataset_from_config", counted_load)
    cases = [
        # A missing folder or another task's model is named before the dataset loads, as for --model.
        (tmp_path / "missing", "--ensemble-with " + str(tmp_path / "missing") + ": no such model folder", 0),
        (seg_folder, "holds a 'captionseg_unet' model (that is a --task segment model)", 0),
        (smaller, "its image processor differs from --model's", 1),
    ]
    for folder, message, expected_loads in cases:
        loads.clear()
        capsys.readouterr()
        assert main(["--task", "caption", "--model", str(caption_folder), "--ensemble-with", str(folder), *SHAPES,
                     "--cache-dir", cache_dir, "--out", str(tmp_path / "report")]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]  # besides the progress bars
        assert "Traceback" not in err and len(errors) == 1, err
        assert errors[0].startswith("error: --ensemble-with") and message in errors[0], errors
        assert len(loads) == expected_loads


@pytest.mark.parametrize("argv, message", [
    (["--task", "caption", "--ensemble-with", "x", "--ensemble-weights", "1"], "gives 1 weights for 2 captioners"),
    (["--task", "caption", "--ensemble-with", "x", "--ensemble-weights", "1,a"], "must be numbers separated by commas"),
    (["--task", "segment", "--ensemble-with", "x"], "are for --task caption, not --task segment"),
    (["--task", "caption", "--ensemble-weights", "1"], "give --ensemble-with FOLDER too"),
    (["--task", "caption", "--ensemble-with", "x", "--ensemble-weights", "0,0"], "not all 0"),
    (["--task", "caption", "--ensemble-with", "x", "--ensemble-weights", "1,-1"], "non-negative"),
    (["--task", "caption", "--ensemble-with", "x", "--ensemble-weights", "1,nan"], "finite"),
])
def test_ensemble_flag_errors(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--model", str(tmp_path), *SHAPES])
    assert message in capsys.readouterr().err


