"""Feeding channels-last models: ``model.to(memory_format=torch.channels_last)`` converts the weights only.

On the CPU, oneDNN's convolutions (depthwise ones above all) run much faster in NHWC than in NCHW: an
EfficientNet-Lite0 forward and backward at 160 px, batch 32, 2 cores took 0.36-0.42 s channels-last against
0.61-0.72 s contiguous. ``scripts/train.py --channels-last`` converts the model; the models call
``like_weight`` on their input so that the images follow the weights rather than costing a conversion inside
the first convolution of every pass.
"""

import torch


def like_weight(pixel_values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``pixel_values`` (B, C, H, W) in ``weight``'s memory format (channels-last if the weight is) and dtype."""
    if weight.ndim == 4 and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
    return pixel_values.to(weight.dtype)
