"""A word-level caption tokenizer trained on the training captions, returned as a ``PreTrainedTokenizerFast``.

Built with the ``tokenizers`` library: NFKC + lower-casing, a word-level vocabulary of the words seen at least
``min_frequency`` times, punctuation split off words, and the special tokens ``<pad> <bos> <eos> <unk>`` (ids 0-3).
Encoding adds ``<bos>`` ... ``<eos>``. Words keep their leading space as a ``▁`` prefix (the Metaspace scheme of
SentencePiece), so that decoding restores the spacing exactly: "two shapes: a red circle, a star" comes back as
written, with no space before ":" or ",".

>>> tokenizer = train_caption_tokenizer(dataset["train"]["captions"], min_frequency=2)
>>> tokenizer("A red circle.").input_ids        # [<bos>, ▁a, ▁red, ▁circle, ., <eos>]
>>> tokenizer.decode(ids, skip_special_tokens=True)
'a red circle.'
>>> tokenizer.save_pretrained(model_folder)      # tokenizer.json + tokenizer_config.json next to the model
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3
_SPACE = "▁"


def _flatten(captions: Iterable) -> Iterator[str]:
    """Accept a list of captions or a list of lists (one list per image, the ``captions`` column)."""
    for item in captions:
        if isinstance(item, str):
            yield item
        elif isinstance(item, (list, tuple)):
            for caption in item:
                if not isinstance(caption, str):
                    raise ValueError(f"captions must be strings, got {type(caption).__name__}: {caption!r}")
                yield caption
        else:
            raise ValueError(f"captions must be strings or lists of strings, got {type(item).__name__}: {item!r}")


def train_caption_tokenizer(
    captions: Iterable[str] | Iterable[list[str]], min_frequency: int = 1, max_length: int | None = None
) -> PreTrainedTokenizerFast:
    """Train the word-level tokenizer on ``captions`` (strings, or one list of strings per image).

    Args:
        min_frequency: words seen fewer times become ``<unk>``.
        max_length: stored as ``model_max_length`` (tokens, ``<bos>``/``<eos>`` included); None: unlimited.
    """
    if not isinstance(min_frequency, int) or isinstance(min_frequency, bool) or min_frequency < 1:
        raise ValueError(f"min_frequency must be a positive integer, not {min_frequency!r}")
    texts = [c for c in _flatten(captions) if c.strip()]
    if not texts:
        raise ValueError("no captions to train the tokenizer on (the training split has no non-empty caption)")
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True)
    trainer = trainers.WordLevelTrainer(min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, bos_id), (EOS, eos_id)]
    )
    kwargs = {"model_max_length": max_length} if max_length else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, padding_side="right", **kwargs
    )


def vocabulary_words(tokenizer: PreTrainedTokenizerFast) -> list[str]:
    """The vocabulary without special tokens and without the ``▁`` word-start marks, in id order."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = set(tokenizer.all_special_tokens)
    return [tok.removeprefix(_SPACE) for tok, _ in vocab if tok not in special]


def vocabulary_fingerprint(tokenizer) -> dict[str, int | str]:
    """The vocabulary's size and a SHA-256 of its (token, id) pairs: what a resumed run must share with its
    checkpoint. A tokenizer retrained on other captions can have the same size and give the same words other ids."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()
    return {"vocabulary_size": len(vocab), "vocabulary_sha256": digest}


def display_tokens(tokenizer, ids: list[int], skip_special_tokens: bool = True) -> list[str]:
    """One display string per token of ``ids`` (the word without its word-start mark), e.g. to label attention
    maps. Works for any tokenizer (a GPT-2 BPE piece shows as its text)."""
    special = set(tokenizer.all_special_ids)
    out = []
    for i in ids:
        if i in special:
            if not skip_special_tokens:
                out.append(tokenizer.convert_ids_to_tokens(i))
            continue
        out.append(tokenizer.decode([i]).strip() or tokenizer.convert_ids_to_tokens(i))
    return out


__all__ = ["SPECIAL_TOKENS", "display_tokens", "train_caption_tokenizer", "vocabulary_fingerprint",
           "vocabulary_words"]
