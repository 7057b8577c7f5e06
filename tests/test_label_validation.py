"""validate_mask: the label rules that every mask goes through."""

import numpy as np
import pytest

from datasets_cfg import DatasetError, LabelSpec
from datasets_cfg.label_validation import validate_mask

THREE = LabelSpec(("bg", "a", "b"), ignore_index=255)


def test_valid_mask_passes_unchanged():
    m = np.array([[0, 1], [2, 255]])
    out = validate_mask(m, THREE)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, m)


def test_negative_and_out_of_range_values():
    with pytest.raises(DatasetError, match=r"value\(s\) -1, 3"):
        validate_mask(np.array([[0, -1], [3, 1]]), THREE, "m.png")


def test_binary_mask_maps_255_to_1_and_accepts_0_1():
    spec = LabelSpec(("bg", "fg"), ignore_index=254, binary_mask=True)
    np.testing.assert_array_equal(validate_mask(np.array([[0, 255], [255, 0]]), spec), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(validate_mask(np.array([[0, 1]]), spec), [[0, 1]])
    with pytest.raises(DatasetError, match="binary_mask is set but the mask holds values 0, 7"):
        validate_mask(np.array([[0, 7]]), spec)


def test_binary_mask_with_ignore_255_is_contradictory():
    with pytest.raises(DatasetError, match="ignore_index cannot be 255"):
        validate_mask(np.array([[0, 255]]), LabelSpec(("bg", "fg"), ignore_index=255, binary_mask=True))


def test_reduce_labels_moves_zero_to_ignore():
    spec = LabelSpec(("a", "b"), ignore_index=255, reduce_labels=True)
    np.testing.assert_array_equal(validate_mask(np.array([[0, 1], [2, 255]]), spec), [[255, 0], [1, 255]])


def test_many_classes_use_uint16():
    spec = LabelSpec(tuple(f"c{i}" for i in range(300)), ignore_index=65535)
    out = validate_mask(np.array([[299, 65535]]), spec)
    assert out.dtype == np.uint16 and out.tolist() == [[299, 65535]]


def test_mask_must_be_2d():
    with pytest.raises(DatasetError, match="2-D"):
        validate_mask(np.zeros((2, 2, 3)), THREE)
