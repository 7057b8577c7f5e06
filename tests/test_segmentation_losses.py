"""Loss specs, every loss term's handling of ignore_index, class weights and label checks
(models/segmentation_losses.py)."""

import logging

import pytest
import torch
import torch.nn.functional as F

from models.segmentation_losses import LOSS_NAMES, SegmentationLoss, build_loss, parse_loss_spec

IGNORE = 255


def _classes(name):
    return 2 if name == "bce" else 4


def _data(num_classes, seed=0, batch=2, size=12):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, num_classes, size, size, generator=g)
    labels = torch.randint(0, num_classes, (batch, size, size), generator=g)
    return logits, labels


def test_parse_spec_weights_and_defaults():
    assert parse_loss_spec("ce:1,dice:0.5") == [("ce", 1.0), ("dice", 0.5)]
    assert parse_loss_spec(" Focal , lovasz:2 ") == [("focal", 1.0), ("lovasz", 2.0)]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty loss spec"),
        ("ce:1,tversky:1", "unknown loss 'tversky'"),
        ("ce:one", "is not a number"),
        ("ce:1,,dice:1", "empty term"),
        ("ce:-1", ">= 0"),
        ("ce:1,ce:2", "appears twice"),
        ("ce:0,dice:0", "every weight"),
    ],
)
def test_bad_specs_are_explained(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_loss_spec(spec)


def test_bce_needs_two_classes():
    with pytest.raises(ValueError, match="binary tasks"):
        build_loss("bce:1", num_classes=3)


def test_ignore_index_inside_class_range_is_refused():
    with pytest.raises(ValueError, match="also a class id"):
        build_loss("ce", num_classes=4, ignore_index=3)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_is_finite_and_trains(name):
    n = _classes(name)
    logits, labels = _data(n)
    logits.requires_grad_(True)
    loss = build_loss(name, n, IGNORE)(logits, labels)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_ignored_pixels_change_no_loss(name):
    """Whatever the logits say at ignored pixels, the loss and its gradient there do not move, and the loss equals
    the loss of the labelled region cropped out alone."""
    n = _classes(name)
    loss_fn = build_loss(name, n, IGNORE)
    logits, labels = _data(n, seed=1)
    inner_logits, inner_labels = logits[:, :, :8, :8].clone(), labels[:, :8, :8].clone()
    labels[:, 8:, :] = IGNORE
    labels[:, :, 8:] = IGNORE

    base = loss_fn(logits, labels)
    scrambled = logits.clone()
    scrambled[:, :, 8:, :] = torch.randn_like(scrambled[:, :, 8:, :]) * 50
    scrambled[:, :, :, 8:] = torch.randn_like(scrambled[:, :, :, 8:]) * 50
    scrambled.requires_grad_(True)
    again = loss_fn(scrambled, labels)
    again.backward()
    torch.testing.assert_close(again, base, rtol=1e-5, atol=1e-6)
    assert scrambled.grad[:, :, 8:, :].abs().max() == 0
    assert scrambled.grad[:, :, :, 8:].abs().max() == 0
    torch.testing.assert_close(loss_fn(inner_logits, inner_labels), base, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_all_ignored_batch_gives_zero_not_nan(name):
    n = _classes(name)
    logits, labels = _data(n)
    labels[:] = IGNORE
    loss = build_loss(name, n, IGNORE)(logits.requires_grad_(True), labels)
    assert loss.item() == 0.0
    loss.backward()


def test_weighted_sum_of_terms():
    logits, labels = _data(4, seed=2)
    combined = build_loss("ce:1,dice:0.5", 4, IGNORE)
    parts = combined.components(logits, labels)
    torch.testing.assert_close(combined(logits, labels), parts["ce"] + 0.5 * parts["dice"])


def test_class_weights_reach_cross_entropy_and_dice():
    logits, labels = _data(4, seed=3)
    weights = [0.1, 1.0, 2.0, 3.0]
    ce = build_loss("ce", 4, IGNORE, class_weights=weights)(logits, labels)
    torch.testing.assert_close(ce, F.cross_entropy(logits, labels, weight=torch.tensor(weights)))
    plain_dice = build_loss("dice", 4, IGNORE)(logits, labels)
    weighted_dice = build_loss("dice", 4, IGNORE, class_weights=weights)(logits, labels)
    assert not torch.isclose(plain_dice, weighted_dice)


def test_bce_is_binary_cross_entropy_on_the_foreground_log_odds():
    logits, labels = _data(2, seed=4)
    labels[0, :3] = IGNORE
    got = build_loss("bce", 2, IGNORE)(logits, labels)
    valid = labels != IGNORE
    z = (logits[:, 1] - logits[:, 0])[valid]
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(z, labels[valid].float()))
    weighted = build_loss("bce", 2, IGNORE, class_weights=[1.0, 3.0])(logits, labels)
    w = torch.tensor([1.0, 3.0])[labels[valid]]
    expected = (F.binary_cross_entropy_with_logits(z, labels[valid].float(), reduction="none") * w).sum() / w.sum()
    torch.testing.assert_close(weighted, expected)


def test_class_weight_errors_and_lovasz_warning(caplog):
    with pytest.raises(ValueError, match="one per class"):
        build_loss("ce", 4, IGNORE, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match=">= 0"):
        build_loss("ce", 2, IGNORE, class_weights=[1.0, -2.0])
    with caplog.at_level(logging.WARNING, logger="models.segmentation_losses"):
        build_loss("ce:1,lovasz:1", 2, IGNORE, class_weights=[1.0, 2.0])
    assert "lovasz" in caplog.text


def test_label_traps_are_explained():
    loss_fn = SegmentationLoss("ce", 2, ignore_index=IGNORE - 1)
    logits, labels = _data(2)
    labels[0, 0, 0] = 255  # a 0/255 mask read without binary_mask
    with pytest.raises(ValueError, match="binary_mask"):
        loss_fn(logits, labels)
    with pytest.raises(ValueError, match="integer class ids"):
        loss_fn(logits, labels.float())
    with pytest.raises(ValueError, match=r"\(batch, height, width\)"):
        loss_fn(logits, labels[:, :5])
