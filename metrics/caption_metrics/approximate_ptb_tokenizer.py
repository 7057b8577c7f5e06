"""A pure-Python approximation of the COCO caption tokenization (Stanford PTBTokenizer + punctuation removal).

``pycocoevalcap``'s ``PTBTokenizer`` runs Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` in a
JVM and then drops the tokens in its ``PUNCTUATIONS`` list. This module reproduces that for the text captions are
made of, without Java:

- lower-cased output; ``. , ; : ! ? - -- ...`` and all quote marks removed, as the COCO code removes them;
- clitics split as PTB splits them: ``dog's -> dog 's``, ``isn't -> is n't``, ``can't -> ca n't``,
  ``cannot -> can not``, ``gonna -> gon na``;
- a word keeps its final period when PTB treats it as an abbreviation (``mr.``, ``st.``, ``p.m.``, ``u.s.``);
- numbers keep their inner ``. , :`` (``5.50``, ``1,000``, ``5:30``); words keep inner hyphens, slashes and
  apostrophes (``t-shirt``, ``a/b``, ``o'clock``);
- brackets become ``-lrb- -rrb- -lsb- -rsb- -lcb- -rcb-`` and are *kept*: the COCO punctuation list holds the
  upper-case ``-LRB-`` but the tokenizer already lower-cased it, so COCOEvalCap scores them as words;
- ``$ % & + = * < > | \\ ~ ^`` become tokens of their own; ``?!``-style runs stay one (kept) token, as in PTB.

It is an approximation: PTB's full lexer (URLs, e-mail addresses, emoticons, sentence-final abbreviation rules,
rare Unicode) is not reproduced. ``tests/test_caption_metrics.py`` compares it with the real tokenizer.
No library offers this tokenizer without Java (nltk's ``TreebankWordTokenizer`` splits ``t-shirt``-style hyphens
and mid-sentence periods differently and keeps no abbreviation list), hence this module.
"""

from __future__ import annotations

import html
import re

# The tokens pycocoevalcap's PTBTokenizer removes after tokenizing (its PUNCTUATIONS list, lower-case where the
# tokenizer's own output is lower-case: quote marks come out as `` '' ` ' ).
COCO_REMOVED_TOKENS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# Characters PTBTokenizer rewrites before splitting.
_CHARACTER_NORMALISATION = str.maketrans(
    {
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'",
        "\u2013": " -- ", "\u2014": " -- ", "\u2015": " -- ",
        "\u2026": " ... ",
        "\u00bd": "1/2", "\u00bc": "1/4", "\u00be": "3/4",
        "\u00a0": " ",
    }
)

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_SYMBOLS = set("$%&+=*<>|\\~^;")

# Abbreviations whose final period PTBLexer keeps, matched case-insensitively (its caseless ABMONTH, ABDAYS,
# ABTITLE, ABCOMP, ABPTIT and ABBREV2 lists) ...
_ABBREVIATIONS = frozenset(
    """jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri
    ala ariz calif colo conn ct dak fla ga ind kan kans ky md mich minn mo mont neb nev okla penn tenn va vt wyo wis
    wisc mr mrs ms dr drs prof profs sen sens rep reps atty attys lt col gen messrs gov govs adm rev maj sgt cpl pvt
    capt st ste ave pres lieut hon brig cmdr comdr pfc spc supt supts det mm mme mmes mlle mlles
    inc co cos corp pty ptys pte ltd plc bancorp dept bhd assn univ intl sys jr sr bros blvd rd esq
    etc vs ft sq est ext tel prop ph viz cf""".split()
)
# ... only when the word is capitalised (PTBLexer writes these with a case-sensitive first letter: [M]iss) ...
_CAPITALISED_ABBREVIATIONS = frozenset("Az Ark Del Ill La Mass Miss Ore Pa Tex Wash".split())
# ... and only before a number (PTBLexer's ABNUM).
_ABBREVIATIONS_BEFORE_NUMBERS = frozenset(["no", "nos"])

# Initials and acronyms: u, u.s, p.m, a.k.a (the final '.' already stripped).
_ACRONYM = re.compile(r"^[a-z](?:\.[a-z])*$", re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?\d[\d.,:]*\d$|^\d$|^\.\d+$")
# Words whose leading apostrophe is part of the token: '80s, rock 'n' roll, 'tis, and clitics already split off.
_KEPT_LEADING_APOSTROPHE = re.compile(r"^'(\d0s|n'|tis$|twas$|s$|m$|re$|ve$|d$|ll$)", re.IGNORECASE)
_CLITICS = ("n't", "'s", "'m", "'re", "'ve", "'d", "'ll")
_SPLIT_WORDS = {
    "cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"), "wanna": ("wan", "na"),
    "lemme": ("lem", "me"), "gimme": ("gim", "me"), "y'all": ("y'", "all"),
    "'tis": ("'t", "is"), "'twas": ("'t", "was"),
}
_SPECIAL_NEGATIONS = {"can't": ("ca", "n't"), "won't": ("wo", "n't"), "ain't": ("ai", "n't")}


def approximate_ptb_tokenize(caption: str) -> str:
    """Tokenize one caption the way COCOEvalCap does (see the module docstring), returning space-joined tokens."""
    text = html.unescape(caption).translate(_CHARACTER_NORMALISATION)
    tokens: list[str] = []
    chunks = text.split()
    for position, chunk in enumerate(chunks):
        following = chunks[position + 1] if position + 1 < len(chunks) else ""
        tokens.extend(_tokenize_chunk(chunk, following))
    return " ".join(t for t in (t.lower() for t in tokens) if t not in COCO_REMOVED_TOKENS)


def _tokenize_chunk(chunk: str, following: str) -> list[str]:
    """Tokens of one whitespace-free piece of text (``following`` is the next piece, for ``No. 5``)."""
    # Symbols PTB always splits off, wherever they are in the chunk.
    pieces = [p for p in re.split(r"([$%&+=*<>|\\~^()\[\]{}\";])", chunk) if p]
    tokens: list[str] = []
    for piece in pieces:
        if piece in _BRACKETS:
            tokens.append(_BRACKETS[piece])
        elif piece == '"':
            tokens.append("''")  # PTB writes `` or '', both removed by COCO
        elif piece in _SYMBOLS:
            tokens.append(piece)
        else:
            tokens.extend(_tokenize_word(piece, following))
    return tokens


def _tokenize_word(word: str, following: str) -> list[str]:
    leading: list[str] = []
    trailing: list[str] = []
    # Leading quotes and dashes ('80s and '90s keep their apostrophe, as in PTB).
    while word and (word[0] in "`," or (word[0] == "'" and not _KEPT_LEADING_APOSTROPHE.match(word))):
        leading.append(word[0])
        word = word[1:]
    while word.startswith("-") and len(word) > 1 and not _NUMBER.match(word):
        leading.append("-")
        word = word[1:]
    # Trailing punctuation, outermost first.
    while word:
        run = re.search(r"([?!]+|\.{2,}|[,:;`']|-+)$", word)
        if run is None or (run.group(1) == "'" and word.lower().endswith("'n'")):
            break
        trailing.insert(0, "..." if run.group(1).startswith("..") else run.group(1))
        word = word[: run.start()]
    if word.endswith(".") and len(word) > 1 and not _keeps_final_period(word[:-1], following):
        trailing.insert(0, ".")
        word = word[:-1]
    # Runs of dots inside a word (one...two) split it, as PTB does.
    parts = [p for p in re.split(r"(\.{2,})", word) if p]
    middle: list[str] = []
    for part in parts:
        if re.fullmatch(r"\.{2,}", part):
            middle.append("...")
        else:
            middle.extend(_split_clitics(_split_inner_commas(part)))
    return leading + middle + trailing


def _keeps_final_period(stem: str, following: str) -> bool:
    lowered = stem.lower()
    if lowered in _ABBREVIATIONS or stem in _CAPITALISED_ABBREVIATIONS or _ACRONYM.match(stem):
        return True
    return lowered in _ABBREVIATIONS_BEFORE_NUMBERS and bool(re.match(r"\d", following))


def _split_inner_commas(word: str) -> list[str]:
    """``a,b`` splits but ``1,000`` does not."""
    if "," not in word or _NUMBER.match(word):
        return [word]
    return [p for p in re.split(r"(?<!\d),|,(?!\d)", word) if p]


def _split_clitics(words: list[str]) -> list[str]:
    out: list[str] = []
    for word in words:
        lowered = word.lower()
        if lowered in _SPLIT_WORDS:
            first, second = _SPLIT_WORDS[lowered]
            out.extend([word[: len(first)], word[len(first) :]] if lowered[0] != "'" else [first, second])
            continue
        if lowered in _SPECIAL_NEGATIONS:
            out.extend([word[:2], word[2:]])
            continue
        for clitic in _CLITICS:
            if lowered.endswith(clitic) and len(word) > len(clitic):
                out.extend([word[: -len(clitic)], word[-len(clitic) :]])
                break
        else:
            out.append(word)
    return out
