"""A tiny segmentation-aware captioner (random weights) for tests: built and saved in about a second."""

from __future__ import annotations

from pathlib import Path

from datasets_cfg.shapes import CLASS_NAMES, generate_scene
from models.caption_seg_model import build_caption_seg_model, save_caption_seg
from models.caption_tokenizer import train_caption_tokenizer


def build_tiny_caption_seg_model(segment_aware: bool = True, image_size: int = 64, seed: int = 0, **config_options):
    """(model, tokenizer, image processor) on the shapes classes, its vocabulary from 20 shapes captions;
    ``config_options``: more ``CaptionSegConfig`` fields."""
    import torch

    torch.manual_seed(seed)
    tokenizer = train_caption_tokenizer([generate_scene(i).captions for i in range(20)])
    model, processor = build_caption_seg_model(
        tokenizer, list(CLASS_NAMES), encoder="tu-test_efficientnet", encoder_depth=3, decoder_channels=(16, 8, 8),
        image_size=image_size, region_stage=-1, hidden_size=32, segment_aware=segment_aware, max_length=12,
        num_beams=2, decoder_options={"embedding_size": 16, "hidden_size": 32, "attention_size": 16},
        **config_options,
    )
    # Random joining layers at the default small init give every image the same caption; larger output weights
    # make captions differ between images, so that a batching or ordering bug changes them.
    with torch.no_grad():
        model.decoder.lm_head.weight.normal_(0.0, 2.0)
        for name, param in model.decoder.named_parameters():
            if name.startswith(("cells", "init_state", "embed_tokens")):
                param.normal_(0.0, 1.0)
    return model.eval(), tokenizer, processor


def save_tiny_caption_seg_model(folder: str | Path, segment_aware: bool = True) -> Path:
    """Save the tiny model (config, safetensors, tokenizer, image processor, code) into ``folder``."""
    model, tokenizer, processor = build_tiny_caption_seg_model(segment_aware)
    return save_caption_seg(model, tokenizer, processor, folder)
