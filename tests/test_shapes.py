"""The synthetic shapes dataset: exact masks, truthful captions, determinism and the ``format: shapes`` YAML."""

import hashlib
import re

import datasets
import numpy as np
import pytest

from datasets_cfg import DatasetError, load_dataset_from_config
from datasets_cfg.shapes import (
    BACKGROUND_WORDS,
    BACKGROUNDS,
    CLASS_NAMES,
    COLORS,
    MIN_VISIBLE,
    PALETTE,
    RELATIONS,
    SHAPES,
    SIZES,
    generate_scene,
    object_mask,
    plural,
    relation,
    shape_mask,
)

# A spread of settings: every split, two seeds, small/odd/large image sizes and a crowded max_objects.
SETTINGS = [
    ("train", 0, 128, 3),
    ("validation", 0, 128, 3),
    ("test", 7, 128, 3),
    ("train", 3, 64, 3),
    ("train", 1, 97, 3),
    ("test", 2, 200, 5),
]


def scenes(per_setting=50):
    for split, seed, size, max_objects in SETTINGS:
        for i in range(per_setting):
            yield size, generate_scene(i, split, seed, size, max_objects=max_objects)


def repaint(objects, size):
    """Redraw the scene truth from scratch: (H, W) owner map (-1 = background) and class-id mask."""
    owner = np.full((size, size), -1)
    for obj in objects:  # in draw order: later objects in front
        owner[object_mask(obj, size)] = obj["order"]
    classes = np.array([0] + [CLASS_NAMES.index(o["shape"]) for o in objects])
    return owner, classes[owner + 1]


# ------------------------------------------------------------------------------------------------------------
# Rasters and masks


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_fills_its_box_exactly(shape):
    for side in range(5, 63, 2):
        m = shape_mask(shape, side)
        assert m.shape == (side, side)
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any(), (shape, side)
        assert np.array_equal(m, m[:, ::-1]), "shapes are left-right symmetric"


def test_shapes_are_distinct_even_when_small():
    for side in (19, 21):
        rasters = [shape_mask(s, side) for s in SHAPES]
        for i in range(len(SHAPES)):
            for j in range(i + 1, len(SHAPES)):
                assert (rasters[i] != rasters[j]).sum() >= side, (SHAPES[i], SHAPES[j], side)


def test_mask_agrees_with_scene_truth_pixel_for_pixel():
    occluded_scenes = multi = 0
    for size, sc in scenes():
        assert sc.image.shape == (size, size, 3) and sc.image.dtype == np.uint8
        assert sc.mask.shape == (size, size) and sc.mask.dtype == np.uint8
        owner, mask = repaint(sc.objects, size)
        assert np.array_equal(sc.mask, mask)
        for obj in sc.objects:
            full = object_mask(obj, size)
            ys, xs = np.nonzero(full)
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == obj["bbox"], "bbox is the tight box"
            x0, y0, x1, y1 = obj["bbox"]
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            assert obj["area"] == full.sum()
            seen = owner == obj["order"]
            assert obj["visible_pixels"] == seen.sum() >= MIN_VISIBLE * obj["area"]
            assert obj["occluded_by"] == sorted(int(o) for o in np.unique(owner[full]) if o > obj["order"])
            # The image is painted from the same pixels: one flat colour whose nearest palette entry is its name.
            pixels = sc.image[seen]
            assert (pixels == pixels[0]).all()
            dists = {c: np.abs(pixels[0].astype(int) - PALETTE[c]).sum() for c in COLORS}
            assert min(dists, key=dists.get) == obj["color"]
        bg = sc.image[owner < 0].astype(int)
        if bg.size:  # greyish: channels differ by the tint only
            assert (bg.max(axis=1) - bg.min(axis=1)).max() <= 13
        pairs = {(o["shape"], o["color"]) for o in sc.objects}
        assert len(pairs) == len(sc.objects), "no two objects share colour and shape"
        multi += len(sc.objects) > 1
        occluded_scenes += any(o["occluded_by"] for o in sc.objects)
    assert occluded_scenes >= 0.25 * multi, "partial occlusion should be common"


def test_scenes_cover_the_vocabulary():
    seen = {"shape": set(), "color": set(), "size": set(), "background": set(), "count": set()}
    for i in range(300):
        sc = generate_scene(i)
        seen["background"].add(sc.background)
        seen["count"].add(len(sc.objects))
        for o in sc.objects:
            for key in ("shape", "color", "size"):
                seen[key].add(o[key])
    assert seen == {
        "shape": set(SHAPES),
        "color": set(COLORS),
        "size": set(SIZES),
        "background": set(BACKGROUNDS),
        "count": {1, 2, 3},
    }


# ------------------------------------------------------------------------------------------------------------
# Captions

SIZE_WORD = {"small": "small", "little": "small", "large": "large", "big": "large"}
COUNT_WORD = {"a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
NOUN = {s: s for s in SHAPES} | {plural(s): s for s in SHAPES} | {"shape": None, "shapes": None}
OCCLUSION = ("partly covers", "partly hidden behind")
FILLER = {"is", "there", "picture", "image", "of", "on", "just", "and"}


def parse_caption(caption, sc):
    """Check every noun phrase and relation in ``caption`` against the scene; return the phrases' objects."""
    text = caption
    for phrase in RELATIONS + OCCLUSION:
        text = text.replace(phrase, phrase.replace(" ", "_"))
    tokens = re.sub(r"[,:]", " ", text).split()
    bg_words = {w for ws in BACKGROUND_WORDS.values() for w in ws}
    phrases, links, pending = [], [], {}
    for tok in tokens:
        if tok in COUNT_WORD:
            pending["count"] = COUNT_WORD[tok]
        elif tok == "the":
            pending["count"] = 1  # a definite reference must pick out exactly one object
        elif tok in SIZE_WORD:
            pending["size"] = SIZE_WORD[tok]
        elif tok in COLORS:
            pending["color"] = tok
        elif tok in bg_words:
            pending["bg"] = tok
        elif tok == "background":
            assert pending.get("bg") in BACKGROUND_WORDS[sc.background], caption
            assert not {"size", "color"} & set(pending), f"colour/size word on the background: {caption!r}"
            pending = {}
        elif tok in NOUN:
            assert "bg" not in pending, caption
            matches = [
                o
                for o in sc.objects
                if NOUN[tok] in (None, o["shape"])
                and pending.get("color") in (None, o["color"])
                and pending.get("size") in (None, o["size"])
            ]
            want = pending.get("count")
            assert matches, f"{caption!r} mentions a {pending} {tok} that is not in the scene"
            if want is not None:
                assert len(matches) == want, f"{caption!r}: {want} {pending} {tok} but the scene has {len(matches)}"
            phrases.append((len(links), matches))
            pending = {}
        elif tok.replace("_", " ") in RELATIONS + OCCLUSION:
            links.append((len(phrases), tok.replace("_", " ")))
        else:
            assert tok in FILLER, f"word {tok!r} of {caption!r} is outside the vocabulary"
            assert not {"size", "color"} & set(pending), f"dangling colour/size word in {caption!r}"
            pending = {}
    for n_before, phrase in links:
        (_, left), (_, right) = phrases[n_before - 1], phrases[n_before]
        assert len(left) == len(right) == 1, caption
        a, b = left[0], right[0]
        if phrase in RELATIONS:
            assert relation(a, b) == phrase, caption
        else:
            front, back = (a, b) if phrase == "partly covers" else (b, a)
            assert front["order"] > back["order"], caption
            owner, _ = repaint(sc.objects, sc.mask.shape[0])
            assert (object_mask(back, sc.mask.shape[0]) & (owner == front["order"])).any(), caption
    return phrases, links


def test_captions_mention_only_objects_that_exist_and_true_relations():
    kinds = {"relation": 0, "occlusion": 0}
    for _, sc in scenes(40):
        assert len(sc.captions) == 5
        assert len(set(sc.captions)) >= 3
        for cap in sc.captions:
            assert cap == cap.lower() == " ".join(cap.split()) and cap
            _, links = parse_caption(cap, sc)
            for _, phrase in links:
                kinds["relation" if phrase in RELATIONS else "occlusion"] += 1
        if len(sc.objects) >= 2:
            assert any(re.search("|".join(RELATIONS), c) for c in sc.captions), sc.captions
        described = " ".join(sc.captions)
        for o in sc.objects:  # every object is named somewhere with its colour and shape
            assert f"{o['color']} {o['shape']}" in described, (o, sc.captions)
    assert kinds["relation"] > 100 and kinds["occlusion"] > 20


def test_caption_checker_rejects_false_captions():
    sc = next(s for _, s in scenes() if len(s.objects) == 2)
    a, b = sc.objects
    absent = next(c for c in COLORS if (c, a["shape"]) not in {(o["color"], o["shape"]) for o in sc.objects})
    wrong_rel = next(r for r in RELATIONS if r != relation(a, b))
    for bad in (
        f"a {absent} {a['shape']}",
        f"the {a['color']} {a['shape']} is {wrong_rel} the {b['color']} {b['shape']}",
        "three shapes",
        f"a {a['color']} {a['shape']} on a spotted background",
    ):
        with pytest.raises(AssertionError):
            parse_caption(bad, sc)


def test_relation_uses_the_dominant_axis():
    box = [40, 40, 60, 60]
    assert relation([0, 45, 20, 65], box) == "to the left of"
    assert relation([90, 30, 110, 50], box) == "to the right of"
    assert relation([45, 0, 65, 20], box) == "above"
    assert relation({"bbox": [35, 90, 55, 110]}, {"bbox": box}) == "below"
    # Generated pairs are never close to a tie.
    for _, sc in scenes(20):
        for i, a in enumerate(sc.objects):
            for b in sc.objects[i + 1 :]:
                dx = abs((a["bbox"][0] + a["bbox"][2]) - (b["bbox"][0] + b["bbox"][2])) / 2
                dy = abs((a["bbox"][1] + a["bbox"][3]) - (b["bbox"][1] + b["bbox"][3])) / 2
                assert max(dx, dy) >= 1.3 * min(dx, dy)


# ------------------------------------------------------------------------------------------------------------
# Determinism


def digest(sc):
    h = hashlib.sha256(sc.image.tobytes())
    h.update(sc.mask.tobytes())
    h.update(repr((sc.objects, sc.captions, sc.background)).encode())
    return h.hexdigest()


def test_same_seed_gives_identical_bytes_and_other_seeds_or_splits_differ():
    for i in range(20):
        a, b = generate_scene(i, "train", seed=5), generate_scene(i, "train", seed=5)
        assert a.image.tobytes() == b.image.tobytes() and a.mask.tobytes() == b.mask.tobytes()
        assert a.captions == b.captions and a.objects == b.objects
    streams = {
        (split, seed): {digest(generate_scene(i, split, seed)) for i in range(30)}
        for split in ("train", "validation", "test")
        for seed in (0, 1)
    }
    keys = list(streams)
    for i, k1 in enumerate(keys):
        assert len(streams[k1]) == 30
        for k2 in keys[i + 1 :]:
            assert not streams[k1] & streams[k2], (k1, k2)


def raw_bytes(ds):
    ds = ds.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))
    return [(r["image"]["bytes"], r["mask"]["bytes"], r["captions"]) for r in ds]


def test_dataset_is_byte_identical_across_builds(tmp_path):
    kw = dict(num_train=4, num_validation=2, num_test=2, seed=11)
    first = load_dataset_from_config("shapes", cache_dir=str(tmp_path / "a"), **kw)
    second = load_dataset_from_config("shapes", cache_dir=str(tmp_path / "b"), **kw)
    other = load_dataset_from_config("shapes", cache_dir=str(tmp_path / "c"), **{**kw, "seed": 12})
    for split in ("train", "validation", "test"):
        assert raw_bytes(first[split]) == raw_bytes(second[split])
        assert first[split]["scene"] == second[split]["scene"]
        assert raw_bytes(first[split]) != raw_bytes(other[split])


# ------------------------------------------------------------------------------------------------------------
# The dataset YAML


def test_dataset_dict_features_sizes_and_rows(cache_dir):
    ds = load_dataset_from_config("shapes", num_train=6, num_validation=3, num_test=2, cache_dir=cache_dir)
    assert {k: len(v) for k, v in ds.items()} == {"train": 6, "validation": 3, "test": 2}
    feats = ds["train"].features
    assert set(feats) == {"image_id", "image", "captions", "mask", "mask_classes", "scene"}
    assert isinstance(feats["image"], datasets.Image) and isinstance(feats["mask"], datasets.Image)
    assert feats["mask_classes"].feature.names == list(CLASS_NAMES)
    obj_feats = feats["scene"]["objects"].feature
    assert obj_feats["shape"].names == list(SHAPES)
    assert obj_feats["color"].names == list(COLORS)
    assert obj_feats["size"].names == list(SIZES)
    assert feats["scene"]["background"].names == list(BACKGROUNDS)
    for split, n in (("train", 6), ("validation", 3), ("test", 2)):
        assert ds[split]["image_id"] == [f"{split}_{i:06d}" for i in range(n)]
        for i, row in enumerate(ds[split]):
            sc = generate_scene(i, split, seed=0)
            assert len(row["captions"]) == 5 and row["captions"] == sc.captions
            assert row["image"].mode == "RGB" and row["image"].size == (128, 128)
            assert np.array_equal(np.asarray(row["image"]), sc.image)
            assert np.array_equal(np.asarray(row["mask"]), sc.mask)
            assert row["mask_classes"] == sorted(set(np.unique(sc.mask).tolist()))
            objs = row["scene"]["objects"]
            assert feats["scene"]["background"].int2str(row["scene"]["background"]) == sc.background
            assert [obj_feats["shape"].int2str(o["shape"]) for o in objs] == [o["shape"] for o in sc.objects]
            assert [obj_feats["color"].int2str(o["color"]) for o in objs] == [o["color"] for o in sc.objects]
            assert [o["bbox"] for o in objs] == [o["bbox"] for o in sc.objects]
            assert [o["visible_pixels"] for o in objs] == [o["visible_pixels"] for o in sc.objects]


def test_options_change_the_data(cache_dir):
    ds = load_dataset_from_config(
        "shapes", num_train=3, num_validation=0, num_test=0, image_size=64, min_objects=2, max_objects=2,
        cache_dir=cache_dir,
    )
    assert list(ds) == ["train"]
    for row in ds["train"]:
        assert row["image"].size == (64, 64) and len(row["scene"]["objects"]) == 2


def test_reduce_labels_makes_background_ignored(cache_dir):
    ds = load_dataset_from_config(
        "shapes", num_train=2, num_validation=0, num_test=0, reduce_labels=True, cache_dir=cache_dir
    )
    assert ds["train"].features["mask_classes"].feature.names == list(SHAPES)
    mask, sc = np.asarray(ds["train"][0]["mask"]), generate_scene(0)
    assert np.array_equal(mask, np.where(sc.mask == 0, 255, sc.mask.astype(int) - 1))


@pytest.mark.parametrize(
    "bad",
    [
        {"image_size": 16},
        {"image_size": "128"},
        {"image_size": 128.0},
        {"num_train": -1},
        {"seed": True},
        {"seed": -3},
        {"max_objects": 0},
        {"max_objects": 7},
        {"min_objects": 3, "max_objects": 2},
        {"num_train": 0, "num_validation": 0, "num_test": 0},
        {"classes": ["a", "b"]},
        {"binary_mask": True},
        {"ignore_index": 3},
        {"num_images": 100},  # not a shapes key
        {"caption_style": "short"},
    ],
)
def test_bad_options_raise_dataset_error(bad, cache_dir):
    with pytest.raises(DatasetError):
        load_dataset_from_config({"format": "shapes", **bad}, cache_dir=cache_dir)


def test_canonical_captions_name_every_object_and_keep_the_images(cache_dir):
    from models.shapes_attribute_accuracy import shapes_attribute_accuracy

    options = {"num_train": 0, "num_validation": 0, "num_test": 40, "max_objects": 4}
    varied = load_dataset_from_config("shapes", cache_dir=cache_dir, **options)["test"]
    canonical = load_dataset_from_config("shapes", cache_dir=cache_dir, caption_style="canonical", **options)["test"]
    assert all(len(c) == 1 for c in canonical["captions"])
    assert canonical["captions"] != [[c[0]] for c in varied["captions"]]
    assert [np.asarray(i).tobytes() for i in canonical["image"]] == [np.asarray(i).tobytes() for i in varied["image"]]
    captions = [c[0] for c in canonical["captions"]]
    # Every canonical caption names each object with its size, colour and shape, and its relation holds.
    scores = shapes_attribute_accuracy(captions, canonical["scene"])
    assert scores["attribute_accuracy"] == 1.0 and scores["relation_accuracy"] == 1.0
    for caption, scene in zip(captions, canonical["scene"]):
        assert caption.count(" and ") == max(len(scene["objects"]) - 2, 0)
