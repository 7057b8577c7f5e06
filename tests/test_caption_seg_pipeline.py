"""The "image-captioning-seg" pipeline: its output contract, class maps at the input's size, batches equal to single
calls, region captions, attention per word, image inputs of every kind, the default model and wrong model folders;
and the caption / segmentation consistency report."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import pipelines
from datasets_cfg.image_io import to_rgb
from models.caption_seg_model import load_caption_seg
from models.segmentation_image_processor import SegmentationImageProcessor
from models.unet import UnetConfig, UnetForSemanticSegmentation
from pipelines import CaptionSegPipeline
from pipelines.caption_consistency import consistency_report, is_named
from tests.caption_seg_factory import save_tiny_caption_seg_model
from tests.caption_words import caption_words_match
from tests.image_factory import OPENED_MODE, photo_array, write_photo

TASK = "image-captioning-seg"
ALL = dict(region_captions=True, consistency=True, return_attention=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_caption_seg_model(tmp_path_factory.mktemp("caption_seg"))


@pytest.fixture(scope="module")
def pipe(folder):
    return pipeline(TASK, model=str(folder), device="cpu")


@pytest.fixture(scope="module")
def model_parts(folder):
    model, tokenizer, processor = load_caption_seg(folder)
    return model.eval(), tokenizer, processor


def photos(n: int, sizes=((50, 70),)) -> list[Image.Image]:
    """n different RGB photos, cycling through (height, width) sizes."""
    return [Image.fromarray(photo_array(w=sizes[i % len(sizes)][1], h=sizes[i % len(sizes)][0], seed=i))
            for i in range(n)]


# --------------------------------------------------------------------------------------------------------------------
# The output contract


def test_registered_and_the_output_contract(pipe):
    assert isinstance(pipe, CaptionSegPipeline) and pipelines.CAPTION_SEG_TASK == TASK
    image = photos(1)[0]  # 50 x 70: not square, not a multiple of the stride
    out = pipe(image, num_beams=2, **ALL)
    assert set(out) == {"caption", "segments", "class_map", "region_captions", "consistency", "words",
                        "attention_maps", "segment_attention"}
    assert isinstance(out["caption"], str) and out["caption"]
    id2label = pipe.model.config.id2label
    for segment in out["segments"]:
        assert set(segment) == {"label", "score", "area", "mask"}
        assert segment["label"] in id2label.values() and isinstance(segment["label"], str)
        assert isinstance(segment["score"], float) and 0 < segment["score"] <= 1
        assert isinstance(segment["area"], float) and 0 < segment["area"] <= 1
        assert isinstance(segment["mask"], Image.Image) and segment["mask"].mode == "L"
        assert segment["mask"].size == (70, 50)
    class_map = out["class_map"]
    assert isinstance(class_map, np.ndarray) and class_map.dtype == np.int64 and class_map.shape == (50, 70)
    for region in out["region_captions"]:
        assert set(region) == {"label", "caption"} and isinstance(region["caption"], str)
    assert set(out["consistency"]) == {"named_but_absent", "present_but_unnamed"}
    assert all(isinstance(v, list) for v in out["consistency"].values())
    assert isinstance(out["attention_maps"], np.ndarray) and out["attention_maps"].dtype.kind == "f"
    # Without the options: caption, segments and class map only; without return_class_map, no class map.
    assert set(pipe(image)) == {"caption", "segments", "class_map"}
    assert set(pipe(image, return_class_map=False)) == {"caption", "segments"}
    assert pipe(image)["caption"] == pipe(image, num_beams=pipe.model.config.num_beams)["caption"]


def test_class_map_at_the_input_size_matches_the_segments_and_the_model(pipe, model_parts):
    image = photos(1)[0]
    out = pipe(image)
    class_map, segments = out["class_map"], out["segments"]
    assert class_map.shape == (50, 70)
    id2label = pipe.model.config.id2label
    present = sorted(np.unique(class_map).tolist())
    assert len(present) > 1 and [s["label"] for s in segments] == [id2label[k] for k in present]
    for segment, k in zip(segments, present):
        mask = np.asarray(segment["mask"])
        assert set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, class_map == k)
        assert segment["area"] == pytest.approx((class_map == k).mean())
    assert sum(s["area"] for s in segments) == pytest.approx(1.0)
    # At the model's own size (no resizing) the class map is the model's arg-max, and the caption its caption.
    model, tokenizer, processor = model_parts
    square = Image.fromarray(photo_array(w=64, h=64, seed=11))
    pred = model.predict(processor([square], return_tensors="pt")["pixel_values"])
    same_size = pipe(square)
    np.testing.assert_array_equal(same_size["class_map"], pred.segmentation_logits[0].argmax(0).numpy())
    assert same_size["caption"] == tokenizer.decode(pred.sequences[0], skip_special_tokens=True).strip()


def test_a_batch_of_eight_gives_what_eight_single_calls_give(pipe):
    images = photos(8, sizes=((50, 70), (64, 64), (33, 45), (80, 40)))
    singles = [pipe(image, **ALL) for image in images]
    assert len({s["caption"] for s in singles}) > 1  # the images really get different captions
    assert len({tuple(r["caption"] for r in s["region_captions"]) for s in singles}) > 1
    batched = pipe(images, batch_size=4, **ALL)
    assert isinstance(batched, list) and len(batched) == 8
    for b, s, image in zip(batched, singles, images):
        assert b["caption"] == s["caption"]
        assert b["class_map"].shape == (image.height, image.width)
        np.testing.assert_array_equal(b["class_map"], s["class_map"])
        assert b["region_captions"] == s["region_captions"]
        assert b["consistency"] == s["consistency"]
        assert b["words"] == s["words"]
        np.testing.assert_allclose(b["attention_maps"], s["attention_maps"], atol=1e-5)
        assert [x.keys() for x in b["segment_attention"]] == [x.keys() for x in s["segment_attention"]]
        for bw, sw in zip(b["segment_attention"], s["segment_attention"]):
            assert list(bw.values()) == pytest.approx(list(sw.values()), abs=1e-5)
        assert [x["label"] for x in b["segments"]] == [x["label"] for x in s["segments"]]
        assert [x["score"] for x in b["segments"]] == pytest.approx([x["score"] for x in s["segments"]], abs=1e-5)
    assert pipe(tuple(images[:2]), **ALL)[1]["caption"] == singles[1]["caption"]
    assert pipe([]) == []


def test_the_shared_encoder_runs_once_per_batch_for_the_caption_the_segments_and_the_regions(pipe):
    """Segmentation, caption, region captions and attention all come from one pass of the U-Net encoder: the
    captioner does not run it a second time."""
    encoder = pipe.model.segmenter.unet.encoder
    batch_sizes = []  # the batch size of each encoder call
    handle = encoder.register_forward_hook(lambda module, args, output: batch_sizes.append(args[0].shape[0]))
    try:
        outs = pipe(photos(2, sizes=((50, 70), (64, 64))), batch_size=2, **ALL)
        assert batch_sizes == [2]  # one call for the batch of two; [2, 2] if the captioner re-encoded
        assert len(outs) == 2 and all(o["caption"] and o["segments"] and "words" in o for o in outs)
        batch_sizes.clear()
        pipe(photos(2), batch_size=1, **ALL)
        assert batch_sizes == [1, 1]  # unbatched: once per image
    finally:
        handle.remove()


def test_region_captions_are_for_the_present_segments_but_background(pipe, model_parts):
    model, tokenizer, processor = model_parts
    for image in photos(4, sizes=((50, 70), (64, 64))):
        out = pipe(image, region_captions=True)
        labels = [r["label"] for r in out["region_captions"]]
        segment_labels = {s["label"] for s in out["segments"]}
        assert labels and "background" not in labels and len(labels) == len(set(labels))
        assert set(labels) <= segment_labels - {"background"}
        # Exactly the model's region captions: one per class present at the model's resolution.
        pred = model.predict(processor([image], return_tensors="pt")["pixel_values"], region_captions=True)
        expected = [(model.config.id2label[k], tokenizer.decode(seq, skip_special_tokens=True).strip())
                    for k, seq in zip(pred.region_class_ids.tolist(), pred.region_sequences)]
        assert [(r["label"], r["caption"]) for r in out["region_captions"]] == expected
        # Segments large enough to be present at any resolution have a region caption.
        for segment in out["segments"]:
            if segment["label"] != "background" and segment["area"] > 0.05:
                assert segment["label"] in labels


def test_attention_per_word_over_the_grid_and_the_present_segments(pipe, model_parts):
    model, _, processor = model_parts
    image = photos(1)[0]
    out = pipe(image, return_attention=True)
    words, maps, segment_attention = out["words"], out["attention_maps"], out["segment_attention"]
    assert words and caption_words_match(words, out["caption"])
    rows, cols = maps.shape[1:]
    assert maps.shape == (len(words), rows, cols) and rows * cols > 1
    assert np.all(maps >= 0) and np.all(maps.reshape(len(words), -1).sum(1) <= 1 + 1e-5)
    pred = model.predict(processor([image], return_tensors="pt")["pixel_values"], return_attention=True)
    present = pred.memory_mask[0, rows * cols:].tolist()
    present_labels = [model.config.id2label[k] for k, p in enumerate(present) if p]
    assert 0 < len(present_labels) < len(present)  # some classes are absent, and get no entry
    assert len(segment_attention) == len(words)
    for word_map, per_class in zip(maps, segment_attention):
        assert list(per_class) == present_labels
        assert all(w > 0 for w in per_class.values())
        # Every bit of a word's attention is on the grid or on a present segment.
        assert word_map.sum() + sum(per_class.values()) == pytest.approx(1.0, abs=1e-5)


def test_without_segment_tokens_segments_are_unchanged_and_attention_is_on_the_grid(pipe):
    image = photos(1)[0]
    aware = pipe(image, return_attention=True, region_captions=True)
    plain = pipe(image, return_attention=True, region_captions=True, segment_aware=False)
    np.testing.assert_array_equal(plain["class_map"], aware["class_map"])
    assert [s["label"] for s in plain["segments"]] == [s["label"] for s in aware["segments"]]
    assert [s["score"] for s in plain["segments"]] == pytest.approx([s["score"] for s in aware["segments"]])
    assert "segment_attention" not in plain and caption_words_match(plain["words"], plain["caption"])
    np.testing.assert_allclose(plain["attention_maps"].reshape(len(plain["words"]), -1).sum(1), 1.0, atol=1e-5)
    assert [r["label"] for r in plain["region_captions"]] == [r["label"] for r in aware["region_captions"]]
    assert pipe(image, segment_aware=None)["caption"] == aware["caption"]


def test_a_model_without_segment_tokens_refuses_segment_aware(tmp_path):
    plain = pipeline(TASK, model=str(save_tiny_caption_seg_model(tmp_path, segment_aware=False)), device="cpu")
    image = photos(1)[0]
    out = plain(image, return_attention=True)
    assert out["caption"] and "segment_attention" not in out
    with pytest.raises(ValueError, match="without segment tokens"):
        plain(image, segment_aware=True)


# --------------------------------------------------------------------------------------------------------------------
# Inputs


@pytest.mark.parametrize("mode,fmt", [("RGBA", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("I;16", "PNG"), ("RGB;16", "PNG"),
                                      ("P", "PNG"), ("CMYK", "JPEG")])
def test_rgba_grayscale_palette_cmyk_and_16_bit_images_are_converted(pipe, tmp_path, mode, fmt):
    path = write_photo(tmp_path / f"photo.{fmt.lower()}", w=70, h=50, mode=mode, fmt=fmt)
    with Image.open(path) as original:
        assert original.mode == OPENED_MODE.get(mode, mode)
        original.load()  # to_rgb returns an RGB image itself, which must not need its closed file later
        rgb = to_rgb(original)
    out = pipe(str(path))
    assert out["class_map"].shape == (50, 70)
    reference = pipe(rgb)
    assert out["caption"] == reference["caption"]
    np.testing.assert_array_equal(out["class_map"], reference["class_map"])
    with Image.open(path) as opened:
        assert pipe(opened)["caption"] == reference["caption"]


def test_a_one_pixel_image_is_captioned_and_segmented(pipe):
    # load_image accepts any side >= 1; the processor resizes it to the model's size.
    out = pipe(Image.fromarray(np.full((1, 1, 3), 200, dtype=np.uint8)), region_captions=True)
    assert out["caption"] and out["class_map"].shape == (1, 1)
    assert len(out["segments"]) == 1 and out["segments"][0]["area"] == 1.0
    assert out["segments"][0]["mask"].size == (1, 1)


def test_bad_files_raise_value_errors_naming_them(pipe, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    truncated = tmp_path / "truncated.png"
    Image.fromarray(photo_array(64, 64)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    for path, message in [(text, "notes.png: not an image file"), (truncated, "truncated.png: corrupt or truncated"),
                          (tmp_path / "missing.jpg", "missing.jpg: image file not found")]:
        with pytest.raises(ValueError, match=message):
            pipe(str(path))
    with pytest.raises(ValueError, match="notes.png: not an image file"):
        pipe([photos(1)[0], str(text)], batch_size=2)
    with pytest.raises(ValueError, match="over the limit"):
        pipe(photos(1)[0], max_image_pixels=1000)
    with pytest.raises(ValueError, match="num_beams must be a positive integer"):
        pipe(photos(1)[0], num_beams=0)


# --------------------------------------------------------------------------------------------------------------------
# Which model


def test_without_model_it_loads_the_demo_model_or_says_how_to_make_it(folder, tmp_path, monkeypatch):
    empty = tmp_path / "no_model_here"
    empty.mkdir()
    monkeypatch.setenv("CAPTIONSEG_DEFAULT_MODEL", str(empty))
    with pytest.raises(FileNotFoundError, match="make demo") as err:
        pipeline(TASK, device="cpu")
    assert str(empty) in str(err.value)
    monkeypatch.setenv("CAPTIONSEG_DEFAULT_MODEL", str(folder))
    default = pipeline(TASK, device="cpu")
    image = photos(1)[0]
    assert default(image)["caption"] == pipeline(TASK, model=str(folder), device="cpu")(image)["caption"]


def test_the_no_model_error_says_where_it_looked_and_how_to_point_it_elsewhere(tmp_path, monkeypatch):
    import pipelines.caption_seg_pipeline as module

    # Not set: it looked in the make demo folder (here a missing one, whatever this checkout holds).
    monkeypatch.delenv("CAPTIONSEG_DEFAULT_MODEL", raising=False)
    monkeypatch.setattr(module, "DEFAULT_MODEL_DIR", tmp_path / "demo" / "caption_seg_model")
    with pytest.raises(FileNotFoundError) as err:
        pipeline(TASK, device="cpu")
    message = str(err.value)
    assert f"{tmp_path / 'demo' / 'caption_seg_model'} (where `make demo` puts it; CAPTIONSEG_DEFAULT_MODEL is not " \
           "set)" in message
    assert "CAPTIONSEG_DEFAULT_MODEL=x/caption_seg_model" in message and "model=" in message
    monkeypatch.setenv("CAPTIONSEG_DEFAULT_MODEL", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="from CAPTIONSEG_DEFAULT_MODEL") as err:
        pipeline(TASK, device="cpu")
    assert str(tmp_path / "elsewhere") in str(err.value)


def test_demo_prints_the_line_that_makes_its_model_the_default(folder, monkeypatch):
    from pipelines.caption_seg_pipeline import DEFAULT_MODEL_DIR, default_model_dir
    from scripts.demo import DEFAULT_MODEL_DIR as DEMO_DEFAULT, default_model_hint

    monkeypatch.delenv("CAPTIONSEG_DEFAULT_MODEL", raising=False)
    assert DEMO_DEFAULT == DEFAULT_MODEL_DIR and default_model_hint(DEFAULT_MODEL_DIR) is None
    hint = default_model_hint(folder)
    assert hint == f"export CAPTIONSEG_DEFAULT_MODEL={folder.resolve()}"
    # The printed line, once run, is what the pipeline's default reads.
    monkeypatch.setenv("CAPTIONSEG_DEFAULT_MODEL", hint.split("=", 1)[1])
    assert default_model_dir() == folder.resolve() and default_model_hint(folder) is None


@pytest.fixture(scope="module")
def unet_parts(tmp_path_factory):
    torch.manual_seed(0)
    config = UnetConfig(encoder_name="tu-test_efficientnet", encoder_depth=3, decoder_channels=[16, 8, 8],
                        id2label=dict(enumerate(["background", "circle", "square"])), train_crop_size=[32, 32])
    model, processor = UnetForSemanticSegmentation(config), SegmentationImageProcessor.for_model(config)
    folder = tmp_path_factory.mktemp("unet")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor, folder


def test_a_segmentation_model_object_is_refused_clearly(unet_parts, model_parts):
    model, processor, _ = unet_parts
    _, tokenizer, _ = model_parts
    with pytest.raises(ValueError, match="needs a segmentation-aware captioner .*'captionseg_unet'"):
        pipeline(TASK, model=model, tokenizer=tokenizer, image_processor=processor, device="cpu")


def test_a_segmentation_model_folder_is_refused_clearly(unet_parts):
    _, _, folder = unet_parts  # a model and an image processor, but no tokenizer
    with pytest.raises(ValueError, match="needs a segmentation-aware captioner .*'captionseg_unet'"):
        pipeline(TASK, model=str(folder), device="cpu")


def test_a_caption_seg_folder_without_its_tokenizer_is_refused_clearly(tmp_path):
    folder = save_tiny_caption_seg_model(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(ValueError, match="needs the model's tokenizer and image processor"):
        pipeline(TASK, model=str(folder), device="cpu")


# --------------------------------------------------------------------------------------------------------------------
# Consistency of a caption with a segmentation

SHAPES = ["background", "circle", "square", "triangle", "diamond", "cross", "star"]


@pytest.mark.parametrize(
    "caption,present,named_but_absent,present_but_unnamed",
    [
        ("a red circle above a star.", ["background", "circle"], ["star"], []),
        ("two circles and three crosses.", ["background", "circle", "cross"], [], []),  # plurals: -s and -es
        ("A Circle.", ["circle", "square"], [], ["square"]),  # case does not matter
        ("a circular stain at the start", ["circle", "star"], [], ["circle", "star"]),  # no partial words
        ("a square on a grey background", ["background", "square"], [], []),  # background named: still ignored
        ("a triangle", ["background"], ["triangle"], []),  # background present and unnamed: ignored
        ("", ["background", "diamond", "star"], [], ["diamond", "star"]),
    ],
)
def test_consistency_report_cases(caption, present, named_but_absent, present_but_unnamed):
    assert consistency_report(caption, present, SHAPES) == {
        "named_but_absent": named_but_absent, "present_but_unnamed": present_but_unnamed,
    }


def test_consistency_of_multi_word_labels():
    classes = ["void", "road", "traffic light", "traffic_sign", "bus"]
    report = consistency_report("two traffic lights by the road, a bus", ["void", "road", "traffic light"], classes)
    assert report == {"named_but_absent": ["bus"], "present_but_unnamed": []}
    # "light" alone does not name "traffic light"; underscores separate words like spaces.
    report = consistency_report("a light on a sign", ["traffic light", "traffic_sign"], classes)
    assert report == {"named_but_absent": [], "present_but_unnamed": ["traffic light", "traffic_sign"]}
    report = consistency_report("traffic signs", ["traffic light", "traffic_sign"], classes)
    assert report == {"named_but_absent": [], "present_but_unnamed": ["traffic light"]}
    assert is_named({"traffic", "signs"}, "traffic_sign") and not is_named({"traffic"}, "traffic_sign")
    assert not is_named({"a", "b"}, "___")  # a label without words is never named
    # Classes left out by the caller's own list of unnamed classes.
    assert consistency_report("a road", ["road", "bus"], classes, unnamed=["bus"]) == {
        "named_but_absent": [], "present_but_unnamed": [],
    }


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_gives_the_cpu_results(folder, pipe):
    images = photos(4, sizes=((50, 70), (40, 40)))
    gpu = pipeline(TASK, model=str(folder), device=0)
    assert gpu.model.device.type == "cuda"
    gpu_out, cpu_out = gpu(images, batch_size=2, region_captions=True), pipe(images, region_captions=True)
    for g, c in zip(gpu_out, cpu_out):
        assert (g["class_map"] == c["class_map"]).mean() > 0.99  # GPU convolutions round differently
        assert g["caption"] == c["caption"]
        assert [s["label"] for s in g["segments"]] == [s["label"] for s in c["segments"]]
