"""Show, Attend and Tell as a transformers causal LM: an attention LSTM/GRU decoder over image regions.

``LSTMDecoderForCausalLM`` is a ``PreTrainedModel`` with ``GenerationMixin``, registered with ``AutoConfig`` and
``AutoModelForCausalLM``, so it can be the ``decoder`` of a ``transformers.VisionEncoderDecoderModel``:

>>> decoder = LSTMDecoderForCausalLM(LSTMDecoderConfig(vocab_size=100, encoder_hidden_size=256))
>>> model = VisionEncoderDecoderModel(encoder=region_encoder, decoder=decoder)  # any encoder with hidden_size 256
>>> model.generate(pixel_values, num_beams=3)

At every step it attends over ``encoder_hidden_states`` (B, N, C) with soft additive attention (Xu et al. 2015):
``e_ti = w . tanh(W_e v_i + W_h h_{t-1})``, ``alpha_t = softmax(e_t)``, ``z_t = beta_t * sum_i alpha_ti v_i``
where ``beta_t = sigmoid(W_b h_{t-1})`` is the optional gate. The cell input is ``[embed(y_{t-1}), z_t]``; the
state starts from the mean region feature (``h_0 = tanh(W v_mean)``). Stacked layers feed the next layer with the
previous layer's output; attention is queried with the top layer's state.

The recurrent state is the cache: ``cache`` is a stock ``DynamicCache`` whose layers keep recurrent states (the
linear-attention states Mamba uses), one per cell, holding ``(B, 2, H)`` (LSTM: h and c) or ``(B, 1, H)`` (GRU).
``GenerationMixin`` creates it from the config's ``layer_types``, and beam search reorders it with
``Cache.reorder_cache`` (an ``index_select`` of every layer's recurrent state along the batch), also when the model
generates as the decoder of a ``VisionEncoderDecoderModel`` (which wraps it in an ``EncoderDecoderCache``: the
decoder keeps its state in the self-attention half). So no custom cache class or ``_reorder_cache`` is needed.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import (
    Cache,
    DynamicCache,
    EncoderDecoderCache,
    LinearAttentionAndFullAttentionLayer,
    LinearAttentionCacheLayerMixin,
)
from transformers.utils import ModelOutput

CELL_TYPES = ("lstm", "gru")


class LSTMDecoderConfig(PreTrainedConfig):
    r"""Configuration of [`LSTMDecoderForCausalLM`].

    Args:
        vocab_size: number of tokens (the caption tokenizer's ``len(tokenizer)``).
        embedding_size: word embedding size.
        hidden_size: recurrent state size of every cell.
        num_hidden_layers: stacked cells (Show, Attend and Tell uses 1).
        encoder_hidden_size: size C of the region features it attends over, i.e. the encoder's ``hidden_size``.
            Also readable as ``cross_attention_hidden_size``, which tells ``VisionEncoderDecoderModel`` to feed the
            features unprojected.
        attention_size: size of the additive attention's hidden layer.
        cell_type: ``"lstm"`` or ``"gru"``.
        dropout: dropout on the embeddings and before the output layer.
        gated_context: multiply the attended context by the gate ``beta_t = sigmoid(W_b h_{t-1})`` (the paper's
            Section 4.2.1).
        attention_regularization: weight ``lambda`` of the doubly stochastic attention penalty
            ``lambda * mean_i (1 - sum_t alpha_ti)^2`` added to the loss when ``labels`` are given (0 disables).
        initializer_range: std of the normal init of linear layers and embeddings.
    """

    model_type = "lstm_decoder"
    # VisionEncoderDecoderModel adds an encoder->decoder projection unless the decoder declares this size.
    attribute_map = {"cross_attention_hidden_size": "encoder_hidden_size"}

    vocab_size: int = 1000
    embedding_size: int = 256
    hidden_size: int = 512
    num_hidden_layers: int = 1
    encoder_hidden_size: int = 256
    attention_size: int = 256
    cell_type: str = "lstm"
    dropout: float = 0.3
    gated_context: bool = True
    attention_regularization: float = 1.0
    initializer_range: float = 0.05
    use_cache: bool = True
    is_decoder: bool = True
    add_cross_attention: bool = True
    tie_word_embeddings: bool = False
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2

    def __post_init__(self, **kwargs):
        if self.cell_type not in CELL_TYPES:
            raise ValueError(f"cell_type must be one of {CELL_TYPES}, not {self.cell_type!r}")
        for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "encoder_hidden_size",
                     "attention_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout!r}")
        if float(self.attention_regularization) < 0:
            raise ValueError(f"attention_regularization must be >= 0 (0 disables it), not {self.attention_regularization!r}")
        super().__post_init__(**kwargs)

    @property
    def layer_types(self) -> list[str]:
        # Tells DynamicCache(config=...) to give every cell a layer that holds recurrent states. "hybrid" (recurrent
        # state + an attention part that stays empty) rather than "linear_attention": generate() wraps the cache of
        # an encoder-decoder in an EncoderDecoderCache, whose constructor asks every layer for its sequence length,
        # which pure linear-attention caches refuse to give.
        return ["hybrid"] * self.num_hidden_layers

    @property
    def states_per_cell(self) -> int:
        return 2 if self.cell_type == "lstm" else 1


@dataclass
class LSTMDecoderOutput(ModelOutput):
    r"""Output of [`LSTMDecoderForCausalLM`].

    Args:
        loss: (1,) next-token cross-entropy plus the weighted attention penalty, when ``labels`` are given.
        logits: (B, T, vocab_size) next-token scores.
        cache: the recurrent state after the last input token (``Cache``), when ``use_cache``.
        hidden_states: when ``output_hidden_states``: (embeddings, then each cell's outputs), each (B, T, ·).
        attentions: always None (there is no self-attention); kept for the causal-LM output convention.
        cross_attentions: when ``output_attentions``: a 1-tuple holding (B, 1, T, N), the attention weights in
            the (batch, heads, query, key) layout of transformer decoders, so ``VisionEncoderDecoderModel`` and
            ``generate`` pass them on.
        attention_weights: when ``output_attentions``: (B, T, N), weight of region i when predicting token t+1.
        attention_penalty: (1,) the unweighted doubly stochastic penalty, when ``labels`` are given.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    attention_weights: torch.Tensor | None = None
    attention_penalty: torch.Tensor | None = None


def doubly_stochastic_penalty(
    attention_weights: torch.Tensor, token_mask: torch.Tensor | None = None, region_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Show, Attend and Tell's attention regulariser: ``mean over (batch, region) of (1 - sum_t alpha_ti)^2``.

    It pushes the model to look at every region about once over the caption. ``attention_weights`` is (B, T, N);
    ``token_mask`` (B, T) is True at the steps that belong to the caption (padding steps do not count);
    ``region_mask`` (B, N) is True at the regions that exist (masked-out ones, which get no attention, do not count).
    """
    if token_mask is not None:
        attention_weights = attention_weights * token_mask[..., None].to(attention_weights.dtype)
    per_region = (1.0 - attention_weights.sum(dim=1)) ** 2
    if region_mask is None:
        return per_region.mean()
    region_mask = region_mask.to(per_region.dtype)
    return (per_region * region_mask).sum() / region_mask.sum().clamp(min=1.0)


class SoftAttention(nn.Module):
    """Additive attention over N regions: (B, N, C) features and (B, H) query -> (B, C) context, (B, N) weights."""

    def __init__(self, encoder_size: int, hidden_size: int, attention_size: int):
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_size, attention_size)
        self.query_proj = nn.Linear(hidden_size, attention_size)
        self.score = nn.Linear(attention_size, 1)

    def forward(self, features: torch.Tensor, projected: torch.Tensor, query: torch.Tensor,
                mask: torch.Tensor | None = None):
        # ``projected`` = encoder_proj(features), computed once per forward rather than once per step.
        scores = self.score(torch.tanh(projected + self.query_proj(query)[:, None, :])).squeeze(-1)
        if mask is not None:  # (B, N) True where a region may be attended
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
        context = torch.bmm(weights[:, None, :], features).squeeze(1)
        return context, weights


class LSTMDecoderPreTrainedModel(PreTrainedModel):
    config_class = LSTMDecoderConfig
    config: LSTMDecoderConfig
    base_model_prefix = "lstm_decoder"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    # The state cannot be rolled back to an earlier token (no assisted generation).
    _is_stateful = True

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LSTMCell, nn.GRUCell)):
            bound = 1.0 / module.hidden_size**0.5  # PyTorch's own default for recurrent cells
            for name, param in module.named_parameters():
                init.uniform_(param, -bound, bound)


class LSTMDecoderForCausalLM(LSTMDecoderPreTrainedModel, GenerationMixin):
    """Attention LSTM/GRU caption decoder (Show, Attend and Tell) with a language-modelling head.

    Inputs: ``input_ids`` (B, T) starting with the decoder start token, and ``encoder_hidden_states`` (B, N, C)
    with C = ``config.encoder_hidden_size``. Sequences are right-padded; padding steps only affect their own
    (ignored) predictions, so no attention mask is needed.
    """

    def __init__(self, config: LSTMDecoderConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size)
        self.dropout = nn.Dropout(config.dropout)
        C, H = config.encoder_hidden_size, config.hidden_size
        self.attention = SoftAttention(C, H, config.attention_size)
        self.context_gate = nn.Linear(H, C) if config.gated_context else None
        cell = nn.LSTMCell if config.cell_type == "lstm" else nn.GRUCell
        self.cells = nn.ModuleList(
            [cell(config.embedding_size + C if i == 0 else H, H) for i in range(config.num_hidden_layers)]
        )
        # One linear map per stored state (h, and c for LSTM) per cell, from the mean region feature.
        self.init_state = nn.Linear(C, H * config.states_per_cell * config.num_hidden_layers)
        self.lm_head = nn.Linear(H, config.vocab_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    # ------------------------------------------------------------------------------------------------------------
    # The recurrent state <-> the cache

    def initial_state(self, encoder_hidden_states: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per cell a (B, S, H) state (S = 2 for LSTM: h, c; 1 for GRU) from the mean region feature (over the
        regions where ``mask`` (B, N) is True, when given)."""
        B = encoder_hidden_states.shape[0]
        c = self.config
        if mask is None:
            mean = encoder_hidden_states.mean(dim=1)
        else:
            weights = mask.to(encoder_hidden_states.dtype)[..., None]
            mean = (encoder_hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        state = torch.tanh(self.init_state(mean))
        return list(state.view(B, c.num_hidden_layers, c.states_per_cell, c.hidden_size).unbind(dim=1))

    def _state_cache(self, cache: Cache | None) -> Cache | None:
        """The cache that holds the recurrent state: the self-attention half of an ``EncoderDecoderCache``."""
        state_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        if state_cache is None:
            return None
        if len(state_cache.layers) == 0:  # a DynamicCache() made without a config: give it our layer types
            state_cache.layers.extend(LinearAttentionAndFullAttentionLayer() for _ in range(self.config.num_hidden_layers))
        if len(state_cache.layers) != self.config.num_hidden_layers or not all(
            isinstance(layer, LinearAttentionCacheLayerMixin) for layer in state_cache.layers
        ):
            raise ValueError(
                "the LSTM decoder keeps its recurrent state in a cache of recurrent-state layers, one per cell; "
                f"got {state_cache!r}. Pass DynamicCache(config=decoder.config) or no cache at all."
            )
        return state_cache

    def _read_state(self, state_cache: Cache | None, batch_size: int) -> list[torch.Tensor] | None:
        if state_cache is None:
            return None
        states = [state_cache.get_recurrent_state(i) for i in range(self.config.num_hidden_layers)]
        if any(s is None for s in states):
            return None
        if states[0].shape[0] != batch_size:
            raise ValueError(
                f"the cache holds a state for batch size {states[0].shape[0]} but the input has batch size {batch_size}"
            )
        return states

    # ------------------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> LSTMDecoderOutput | tuple:
        r"""
        Args:
            input_ids: (B, T) token ids; with a filled ``cache`` only the new tokens (usually T = 1).
            encoder_hidden_states: (B, N, C) region features to attend over. Required.
            cache: the recurrent state from a previous call (see the module docstring); None starts from the image.
            inputs_embeds: (B, T, embedding_size) instead of ``input_ids``.
            labels: (B, T) ids to predict, shifted inside (``labels = input_ids`` works); -100 is ignored.
            use_cache: return the state after the last token as ``cache``.
            output_attentions: return the attention weights (``attention_weights`` (B, T, N) and
                ``cross_attentions``).
            encoder_attention_mask: (B, N), 1 where a region may be attended and 0 where not (e.g. the absent
                segments of the segmentation-aware captioner); None attends every region. The initial state is
                then the mean of the attendable regions.
            attention_mask: accepted for API compatibility and ignored: only right padding is supported, and
                padding steps never influence earlier ones.
        """
        c = self.config
        return_dict = return_dict if return_dict is not None else c.return_dict
        use_cache = use_cache if use_cache is not None else (c.use_cache and not self.training)
        output_attentions = output_attentions if output_attentions is not None else c.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else c.output_hidden_states
        if encoder_hidden_states is None:
            raise ValueError(
                "the LSTM decoder needs encoder_hidden_states (B, N, C): the image regions it attends over. Use it "
                "as the decoder of a VisionEncoderDecoderModel or pass them yourself."
            )
        if encoder_hidden_states.shape[-1] != c.encoder_hidden_size:
            raise ValueError(
                f"encoder_hidden_states have {encoder_hidden_states.shape[-1]} features per region but the decoder was "
                f"configured with encoder_hidden_size={c.encoder_hidden_size}"
            )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        B, T = inputs_embeds.shape[:2]
        if encoder_hidden_states.shape[0] != B:
            raise ValueError(f"batch sizes differ: {B} token rows but {encoder_hidden_states.shape[0]} images")

        if use_cache and cache is None:
            cache = DynamicCache(config=c)
        state_cache = self._state_cache(cache)
        states = self._read_state(state_cache, B)
        region_mask = None
        if encoder_attention_mask is not None:
            if tuple(encoder_attention_mask.shape) != tuple(encoder_hidden_states.shape[:2]):
                raise ValueError(
                    f"encoder_attention_mask has shape {tuple(encoder_attention_mask.shape)}; it needs one entry per "
                    f"region: {tuple(encoder_hidden_states.shape[:2])}"
                )
            region_mask = encoder_attention_mask.bool()
            if not bool(region_mask.any(dim=1).all()):
                raise ValueError("encoder_attention_mask leaves an image with no region to attend")
        if states is None:
            states = self.initial_state(encoder_hidden_states, region_mask)

        features = encoder_hidden_states
        projected = self.attention.encoder_proj(features)
        embeds = self.dropout(inputs_embeds)
        outputs, weights = [], []
        layer_outputs = [[] for _ in self.cells] if output_hidden_states else None
        for t in range(T):
            context, alpha = self.attention(features, projected, states[-1][:, 0], region_mask)
            if self.context_gate is not None:
                context = torch.sigmoid(self.context_gate(states[-1][:, 0])) * context
            x = torch.cat([embeds[:, t], context], dim=-1)
            new_states = []
            for i, cell in enumerate(self.cells):
                if c.cell_type == "lstm":
                    h, cell_state = cell(x, (states[i][:, 0], states[i][:, 1]))
                    new_states.append(torch.stack([h, cell_state], dim=1))
                else:
                    h = cell(x, states[i][:, 0])
                    new_states.append(h[:, None])
                if layer_outputs is not None:
                    layer_outputs[i].append(h)
                x = h
            states = new_states
            outputs.append(x)
            weights.append(alpha)
        hidden = torch.stack(outputs, dim=1)  # (B, T, H)
        logits = self.lm_head(self.dropout(hidden))
        attention_weights = torch.stack(weights, dim=1)  # (B, T, N)

        if use_cache:
            for i, state in enumerate(states):
                state_cache.update_recurrent_state(state, i)
                # transformers raises this flag only in update_conv_state (its linear-attention models all keep a
                # conv state too); a purely recurrent model raises it itself, and Cache.reset() lowers it again.
                state_cache.layers[i].has_previous_state[0] = True

        loss = penalty = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=c.vocab_size, **kwargs)
            # Step t predicts labels[t + 1] (the loss shifts), so step t belongs to the caption when that label does.
            shifted = F.pad(labels[:, 1:], (0, 1), value=-100)
            penalty = doubly_stochastic_penalty(attention_weights, shifted != -100, region_mask)
            if c.attention_regularization > 0:
                loss = loss + c.attention_regularization * penalty

        hidden_states = None
        if layer_outputs is not None:
            hidden_states = (inputs_embeds,) + tuple(torch.stack(o, dim=1) for o in layer_outputs)
        out = LSTMDecoderOutput(
            loss=loss,
            logits=logits,
            cache=cache if use_cache else None,
            hidden_states=hidden_states,
            cross_attentions=(attention_weights[:, None],) if output_attentions else None,
            attention_weights=attention_weights if output_attentions else None,
            attention_penalty=penalty,
        )
        return out if return_dict else out.to_tuple()


AutoConfig.register(LSTMDecoderConfig.model_type, LSTMDecoderConfig, exist_ok=True)
AutoModelForCausalLM.register(LSTMDecoderConfig, LSTMDecoderForCausalLM, exist_ok=True)
LSTMDecoderConfig.register_for_auto_class()
LSTMDecoderForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["LSTMDecoderConfig", "LSTMDecoderForCausalLM", "LSTMDecoderOutput", "doubly_stochastic_penalty"]
