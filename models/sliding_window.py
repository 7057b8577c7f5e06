"""Whole-image and sliding-window inference, optional test-time augmentation (horizontal flip, several scales),
and predictions mapped back to each image's original resolution.

A fully convolutional U-Net runs on any padded size, so "whole" feeds the padded image at once. "slide" runs
overlapping windows (the training crop size is the natural window) and averages the overlapping logits, as
mmsegmentation's ``slide_inference`` does: for images much larger than the training crops, or when a whole image
does not fit in memory. Neither smp nor transformers ships a sliding-window predictor, hence this module.

Multi-scale test-time augmentation (``scales``, as mmsegmentation's ``aug_test``) resizes the input by each
factor, pads it to the model's size divisor, predicts, and resizes the logits back; the logits of all scales (and
flips) are averaged. ``ttach`` has scale transforms but cannot pad to a U-Net's multiple of 32, hence our own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

MODES = ("whole", "slide")
MAX_SCALE = 2.0  # multi-scale TTA factors above this cost more memory than they are worth (x4 pixels at 2)


def _model_logits(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    out = model(pixel_values=pixel_values)
    return out.logits if hasattr(out, "logits") else out


def _with_flip(model: torch.nn.Module, pixel_values: torch.Tensor, flip: bool) -> torch.Tensor:
    logits = _model_logits(model, pixel_values)
    if flip:
        logits = (logits + _model_logits(model, pixel_values.flip(-1)).flip(-1)) / 2
    return logits


def _pair(value: int | Sequence[int] | None, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or (height, width), got {value!r}")
    return value


def check_scales(scales: Sequence[float] | None) -> tuple[float, ...]:
    """``scales`` as a tuple of positive factors (None: no rescaling), or a ValueError saying what is wrong."""
    if scales is None:
        return (1.0,)
    if isinstance(scales, (int, float)):
        scales = (scales,)
    try:
        values = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise ValueError(f"scales must be numbers such as 0.75,1,1.25, not {scales!r}") from None
    if not values:
        raise ValueError("scales must name at least one factor (1 is the image as it is)")
    bad = [v for v in values if not (math.isfinite(v) and 0 < v <= MAX_SCALE)]
    if bad:
        raise ValueError(f"every scale must be in (0, {MAX_SCALE:g}], got {bad}")
    return values


def _at_scale(model: torch.nn.Module, pixel_values: torch.Tensor, scale: float, predict) -> torch.Tensor:
    """``predict`` (a tensor -> logits function) on ``pixel_values`` resized by ``scale`` and padded to the model's
    size divisor; the logits come back at the input's (H, W)."""
    if scale == 1.0:
        return predict(pixel_values)
    height, width = pixel_values.shape[-2:]
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    d = int(getattr(getattr(model, "config", None), "output_stride", 32))  # the U-Net config's input multiple
    scaled = F.interpolate(pixel_values, size=(h, w), mode="bilinear", align_corners=False)
    # Zero padding, as the image processor pads (normalised zero); its logits are cropped away below.
    scaled = F.pad(scaled, (0, -(-w // d) * d - w, 0, -(-h // d) * d - h))
    logits = predict(scaled)[..., :h, :w].float()
    return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` pixels every ``stride`` pixels covering ``0..length``; the last window
    is moved back to end exactly at ``length`` (mmseg's grid)."""
    if window >= length:
        return [0]
    count = -(-(length - window) // stride) + 1
    return [min(i * stride, length - window) for i in range(count)]


@torch.no_grad()
def sliding_window_logits(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    window: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    flip: bool = False,
    batch_size: int = 8,
) -> torch.Tensor:
    """Logits (B, C, H, W) of ``pixel_values`` (B, 3, H, W) from overlapping windows, averaged where they overlap.

    Args:
        window: window (height, width) or side, multiples of the model's output stride (32); clipped to the image.
        stride: step between windows (default: two thirds of the window, i.e. one third overlap).
        flip: also run the horizontally flipped windows and average.
        batch_size: windows per forward pass.
    """
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be (batch, channels, height, width), got {tuple(pixel_values.shape)}")
    height, width = pixel_values.shape[-2:]
    win_h, win_w = _pair(window, "window")
    win_h, win_w = min(win_h, height), min(win_w, width)
    stride_h, stride_w = _pair(stride, "stride") or (max(1, win_h * 2 // 3), max(1, win_w * 2 // 3))
    if min(win_h, win_w, stride_h, stride_w) < 1:
        raise ValueError("window and stride must be positive")
    boxes = [(y, x) for y in window_starts(height, win_h, stride_h) for x in window_starts(width, win_w, stride_w)]
    total = None
    count = torch.zeros((1, 1, height, width), device=pixel_values.device)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        crops = torch.cat([pixel_values[:, :, y : y + win_h, x : x + win_w] for y, x in chunk])
        logits = _with_flip(model, crops, flip).float()
        if total is None:
            total = torch.zeros((pixel_values.shape[0], logits.shape[1], height, width), device=pixel_values.device)
        for i, (y, x) in enumerate(chunk):
            part = logits[i * pixel_values.shape[0] : (i + 1) * pixel_values.shape[0]]
            total[:, :, y : y + win_h, x : x + win_w] += part
            count[:, :, y : y + win_h, x : x + win_w] += 1
    return total / count


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    mode: str = "whole",
    window: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    flip: bool = False,
    scales: Sequence[float] | None = None,
) -> torch.Tensor:
    """Logits (B, C, H, W) for padded, normalised ``pixel_values`` by ``mode`` "whole" or "slide" (see
    :func:`sliding_window_logits`; the window defaults to the model config's ``train_crop_size``), averaged over
    the resize factors ``scales`` (None: the input as it is; e.g. (0.75, 1, 1.25) for multi-scale TTA)."""
    if mode not in MODES:
        raise ValueError(f"inference mode must be one of {MODES}, not {mode!r}")
    scales = check_scales(scales)
    if mode == "whole":
        def predict(x):
            return _with_flip(model, x, flip).float()
    else:
        if window is None:
            window = getattr(getattr(model, "config", None), "train_crop_size", None)
            if not window:
                raise ValueError("sliding-window inference needs a window size (e.g. the training crop size): give window=")

        def predict(x):
            return sliding_window_logits(model, x, window, stride, flip)
    total = None
    for scale in scales:
        logits = _at_scale(model, pixel_values, scale, predict)
        total = logits if total is None else total + logits
    return total / len(scales)


@torch.no_grad()
def predict_segmentation(
    model: torch.nn.Module,
    processor,
    images: Sequence,
    mode: str = "whole",
    window: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    flip: bool = False,
    scales: Sequence[float] | None = None,
) -> list[np.ndarray]:
    """Class maps (height, width) int64 at each image's original resolution.

    Args:
        model: a ``UnetForSemanticSegmentation`` (or anything returning ``.logits`` from ``pixel_values``).
        processor: its ``SegmentationImageProcessor``.
        images: PIL images or (H, W, 3) uint8 arrays; processed together, so pass one image at a time when their
            sizes differ a lot (padding costs compute).
        mode, window, stride, flip, scales: see :func:`predict_logits`.
    """
    if len(images) == 0:
        return []
    sizes = []
    for image in images:
        if hasattr(image, "size") and not isinstance(image, np.ndarray) and not isinstance(image, torch.Tensor):
            sizes.append((image.size[1], image.size[0]))  # PIL gives (width, height)
        else:
            sizes.append(tuple(np.asarray(image).shape[:2]))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        pixel_values = processor(list(images), return_tensors="pt")["pixel_values"].to(device)
        logits = predict_logits(model, pixel_values, mode=mode, window=window, stride=stride, flip=flip, scales=scales)
        maps = processor.post_process_semantic_segmentation(logits, target_sizes=sizes)
    finally:
        model.train(was_training)
    return [m.cpu().numpy().astype(np.int64) for m in maps]
