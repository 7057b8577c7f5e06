"""Fine-tuning only a CNN backbone's last stages: which stage each weight belongs to, freezing the first stages,
and keeping their BatchNorm statistics fixed while the rest trains.

The captioner's region encoder (``region_encoders.py``) and the U-Net's encoder (``unet.py``, also the shared
encoder of the segmentation-aware captioner) both use it. Neither timm nor smp offers it: timm's
``freeze_batch_norm_2d`` replaces modules (which breaks a saved model's key names) and knows nothing of stages.

Freezing the first, high-resolution stages skips their backward pass, which is most of a backward through an
EfficientNet at 128-160 px: the captioner trained at 34 instead of 24 images/s with the first two stages of four
frozen (benchmarks/README.md, captioning_shapes).
"""

from __future__ import annotations

from torch import nn


def stage_of_weights(backbone: nn.Module, stage_modules: list[str]) -> dict[str, int]:
    """Parameter and buffer name -> stage index, for a backbone whose stage ``i`` ends at module ``stage_modules[i]``
    (timm's ``feature_info.module_name()``). Modules before a stage's output module (the stem before stage 0, a
    max-pool before stage 1, ...) belong to that stage; modules after the last one to the last."""
    names = [n for n, _ in backbone.named_parameters()] + [n for n, _ in backbone.named_buffers()]
    order = {n: i for i, n in enumerate(n for n, _ in backbone.named_modules())}
    stage_pos = [order[m] for m in stage_modules]

    def stage_of(name: str) -> int:
        module = name.rsplit(".", 1)[0] if "." in name else ""
        for i, m in enumerate(stage_modules):
            if module == m or module.startswith(m + "."):
                return i
        pos = order.get(module, 0)
        return next((i for i, p in enumerate(stage_pos) if pos < p), len(stage_modules) - 1)

    return {n: stage_of(n) for n in names}


def freeze_first_stages(backbone: nn.Module, stage_modules: list[str], num_trainable: int | None) -> set[int]:
    """Train only the last ``num_trainable`` stages (None: all, 0: none); returns the frozen stage indices, for
    ``keep_frozen_norms_fixed``."""
    if num_trainable is not None and (not isinstance(num_trainable, int) or num_trainable < 0):
        raise ValueError(f"the number of trainable encoder stages must be None or >= 0, not {num_trainable!r}")
    num_stages = len(stage_modules)
    first_trainable = 0 if num_trainable is None else max(num_stages - num_trainable, 0)
    stages = stage_of_weights(backbone, stage_modules)
    for name, param in backbone.named_parameters():
        param.requires_grad_(stages[name] >= first_trainable)
    return set(range(first_trainable))


def keep_frozen_norms_fixed(backbone: nn.Module, stage_modules: list[str], frozen_stages: set[int]) -> None:
    """Put the BatchNorm layers of the frozen stages in eval mode (call after ``train()``): frozen weights with
    running statistics that keep moving would still change what the stage computes."""
    if not frozen_stages:
        return
    stages = stage_of_weights(backbone, stage_modules)
    for name, module in backbone.named_modules():
        is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        if is_norm and stages.get(f"{name}.running_mean", -1) in frozen_stages:
            module.eval()
