"""``ImagePipeline``: what the project's image pipelines share on top of transformers' ``Pipeline``.

- ``__call__`` takes one image or a list (or tuple) of them, and an empty list gives an empty list (transformers'
  ``Pipeline.__call__`` indexes ``inputs[0]``);
- ``pixel_inputs`` turns one input into the model inputs the segmentation-style pipelines need: the processed
  ``pixel_values`` (1, 3, H, W) and the ``original_size`` (1, 2) that the outputs are mapped back to.
"""

from __future__ import annotations

import torch
from transformers.pipelines.base import Pipeline

from .image_inputs import DEFAULT_MAX_IMAGE_PIXELS, image_size, load_image


class ImagePipeline(Pipeline):
    def __call__(self, inputs, **kwargs):
        """Run on one image or a list of images; see the subclass docstring for parameters and outputs."""
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list) and not inputs:
            return []
        return super().__call__(inputs, **kwargs)

    def pixel_inputs(self, image, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> dict:
        rgb = load_image(image, max_image_pixels)
        pixel_values = self.image_processor(images=[rgb], return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values.to(self.dtype), "original_size": torch.tensor([image_size(rgb)])}


__all__ = ["ImagePipeline"]
