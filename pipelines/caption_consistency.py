"""Does a caption agree with the segmentation of the same image? Class names in the caption vs classes in the mask.

>>> consistency_report("a red circle above a star.", present=["background", "circle"],
...                    class_names=["background", "circle", "square", "star"])
{'named_but_absent': ['star'], 'present_but_unnamed': []}

A class counts as *named* when every word of its name appears in the caption (the last one also as a plural with
"s" / "es"), so "traffic light" is named by "two traffic lights". Classes that captions do not name by design
("background", "void", ...) are left out of both lists.
"""

from __future__ import annotations

import re
from typing import Iterable

UNNAMED_CLASSES = frozenset({"background", "void", "unlabelled", "unlabeled", "other"})


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def is_named(caption_words: set[str], label: str) -> bool:
    parts = _words(label.replace("_", " "))
    if not parts:
        return False
    *head, last = parts
    return all(p in caption_words for p in head) and bool({last, last + "s", last + "es"} & caption_words)


def consistency_report(caption: str, present: Iterable[str], class_names: Iterable[str],
                       unnamed: Iterable[str] = UNNAMED_CLASSES) -> dict[str, list[str]]:
    """``named_but_absent``: classes the caption names that the segmentation does not contain;
    ``present_but_unnamed``: classes in the segmentation that the caption does not name. Both in class order."""
    words = set(_words(caption))
    skip = {u.lower() for u in unnamed}
    present = set(present)
    named = [c for c in class_names if c.lower() not in skip and is_named(words, c)]
    return {
        "named_but_absent": [c for c in named if c not in present],
        "present_but_unnamed": [c for c in class_names if c in present and c.lower() not in skip and c not in named],
    }


__all__ = ["UNNAMED_CLASSES", "consistency_report", "is_named"]
