"""Albumentations pipelines applied jointly to an image and its label map.

Training: random scale -> pad to the crop size -> random crop -> horizontal flip -> light colour jitter. With
focus classes, a share of the crops is instead centred on a random pixel of those classes (albumentations'
``CropNonEmptyMaskIfExists``), so thin or rare classes (CamVid's pole and sign) are seen more often.
Validation: optional resize, then padding to a multiple of 32 only; no randomness, so scores are reproducible and
(with no resize, the default) computed at the dataset's own resolution.

Label maps stay integer class ids: every geometric step uses nearest-neighbour interpolation for the mask (OpenCV's
``INTER_NEAREST_EXACT``, see ``MASK_INTERPOLATION``), and every padded mask pixel is ``ignore_index`` (never a
class), so padding is skipped by losses and metrics.

A preset is chosen by name (``"shapes"``, ``"camvid"``, ``"voc2012"``, ``"default"``, ``"none"``) or given as a YAML
file whose keys are the fields of :class:`AugmentConfig`; command-line flags override single fields.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import yaml


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    if isinstance(value, str):
        value = value.replace("x", ",").split(",")
    try:
        value = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be one int or 'height,width', got {value!r}") from None
    if len(value) == 1:
        value = value * 2
    if len(value) != 2:
        raise ValueError(f"{name} must be one int or 'height,width', got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """One augmentation preset.

    Attributes:
        crop_size: training crop (height, width), multiples of 32; ``None`` = the training images' own size (for
            datasets of one fixed size, such as shapes).
        scale_range: (min, max) random rescale factor before cropping; (1, 1) turns scaling off.
        hflip: random horizontal flips (p = 0.5).
        color_jitter: brightness/contrast/saturation jitter strength (0.2 = factors in 0.8..1.2); 0 turns it off.
        hue: hue jitter (fraction of the colour circle, 0..0.5).
        eval_size: validation resize (height, width); ``None`` keeps each image's own resolution.
        size_divisor: validation images are padded to a multiple of this.
        focus_classes: class ids that ``focus_crop_prob`` of the training crops are centred on (a crop falls back
            to a random one when the image has none of them). Class 0 cannot be one: albumentations treats mask
            value 0 as empty.
        focus_crop_prob: the share of training crops centred on a focus class (0..1).
    """

    crop_size: tuple[int, int] | None = (256, 256)
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    color_jitter: float = 0.2
    hue: float = 0.0
    eval_size: tuple[int, int] | None = None
    size_divisor: int = 32
    focus_classes: tuple[int, ...] = ()
    focus_crop_prob: float = 0.0

    def __post_init__(self):
        for name in ("crop_size", "eval_size"):
            value = getattr(self, name)
            if value is not None:
                value = _pair(value, name)
                object.__setattr__(self, name, value)
                if min(value) < 1:
                    raise ValueError(f"{name} must be positive, got {value}")
        lo, hi = (float(v) for v in self.scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be (min, max) with 0 < min <= max, got {self.scale_range}")
        object.__setattr__(self, "scale_range", (lo, hi))
        if not 0 <= self.color_jitter < 1:
            raise ValueError(f"color_jitter must be in [0, 1), got {self.color_jitter}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        try:
            focus = tuple(sorted({int(c) for c in self.focus_classes}))
        except (TypeError, ValueError):
            raise ValueError(f"focus_classes must be class ids, got {self.focus_classes!r}") from None
        object.__setattr__(self, "focus_classes", focus)
        if any(c <= 0 for c in focus):
            raise ValueError(
                f"focus_classes {list(focus)}: class ids must be >= 1 (albumentations' CropNonEmptyMaskIfExists "
                "treats mask value 0 as empty, so class 0 cannot be centred on)"
            )
        if not 0 <= self.focus_crop_prob <= 1:
            raise ValueError(f"focus_crop_prob must be in [0, 1], got {self.focus_crop_prob}")
        if self.crop_size is not None and any(side % self.size_divisor for side in self.crop_size):
            raise ValueError(
                f"crop size {self.crop_size} must be a multiple of {self.size_divisor} in both sides "
                "(the U-Net halves the resolution five times)"
            )


PRESETS: dict[str, AugmentConfig] = {
    "default": AugmentConfig(),
    # Synthetic shapes: images are small and of one size; mild scaling keeps every shape recognisable.
    "shapes": AugmentConfig(crop_size=None, scale_range=(0.75, 1.25), color_jitter=0.1),
    # CamVid is 360x480: crops of 352x480 after scaling by 0.5-2 (the SegNet/DeepLab recipe).
    "camvid": AugmentConfig(crop_size=(352, 480), scale_range=(0.5, 2.0), color_jitter=0.2),
    "voc2012": AugmentConfig(crop_size=(320, 320), scale_range=(0.5, 2.0), color_jitter=0.2),
    "none": AugmentConfig(crop_size=None, scale_range=(1.0, 1.0), hflip=False, color_jitter=0.0),
}


def load_augment_config(preset: str | Path = "default", **overrides: Any) -> AugmentConfig:
    """A preset by name, or a YAML file of :class:`AugmentConfig` fields; ``overrides`` that are not ``None``
    replace fields."""
    fields = {f.name for f in dataclasses.fields(AugmentConfig)}
    if str(preset) in PRESETS:
        base = PRESETS[str(preset)]
    elif Path(preset).suffix in (".yaml", ".yml"):
        path = Path(preset)
        if not path.is_file():
            raise ValueError(f"augmentation YAML {path} not found")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: an augmentation YAML is a mapping of {sorted(fields)}")
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"{path}: unknown augmentation key(s) {sorted(unknown)}; allowed: {sorted(fields)}")
        base = AugmentConfig(**data)
    else:
        raise ValueError(
            f"unknown augmentation preset {str(preset)!r}; choose one of {sorted(PRESETS)} or a .yaml file"
        )
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown augmentation setting(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(base, **changes) if changes else base


# OpenCV's INTER_NEAREST samples source pixel floor(x / scale), while INTER_LINEAR (the image's) samples around
# (x + 0.5) / scale - 0.5, so a rescaled mask sits up to half a source pixel up-left of its image: about 1 % of the
# edge pixels get the neighbouring class. INTER_NEAREST_EXACT uses the same pixel centres as INTER_LINEAR (and as
# PIL's and torchvision's NEAREST_EXACT, which the image processor uses).
MASK_INTERPOLATION = cv2.INTER_NEAREST_EXACT


def train_transform(
    config: AugmentConfig, ignore_index: int, seed: int | None = None, num_classes: int | None = None
) -> A.Compose:
    """Joint image+mask training pipeline; ``config.crop_size`` must be set (resolve ``None`` first).
    ``num_classes`` is needed only for focus crops (every other class id is what they must not centre on)."""
    if config.crop_size is None:
        raise ValueError("the training pipeline needs a crop size: set crop_size (e.g. --crop-size 256)")
    height, width = config.crop_size
    steps: list[A.BasicTransform] = []
    lo, hi = config.scale_range
    if (lo, hi) != (1.0, 1.0):
        steps.append(
            A.RandomScale(
                scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR,
                mask_interpolation=MASK_INTERPOLATION, p=1.0,
            )
        )
    steps += [
        A.PadIfNeeded(
            min_height=height, min_width=width, position="random", border_mode=cv2.BORDER_CONSTANT,
            fill=0, fill_mask=ignore_index,
        ),
        _crop(config, height, width, ignore_index, num_classes),
    ]
    if config.hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if config.color_jitter > 0 or config.hue > 0:
        j = config.color_jitter
        steps.append(
            A.ColorJitter(brightness=(1 - j, 1 + j), contrast=(1 - j, 1 + j), saturation=(1 - j, 1 + j),
                          hue=(-config.hue, config.hue), p=0.8)
        )
    return A.Compose(steps, seed=seed)


def _crop(config: AugmentConfig, height: int, width: int, ignore_index: int, num_classes: int | None):
    if not config.focus_classes or config.focus_crop_prob == 0:
        return A.RandomCrop(height=height, width=width)
    if num_classes is None:
        raise ValueError("focus crops need the number of classes")
    unknown = [c for c in config.focus_classes if c >= num_classes]
    if unknown:
        raise ValueError(f"focus classes {unknown} are not class ids of this dataset (0..{num_classes - 1})")
    others = [c for c in range(num_classes) if c not in config.focus_classes] + [ignore_index]
    q = config.focus_crop_prob
    # OneOf picks a member with probability proportional to its p.
    return A.OneOf([
        A.RandomCrop(height=height, width=width, p=1 - q),
        A.CropNonEmptyMaskIfExists(height=height, width=width, ignore_values=others, p=q),
    ], p=1.0)


def eval_transform(config: AugmentConfig, ignore_index: int) -> A.Compose:
    """Validation pipeline: optional resize (``config.eval_size``), then padding at the bottom/right to a multiple
    of ``config.size_divisor`` with ``ignore_index`` in the mask."""
    steps: list[A.BasicTransform] = []
    if config.eval_size is not None:
        steps.append(A.Resize(*config.eval_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=MASK_INTERPOLATION))
    steps.append(
        A.PadIfNeeded(
            min_height=None, min_width=None, pad_height_divisor=config.size_divisor,
            pad_width_divisor=config.size_divisor, position="top_left", border_mode=cv2.BORDER_CONSTANT,
            fill=0, fill_mask=ignore_index,
        )
    )
    return A.Compose(steps)


def apply_transform(transform: A.Compose, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run a pipeline on an (H, W, 3) uint8 image and its (H, W) integer mask; the mask keeps its dtype."""
    image = np.ascontiguousarray(image)
    mask = np.ascontiguousarray(mask)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask of size {mask.shape} for an image of size {image.shape[:2]}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"a mask holds integer class ids, got {mask.dtype}")
    out = transform(image=image, mask=mask)
    return out["image"], out["mask"].astype(mask.dtype, copy=False)
