"""Evaluate a segmentation-aware captioner on a split with captions and masks, through its own pipeline.

>>> pipe = pipeline("image-captioning-seg", model="outputs/demo/caption_seg_model")
>>> metrics = evaluate_caption_seg(pipe, split, "outputs/demo/eval_test")

Everything is scored on what users get from ``pipeline("image-captioning-seg")``: captions (BLEU-1..4, METEOR,
ROUGE-L, CIDEr-D, distinct-caption share, and attribute accuracy on shapes) and class maps at each image's
original resolution (mIoU, per-class IoU, Dice, pixel and mean class accuracy from one confusion matrix).

Files: ``metrics.json`` and ``metrics.md`` (both tasks), ``segmentation/`` (``per_class.txt``,
``confusion_matrix.png`` and the segmentation ``metrics.json``), ``predictions.jsonl`` (caption, references,
classes with pixel shares, consistency report) and ``overlays/`` (photo, coloured mask, legend, caption) for the
first ``examples`` rows, or for the row indices ``examples`` lists.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from metrics.segmentation_metrics.segmentation_metrics import confusion_matrix, flat_scores, scores_from_confusion
from models.caption_report import metrics_table
from models.caption_task import caption_scores
from models.prediction_overlay import class_areas, prediction_overlay
from models.segmentation_report import write_report

# Shown first in metrics.md, in this order.
HEADLINE = ("BLEU-4", "CIDEr", "METEOR", "attribute_accuracy", "mIoU", "pixel_accuracy")


def evaluate_caption_seg(pipe, split, out_dir: str | Path, batch_size: int = 16, num_beams: int | None = None,
                         segment_aware: bool | None = None, metrics_mode: str = "fast", examples: int | Sequence[int] = 4,
                         max_samples: int | None = None) -> dict:
    """Caption and segment every row of ``split`` (columns ``image``, ``captions``, ``mask``) with ``pipe``, score
    both and write the report files (module docstring). Returns the flat metrics plus ``"files"``."""
    missing = [c for c in ("image", "captions", "mask") if c not in split.column_names]
    if missing:
        raise ValueError(f"caption-seg evaluation needs the columns image, captions and mask; missing {missing}")
    total = split.num_rows if max_samples is None else min(split.num_rows, int(max_samples))
    if total == 0:
        raise ValueError("the split is empty: nothing to evaluate")
    config = pipe.model.config
    class_names = config.class_names
    ignore_index = config.segmenter.semantic_loss_ignore_index
    wanted = set(range(examples)) if isinstance(examples, int) else {int(i) for i in examples}  # rows with overlays
    out = Path(out_dir)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    extra = [c for c in ("image_id", "scene") if c in split.column_names]  # scene: attribute accuracy on shapes
    rows = split.select_columns(["image", "mask", "captions", *extra])
    cm = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
    predictions, records, overlays = [], [], []
    call = {"batch_size": batch_size, "consistency": True}
    if num_beams is not None:
        call["num_beams"] = num_beams
    if segment_aware is not None:
        call["segment_aware"] = segment_aware
    progress = tqdm(total=total, desc="caption + segment", unit="image", disable=total < 2)
    for start in range(0, total, batch_size):
        chunk = rows.select(range(start, min(start + batch_size, total)))
        # Each column once per chunk: indexing a row decodes all of its images again.
        images = [image.convert("RGB") for image in chunk["image"]]
        masks, captions = chunk["mask"], chunk["captions"]
        ids = chunk["image_id"] if "image_id" in chunk.column_names else [str(start + i) for i in range(len(images))]
        results = pipe(images, **call)
        for offset, (image, result) in enumerate(zip(images, results)):
            index = start + offset
            cm += confusion_matrix(result["class_map"], np.asarray(masks[offset]), len(class_names), ignore_index)
            predictions.append(result["caption"])
            records.append({"image_id": ids[offset], "caption": result["caption"], "references": captions[offset],
                            "classes": [{"label": a["label"], "area": round(a["area"], 6)}
                                        for a in class_areas(result["class_map"], class_names)],
                            "consistency": result["consistency"]})
            if index in wanted:
                path = out / "overlays" / f"{index:04d}.png"
                prediction_overlay(image, result["class_map"], class_names, caption=result["caption"]).save(path)
                overlays.append(str(path))
        progress.update(len(images))
    progress.close()

    metrics = caption_scores(predictions, list(range(total)), rows.select(range(total)), metrics_mode)
    scores = scores_from_confusion(cm)
    metrics.update(flat_scores(scores, class_names))
    metrics = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
    metrics["metrics_mode"] = metrics_mode
    metrics["num_images"] = total
    files = write_report(scores, class_names, out / "segmentation", {"mode": "whole", "num_images": total})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    headline = {k: metrics[k] for k in HEADLINE if k in metrics}
    (out / "metrics.md").write_text(metrics_table({**headline, **metrics}), encoding="utf-8")
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    files.update({"metrics": str(out / "metrics.json"), "predictions": str(out / "predictions.jsonl"),
                  "overlays": overlays})
    return {**metrics, "files": files}


__all__ = ["evaluate_caption_seg"]
