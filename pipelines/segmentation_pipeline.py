"""``SemanticSegmentationPipeline``: the task ``"semantic-segmentation"``, one class per pixel at the original
resolution, in the output shape of the stock ``"image-segmentation"`` pipeline.

>>> import pipelines  # registers the task
>>> from transformers import pipeline
>>> segmenter = pipeline("semantic-segmentation", model="runs/unet", device="cpu")
>>> segmenter("photo.jpg")
[{'label': 'background', 'score': 0.97, 'area': 0.81, 'mask': <PIL.Image mode=L>}, {'label': 'circle', ...}]
>>> segmenter(["a.png", "b.png"], batch_size=8, mode="slide", return_class_map=True)
[{'segments': [...], 'class_map': array([[0, 0, 1, ...]])}, ...]

The stock ``image-segmentation`` pipeline resizes with its image processor and leaves a semantic segment's score
empty; this one predicts at the original resolution (the model's ``SegmentationImageProcessor`` pads to a multiple
of 32 and the padding is cropped off again), scores each segment, and can run sliding-window inference.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from models.sliding_window import MODES, check_scales, predict_logits

from .image_batching import VariableSizeImageBatching, pad_stack, split_by_size
from .image_inputs import DEFAULT_MAX_IMAGE_PIXELS
from .image_pipeline import ImagePipeline


def logits_at_original_size(image_processor, logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, height, width) logits of one image from its (C, H_padded, W_padded) logits: the padding that the
    processor added is cropped off and a resize it made is undone (bilinear).

    ``SegmentationImageProcessor.post_process_semantic_segmentation`` does the same but returns only the arg-max;
    the segment scores need the class probabilities as well.
    """
    content_h, content_w = image_processor.resized_size(int(height), int(width))
    logits = logits[:, :content_h, :content_w]
    if (content_h, content_w) != (int(height), int(width)):
        logits = F.interpolate(logits[None].float(), size=(int(height), int(width)), mode="bilinear",
                               align_corners=False)[0]
    return logits


def class_map_and_confidence(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) int64 class ids (the arg-max) and (H, W) float confidence (the max softmax probability) of
    (C, H, W) logits."""
    confidence, class_map = logits.float().softmax(dim=0).max(dim=0)
    return class_map, confidence


def segments_from_class_map(class_map: np.ndarray, confidence: np.ndarray, id2label: dict) -> list[dict]:
    """One record per class present in ``class_map`` (H, W), in class-id order, as the stock
    ``image-segmentation`` pipeline gives them, plus the area:

    - ``label``: the class name (``id2label``; the id as text if the config lacks it);
    - ``score``: mean over the segment's pixels of the max softmax probability (``confidence``, (H, W));
    - ``area``: the segment's share of the image's pixels, in (0, 1];
    - ``mask``: a ``PIL.Image`` of mode ``"L"``, 255 on the segment and 0 elsewhere, at the image's size.
    """
    total = class_map.size
    ids, counts = np.unique(class_map, return_counts=True)
    segments = []
    for class_id, count in zip(ids.tolist(), counts.tolist()):
        where = class_map == class_id
        segments.append(
            {
                "label": id2label.get(class_id, id2label.get(str(class_id), str(class_id))),
                "score": float(confidence[where].mean()),
                "area": count / total,
                "mask": Image.fromarray(where.astype(np.uint8) * 255, mode="L"),
            }
        )
    return segments


class SemanticSegmentationPipeline(VariableSizeImageBatching, ImagePipeline):
    """Semantic segmentation with a ``UnetForSemanticSegmentation`` (or any model returning ``.logits`` of shape
    (B, num_labels, H, W) from ``pixel_values``) and its ``SegmentationImageProcessor``.

    Inputs: a PIL image, a local file path or a numpy array, or a list of them (see ``pipelines.image_inputs``).
    RGBA, grayscale, palette and 16-bit images are converted to RGB; a missing, corrupt or non-image file raises a
    ``ValueError`` naming it.

    Parameters (at construction or per call):
        mode: ``"whole"`` (default; the padded image in one forward pass) or ``"slide"`` (overlapping windows
            whose logits are averaged; ``models.sliding_window``).
        window: window (height, width) or side for ``"slide"``; defaults to the model config's ``train_crop_size``.
        stride: step between windows (default two thirds of the window).
        flip: also run the horizontally flipped image and average the logits.
        scales: multi-scale test-time augmentation: average the logits at these resize factors, e.g.
            ``(0.75, 1, 1.25)`` (default: the image as it is).
        return_class_map: also return the (H, W) int64 class-id map (see Returns).
        max_image_pixels: refuse inputs larger than this many pixels (default 64 MP; 0: no limit).
        batch_size: images per forward pass. Images of different sizes in one batch run as separate groups, so a
            batch gives the same predictions as single calls.

    Returns, per image: a list of segments, one per class present, in class-id order: ``{"label", "score",
    "area", "mask"}`` where ``score`` is the mean, over the segment's pixels, of the maximum softmax probability
    (how sure the model was of the pixels it gave that class), ``area`` the segment's share of the image, and
    ``mask`` a mode-``"L"`` ``PIL.Image`` (255 on the segment, 0 elsewhere) at the original size. With
    ``return_class_map=True``: ``{"segments": [...], "class_map": ndarray (H, W) int64}`` instead.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_video_processor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.image_processor is None:
            raise ValueError(
                "the semantic-segmentation pipeline needs the model's image processor: save it next to the model "
                "(SegmentationImageProcessor.for_model(config).save_pretrained(folder)) or pass image_processor="
            )

    def _sanitize_parameters(
        self,
        mode: str | None = None,
        window=None,
        stride=None,
        flip: bool | None = None,
        scales=None,
        return_class_map: bool | None = None,
        max_image_pixels: int | None = None,
    ):
        preprocess, forward, postprocess = {}, {}, {}
        if max_image_pixels is not None:
            preprocess["max_image_pixels"] = max_image_pixels
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
            forward["mode"] = mode
        for name, value in (("window", window), ("stride", stride), ("flip", flip)):
            if value is not None:
                forward[name] = value
        if scales is not None:
            forward["scales"] = check_scales(scales)
        if return_class_map is not None:
            postprocess["return_class_map"] = bool(return_class_map)
        return preprocess, forward, postprocess

    def preprocess(self, image, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> dict:
        return self.pixel_inputs(image, max_image_pixels)

    def _forward(self, model_inputs: dict, mode: str = "whole", window=None, stride=None, flip: bool = False,
                 scales=None) -> dict:
        sizes = model_inputs["original_size"]
        sizes = torch.cat(sizes) if isinstance(sizes, list) else sizes
        logits: list[torch.Tensor | None] = [None] * len(sizes)
        for indices, pixels in split_by_size(model_inputs["pixel_values"]):
            group = predict_logits(self.model, pixels, mode=mode, window=window, stride=stride, flip=flip, scales=scales)
            for j, i in enumerate(indices):
                logits[i] = group[j]
        class_maps, confidences = [], []
        for item, (height, width) in zip(logits, sizes.tolist()):
            class_map, confidence = class_map_and_confidence(
                logits_at_original_size(self.image_processor, item, height, width)
            )
            class_maps.append(class_map)
            confidences.append(confidence)
        # Tensors with a batch dimension first: transformers' pipeline iterator splits those back into images.
        return {"class_map": pad_stack(class_maps), "confidence": pad_stack(confidences), "original_size": sizes}

    def postprocess(self, model_outputs: dict, return_class_map: bool = False):
        height, width = model_outputs["original_size"][0].tolist()
        class_map = model_outputs["class_map"][0, :height, :width].numpy().astype(np.int64)
        confidence = model_outputs["confidence"][0, :height, :width].numpy()
        segments = segments_from_class_map(class_map, confidence, self.model.config.id2label)
        if return_class_map:
            return {"segments": segments, "class_map": class_map}
        return segments


__all__ = [
    "SemanticSegmentationPipeline",
    "class_map_and_confidence",
    "logits_at_original_size",
    "segments_from_class_map",
]
