"""The VisionEncoderDecoderModel built from parts: saving, trust_remote_code in a fresh process, beam search."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import (
    AutoModelForImageTextToText,
    GPT2Config,
    GPT2LMHeadModel,
    VisionEncoderDecoderModel,
)

from datasets_cfg.shapes import generate_scene
from models.caption_tokenizer import train_caption_tokenizer
from models.captioner import CaptionerModel, build_captioner, load_captioner, save_captioner
from models.lstm_decoder import LSTMDecoderForCausalLM

TOKENIZER = train_caption_tokenizer([generate_scene(i).captions for i in range(20)])
SIZE = 32
COMBOS = {
    "cnn-lstm": dict(encoder="resnet10t", decoder="lstm", encoder_options={"feature_stage": 2, "hidden_size": 16},
                     decoder_options={"hidden_size": 16, "embedding_size": 8, "attention_size": 8, "initializer_range": 0.5}),
    "vit-gru": dict(encoder="vit", decoder="gru",
                    encoder_options={"patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2},
                    decoder_options={"hidden_size": 16, "embedding_size": 8, "attention_size": 8, "initializer_range": 0.5}),
    "cnn-transformer": dict(encoder="resnet10t", decoder="transformer", encoder_options={"feature_stage": 2},
                            decoder_options={"n_embd": 16, "n_layer": 1, "n_head": 2, "initializer_range": 0.5}),
}


def build(name: str, **kw):
    torch.manual_seed(0)
    model, processor = build_captioner(TOKENIZER, image_size=SIZE, max_length=10, num_beams=3, **COMBOS[name], **kw)
    return model.eval(), processor


def inputs(n=2):
    torch.manual_seed(1)
    return torch.randn(n, 3, SIZE, SIZE), TOKENIZER(["a red circle", "two shapes: a star"], padding=True, return_tensors="pt").input_ids


@pytest.mark.parametrize("name", list(COMBOS))
def test_save_and_load_give_identical_outputs(name, tmp_path):
    model, processor = build(name)
    assert isinstance(model, VisionEncoderDecoderModel)
    pixels, ids = inputs()
    save_captioner(model, TOKENIZER, processor, tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "preprocessor_config.json",
            "captioner.py", "lstm_decoder.py", "region_encoders.py", "imagenet_weights.py"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)  # safetensors only
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "captioner"
    assert config["auto_map"]["AutoModelForImageTextToText"] == "captioner.CaptionerModel"
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert (generation["decoder_start_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (1, 2, 0)
    assert generation["num_beams"] == 3 and generation["max_length"] == 10

    loaded, tokenizer, loaded_processor = load_captioner(tmp_path)
    assert isinstance(loaded, CaptionerModel) and type(loaded.decoder) is type(model.decoder)
    assert loaded_processor.size == processor.size and tokenizer.get_vocab() == TOKENIZER.get_vocab()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels, decoder_input_ids=ids).logits,
                                   model(pixel_values=pixels, decoder_input_ids=ids).logits)
    assert torch.equal(loaded.generate(pixel_values=pixels), model.generate(pixel_values=pixels))


@pytest.mark.parametrize("name", list(COMBOS))
def test_beam_search_with_the_cache_equals_beam_search_without(name):
    model, _ = build(name)
    pixels, _ = inputs(3)
    kw = dict(num_beams=3, max_length=8, return_dict_in_generate=True, output_scores=True)
    cached = model.generate(pixel_values=pixels, **kw)
    uncached = model.generate(pixel_values=pixels, use_cache=False, **kw)
    assert cached.sequences.shape[0] == 3 and (cached.sequences[:, 0] == TOKENIZER.bos_token_id).all()
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(cached.sequences_scores, uncached.sequences_scores)
    greedy = model.generate(pixel_values=pixels, num_beams=1)
    assert torch.equal(greedy, model.generate(pixel_values=pixels, num_beams=1, use_cache=False))


def test_loads_with_trust_remote_code_in_a_fresh_process(tmp_path):
    model, processor = build("cnn-lstm")
    folder = tmp_path / "captioner"
    save_captioner(model, TOKENIZER, processor, folder)
    pixels, _ = inputs()
    torch.save(pixels, tmp_path / "pixels.pt")
    expected = TOKENIZER.batch_decode(model.generate(pixel_values=pixels), skip_special_tokens=True)
    script = f"""
import json, sys, torch
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer, VisionEncoderDecoderModel
model = AutoModelForImageTextToText.from_pretrained({str(folder)!r}, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained({str(folder)!r})
processor = AutoImageProcessor.from_pretrained({str(folder)!r})
pixels = torch.load({str(tmp_path / "pixels.pt")!r})
print(json.dumps({{
    "captions": tokenizer.batch_decode(model.generate(pixel_values=pixels), skip_special_tokens=True),
    "is_vision_encoder_decoder": isinstance(model, VisionEncoderDecoderModel),
    "decoder_module": type(model.decoder).__module__,
    "project_imported": any(m == "models" or m.startswith("models.") for m in sys.modules),
    "image_size": processor.size["height"],
}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["captions"] == expected
    assert report["is_vision_encoder_decoder"] and not report["project_imported"]
    assert report["decoder_module"].startswith("transformers_modules.")
    assert report["image_size"] == SIZE


def test_plain_vision_encoder_decoder_loads_the_folder_once_the_parts_are_registered(tmp_path):
    model, processor = build("cnn-lstm")
    save_captioner(model, TOKENIZER, processor, tmp_path)
    loaded = VisionEncoderDecoderModel.from_pretrained(tmp_path).eval()
    pixels, ids = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels, decoder_input_ids=ids).logits,
                                   model(pixel_values=pixels, decoder_input_ids=ids).logits)
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tmp_path), CaptionerModel)


def test_lstm_decoder_reads_the_regions_unprojected_and_transformer_gets_a_projection():
    lstm, _ = build("cnn-lstm")
    assert isinstance(lstm.decoder, LSTMDecoderForCausalLM) and not hasattr(lstm, "enc_to_dec_proj")
    assert lstm.config.decoder.cross_attention_hidden_size == lstm.config.encoder.hidden_size == 16
    transformer, _ = build("cnn-transformer")
    assert transformer.enc_to_dec_proj.in_features == 128 and transformer.enc_to_dec_proj.out_features == 16


def test_a_pretrained_decoder_from_a_local_folder_gets_cross_attention(tmp_path):
    decoder_dir = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(TOKENIZER), n_embd=16, n_layer=1, n_head=2, n_positions=32,
                               bos_token_id=1, eos_token_id=2)).save_pretrained(decoder_dir)
    TOKENIZER.save_pretrained(decoder_dir)
    torch.manual_seed(0)
    model, _ = build_captioner(TOKENIZER, "resnet10t", str(decoder_dir), image_size=SIZE,
                               encoder_options={"feature_stage": 2}, max_length=8)
    assert model.decoder.config.add_cross_attention and hasattr(model.decoder.transformer.h[0], "crossattention")
    pixels, _ = inputs()
    assert model.eval().generate(pixel_values=pixels, num_beams=2).shape[0] == 2
    bigger = train_caption_tokenizer([generate_scene(i).captions for i in range(20)] + [["zebra giraffe okapi"]])
    assert len(bigger) > model.decoder.config.vocab_size
    with pytest.raises(ValueError, match="own tokenizer"):
        build_captioner(bigger, "resnet10t", str(decoder_dir), image_size=SIZE, encoder_options={"feature_stage": 2})


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"decoder": str("no/such-decoder-folder")}, "decoder must be one of"),
        ({"encoder": "vit", "imagenet_weights": True}, "ImageNet"),
        ({"encoder": "resnet10t", "encoder_options": {"patch_size": 4}}, "unknown CNN encoder options"),
        ({"max_length": 1}, "max_length"),
    ],
)
def test_bad_parts_raise_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        build_captioner(TOKENIZER, **{"image_size": SIZE, **kw})
