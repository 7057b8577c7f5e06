"""The attention LSTM/GRU decoder: cache = recurrent state, generation through VisionEncoderDecoderModel, gradients."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, VisionEncoderDecoderModel
from transformers.cache_utils import LinearAttentionCacheLayerMixin

from models.lstm_decoder import LSTMDecoderConfig, LSTMDecoderForCausalLM, doubly_stochastic_penalty
from models.region_encoders import CNNRegionEncoderConfig, CNNRegionEncoderModel

VOCAB, C = 13, 12


def tiny_decoder(cell="lstm", layers=1, **kw) -> LSTMDecoderForCausalLM:
    config = LSTMDecoderConfig(
        vocab_size=VOCAB, embedding_size=8, hidden_size=16, encoder_hidden_size=C, attention_size=8,
        num_hidden_layers=layers, cell_type=cell, dropout=0.0, initializer_range=0.5, **kw,
    )
    return LSTMDecoderForCausalLM(config)


def tiny_captioner(cell="lstm") -> VisionEncoderDecoderModel:
    """The stock VisionEncoderDecoderModel with a small CNN encoder and the LSTM decoder."""
    torch.manual_seed(0)
    encoder = CNNRegionEncoderModel(CNNRegionEncoderConfig(backbone="resnet10t", image_size=32, feature_stage=2, hidden_size=C))
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=tiny_decoder(cell))
    model.generation_config.decoder_start_token_id = 1
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    return model.eval()


@pytest.mark.parametrize("cell,layers,gated",
                         [("lstm", 1, True), ("gru", 1, True), ("lstm", 2, True), ("lstm", 1, False)])
def test_incremental_decoding_with_the_cache_matches_teacher_forcing(cell, layers, gated):
    torch.manual_seed(0)
    model = tiny_decoder(cell, layers, gated_context=gated).eval()
    assert (model.context_gate is None) != gated
    features = torch.randn(3, 7, C)
    ids = torch.randint(0, VOCAB, (3, 6))
    with torch.no_grad():
        full = model(input_ids=ids, encoder_hidden_states=features, use_cache=False)
        assert full.cache is None
        step = model(input_ids=ids[:, :2], encoder_hidden_states=features, use_cache=True)  # a 2-token prompt
        logits, cache = [step.logits], step.cache
        for t in range(2, ids.shape[1]):
            step = model(input_ids=ids[:, t : t + 1], encoder_hidden_states=features, cache=cache, use_cache=True)
            assert step.cache is cache
            logits.append(step.logits)
    torch.testing.assert_close(torch.cat(logits, dim=1), full.logits, rtol=1e-5, atol=1e-5)
    # The cache holds one recurrent state per cell: (B, 2, H) for LSTM (h and c), (B, 1, H) for GRU.
    state = cache.get_recurrent_state(layers - 1)
    assert state.shape == (3, 2 if cell == "lstm" else 1, 16)


def test_a_cache_without_a_config_is_filled_and_a_foreign_cache_is_refused():
    torch.manual_seed(0)
    model = tiny_decoder().eval()
    features, ids = torch.randn(2, 5, C), torch.randint(0, VOCAB, (2, 3))
    with torch.no_grad():
        out = model(input_ids=ids, encoder_hidden_states=features, cache=DynamicCache(), use_cache=True)
        ref = model(input_ids=ids, encoder_hidden_states=features, use_cache=True)
    torch.testing.assert_close(out.cache.get_recurrent_state(0), ref.cache.get_recurrent_state(0))
    attention_cache = DynamicCache(config=AutoConfig.for_model("gpt2", n_layer=1))
    with pytest.raises(ValueError, match="recurrent-state layers"):
        model(input_ids=ids, encoder_hidden_states=features, cache=attention_cache, use_cache=True)


def test_attention_weights_are_returned_per_step_and_sum_to_one():
    torch.manual_seed(0)
    model = tiny_decoder().eval()
    out = model(input_ids=torch.randint(0, VOCAB, (2, 4)), encoder_hidden_states=torch.randn(2, 9, C),
                output_attentions=True)
    assert out.attention_weights.shape == (2, 4, 9)
    torch.testing.assert_close(out.attention_weights.sum(-1), torch.ones(2, 4))
    # The transformer (batch, heads, query, key) layout, so VisionEncoderDecoderModel/generate pass it on.
    (cross,) = out.cross_attentions
    assert cross.shape == (2, 1, 4, 9) and torch.equal(cross[:, 0], out.attention_weights)
    quiet = model(input_ids=torch.randint(0, VOCAB, (2, 4)), encoder_hidden_states=torch.randn(2, 9, C))
    assert quiet.attention_weights is None and quiet.cross_attentions is None


def test_doubly_stochastic_penalty_counts_only_caption_steps():
    weights = torch.full((1, 4, 2), 0.5)  # 4 steps, each spreading its attention evenly over 2 regions
    # Over all 4 steps each region gets 2.0 in total: (1 - 2)^2 = 1.
    assert doubly_stochastic_penalty(weights).item() == pytest.approx(1.0)
    # Over the first 2 steps each region gets exactly 1: no penalty.
    mask = torch.tensor([[True, True, False, False]])
    assert doubly_stochastic_penalty(weights, mask).item() == pytest.approx(0.0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_loss_with_labels_adds_the_weighted_penalty_and_gradients_reach_every_parameter(cell):
    torch.manual_seed(0)
    model = tiny_decoder(cell, layers=2, attention_regularization=0.5).train()
    features = torch.randn(3, 6, C, requires_grad=True)
    ids = torch.randint(3, VOCAB, (3, 5))
    labels = ids.clone()
    labels[0, 3:] = -100  # padding
    out = model(input_ids=ids, encoder_hidden_states=features, labels=labels)
    plain = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, plain + 0.5 * out.attention_penalty)
    out.loss.backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_greedy_and_beam_generation_through_vision_encoder_decoder_with_the_cache():
    model = tiny_captioner()
    pixels = torch.randn(3, 3, 32, 32)
    greedy = model.generate(pixel_values=pixels, max_length=9)
    assert greedy.shape[0] == 3 and (greedy[:, 0] == 1).all()
    torch.testing.assert_close(greedy, model.generate(pixel_values=pixels, max_length=9, use_cache=False))
    # Beam search with the recurrent state as cache (reordered at every step) must find exactly what recomputing
    # every prefix from scratch finds.
    kw = dict(num_beams=4, max_length=9, return_dict_in_generate=True, output_scores=True, early_stopping=True)
    cached = model.generate(pixel_values=pixels, **kw)
    uncached = model.generate(pixel_values=pixels, use_cache=False, **kw)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(cached.sequences_scores, uncached.sequences_scores)


def test_beam_search_depends_on_reordering_the_state(monkeypatch):
    """The check above has teeth: without the cache's reorder, beam search goes wrong."""
    model = tiny_captioner()
    pixels = torch.randn(3, 3, 32, 32)
    kw = dict(num_beams=4, max_length=9, return_dict_in_generate=True, output_scores=True)
    right = model.generate(pixel_values=pixels, use_cache=False, **kw)
    monkeypatch.setattr(LinearAttentionCacheLayerMixin, "reorder_cache", lambda self, beam_idx: None)
    wrong = model.generate(pixel_values=pixels, **kw)
    assert not torch.allclose(wrong.sequences_scores, right.sequences_scores)


def test_gru_decoder_generates_with_beams_too():
    model = tiny_captioner("gru")
    pixels = torch.randn(2, 3, 32, 32)
    kw = dict(num_beams=3, max_length=8)
    torch.testing.assert_close(model.generate(pixel_values=pixels, **kw),
                               model.generate(pixel_values=pixels, use_cache=False, **kw))


def test_registered_with_the_auto_classes_and_round_trips(tmp_path):
    config = AutoConfig.for_model("lstm_decoder", vocab_size=VOCAB, encoder_hidden_size=C, hidden_size=16,
                                  embedding_size=8, attention_size=8)
    assert isinstance(config, LSTMDecoderConfig) and config.cross_attention_hidden_size == C
    model = AutoModelForCausalLM.from_config(config).eval()
    assert isinstance(model, LSTMDecoderForCausalLM)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "lstm_decoder.py").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    features, ids = torch.randn(2, 5, C), torch.randint(0, VOCAB, (2, 4))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, encoder_hidden_states=features).logits,
                                   model(input_ids=ids, encoder_hidden_states=features).logits)


@pytest.mark.parametrize(
    "bad",
    [{"cell_type": "rnn"}, {"hidden_size": 0}, {"dropout": 1.0}, {"attention_regularization": -1.0},
     {"num_hidden_layers": 0}],
)
def test_bad_config_values_raise_value_error(bad):
    with pytest.raises(ValueError):
        LSTMDecoderConfig(**bad)


def test_bad_inputs_raise_clear_errors():
    model = tiny_decoder().eval()
    ids = torch.randint(0, VOCAB, (2, 3))
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(input_ids=ids)
    with pytest.raises(ValueError, match="encoder_hidden_size"):
        model(input_ids=ids, encoder_hidden_states=torch.randn(2, 5, C + 1))
    with pytest.raises(ValueError, match="batch"):
        model(input_ids=ids, encoder_hidden_states=torch.randn(3, 5, C))


# --------------------------------------------------------------------------------------------------------------------
# encoder_attention_mask: regions (e.g. the absent segments of the segmentation-aware captioner) that may not be
# attended


def test_masked_regions_get_exactly_zero_attention():
    torch.manual_seed(0)
    model = tiny_decoder().eval()
    mask = torch.tensor([[True, False, True, True, False, True], [False, False, False, True, True, True]])
    out = model(input_ids=torch.randint(0, VOCAB, (2, 5)), encoder_hidden_states=torch.randn(2, 6, C),
                encoder_attention_mask=mask, output_attentions=True)
    weights = out.attention_weights  # (2, 5, 6)
    assert torch.all(weights[~mask[:, None, :].expand_as(weights)] == 0)
    assert torch.all(weights[mask[:, None, :].expand_as(weights)] > 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_mask_equals_removing_the_masked_regions(cell):
    """The defining property: a masked region has no influence at all (attention, initial state, penalty)."""
    torch.manual_seed(0)
    model = tiny_decoder(cell, layers=2, attention_regularization=1.0).eval()
    features = torch.randn(3, 7, C)
    ids = torch.randint(3, VOCAB, (3, 5))
    mask = torch.tensor([[1, 0, 1, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1]])  # 0/1, not bool
    with torch.no_grad():
        masked = model(input_ids=ids, encoder_hidden_states=features, encoder_attention_mask=mask,
                       labels=ids, output_attentions=True)
        for b in range(3):
            kept = features[b : b + 1, mask[b].bool()]
            alone = model(input_ids=ids[b : b + 1], encoder_hidden_states=kept, labels=ids[b : b + 1],
                          output_attentions=True)
            torch.testing.assert_close(masked.logits[b : b + 1], alone.logits, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(masked.attention_weights[b, :, mask[b].bool()], alone.attention_weights[0],
                                       rtol=1e-5, atol=1e-5)
        # The penalty counts only the regions that exist: for one image it equals the penalty without them.
        one = model(input_ids=ids[:1], encoder_hidden_states=features[:1], encoder_attention_mask=mask[:1],
                    labels=ids[:1])
        kept = model(input_ids=ids[:1], encoder_hidden_states=features[:1, mask[0].bool()], labels=ids[:1])
        torch.testing.assert_close(one.attention_penalty, kept.attention_penalty, rtol=1e-5, atol=1e-6)
        # ...and the mask really changes something: without it the masked images decode differently.
        unmasked = model(input_ids=ids, encoder_hidden_states=features)
    assert not torch.allclose(unmasked.logits[:2], masked.logits[:2], atol=1e-3)
    torch.testing.assert_close(unmasked.logits[2], masked.logits[2])  # an all-True row is no mask


def _until_eos(ids: torch.Tensor, eos: int = 2) -> list[int]:
    ids = ids.tolist()
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def test_a_masked_region_has_no_influence_on_beam_search_and_the_cache():
    torch.manual_seed(1)
    model = tiny_decoder().eval()
    model.generation_config.update(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    features = torch.randn(2, 6, C)
    mask = torch.tensor([[True, True, False, True, False, True], [True, False, False, False, True, True]])
    start = torch.ones(2, 1, dtype=torch.long)
    kw = dict(num_beams=3, max_length=8, return_dict_in_generate=True, output_scores=True)
    batched = model.generate(input_ids=start, encoder_hidden_states=features, encoder_attention_mask=mask, **kw)
    for b in range(2):
        alone = model.generate(input_ids=start[:1], encoder_hidden_states=features[b : b + 1, mask[b]], **kw)
        assert _until_eos(batched.sequences[b]) == _until_eos(alone.sequences[0])
        torch.testing.assert_close(batched.sequences_scores[b], alone.sequences_scores[0], rtol=1e-5, atol=1e-5)
    unmasked = model.generate(input_ids=start, encoder_hidden_states=features, **kw)
    assert _until_eos(unmasked.sequences[0]) != _until_eos(batched.sequences[0])  # the mask matters here


def test_bad_encoder_attention_masks_raise_value_errors():
    model = tiny_decoder().eval()
    ids, features = torch.randint(0, VOCAB, (2, 3)), torch.randn(2, 5, C)
    empty_row = torch.tensor([[True] * 5, [False] * 5])
    with pytest.raises(ValueError, match="no region to attend"):
        model(input_ids=ids, encoder_hidden_states=features, encoder_attention_mask=empty_row)
    for shape in [(2, 4), (1, 5), (2, 5, 1), (5,)]:
        with pytest.raises(ValueError, match="one entry per region"):
            model(input_ids=ids, encoder_hidden_states=features, encoder_attention_mask=torch.ones(shape, dtype=torch.bool))


def test_doubly_stochastic_penalty_ignores_masked_regions():
    weights = torch.tensor([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]])  # 2 steps; region 2 masked, never attended
    # Regions 0 and 1 each get exactly 1 over the caption: no penalty. Region 2 would add (1 - 0)^2 if it counted.
    assert doubly_stochastic_penalty(weights, region_mask=torch.tensor([[True, True, False]])).item() == 0.0
    assert doubly_stochastic_penalty(weights).item() == pytest.approx(1 / 3)
