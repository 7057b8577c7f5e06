"""The captioning model: a ``VisionEncoderDecoderModel`` assembled from a region encoder and a text decoder.

>>> model, processor = build_captioner(tokenizer, encoder="resnet10t", decoder="lstm", image_size=128)
>>> ids = model.generate(**processor(images, return_tensors="pt"), num_beams=3)
>>> tokenizer.batch_decode(ids, skip_special_tokens=True)

Encoders (``region_encoders.py``): ``"vit"`` (a ViT trained from scratch) or any timm CNN name (``resnet18``,
``resnet10t``, ``tf_efficientnet_lite0``, ...). Decoders: ``"lstm"`` / ``"gru"`` (the attention RNN of
``lstm_decoder.py``), ``"transformer"`` (a small GPT-2 with cross-attention, trained from scratch on the caption
vocabulary), or the path / Hub id of a pretrained causal LM (loaded with ``add_cross_attention=True``; use that
model's own tokenizer).

``CaptionerModel`` is ``VisionEncoderDecoderModel`` itself, under the model type ``"captioner"`` so that its config
can carry an ``auto_map``: ``save_captioner`` writes config, safetensors weights, generation config, tokenizer,
image processor *and* this file with the files it imports. Importing it registers the encoder and decoder configs
(``lstm_decoder``, ``cnn_region_encoder``) with ``AutoConfig``, which is what a stock
``VisionEncoderDecoderConfig`` needs to rebuild its sub-configs, so that in a fresh Python process

>>> AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)   # or AutoModel

loads it without this project installed.
"""

from pathlib import Path

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
)

from .lstm_decoder import LSTMDecoderConfig, LSTMDecoderForCausalLM
from .region_encoders import (
    CNNRegionEncoderConfig,
    CNNRegionEncoderModel,
    build_vit_encoder,
    image_processor_for,
)

DECODER_KINDS = ("lstm", "gru", "transformer")
_MODULE = __name__.rsplit(".", 1)[-1]


class CaptionerConfig(VisionEncoderDecoderConfig):
    """``VisionEncoderDecoderConfig`` under its own model type, pointing the Auto classes at this file."""

    model_type = "captioner"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # One entry per Auto class that should load it with trust_remote_code (save_pretrained adds only one).
        defaults = {
            "AutoConfig": f"{_MODULE}.CaptionerConfig",
            "AutoModel": f"{_MODULE}.CaptionerModel",
            "AutoModelForImageTextToText": f"{_MODULE}.CaptionerModel",
        }
        self.auto_map = {**defaults, **(getattr(self, "auto_map", None) or {})}


class CaptionerModel(VisionEncoderDecoderModel):
    """``VisionEncoderDecoderModel`` with a ``CaptionerConfig``: same forward, generate and weights layout."""

    config_class = CaptionerConfig
    config: CaptionerConfig


AutoConfig.register(CaptionerConfig.model_type, CaptionerConfig, exist_ok=True)
AutoModel.register(CaptionerConfig, CaptionerModel, exist_ok=True)
AutoModelForImageTextToText.register(CaptionerConfig, CaptionerModel, exist_ok=True)
CaptionerConfig.register_for_auto_class()
CaptionerModel.register_for_auto_class("AutoModelForImageTextToText")


def _special_ids(tokenizer) -> dict[str, int]:
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos is None:
        raise ValueError("the tokenizer needs an end-of-sequence token (eos_token) for captioning")
    start = bos if bos is not None else eos
    return {"bos": start, "eos": eos, "pad": pad if pad is not None else eos}


def build_encoder(
    encoder: str = "resnet10t", image_size: int = 128, imagenet_weights: bool = False, **options
) -> PreTrainedModel:
    """``"vit"`` -> ``build_vit_encoder(image_size, **options)``; a timm name -> ``CNNRegionEncoderModel``
    (options: ``feature_stage``, ``hidden_size``, ``grid_size``, ``output_stride``, ``position_embeddings``)."""
    if encoder == "vit":
        if imagenet_weights:
            raise ValueError("offline ImageNet weights exist only for the tf_efficientnet_lite CNN encoders, not for ViT")
        return build_vit_encoder(image_size=image_size, **options)
    unknown = set(options) - {"feature_stage", "hidden_size", "grid_size", "output_stride", "position_embeddings"}
    if unknown:
        raise ValueError(f"unknown CNN encoder options {sorted(unknown)}")
    model = CNNRegionEncoderModel(CNNRegionEncoderConfig(backbone=encoder, image_size=image_size, **options))
    if imagenet_weights:
        model.load_imagenet_weights()
    return model


def build_decoder(decoder: str, tokenizer, encoder_hidden_size: int, max_length: int = 32, **options) -> PreTrainedModel:
    """The text decoder: ``lstm``/``gru`` (options: ``LSTMDecoderConfig`` fields), ``transformer`` (options:
    ``GPT2Config`` fields such as ``n_embd``, ``n_layer``, ``n_head``), or a pretrained causal LM path / Hub id."""
    ids = _special_ids(tokenizer)
    special = {"bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["pad"]}
    if decoder in ("lstm", "gru"):
        config = LSTMDecoderConfig(
            vocab_size=len(tokenizer), encoder_hidden_size=encoder_hidden_size, cell_type=decoder,
            **special, **options,
        )
        return LSTMDecoderForCausalLM(config)
    if decoder == "transformer":
        settings = {"n_embd": 256, "n_layer": 3, "n_head": 4, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}
        settings.update(options)
        config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=max(max_length, 16), add_cross_attention=True, is_decoder=True,
            **special, **settings,
        )
        # Eager attention, so that the cross-attention weights can be returned for attention maps.
        return GPT2LMHeadModel._from_config(config, attn_implementation="eager")
    if options:
        raise ValueError(f"a pretrained decoder ({decoder!r}) takes no decoder options, got {sorted(options)}")
    try:
        config = AutoConfig.from_pretrained(decoder)
        config.is_decoder = True
        config.add_cross_attention = True  # new cross-attention layers start untrained, as in VisionEncoderDecoder
        model = AutoModelForCausalLM.from_pretrained(decoder, config=config)
    except OSError as err:
        raise ValueError(
            f"decoder must be one of {DECODER_KINDS} or the path / Hub id of a pretrained causal LM; "
            f"loading {decoder!r} failed: {err}"
        ) from err
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the pretrained decoder {decoder!r} only "
            f"{model.config.vocab_size}: use the decoder's own tokenizer (AutoTokenizer.from_pretrained)"
        )
    return model


def build_captioner(
    tokenizer,
    encoder: str | PreTrainedModel = "resnet10t",
    decoder: str | PreTrainedModel = "lstm",
    image_size: int = 128,
    encoder_options: dict | None = None,
    decoder_options: dict | None = None,
    imagenet_weights: bool = False,
    max_length: int = 32,
    num_beams: int = 3,
):
    """A fresh ``CaptionerModel`` and its ``ViTImageProcessor``.

    Args:
        tokenizer: the caption tokenizer (bos/eos/pad tokens); sets the vocabulary and the special token ids.
        encoder: ``"vit"``, a timm CNN name, or a ready encoder model.
        decoder: ``"lstm"``, ``"gru"``, ``"transformer"``, a pretrained causal LM path / Hub id, or a ready model.
        image_size: square input side of the image processor (and the encoder's position embeddings).
        encoder_options / decoder_options: see ``build_encoder`` / ``build_decoder``.
        imagenet_weights: load the offline ImageNet weights into a ``tf_efficientnet_lite*`` encoder.
        max_length: generation limit in tokens, the start token included.
        num_beams: default beam width of ``generate``.
    """
    if not isinstance(encoder, PreTrainedModel):
        encoder = build_encoder(encoder, image_size, imagenet_weights, **(encoder_options or {}))
    if not isinstance(decoder, PreTrainedModel):
        decoder = build_decoder(decoder, tokenizer, encoder.config.hidden_size, max_length, **(decoder_options or {}))
    config = CaptionerConfig.from_encoder_decoder_configs(encoder.config, decoder.config)
    model = CaptionerModel(config=config, encoder=encoder, decoder=decoder)
    set_generation_defaults(model, tokenizer, max_length=max_length, num_beams=num_beams)
    return model, image_processor_for(encoder, image_size)


def set_generation_defaults(model: VisionEncoderDecoderModel, tokenizer, max_length: int = 32, num_beams: int = 3) -> None:
    """Special tokens on the model config (``shift_tokens_right`` reads them) and a fresh generation config."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (start token + one word), not {max_length}")
    if num_beams < 1:
        raise ValueError(f"num_beams must be at least 1, not {num_beams}")
    ids = _special_ids(tokenizer)
    model.config.decoder_start_token_id = ids["bos"]
    model.config.pad_token_id = ids["pad"]
    model.config.eos_token_id = ids["eos"]
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["bos"],
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        max_length=max_length,
        num_beams=num_beams,
        early_stopping=num_beams > 1,
    )


def save_captioner(model: VisionEncoderDecoderModel, tokenizer, image_processor, out_dir: str | Path) -> Path:
    """One folder with everything: config.json (with auto_map), model.safetensors, generation_config.json, the
    tokenizer, preprocessor_config.json and the code files for ``trust_remote_code=True``."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    image_processor.save_pretrained(out_dir)
    return out_dir


def load_captioner(folder: str | Path, trust_remote_code: bool = True):
    """(model, tokenizer, image processor) from a ``save_captioner`` folder (or a Hub repository)."""
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    processor = AutoImageProcessor.from_pretrained(folder)
    return model, tokenizer, processor


__all__ = [
    "CaptionerConfig",
    "CaptionerModel",
    "build_captioner",
    "build_decoder",
    "build_encoder",
    "load_captioner",
    "save_captioner",
    "set_generation_defaults",
]
