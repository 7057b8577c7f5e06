"""Confusion-matrix segmentation scores (metrics/segmentation_metrics): a hand-computed matrix, torchmetrics on random
data, the evaluate module loaded by path, and input errors."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)

from metrics.segmentation_metrics import confusion_matrix, dominant_prediction, flat_scores, scores_from_confusion

METRIC_DIR = Path(__file__).resolve().parents[1] / "metrics" / "segmentation_metrics"
IGNORE = 255

# 4 classes. Class 2 is predicted but absent from the reference; class 3 is absent from both.
REF = np.array([[0, 0, 1, 1], [0, 0, 1, IGNORE]])
PRED = np.array([[0, 1, 1, 2], [0, 0, 2, 0]])
# rows = reference, columns = prediction, ignored pixel (ref 255, pred 0) left out:
HAND_CM = np.array(
    [
        [3, 1, 0, 0],  # reference 0: predicted 0, 1, 0, 0
        [0, 1, 2, 0],  # reference 1: predicted 1, 2, 2
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
)


def test_confusion_matrix_matches_hand_count():
    assert np.array_equal(confusion_matrix(PRED, REF, 4, IGNORE), HAND_CM)
    as_torch = confusion_matrix(torch.from_numpy(PRED), torch.from_numpy(REF), 4, IGNORE)
    assert isinstance(as_torch, torch.Tensor) and np.array_equal(as_torch.numpy(), HAND_CM)


def test_scores_match_hand_computation():
    s = scores_from_confusion(HAND_CM)
    # IoU: class 0 = 3 / (4 + 3 - 3) = 0.75; class 1 = 1 / (3 + 2 - 1) = 0.25; class 2 = 0 / (0 + 2 - 0) = 0;
    # class 3 absent from both -> NaN and left out of the mean.
    np.testing.assert_allclose(s["per_class_iou"][:3], [0.75, 0.25, 0.0])
    assert math.isnan(s["per_class_iou"][3])
    assert s["mIoU"] == pytest.approx((0.75 + 0.25 + 0.0) / 3)
    # Dice: 2*3/(4+3) = 6/7; 2*1/(3+2) = 0.4; 0/(0+2) = 0.
    np.testing.assert_allclose(s["per_class_dice"][:3], [6 / 7, 0.4, 0.0])
    assert s["mean_dice"] == pytest.approx((6 / 7 + 0.4) / 3)
    # Accuracy (recall): 3/4, 1/3; class 2 has no reference pixel -> NaN, excluded from the mean.
    np.testing.assert_allclose(s["per_class_accuracy"][:2], [0.75, 1 / 3])
    assert math.isnan(s["per_class_accuracy"][2])
    assert s["mean_accuracy"] == pytest.approx((0.75 + 1 / 3) / 2)
    assert s["pixel_accuracy"] == pytest.approx(4 / 7)
    np.testing.assert_allclose(s["reference_fraction"], [4 / 7, 3 / 7, 0, 0])
    np.testing.assert_allclose(s["predicted_fraction"], [3 / 7, 2 / 7, 2 / 7, 0])
    assert s["num_pixels"] == 7


def test_per_sample_matrices_sum_to_the_batch_matrix():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 5, (3, 9, 7), generator=g)
    ref = torch.randint(0, 6, (3, 9, 7), generator=g)
    ref[ref == 5] = IGNORE
    per = confusion_matrix(pred, ref, 5, IGNORE, per_sample=True)
    assert per.shape == (3, 5, 5)
    assert torch.equal(per.sum(0), confusion_matrix(pred, ref, 5, IGNORE))
    assert torch.equal(per[1], confusion_matrix(pred[1], ref[1], 5, IGNORE))


@pytest.mark.parametrize("seed, absent_class", [(0, None), (1, 3)])
def test_agrees_with_torchmetrics_on_random_data(seed, absent_class):
    n = 6
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, n, (4, 32, 32), generator=g)
    ref = torch.randint(0, n, (4, 32, 32), generator=g)
    ref[torch.rand(ref.shape, generator=g) < 0.1] = IGNORE
    if absent_class is not None:  # absent from both: excluded from the means by both libraries
        pred[pred == absent_class] = 0
        ref[ref == absent_class] = 1
    cm = confusion_matrix(pred, ref, n, IGNORE)
    s = scores_from_confusion(cm)

    tm_cm = MulticlassConfusionMatrix(n, ignore_index=IGNORE)(pred, ref)
    assert torch.equal(cm, tm_cm)
    tm_iou = MulticlassJaccardIndex(n, average="none", ignore_index=IGNORE)(pred, ref).numpy()
    present = ~np.isnan(s["per_class_iou"])
    np.testing.assert_allclose(s["per_class_iou"][present], tm_iou[present], rtol=1e-5)
    def torchmetrics_value(metric_class, average):
        return metric_class(n, average=average, ignore_index=IGNORE)(pred, ref).item()

    assert s["mIoU"] == pytest.approx(torchmetrics_value(MulticlassJaccardIndex, "macro"), rel=1e-5)
    assert s["mean_dice"] == pytest.approx(torchmetrics_value(MulticlassF1Score, "macro"), rel=1e-5)
    assert s["pixel_accuracy"] == pytest.approx(torchmetrics_value(MulticlassAccuracy, "micro"), rel=1e-5)
    assert s["mean_accuracy"] == pytest.approx(torchmetrics_value(MulticlassAccuracy, "macro"), rel=1e-5)


def test_evaluate_module_loads_by_path_and_matches_the_functions():
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(str(METRIC_DIR))
    preds = [PRED, np.array([[1, 1], [0, 0]])]
    refs = [REF, np.array([[1, IGNORE], [0, 1]])]
    result = metric.compute(predictions=preds, references=refs, num_classes=4, ignore_index=IGNORE)
    expected = scores_from_confusion(sum(confusion_matrix(p, r, 4, IGNORE) for p, r in zip(preds, refs)))
    assert result["mIoU"] == pytest.approx(expected["mIoU"])
    assert result["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"])
    np.testing.assert_array_equal(result["confusion_matrix"], expected["confusion_matrix"])


def test_flat_scores_name_classes_and_skip_undefined():
    flat = flat_scores(scores_from_confusion(HAND_CM), ["bg", "car", "road", "sky"])
    assert flat["iou/bg"] == pytest.approx(0.75)
    assert "iou/sky" not in flat and "accuracy/road" not in flat
    assert flat["predicted_fraction/road"] == pytest.approx(2 / 7)
    assert all(isinstance(v, float) and not math.isnan(v) for v in flat.values())


def test_dominant_prediction_flags_a_collapsed_model():
    ref = np.array([[0, 0, 1, 2]] * 50)
    assert dominant_prediction(confusion_matrix(np.zeros_like(ref), ref, 3, IGNORE)) == 0
    assert dominant_prediction(confusion_matrix(ref, ref, 3, IGNORE)) is None


@pytest.mark.parametrize(
    "pred, ref, message",
    [
        (np.zeros((2, 2), int), np.zeros((2, 3), int), "same shape"),
        (np.zeros((2, 2), int), np.array([[0, 1], [0, 7]]), "outside the class ids"),
        (np.array([[0, 9], [0, 0]]), np.zeros((2, 2), int), "predictions hold"),
        (np.zeros((2, 2)), np.zeros((2, 2), int), "not floats"),
    ],
)
def test_bad_inputs_are_explained(pred, ref, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(pred, ref, 3, IGNORE)
