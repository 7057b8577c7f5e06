"""Segmentation scores: the plain confusion-matrix functions (for training validation) and the ``evaluate`` module
in ``segmentation_metrics.py`` (``evaluate.load("metrics/segmentation_metrics")``)."""

from .segmentation_metrics import confusion_matrix, dominant_prediction, flat_scores, scores_from_confusion

__all__ = ["confusion_matrix", "dominant_prediction", "flat_scores", "scores_from_confusion"]
