"""The caption-seg task of scripts/train.py on tiny shapes: a run end to end, exact --resume, the plain-captioner
ablation, --init-from, two processes, clear errors for unusable data and flags, and its training rows."""

import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from datasets_cfg import load_config, load_dataset_from_config, resolve_config_path
from models.caption_seg_model import build_caption_seg_model, load_caption_seg, save_caption_seg
from models.caption_seg_task import CaptionSegTask
from models.caption_tokenizer import train_caption_tokenizer
from models.task import TASKS
from scripts.train import main
from tests.conftest import REPO
from tests.image_factory import write_photo
from tests.saved_weights import assert_same_weights

DATA = ["--dataset", "shapes", "--data-set", "num_train=16", "--data-set", "num_validation=4", "--data-set",
        "num_test=2", "--data-set", "image_size=64"]
TINY = ["--image-size", "64", "--encoder", "tu-test_efficientnet", "--encoder-depth", "3", "--decoder-channels",
        "16,8,8", "--region-stage", "-1", "--hidden-size", "32", "--embed-dim", "16", "--decoder-dim", "32",
        "--attention-dim", "16", "--num-beams", "1"]
LOOP = ["--batch-size", "4", "--no-progress", "--logging-steps", "2"]
STEPS_PER_EPOCH = 4  # 16 rows in batches of 4
# On the CPU also where a GPU is present: this checks the resume logic, which needs bit-reproducible steps. On an
# H100 the resumed weights differed from the straight run's by more than 1e-6, most likely from CUDA kernels that
# add in a varying order (e.g. the backward of the gather that shares one image's features among its captions).
RESUMABLE = ["--epochs", "2", "--checkpoint-every", "3", "--captions-per-image", "2", "--cpu"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One Arrow cache for the module: every run here reads the same tiny shapes data."""
    return str(tmp_path_factory.mktemp("hf_cache"))


def argv(out, cache, *extra) -> list[str]:
    return ["--task", "caption-seg", *DATA, "--cache-dir", cache, *TINY, *LOOP, "--output-dir", str(out), *extra]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, cache):
    """Two epochs, a checkpoint every 3 steps; the reference for --resume and the folder for --init-from. Two of
    each image's five captions per step, so which two is drawn (and must be redrawn alike after --resume)."""
    out = tmp_path_factory.mktemp("straight")
    assert main(argv(out, cache, *RESUMABLE)) == 0
    return out


def history(out) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def test_registered_with_cider_as_main_metric():
    assert TASKS["caption-seg"] is CaptionSegTask
    assert CaptionSegTask.main_metric == "CIDEr" and CaptionSegTask.greater_is_better


def test_two_epochs_end_to_end_write_a_complete_best_model(straight_run):
    best = straight_run / "best"
    files = {p.name for p in best.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "preprocessor_config.json", "caption_seg_model.py", "eval_metrics.json"} <= files
    rows = history(straight_run)
    evals = [h for h in rows if "eval/CIDEr" in h]
    assert len(evals) == 2 and all("eval/mIoU" in h and "eval/BLEU-4" in h for h in evals)
    assert all(0 <= h["eval/mIoU"] <= 1 and h["eval/CIDEr"] >= 0 for h in evals)
    train = [h for h in rows if "train/loss" in h]
    assert max(h["step"] for h in train) == 2 * STEPS_PER_EPOCH
    for h in train:
        for key in ("train/caption_loss", "train/segmentation_loss", "train/attention_penalty"):
            assert key in h and h[key] >= 0
    best_metrics = json.loads((best / "eval_metrics.json").read_text())
    assert best_metrics["CIDEr"] == max(h["eval/CIDEr"] for h in evals) and "mIoU" in best_metrics
    model, tokenizer, processor = load_caption_seg(best)
    assert model.config.segment_aware and model.config.class_names[0] == "background"
    assert processor.size == {"height": 64, "width": 64} and tokenizer.bos_token_id is not None
    pixels = processor([np.zeros((64, 64, 3), dtype=np.uint8)], return_tensors="pt")["pixel_values"]
    assert model.eval().generate(pixels).shape[0] == 1


def test_resume_continues_exactly(straight_run, tmp_path, cache):
    resumed = tmp_path / "resumed"
    # Stopped at step 3, mid-epoch (4 steps per epoch), then resumed to the end.
    assert main(argv(resumed, cache, *RESUMABLE, "--stop-after-steps", "3")) == 0
    assert (resumed / "checkpoints" / "step_3").is_dir()
    assert main(argv(resumed, cache, *RESUMABLE, "--resume", "latest", "--keep-checkpoints", "5")) == 0
    b = assert_same_weights(straight_run / "last", resumed / "last")
    # The second half really trained: the weights moved after step 3.
    at_3 = load_file(str(resumed / "checkpoints" / "step_3" / "model.safetensors"))
    assert not torch.equal(at_3["region_proj.weight"], b["region_proj.weight"])
    assert not torch.equal(at_3["segment_tokens.feature_proj.weight"], b["segment_tokens.feature_proj.weight"])


def test_no_segment_tokens_trains_the_plain_captioner(tmp_path, cache):
    out = tmp_path / "plain"
    assert main(argv(out, cache, "--epochs", "1", "--no-segment-tokens")) == 0
    model, _, _ = load_caption_seg(out / "best")
    assert model.config.segment_aware is False
    assert any("eval/CIDEr" in h and "eval/mIoU" in h for h in history(out))
    with pytest.raises(ValueError, match="without segment tokens"):
        model.encode(torch.zeros(1, 3, 64, 64), segment_aware=True)


def test_segment_relation_layers_train_and_are_saved(tmp_path, cache):
    out = tmp_path / "relations"
    flags = ["--epochs", "1", "--segment-units", "instance", "--segment-relation-layers", "1",
             "--segment-relation-heads", "4", "--checkpoint-every", "1", "--keep-checkpoints", "5"]
    assert main(argv(out, cache, *flags)) == 0
    model, _, _ = load_caption_seg(out / "best")
    assert model.config.segment_relation_layers == 1 and model.config.segment_relation_heads == 4
    last = load_file(str(out / "last" / "model.safetensors"))
    after_one_step = load_file(str(out / "checkpoints" / "step_1" / "model.safetensors"))
    # The caption loss trains them: they moved between step 1 and the end.
    for key in ("segment_tokens.relations.0.qkv.weight", "segment_tokens.relations.0.geometry.0.weight"):
        assert not torch.equal(after_one_step[key], last[key]), key


def test_a_dataset_without_masks_is_a_clear_error(tmp_path, cache, capsys):
    root = tmp_path / "captions_only"
    rows = []
    for i in range(3):
        write_photo(root / f"p{i}.png", seed=i)
        rows.append({"file_name": f"p{i}.png", "captions": ["a red circle", "a blue star"]})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    flags = ["--task", "caption-seg", "--dataset", "imagefolder_captions", "--root", str(root), "--eval-split", "train",
             "--cache-dir", cache, *TINY, *LOOP, "--output-dir", str(tmp_path / "out")]
    assert main(flags) == 2
    printed = capsys.readouterr().out
    assert "error: --task caption-seg needs a dataset with captions and masks" in printed
    assert "'mask'" in printed and "Traceback" not in printed


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--encoder", "tu-no_such_timm_model"], "cannot build the U-Net with --encoder 'tu-no_such_timm_model'"),
        (["--encoder", "no_such_encoder"], "cannot build the U-Net with --encoder 'no_such_encoder'"),
        (["--seg-loss", "ce:one,dice:1"], "malformed loss spec 'ce:one,dice:1'.* not a number"),
        (["--seg-loss", "ce:1,,dice:1"], "malformed loss spec .*empty term"),
        (["--seg-loss", "nonsense:1"], "nonsense"),
        (["--captions-per-image", "0"], "--captions-per-image must be at least 1"),
        (["--label-smoothing", "1.0"], "--label-smoothing must be in"),
        (["--decoder-channels", "16,x,8"], "--decoder-channels must be comma-separated integers"),
        (["--segment-relation-layers", "-1"], "--segment-relation-layers must be >= 0"),
        (["--image-skip-channels", "-2"], "--image-skip-channels must be >= 0"),
        (["--train-encoder-stages", "-1"], "--train-encoder-stages must be >= 0"),
        (["--encoder", "resnet18", "--train-encoder-stages", "1"], "needs a timm encoder .*not 'resnet18'"),
        (["--segment-relation-layers", "1", "--segment-relation-heads", "5"],
         "--hidden-size 32 must be a multiple of --segment-relation-heads 5"),
    ],
)
def test_bad_flags_are_one_error_line_and_exit_2(tmp_path, cache, capsys, flags, message):
    assert main(argv(tmp_path / "out", cache, "--epochs", "1", *flags)) == 2
    printed = capsys.readouterr().out
    errors = [line for line in printed.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in printed
    assert re.search(message, errors[0]), errors[0]


def tiny_folder_with_classes(folder, class_names):
    torch.manual_seed(0)
    tokenizer = train_caption_tokenizer([["a red circle", "a blue star"]])
    model, processor = build_caption_seg_model(
        tokenizer, class_names, encoder="tu-test_efficientnet", encoder_depth=3, decoder_channels=(16, 8, 8),
        image_size=64, region_stage=-1, hidden_size=32,
        decoder_options={"embedding_size": 16, "hidden_size": 32, "attention_size": 16},
    )
    return save_caption_seg(model, tokenizer, processor, folder)


def test_init_from_a_model_of_other_classes_is_refused(tmp_path, cache, capsys):
    folder = tiny_folder_with_classes(tmp_path / "two_classes", ["background", "circle"])
    assert main(argv(tmp_path / "out", cache, "--epochs", "1", "--init-from", str(folder))) == 2
    printed = capsys.readouterr().out
    assert "error: --init-from" in printed and "['background', 'circle']" in printed and "Traceback" not in printed
    assert main(argv(tmp_path / "out", cache, "--epochs", "1", "--init-from", str(tmp_path / "nowhere"))) == 2
    printed = capsys.readouterr().out
    assert "not a loadable caption-seg model folder" in printed and "Traceback" not in printed


def test_trains_on_coco_captions_joined_to_coco_masks(shared_data, tmp_path, cache):
    """The real COCO files of ../shared/data/coco_mini: 80 category classes plus background, five captions per image;
    the model trained on them captions and segments a COCO photo in its classes."""
    out = tmp_path / "coco"
    assert main(["--task", "caption-seg", "--dataset", "coco_captions_masks", "--root", str(shared_data / "coco_mini"),
                 "--eval-split", "train", "--max-train-samples", "8", "--max-eval-samples", "4", "--epochs", "1",
                 "--cache-dir", cache, *TINY, *LOOP, "--output-dir", str(out)]) == 0
    model, tokenizer, _ = load_caption_seg(out / "best")
    assert len(model.config.class_names) == 81 and model.config.class_names[0] == "background"
    assert "person" in model.config.class_names and "\u2581cake" in tokenizer.get_vocab()  # words start with \u2581
    metrics = json.loads((out / "best" / "eval_metrics.json").read_text())
    assert {"CIDEr", "mIoU"} <= set(metrics)

    import pipelines  # noqa: F401  (registers the task)
    from transformers import pipeline

    photo = sorted((shared_data / "coco_mini").rglob("*.jpg"))[0]
    result = pipeline("image-captioning-seg", model=str(out / "best"), device="cpu")(str(photo))
    assert isinstance(result["caption"], str)
    assert {segment["label"] for segment in result["segments"]} <= set(model.config.class_names)


# --------------------------------------------------------------------------------------------------------------------
# The task object itself


@pytest.fixture(scope="module")
def shapes(cache):
    config = load_config(resolve_config_path("shapes"), num_train=16, num_validation=4, num_test=2, image_size=64)
    return load_dataset_from_config(config, cache_dir=cache), config


def make_task(shapes, *flags, data=None) -> CaptionSegTask:
    default_data, config = shapes
    parser = argparse.ArgumentParser()
    CaptionSegTask.add_arguments(parser)
    args = parser.parse_args(TINY + list(flags))
    for key, value in {"lr": 1e-3, "seed": 0, "train_split": "train", "eval_split": "validation"}.items():
        setattr(args, key, value)
    torch.manual_seed(0)
    return CaptionSegTask(args, default_data if data is None else data, config)


def test_init_from_starts_from_the_saved_weights_and_tokenizer(straight_run, shapes):
    task = make_task(shapes, "--init-from", str(straight_run / "best"))
    model = task.build_model()
    saved = load_file(str(straight_run / "best" / "model.safetensors"))
    state = model.state_dict()
    for k, v in saved.items():
        assert torch.equal(state[k], v), k
    _, tokenizer, _ = load_caption_seg(straight_run / "best")
    assert task.tokenizer.get_vocab() == tokenizer.get_vocab()


def test_train_encoder_stages_freezes_the_shared_encoders_first_stages(shapes):
    model = make_task(shapes, "--train-encoder-stages", "1").build_model()
    encoder = model.segmenter.unet.encoder
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith(("model.conv_stem", "model.blocks.0.", "model.blocks.1.")) for n in trainable)
    others = [p for n, p in model.named_parameters() if not n.startswith("segmenter.unet.encoder.")]
    assert all(p.requires_grad for p in others)  # U-Net decoder, regions, segment tokens and caption decoder
    task = make_task(shapes, "--train-encoder-stages", "1")
    groups = task.param_groups(task.build_model())
    assert all(p.requires_grad for g in groups for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == len(others) + len(trainable)


def test_segment_part_norm_is_on_for_new_models_and_off_on_request(shapes):
    assert make_task(shapes).build_model().config.segment_part_norm
    model = make_task(shapes, "--segment-part-norm", "off").build_model()
    assert not model.config.segment_part_norm and not hasattr(model.segment_tokens, "part_norms")


def test_masks_missing_from_the_data_is_a_value_error(shapes):
    data, _ = shapes
    with pytest.raises(ValueError, match="needs a dataset with captions and masks.*'mask'"):
        make_task(shapes, data=data.remove_columns("mask"))
    with pytest.raises(ValueError, match="'captions'"):
        make_task(shapes, data=data.remove_columns("captions"))


def test_a_training_row_is_an_image_with_several_of_its_captions(shapes):
    data, _ = shapes
    task = make_task(shapes, "--captions-per-image", "3")
    task.build_model()
    ds = task.train_dataset()
    assert len(ds) == 16
    captions = data["train"]["captions"]
    decoded = [task.tokenizer.batch_decode(ds[i]["input_ids"], skip_special_tokens=True) for i in range(4)]
    for i, texts in enumerate(decoded):
        assert len(texts) == 3 and len(set(texts)) == 3 and all(t in captions[i] for t in texts)
    # The draw is fixed within an epoch (so --resume replays it) and changes with the epoch.
    assert [ds[i]["input_ids"] for i in range(16)] == [ds[i]["input_ids"] for i in range(16)]
    first_epoch = [ds[i]["input_ids"] for i in range(16)]
    task.set_epoch(1)
    assert [ds[i]["input_ids"] for i in range(16)] != first_epoch
    task.set_epoch(0)
    batch = task.collate([ds[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 64, 64) and batch["segmentation_labels"].shape == (4, 64, 64)
    assert batch["caption_image_index"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert batch["decoder_input_ids"].shape == batch["labels"].shape and batch["labels"].shape[0] == 12
    assert (batch["decoder_input_ids"][:, 0] == task.tokenizer.bos_token_id).all()
    loss, logs = task.training_step(task.model.train(), batch)
    assert torch.isfinite(loss) and set(logs) == {"caption_loss", "segmentation_loss", "attention_penalty"}


def test_two_processes_on_cpu(tmp_path, cache):
    """accelerate launch --multi_gpu --num_processes 2 on CPU: both shards train, validation is gathered, one model
    folder is saved."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531",
        str(REPO / "scripts" / "train.py"), *argv(out, cache, "--epochs", "2", "--threads", "1", "--cpu"),
    ]
    # CUDA hidden: these are CPU processes (gloo) even on a machine with a GPU, whose barrier would otherwise
    # address one CUDA device per process.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 process(es)" in res.stderr + res.stdout
    rows = history(out)
    # 16 rows over 2 processes in batches of 4: 2 steps per epoch.
    assert max(h["step"] for h in rows) == 4
    evals = [h for h in rows if "eval/CIDEr" in h]
    assert len(evals) == 2 and all(h["eval/CIDEr"] >= 0 and 0 <= h["eval/mIoU"] <= 1 for h in evals)
    assert (out / "best" / "model.safetensors").is_file() and (out / "best" / "tokenizer.json").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_on_a_cuda_device_with_bf16(tmp_path, cache, caplog):
    """Accelerate puts model and batches on the GPU; the saved model loads on the CPU."""
    out = tmp_path / "gpu"
    with caplog.at_level("INFO"):
        assert main(argv(out, cache, "--epochs", "1", "--bf16")) == 0
    assert re.search(r"process\(es\) on cuda", caplog.text)
    losses = [r["train/loss"] for r in history(out) if "train/loss" in r]
    assert losses and all(np.isfinite(losses))
    model, _, _ = load_caption_seg(out / "best")
    assert next(model.parameters()).device.type == "cpu"
    assert json.loads((out / "best" / "eval_metrics.json").read_text())["step"] == STEPS_PER_EPOCH
