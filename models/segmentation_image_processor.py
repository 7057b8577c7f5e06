"""Image processor of the U-Net: images (and label maps) in, padded normalised batches out; logits back to maps at
each image's original size.

It is a transformers torchvision-backend image processor, so it saves as ``preprocessor_config.json`` beside the
model and loads with ``AutoImageProcessor.from_pretrained(folder)`` (``trust_remote_code=True`` outside this
project). Pipeline per image:

1. optional resize (``do_resize`` with ``size`` as ``{"height", "width"}``, ``{"shortest_edge"[, "longest_edge"]}`` or
   ``{"max_height", "max_width"}``); off by default, so the model sees the full resolution;
2. rescale to [0, 1] and normalise with ``image_mean``/``image_std`` (the model config's);
3. pad at the bottom and right to the batch's largest image rounded up to ``size_divisor`` (32 by default; U-Net
   encoders halve the resolution five times). Label maps go through the same resize (nearest neighbour) and are
   padded with ``ignore_index``, so padding never counts in a loss or metric.

``post_process_semantic_segmentation`` undoes steps 3 and 1: it crops the padding off the logits, resizes them
bilinearly to the original size and takes the arg-max.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as tvF
from transformers import AutoImageProcessor
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_transforms import get_size_with_aspect_ratio
from transformers.image_utils import (
    ChannelDimension,
    ImageInput,
    PILImageResampling,
    SizeDict,
    get_image_size_for_max_height_width,
)
from transformers.processing_utils import ImagesKwargs, Unpack

from .class_ids import class_ids
from .imagenet_weights import IMAGENET_MEAN, IMAGENET_STD
from .unet import UnetConfig


class SegmentationImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    size_divisor (`int`, *optional*, defaults to 32):
        Padded height and width are multiples of this.
    ignore_index (`int`, *optional*, defaults to 255):
        Value that pads label maps (and that losses and metrics skip).
    """

    size_divisor: int
    ignore_index: int


class SegmentationImageProcessor(TorchvisionBackend):
    """Resize (optional), normalise and pad images for ``UnetForSemanticSegmentation``; map logits back.

    ``processor(images, segmentation_maps=None, return_tensors="pt")`` returns ``pixel_values`` (B, 3, H, W) and,
    with maps, ``labels`` (B, H, W) int64, H and W multiples of ``size_divisor``.
    """

    valid_kwargs = SegmentationImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_MEAN
    image_std = IMAGENET_STD
    size = None
    do_resize = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_pad = True
    do_convert_rgb = True
    size_divisor = 32
    ignore_index = 255

    def __init__(self, **kwargs: Unpack[SegmentationImageProcessorKwargs]):
        super().__init__(**kwargs)
        if int(self.size_divisor) < 1:
            raise ValueError(f"size_divisor must be a positive integer, not {self.size_divisor!r}")

    @classmethod
    def for_model(cls, config: UnetConfig, **kwargs) -> "SegmentationImageProcessor":
        """The processor matching a model config: its normalisation, ``ignore_index`` and output stride."""
        defaults = {
            "image_mean": list(config.image_mean),
            "image_std": list(config.image_std),
            "ignore_index": config.semantic_loss_ignore_index,
            "size_divisor": max(32, config.output_stride),
        }
        return cls(**{**defaults, **kwargs})

    def resized_size(
        self, height: int, width: int, do_resize: bool | None = None, size: SizeDict | dict | None = None
    ) -> tuple[int, int]:
        """(height, width) of an image of the given size after the resize step (before padding)."""
        do_resize = self.do_resize if do_resize is None else do_resize
        size = self.size if size is None else size
        if not do_resize:
            return int(height), int(width)
        if size is None:
            raise ValueError("do_resize is set but size is not: give size={'height': H, 'width': W} (or shortest_edge)")
        if not isinstance(size, SizeDict):
            size = SizeDict(**size)
        if size.height and size.width:
            return int(size.height), int(size.width)
        if size.shortest_edge:
            new_size = get_size_with_aspect_ratio((height, width), size.shortest_edge, size.longest_edge)
            return int(new_size[0]), int(new_size[1])
        if size.max_height and size.max_width:
            new_size = get_image_size_for_max_height_width((height, width), size.max_height, size.max_width)
            return int(new_size[0]), int(new_size[1])
        raise ValueError(
            f"unsupported size {dict(size)}; use {{'height', 'width'}}, {{'shortest_edge'[, 'longest_edge']}} "
            "or {'max_height', 'max_width'}"
        )

    def padded_size(self, sizes: list[tuple[int, int]], size_divisor: int | None = None) -> tuple[int, int]:
        """Common padded (height, width) of a batch whose resized sizes are ``sizes``."""
        d = int(self.size_divisor if size_divisor is None else size_divisor)
        height = max(h for h, _ in sizes)
        width = max(w for _, w in sizes)
        return -(-height // d) * d, -(-width // d) * d

    def process_image(self, image, *args, **kwargs):
        # Arrays read from PIL images are read-only; torch.from_numpy would warn (and share memory it may not write).
        if isinstance(image, np.ndarray) and not image.flags.writeable:
            image = image.copy()
        return super().process_image(image, *args, **kwargs)

    def preprocess(
        self,
        images: ImageInput,
        segmentation_maps: ImageInput | None = None,
        **kwargs: Unpack[SegmentationImageProcessorKwargs],
    ) -> BatchFeature:
        r"""
        segmentation_maps (`ImageInput`, *optional*):
            Label maps (one class id per pixel, same size as their image), returned as `labels`.
        """
        return super().preprocess(images, segmentation_maps, **kwargs)

    def _preprocess_image_like_inputs(
        self,
        images: ImageInput,
        segmentation_maps: ImageInput | None,
        do_convert_rgb: bool,
        input_data_format: ChannelDimension,
        return_tensors,
        device=None,
        **kwargs,
    ) -> BatchFeature:
        images = self._prepare_image_like_inputs(
            images=images, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format, device=device
        )
        do_resize, size, do_pad = kwargs["do_resize"], kwargs["size"], kwargs["do_pad"]
        size_divisor = int(kwargs.get("size_divisor") or self.size_divisor)
        ignore_index = int(kwargs["ignore_index"] if kwargs.get("ignore_index") is not None else self.ignore_index)
        originals = [tuple(img.shape[-2:]) for img in images]
        targets = [self.resized_size(h, w, do_resize, size) for h, w in originals]

        pixel_values = []
        for img, target in zip(images, targets):
            if tuple(img.shape[-2:]) != target:
                img = self.resize(img, SizeDict(height=target[0], width=target[1]), resample=kwargs["resample"])
            img = self.rescale_and_normalize(
                img, kwargs["do_rescale"], kwargs["rescale_factor"], kwargs["do_normalize"],
                kwargs["image_mean"], kwargs["image_std"],
            )
            pixel_values.append(img)
        pad_to = self.padded_size(targets, size_divisor) if do_pad else None
        if pad_to is not None:
            pixel_values = self.pad(pixel_values, pad_size=SizeDict(height=pad_to[0], width=pad_to[1]), fill_value=0)
        data = {"pixel_values": pixel_values}

        if segmentation_maps is not None:
            maps = self._prepare_image_like_inputs(
                images=segmentation_maps, expected_ndims=2, do_convert_rgb=False,
                input_data_format=ChannelDimension.FIRST, device=device,
            )
            if len(maps) != len(images):
                raise ValueError(f"{len(images)} images but {len(maps)} segmentation maps; give one map per image")
            labels = []
            for m, original, target in zip(maps, originals, targets):
                if m.shape[0] != 1:
                    raise ValueError(
                        f"a segmentation map holds one class id per pixel (H, W), got shape {tuple(m.shape)}"
                    )
                if tuple(m.shape[-2:]) != original:
                    raise ValueError(f"segmentation map of size {tuple(m.shape[-2:])} for an image of size {original}")
                if m.is_floating_point():
                    raise ValueError("segmentation maps must hold integer class ids, not floats")
                m = m.to(torch.int64)
                if tuple(m.shape[-2:]) != target:
                    m = tvF.resize(m, list(target), interpolation=tvF.InterpolationMode.NEAREST_EXACT, antialias=False)
                labels.append(m)
            if pad_to is not None:
                labels = self.pad(labels, pad_size=SizeDict(height=pad_to[0], width=pad_to[1]), fill_value=ignore_index)
            data["labels"] = [m[0] for m in labels]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def post_process_semantic_segmentation(
        self, outputs, target_sizes: list[tuple[int, int]] | None = None, do_resize: bool | None = None,
        size: SizeDict | dict | None = None,
    ) -> list[torch.Tensor]:
        """Class maps from the model's logits.

        Args:
            outputs: the model output (anything with ``.logits``) or the logits, (B, C, H, W).
            target_sizes: the original (height, width) of each image given to ``preprocess``, or ``None``. With
                sizes, the padding that ``preprocess`` added is cropped away and the logits are resized bilinearly to
                the original size before the arg-max; without, the arg-max is taken at the logits' own size.
            do_resize, size: the resize settings ``preprocess`` used, when they were given to that call rather than
                stored in the processor (default: the processor's own). The padding to crop depends on them: with
                other settings than preprocess had, the crop would be of the wrong area.

        Returns:
            a list of B (height, width) int64 tensors of class ids.
        """
        logits = outputs.logits if hasattr(outputs, "logits") else outputs
        if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
            raise ValueError("expected logits of shape (batch, classes, height, width)")
        if target_sizes is None:
            return list(class_ids(logits, dim=1))
        if isinstance(target_sizes, torch.Tensor):
            target_sizes = target_sizes.tolist()
        if len(target_sizes) != len(logits):
            raise ValueError(f"{len(target_sizes)} target sizes for a batch of {len(logits)}; give one per image")
        maps = []
        for item, (height, width) in zip(logits, target_sizes):
            content_h, content_w = self.resized_size(int(height), int(width), do_resize, size)
            if content_h > item.shape[-2] or content_w > item.shape[-1]:
                raise ValueError(
                    f"target size {(height, width)} does not fit logits of size {tuple(item.shape[-2:])}: give the "
                    "original sizes of the images passed to preprocess"
                )
            item = item[:, :content_h, :content_w]
            if (content_h, content_w) != (int(height), int(width)):
                item = F.interpolate(
                    item[None].float(), size=(int(height), int(width)), mode="bilinear", align_corners=False
                )[0]
            maps.append(class_ids(item, dim=0))
        return maps


SegmentationImageProcessor.register_for_auto_class("AutoImageProcessor")
AutoImageProcessor.register(
    UnetConfig, image_processor_classes={"torchvision": SegmentationImageProcessor}, exist_ok=True
)
