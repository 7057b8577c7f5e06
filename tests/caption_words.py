"""Does a pipeline's per-word list (one entry per decoded token, for attention maps) spell its caption?"""


def caption_words_match(words: list[str], caption: str) -> bool:
    """The word tokenizer decodes punctuation as its own token: "there ," in ``words``, "there," in the caption
    (any punctuation: a random model may also say "behind :")."""
    text = ""
    for word in words:
        text += word if text and all(not c.isalnum() for c in word) else (" " + word if text else word)
    return text == caption
