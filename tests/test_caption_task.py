"""The caption task of scripts/train.py on tiny synthetic shapes at 64 px: data, loss, validation, collapse warning."""

import argparse
import logging

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from datasets_cfg import load_dataset_from_config
from models.caption_task import CaptionTask, collapse_warning
from models.captioner import load_captioner
from models.task import TASKS

TINY = ["--image-size", "64", "--encoder", "resnet10t", "--decoder-dim", "64", "--embed-dim", "32",
        "--attention-dim", "32", "--max-caption-len", "24", "--num-beams", "2"]


@pytest.fixture
def data(cache_dir):
    return load_dataset_from_config("shapes", num_train=12, num_validation=6, num_test=0, image_size=64,
                                    cache_dir=cache_dir)


def make_task(data, *flags, **extra) -> CaptionTask:
    parser = argparse.ArgumentParser()
    CaptionTask.add_arguments(parser)
    args = parser.parse_args(TINY + list(flags))
    # What scripts/train.py adds to the task's own flags.
    for key, value in {"lr": 3e-3, "seed": 0, "train_split": "train", "eval_split": "validation",
                       "eval_batch_size": 8, **extra}.items():
        setattr(args, key, value)
    torch.manual_seed(0)
    return CaptionTask(args, data, None)


def test_registered_as_caption_with_cider_as_main_metric():
    assert TASKS["caption"] is CaptionTask
    assert CaptionTask.main_metric == "CIDEr" and CaptionTask.greater_is_better


def test_one_random_caption_per_image_per_epoch_or_every_pair(data):
    task = make_task(data)
    task.build_model()
    ds = task.train_dataset()
    assert len(ds) == 12
    epoch0 = [ds[i]["input_ids"] for i in range(12)]
    assert epoch0 == [ds[i]["input_ids"] for i in range(12)]  # deterministic within an epoch (resume replays it)
    task.set_epoch(1)
    epoch1 = [ds[i]["input_ids"] for i in range(12)]
    assert epoch0 != epoch1
    captions = data["train"]["captions"]
    decoded = task.tokenizer.batch_decode(epoch1, skip_special_tokens=True)
    assert all(decoded[i] in captions[i] for i in range(12))
    pairs = make_task(data, "--caption-sampling", "all")
    pairs.build_model()
    assert len(pairs.train_dataset()) == sum(len(c) for c in captions)


def test_collate_shifts_captions_into_inputs_and_labels(data):
    task = make_task(data)
    task.build_model()
    ds = task.train_dataset()
    batch = task.collate([ds[0], ds[1], ds[2]])
    tok = task.tokenizer
    assert batch["pixel_values"].shape == (3, 3, 64, 64)
    inputs, labels = batch["decoder_input_ids"], batch["labels"]
    assert inputs.shape == labels.shape and (inputs[:, 0] == tok.bos_token_id).all()
    for i in range(3):
        ids = ds[i]["input_ids"]
        n = len(ids) - 1
        assert inputs[i, :n].tolist() == ids[:-1] and labels[i, :n].tolist() == ids[1:]
        assert labels[i, n - 1] == tok.eos_token_id
        assert (labels[i, n:] == -100).all() and (inputs[i, n:] == tok.pad_token_id).all()


def test_a_few_training_steps_reduce_the_loss(data):
    task = make_task(data)
    model = task.build_model().train()
    batch = task.collate([task.train_dataset()[i] for i in range(8)])
    optimizer = torch.optim.AdamW(task.param_groups(model), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, logs = task.training_step(model, batch)
        assert set(logs) == {"cross_entropy", "attention_penalty"}
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_label_smoothing_and_penalty_weight_enter_the_loss(data):
    plain = make_task(data, "--attention-reg", "0")
    smooth = make_task(data, "--attention-reg", "0", "--label-smoothing", "0.2")
    for task in (plain, smooth):
        task.build_model().eval()
    batch = plain.collate([plain.train_dataset()[i] for i in range(4)])
    loss_plain, logs = plain.training_step(plain.model, batch)
    loss_smooth, _ = smooth.training_step(smooth.model, batch)
    assert set(logs) == {"cross_entropy"} and loss_smooth.item() != pytest.approx(loss_plain.item())
    weighted = make_task(data, "--attention-reg", "2.0")
    weighted.build_model().eval()
    loss, logs = weighted.training_step(weighted.model, batch)
    assert loss.item() == pytest.approx(logs["cross_entropy"] + 2.0 * logs["attention_penalty"], rel=1e-5)


def test_evaluate_generates_gathers_and_scores(data):
    task = make_task(data)
    model = task.build_model()
    loader = DataLoader(task.eval_dataset(), batch_size=4, collate_fn=task.eval_collate)
    metrics = task.evaluate(model, loader, Accelerator(cpu=True))
    for key in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "distinct_captions", "top_caption_share",
                "attribute_accuracy", "object_recall"):
        assert isinstance(metrics[key], float), key
    assert 0 < metrics["distinct_captions"] <= 1 and metrics["metrics_mode"] == "fast"


def test_collapse_to_one_caption_logs_a_warning(data, caplog, monkeypatch):
    task = make_task(data)
    model = task.build_model()
    same = task.tokenizer("a red circle").input_ids
    monkeypatch.setattr(task, "generate", lambda model, batch: torch.tensor([same] * len(batch["row_index"])))
    loader = DataLoader(task.eval_dataset(), batch_size=4, collate_fn=task.eval_collate)
    with caplog.at_level(logging.WARNING, logger="models.caption_task"):
        metrics = task.evaluate(model, loader, Accelerator(cpu=True))
    assert metrics["top_caption_share"] == 1.0 and metrics["distinct_captions"] == pytest.approx(1 / 6)
    assert any("caption collapse" in r.getMessage() and "'a red circle'" in r.getMessage() for r in caplog.records)


def test_collapse_rule():
    assert collapse_warning(["a red circle"] * 10) is not None
    assert collapse_warning(["a red circle"] * 6 + [f"caption {i}" for i in range(4)]) is not None  # one at 60 %
    assert collapse_warning([f"caption {i % 5}" for i in range(10)]) is None
    assert collapse_warning(["a red circle"] * 3) is None  # too few images to tell


def test_frozen_encoder_with_cached_features(data, tmp_path):
    task = make_task(data, "--freeze-encoder", "--cache-encoder-features", output_dir=str(tmp_path))
    model = task.build_model()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    ds = task.train_dataset()
    assert "features" in ds[0] and "image" not in ds[0]
    assert (tmp_path / "encoder_features" / "train.safetensors").is_file()
    batch = task.collate([ds[i] for i in range(4)])
    assert "pixel_values" not in batch and batch["encoder_hidden_states"].shape == (4, 16, 256)
    loss, _ = task.training_step(model, batch)
    loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    eval_batch = task.eval_collate([task.eval_dataset()[i] for i in range(3)])
    assert task.generate(model.eval(), eval_batch).shape[0] == 3
    with pytest.raises(ValueError, match="--freeze-encoder"):
        make_task(data, "--cache-encoder-features")
    # A damaged cache file (a run killed while copying it) is computed again, with a warning, not a traceback.
    cache_file = tmp_path / "encoder_features" / "train.safetensors"
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    again = make_task(data, "--freeze-encoder", "--cache-encoder-features", output_dir=str(tmp_path))
    again.build_model()
    torch.testing.assert_close(again.train_dataset()[0]["features"], ds[0]["features"])


def _split_with_a_truncated_image(row: int, rows: int = 4):
    """A caption split whose image ``row`` is a truncated PNG: it opens, and fails only when decoded."""
    import io

    import datasets
    from PIL import Image

    def png(seed):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
        return buf.getvalue()

    images = [png(i)[:1500] if i == row else png(i) for i in range(rows)]
    features = datasets.Features({"image": datasets.Image(), "captions": datasets.List(datasets.Value("string"))})
    return datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in images],
                                       "captions": [["a red circle", "a blue star"]] * rows}, features=features)


def test_an_image_that_fails_to_decode_in_validation_or_feature_caching_is_named(tmp_path):
    """Neither can skip a row without changing what is scored or cached: one DatasetError naming the row."""
    import datasets

    from datasets_cfg import DatasetError

    data = datasets.DatasetDict(train=_split_with_a_truncated_image(2), validation=_split_with_a_truncated_image(1))
    task = make_task(data)
    task.build_model()
    evaluation = task.eval_dataset()
    assert evaluation[0]["image"].size == (32, 32)
    with pytest.raises(DatasetError, match="validation image 1 failed to decode"):
        evaluation[1]
    cached = make_task(data, "--freeze-encoder", "--cache-encoder-features", output_dir=str(tmp_path))
    cached.build_model()
    with pytest.raises(DatasetError, match="image to encode, row 2 failed to decode"):
        cached.train_dataset()


def test_encoder_learning_rate_and_partial_fine_tuning(data):
    task = make_task(data, "--encoder-lr", "1e-4", "--train-encoder-stages", "1")
    model = task.build_model()
    groups = task.param_groups(model)
    assert [g["lr"] for g in groups] == [3e-3, 1e-4]
    encoder_params = {id(p) for p in groups[1]["params"]}
    trainable = {n for n, p in model.encoder.named_parameters() if id(p) in encoder_params}
    assert trainable and all(n.startswith(("backbone.layer3.", "position_embeddings")) for n in trainable)


def test_transformer_decoder_trains_without_the_attention_penalty(data):
    task = make_task(data, "--decoder", "transformer", "--decoder-layers", "1", "--decoder-heads", "2")
    model = task.build_model().train()
    loss, logs = task.training_step(model, task.collate([task.train_dataset()[i] for i in range(4)]))
    loss.backward()
    assert set(logs) == {"cross_entropy"} and torch.isfinite(loss)


def test_save_pretrained_writes_a_loadable_folder(data, tmp_path):
    task = make_task(data)
    model = task.build_model()
    task.save_pretrained(model, str(tmp_path))
    loaded, tokenizer, processor = load_captioner(tmp_path)
    assert tokenizer.get_vocab() == task.tokenizer.get_vocab() and processor.size == {"height": 64, "width": 64}
    assert loaded.generation_config.max_length == 25 and loaded.generation_config.num_beams == 2


def test_bad_use_raises_clear_errors(data):
    task = make_task(data)
    with pytest.raises(RuntimeError, match="build_model"):
        task.train_dataset()
    no_captions = data.remove_columns("captions")
    with pytest.raises(ValueError, match="captions"):
        make_task(no_captions)
    for flags, message in ((["--label-smoothing", "1.5"], "--label-smoothing"),
                           (["--freeze-encoder", "--train-encoder-stages", "2"], "contradict"),
                           (["--num-beams", "0"], "--num-beams must be at least 1"),
                           (["--attention-reg", "-1"], "--attention-reg must be >= 0"),
                           (["--decoder-layers", "0"], "--decoder-layers must be at least 1"),
                           (["--encoder-lr", "-1"], "--encoder-lr must be >= 0")):
        with pytest.raises(ValueError, match=message):
            make_task(data, *flags)
    with pytest.raises(ValueError, match="--decoder must be one of"):
        make_task(data, "--decoder", "no/such-decoder-folder").build_model()


def test_output_stride_flag_gives_the_encoder_a_finer_map(data):
    # resnet10t at 64 px: stage 4 is 2x2 at its own stride 32, 4x4 at output stride 16.
    coarse = make_task(data, "--encoder-stage", "4").build_model()
    fine = make_task(data, "--encoder-stage", "4", "--output-stride", "16").build_model()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert coarse.encoder(pixel_values=pixels).last_hidden_state.shape[1] == 4
        assert fine.encoder(pixel_values=pixels).last_hidden_state.shape[1] == 16
    assert fine.encoder.config.output_stride == 16
    with pytest.raises(ValueError, match="--output-stride is for CNN encoders"):
        make_task(data, "--encoder", "vit", "--output-stride", "16").build_model()


def test_imagenet_weights_by_name_pick_their_encoder(data):
    """--imagenet-weights lite0 is one flag, as for the segmentation tasks; bare --imagenet-weights loads the
    weights of the --encoder given."""
    def resolved(*flags):
        parser = argparse.ArgumentParser()
        CaptionTask.add_arguments(parser)
        args = parser.parse_args(list(flags))
        args.train_split, args.eval_split = "train", "validation"
        task = CaptionTask(args, data, None)
        return task.args.encoder, task.args.imagenet_weights

    assert resolved() == ("resnet10t", False)
    assert resolved("--imagenet-weights", "lite1") == ("tf_efficientnet_lite1", True)
    assert resolved("--encoder", "tf_efficientnet_lite2", "--imagenet-weights") == ("tf_efficientnet_lite2", True)
    assert resolved("--encoder", "tf_efficientnet_lite0", "--imagenet-weights", "lite0") == (
        "tf_efficientnet_lite0", True)
    with pytest.raises(ValueError, match="--imagenet-weights lite0 fits the encoder 'tf_efficientnet_lite0', not "
                                         "'resnet18'"):
        resolved("--encoder", "resnet18", "--imagenet-weights", "lite0")


def test_an_image_that_fails_to_decode_mid_training_is_skipped_and_counted(caplog):
    """The data layer checks images when it builds a dataset; one that breaks later (a dataset built elsewhere, a
    changed file) costs its row, not the run."""
    import io

    import datasets
    from PIL import Image

    from models.caption_task import CaptionTrainDataset

    def png(seed):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
        return buf.getvalue()

    rows = [png(0), b"not an image", png(2)[:1500], png(3)]  # row 2 is a truncated PNG: it fails only at load
    images = datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in rows]},
                                        features=datasets.Features({"image": datasets.Image()}))
    train = CaptionTrainDataset(images, [[[1, 5, 2]], [[1, 6, 2]], [[1, 7, 2]], [[1, 8, 2]]])
    with caplog.at_level("WARNING"):
        got = [train[i]["row"] for i in range(len(train))]
    assert got == [0, 3, 3, 3]  # rows 1 and 2 give their places to the next row that decodes
    assert train.decode_failures.count == 2
    assert "training image 2 failed to decode" in caplog.text and "2 skipped so far" in caplog.text
    assert all(train[i]["image"].size == (32, 32) for i in range(len(train)))


def test_blank_captions_are_dropped_and_long_ones_cut_with_a_count(caplog):
    from models.caption_task import encode_caption_lists
    from models.caption_tokenizer import train_caption_tokenizer

    tok = train_caption_tokenizer([["a red circle", "a big blue star left of a small green cross"]])
    start, eos = tok.bos_token_id, tok.eos_token_id
    with caplog.at_level("WARNING"):
        ids = encode_caption_lists(tok, [["a red circle", "  "], ["a big blue star left of a small green cross"], []],
                                   max_words=4, start_id=start, eos_id=eos)
    assert [len(caps) for caps in ids] == [1, 1, 0]
    assert ids[0][0] == [start, *tok("a red circle", add_special_tokens=False).input_ids, eos]
    assert len(ids[1][0]) == 4 + 2 and ids[1][0][-1] == eos  # cut to max_words, <eos> kept
    assert "1 of 2 train captions are longer than 4 tokens and were cut" in caplog.text
    assert "1 train images have no caption and are left out" in caplog.text
    with pytest.raises(ValueError, match="no captions to train on"):
        encode_caption_lists(tok, [[" "]], max_words=4, start_id=start, eos_id=eos)


def test_init_from_a_saved_captioner_then_fine_tune_its_last_stage(data, tmp_path):
    frozen = make_task(data, "--freeze-encoder")
    model = frozen.build_model()
    frozen.save_pretrained(model, str(tmp_path / "frozen"))
    task = make_task(data, "--init-from", str(tmp_path / "frozen"), "--train-encoder-stages", "1", "--encoder-lr", "1e-4")
    again = task.build_model()
    assert task.tokenizer.get_vocab() == frozen.tokenizer.get_vocab()
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    trainable = [p for p in again.encoder.parameters() if p.requires_grad]
    assert 0 < len(trainable) < len(list(again.encoder.parameters()))  # the last stage only
    assert [g["lr"] for g in task.param_groups(again)] == [3e-3, 1e-4]
    with pytest.raises(ValueError, match="not a loadable captioner folder"):
        make_task(data, "--init-from", str(tmp_path / "nowhere")).build_model()
    weights = tmp_path / "frozen" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # safetensors raises its own error type, not an OSError
    with pytest.raises(ValueError, match="not a loadable captioner folder"):
        make_task(data, "--init-from", str(tmp_path / "frozen")).build_model()


def test_official_metrics_that_cannot_run_here_are_refused_before_training(data, monkeypatch):
    import metrics.caption_metrics as caption_metrics

    monkeypatch.setattr(caption_metrics, "preflight",
                        lambda mode: ["java not found: apt-get install default-jre-headless"] if mode == "official" else [])
    with pytest.raises(ValueError, match=r"--caption-metrics official cannot run on this machine:\n- java not found"):
        make_task(data, "--caption-metrics", "official")
    make_task(data, "--caption-metrics", "fast")  # fast mode needs no Java
