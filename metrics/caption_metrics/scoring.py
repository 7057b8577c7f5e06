"""``score_captions``: the function the training loop and ``scripts/evaluate.py`` call, and its input checks."""

from __future__ import annotations

from collections.abc import Sequence

from .fast_mode import fast_problems, score_fast
from .meteor_approximation import LABEL as FAST_METEOR_LABEL
from .official_mode import official_problems, score_official

METRIC_KEYS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
MODES = ("official", "fast")
MODE_DESCRIPTIONS = {
    "official": "official: pycocoevalcap's COCOEvalCap numbers (Stanford PTB tokenizer and METEOR 1.5 in Java; "
    "BLEU, METEOR, ROUGE-L, CIDEr-D; no SPICE)",
    "fast": "fast: pure Python, no Java (approximate PTB tokenization; pycocoevalcap's BLEU, ROUGE-L and CIDEr-D; "
    f"{FAST_METEOR_LABEL})",
}


class CaptionMetricsUnavailable(RuntimeError):
    """A metric mode cannot run on this machine (Java or a package is missing); the message says what to install."""


def preflight(mode: str) -> list[str]:
    """What is missing on this machine for ``mode`` ("official" or "fast"): one message per problem, [] if none."""
    _check_mode(mode)
    return official_problems() if mode == "official" else fast_problems()


def score_captions(predictions: list[str], references: list[list[str]], mode: str = "fast") -> dict[str, float | str]:
    """COCO caption metrics of ``predictions`` against their ``references`` (one list of captions per prediction).

    Returns the corpus-level scores under ``METRIC_KEYS`` as fractions (BLEU, METEOR and ROUGE-L in [0, 1],
    CIDEr-D usually in [0, ~3] and 10 for captions equal to all their references), the same scale as
    ``COCOEvalCap.eval``, plus ``"mode"``: the mode that produced them. ``mode="official"`` reproduces
    ``pycocoevalcap``'s COCOEvalCap (needs Java); ``mode="fast"`` is pure Python, with equal BLEU, ROUGE-L and
    CIDEr-D wherever its tokenizer agrees with PTB's and a METEOR that leaves out paraphrase matching (about 0.01
    lower over a corpus): see ``MODE_DESCRIPTIONS``. CIDEr-D's document frequencies come from the references given,
    so score a whole split at once (for a single image every n-gram is in every "document" and CIDEr-D is 0).

    Raises ``ValueError`` for malformed inputs and ``CaptionMetricsUnavailable`` when the mode cannot run here.
    """
    _check_mode(mode)
    predictions, references = _validated(predictions, references)
    problems = preflight(mode)
    if problems:
        advice = "; or use mode='fast' (pure Python)" if mode == "official" else ""
        raise CaptionMetricsUnavailable(
            f"{mode}-mode caption metrics cannot run here:\n- " + "\n- ".join(problems) + advice
        )
    scores = score_official(predictions, references) if mode == "official" else score_fast(predictions, references)
    return {**scores, "mode": mode}


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown caption metrics mode {mode!r}: use 'official' (COCOEvalCap, needs Java) or 'fast'")


def _validated(predictions, references) -> tuple[list[str], list[list[str]]]:
    if isinstance(predictions, str) or not isinstance(predictions, Sequence):
        raise ValueError(f"predictions must be a list of caption strings, got {type(predictions).__name__}")
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise ValueError(f"references must be a list of lists of caption strings, got {type(references).__name__}")
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} reference lists: "
            "give exactly one list of reference captions per prediction"
        )
    if not predictions:
        raise ValueError("nothing to score: predictions and references are empty")
    for i, prediction in enumerate(predictions):
        if not isinstance(prediction, str):
            raise ValueError(f"predictions[{i}] is a {type(prediction).__name__}, not a caption string")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise ValueError(
                f"references[{i}] must be a list of reference captions, got {type(refs).__name__} "
                "(wrap a single reference as [caption])"
            )
        if not refs:
            raise ValueError(f"references[{i}] is empty: every prediction needs at least one reference caption")
        for j, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise ValueError(f"references[{i}][{j}] is a {type(ref).__name__}, not a caption string")
            if not ref.strip():
                raise ValueError(f"references[{i}][{j}] is blank: drop empty reference captions before scoring")
    return list(predictions), [list(refs) for refs in references]
