"""Evaluation report of a segmentation model, for ``scripts/evaluate.py --task segment``.

``evaluate_segmentation`` predicts every image of a split at its original resolution (whole image or sliding
window, optional flip and multi-scale TTA), accumulates one confusion matrix, and writes to an output folder:

- ``metrics.json``: mIoU, mean Dice, pixel and mean class accuracy, per-class scores (``null`` where a class is
  absent from both prediction and reference), the confusion matrix and the inference settings;
- ``per_class.txt``: the per-class table;
- ``confusion_matrix.png``: the row-normalised confusion matrix (rows = reference, columns = prediction);
- ``overlays/<image_id>.png`` for chosen examples: photo, reference and prediction as colour masks over the photo,
  and a legend of the classes shown.

The confusion matrix is drawn with matplotlib, the overlays with PIL (pixel-exact, at the image's own size).
"""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from PIL import Image, ImageDraw, ImageFont

from metrics.segmentation_metrics.segmentation_metrics import confusion_matrix, flat_scores, scores_from_confusion

from .sliding_window import check_scales, predict_segmentation

IGNORE_COLOR = (0, 0, 0)


def class_palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours, far apart in hue (golden-ratio steps), alternating brightness."""
    colors = []
    for i in range(num_classes):
        hue = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95 if i % 2 == 0 else 0.7)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.array(colors, dtype=np.uint8).reshape(num_classes, 3)


def colorize(mask: np.ndarray, palette: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours; ``ignore_index`` (and any id outside the palette) is black."""
    mask = np.asarray(mask).astype(np.int64)
    out = np.zeros(mask.shape + (3,), dtype=np.uint8)
    out[:] = IGNORE_COLOR
    valid = (mask >= 0) & (mask < len(palette))
    if ignore_index is not None:
        valid &= mask != ignore_index
    out[valid] = palette[mask[valid]]
    return out


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def overlay_figure(
    image,
    prediction: np.ndarray,
    class_names: Sequence[str],
    reference: np.ndarray | None = None,
    ignore_index: int | None = 255,
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
) -> Image.Image:
    """Photo | reference over photo (if given) | prediction over photo, above a legend of the classes shown.
    A class named "background" is left untinted, so that the objects stand out on the photo."""
    photo = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image).astype(np.uint8)
    prediction = np.asarray(prediction)
    if prediction.shape != photo.shape[:2]:
        raise ValueError(f"prediction of size {prediction.shape} for an image of size {photo.shape[:2]}")
    if reference is not None and np.asarray(reference).shape != photo.shape[:2]:
        raise ValueError(f"reference of size {np.asarray(reference).shape} for an image of size {photo.shape[:2]}")
    palette = class_palette(len(class_names)) if palette is None else palette

    untinted = [i for i, name in enumerate(class_names) if name.lower() == "background"]

    def blend(mask):
        colours = colorize(mask, palette, ignore_index)
        labelled = np.ones(mask.shape, bool) if ignore_index is None else np.asarray(mask) != ignore_index
        labelled &= ~np.isin(mask, untinted)
        mixed = photo.astype(np.float32)
        mixed[labelled] = (1 - alpha) * mixed[labelled] + alpha * colours[labelled]
        return mixed.astype(np.uint8)

    panels = [("photo", photo)]
    if reference is not None:
        panels.append(("reference", blend(np.asarray(reference))))
    panels.append(("prediction", blend(prediction)))

    shown = set(np.unique(prediction).tolist())
    if reference is not None:
        shown |= set(np.unique(reference).tolist())
    shown = sorted(c for c in shown if 0 <= c < len(class_names) and c not in untinted)

    font = _font(12)
    height, width = photo.shape[:2]
    gap, title_h, swatch, row_h = 4, 16, 12, 16
    total_w = len(panels) * width + (len(panels) - 1) * gap
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    entries = [(c, class_names[c], _text_width(probe, class_names[c], font) + swatch + 14) for c in shown]
    rows, line_w = 1, 0
    for _, _, w in entries:
        if line_w and line_w + w > total_w:
            rows, line_w = rows + 1, 0
        line_w += w
    canvas = Image.new("RGB", (total_w, title_h + height + gap + rows * row_h + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (title, pixels) in enumerate(panels):
        x = i * (width + gap)
        draw.text((x + 2, 1), title, fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray(pixels), (x, title_h))
    x, y = 0, title_h + height + gap
    for c, name, w in entries:
        if x and x + w > total_w:
            x, y = 0, y + row_h
        colour = tuple(int(v) for v in palette[c])
        draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=colour, outline=(0, 0, 0))
        draw.text((x + swatch + 4, y + 1), name, fill=(0, 0, 0), font=font)
        x += w
    return canvas


def save_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str | Path) -> Path:
    """PNG of the row-normalised confusion matrix (each row: where the reference pixels of that class went), cells
    shaded by share and labelled in percent; rows = reference, columns = prediction."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend

    cm = np.asarray(cm, dtype=np.float64)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {cm.shape} for {n} classes")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = 1.6 + 0.45 * n
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=class_names, rotation=90)
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("reference class")
    ax.set_title(f"confusion matrix (% of each reference class, {int(cm.sum())} pixels)", fontsize=9)
    if n <= 30:
        for i in range(n):
            if rows[i, 0] == 0:
                continue
            for j in range(n):
                ax.text(j, i, f"{100 * share[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def per_class_table(scores: dict, class_names: Sequence[str]) -> str:
    """Text table: class, IoU, Dice, accuracy, reference share and predicted share (``-`` where undefined)."""

    def fmt(v):
        return "     -" if math.isnan(v) else f"{100 * v:6.2f}"

    width = max(12, max(len(n) for n in class_names))
    lines = [f"{'class':<{width}}    IoU   Dice    Acc  ref%  pred%", "-" * (width + 36)]
    for i, name in enumerate(class_names):
        lines.append(
            f"{name:<{width}} {fmt(scores['per_class_iou'][i])} {fmt(scores['per_class_dice'][i])} "
            f"{fmt(scores['per_class_accuracy'][i])} {fmt(scores['reference_fraction'][i])[1:]} "
            f"{fmt(scores['predicted_fraction'][i])}"
        )
    lines.append("-" * (width + 36))
    lines.append(
        f"{'mean':<{width}} {fmt(scores['mIoU'])} {fmt(scores['mean_dice'])} {fmt(scores['mean_accuracy'])}"
        f"   pixel accuracy {fmt(scores['pixel_accuracy']).strip()}"
    )
    return "\n".join(lines) + "\n"


def write_report(
    scores: dict, class_names: Sequence[str], out_dir: str | Path, settings: dict | None = None
) -> dict[str, str]:
    """Write metrics.json, per_class.txt and confusion_matrix.png for ``scores`` (from ``scores_from_confusion``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_class = {
        name: {
            "iou": _none_if_nan(scores["per_class_iou"][i]),
            "dice": _none_if_nan(scores["per_class_dice"][i]),
            "accuracy": _none_if_nan(scores["per_class_accuracy"][i]),
            "reference_fraction": _none_if_nan(scores["reference_fraction"][i]),
            "predicted_fraction": _none_if_nan(scores["predicted_fraction"][i]),
        }
        for i, name in enumerate(class_names)
    }
    document = {
        "mIoU": _none_if_nan(scores["mIoU"]),
        "mean_dice": _none_if_nan(scores["mean_dice"]),
        "pixel_accuracy": _none_if_nan(scores["pixel_accuracy"]),
        "mean_accuracy": _none_if_nan(scores["mean_accuracy"]),
        "num_pixels": int(scores["num_pixels"]),
        "per_class": per_class,
        "confusion_matrix": np.asarray(scores["confusion_matrix"]).tolist(),
        "class_names": list(class_names),
        "conventions": "accumulated over the split; classes absent from both prediction and reference are left out "
        "of the means; rows of the confusion matrix = reference, columns = prediction",
        "settings": settings or {},
    }
    paths = {
        "metrics": out / "metrics.json",
        "table": out / "per_class.txt",
        "confusion_matrix": out / "confusion_matrix.png",
    }
    paths["metrics"].write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    paths["table"].write_text(per_class_table(scores, class_names), encoding="utf-8")
    save_confusion_matrix(scores["confusion_matrix"], class_names, paths["confusion_matrix"])
    return {k: str(v) for k, v in paths.items()}


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))[:120] or "image"


def evaluate_segmentation(
    model,
    processor,
    dataset,
    out_dir: str | Path,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = None,
    mode: str = "whole",
    window: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    flip: bool = False,
    scales: Sequence[float] | None = None,
    examples: int | Sequence[int | str] = 4,
    max_samples: int | None = None,
) -> dict:
    """Predict every row of ``dataset`` (a split with ``image``, ``mask`` and ``image_id``) at its original
    resolution, score it, and write the report files to ``out_dir``.

    Args:
        model, processor: a ``UnetForSemanticSegmentation`` and its ``SegmentationImageProcessor``.
        class_names / ignore_index: default to the model config's ``id2label`` and ``semantic_loss_ignore_index``.
        mode, window, stride, flip, scales: inference settings (see ``sliding_window.predict_logits``).
        examples: overlays for the first N rows, or for these row indices / image ids.
        max_samples: score only the first N rows.

    Returns:
        the flat metrics (``mIoU``, ``iou/<class>``, …) plus ``"files"``: the written paths.
    """
    config = model.config
    scales = check_scales(scales)
    class_names = list(class_names or [config.id2label[i] for i in range(config.num_labels)])
    ignore_index = config.semantic_loss_ignore_index if ignore_index is None else int(ignore_index)
    if "mask" not in dataset.column_names:
        raise ValueError("the split has no 'mask' column: segmentation evaluation needs reference masks")
    columns = [c for c in ("image_id", "image", "mask") if c in dataset.column_names]
    rows = dataset.select_columns(columns)
    total = rows.num_rows if max_samples is None else min(rows.num_rows, int(max_samples))
    if isinstance(examples, int):
        wanted = set(range(min(examples, total)))
    else:
        wanted = {e for e in examples}
    out = Path(out_dir)
    overlay_dir = out / "overlays"
    cm = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
    palette = class_palette(len(class_names))
    overlays = []
    for index in tqdm(range(total), desc="segment", unit="image", disable=total < 2):
        row = rows[index]
        image = row["image"].convert("RGB")
        reference = np.asarray(row["mask"])
        prediction = predict_segmentation(
            model, processor, [image], mode=mode, window=window, stride=stride, flip=flip, scales=scales
        )[0]
        cm += confusion_matrix(prediction, reference, len(class_names), ignore_index)
        image_id = row.get("image_id", str(index))
        if index in wanted or image_id in wanted:
            overlay_dir.mkdir(parents=True, exist_ok=True)
            path = overlay_dir / f"{_safe_name(image_id)}.png"
            overlay_figure(image, prediction, class_names, reference, ignore_index, palette=palette).save(path)
            overlays.append(str(path))
    if not cm.sum():
        # Every score would be NaN (0 / 0): say why instead of writing a report of NaNs.
        raise ValueError(f"nothing to score: the {total} evaluated rows have no labelled pixels (every mask pixel "
                         f"is ignore_index {ignore_index}, or no rows were evaluated)")
    scores = scores_from_confusion(cm)
    settings = {"mode": mode, "window": window, "stride": stride, "flip": flip, "scales": list(scales),
                "num_images": total}
    files = write_report(scores, class_names, out, settings)
    files["overlays"] = overlays
    return {**flat_scores(scores, class_names), "files": files}
