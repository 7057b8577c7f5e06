"""Batching images of different sizes in a ``transformers`` pipeline.

The stock ``pad_collate_fn`` of ``transformers.pipelines.base`` concatenates ``pixel_values`` and so needs every
image of a batch to have one size, which holds for processors that resize to a square but not for segmentation at
the original resolution. ``VariableSizeImageBatching`` swaps in ``collate_images``, which keeps same-sized tensors
concatenated and differently sized ones as a list; the pipeline's ``_forward`` then runs each size group apart
(``split_by_size``), so that a batch gives exactly what the images give one at a time (no extra padding the model
would see).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sized

import torch
from torch.utils.data import DataLoader
from transformers.pipelines.base import no_collate_fn
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator


def collate_images(items: list[Mapping]) -> dict:
    """One batch from ``preprocess`` outputs: a key's tensors are concatenated along dim 0 when their other
    dimensions agree, else kept as a list of tensors; other values become lists."""
    keys = set(items[0])
    for item in items:
        if set(item) != keys:
            raise ValueError(f"the items of a batch hold different keys ({sorted(item)} != {sorted(keys)})")
    batch = {}
    for key in keys:
        values = [item[key] for item in items]
        if all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape[1:]) for v in values}) == 1:
            batch[key] = torch.cat(values, dim=0)
        else:
            batch[key] = values
    return batch


def split_by_size(pixel_values: torch.Tensor | list[torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
    """Groups of (batch indices, (n, C, H, W) tensor) with one spatial size per group, in first-seen order."""
    images = list(pixel_values.split(1)) if isinstance(pixel_values, torch.Tensor) else list(pixel_values)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape[1:]), []).append(i)
    return [(indices, torch.cat([images[i] for i in indices])) for indices in groups.values()]


def pad_stack(tensors: list[torch.Tensor], value: float = 0) -> torch.Tensor:
    """(B, H_max, W_max, ...) from B tensors of shape (H_i, W_i, ...), padded at the bottom and right: the batch
    layout transformers' pipeline iterator splits back into single items."""
    height = max(t.shape[0] for t in tensors)
    width = max(t.shape[1] for t in tensors)
    out = tensors[0].new_full((len(tensors), height, width, *tensors[0].shape[2:]), value)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0], : t.shape[1]] = t
    return out


class VariableSizeImageBatching:
    """Pipeline mixin (put it before ``Pipeline``): batches with ``collate_images`` instead of transformers'
    ``pad_collate_fn``. The rest of ``Pipeline.get_iterator`` is unchanged."""

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        if isinstance(inputs, Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:  # a generator: one worker keeps the order, as in transformers
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
            num_workers = min(num_workers, 1)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        collate_fn = no_collate_fn if batch_size == 1 else collate_images
        dataloader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=collate_fn)
        model_iterator = PipelineIterator(dataloader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)


__all__ = ["VariableSizeImageBatching", "collate_images", "pad_stack", "split_by_size"]
