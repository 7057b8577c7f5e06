"""The word-level caption tokenizer: training, special tokens, clean decoding, saving next to the model."""

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from datasets_cfg.shapes import generate_scene
from models.caption_tokenizer import SPECIAL_TOKENS, display_tokens, train_caption_tokenizer, vocabulary_words

SHAPES_CAPTIONS = [generate_scene(i).captions for i in range(40)]


def test_special_tokens_come_first_and_wrap_every_caption():
    tok = train_caption_tokenizer(SHAPES_CAPTIONS)
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    ids = tok("A red circle").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 5
    assert tok.unk_token_id not in ids


def test_words_are_lowercased_and_punctuation_is_split_off():
    tok = train_caption_tokenizer(["Two shapes: a Red circle, a blue square."])
    assert display_tokens(tok, tok("two shapes: a red circle, a blue square.").input_ids) == [
        "two", "shapes", ":", "a", "red", "circle", ",", "a", "blue", "square", ".",
    ]
    assert "Red" not in vocabulary_words(tok) and {"red", ",", ":"} <= set(vocabulary_words(tok))


def test_decoding_restores_the_captions_exactly():
    tok = train_caption_tokenizer(SHAPES_CAPTIONS)
    captions = [c for caps in SHAPES_CAPTIONS for c in caps]
    assert any(":" in c for c in captions) and any("," in c for c in captions)
    ids = tok(captions).input_ids
    assert tok.batch_decode(ids, skip_special_tokens=True) == captions


def test_min_frequency_turns_rare_words_into_unk():
    captions = ["a red circle", "a red square", "a blue star"]
    tok = train_caption_tokenizer(captions, min_frequency=2)
    assert set(vocabulary_words(tok)) == {"a", "red"}
    ids = tok("a blue circle").input_ids
    assert ids.count(tok.unk_token_id) == 2
    assert tok.decode(ids, skip_special_tokens=True) == "a"  # unknown words are special, dropped on decoding


def test_saved_next_to_the_model_and_reloaded_with_auto_tokenizer(tmp_path):
    tok = train_caption_tokenizer(SHAPES_CAPTIONS, max_length=40)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "the large red circle is to the left of a small blue star"
    assert loaded(text).input_ids == tok(text).input_ids
    assert loaded.pad_token_id == 0 and loaded.model_max_length == 40
    batch = loaded(["a red circle", "a red circle on a plain background"], padding=True)
    assert batch.input_ids[0][-1] == loaded.pad_token_id  # right padding


@pytest.mark.parametrize("captions,kw", [([], {}), (["", "  "], {}), (["a"], {"min_frequency": 0}), ([3], {}),
                                         ([["a", None]], {})])
def test_bad_input_raises_value_error(captions, kw):
    with pytest.raises(ValueError):
        train_caption_tokenizer(captions, **kw)
