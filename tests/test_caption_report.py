"""The caption report: metrics files, sample grid and attention maps per word, for LSTM and transformer decoders."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from datasets_cfg import load_dataset_from_config
from models.caption_report import attention_maps, metrics_table, save_attention_figure, write_caption_report
from models.caption_tokenizer import train_caption_tokenizer
from models.captioner import build_captioner


@pytest.fixture
def split(cache_dir):
    return load_dataset_from_config("shapes", num_train=0, num_validation=5, num_test=0, image_size=64,
                                    cache_dir=cache_dir)["validation"]


def model_for(split, decoder, encoder="resnet10t"):
    tokenizer = train_caption_tokenizer(split["captions"])
    options = {
        "lstm": {"hidden_size": 16, "embedding_size": 8, "attention_size": 8},
        "transformer": {"n_embd": 16, "n_layer": 2, "n_head": 2},
    }[decoder]
    encoder_options = ({"patch_size": 16, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
                       if encoder == "vit" else {"feature_stage": 3, "grid_size": 4})
    torch.manual_seed(0)
    model, processor = build_captioner(tokenizer, encoder, decoder, image_size=64, encoder_options=encoder_options,
                                       decoder_options=options, max_length=6, num_beams=2)
    return model.eval(), tokenizer, processor


@pytest.mark.parametrize("decoder,encoder", [("lstm", "resnet10t"), ("transformer", "vit")])
def test_attention_maps_give_one_grid_per_word(split, decoder, encoder):
    model, tokenizer, processor = model_for(split, decoder, encoder)
    image = split[0]["image"]
    ids = [tokenizer.bos_token_id] + tokenizer("a red circle").input_ids[1:]  # start, words, <eos>
    words, maps = attention_maps(model, tokenizer, processor, image, ids)
    assert words == ["a", "red", "circle"]
    assert maps.shape == (3, 4, 4)
    # CNN regions take all the attention; ViT's [CLS] token takes some of it.
    sums = maps.reshape(3, -1).sum(1)
    assert np.all(sums <= 1 + 1e-5) and (np.allclose(sums, 1, atol=1e-5) if encoder != "vit" else np.all(sums > 0))
    generated_words, generated_maps = attention_maps(model, tokenizer, processor, image)
    assert len(generated_words) == generated_maps.shape[0]


def test_write_caption_report_writes_metrics_table_samples_and_attention(split, tmp_path):
    model, tokenizer, processor = model_for(split, "lstm")
    metrics = write_caption_report(model, tokenizer, processor, split, tmp_path, batch_size=2, num_samples=4,
                                   attention_examples=[1, 3])
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert {"BLEU-4", "CIDEr", "distinct_captions", "attribute_accuracy"} <= set(metrics) and metrics["num_images"] == 5
    assert "| CIDEr |" in (tmp_path / "metrics.md").read_text()
    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [row["image_id"] for row in lines] == split["image_id"] and lines[0]["references"] == split[0]["captions"]
    assert Image.open(tmp_path / "samples.png").size[0] > 400
    assert sorted(p.name for p in (tmp_path / "attention").iterdir()) == [f"{split[i]['image_id']}.png" for i in (1, 3)]
    with pytest.raises(ValueError, match="not a row"):
        write_caption_report(model, tokenizer, processor, split, tmp_path, attention_examples=[7])


def test_attention_figure_and_table_helpers(tmp_path):
    image = Image.new("RGB", (64, 64), (120, 120, 120))
    maps = np.random.default_rng(0).random((2, 4, 4))
    path = save_attention_figure(image, ["red", "circle"], maps, tmp_path / "a.png")
    assert Image.open(path).size[0] > 200
    table = metrics_table({"CIDEr": 1.5, "BLEU-1": 0.5, "distinct_captions": 0.9})
    assert table.splitlines()[2] == "| BLEU-1 | 0.5000 |" and "| CIDEr | 1.5000 |" in table
