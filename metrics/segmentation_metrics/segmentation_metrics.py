"""Semantic-segmentation scores from a confusion matrix: mIoU, per-class IoU, Dice/F1, pixel and mean class accuracy.

Load as an ``evaluate`` module by path (no Hub)::

    >>> import evaluate
    >>> metric = evaluate.load("metrics/segmentation_metrics")
    >>> metric.compute(predictions=[pred_map], references=[label_map], num_classes=11, ignore_index=11)

or use the plain functions, which training validation uses to accumulate one matrix batch by batch (and across
processes) before scoring it once::

    >>> cm = confusion_matrix(pred, ref, num_classes, ignore_index)      # numpy or torch, any device
    >>> scores = scores_from_confusion(cm)

Conventions (the same as mmsegmentation's ``mean_iou``/``eval_metrics``, the Hub's ``mean_iou`` metric and
torchmetrics' ``MulticlassJaccardIndex(average="macro")`` / ``MulticlassF1Score(average="macro")``):

- The confusion matrix has reference classes as rows and predicted classes as columns; pixels whose reference is
  ``ignore_index`` are left out of everything.
- Scores are accumulated over the whole dataset (one matrix), not averaged per image.
- IoU_c = TP / (TP + FP + FN) and Dice_c = F1_c = 2 TP / (2 TP + FP + FN). A class absent from both the prediction
  and the reference has 0/0: its per-class value is NaN and it is excluded from ``mIoU`` and ``mean_dice``. A class
  predicted but absent from the reference counts, with IoU 0.
- Accuracy_c = TP / (TP + FN) (recall), NaN for a class absent from the reference, and ``mean_accuracy`` averages
  the classes present in the reference (mmseg, FCN's "mean accuracy"). torchmetrics' ``MulticlassAccuracy(average=
  "macro")`` differs in one corner: a class predicted but absent from the reference counts there with 0.
- ``pixel_accuracy`` = correctly classified labelled pixels / labelled pixels.
"""

from __future__ import annotations

import math

import datasets
import evaluate
from evaluate.utils.file_utils import add_start_docstrings
import numpy as np

try:
    import torch
except ImportError:  # the evaluate module works on numpy alone
    torch = None

_CITATION = """\
@inproceedings{long2015fully,
  title={Fully convolutional networks for semantic segmentation},
  author={Long, Jonathan and Shelhamer, Evan and Darrell, Trevor},
  booktitle={CVPR}, year={2015}
}
"""

_DESCRIPTION = """\
Confusion-matrix based semantic segmentation scores: mean IoU, per-class IoU, Dice/F1 (per class and mean), pixel
accuracy and mean class accuracy, with ignore_index. Classes absent from both prediction and reference are excluded
from the means (mmsegmentation / torchmetrics convention).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of (height, width) integer arrays): predicted class ids.
    references (`list` of (height, width) integer arrays): reference class ids, `ignore_index` where unlabelled.
    num_classes (`int`): number of classes.
    ignore_index (`int`, *optional*, defaults to 255): reference value skipped by every score.
Returns:
    mIoU, mean_dice, pixel_accuracy, mean_accuracy (floats) and per_class_iou, per_class_dice, per_class_accuracy,
    reference_fraction, predicted_fraction (arrays of num_classes; NaN for undefined classes), confusion_matrix.
Examples:
    >>> metric = evaluate.load("metrics/segmentation_metrics")
    >>> metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 255]]], num_classes=2)["mIoU"]
    0.5
"""


def _is_torch(x) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def confusion_matrix(
    predictions, references, num_classes: int, ignore_index: int | None = 255, per_sample: bool = False
):
    """Counts of (reference class, predicted class) over all labelled pixels.

    Args:
        predictions: integer class ids, any shape (e.g. (B, H, W)); numpy array, list or torch tensor.
        references: same shape; ``ignore_index`` marks pixels to skip.
        num_classes: C.
        ignore_index: reference value to skip (``None``: skip nothing).
        per_sample: return one matrix per item of the first axis, (B, C, C), e.g. for
            ``accelerator.gather_for_metrics``, which drops duplicated samples along that axis.

    Returns:
        (C, C) or (B, C, C) int64 counts, rows = reference, columns = prediction; a torch tensor on the inputs'
        device when the inputs are tensors, else a numpy array.
    """
    use_torch = _is_torch(predictions) or _is_torch(references)
    if use_torch:
        pred = torch.as_tensor(predictions)
        ref = torch.as_tensor(references, device=pred.device)
    else:
        pred, ref = np.asarray(predictions), np.asarray(references)
    if tuple(pred.shape) != tuple(ref.shape):
        raise ValueError(f"predictions {tuple(pred.shape)} and references {tuple(ref.shape)} must have the same shape")
    if per_sample and pred.ndim < 1:
        raise ValueError("per_sample needs a leading batch axis")
    if (pred.dtype.is_floating_point if use_torch else np.issubdtype(pred.dtype, np.floating)) or (
        ref.dtype.is_floating_point if use_torch else np.issubdtype(ref.dtype, np.floating)
    ):
        raise ValueError("predictions and references must be integer class ids, not floats (take argmax of logits)")
    n = int(num_classes)
    pred = pred.long() if use_torch else pred.astype(np.int64)
    ref = ref.long() if use_torch else ref.astype(np.int64)
    valid = ref != ignore_index if ignore_index is not None else (ref == ref)
    bad_ref = valid & ((ref < 0) | (ref >= n))
    if bool(bad_ref.any()):
        values = (torch.unique(ref[bad_ref]).tolist() if use_torch else np.unique(ref[bad_ref]).tolist())[:8]
        raise ValueError(
            f"references hold value(s) {values} outside the class ids 0..{n - 1} and not ignore_index ({ignore_index})"
        )
    bad_pred = valid & ((pred < 0) | (pred >= n))
    if bool(bad_pred.any()):
        values = (torch.unique(pred[bad_pred]).tolist() if use_torch else np.unique(pred[bad_pred]).tolist())[:8]
        raise ValueError(f"predictions hold value(s) {values} outside the class ids 0..{n - 1}")

    batch = pred.shape[0] if per_sample else 1
    if per_sample:
        sample = (torch.arange(batch, device=pred.device) if use_torch else np.arange(batch)).reshape(
            (batch,) + (1,) * (pred.ndim - 1)
        )
        sample = sample.expand(pred.shape) if use_torch else np.broadcast_to(sample, pred.shape)
        index = (sample * n + ref) * n + pred
    else:
        index = ref * n + pred
    index = index[valid]
    if use_torch:
        counts = torch.bincount(index.reshape(-1), minlength=batch * n * n)
    else:
        counts = np.bincount(index.reshape(-1), minlength=batch * n * n).astype(np.int64)
    return counts.reshape(batch, n, n) if per_sample else counts.reshape(n, n)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def scores_from_confusion(cm) -> dict:
    """Scores of a (C, C) confusion matrix (rows = reference, columns = prediction); see the module docstring.

    Returns a dict: ``mIoU``, ``mean_dice``, ``pixel_accuracy``, ``mean_accuracy`` (floats, NaN when nothing is
    labelled), ``per_class_iou``, ``per_class_dice``, ``per_class_accuracy`` (float arrays with NaN for undefined
    classes), ``reference_fraction`` / ``predicted_fraction`` (share of the labelled pixels that each class takes
    in the reference / the prediction), ``num_pixels`` (labelled pixels) and ``confusion_matrix`` (int64 array).
    """
    cm = cm.detach().cpu().numpy() if _is_torch(cm) else np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix is square (classes x classes), got shape {cm.shape}")
    cm = cm.astype(np.int64)
    tp = np.diag(cm).astype(np.float64)
    ref_total = cm.sum(axis=1).astype(np.float64)  # TP + FN
    pred_total = cm.sum(axis=0).astype(np.float64)  # TP + FP
    total = float(cm.sum())
    iou = _divide(tp, ref_total + pred_total - tp)
    dice = _divide(2 * tp, ref_total + pred_total)
    accuracy = _divide(tp, ref_total)
    return {
        "mIoU": _nanmean(iou),
        "mean_dice": _nanmean(dice),
        "pixel_accuracy": float(tp.sum() / total) if total else math.nan,
        "mean_accuracy": _nanmean(accuracy),
        "per_class_iou": iou,
        "per_class_dice": dice,
        "per_class_accuracy": accuracy,
        "reference_fraction": ref_total / total if total else np.full(len(tp), np.nan),
        "predicted_fraction": pred_total / total if total else np.full(len(tp), np.nan),
        "num_pixels": int(total),
        "confusion_matrix": cm,
    }


def flat_scores(scores: dict, class_names: list[str] | tuple[str, ...]) -> dict[str, float]:
    """One level of ``name: float`` for loggers: the means plus ``iou/<class>``, ``dice/<class>``,
    ``accuracy/<class>`` and ``predicted_fraction/<class>``. Undefined (NaN) per-class values are left out, so the
    result serialises to standard JSON."""
    if len(class_names) != len(scores["per_class_iou"]):
        raise ValueError(f"{len(class_names)} class names for {len(scores['per_class_iou'])} classes")
    out = {k: float(scores[k]) for k in ("mIoU", "mean_dice", "pixel_accuracy", "mean_accuracy")}
    for key, prefix in (
        ("per_class_iou", "iou"),
        ("per_class_dice", "dice"),
        ("per_class_accuracy", "accuracy"),
        ("predicted_fraction", "predicted_fraction"),
    ):
        for name, value in zip(class_names, scores[key]):
            if not math.isnan(value):
                out[f"{prefix}/{name}"] = float(value)
    return out


def dominant_prediction(cm, threshold: float = 0.99) -> int | None:
    """The class that takes more than ``threshold`` of the predicted pixels while the reference is spread over
    several classes (a model collapsed to one class, e.g. all-background), or ``None``."""
    scores = scores_from_confusion(cm)
    pred, ref = scores["predicted_fraction"], scores["reference_fraction"]
    if not scores["num_pixels"]:
        return None
    top = int(np.argmax(pred))
    if pred[top] > threshold and ref[top] < threshold and int((ref > 0).sum()) >= 2:
        return top
    return None


@add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SegmentationMetrics(evaluate.Metric):
    """``evaluate`` wrapper over :func:`confusion_matrix` and :func:`scores_from_confusion`."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.List(datasets.List(datasets.Value("int64"))),
                    "references": datasets.List(datasets.List(datasets.Value("int64"))),
                }
            ),
            reference_urls=[
                "https://github.com/open-mmlab/mmsegmentation/blob/main/mmseg/evaluation/metrics/iou_metric.py"
            ],
        )

    def _compute(self, predictions, references, num_classes: int, ignore_index: int | None = 255):
        if num_classes is None or int(num_classes) < 1:
            raise ValueError("give num_classes, the number of classes (ids 0..num_classes-1)")
        cm = np.zeros((int(num_classes), int(num_classes)), dtype=np.int64)
        for pred, ref in zip(predictions, references):
            cm += confusion_matrix(np.asarray(pred), np.asarray(ref), int(num_classes), ignore_index)
        return scores_from_confusion(cm)
