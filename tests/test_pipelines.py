"""The custom pipelines (pipelines/): registered tasks built by ``transformers.pipeline`` from saved model folders,
inputs of every kind, batches equal to single calls, attention maps, class maps at the original resolution, and
clear errors for bad files."""


import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY

import pipelines
from datasets_cfg.image_io import to_rgb
from datasets_cfg.shapes import generate_scene
from models.caption_report import attention_maps, generate_captions
from models.caption_tokenizer import train_caption_tokenizer
from models.captioner import build_captioner, load_captioner, save_captioner
from models.segmentation_image_processor import SegmentationImageProcessor
from models.sliding_window import predict_segmentation
from models.unet import UnetConfig, UnetForSemanticSegmentation
from pipelines import ImageCaptioningPipeline, SemanticSegmentationPipeline
from tests.caption_words import caption_words_match
from tests.image_factory import OPENED_MODE, photo_array, png_header_only, write_photo

CLASSES = ["background", "circle", "square"]
# A ViT encoder: random tiny CNN encoders give every image the same caption, which would make "batch == singles"
# pass trivially.
VIT = {"patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
DECODERS = {
    "lstm": {"hidden_size": 16, "embedding_size": 8, "attention_size": 8, "initializer_range": 0.5},
    "transformer": {"n_embd": 16, "n_layer": 1, "n_head": 2, "initializer_range": 0.5},
}


@pytest.fixture(scope="module")
def caption_folders(tmp_path_factory):
    tokenizer = train_caption_tokenizer([generate_scene(i).captions for i in range(20)])
    folders = {}
    for decoder, options in DECODERS.items():
        torch.manual_seed(0)
        model, processor = build_captioner(tokenizer, "vit", decoder, image_size=32, encoder_options=VIT,
                                           decoder_options=options, max_length=8, num_beams=2)
        folders[decoder] = save_captioner(model, tokenizer, processor, tmp_path_factory.mktemp(f"captioner-{decoder}"))
    return folders


@pytest.fixture(scope="module")
def captioner(caption_folders):
    return pipeline("image-captioning", model=str(caption_folders["lstm"]), device="cpu")


@pytest.fixture(scope="module")
def segmenter_folder(tmp_path_factory):
    torch.manual_seed(0)
    config = UnetConfig(encoder_name="tu-test_efficientnet", encoder_depth=3, decoder_channels=[16, 8, 8],
                        id2label=dict(enumerate(CLASSES)), train_crop_size=[32, 32])
    folder = tmp_path_factory.mktemp("unet")
    UnetForSemanticSegmentation(config).save_pretrained(folder)
    SegmentationImageProcessor.for_model(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def segmenter(segmenter_folder):
    return pipeline("semantic-segmentation", model=str(segmenter_folder), device="cpu")


def photos(n: int, sizes=((50, 70),)) -> list[Image.Image]:
    """n different RGB photos, cycling through (height, width) sizes."""
    return [Image.fromarray(photo_array(w=sizes[i % len(sizes)][1], h=sizes[i % len(sizes)][0], seed=i))
            for i in range(n)]


# --------------------------------------------------------------------------------------------------------------------
# Registration


def test_tasks_are_registered_and_refuse_to_replace_a_stock_task():
    tasks = PIPELINE_REGISTRY.get_supported_tasks()
    assert {"image-captioning", "semantic-segmentation"} <= set(tasks)
    assert PIPELINE_REGISTRY.check_task("image-captioning")[1]["impl"] is ImageCaptioningPipeline
    assert PIPELINE_REGISTRY.check_task("semantic-segmentation")[1]["impl"] is SemanticSegmentationPipeline
    with pytest.raises(RuntimeError, match="stock pipeline task 'image-segmentation'"):
        pipelines._register("image-segmentation", SemanticSegmentationPipeline, None, "image")


# --------------------------------------------------------------------------------------------------------------------
# Captioning


def test_caption_of_an_image_and_of_its_file_match_the_model(captioner, caption_folders, tmp_path):
    image = photos(1)[0]
    out = captioner(image)
    assert isinstance(captioner, ImageCaptioningPipeline) and captioner.device.type == "cpu"
    assert list(out[0]) == ["generated_text"] and out[0]["generated_text"]
    model, tokenizer, processor = load_captioner(caption_folders["lstm"])
    assert out[0]["generated_text"] == generate_captions(model.eval(), tokenizer, processor, [image])[0]
    image.save(tmp_path / "photo.png")
    assert captioner(str(tmp_path / "photo.png")) == out
    assert captioner(tmp_path / "photo.png") == out
    assert captioner(np.asarray(image)) == out


def test_a_batch_of_eight_gives_the_captions_of_eight_single_calls(captioner):
    images = photos(8, sizes=((50, 70), (40, 40), (64, 33)))
    singles = [captioner(image) for image in images]
    assert len({s[0]["generated_text"] for s in singles}) > 1  # the images really get different captions
    assert captioner(images, batch_size=4) == singles
    assert captioner(tuple(images[:3])) == singles[:3]
    assert captioner([]) == []


def test_caption_generation_parameters(captioner, caption_folders):
    image = photos(1)[0]
    model, tokenizer, processor = load_captioner(caption_folders["lstm"])
    pixels = processor([image], return_tensors="pt")["pixel_values"]
    expected = model.eval().generate(pixel_values=pixels, num_beams=1, max_new_tokens=3)
    out = captioner(image, num_beams=1, max_new_tokens=3)
    assert out[0]["generated_text"] == tokenizer.decode(expected[0], skip_special_tokens=True).strip()
    assert len(tokenizer(out[0]["generated_text"], add_special_tokens=False).input_ids) <= 3
    with pytest.raises(ValueError, match="num_beams must be a positive integer"):
        captioner(image, num_beams=0)
    with pytest.raises(ValueError, match="given twice"):
        captioner(image, max_new_tokens=3, generate_kwargs={"max_new_tokens": 4})


def test_gpt2_decoder_caps_max_new_tokens_at_its_positions(caption_folders):
    gpt2 = pipeline("image-captioning", model=str(caption_folders["transformer"]), device="cpu")
    with pytest.raises(ValueError, match="16 positions"):
        gpt2(photos(1)[0], max_new_tokens=40)


@pytest.mark.parametrize("decoder", ["lstm", "transformer"])
def test_attention_maps_per_word(caption_folders, decoder):
    captioner = pipeline("image-captioning", model=str(caption_folders[decoder]), device="cpu")
    images = photos(3)
    out = captioner(images[0], return_attention=True)[0]
    words, maps = out["words"], out["attention_maps"]
    assert words and caption_words_match(words, out["generated_text"])
    assert maps.shape == (len(words), 4, 4)  # 32 px / 8 px patches
    assert np.all(maps >= 0) and np.all(maps.reshape(len(words), -1).sum(1) <= 1 + 1e-5)
    model, tokenizer, processor = load_captioner(caption_folders[decoder])
    ref_words, ref_maps = attention_maps(model.eval(), tokenizer, processor, images[0])
    assert words == ref_words and np.allclose(maps, ref_maps, atol=1e-5)
    batched = captioner(images, return_attention=True, batch_size=2)
    singles = [captioner(image, return_attention=True) for image in images]
    for b, s in zip(batched, singles):
        assert b[0]["words"] == s[0]["words"] and np.allclose(b[0]["attention_maps"], s[0]["attention_maps"], atol=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# Segmentation


def test_segments_and_class_map_at_the_original_resolution(segmenter, segmenter_folder):
    image = photos(1)[0]  # 50 x 70: not a multiple of 32
    out = segmenter(image, return_class_map=True)
    class_map, segments = out["class_map"], out["segments"]
    assert class_map.shape == (50, 70) and class_map.dtype == np.int64
    model = UnetForSemanticSegmentation.from_pretrained(segmenter_folder).eval()
    processor = SegmentationImageProcessor.from_pretrained(segmenter_folder)
    np.testing.assert_array_equal(class_map, predict_segmentation(model, processor, [image])[0])

    present = sorted(np.unique(class_map).tolist())
    assert [s["label"] for s in segments] == [CLASSES[i] for i in present]
    with torch.no_grad():
        logits = model(**processor([image], return_tensors="pt")).logits[0, :, :50, :70]
    confidence = logits.softmax(0).max(0).values.numpy()
    for segment, class_id in zip(segments, present):
        mask = np.asarray(segment["mask"])
        assert segment["mask"].mode == "L" and segment["mask"].size == (70, 50) and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, class_map == class_id)
        assert segment["area"] == pytest.approx((class_map == class_id).mean())
        assert segment["score"] == pytest.approx(confidence[class_map == class_id].mean(), abs=1e-5)
    assert sum(s["area"] for s in segments) == pytest.approx(1.0)
    # Without return_class_map: the stock image-segmentation shape, a list of segments.
    plain = segmenter(image)
    assert [s["label"] for s in plain] == [s["label"] for s in segments] and set(plain[0]) == {"label", "score", "area", "mask"}


def test_a_batch_of_mixed_sizes_gives_what_single_calls_give(segmenter):
    images = photos(8, sizes=((50, 70), (64, 64), (33, 45)))
    singles = [segmenter(image, return_class_map=True) for image in images]
    batched = segmenter(images, batch_size=4, return_class_map=True)
    assert len(batched) == 8
    for b, s, image in zip(batched, singles, images):
        assert b["class_map"].shape == (image.height, image.width)
        np.testing.assert_array_equal(b["class_map"], s["class_map"])
        assert [x["score"] for x in b["segments"]] == pytest.approx([x["score"] for x in s["segments"]], abs=1e-5)


def test_sliding_window_inference(segmenter, segmenter_folder):
    image = photos(1, sizes=((70, 90),))[0]
    out = segmenter(image, mode="slide", return_class_map=True)
    model = UnetForSemanticSegmentation.from_pretrained(segmenter_folder).eval()
    processor = SegmentationImageProcessor.from_pretrained(segmenter_folder)
    expected = predict_segmentation(model, processor, [image], mode="slide", window=32)[0]
    np.testing.assert_array_equal(out["class_map"], expected)
    with pytest.raises(ValueError, match="mode must be one of"):
        segmenter(image, mode="tiles")


def test_multi_scale_flip_tta(segmenter, segmenter_folder):
    image = photos(1, sizes=((70, 90),))[0]
    out = segmenter(image, scales=(0.75, 1.25), flip=True, return_class_map=True)
    model = UnetForSemanticSegmentation.from_pretrained(segmenter_folder).eval()
    processor = SegmentationImageProcessor.from_pretrained(segmenter_folder)
    expected = predict_segmentation(model, processor, [image], scales=(0.75, 1.25), flip=True)[0]
    np.testing.assert_array_equal(out["class_map"], expected)
    with pytest.raises(ValueError, match="scale"):
        segmenter(image, scales=(0,))
    # The pipeline passes the scales to the model (not only to the reference call above).
    sizes = []
    original = segmenter.model.forward
    segmenter.model.forward = lambda pixel_values, **kw: sizes.append(tuple(pixel_values.shape[-2:])) or original(
        pixel_values=pixel_values, **kw)
    try:
        segmenter(image, scales=(0.5, 1.0))
    finally:
        del segmenter.model.forward
    assert len(sizes) == 2 and sizes[0] != sizes[1]


def test_loads_with_trust_remote_code(segmenter_folder):
    segmenter = pipeline("semantic-segmentation", model=str(segmenter_folder), trust_remote_code=True, device=-1)
    assert segmenter.device.type == "cpu" and segmenter(photos(1)[0])[0]["mask"].size == (70, 50)


# --------------------------------------------------------------------------------------------------------------------
# Inputs


@pytest.mark.parametrize("mode,fmt", [("RGBA", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("I;16", "PNG"), ("RGB;16", "PNG"),
                                      ("P", "PNG"), ("CMYK", "JPEG")])
def test_any_image_mode_is_converted_to_rgb(segmenter, captioner, tmp_path, mode, fmt):
    path = write_photo(tmp_path / f"photo.{fmt.lower()}", w=70, h=50, mode=mode, fmt=fmt)
    with Image.open(path) as original:
        assert original.mode == OPENED_MODE.get(mode, mode)
        original.load()  # to_rgb returns an RGB image itself, which must not need its closed file later
        rgb = to_rgb(original)
    out = segmenter(str(path), return_class_map=True)
    assert out["class_map"].shape == (50, 70)
    np.testing.assert_array_equal(out["class_map"], segmenter(rgb, return_class_map=True)["class_map"])
    with Image.open(path) as opened:
        assert captioner(opened) == captioner(rgb)


def test_bad_inputs_raise_value_errors_naming_the_file(segmenter, captioner, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    truncated = tmp_path / "truncated.png"
    Image.fromarray(photo_array(64, 64)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    huge = png_header_only(tmp_path / "huge.png", 9000, 9000)  # 81 MP
    cases = [
        (tmp_path / "missing.jpg", "missing.jpg: image file not found"),
        (text, "notes.png: not an image file"),
        (truncated, "truncated.png: corrupt or truncated"),
        (huge, "huge.png: image is 9000x9000 pixels .* over the limit of 64 MP"),
    ]
    for pipe in (segmenter, captioner):
        for path, message in cases:
            with pytest.raises(ValueError, match=message):
                pipe(str(path))
        with pytest.raises(ValueError, match="notes.png: not an image file"):
            pipe([photos(1)[0], str(text)], batch_size=2)
    with pytest.raises(ValueError, match="over the limit"):
        segmenter(photos(1)[0], max_image_pixels=1000)
    with pytest.raises(ValueError, match="URLs are not downloaded"):
        captioner("https://example.com/photo.jpg")
    with pytest.raises(ValueError, match="expected a PIL image, a local file path or a numpy array"):
        segmenter(42)
    with pytest.raises(ValueError, match="arrays must be uint8"):
        segmenter(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="image mode 'La' cannot be converted to RGB"):
        captioner(Image.new("La", (8, 8)))
    with pytest.raises(ValueError, match="image is 0x5 pixels: it has no pixels"):
        segmenter(Image.new("RGB", (0, 5)))
    with Image.open(write_photo(tmp_path / "closed.png")) as lazy:
        pass  # closed before its pixels were read
    with pytest.raises(ValueError, match="closed.png: its pixels cannot be read: the file it was opened from is "
                                         "closed"):
        captioner(lazy)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_gives_the_cpu_results(caption_folders, segmenter_folder, captioner, segmenter):
    images = photos(4, sizes=((50, 70), (40, 40)))
    gpu_captioner = pipeline("image-captioning", model=str(caption_folders["lstm"]), device=0)
    gpu_segmenter = pipeline("semantic-segmentation", model=str(segmenter_folder), device="cuda:0")
    assert gpu_captioner.model.device.type == "cuda" and gpu_segmenter.model.device.type == "cuda"
    assert gpu_captioner(images, batch_size=2) == captioner(images)
    for g, c in zip(gpu_segmenter(images, batch_size=2, return_class_map=True), segmenter(images, return_class_map=True)):
        assert (g["class_map"] == c["class_map"]).mean() > 0.99  # GPU convolutions round differently
