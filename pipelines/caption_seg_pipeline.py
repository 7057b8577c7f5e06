"""``CaptionSegPipeline``: the task ``"image-captioning-seg"``, a caption and a segmentation of each image from one
segmentation-aware captioner (``models.caption_seg_model``), its encoder run once per image.

>>> import pipelines  # registers the task
>>> from transformers import pipeline
>>> pipe = pipeline("image-captioning-seg", model="outputs/demo/caption_seg_model", device="cpu")
>>> out = pipe("photo.png", num_beams=3, region_captions=True, consistency=True)
>>> out["caption"], [s["label"] for s in out["segments"]], out["class_map"].shape
('a red circle above a blue star.', ['background', 'circle', 'star'], (128, 128))
>>> out["region_captions"]
[{'label': 'circle', 'caption': 'a red circle.'}, {'label': 'star', 'caption': 'a blue star.'}]
>>> out["consistency"]
{'named_but_absent': [], 'present_but_unnamed': []}
>>> pipe(["a.png", "b.png"], batch_size=8)          # a list in, a list of results out

Without ``model=`` it loads the model ``make demo`` trains (``outputs/demo/caption_seg_model`` in the repository,
or the folder in the environment variable ``CAPTIONSEG_DEFAULT_MODEL``), and says how to make one if it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .caption_consistency import consistency_report
from .caption_pipeline import merge_generate_kwargs
from .image_batching import pad_stack
from .image_inputs import DEFAULT_MAX_IMAGE_PIXELS
from .image_pipeline import ImagePipeline
from .segmentation_pipeline import class_map_and_confidence, logits_at_original_size, segments_from_class_map

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "outputs" / "demo" / "caption_seg_model"
DEFAULT_MODEL_ENV = "CAPTIONSEG_DEFAULT_MODEL"


def default_model_dir() -> Path:
    return Path(os.environ.get(DEFAULT_MODEL_ENV, DEFAULT_MODEL_DIR))


class DemoModelDefault(dict):
    """The task's ``default`` entry for ``PIPELINE_REGISTRY``: the ``make demo`` model folder, looked up when
    ``pipeline()`` is called without ``model=``. transformers would try a missing local folder as a Hub id and fail
    with a network error; this fails first, saying how to get a model."""

    def __init__(self):
        super().__init__(model=None)

    def __getitem__(self, key):
        if key != "model":
            return super().__getitem__(key)
        folder = default_model_dir()
        if not (folder / "config.json").is_file():
            # Said in full: where it looked and why there, since `make demo DEMO_DIR=...` (or any other folder)
            # puts the model where this default does not look unless the variable says so.
            where = (f"{folder} (from {DEFAULT_MODEL_ENV})" if DEFAULT_MODEL_ENV in os.environ
                     else f"{folder} (where `make demo` puts it; {DEFAULT_MODEL_ENV} is not set)")
            raise FileNotFoundError(
                f"pipeline('image-captioning-seg') without model= looked for a model in {where} and found none. "
                f"Pass model='path/to/model', or set {DEFAULT_MODEL_ENV} to a model folder (after `make demo "
                f"DEMO_DIR=x`: {DEFAULT_MODEL_ENV}=x/caption_seg_model). To make one, run `make demo` (about 10 "
                "minutes on 2 CPU cores), or `python scripts/train.py --task caption-seg --dataset shapes "
                "--output-dir runs/caption_seg` and pass model='runs/caption_seg/best'."
            )
        return (str(folder), None)


def _pad_rows(rows: list[torch.Tensor], width: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


class CaptionSegPipeline(ImagePipeline):
    """Caption and segment images with a ``CaptionSegModel``, its tokenizer and its image processor.

    Inputs: a PIL image, a local file path or a numpy array, or a list of them (see ``pipelines.image_inputs``);
    a missing, corrupt, non-image or over-large file raises a ``ValueError`` naming it.

    Parameters (at construction or per call):
        num_beams, max_new_tokens: caption generation (defaults: the model config's ``num_beams``/``max_length``).
        generate_kwargs: any other ``GenerationConfig`` fields for the captions, as a dict.
        segment_aware: caption with (True) or without (False) the segment tokens; None: the model's default.
        region_captions: also caption each predicted segment other than background on its own.
        consistency: also report the classes the caption names that the segmentation lacks, and the reverse.
        return_attention: also return, per caption word, the decoder's attention over the region grid.
        return_class_map: include the (H, W) class-id map (default True).
        max_image_pixels: refuse inputs larger than this many pixels (default 64 MP; 0: no limit).
        batch_size: images per forward pass; a batch gives the results of single calls.

    Returns, per image, a dict:
        ``caption``: str;
        ``segments``: ``[{"label", "score", "area", "mask"}]``, one per class present, as the semantic-segmentation
        pipeline gives them (``mask`` a mode-"L" PIL image at the input's size);
        ``class_map``: (H, W) int64 class ids at the input's size;
        ``region_captions``: ``[{"label", "caption"}]`` (when asked);
        ``consistency``: ``{"named_but_absent": [...], "present_but_unnamed": [...]}`` (when asked);
        ``words``, ``attention_maps`` (words, rows, columns) float and, for a segment-aware caption,
        ``segment_attention``: per word ``{label: weight}`` over the segment tokens, summed over the segments of one
        class (when asked).
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_video_processor = False
    # None: transformers' soft failure. A folder without a tokenizer (e.g. a segmentation model's) then reaches
    # __init__, whose checks say what is wrong, instead of failing inside AutoTokenizer with an unrelated message.
    _load_tokenizer = None
    _pipeline_calls_generate = False  # the model's predict() generates; it has no generation_config of its own

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.model.config, "model_type", None) != "caption_seg":
            raise ValueError(
                f"the image-captioning-seg pipeline needs a segmentation-aware captioner (model type 'caption_seg'), "
                f"not a {getattr(self.model.config, 'model_type', type(self.model).__name__)!r} model"
            )
        if self.tokenizer is None or self.image_processor is None:
            raise ValueError(
                "the image-captioning-seg pipeline needs the model's tokenizer and image processor: save them next "
                "to the model (models.caption_seg_model.save_caption_seg does)"
            )

    def _sanitize_parameters(
        self,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
        generate_kwargs: dict | None = None,
        segment_aware: bool | None = None,
        region_captions: bool | None = None,
        consistency: bool | None = None,
        return_attention: bool | None = None,
        return_class_map: bool | None = None,
        max_image_pixels: int | None = None,
    ):
        preprocess, forward, postprocess = {}, {}, {}
        if max_image_pixels is not None:
            preprocess["max_image_pixels"] = max_image_pixels
        generate = merge_generate_kwargs(num_beams, max_new_tokens, generate_kwargs)
        if generate:
            forward["generate_kwargs"] = generate
        if segment_aware is not None:
            if segment_aware and not self.model.config.segment_aware:
                raise ValueError("this model was trained without segment tokens: segment_aware=True is not available")
            forward["segment_aware"] = bool(segment_aware)
        if region_captions is not None:
            forward["region_captions"] = bool(region_captions)
        if return_attention is not None:
            forward["return_attention"] = postprocess["return_attention"] = bool(return_attention)
        if consistency is not None:
            postprocess["consistency"] = bool(consistency)
        if return_class_map is not None:
            postprocess["return_class_map"] = bool(return_class_map)
        return preprocess, forward, postprocess

    def preprocess(self, image, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> dict:
        return self.pixel_inputs(image, max_image_pixels)

    def _forward(self, model_inputs: dict, generate_kwargs: dict | None = None, segment_aware: bool | None = None,
                 region_captions: bool = False, return_attention: bool = False) -> dict:
        # Every output is a tensor with the batch first, so the pipeline iterator splits a batch into images the
        # same way whether or not batching was asked for.
        pred = self.model.predict(model_inputs["pixel_values"], segment_aware=segment_aware,
                                  region_captions=region_captions, return_attention=return_attention,
                                  **(generate_kwargs or {}))
        sizes = model_inputs["original_size"]
        class_maps, confidences = [], []
        for logits, (height, width) in zip(pred.segmentation_logits, sizes.tolist()):
            class_map, confidence = class_map_and_confidence(
                logits_at_original_size(self.image_processor, logits, height, width)
            )
            class_maps.append(class_map)
            confidences.append(confidence)
        B = len(class_maps)
        out = {"class_map": pad_stack(class_maps), "confidence": pad_stack(confidences), "original_size": sizes,
               "sequences": pred.sequences}
        if region_captions:
            pad = self.tokenizer.pad_token_id
            per_image = [[] for _ in range(B)]
            if pred.region_sequences is not None:
                for seq, b, k in zip(pred.region_sequences, pred.region_image_index.tolist(),
                                     pred.region_class_ids.tolist()):
                    per_image[b].append((k, seq))
            most = max([len(rows) for rows in per_image] + [1])
            length = pred.region_sequences.shape[1] if pred.region_sequences is not None else 1
            out["region_sequences"] = torch.stack([
                _pad_rows([seq for _, seq in rows] + [torch.full((0,), pad)] * (most - len(rows)), length, pad)
                for rows in per_image
            ])
            out["region_class_ids"] = _pad_rows(
                [torch.tensor([k for k, _ in rows] + [-1] * (most - len(rows))) for rows in per_image], most, -1
            )
        if return_attention:
            out["attention_weights"] = pred.attention_weights
            out["memory_mask"] = pred.memory_mask
            out["region_grid"] = torch.tensor([pred.region_grid] * B)
            out["segment_classes"] = pred.segment_classes
        return out

    def _decode(self, ids: torch.Tensor) -> str:
        return self.tokenizer.decode(ids.tolist(), skip_special_tokens=True).strip()

    def postprocess(self, model_outputs: dict, return_class_map: bool = True, consistency: bool = False,
                    return_attention: bool = False) -> dict:
        height, width = model_outputs["original_size"][0].tolist()
        class_map = model_outputs["class_map"][0, :height, :width].numpy().astype(np.int64)
        confidence = model_outputs["confidence"][0, :height, :width].numpy()
        id2label = self.model.config.id2label
        segments = segments_from_class_map(class_map, confidence, id2label)
        caption = self._decode(model_outputs["sequences"][0])
        record = {"caption": caption, "segments": segments}
        if return_class_map:
            record["class_map"] = class_map
        if "region_sequences" in model_outputs:
            record["region_captions"] = [
                {"label": id2label[k], "caption": self._decode(seq)}
                for k, seq in zip(model_outputs["region_class_ids"][0].tolist(), model_outputs["region_sequences"][0])
                if k >= 0
            ]
        if consistency:
            record["consistency"] = consistency_report(
                caption, [s["label"] for s in segments], [id2label[i] for i in range(len(id2label))]
            )
        if return_attention:
            record.update(self._attention(model_outputs))
        return record

    def _attention(self, model_outputs: dict) -> dict:
        """Words of the caption and, per word, the attention over the region grid and over the segment tokens."""
        ids = model_outputs["sequences"][0].tolist()[1:]  # after the start token
        special = set(self.tokenizer.all_special_ids)
        length = 0
        while length < len(ids) and ids[length] not in special:
            length += 1
        rows, cols = model_outputs["region_grid"][0].tolist()
        weights = model_outputs["attention_weights"][0][:length].float()  # step t predicted ids[t]
        words = [self.tokenizer.decode([i]).strip() for i in ids[:length]]
        result = {"words": words, "attention_maps": weights[:, : rows * cols].reshape(-1, rows, cols).numpy()}
        segment_weights = weights[:, rows * cols:]
        if segment_weights.shape[1]:
            present = model_outputs["memory_mask"][0][rows * cols:].tolist()
            classes = model_outputs["segment_classes"][0].tolist()
            id2label = self.model.config.id2label
            result["segment_attention"] = []
            for w in segment_weights:  # two segments of one class (two circles) add up under its name
                per_label = {}
                for k, is_present in enumerate(present):
                    if is_present:
                        label = id2label[classes[k]]
                        per_label[label] = per_label.get(label, 0.0) + float(w[k])
                result["segment_attention"].append(per_label)
        return result


__all__ = ["CaptionSegPipeline", "DEFAULT_MODEL_DIR", "DEFAULT_MODEL_ENV", "DemoModelDefault", "default_model_dir"]
