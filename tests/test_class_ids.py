"""models/class_ids.py: the class-id map of segmentation logits is the arg-max, first maximum on ties."""

import pytest
import torch

from models.class_ids import class_ids


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_equals_argmax_with_ties_along_any_dimension(dtype):
    g = torch.Generator().manual_seed(0)
    # Small integers: most pixels have two or more classes at the maximum, so the tie rule is exercised.
    logits = torch.randint(0, 3, (2, 5, 9, 7), generator=g).to(dtype)
    assert (logits == logits.max(dim=1, keepdim=True).values).sum(dim=1).gt(1).float().mean() > 0.3
    for dim in range(4):
        assert torch.equal(class_ids(logits, dim=dim), logits.argmax(dim=dim))
    ids = class_ids(logits)
    assert ids.dtype == torch.int64 and ids.shape == (2, 9, 7)
    # A hand-made pixel: classes 1 and 3 tie at the top; the first one wins.
    assert class_ids(torch.tensor([0.0, 2.0, 1.0, 2.0])[:, None, None], dim=0).item() == 1
