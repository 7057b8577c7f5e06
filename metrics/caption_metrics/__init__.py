"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) in two clearly labelled modes.

``score_captions(predictions, references, mode="fast")`` is the plain function the training loop calls;
``evaluate.load("metrics/caption_metrics")`` wraps the same code as an ``evaluate`` module loaded by path.
``mode="official"`` gives ``pycocoevalcap``'s COCOEvalCap numbers (needs Java); ``mode="fast"`` is pure Python.
``preflight(mode)`` lists what a mode is missing on this machine.
"""

from .scoring import (
    METRIC_KEYS,
    MODE_DESCRIPTIONS,
    MODES,
    CaptionMetricsUnavailable,
    preflight,
    score_captions,
)

__all__ = [
    "METRIC_KEYS",
    "MODES",
    "MODE_DESCRIPTIONS",
    "CaptionMetricsUnavailable",
    "preflight",
    "score_captions",
]
