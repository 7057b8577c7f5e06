"""Attribute accuracy of generated captions on the synthetic shapes dataset, scored against its ``scene`` column.

A caption is **correct** when it names every object of the scene with its colour and shape (e.g. "red circle")
and says nothing false: no object that is not there, no wrong size, count, background, relation ("to the left
of", scored with ``datasets_cfg.shapes.relation``) or occlusion ("partly covers"). A caption need not state a
relation; every relation it does state must hold. This reads captions the way ``tests/test_shapes.py`` checks the
generator's own captions, so every reference caption of the "describe all objects" kind scores as correct.

>>> shapes_attribute_accuracy(["a red circle to the left of a blue square"], [row["scene"]])
{'attribute_accuracy': 1.0, 'object_recall': 1.0, 'object_precision': 1.0, 'relation_accuracy': 1.0, ...}
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

from datasets_cfg.shapes import BACKGROUND_WORDS, BACKGROUNDS, COLORS, RELATIONS, SHAPES, SIZE_WORDS, SIZES, plural, relation

OCCLUSIONS = ("partly covers", "partly hidden behind")
_COUNT = {"a": 1, "an": 1, "one": 1, "single": 1, "the": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_SIZE = {word: size for size, words in SIZE_WORDS.items() for word in words}
_NOUN = {s: s for s in SHAPES} | {plural(s): s for s in SHAPES} | {"shape": None, "shapes": None}
_BACKGROUND = {word: bg for bg, words in BACKGROUND_WORDS.items() for word in words}
_FILLER = {"is", "there", "picture", "image", "of", "on", "just", "and", "with", "empty", "no"}
_PHRASES = sorted(RELATIONS + OCCLUSIONS, key=len, reverse=True)


@dataclasses.dataclass
class CaptionCheck:
    """What one caption got right and wrong about its scene."""

    objects: int = 0  # objects in the scene
    named: int = 0  # of them, named with their colour and shape
    phrases: int = 0  # noun phrases in the caption
    true_phrases: int = 0  # noun phrases that fit the scene (right objects, sizes, counts)
    relations: int = 0  # relations and occlusions stated
    true_relations: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def correct(self) -> bool:
        return self.named == self.objects and not self.errors


def _scene_objects(scene: dict) -> tuple[list[dict], str]:
    """Objects with names (the ``scene`` column stores ClassLabel ids; ``Scene.truth()`` stores names)."""

    def name(value, names):
        return value if isinstance(value, str) else names[int(value)]

    objects = [
        {**o, "shape": name(o["shape"], SHAPES), "color": name(o["color"], COLORS), "size": name(o["size"], SIZES)}
        for o in scene["objects"]
    ]
    return objects, name(scene["background"], BACKGROUNDS)


def check_caption(caption: str, scene: dict) -> CaptionCheck:
    """Check ``caption`` against one ``scene`` (a row's ``scene`` value or ``Scene.truth()``)."""
    objects, background = _scene_objects(scene)
    check = CaptionCheck(objects=len(objects))
    text = caption.lower()
    for phrase in _PHRASES:
        text = text.replace(phrase, phrase.replace(" ", "_"))
    tokens = re.sub(r"[,:;.!?]", " ", text).split()

    named: set[int] = set()
    phrases: list[list[dict] | None] = []  # per noun phrase: the objects it can mean (None: it fits nothing)
    links: list[tuple[int, str]] = []  # (number of phrases before the link, relation)
    pending: dict[str, Any] = {}
    for tok in tokens:
        if tok in _COUNT:
            pending["count"] = _COUNT[tok]
        elif tok in _SIZE:
            pending["size"] = _SIZE[tok]
        elif tok in COLORS:
            pending["color"] = tok
        elif tok in _BACKGROUND:
            pending["background"] = _BACKGROUND[tok]
        elif tok == "background":
            if pending.get("background") not in (None, background):
                check.errors.append(f"background is {background}, not {pending['background']}")
            pending = {}
        elif tok in _NOUN:
            check.phrases += 1
            shape = _NOUN[tok]
            matches = [
                o for o in objects
                if shape in (None, o["shape"])
                and pending.get("color") in (None, o["color"])
                and pending.get("size") in (None, o["size"])
            ]
            want = pending.get("count")
            words = " ".join(str(pending[k]) for k in ("size", "color") if k in pending) + f" {tok}"
            if not matches:
                check.errors.append(f"no {words.strip()} in the scene")
                phrases.append(None)
            elif want is not None and len(matches) != want:
                check.errors.append(f"{want} x {words.strip()} stated, the scene has {len(matches)}")
                phrases.append(None)
            else:
                check.true_phrases += 1
                phrases.append(matches)
                if shape is not None and "color" in pending and len(matches) == 1:
                    named.add(objects.index(matches[0]))
            pending = {}
        elif tok.replace("_", " ") in RELATIONS + OCCLUSIONS:
            links.append((len(phrases), tok.replace("_", " ")))
            pending = {}
        else:
            if tok not in _FILLER:
                check.errors.append(f"unknown word {tok!r}")
            pending = {}
    for before, phrase in links:
        check.relations += 1
        if before < 1 or before >= len(phrases):
            check.errors.append(f"'{phrase}' does not join two objects")
            continue
        left, right = phrases[before - 1], phrases[before]
        if left is None or right is None or len(left) != 1 or len(right) != 1:
            check.errors.append(f"'{phrase}' joins phrases that do not each name one object")
            continue
        a, b = left[0], right[0]
        if phrase in RELATIONS:
            ok = relation(a, b) == phrase
        else:
            front, back = (a, b) if phrase == "partly covers" else (b, a)
            ok = front["order"] in back.get("occluded_by", [])
        if ok:
            check.true_relations += 1
        else:
            check.errors.append(f"the {a['color']} {a['shape']} is not '{phrase}' the {b['color']} {b['shape']}")
    check.named = len(named)
    return check


def shapes_attribute_accuracy(captions: Sequence[str], scenes: Sequence[dict]) -> dict[str, float]:
    """Scores over a set of captions (one per image) and their scenes.

    Returns:
        ``attribute_accuracy``: share of captions that are correct (see the module docstring);
        ``object_recall``: share of all objects named with their colour and shape;
        ``object_precision``: share of noun phrases that fit the scene;
        ``relation_accuracy``: share of stated relations/occlusions that hold (NaN when none is stated);
        ``relation_rate``: share of images with two or more objects whose caption states a relation.
    """
    if len(captions) != len(scenes):
        raise ValueError(f"{len(captions)} captions but {len(scenes)} scenes")
    if not captions:
        raise ValueError("no captions to score")
    checks = [check_caption(c, s) for c, s in zip(captions, scenes)]
    objects = sum(c.objects for c in checks)
    phrases = sum(c.phrases for c in checks)
    relations = sum(c.relations for c in checks)
    multi = [c for c in checks if c.objects >= 2]
    return {
        "attribute_accuracy": sum(c.correct for c in checks) / len(checks),
        "object_recall": sum(c.named for c in checks) / objects if objects else math.nan,
        "object_precision": sum(c.true_phrases for c in checks) / phrases if phrases else 0.0,
        "relation_accuracy": sum(c.true_relations for c in checks) / relations if relations else math.nan,
        "relation_rate": sum(c.relations > 0 for c in multi) / len(multi) if multi else math.nan,
    }


__all__ = ["CaptionCheck", "check_caption", "shapes_attribute_accuracy"]
