"""The synthetic "shapes" dataset: the embedded default, generated from a seed with no files on disk.

Each image (default 128x128) holds 1-3 flat-coloured shapes on a greyish background. Everything a model could be
asked about is known exactly and kept with the image:

- ``mask``: (H, W) uint8 class ids, 0 = background and ``CLASS_NAMES.index(shape)`` for each shape type. It is
  painted from the very boolean arrays that paint the image, so it is exact under occlusion;
- ``captions``: 5 lowercase captions built from the scene (size, colour, shape, counts, "to the left of" /
  "above" relations, "partly covers" occlusions); they mention only objects that exist;
- ``scene``: the truth (background kind; per object its shape, colour, size, box, pixel counts, draw order and
  occluders), so attribute and relation accuracy can be scored exactly (``relation`` gives the relation rule).

Image ``index`` of split ``split`` is drawn from ``np.random.default_rng([_SALT, split id, seed, index])``: the
three splits use disjoint seed streams, any image can be generated alone, and the same seed gives the same bytes.

>>> scene = generate_scene(0)                        # train image 0 of seed 0
>>> scene.image.shape, scene.mask.shape, len(scene.captions)
((128, 128, 3), (128, 128), 5)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator, Sequence

import datasets
import numpy as np

from .config import DatasetConfig
from .errors import DatasetError
from .formats import DatasetFormat, register_format

# The vocabulary. Shapes are chosen to stay distinguishable at ~20 px and to touch all four sides of their box
# exactly (see ``shape_mask``), so that a box and a shape name are enough to redraw an object pixel for pixel.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES: tuple[str, ...] = ("small", "large")
BACKGROUNDS: tuple[str, ...] = ("flat", "gradient", "noise", "stripes", "checker")
CLASS_NAMES: tuple[str, ...] = ("background",) + SHAPES  # mask id = index here, so shape id + 1
SPLITS: tuple[str, ...] = ("train", "validation", "test")
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")

# Saturated RGB values, far apart in hue, so every object's colour has one obvious name on any grey background.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 160, 55),
    "blue": (40, 80, 215),
    "yellow": (235, 205, 35),
    "purple": (140, 50, 180),
    "orange": (240, 125, 25),
}

# Object side length as a fraction of the image side: (low, high) per size class. The gap between the classes
# keeps "small" and "large" unambiguous (about 19-27 px and 37-51 px at 128 px).
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.15, 0.21), "large": (0.29, 0.40)}
MIN_VISIBLE = 0.6  # each object keeps at least this fraction of its pixels visible, so it stays recognisable
_OVERLAP_PROB = 0.5  # chance that a later object is placed over an earlier one, so occlusion is common
_MIN_SEPARATION = 0.08  # object centres differ by at least this fraction of the image on the dominant axis ...
_DOMINANCE = 1.3  # ... and the dominant axis offset is 1.3x the other, so "left of" vs "above" is never a toss-up
_PLACEMENT_TRIES = 100  # positions tried per object; after half of them it falls back to the small size
_SALT = 0x5A4E5  # keeps these seed streams apart from other users of default_rng([split, seed, index])

_STAR_WAIST = 0.42  # half-width of each of the star's two crossed spindles at the centre (box half-side = 1)
_CROSS_ARM = 0.34  # half-width of the cross's arms


@dataclasses.dataclass
class Scene:
    """One generated image and its truth.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) uint8 class ids, 0 = background, ``CLASS_NAMES.index(shape)`` for each shape type.
        objects: one dict per object in draw order (later ones are in front) with keys ``shape``, ``color``,
            ``size`` (names from ``SHAPES``/``COLORS``/``SIZES``), ``bbox`` ([x0, y0, x1, y1], end-exclusive
            pixel box of the full, unoccluded shape), ``area`` (pixels of the full shape), ``visible_pixels``
            (pixels left after occlusion), ``order`` (draw index) and ``occluded_by`` (orders of the objects
            that visibly cover part of it).
        captions: 5 lowercase captions.
        background: one of ``BACKGROUNDS``.
    """

    image: np.ndarray
    mask: np.ndarray
    objects: list[dict]
    captions: list[str]
    background: str

    def truth(self) -> dict:
        """The ``scene`` column value: ``{"background": str, "objects": [...]}``."""
        return {"background": self.background, "objects": [dict(o) for o in self.objects]}


# ----------------------------------------------------------------------------------------------------------------
# Rasterisation


def shape_mask(shape: str, side: int) -> np.ndarray:
    """The (side, side) bool raster of ``shape`` filling a side x side box.

    A pixel is in the shape when its centre is, with the shape scaled so that it spans the whole box (edges at
    +-side/2 from the centre). For an odd ``side`` (the generator only uses odd sides) every shape then reaches
    all four edges of its box, so the tight pixel box *is* the box, and the comparisons below never tie.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {SHAPES}")
    d = np.arange(side, dtype=np.float64) - (side - 1) / 2.0  # pixel-centre offsets from the box centre
    ax, y = np.abs(d)[None, :], d[:, None]  # (1, side) and (side, 1): broadcast to (side, side)
    ay, h = np.abs(y), side / 2.0
    if shape == "circle":
        m = ax * ax + ay * ay <= h * h
    elif shape == "square":
        m = np.ones((side, side), dtype=bool)
    elif shape == "triangle":  # apex at the top centre, base along the bottom edge
        m = 2.0 * ax <= y + h
    elif shape == "diamond":
        m = ax + ay <= h
    elif shape == "cross":
        m = (ax <= _CROSS_ARM * h) | (ay <= _CROSS_ARM * h)
    else:  # star: four points, the union of a horizontal and a vertical thin diamond
        m = (ax + ay / _STAR_WAIST <= h) | (ax / _STAR_WAIST + ay <= h)
    return np.broadcast_to(m, (side, side)).copy()


def object_mask(obj: dict, image_size: int) -> np.ndarray:
    """The (image_size, image_size) bool mask of ``obj``'s full (unoccluded) shape, from its truth dict."""
    x0, y0, x1, y1 = (int(c) for c in obj["bbox"])
    shape = obj["shape"] if isinstance(obj["shape"], str) else SHAPES[int(obj["shape"])]
    out = np.zeros((image_size, image_size), dtype=bool)
    out[y0:y1, x0:x1] = shape_mask(shape, x1 - x0)
    return out


def _center(obj_or_box: dict | Sequence[float]) -> tuple[float, float]:
    box = obj_or_box["bbox"] if isinstance(obj_or_box, dict) else obj_or_box
    x0, y0, x1, y1 = (float(c) for c in box)
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0


def relation(a: dict | Sequence[float], b: dict | Sequence[float]) -> str:
    """Where ``a`` is relative to ``b``: "to the left of", "to the right of", "above" or "below".

    ``a`` and ``b`` are object dicts (with ``bbox``) or [x0, y0, x1, y1] boxes. The box centres are compared on
    the axis where they differ most (ties go to the horizontal axis; equal centres give "to the right of").
    Image y grows downwards, so a smaller centre y is "above". Generated scenes keep every pair clear of ties.
    """
    ax, ay = _center(a)
    bx, by = _center(b)
    dx, dy = ax - bx, ay - by
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


# ----------------------------------------------------------------------------------------------------------------
# Backgrounds: greyish (small tint only), so an object's colour is never confused with the background's.


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """An (size, size, 3) uint8 background of the given kind."""
    coords = np.arange(size, dtype=np.float32)
    x, y = coords[None, :], coords[:, None]
    if kind == "flat":
        grey = np.full((size, size), rng.uniform(70, 190), dtype=np.float32)
    elif kind == "gradient":
        g0, g1 = rng.uniform(60, 200, size=2)
        if abs(g1 - g0) < 40:  # keep the gradient visible
            g1 = g0 + 40 if g0 < 130 else g0 - 40
        theta = rng.uniform(0, 2 * np.pi)
        proj = x * np.cos(theta) + y * np.sin(theta)
        lo, hi = proj.min(), proj.max()
        grey = (g0 + (g1 - g0) * (proj - lo) / (hi - lo)).astype(np.float32)
    elif kind == "noise":
        # Smooth blotches (bilinear upsampling of a coarse grid) plus fine grain: looks like a textured surface.
        cells = int(rng.integers(4, 9))
        coarse = rng.normal(0, 22, size=(cells + 1, cells + 1))
        interp = _bilinear_matrix(size, cells)
        grey = (rng.uniform(90, 170) + interp @ coarse @ interp.T).astype(np.float32)
        grey += rng.normal(0, 7, size=(size, size)).astype(np.float32)
    elif kind in ("stripes", "checker"):
        g0 = rng.uniform(70, 185)
        g1 = g0 + rng.choice([-1, 1]) * rng.uniform(25, 55)
        period = rng.uniform(6, 16) * size / 128
        if kind == "stripes":
            theta = rng.choice([0.0, 0.25, 0.5, 0.75]) * np.pi
            phase = (x * np.cos(theta) + y * np.sin(theta)) / period
            on = (np.floor(phase) % 2).astype(bool)
        else:
            on = ((np.floor(x / period) + np.floor(y / period)) % 2).astype(bool)
        grey = np.where(on, np.float32(g1), np.float32(g0))
    else:
        raise ValueError(f"unknown background {kind!r}")
    tint = rng.uniform(-6, 6, size=3).astype(np.float32)
    rgb = np.broadcast_to(grey[:, :, None], (size, size, 3)) + tint
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _bilinear_matrix(size: int, cells: int) -> np.ndarray:
    """(size, cells + 1) weights that linearly interpolate a (cells + 1)-point grid onto ``size`` pixels."""
    pos = (np.arange(size) + 0.5) * cells / size
    i0 = np.minimum(pos.astype(int), cells - 1)
    frac = pos - i0
    w = np.zeros((size, cells + 1))
    w[np.arange(size), i0] = 1 - frac
    w[np.arange(size), i0 + 1] = frac
    return w


# ----------------------------------------------------------------------------------------------------------------
# Scene generation


def _split_id(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {SPLITS}")
    return SPLITS.index(split)


def _odd_side(size_class: str, image_size: int, rng: np.random.Generator) -> int:
    lo, hi = SIZE_RANGES[size_class]
    side = int(round(rng.uniform(lo, hi) * image_size))
    return max(3, side | 1)  # odd, so the shapes reach their box edges exactly (see shape_mask)


def _start_near(lo: int, hi: int, side: int, image_size: int, rng: np.random.Generator) -> int:
    """A start coordinate for a ``side``-long span overlapping [lo, hi) by at least side // 4 (if it fits)."""
    q = max(1, side // 4)
    first, last = max(0, lo - side + q), min(image_size - side, hi - q)
    if first > last:
        first, last = 0, image_size - side
    return int(rng.integers(first, last + 1))


def _clear_of(cx: float, cy: float, placed: list[dict], min_sep: float) -> bool:
    """True when the centre (cx, cy) has an unambiguous relation to every placed object."""
    for o in placed:
        ox, oy = _center(o)
        big, small = sorted((abs(cx - ox), abs(cy - oy)), reverse=True)
        if big < min_sep or big < _DOMINANCE * small:
            return False
    return True


def generate_scene(
    index: int,
    split: str = "train",
    seed: int = 0,
    image_size: int = 128,
    min_objects: int = 1,
    max_objects: int = 3,
) -> Scene:
    """Generate image ``index`` of ``split`` for ``seed``; deterministic, independent of every other image.

    Objects are drawn in order, later ones in front. Each is placed where its centre has a clear relation to
    the others and where every object keeps at least ``MIN_VISIBLE`` of its pixels; an object that finds no
    such place in ``_PLACEMENT_TRIES`` tries is dropped (rare for up to 3 objects at 128 px; more crowded
    settings may get fewer objects than drawn). No two objects share both colour and shape, so "the red
    circle" always names one object.
    """
    if not 1 <= min_objects <= max_objects <= len(SHAPES) * len(COLORS):
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    rng = np.random.default_rng([_SALT, _split_id(split), int(seed), int(index)])
    S = int(image_size)
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    image = _background(background, S, rng)

    # owner[y, x] = draw index of the object seen at that pixel, -1 for background. Image and mask are both
    # painted from it, which is what makes the mask exact under occlusion.
    owner = np.full((S, S), -1, dtype=np.int16)
    objects: list[dict] = []
    visible: list[int] = []
    n = int(rng.integers(min_objects, max_objects + 1))
    min_sep = _MIN_SEPARATION * S
    for _ in range(n):
        taken = {(o["shape"], o["color"]) for o in objects}
        while True:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            color = COLORS[int(rng.integers(len(COLORS)))]
            if (shape, color) not in taken:
                break
        size_class = SIZES[int(rng.integers(len(SIZES)))]
        side = _odd_side(size_class, S, rng)
        local = shape_mask(shape, side)
        area = int(local.sum())
        k = len(objects)
        placed = None
        for attempt in range(_PLACEMENT_TRIES):
            if attempt == _PLACEMENT_TRIES // 2 and size_class == "large":
                size_class, side = "small", _odd_side("small", S, rng)
                local = shape_mask(shape, side)
                area = int(local.sum())
            if objects and rng.random() < _OVERLAP_PROB:
                # Overlap a random earlier object's box by at least a quarter of this object's side.
                ox0, oy0, ox1, oy1 = objects[int(rng.integers(k))]["bbox"]
                x0 = _start_near(ox0, ox1, side, S, rng)
                y0 = _start_near(oy0, oy1, side, S, rng)
            else:
                x0 = int(rng.integers(0, S - side + 1))
                y0 = int(rng.integers(0, S - side + 1))
            if not _clear_of(x0 + side / 2, y0 + side / 2, objects, min_sep):
                continue
            window = owner[y0 : y0 + side, x0 : x0 + side]
            under = window[local]
            hidden = np.bincount(under[under >= 0], minlength=k) if k else np.zeros(0, dtype=np.int64)
            if all((visible[j] - int(hidden[j])) >= MIN_VISIBLE * objects[j]["area"] for j in range(k)):
                window[local] = k  # a view into owner: paints the object in front of everything so far
                for j in range(k):
                    visible[j] -= int(hidden[j])
                placed = (x0, y0)
                break
        if placed is None:
            continue
        x0, y0 = placed
        objects.append(
            {
                "shape": shape,
                "color": color,
                "size": size_class,
                "bbox": [x0, y0, x0 + side, y0 + side],
                "area": area,
                "visible_pixels": 0,
                "order": k,
                "occluded_by": [],
            }
        )
        visible.append(area)

    for obj, vis in zip(objects, visible):
        obj["visible_pixels"] = vis
        if vis < obj["area"]:
            x0, y0, x1, y1 = obj["bbox"]
            seen = owner[y0:y1, x0:x1][shape_mask(obj["shape"], x1 - x0)]
            obj["occluded_by"] = sorted(int(o) for o in np.unique(seen) if o > obj["order"])

    mask = np.zeros((S, S), dtype=np.uint8)
    if objects:
        fg = owner >= 0
        idx = owner[fg]
        # A small brightness jitter per object varies the pixels without blurring the colour names.
        shade = rng.uniform(0.88, 1.06, size=len(objects))
        colors = np.array([PALETTE[o["color"]] for o in objects], dtype=np.float64) * shade[:, None]
        image[fg] = np.clip(colors + 0.5, 0, 255).astype(np.uint8)[idx]
        mask[fg] = np.array([CLASS_NAMES.index(o["shape"]) for o in objects], dtype=np.uint8)[idx]
    captions = make_captions(objects, background, rng)
    return Scene(image=image, mask=mask, objects=objects, captions=captions, background=background)


# ----------------------------------------------------------------------------------------------------------------
# Captions. A small vocabulary: the names above, a few synonyms, number words and relation phrases.

NUMBER_WORDS: tuple[str, ...] = ("no", "one", "two", "three", "four", "five", "six")
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "flat": ("plain",),
    "gradient": ("gradient", "shaded"),
    "noise": ("noisy", "speckled"),
    "stripes": ("striped",),
    "checker": ("checkered",),
}
NUM_CAPTIONS = 5


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _phrase(obj: dict, rng: np.random.Generator, article: str, with_size: bool | None = None) -> str:
    """'a large red circle', 'the blue square', ...; ``with_size=None`` lets the rng decide."""
    if with_size is None:
        with_size = bool(rng.random() < 0.5)
    words = ([_pick(rng, SIZE_WORDS[obj["size"]])] if with_size else []) + [obj["color"], obj["shape"]]
    if article == "a" and words[0][0] in "aeiou":
        article = "an"
    return " ".join([article] + words) if article else " ".join(words)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _bg_suffix(background: str, rng: np.random.Generator, prob: float = 0.4) -> str:
    return f" on a {_pick(rng, BACKGROUND_WORDS[background])} background" if rng.random() < prob else ""


def _describe_all(objs: list[dict], background: str, rng: np.random.Generator) -> str:
    order = [objs[int(i)] for i in rng.permutation(len(objs))]
    with_size = bool(rng.random() < 0.7)
    prefix = _pick(rng, ("", "a picture of ", "an image of ", "there is "))
    return prefix + _join([_phrase(o, rng, "a", with_size) for o in order]) + _bg_suffix(background, rng)


def _count(objs: list[dict], background: str, rng: np.random.Generator) -> str:
    n = len(objs)
    if n == 1:
        o = objs[0]
        return _pick(
            rng,
            (
                f"a single {_phrase(o, rng, '')}",
                f"one {_phrase(o, rng, '')}{_bg_suffix(background, rng, 1.0)}",
                f"just one shape: {_phrase(o, rng, 'a')}",
                f"one shape{_bg_suffix(background, rng, 1.0)}",
            ),
        )
    by = "shape" if rng.random() < 0.6 else "color"
    groups: dict[str, int] = {}
    for o in objs:
        groups[o[by]] = groups.get(o[by], 0) + 1
    keys = [k for k in (SHAPES if by == "shape" else COLORS) if k in groups]
    keys = [keys[int(i)] for i in rng.permutation(len(keys))]
    say_one = bool(rng.random() < 0.5)  # "one circle" or "a circle", the same way throughout the caption
    parts = []
    for key in keys:
        c = groups[key]
        noun = plural(key) if by == "shape" else f"{key} shapes"
        single = key if by == "shape" else f"{key} shape"
        art = "one" if say_one else ("an" if single[0] in "aeiou" else "a")
        parts.append(f"{NUMBER_WORDS[c]} {noun}" if c > 1 else f"{art} {single}")
    body = _join(parts)
    if rng.random() < 0.5:
        return f"{NUMBER_WORDS[n]} shapes: {body}"
    return body + _bg_suffix(background, rng)


def _relation_caption(objs: list[dict], background: str, rng: np.random.Generator) -> str | None:
    if len(objs) < 2:
        return None
    i, j = (int(t) for t in rng.choice(len(objs), size=2, replace=False))
    a, b = objs[i], objs[j]
    rel = relation(a, b)
    if rng.random() < 0.5:
        return f"{_phrase(a, rng, 'the')} is {rel} {_phrase(b, rng, 'the')}"
    return f"{_phrase(a, rng, 'a')} {rel} {_phrase(b, rng, 'a')}" + _bg_suffix(background, rng, 0.3)


def _occlusion_caption(objs: list[dict], background: str, rng: np.random.Generator) -> str | None:
    pairs = [(objs[f], o) for o in objs for f in o["occluded_by"]]
    if not pairs:
        return None
    front, back = pairs[int(rng.integers(len(pairs)))]
    if rng.random() < 0.5:
        return f"{_phrase(front, rng, 'the')} partly covers {_phrase(back, rng, 'the')}"
    return f"{_phrase(back, rng, 'the')} is partly hidden behind {_phrase(front, rng, 'the')}"


def make_captions(objs: list[dict], background: str, rng: np.random.Generator) -> list[str]:
    """``NUM_CAPTIONS`` lowercase captions: a full description, a count, relations and occlusions if any."""
    if not objs:
        return [f"an empty {_pick(rng, BACKGROUND_WORDS[background])} background"] * NUM_CAPTIONS
    makers = [_describe_all, _count, _relation_caption, _occlusion_caption, _relation_caption, _describe_all, _count]
    out: list[str] = []
    for maker in makers * 3:  # later rounds only fill the gaps when some captions came out the same
        if len(out) == NUM_CAPTIONS:
            break
        cap = maker(objs, background, rng)
        if cap is not None and cap not in out:
            out.append(cap)
    while len(out) < NUM_CAPTIONS:  # very few variants exist (one object): repeat rather than return fewer
        out.append(out[len(out) % max(1, len(out))])
    return out


def canonical_caption(objs: list[dict]) -> str:
    """One deterministic description naming every object: size, colour and shape of each, left to right (by box
    centre), with the relation of the first to the second, e.g. "a small red circle to the left of a large blue
    star and a small green cross". ``caption_style: canonical`` gives this as an image's only caption, so that a
    captioner can be held to BLEU/CIDEr and attribute targets that five random template draws make unreachable."""
    if not objs:
        return "an empty background"
    ordered = sorted(objs, key=lambda o: _center(o))
    phrases = [" ".join(["an" if SIZE_WORDS[o["size"]][0][0] in "aeiou" else "a", SIZE_WORDS[o["size"]][0],
                         o["color"], o["shape"]]) for o in ordered]
    if len(ordered) == 1:
        return phrases[0]
    return f"{phrases[0]} {relation(ordered[0], ordered[1])} {phrases[1]}" + "".join(f" and {p}" for p in phrases[2:])


# ----------------------------------------------------------------------------------------------------------------
# The ``format: shapes`` dataset YAML.


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@register_format
class ShapesFormat(DatasetFormat):
    """Generated data: no root folder; the YAML keys below choose the seed, sizes and split sizes."""

    name = "shapes"
    has_captions = True
    has_masks = True
    needs_root = False
    options = {
        "seed": 0,
        "image_size": 128,
        "num_train": 2000,
        "num_validation": 200,
        "num_test": 200,
        "min_objects": 1,
        "max_objects": 3,
        "caption_style": "varied",
    }
    CAPTION_STYLES = ("varied", "canonical")
    # (min, max) accepted for each integer option.
    _LIMITS = {
        "seed": (0, 2**63 - 1),
        "image_size": (32, 1024),
        "num_train": (0, 10_000_000),
        "num_validation": (0, 10_000_000),
        "num_test": (0, 10_000_000),
        "min_objects": (1, 6),
        "max_objects": (1, 6),
    }

    @classmethod
    def check_config(cls, config: DatasetConfig) -> None:
        super().check_config(config)
        where = config.source or "shapes dataset config"
        opts = config.options
        if opts["caption_style"] not in cls.CAPTION_STYLES:
            raise DatasetError(f"caption_style must be one of {cls.CAPTION_STYLES}, not {opts['caption_style']!r}", where)
        for key, (lo, hi) in cls._LIMITS.items():
            v = opts[key]
            if not _is_int(v) or not lo <= v <= hi:
                raise DatasetError(f"{key!r} must be an integer in {lo}..{hi}, not {v!r}", where)
        if opts["min_objects"] > opts["max_objects"]:
            raise DatasetError(
                f"min_objects ({opts['min_objects']}) is larger than max_objects ({opts['max_objects']})", where
            )
        if not any(opts[f"num_{s}"] for s in SPLITS):
            raise DatasetError("num_train, num_validation and num_test are all 0: nothing to generate", where)
        if config.binary_mask:
            raise DatasetError("binary_mask does not apply to shapes: its masks hold class ids 0..6", where)
        expected = list(SHAPES if config.reduce_labels else CLASS_NAMES)
        if config.classes is not None and list(config.classes) != expected:
            raise DatasetError(
                f"shapes defines its own classes {expected}; remove 'classes' from the YAML", where
            )
        if config.ignore_index < len(CLASS_NAMES):
            raise DatasetError(
                f"ignore_index {config.ignore_index} is a shapes class id (0..{len(CLASS_NAMES) - 1})", where
            )

    @classmethod
    def provides_classes(cls) -> bool:
        return True

    def class_names(self) -> list[str]:
        # With reduce_labels the background (0) becomes ignore_index and shape ids shift down by one.
        return list(SHAPES if self.config.reduce_labels else CLASS_NAMES)

    def split_names(self) -> list[str]:
        return [s for s in SPLITS if self.config.options[f"num_{s}"] > 0]

    def records(self, split: str) -> Iterator[dict]:
        o = self.config.options
        for i in range(o[f"num_{split}"]):
            scene = generate_scene(i, split, o["seed"], o["image_size"], o["min_objects"], o["max_objects"])
            yield {
                "image_id": f"{split}_{i:06d}",
                "image": scene.image,
                "captions": scene.captions if o["caption_style"] == "varied" else [canonical_caption(scene.objects)],
                "mask": scene.mask,
                "scene": scene.truth(),
            }

    def extra_features(self) -> dict[str, Any]:
        return {"scene": scene_features()}

    def source_files(self) -> list[Path]:
        # The generator is the data: editing this file must invalidate cached Arrow files.
        return [Path(__file__)]


def scene_features() -> dict:
    """The ``datasets`` feature of the ``scene`` column; names are attached through ``ClassLabel``."""
    return {
        "background": datasets.ClassLabel(names=list(BACKGROUNDS)),
        "objects": datasets.List(
            {
                "shape": datasets.ClassLabel(names=list(SHAPES)),
                "color": datasets.ClassLabel(names=list(COLORS)),
                "size": datasets.ClassLabel(names=list(SIZES)),
                "bbox": datasets.List(datasets.Value("int32"), length=4),
                "area": datasets.Value("int32"),
                "visible_pixels": datasets.Value("int32"),
                "order": datasets.Value("int32"),
                "occluded_by": datasets.List(datasets.Value("int32")),
            }
        ),
    }
