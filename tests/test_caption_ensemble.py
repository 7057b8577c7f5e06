"""CaptionEnsemble: stock generate() over several captioners' mean word probabilities."""

import json

import pytest
import torch
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from datasets_cfg.shapes import generate_scene
from models.caption_ensemble import CaptionEnsemble
from models.caption_tokenizer import BOS, EOS, PAD, UNK, train_caption_tokenizer
from models.captioner import build_captioner

TOKENIZER = train_caption_tokenizer([generate_scene(i).captions for i in range(20)])
SIZE = 32
RNN = {"hidden_size": 16, "embedding_size": 8, "attention_size": 8, "initializer_range": 0.5}
MEMBERS = {
    # 2 x 2 regions of 256 channels (resnet10t's stage 3 at 32 px)
    "lstm": dict(encoder="resnet10t", decoder="lstm", encoder_options={"feature_stage": 3}, decoder_options=RNN),
    # 4 x 4 regions of 128 channels: another region shape, so the packed encoder output is unpacked by member
    "transformer": dict(encoder="resnet10t", decoder="transformer", encoder_options={"feature_stage": 2},
                        decoder_options={"n_embd": 16, "n_layer": 1, "n_head": 2, "initializer_range": 0.5}),
    "gru": dict(encoder="resnet10t", decoder="gru", encoder_options={"feature_stage": 2}, decoder_options=RNN),
}


def member(name: str, seed: int = 0, tokenizer=TOKENIZER):
    torch.manual_seed(seed)
    model, _ = build_captioner(tokenizer, image_size=SIZE, max_length=9, num_beams=3, **MEMBERS[name])
    return model.eval()


def pixels(n: int = 3) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, 3, SIZE, SIZE)


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_one_member_or_two_copies_generate_what_the_member_generates(name):
    # Beam search reorders the members' caches: a wrong reorder would change the beams after the first step.
    model = member(name)
    expected = model.generate(pixel_values=pixels(), num_beams=3)
    assert expected.shape[1] > 2  # several steps of beam search, not a caption that ended at once
    for members in ([model], [model, model]):
        ensemble = CaptionEnsemble.from_members(members).eval()
        assert torch.equal(ensemble.generate(pixel_values=pixels(), num_beams=3), expected)


def test_greedy_decoding_follows_the_mean_of_the_members_probabilities():
    members = [member("lstm"), member("transformer"), member("gru", seed=3)]
    weights = [0.5, 0.3, 0.2]
    ensemble = CaptionEnsemble.from_members(members, weights=[5, 3, 2], tokenizers=[TOKENIZER] * 3).eval()
    got = ensemble.generate(pixel_values=pixels(), num_beams=1, do_sample=False)

    # By hand: every member re-reads the whole prefix (no cache), probabilities averaged, the likeliest word taken.
    start, eos = members[0].generation_config.decoder_start_token_id, members[0].generation_config.eos_token_id
    ids = torch.full((3, 1), start)
    done = torch.zeros(3, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(got.shape[1] - 1):
            probs = sum(w * m(pixel_values=pixels(), decoder_input_ids=ids, use_cache=False).logits[:, -1].softmax(-1)
                        for w, m in zip(weights, members))
            step = torch.where(done, torch.full_like(done, members[0].generation_config.pad_token_id, dtype=torch.long),
                               probs.argmax(-1))
            ids = torch.cat([ids, step[:, None]], dim=1)
            done |= step == eos
    assert torch.equal(got, ids)
    # The members disagree, so the ensemble is not just one of them.
    alone = [m.generate(pixel_values=pixels(), num_beams=1, do_sample=False) for m in members]
    assert any(a.shape != got.shape or not torch.equal(a, got) for a in alone)


def test_a_zero_weight_switches_a_member_off():
    first, second = member("lstm"), member("transformer")
    expected = first.generate(pixel_values=pixels(), num_beams=3)
    ensemble = CaptionEnsemble.from_members([first, second], weights=[1.0, 0.0]).eval()
    assert torch.equal(ensemble.generate(pixel_values=pixels(), num_beams=3), expected)


def test_members_that_do_not_share_a_vocabulary_are_refused():
    other = train_caption_tokenizer([["a small green star", "one star"], ["a blue square left of a red circle"]])
    with pytest.raises(ValueError, match="shared vocabulary"):
        CaptionEnsemble.from_members([member("lstm"), member("lstm", tokenizer=other)])
    # Same size and special tokens, two words' ids swapped: only the tokenizers tell.
    state = json.loads(TOKENIZER.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    a, b = [word for word, i in vocab.items() if i >= 4][:2]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    swapped = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)), bos_token=BOS,
                                      eos_token=EOS, pad_token=PAD, unk_token=UNK)
    assert len(swapped) == len(TOKENIZER) and swapped.get_vocab() != TOKENIZER.get_vocab()
    CaptionEnsemble.from_members([member("lstm"), member("lstm", tokenizer=swapped)])  # sizes alone agree
    with pytest.raises(ValueError, match="maps words to other ids"):
        CaptionEnsemble.from_members([member("lstm"), member("lstm", tokenizer=swapped)],
                                     tokenizers=[TOKENIZER, swapped])


@pytest.mark.parametrize("weights, message", [
    ([1.0], "1 weights for 2 captioners"),
    ([1.0, -1.0], "non-negative"),
    ([0.0, 0.0], "not all 0"),
    ([1.0, float("nan")], "finite"),
])
def test_bad_weights_are_refused(weights, message):
    with pytest.raises(ValueError, match=message):
        CaptionEnsemble.from_members([member("lstm"), member("lstm", seed=1)], weights=weights)


def test_an_empty_ensemble_is_refused():
    with pytest.raises(ValueError, match="at least one captioner"):
        CaptionEnsemble.from_members([])
