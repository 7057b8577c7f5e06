"""Comparing the weights of two saved model folders, as the exact-``--resume`` tests do."""

from pathlib import Path

import torch
from safetensors.torch import load_file


def assert_same_weights(a: Path, b: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``a/model.safetensors`` equals ``b``'s to 1e-6; returns ``b``'s tensors."""
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6, msg=k)
    return wb
