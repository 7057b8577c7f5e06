"""Segmentation-aware captioning: one model that segments an image and captions it, with one encoder pass.

>>> model, processor = build_caption_seg_model(tokenizer, ["background", "circle", "square"], image_size=128)
>>> pixels = processor(images, return_tensors="pt")["pixel_values"]
>>> ids = model.generate(pixels, num_beams=3)                     # captions, (B, T)
>>> out = model.predict(pixels, region_captions=True)             # segmentation logits + captions + region captions

Parts (``CaptionSegConfig`` holds the two sub-configs and the joining hyper-parameters):

- **segmenter**: the smp U-Net of ``unet.py`` (``UnetForSemanticSegmentation``; any smp / timm encoder);
- **regions**: the U-Net encoder's feature map at ``region_stage`` (stride 16 by default: 8 x 8 regions at 128 px),
  mapped to ``hidden_size`` channels by a 1 x 1 convolution plus fixed sine-cosine position embeddings, as a
  (B, N, C) sequence. The encoder runs once per image for both tasks;
- **segment tokens** (``segment_tokens.py``, when ``segment_aware``): one token per predicted segment (class
  embedding + mask-pooled features + geometry, optionally refined by geometry-aware self-attention among the
  tokens, ``segment_relation_layers``), appended to the regions; a segment is one class
  (``segment_units="class"``) or one connected region of a class (``"instance"``, up to ``max_segments``); absent
  segments are masked out of the decoder's attention;
- **decoder**: the attention LSTM/GRU of ``lstm_decoder.py``, attending over regions and segment tokens at every
  step.

Which segmentation makes the tokens: in training, the ground-truth masks (``train_segments_from="ground_truth"``,
teacher forcing for the segments, so the decoder learns from correct segments while the segmenter is still poor)
or the model's own arg-max (``"predicted"``); at inference always the model's own prediction. The segmentation
that feeds the tokens is detached: the caption loss trains the features that are pooled, not the segmenter's
decisions.

Loss with labels: caption cross-entropy (``label_smoothing``) + ``attention_regularization`` x the doubly
stochastic attention penalty + ``segmentation_loss_weight`` x the U-Net's loss (``segmenter.loss``, e.g. CE +
Dice).

``save_caption_seg`` writes one folder (config with ``auto_map``, safetensors weights, tokenizer, image processor
and the code) that ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` loads in a fresh process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, GenerationConfig, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .class_ids import class_ids
from .lstm_decoder import LSTMDecoderConfig, LSTMDecoderForCausalLM, doubly_stochastic_penalty
from .memory_format import like_weight
from .region_encoders import sincos_position_embeddings
from .segment_tokens import SegmentTokens, instance_segments
from .segmentation_image_processor import SegmentationImageProcessor
from .unet import UnetConfig, UnetForSemanticSegmentation

TRAIN_SEGMENT_SOURCES = ("ground_truth", "predicted")
SEGMENT_UNITS = ("class", "instance")


class CaptionSegConfig(PreTrainedConfig):
    r"""Configuration of [`CaptionSegModel`].

    Args:
        segmenter: the U-Net's ``UnetConfig`` (or its dict): encoder, decoder channels, classes
            (``id2label``), ``semantic_loss_ignore_index`` and segmentation loss.
        decoder: the caption decoder's ``LSTMDecoderConfig`` (or its dict); its ``encoder_hidden_size`` must equal
            ``hidden_size``.
        region_stage: index into the U-Net encoder's feature list (``-1``: the deepest, stride 32; ``-2``: stride 16)
            whose map gives the regions.
        hidden_size: size C of the regions and segment tokens the decoder attends over.
        segment_aware: the decoder also attends over segment tokens. A model trained without them cannot be asked
            for them at inference (their weights were never trained); one trained with them can be run without.
        segment_min_area: share of the image a segment must cover to get a token.
        segment_units: ``"class"`` (a token per class) or ``"instance"`` (a token per connected region of a class).
        max_segments: with ``"instance"``: most segment tokens per image (the largest segments).
        segment_relation_layers: layers of geometry-aware self-attention among the segment tokens
            (``segment_relations.py``) before the decoder sees them; 0: none.
        segment_relation_heads: attention heads of those layers (``hidden_size`` must be a multiple).
        segment_part_norm: normalise each part of a segment token (class embedding, pooled features, mean colour,
            geometry) on its own before summing them (``segment_tokens.py`` says why). False, the layout of models
            saved before it existed, is the config's default so that they load unchanged;
            ``build_caption_seg_model`` (and so ``scripts/train.py``) makes new models with True.
        train_segments_from: ``"ground_truth"`` or ``"predicted"``: which segmentation makes the tokens in training.
        segmentation_loss_weight: weight of the segmentation loss in the total loss.
        label_smoothing: of the caption cross-entropy.
        max_length: generation limit in tokens, the start token included.
        num_beams: default beam width of ``generate``.
        image_size: square side the image processor resizes to (the training size).
        initializer_range: std of the normal init of the joining layers.
    """

    model_type = "caption_seg"
    sub_configs_defaults = {"segmenter": UnetConfig, "decoder": LSTMDecoderConfig}

    segmenter: UnetConfig | dict | None = None
    decoder: LSTMDecoderConfig | dict | None = None
    region_stage: int = -2
    hidden_size: int = 256
    segment_aware: bool = True
    segment_min_area: float = 0.002
    segment_units: str = "class"
    max_segments: int = 8
    segment_relation_layers: int = 0
    segment_relation_heads: int = 8
    segment_part_norm: bool = False
    train_segments_from: str = "ground_truth"
    segmentation_loss_weight: float = 1.0
    label_smoothing: float = 0.0
    max_length: int = 32
    num_beams: int = 3
    image_size: int = 128
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.segment_units not in SEGMENT_UNITS:
            raise ValueError(f"segment_units must be one of {SEGMENT_UNITS}, not {self.segment_units!r}")
        if self.max_segments < 1:
            raise ValueError(f"max_segments must be at least 1, not {self.max_segments}")
        if self.segment_relation_layers < 0 or self.segment_relation_heads < 1:
            raise ValueError(f"segment_relation_layers must be >= 0 and segment_relation_heads >= 1, not "
                             f"{self.segment_relation_layers} and {self.segment_relation_heads}")
        if self.segment_relation_layers and self.hidden_size % self.segment_relation_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of segment_relation_heads "
                             f"{self.segment_relation_heads}")
        if self.train_segments_from not in TRAIN_SEGMENT_SOURCES:
            raise ValueError(f"train_segments_from must be one of {TRAIN_SEGMENT_SOURCES}, not {self.train_segments_from!r}")
        if self.decoder.encoder_hidden_size != self.hidden_size:
            raise ValueError(
                f"the decoder attends over features of size {self.decoder.encoder_hidden_size} but hidden_size is "
                f"{self.hidden_size}; build the decoder config with encoder_hidden_size={self.hidden_size}"
            )
        depth = self.segmenter.encoder_depth
        if not -(depth + 1) <= self.region_stage <= depth:
            raise ValueError(f"region_stage {self.region_stage} is not a stage of a depth-{depth} encoder")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), not {self.label_smoothing}")
        if self.max_length < 2 or self.num_beams < 1 or self.image_size < 1:
            raise ValueError("max_length must be >= 2, num_beams >= 1 and image_size >= 1")
        # The classes are the segmenter's; mirrored here so that `model.config.id2label` names them.
        self.id2label = {int(k): v for k, v in self.segmenter.id2label.items()}
        self.label2id = {v: k for k, v in self.id2label.items()}

    @property
    def class_names(self) -> list[str]:
        return [self.id2label[i] for i in range(len(self.id2label))]


@dataclass
class CaptionSegEncoding(ModelOutput):
    r"""What one encoder pass gives both heads.

    Args:
        segmentation_logits: (B, K, H, W) class scores at the input's resolution.
        memory: (B, N + K, C) regions then segment tokens (or (B, N, C) without segment tokens).
        memory_mask: (B, N + S) bool, True where the decoder may attend; None without segment tokens.
        segments: (B, S, H, W) one-hot masks of the segments that made the tokens (from the arg-max at
            inference); S = K classes or ``max_segments`` instances.
        segment_classes: (B, S) the class of each segment.
        region_grid: (rows, columns) of the N regions.
    """

    segmentation_logits: torch.Tensor | None = None
    memory: torch.Tensor | None = None
    memory_mask: torch.Tensor | None = None
    segments: torch.Tensor | None = None
    segment_classes: torch.Tensor | None = None
    region_grid: tuple[int, int] | None = None


@dataclass
class CaptionSegOutput(ModelOutput):
    r"""Output of [`CaptionSegModel`] ``forward``.

    Args:
        loss: total loss (when ``labels`` or ``segmentation_labels`` are given).
        caption_loss, segmentation_loss, attention_penalty: its parts (unweighted); the penalty is computed only
            when it is weighted (``attention_regularization`` > 0) or the attention weights are asked for.
        logits: (B', T, vocab) next-token scores, one row per caption (B' = B, or the length of
            ``caption_image_index``).
        segmentation_logits: (B, K, H, W).
        attention_weights: (B', T, N + K) decoder attention over regions and segment tokens, when asked.
        memory_mask: (B', N + K) which of them could be attended.
    """

    loss: torch.Tensor | None = None
    caption_loss: torch.Tensor | None = None
    segmentation_loss: torch.Tensor | None = None
    attention_penalty: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    segmentation_logits: torch.Tensor | None = None
    attention_weights: torch.Tensor | None = None
    memory_mask: torch.Tensor | None = None


@dataclass
class CaptionSegPrediction(ModelOutput):
    r"""Output of [`CaptionSegModel.predict`].

    Args:
        segmentation_logits: (B, K, H, W).
        sequences: (B, T) generated caption ids, start token first.
        region_sequences: (R, T') one caption per (image, class) pair below, when region captions were asked.
        region_image_index: (R,) the image of each region caption.
        region_class_ids: (R,) the class of each region caption.
        attention_weights: (B, T - 1, N + K) where the decoder looked while predicting each token of ``sequences``
            after the start token (regions first, then segment tokens), when asked.
        memory_mask: (B, N + S) which regions and segment tokens could be attended, when attention was asked.
        segment_classes: (B, S) the class of each segment token, when attention was asked.
        region_grid: (rows, columns) of the N regions.
    """

    segmentation_logits: torch.Tensor | None = None
    sequences: torch.Tensor | None = None
    region_sequences: torch.Tensor | None = None
    region_image_index: torch.Tensor | None = None
    region_class_ids: torch.Tensor | None = None
    attention_weights: torch.Tensor | None = None
    memory_mask: torch.Tensor | None = None
    segment_classes: torch.Tensor | None = None
    region_grid: tuple[int, int] | None = None


class CaptionSegPreTrainedModel(PreTrainedModel):
    config_class = CaptionSegConfig
    config: CaptionSegConfig
    base_model_prefix = "caption_seg"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False

    def _init_weights(self, module):
        # The joining layers only; the U-Net and the decoder initialise themselves (their own _init_weights).
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class CaptionSegModel(CaptionSegPreTrainedModel):
    """U-Net segmenter + segmentation-aware attention-LSTM captioner over one shared encoder; see the module
    docstring.

    Inputs: ``pixel_values`` (B, 3, H, W) normalised with the segmenter's mean/std, H and W multiples of the
    U-Net's output stride (the ``SegmentationImageProcessor`` saved with the model does both).
    """

    def __init__(self, config: CaptionSegConfig):
        super().__init__(config)
        self.segmenter = UnetForSemanticSegmentation(config.segmenter)
        self.decoder = LSTMDecoderForCausalLM(config.decoder)
        encoder_channels = self.segmenter.unet.encoder.out_channels
        C = config.hidden_size
        self.region_proj = nn.Conv2d(encoder_channels[config.region_stage], C, kernel_size=1)
        self.segment_tokens = SegmentTokens(
            num_classes=config.segmenter.num_labels,
            pixel_feature_size=config.segmenter.decoder_channels[-1],
            region_feature_size=C,
            hidden_size=C,
            image_channels=config.segmenter.in_channels,
            min_area=config.segment_min_area,
            relation_layers=config.segment_relation_layers,
            relation_heads=config.segment_relation_heads,
            part_norm=config.segment_part_norm,
        )
        self.post_init()

    # ------------------------------------------------------------------------------------------------ encoder pass
    def _segment_aware(self, segment_aware: bool | None) -> bool:
        if segment_aware is None:
            return bool(self.config.segment_aware)
        if segment_aware and not self.config.segment_aware:
            raise ValueError(
                "this model was trained without segment tokens (segment_aware=False in its config): its segment-token "
                "layers are untrained, so it can only caption with segment_aware=False"
            )
        return bool(segment_aware)

    def _one_hot(self, class_map: torch.Tensor, num_classes: int) -> torch.Tensor:
        """(B, K, H, W) float one-hot of (B, H, W) class ids; ignored / out-of-range pixels belong to no class."""
        valid = (class_map >= 0) & (class_map < num_classes)
        one_hot = F.one_hot(torch.where(valid, class_map, 0).long(), num_classes).permute(0, 3, 1, 2)
        return (one_hot * valid[:, None]).float()

    def encode(self, pixel_values: torch.Tensor, segment_aware: bool | None = None,
               segmentation_labels: torch.Tensor | None = None, need_segments: bool = False) -> CaptionSegEncoding:
        """One pass of the U-Net (encoder, decoder, head) and the memory the caption decoder attends over.
        Without segment tokens the segments are made only when ``need_segments`` (region captions): the plain
        captioner's training steps do not pay for them."""
        aware = self._segment_aware(segment_aware)
        self.segmenter._check_input(pixel_values)
        unet = self.segmenter.unet
        pixel_values = like_weight(pixel_values, self.region_proj.weight)
        features = unet.encoder(pixel_values)
        pixel_features = unet.decoder(features)
        segmentation_logits = unet.segmentation_head(pixel_features)

        region_map = self.region_proj(features[self.config.region_stage])  # (B, C, h, w)
        rows, cols = region_map.shape[-2:]
        position = sincos_position_embeddings(self.config.hidden_size, rows, cols).to(region_map)
        regions = (region_map + position).flatten(2).transpose(1, 2)  # (B, N, C)

        if not aware and not need_segments:
            return CaptionSegEncoding(segmentation_logits=segmentation_logits, memory=regions, memory_mask=None,
                                      region_grid=(rows, cols))
        num_classes = segmentation_logits.shape[1]
        use_truth = self.training and segmentation_labels is not None and self.config.train_segments_from == "ground_truth"
        class_map = segmentation_labels if use_truth else class_ids(segmentation_logits.detach(), dim=1)
        if self.config.segment_units == "instance":
            min_pixels = max(1, int(self.config.segment_min_area * class_map.shape[-2] * class_map.shape[-1]))
            segments, segment_classes = instance_segments(class_map, num_classes, self.config.max_segments, min_pixels)
        else:
            segments = self._one_hot(class_map, num_classes)
            segment_classes = torch.arange(num_classes, device=segments.device).expand(segments.shape[0], -1)
        if not aware:
            return CaptionSegEncoding(segmentation_logits=segmentation_logits, memory=regions, memory_mask=None,
                                      segments=segments, segment_classes=segment_classes, region_grid=(rows, cols))
        tokens, present = self.segment_tokens(segments, pixel_features, region_map, pixel_values, segment_classes)
        memory = torch.cat([regions, tokens], dim=1)
        region_ok = torch.ones(regions.shape[:2], dtype=torch.bool, device=regions.device)
        return CaptionSegEncoding(segmentation_logits=segmentation_logits, memory=memory,
                                  memory_mask=torch.cat([region_ok, present], dim=1), segments=segments,
                                  segment_classes=segment_classes, region_grid=(rows, cols))

    # ----------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        pixel_values: torch.Tensor,
        decoder_input_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        segmentation_labels: torch.LongTensor | None = None,
        caption_image_index: torch.LongTensor | None = None,
        segment_aware: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> CaptionSegOutput | tuple:
        r"""
        Args:
            pixel_values: (B, 3, H, W).
            decoder_input_ids: (B', T) ``<bos> w1 .. wn`` right-padded; None: segmentation only.
            labels: (B', T) the tokens to predict at each step (``w1 .. wn <eos>``), -100 where padded.
            segmentation_labels: (B, H, W) class ids, the segmenter's ignore index where unlabelled.
            caption_image_index: (B',) the image of each caption row, so several captions of one image share its
                encoder pass; None: one caption per image (B' = B).
            segment_aware: override ``config.segment_aware`` (only to switch it off).
            output_attentions: return the decoder's attention over regions and segment tokens.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        enc = self.encode(pixel_values, segment_aware, segmentation_labels)
        segmentation_loss = None
        if segmentation_labels is not None:
            segmentation_loss = self.segmenter.segmentation_loss(enc.segmentation_logits, segmentation_labels)

        logits = weights = memory_mask = caption_loss = penalty = None
        if decoder_input_ids is not None:
            memory, memory_mask = enc.memory, enc.memory_mask
            if caption_image_index is not None:
                memory = memory[caption_image_index]
                memory_mask = None if memory_mask is None else memory_mask[caption_image_index]
            elif memory.shape[0] != decoder_input_ids.shape[0]:
                raise ValueError(
                    f"{decoder_input_ids.shape[0]} caption rows for {memory.shape[0]} images: pass caption_image_index"
                )
            reg = self.config.decoder.attention_regularization
            want_weights = bool(output_attentions) or (labels is not None and reg > 0)
            out = self.decoder(input_ids=decoder_input_ids, encoder_hidden_states=memory,
                               encoder_attention_mask=memory_mask, output_attentions=want_weights, use_cache=False)
            logits, weights = out.logits, out.attention_weights
            if labels is not None:
                caption_loss = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100,
                    label_smoothing=float(self.config.label_smoothing),
                )
                if weights is not None:  # None with attention_regularization 0: the penalty is not computed
                    penalty = doubly_stochastic_penalty(weights, labels != -100, memory_mask)

        loss = None
        if caption_loss is not None or segmentation_loss is not None:
            loss = 0.0
            if caption_loss is not None:
                loss = loss + caption_loss
                if penalty is not None and reg > 0:
                    loss = loss + reg * penalty
            if segmentation_loss is not None:
                loss = loss + self.config.segmentation_loss_weight * segmentation_loss
        output = CaptionSegOutput(
            loss=loss, caption_loss=caption_loss, segmentation_loss=segmentation_loss, attention_penalty=penalty,
            logits=logits, segmentation_logits=enc.segmentation_logits,
            attention_weights=weights if output_attentions else None, memory_mask=memory_mask,
        )
        return output if return_dict else output.to_tuple()

    # -------------------------------------------------------------------------------------------------- generation
    def caption_generation_config(self, **overrides) -> GenerationConfig:
        d = self.config.decoder
        num_beams = overrides.pop("num_beams", None) or self.config.num_beams
        settings = {
            "bos_token_id": d.bos_token_id, "eos_token_id": d.eos_token_id, "pad_token_id": d.pad_token_id,
            "max_length": self.config.max_length, "num_beams": num_beams, "early_stopping": num_beams > 1,
        }
        settings.update(overrides)
        if settings.get("max_new_tokens") is not None:
            settings["max_length"] = None
        return GenerationConfig(**settings)

    @torch.no_grad()
    def generate_from_memory(self, memory: torch.Tensor, memory_mask: torch.Tensor | None = None,
                             **generate_kwargs) -> torch.LongTensor:
        """(B, T) caption ids, start token first, from (B, M, C) memory (and its (B, M) mask)."""
        config = self.caption_generation_config(**generate_kwargs)
        start = torch.full((memory.shape[0], 1), config.bos_token_id, dtype=torch.long, device=memory.device)
        extra = {} if memory_mask is None else {"encoder_attention_mask": memory_mask}
        return self.decoder.generate(input_ids=start, encoder_hidden_states=memory, generation_config=config, **extra)

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, segment_aware: bool | None = None, **generate_kwargs) -> torch.LongTensor:
        """(B, T) caption ids (start token first, ``<pad>`` after ``<eos>``); ``num_beams``, ``max_new_tokens`` and
        other ``GenerationConfig`` fields as keyword arguments."""
        enc = self.encode(pixel_values, segment_aware)
        return self.generate_from_memory(enc.memory, enc.memory_mask, **generate_kwargs)

    def _region_memory(self, enc: CaptionSegEncoding, skip_classes: set[int]):
        """Per (image, present segment) pair: the image's memory masked to the regions the segment covers (and its
        own segment token), for a caption of that segment alone."""
        rows, cols = enc.region_grid
        coverage = F.adaptive_avg_pool2d(enc.segments, (rows, cols)).flatten(2) > 0  # (B, S, N)
        present = self.segment_tokens.presence(enc.segments)  # (B, S)
        B, S = present.shape
        classes = enc.segment_classes.tolist()
        aware = enc.memory.shape[1] > rows * cols
        pairs = [(b, k) for b in range(B) for k in range(S) if bool(present[b, k]) and classes[b][k] not in skip_classes]
        if not pairs:
            return None
        image_index = torch.tensor([b for b, _ in pairs], device=enc.memory.device)
        segment_index = torch.tensor([k for _, k in pairs], device=enc.memory.device)
        masks = coverage[image_index, segment_index]  # (R, N)
        if aware:
            masks = torch.cat([masks, F.one_hot(segment_index, S).bool()], dim=1)
        return enc.memory[image_index], masks, image_index, enc.segment_classes[image_index, segment_index]

    @torch.no_grad()
    def predict(self, pixel_values: torch.Tensor, segment_aware: bool | None = None, region_captions: bool = False,
                return_attention: bool = False, **generate_kwargs) -> CaptionSegPrediction:
        """Segmentation logits and captions from one encoder pass; with ``region_captions``, also one caption per
        (image, predicted segment) pair other than "background", the decoder seeing only that segment's regions and
        token; with ``return_attention``, the decoder's attention while it predicted each caption token (one more
        teacher-forced decoder pass over the generated captions)."""
        enc = self.encode(pixel_values, segment_aware, need_segments=region_captions)
        sequences = self.generate_from_memory(enc.memory, enc.memory_mask, **generate_kwargs)
        out = CaptionSegPrediction(segmentation_logits=enc.segmentation_logits, sequences=sequences,
                                   region_grid=enc.region_grid)
        if return_attention:
            # Padding after <eos> is right padding: it never changes the weights of the tokens before it.
            decoded = self.decoder(input_ids=sequences[:, :-1], encoder_hidden_states=enc.memory,
                                   encoder_attention_mask=enc.memory_mask, output_attentions=True, use_cache=False)
            out.attention_weights = decoded.attention_weights
            out.memory_mask = (enc.memory_mask if enc.memory_mask is not None
                               else torch.ones(enc.memory.shape[:2], dtype=torch.bool, device=enc.memory.device))
            out.segment_classes = enc.segment_classes
        if region_captions:
            skip = {i for i, name in self.config.id2label.items() if str(name).lower() == "background"}
            regions = self._region_memory(enc, skip)
            if regions is not None:
                memory, masks, image_index, class_ids = regions
                out.region_sequences = self.generate_from_memory(memory, masks, **generate_kwargs)
                out.region_image_index, out.region_class_ids = image_index, class_ids
        return out

def build_caption_seg_model(
    tokenizer,
    class_names: list[str],
    encoder: str = "tu-tf_efficientnet_lite0",
    image_size: int = 128,
    decoder_channels: list[int] | tuple[int, ...] = (64, 48, 32, 24, 16),
    encoder_depth: int = 5,
    imagenet_weights: str | None = None,
    ignore_index: int = 255,
    segmentation_loss: str = "ce:1,dice:1",
    image_skip_channels: int = 0,
    decoder_options: dict | None = None,
    **config_options,
) -> tuple[CaptionSegModel, SegmentationImageProcessor]:
    """A fresh model for ``class_names`` and the caption ``tokenizer``, and its image processor (resize to
    ``image_size`` square, normalise, pad to the stride). ``imagenet_weights``: ``"lite0"``/``"lite1"``/``"lite2"``
    with the matching ``tu-tf_efficientnet_liteN`` encoder. ``image_skip_channels``: the U-Net's full-resolution skip
    (``UnetConfig.decoder_image_skip_channels``). ``decoder_options``: ``LSTMDecoderConfig`` fields;
    ``config_options``: ``CaptionSegConfig`` fields (``segment_part_norm`` defaults to True here: new models get
    normalised token parts, while configs saved without the field keep the old layout)."""
    if tokenizer.eos_token_id is None or tokenizer.bos_token_id is None:
        raise ValueError("the caption tokenizer needs <bos> and <eos> tokens (models.caption_tokenizer makes them)")
    segmenter = UnetConfig(
        encoder_name=encoder, encoder_depth=encoder_depth, decoder_channels=list(decoder_channels)[:encoder_depth],
        id2label=dict(enumerate(class_names)), semantic_loss_ignore_index=ignore_index, loss=segmentation_loss,
        decoder_image_skip_channels=image_skip_channels,
    )
    hidden = int(config_options.get("hidden_size", 256))
    decoder = LSTMDecoderConfig(
        vocab_size=len(tokenizer), encoder_hidden_size=hidden, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        **(decoder_options or {}),
    )
    config_options.setdefault("segment_part_norm", True)
    config = CaptionSegConfig(segmenter=segmenter, decoder=decoder, image_size=image_size, **config_options)
    model = CaptionSegModel(config)
    if imagenet_weights:
        model.segmenter.load_imagenet_encoder(imagenet_weights)
        model.config.segmenter = model.segmenter.config
    return model, caption_seg_image_processor(model.config)


def caption_seg_image_processor(config: CaptionSegConfig) -> SegmentationImageProcessor:
    size = int(config.image_size)
    return SegmentationImageProcessor.for_model(config.segmenter, do_resize=True, size={"height": size, "width": size})


def save_caption_seg(model: CaptionSegModel, tokenizer, image_processor, out_dir: str | Path) -> Path:
    """One folder: config.json (with auto_map), model.safetensors, the tokenizer, preprocessor_config.json and the
    code files for ``trust_remote_code=True``."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    image_processor.save_pretrained(out_dir)
    return out_dir


def load_caption_seg(folder: str | Path, trust_remote_code: bool = True):
    """(model, tokenizer, image processor) from a ``save_caption_seg`` folder."""
    from transformers import AutoImageProcessor, AutoTokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a saved caption-seg model folder (no config.json)")
    model = AutoModel.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if model.config.model_type != CaptionSegConfig.model_type:
        raise ValueError(f"{folder} holds a {model.config.model_type!r} model, not a segmentation-aware captioner")
    return model, AutoTokenizer.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder)


AutoConfig.register(CaptionSegConfig.model_type, CaptionSegConfig, exist_ok=True)
AutoModel.register(CaptionSegConfig, CaptionSegModel, exist_ok=True)
CaptionSegConfig.register_for_auto_class()
CaptionSegModel.register_for_auto_class("AutoModel")

__all__ = [
    "CaptionSegConfig",
    "CaptionSegEncoding",
    "CaptionSegModel",
    "CaptionSegOutput",
    "CaptionSegPrediction",
    "build_caption_seg_model",
    "caption_seg_image_processor",
    "load_caption_seg",
    "save_caption_seg",
]
