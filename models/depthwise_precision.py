"""Depthwise convolutions kept in fp32 under CPU bf16 autocast.

Autocast casts every convolution to bf16. oneDNN's bf16 kernels pay off for dense convolutions, but its bf16
depthwise convolutions are slower than its fp32 ones (a 5x5 depthwise over 144 channels at 16x16, batch 16,
channels-last, 2 cores: forward + backward 14.9 ms in bf16 against 3.7 ms in fp32). EfficientNet-style encoders
are mostly depthwise and pointwise convolutions, so running the depthwise ones in fp32 while the pointwise ones
stay in bf16 made a whole U-Net training step (tf_efficientnet_lite0, 128 px, 2 cores, AMX) about 1.3x faster
in a bare loop and 1.2x in scripts/train.py (40 against 34 images/s).

``torch.autocast`` has no per-module or per-shape policy, hence this: each depthwise ``nn.Conv2d`` (including
timm's ``Conv2dSame``) is given a subclass whose ``forward`` turns CPU autocast off around it. The weights,
``state_dict`` keys and saved configs do not change, so ``save_pretrained`` output is the same as without it.
"""

from __future__ import annotations

import torch
from torch import nn


class _Fp32UnderCpuAutocast:
    """Mixin placed before an ``nn.Conv2d`` class: under CPU autocast, runs the convolution in fp32."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (nn.Conv2d's own argument name)
        if input.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(input.float())
        return super().forward(input)


_subclasses: dict[type, type] = {}


def _fp32_subclass(cls: type) -> type:
    if cls not in _subclasses:
        _subclasses[cls] = type(cls.__name__, (_Fp32UnderCpuAutocast, cls), {"__module__": cls.__module__})
    return _subclasses[cls]


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def keep_depthwise_convs_fp32(model: nn.Module) -> int:
    """Make every depthwise convolution in ``model`` run in fp32 under CPU bf16 autocast; returns how many.

    Outside CPU autocast the convolutions behave exactly as before. Calling it twice changes nothing more.
    """
    count = 0
    for module in model.modules():
        if is_depthwise(module):
            if not isinstance(module, _Fp32UnderCpuAutocast):
                module.__class__ = _fp32_subclass(type(module))
            count += 1
    return count
