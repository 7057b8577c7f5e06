"""Attribute accuracy of captions on synthetic shapes, scored against the scene truth."""

import math

import pytest

from datasets_cfg import load_dataset_from_config
from datasets_cfg.shapes import COLORS, RELATIONS, SHAPES, generate_scene, relation
from models.shapes_attribute_accuracy import check_caption, shapes_attribute_accuracy


def two_object_scene(index=0):
    return next(sc for i in range(index, 500) if len((sc := generate_scene(i)).objects) == 2)


def test_every_reference_caption_is_free_of_errors_and_full_descriptions_are_correct():
    full = 0
    for i in range(60):
        sc = generate_scene(i)
        for caption in sc.captions:
            check = check_caption(caption, sc.truth())
            assert check.errors == [], (caption, check.errors)
            names_all = all(f"{o['color']} {o['shape']}" in caption for o in sc.objects)
            assert check.correct == names_all, caption
            full += check.correct
    assert full > 60  # at least one correct caption per image on average


def test_relations_are_scored_with_the_generator_rule():
    sc = two_object_scene()
    a, b = sc.objects
    right = relation(a, b)
    wrong = next(r for r in RELATIONS if r != right)
    good = f"the {a['color']} {a['shape']} is {right} the {b['color']} {b['shape']}"
    bad = f"the {a['color']} {a['shape']} is {wrong} the {b['color']} {b['shape']}"
    assert check_caption(good, sc.truth()).correct
    check = check_caption(bad, sc.truth())
    assert not check.correct and check.relations == 1 and check.true_relations == 0
    scores = shapes_attribute_accuracy([good, bad], [sc.truth(), sc.truth()])
    assert scores["attribute_accuracy"] == 0.5 and scores["relation_accuracy"] == 0.5 and scores["relation_rate"] == 1.0


def test_wrong_colour_shape_size_or_count_and_missing_objects_are_wrong():
    sc = two_object_scene()
    a, b = sc.objects
    other_color = next(c for c in COLORS if (c, a["shape"]) not in {(o["color"], o["shape"]) for o in sc.objects})
    other_shape = next(s for s in SHAPES if (a["color"], s) not in {(o["color"], o["shape"]) for o in sc.objects})
    other_size = "small" if a["size"] == "large" else "large"
    both = f"a {a['color']} {a['shape']} and a {b['color']} {b['shape']}"
    assert check_caption(both, sc.truth()).correct
    for caption in (
        f"a {other_color} {a['shape']} and a {b['color']} {b['shape']}",
        f"a {a['color']} {other_shape} and a {b['color']} {b['shape']}",
        f"a {other_size} {a['color']} {a['shape']} and a {b['color']} {b['shape']}",
        f"three shapes: {both}",
        f"a {a['color']} {a['shape']}",  # true but incomplete
        f"{both} and a zebra",
    ):
        assert not check_caption(caption, sc.truth()).correct, caption


def test_scores_read_the_dataset_scene_column_with_class_ids(cache_dir):
    ds = load_dataset_from_config("shapes", num_train=8, num_validation=0, num_test=0, image_size=64, cache_dir=cache_dir)
    rows = list(ds["train"])
    assert isinstance(rows[0]["scene"]["objects"][0]["shape"], int)
    truth = [generate_scene(i, "train", 0, 64).truth() for i in range(8)]
    captions = [r["captions"][0] for r in rows]
    assert shapes_attribute_accuracy(captions, [r["scene"] for r in rows]) == shapes_attribute_accuracy(captions, truth)
    scores = shapes_attribute_accuracy(["a"] * 8, [r["scene"] for r in rows])
    assert scores["attribute_accuracy"] == 0.0 and scores["object_recall"] == 0.0 and math.isnan(scores["relation_accuracy"])


def test_bad_input_raises_value_error():
    sc = generate_scene(0).truth()
    with pytest.raises(ValueError):
        shapes_attribute_accuracy(["a red circle"], [sc, sc])
    with pytest.raises(ValueError):
        shapes_attribute_accuracy([], [])
