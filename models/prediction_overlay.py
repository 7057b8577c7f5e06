"""The picture of one caption + segmentation prediction, for ``scripts/predict.py`` and the web interface.

>>> from models.prediction_overlay import class_areas, prediction_overlay
>>> out = pipe("photo.jpg")        # pipeline("image-captioning-seg", model=FOLDER)
>>> names = pipe.model.config.id2label
>>> class_areas(out["class_map"], names)
[{'label': 'background', 'class_id': 0, 'area': 0.81}, {'label': 'circle', 'class_id': 1, 'area': 0.19}]
>>> prediction_overlay(load_image("photo.jpg"), out["class_map"], names, caption=out["caption"],
...                    region_captions=out["region_captions"]).save("photo_overlay.png")

The figure is ``segmentation_report.overlay_figure`` (photo | classes over the photo, background untinted, a legend
of the classes shown) with each legend entry carrying its pixel share in percent, and below it the caption and the
per-region captions, wrapped to the figure's width. It is drawn with PIL at the photo's own size, so a mask pixel
lands on its photo pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .segmentation_report import _font, _text_width, class_palette, overlay_figure

# Below this the caption would wrap every word or two (a 32 px photo gives a 68 px wide figure).
MIN_FIGURE_WIDTH = 320
CAPTION_FONT_SIZE = 13
REGION_FONT_SIZE = 12
MARGIN = 4


def class_name_list(class_names: Sequence[str] | Mapping[int, str], class_map: np.ndarray | None = None) -> list[str]:
    """Class names as a list indexed by class id, from a list or an ``id2label`` dict (whose keys may be strings,
    as JSON configs store them). Ids missing from the names, or found in ``class_map`` beyond them, are named
    ``"class <id>"``."""
    if isinstance(class_names, Mapping):
        by_id = {int(k): str(v) for k, v in class_names.items()}
    else:
        by_id = dict(enumerate(str(n) for n in class_names))
    top = max(by_id, default=-1)
    if class_map is not None and np.asarray(class_map).size:
        top = max(top, int(np.asarray(class_map).max()))
    return [by_id.get(i, f"class {i}") for i in range(top + 1)]


def class_areas(class_map: np.ndarray, class_names: Sequence[str] | Mapping[int, str]) -> list[dict]:
    """One record per class present in ``class_map`` (H, W): ``label``, ``class_id`` and ``area`` (its share of the
    pixels, 0..1), largest area first (ties by class id)."""
    class_map = np.asarray(class_map)
    if class_map.ndim != 2:
        raise ValueError(f"class_map must be (H, W) class ids, got shape {class_map.shape}")
    if class_map.size == 0:
        return []
    if class_map.min() < 0:
        raise ValueError(f"class_map holds a negative class id ({int(class_map.min())})")
    names = class_name_list(class_names, class_map)
    counts = np.bincount(class_map.ravel().astype(np.int64))
    present = np.flatnonzero(counts)
    records = [{"label": names[c], "class_id": int(c), "area": float(counts[c] / class_map.size)} for c in present]
    return sorted(records, key=lambda r: (-r["area"], r["class_id"]))


def _percent(area: float) -> str:
    # A class that is present never reads "0%", however small.
    share = 100 * area
    return f"{share:.0f}%" if share >= 1 else f"{share:.1f}%" if share >= 0.1 else "<0.1%"


def wrap_text(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """``text`` broken into lines no wider than ``width`` pixels in ``font``: at spaces, and inside a word only
    when the word alone is too wide."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if _text_width(draw, candidate, font) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for ch in word:  # a word wider than the figure: cut it where it overflows
                if line and _text_width(draw, line + ch, font) > width:
                    lines.append(line)
                    line = ""
                line += ch
        lines.append(line)
    return lines


def prediction_overlay(
    image,
    class_map: np.ndarray,
    class_names: Sequence[str] | Mapping[int, str],
    caption: str | None = None,
    alpha: float = 0.5,
    region_captions: list[dict] | None = None,
) -> Image.Image:
    """The figure of one prediction (see the module docstring) as an RGB ``PIL.Image``.

    Args:
        image: the photo (``PIL.Image`` or (H, W, 3) uint8 array) the prediction was made on.
        class_map: (H, W) class ids at the photo's size (the pipeline's ``class_map``).
        class_names: names by class id: a list, or the config's ``id2label``. A class named "background" stays
            untinted and out of the legend.
        caption: written under the legend, wrapped to the figure's width; None or "" writes nothing.
        alpha: opacity of the class colours, 0 (photo unchanged) to 1 (flat colours).
        region_captions: ``[{"label", "caption"}]`` (the pipeline's ``region_captions``), one "label: caption"
            paragraph each, under the caption.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    class_map = np.asarray(class_map)
    names = class_name_list(class_names, class_map if class_map.ndim == 2 else None)
    shares = {r["class_id"]: r["area"] for r in class_areas(class_map, names)}
    # The legend of overlay_figure prints the names it is given: hand it "circle 12%" for the classes present.
    # "background" keeps its bare name, which is what overlay_figure recognises to leave it untinted.
    legend_names = [
        name if name.lower() == "background" or c not in shares else f"{name} {_percent(shares[c])}"
        for c, name in enumerate(names)
    ]
    figure = overlay_figure(image, class_map, legend_names, ignore_index=None, alpha=float(alpha),
                            palette=class_palette(len(names)))

    width = max(figure.width, MIN_FIGURE_WIDTH)
    text_width = width - 2 * MARGIN
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    blocks = []  # (font, line height, lines)
    if caption:
        font = _font(CAPTION_FONT_SIZE)
        blocks.append((font, CAPTION_FONT_SIZE + 5, wrap_text(caption, font, text_width, probe)))
    for region in region_captions or []:
        font = _font(REGION_FONT_SIZE)
        text = f"{region.get('label', '?')}: {region.get('caption', '')}"
        blocks.append((font, REGION_FONT_SIZE + 4, wrap_text(text, font, text_width, probe)))
    text_height = sum(line_h * len(lines) for _, line_h, lines in blocks)
    if text_height:
        text_height += 2 * MARGIN

    canvas = Image.new("RGB", (width, figure.height + text_height), (255, 255, 255))
    canvas.paste(figure, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = figure.height + MARGIN
    for index, (font, line_h, lines) in enumerate(blocks):
        colour = (0, 0, 0) if caption and index == 0 else (70, 70, 70)
        for line in lines:
            draw.text((MARGIN, y), line, fill=colour, font=font)
            y += line_h
    return canvas


__all__ = ["class_areas", "class_name_list", "prediction_overlay", "wrap_text"]
