"""Several trained captioners that caption as one: beam search over the mean of their word probabilities.

>>> members = [load_captioner(folder)[0] for folder in ("runs/lstm_7x7/best", "runs/lstm_14x14/best")]
>>> ensemble = CaptionEnsemble.from_members(members)
>>> ids = ensemble.generate(pixel_values=processor(images, return_tensors="pt")["pixel_values"], num_beams=3)

At every step the next word's probability is the weighted mean of the members' probabilities,
``p(w) = sum_i weight_i * p_i(w)`` (weights sum to 1), each member conditioned on its own encoding of the photo and
on the same words so far. ``forward`` returns ``log p`` as its logits, so stock ``generate`` (beam search, length
penalty, stopping, ``max_length``) runs on the ensemble unchanged. transformers' ``generate`` drives one model and
has no ensembling of its own (fairseq's ``EnsembleModel`` does, for fairseq models only); this class is the
smallest model that lets it drive several.

Members may differ in encoder (a 7 x 7 or a 14 x 14 region map, another backbone) and decoder (attention LSTM or
transformer); they must share the vocabulary (token ids and special tokens: train them with the same
``--min-word-freq`` on the same data), and take the same image input (one image processor), since ``generate``
gets one ``pixel_values``. Each member keeps its own cache (the LSTM's recurrent state, the transformer's keys and
values) inside an ``EnsembleCache``, which beam search reorders as it reorders any cache.

The ensemble is assembled from loaded members and not saved as one folder: each member stays its own folder
(``scripts/evaluate.py --task caption --model A --ensemble-with B``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput
from transformers.utils import ModelOutput


class CaptionEnsembleConfig(PreTrainedConfig):
    r"""Configuration of [`CaptionEnsemble`].

    Args:
        weights: one non-negative weight per member, normalised to sum to 1 (None: equal weights).
        vocab_size: the members' shared vocabulary size.
    """

    model_type = "caption_ensemble"

    weights: list[float] | None = None
    vocab_size: int = 0
    is_encoder_decoder: bool = True


@dataclass
class EnsembleEncoderOutput(ModelOutput):
    r"""The members' region features in one tensor, so that ``generate`` expands them for the beams as it expands
    any encoder output.

    Args:
        last_hidden_state: (B, sum_i L_i * C_i) every member's (B, L_i, C_i) regions, flattened and concatenated.
        region_shapes: ((L_0, C_0), (L_1, C_1), ...), to unpack them.
    """

    last_hidden_state: torch.FloatTensor | None = None
    region_shapes: tuple[tuple[int, int], ...] | None = None

    def unpack(self) -> list[torch.Tensor]:
        """Each member's (B, L_i, C_i) regions."""
        sizes = [length * width for length, width in self.region_shapes]
        parts = torch.split(self.last_hidden_state, sizes, dim=1)
        return [p.reshape(p.shape[0], length, width) for p, (length, width) in zip(parts, self.region_shapes)]


class EnsembleCache:
    """One cache per member (``None`` before the first step), reordered together by beam search."""

    def __init__(self, caches: Sequence):
        self.caches = list(caches)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        for cache in self.caches:
            if cache is not None:
                cache.reorder_cache(beam_idx)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return max((c.get_seq_length() for c in self.caches if c is not None), default=0)


class _EnsembleEncoder(nn.Module):
    """Runs every member's encoder on the same pixels (what ``generate`` calls once per batch)."""

    main_input_name = "pixel_values"

    def __init__(self, members: nn.ModuleList):
        super().__init__()
        self._members = [members]  # a list, so that the members' weights are not registered twice

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> EnsembleEncoderOutput:
        states = [member.encoder(pixel_values=pixel_values).last_hidden_state for member in self._members[0]]
        return EnsembleEncoderOutput(
            last_hidden_state=torch.cat([s.flatten(1) for s in states], dim=1),
            region_shapes=tuple((s.shape[1], s.shape[2]) for s in states),
        )


class CaptionEnsemble(PreTrainedModel, GenerationMixin):
    """An ensemble of captioners (``VisionEncoderDecoderModel``\\ s) that ``generate`` drives as one model."""

    config_class = CaptionEnsembleConfig
    config: CaptionEnsembleConfig
    main_input_name = "pixel_values"
    base_model_prefix = "ensemble"

    def __init__(self, config: CaptionEnsembleConfig, members: Sequence[PreTrainedModel]):
        super().__init__(config)
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one captioner")
        self.members = nn.ModuleList(members)
        weights = config.weights if config.weights is not None else [1.0] * len(members)
        if len(weights) != len(members):
            raise ValueError(f"{len(weights)} weights for {len(members)} captioners: give one weight per captioner")
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"ensemble weights must be finite, non-negative and not all 0, not {list(weights)}")
        total = float(sum(weights))
        # log weight_i, added to each member's log-probabilities; a weight of 0 gives -inf, i.e. that member is off.
        self.register_buffer("log_weights", torch.tensor([math.log(w / total) if w > 0 else -math.inf
                                                          for w in weights]), persistent=False)
        self._encoder = _EnsembleEncoder(self.members)
        self.generation_config = GenerationConfig.from_dict(members[0].generation_config.to_dict())

    @classmethod
    def from_members(cls, members: Sequence[PreTrainedModel], weights: Sequence[float] | None = None,
                     tokenizers: Sequence | None = None) -> "CaptionEnsemble":
        """The ensemble of already loaded captioners. ``tokenizers`` (one per member), when given, are checked to
        map the same words to the same ids; without them only the sizes and special token ids are compared."""
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one captioner")
        first = members[0]
        vocab = first.decoder.config.vocab_size
        special = ("decoder_start_token_id", "eos_token_id", "pad_token_id")
        for i, member in enumerate(members[1:], start=1):
            if member.decoder.config.vocab_size != vocab:
                raise ValueError(f"captioner {i} has a vocabulary of {member.decoder.config.vocab_size} tokens and "
                                 f"captioner 0 one of {vocab}: an ensemble needs one shared vocabulary")
            for name in special:
                mine, theirs = getattr(member.generation_config, name), getattr(first.generation_config, name)
                if mine != theirs:
                    raise ValueError(f"captioner {i} has {name} {mine} and captioner 0 {theirs}: an ensemble needs "
                                     "the same special tokens")
        if tokenizers is not None:
            if len(tokenizers) != len(members):
                raise ValueError(f"{len(tokenizers)} tokenizers for {len(members)} captioners")
            words = tokenizers[0].get_vocab()
            for i, tokenizer in enumerate(tokenizers[1:], start=1):
                if tokenizer.get_vocab() != words:
                    raise ValueError(f"captioner {i}'s tokenizer maps words to other ids than captioner 0's: an "
                                     "ensemble needs one shared vocabulary (train the captioners on the same "
                                     "captions with the same --min-word-freq)")
        config = CaptionEnsembleConfig(weights=None if weights is None else [float(w) for w in weights],
                                       vocab_size=vocab)
        return cls(config, members)

    def get_encoder(self, modality=None):
        return self._encoder

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() would make one DynamicCache for the ensemble; each member makes its own instead (forward).
        return False

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, cache=None, encoder_outputs=None,
                                      use_cache=None, **kwargs):
        if next_sequence_length is not None and cache is not None:
            input_ids = input_ids[:, -next_sequence_length:]
        return {"decoder_input_ids": input_ids, "encoder_outputs": encoder_outputs, "cache": cache,
                "use_cache": use_cache}

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        encoder_outputs: EnsembleEncoderOutput | None = None,
        cache: EnsembleCache | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        r"""
        Args:
            pixel_values: (B, 3, H, W) the photos, preprocessed by the members' shared image processor; not needed
                when ``encoder_outputs`` is given.
            decoder_input_ids: (B, T) the words so far, start token first; with a filled ``cache`` only the new
                ones (usually T = 1).
            encoder_outputs: what ``get_encoder()`` returned for these photos.
            cache: the members' caches from the previous call.

        Returns:
            ``Seq2SeqLMOutput`` with ``logits`` (B, T, V): the log of the members' weighted mean probability of
            each next token (already normalised: ``log_softmax`` leaves it unchanged), and ``cache`` when
            ``use_cache``.
        """
        if encoder_outputs is None:
            if pixel_values is None:
                raise ValueError("give pixel_values or encoder_outputs")
            encoder_outputs = self._encoder(pixel_values)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        caches = cache.caches if isinstance(cache, EnsembleCache) else [None] * len(self.members)
        log_probs, new_caches = [], []
        for member, regions, member_cache, log_weight in zip(self.members, encoder_outputs.unpack(), caches,
                                                             self.log_weights):
            out = member(encoder_outputs=BaseModelOutput(last_hidden_state=regions),
                         decoder_input_ids=decoder_input_ids, cache=member_cache, use_cache=use_cache,
                         return_dict=True)
            log_probs.append(out.logits.float().log_softmax(dim=-1) + log_weight)
            new_caches.append(out.cache if use_cache else None)
        return Seq2SeqLMOutput(logits=torch.logsumexp(torch.stack(log_probs), dim=0),
                               cache=EnsembleCache(new_caches) if use_cache else None)


__all__ = ["CaptionEnsemble", "CaptionEnsembleConfig", "EnsembleCache", "EnsembleEncoderOutput"]
