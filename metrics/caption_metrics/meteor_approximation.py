"""Fast-mode METEOR: METEOR 1.5 re-implemented in pure Python, without its paraphrase module.

The official number comes from ``meteor-1.5.jar`` (``-l en -norm``, run by ``pycocoevalcap``). This module follows
that program step by step, with the same resources, read straight out of the jar that ``pycocoevalcap`` ships
(no Java needed):

- the ``-norm`` normalizer (Moses-style tokenization, lower-casing; punctuation kept);
- alignment by exact, stem (Snowball English, via ``snowballstemmer`` 2.x, whose stems equal the jar's on all of
  METEOR's WordNet vocabulary) and synonym (METEOR's WordNet synsets and morphology) matching, the same beam search
  (beam 40, ranking by the aligner weights 1/0.5/0.5 with Java's integer truncation), and the same tie-breaking;
- the English default parameters alpha=0.85, beta=0.20, gamma=0.60, delta=0.75 and module weights
  exact 1.0, stem 0.6, synonym 0.8, with function words weighted by 1-delta;
- the best-scoring reference per caption, and the corpus score from summed sufficient statistics, as
  ``pycocoevalcap``'s ``EVAL`` line computes it.

What it leaves out is METEOR's fourth module, paraphrase matching (weight 0.6), whose 60 MB phrase table would make
this mode slow. Without it fewer words match, so over a corpus this METEOR reads slightly *lower* than the official
one (0.0074 on coco_mini, 0.0097 on 7,000 Flickr8k images); a single caption can differ either way, because
paraphrase matches also change which alignment the beam search keeps. With METEOR's ``-m "exact stem synonym"`` option the jar gives
the same numbers as this module. No Python library implements METEOR 1.5 (nltk's ``meteor_score`` uses other
parameters, no function-word weighting, per-sentence averaging and needs the WordNet download), hence this port.
"""

from __future__ import annotations

import functools
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

LABEL = "METEOR 1.5 approximation (pure Python: exact, stem and synonym matching, no paraphrase module)"

# METEOR 1.5's English defaults (Constants.PARAM_RANK / WEIGHT_RANK for language 'en', task 'rank').
ALPHA, BETA, GAMMA, DELTA = 0.85, 0.20, 0.60, 0.75
EXACT, STEM, SYNONYM = 0, 1, 2
MODULE_WEIGHTS = (1.0, 0.6, 0.8)
# MeteorScorer re-weights its aligner to pick "best alignments for evaluation": exact 1, every other module 0.5.
ALIGNER_WEIGHTS = (1.0, 0.5, 0.5)
BEAM_SIZE = 40

# WordNet 3 morphology as SynonymDictionary.morph applies it (noun, verb, then adjective suffixes).
_MORPH_SUFFIXES = ("s", "ses", "xes", "zes", "ches", "shes", "men", "ies",
                   "s", "ies", "es", "es", "ed", "ed", "ing", "ing", "er", "est", "er", "est")
_MORPH_ENDINGS = ("", "s", "x", "z", "ch", "sh", "man", "y", "", "y", "e", "", "e", "", "e", "", "", "", "e", "e")

_JAVA_LINES = re.compile(r"\r\n|\r|\n")


def _java_lines(text: str) -> list[str]:
    """Lines as Java's BufferedReader.readLine returns them (no empty line after a final newline)."""
    lines = _JAVA_LINES.split(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


@dataclass(eq=False)
class MeteorResources:
    """The English data files inside ``meteor-1.5.jar``."""

    function_words: frozenset[str]
    synset_lines: dict[str, str]  # word -> its synset ids, still as the text line (parsed on demand)
    exception_bases: dict[str, tuple[str, ...]]  # irregular form -> its WordNet base forms
    nonbreaking_prefixes: dict[str, bool]  # prefix -> True when it is non-breaking only before a number
    _synset_cache: dict[str, frozenset[int]] = field(default_factory=dict)

    def synsets(self, word: str) -> frozenset[int]:
        """SynonymDictionary.getSynSets plus getStemSynSets: the synsets of the word and of its base form."""
        if word not in self._synset_cache:
            self._synset_cache[word] = self._synsets_of(word) | self._base_form_synsets(word)
        return self._synset_cache[word]

    def _synsets_of(self, word: str) -> frozenset[int]:
        line = self.synset_lines.get(word)
        return frozenset(int(x) for x in line.split()) if line else frozenset()

    def _base_form_synsets(self, word: str) -> frozenset[int]:
        bases = self.exception_bases.get(word)
        if bases is not None:
            return frozenset().union(*(self._synsets_of(b) for b in bases))
        return self._synsets_of(self._morph(word))

    def _morph(self, word: str) -> str:
        # SynonymDictionary.morph, including its quirk of re-appending "ful" to the base it finds.
        end = "ful" if word.endswith("ful") else ""
        if word.endswith("ss") or len(word) <= 2:
            return word
        for suffix, ending in zip(_MORPH_SUFFIXES, _MORPH_ENDINGS):
            if word.endswith(suffix):
                base = word[: len(word) - len(suffix)] + ending
                if base in self.synset_lines:
                    return base + end
        return ""


@functools.lru_cache(maxsize=2)
def load_resources(jar_path: str) -> MeteorResources:
    """Read METEOR's English function words, WordNet synonyms and non-breaking prefixes from its jar."""
    with zipfile.ZipFile(jar_path) as jar:

        def lines(name: str) -> list[str]:
            return _java_lines(jar.read(name).decode("utf-8"))

        function_words = frozenset(lines("function/english.words"))
        synset_file = lines("synonym/english.synsets")
        synset_lines = dict(zip(synset_file[0::2], synset_file[1::2]))
        exception_file = lines("synonym/english.exceptions")
        exception_bases: dict[str, list[str]] = {}
        for base, forms in zip(exception_file[0::2], exception_file[1::2]):
            for form in forms.split():
                exception_bases.setdefault(form, []).append(base)
        nonbreaking: dict[str, bool] = {}
        for line in lines("nonbreaking/english.prefixes"):
            fields = line.split()
            if fields and not fields[0].startswith("#"):
                nonbreaking[fields[0]] = len(fields) > 1 and fields[1] == "#NUMERIC_ONLY#"
    return MeteorResources(
        function_words, synset_lines, {k: tuple(v) for k, v in exception_bases.items()}, nonbreaking
    )


# ---------------------------------------------------------------------------------------------------------------
# The -norm normalizer (edu.cmu.meteor.util.Normalizer.normalizeLine for English, punctuation kept).

_ALPHA = "A-Za-z\u0160\u017d\u0161\u017e\u0178\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u017e" + (
    "\u0400-\u04ff\u0500-\u0527\ua640-\ua66e\ua67e-\ua697\u1d00-\u1d7f"
)
_ALNUM = "0-9" + _ALPHA
_JAVA_SPACE = " \t\n\x0b\f\r"  # Java's \s
_SEP_OTHER = re.compile(rf"([^{_ALNUM}{_JAVA_SPACE}.'`,\-\u2018\u2019])")
_MULTI_DOT = re.compile(r"\.([.]+)")
_MULTI_DOT2 = re.compile(r"DOTMULTI\.([^.])")
_COMMAS = (re.compile(r"([^0-9]),([^0-9])"), re.compile(r"([0-9]),([^0-9])"), re.compile(r"([^0-9]),([0-9])"))
_SINGLE_QUOTES = re.compile("[`\u2018\u2019]")
_DOUBLE_QUOTES = re.compile("[\u201c\u201d]|''")
_DASH_BETWEEN_WORDS = re.compile(rf"([{_ALNUM}.])-([{_ALNUM}])")
_APOSTROPHES = (
    (re.compile(rf"([^{_ALPHA}])'([^{_ALPHA}])"), r"\1 ' \2"),
    (re.compile(rf"([^{_ALPHA}0-9])'([{_ALPHA}])"), r"\1 ' \2"),
    (re.compile(rf"([{_ALPHA}])'([^{_ALPHA}])"), r"\1 ' \2"),
    (re.compile(rf"([{_ALPHA}])'([{_ALPHA}])"), r"\1 '\2"),
    (re.compile(r"([0-9])'(s)"), r"\1 '\2"),
)
_HAS_ALPHA = re.compile(f"[{_ALPHA}]")
_UNICODE_SPACES = re.compile("[ \u2000-\u200a\u202f\u205f\u3000\u00a0]+")
_JAVA_TOKEN_DELIMITERS = re.compile("[ \t\n\r\f]+")  # java.util.StringTokenizer's defaults


def _java_trim(text: str) -> str:
    return text.strip("".join(chr(c) for c in range(0x21)))


def normalize(line: str, resources: MeteorResources) -> str:
    """METEOR's ``-norm`` normalization of one line, then lower-casing, as MeteorScorer applies it."""
    text = _SEP_OTHER.sub(r" \1 ", f" {line} ")
    text = _MULTI_DOT.sub(r" DOTMULTI\1", text)
    while "DOTMULTI." in text:
        text = _MULTI_DOT2.sub(r"DOTDOTMULTI \1", text)
        text = text.replace("DOTMULTI.", "DOTDOTMULTI")
    for pattern in _COMMAS:
        text = pattern.sub(r"\1 , \2", text)
    text = _SINGLE_QUOTES.sub("'", text)
    text = _DOUBLE_QUOTES.sub(' " ', text)
    text = text.replace("\u2013", "-").replace("--", "-")
    text = _DASH_BETWEEN_WORDS.sub(r"\1 \2", text)
    for pattern, replacement in _APOSTROPHES:
        text = pattern.sub(replacement, text)
    words = [w for w in _JAVA_TOKEN_DELIMITERS.split(text) if w]
    rebuilt = []
    for i, word in enumerate(words):
        if len(word) > 1 and word.endswith("."):
            prefix = word[:-1]
            numeric_only = resources.nonbreaking_prefixes.get(prefix)
            following = words[i + 1] if i < len(words) - 1 else ""
            if "." in prefix and _HAS_ALPHA.search(prefix):
                rebuilt.append(word.replace(".", ""))  # U.S. -> US
            elif numeric_only is False or re.match("[a-z]", following):
                rebuilt.append(word)
            elif numeric_only and re.match("[0-9]+", following):
                rebuilt.append(word)
            else:
                rebuilt.append(prefix + " .")
        else:
            rebuilt.append(word)
    text = " ".join(rebuilt) + " "
    while "DOTDOTMULTI" in text:
        text = text.replace("DOTDOTMULTI", "DOTMULTI.")
    text = text.replace("DOTMULTI", ".")
    return _java_trim(_UNICODE_SPACES.sub(" ", text)).lower()


# ---------------------------------------------------------------------------------------------------------------
# Alignment (edu.cmu.meteor.aligner.Aligner, restricted to one-word matches since paraphrases are left out).


class _PartialAlignment:
    __slots__ = ("matches", "matches1", "matches2", "chunks", "idx", "last_match_end", "distance", "used1", "used2")

    def __init__(self, n1: int, n2: int):
        self.matches: list[tuple[int, int] | None] = [None] * n2  # per reference word: (hypothesis word, module)
        self.matches1 = self.matches2 = 0  # aligner-weighted match counts, ints as in the jar
        self.chunks = self.idx = self.distance = 0
        self.last_match_end = -1
        self.used1 = [False] * n1
        self.used2 = [False] * n2

    def copy(self) -> "_PartialAlignment":
        other = _PartialAlignment.__new__(_PartialAlignment)
        for name in self.__slots__:
            value = getattr(self, name)
            setattr(other, name, value[:] if isinstance(value, list) else value)
        return other

    def rank(self) -> tuple[int, int, int]:
        # Constants.PARTIAL_COMPARE_TOTAL: more weighted matches, then fewer chunks, then less distance.
        return -(self.matches1 + self.matches2), self.chunks, self.distance


def _add_match(path: _PartialAlignment, reference_index: int, hypothesis_index: int, module: int) -> None:
    # ``int += double`` in Java truncates, so in the ranking a non-exact match (weight 0.5) adds nothing.
    path.matches1 = int(path.matches1 + ALIGNER_WEIGHTS[module])
    path.matches2 = int(path.matches2 + ALIGNER_WEIGHTS[module])
    if path.last_match_end != -1 and hypothesis_index != path.last_match_end:
        path.chunks += 1
    path.idx = reference_index + 1
    path.last_match_end = hypothesis_index + 1


def _resolve(candidates: list[list[tuple[int, int]]], start: _PartialAlignment) -> _PartialAlignment:
    """The jar's left-to-right beam search over reference positions (Aligner.resolve)."""
    next_paths = [start]
    for current in range(len(candidates) + 1):
        paths = sorted(next_paths, key=_PartialAlignment.rank)  # stable, like Collections.sort
        next_paths = []
        for path in paths[:BEAM_SIZE]:
            if current == len(candidates):
                if path.last_match_end != -1:
                    path.chunks += 1
                next_paths.append(path)
                continue
            if path.used2[current]:
                fixed = path.matches[path.idx]
                if current < path.idx:
                    next_paths.append(path)
                elif fixed is not None:
                    reference_index = path.idx
                    _add_match(path, reference_index, fixed[0], fixed[1])
                    path.distance += abs(reference_index - fixed[0])
                    next_paths.append(path)
                continue
            for hypothesis_index, module in candidates[current]:
                if path.used1[hypothesis_index]:
                    continue
                new_path = path.copy()
                new_path.used1[hypothesis_index] = new_path.used2[current] = True
                new_path.matches[current] = (hypothesis_index, module)
                _add_match(new_path, current, hypothesis_index, module)
                # The jar adds this distance to the path that skips the word, not to the new one; kept so that
                # ties break as they do there.
                path.distance += abs(current - hypothesis_index)
                next_paths.append(new_path)
            if path.last_match_end != -1:
                path.chunks += 1
                path.last_match_end = -1
            path.idx += 1
            next_paths.append(path)
        if not next_paths:
            next_paths.append(paths[0])
    return sorted(next_paths, key=_PartialAlignment.rank)[0]


@dataclass
class MeteorStats:
    """METEOR's sufficient statistics for one hypothesis/reference pair (or their sum over a corpus)."""

    test_length: int = 0
    reference_length: int = 0
    test_function_words: int = 0
    reference_function_words: int = 0
    # Per module (exact, stem, synonym): matched content and function words in the test and the reference.
    test_content: tuple[int, int, int] = (0, 0, 0)
    reference_content: tuple[int, int, int] = (0, 0, 0)
    test_function: tuple[int, int, int] = (0, 0, 0)
    reference_function: tuple[int, int, int] = (0, 0, 0)
    chunks: int = 0

    @property
    def test_matches(self) -> int:
        return sum(self.test_content) + sum(self.test_function)

    @property
    def reference_matches(self) -> int:
        return sum(self.reference_content) + sum(self.reference_function)

    @property
    def is_perfect(self) -> bool:
        return self.test_matches == self.test_length and self.reference_matches == self.reference_length and (
            self.chunks == 1
        )

    def __add__(self, other: "MeteorStats") -> "MeteorStats":
        # MeteorStats.addStats: a perfectly matched segment contributes no chunk.
        return MeteorStats(
            self.test_length + other.test_length,
            self.reference_length + other.reference_length,
            self.test_function_words + other.test_function_words,
            self.reference_function_words + other.reference_function_words,
            _plus(self.test_content, other.test_content),
            _plus(self.reference_content, other.reference_content),
            _plus(self.test_function, other.test_function),
            _plus(self.reference_function, other.reference_function),
            self.chunks + (0 if other.is_perfect else other.chunks),
        )

    def score(self) -> float:
        """MeteorScorer.computeMetrics, with Java's floating-point division semantics."""
        test_weighted_length = DELTA * (self.test_length - self.test_function_words) + (
            (1.0 - DELTA) * self.test_function_words
        )
        reference_weighted_length = DELTA * (self.reference_length - self.reference_function_words) + (
            (1.0 - DELTA) * self.reference_function_words
        )
        test_weighted = sum(c * w * DELTA for c, w in zip(self.test_content, MODULE_WEIGHTS))
        test_weighted += sum(f * w * (1.0 - DELTA) for f, w in zip(self.test_function, MODULE_WEIGHTS))
        reference_weighted = sum(c * w * DELTA for c, w in zip(self.reference_content, MODULE_WEIGHTS))
        reference_weighted += sum(f * w * (1.0 - DELTA) for f, w in zip(self.reference_function, MODULE_WEIGHTS))
        precision = _java_divide(test_weighted, test_weighted_length)
        recall = _java_divide(reference_weighted, reference_weighted_length)
        f_mean = _java_divide(1.0, _java_divide(1.0 - ALPHA, precision) + _java_divide(ALPHA, recall))
        if self.is_perfect:
            fragmentation = 0.0
        else:
            fragmentation = _java_divide(float(self.chunks), (self.test_matches + self.reference_matches) / 2)
        score = f_mean * (1.0 - GAMMA * math.pow(fragmentation, BETA))
        return 0.0 if math.isnan(score) else max(score, 0.0)


def _plus(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x + y for x, y in zip(a, b))


def _java_divide(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` as Java computes doubles: x/0 is +-Infinity and 0/0 is NaN, not an error."""
    if denominator != 0:
        return numerator / denominator
    if numerator == 0 or math.isnan(numerator):
        return math.nan
    return math.copysign(math.inf, numerator) * math.copysign(1.0, denominator)


class MeteorApproximation:
    """Scores tokenized captions like ``pycocoevalcap``'s METEOR minus the paraphrase module (see the module doc)."""

    def __init__(self, jar_path: str | Path):
        import snowballstemmer  # imported here so that the rest of the package works without it

        self.resources = load_resources(str(jar_path))
        # The pure-Python class, not snowballstemmer.stemmer(), which may hand back PyStemmer's newer algorithm.
        self._stemmer = snowballstemmer.EnglishStemmer()
        self._stems: dict[str, str] = {}

    def _stem(self, word: str) -> str:
        if word not in self._stems:
            self._stems[word] = self._stemmer.stemWord(word)
        return self._stems[word]

    def align(self, hypothesis: list[str], reference: list[str]) -> MeteorStats:
        """Aligner.align + MeteorScorer.getMeteorStats for one normalized hypothesis/reference pair."""
        n1, n2 = len(hypothesis), len(reference)
        candidates: list[list[tuple[int, int]]] = [[] for _ in range(n2)]
        coverage1, coverage2 = [0] * n1, [0] * n2
        # Identical sentences use exact matching only ("prevents beam search errors", says the jar).
        modules = (EXACT,) if hypothesis == reference else (EXACT, STEM, SYNONYM)
        stems1 = stems2 = synsets1 = synsets2 = None
        for module in modules:
            if module == STEM:
                stems1, stems2 = [self._stem(w) for w in hypothesis], [self._stem(w) for w in reference]
            elif module == SYNONYM:
                synsets1 = [self.resources.synsets(w) for w in hypothesis]
                synsets2 = [self.resources.synsets(w) for w in reference]
            for j in range(n2):
                for i in range(n1):
                    same_word = hypothesis[i] == reference[j]
                    if module == EXACT:
                        matched = same_word
                    elif module == STEM:
                        matched = not same_word and stems1[i] == stems2[j]
                    else:
                        matched = not same_word and not synsets1[i].isdisjoint(synsets2[j])
                    if matched:
                        candidates[j].append((i, module))
                        coverage1[i] += 1
                        coverage2[j] += 1

        start = _PartialAlignment(n1, n2)
        for j, matches in enumerate(candidates):  # one-to-one, non-overlapping matches are definite
            if len(matches) == 1 and coverage2[j] == 1 and coverage1[matches[0][0]] == 1:
                start.matches[j] = matches[0]
                start.used2[j] = start.used1[matches[0][0]] = True
        best = _resolve(candidates, start)

        function1 = [w in self.resources.function_words for w in hypothesis]
        function2 = [w in self.resources.function_words for w in reference]
        test_content, test_function = [0, 0, 0], [0, 0, 0]
        reference_content, reference_function = [0, 0, 0], [0, 0, 0]
        chunks, last_match_end = 0, -1
        for j, match in enumerate(best.matches):
            if match is None:
                if last_match_end != -1:
                    chunks += 1
                    last_match_end = -1
                continue
            i, module = match
            (test_function if function1[i] else test_content)[module] += 1
            (reference_function if function2[j] else reference_content)[module] += 1
            if last_match_end != -1 and i != last_match_end:
                chunks += 1
            last_match_end = i + 1
        if last_match_end != -1:
            chunks += 1
        return MeteorStats(
            n1, n2, sum(function1), sum(function2), tuple(test_content), tuple(reference_content),
            tuple(test_function), tuple(reference_function), chunks,
        )

    def segment_stats(self, hypothesis: str, references: list[str]) -> MeteorStats:
        """Statistics against the best-scoring reference (the first one on ties), as MeteorScorer picks it."""
        hypothesis_words = _words(normalize(_java_trim(hypothesis), self.resources))
        best, best_score = None, -1.0
        for reference in references:
            stats = self.align(hypothesis_words, _words(normalize(_java_trim(reference), self.resources)))
            score = stats.score()
            if score > best_score:
                best, best_score = stats, score
        return best

    def corpus_score(self, hypotheses: list[str], references: list[list[str]]) -> tuple[float, list[float]]:
        """The corpus METEOR (from summed statistics, as METEOR's EVAL line) and the per-caption scores."""
        total = MeteorStats()
        segment_scores = []
        for hypothesis, refs in zip(hypotheses, references):
            stats = self.segment_stats(hypothesis, refs)
            segment_scores.append(stats.score())
            total = total + stats
        return total.score(), segment_scores


def _words(line: str) -> list[str]:
    return [w for w in _JAVA_TOKEN_DELIMITERS.split(line) if w]
