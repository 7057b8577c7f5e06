"""The segmentation-aware captioner: segment tokens, the joint loss and its gradients, shared encoder passes, where
the segment tokens come from, region captions, batched generation, and saving / loading in a fresh process."""

import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from datasets_cfg.shapes import generate_scene
from models.caption_seg_model import CaptionSegModel, load_caption_seg, save_caption_seg
from models.segment_tokens import GEOMETRY_FEATURES, SegmentTokens, mask_pool, segment_geometry
from tests.caption_seg_factory import build_tiny_caption_seg_model
from tests.conftest import REPO
from tests.image_factory import photo_array

SIZE = 64  # the tiny model's image size


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer, processor) in eval mode; tests that change it take a copy."""
    return build_tiny_caption_seg_model()


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    # Noise photos of different colours: the random tiny model gives them different captions (shapes scenes at
    # random weights all get the same one, which would let "batch == singles" pass trivially).
    return [Image.fromarray(photo_array(w=SIZE, h=SIZE, seed=s)) for s in (0, 3, 4, 5)]


def pixels(processor, images) -> torch.Tensor:
    return processor(images, return_tensors="pt")["pixel_values"]


def until_eos(ids: torch.Tensor, eos: int) -> list[int]:
    """A generated row up to its <eos> (batched rows are padded after it, single ones are not)."""
    ids = ids.tolist()
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def shapes_batch(processor, n=2, seed_offset=0):
    """Shapes scenes with their masks through the model's processor: pixel_values and segmentation_labels."""
    scenes = [generate_scene(i + seed_offset, image_size=SIZE) for i in range(n)]
    batch = processor([s.image for s in scenes], segmentation_maps=[s.mask for s in scenes], return_tensors="pt")
    return batch["pixel_values"], batch["labels"]


# --------------------------------------------------------------------------------------------------------------------
# Segment tokens


def test_segment_geometry_of_a_hand_made_mask():
    segments = torch.zeros(1, 3, 4, 8)
    segments[0, 0, 0:2, 4:8] = 1  # a 2 x 4 block in the top right
    segments[0, 2, 3, 0] = 1  # one pixel, bottom left; class 1 is empty
    geometry = segment_geometry(segments)
    assert geometry.shape == (1, 3, GEOMETRY_FEATURES)
    # area (sqrt), centroid x, y, spread x, y, box x0, y0, x1, y1 in [0, 1] image coordinates (pixel centres at +0.5)
    block = [(8 / 32) ** 0.5, 6 / 8, 1 / 4, 1.25 ** 0.5 / 8, 0.5 / 4, 4 / 8, 0.0, 1.0, 2 / 4]
    pixel = [(1 / 32) ** 0.5, 0.5 / 8, 3.5 / 4, 0.0, 0.0, 0.0, 3 / 4, 1 / 8, 1.0]
    torch.testing.assert_close(geometry[0, 0], torch.tensor(block))
    torch.testing.assert_close(geometry[0, 2], torch.tensor(pixel))
    assert torch.equal(geometry[0, 1], torch.zeros(GEOMETRY_FEATURES))


def test_mask_pool_is_the_mean_over_the_segment():
    torch.manual_seed(0)
    features = torch.randn(1, 2, 4, 4)
    segments = torch.zeros(1, 2, 4, 4)
    segments[0, 0, 1, 1] = segments[0, 0, 2, 3] = segments[0, 0, 3, 0] = 1
    segments[0, 1, :, :2] = 0.5  # soft: a weighted mean
    segments[0, 1, 0, 3] = 1.0
    pooled = mask_pool(segments, features)
    expected0 = (features[0, :, 1, 1] + features[0, :, 2, 3] + features[0, :, 3, 0]) / 3
    expected1 = (0.5 * features[0, :, :, :2].sum(dim=(1, 2)) + features[0, :, 0, 3]) / (0.5 * 8 + 1)
    torch.testing.assert_close(pooled[0, 0], expected0)
    torch.testing.assert_close(pooled[0, 1], expected1)


def test_mask_pool_onto_a_coarser_grid_weights_regions_by_the_share_covered():
    torch.manual_seed(0)
    regions = torch.randn(1, 3, 2, 2)  # each region is a 2 x 2 block of the 4 x 4 mask
    segment = torch.zeros(1, 1, 4, 4)
    segment[0, 0, :2, :2] = 1  # the whole top-left region
    segment[0, 0, 0, 2] = 1  # a quarter of the top-right one
    expected = (regions[0, :, 0, 0] * 1.0 + regions[0, :, 0, 1] * 0.25) / 1.25
    torch.testing.assert_close(mask_pool(segment, regions)[0, 0], expected)


def test_absent_classes_get_zero_tokens_and_the_min_area_threshold():
    torch.manual_seed(0)
    tokens = SegmentTokens(num_classes=4, pixel_feature_size=5, region_feature_size=6, hidden_size=8,
                           min_area=1 / 16)
    segments = torch.zeros(1, 4, 16, 16)  # 256 pixels: min_area is 16 of them
    segments[0, 0] = 1
    segments[0, 0, :4, :4] = 0
    segments[0, 1, :4, :4] = 1  # 16 pixels: exactly min_area, present
    segments[0, 0, 8, :15] = 0
    segments[0, 2, 8, :15] = 1  # 15 pixels: under min_area, absent; class 3 has no pixel at all
    out, present = tokens(segments, torch.randn(1, 5, 16, 16), torch.randn(1, 6, 4, 4), torch.randn(1, 3, 16, 16))
    assert out.shape == (1, 4, 8)
    assert present.tolist() == [[True, True, False, False]]
    assert torch.equal(out[0, 2:], torch.zeros(2, 8))
    assert (out[0, :2].abs().sum(-1) > 0).all()
    # The tokens of present classes differ.
    assert not torch.allclose(out[0, 0], out[0, 1])


def test_part_norm_keeps_the_class_and_place_from_being_drowned_by_large_features():
    torch.manual_seed(0)
    segments = torch.zeros(1, 2, 16, 16)
    segments[0, 0, 2:6, 2:6] = 1
    segments[0, 1, 10:14, 10:14] = 1
    # Both segments see the same (large) pooled features and colour: only their class and place differ.
    pixel_features, region_map = 300 * torch.ones(1, 5, 16, 16), 300 * torch.ones(1, 6, 4, 4)
    colour = torch.ones(1, 3, 16, 16)
    cosine = {}
    with torch.no_grad():
        for part_norm in (False, True):
            torch.manual_seed(0)
            tokens = SegmentTokens(num_classes=2, pixel_feature_size=5, region_feature_size=6, hidden_size=16,
                                   part_norm=part_norm)
            for module in tokens.modules():  # the small init of the model's _init_weights
                if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                    module.weight.normal_(0.0, 0.02)
            out, _ = tokens(segments, pixel_features, region_map, colour, torch.tensor([[0, 1]]))
            cosine[part_norm] = F.cosine_similarity(out[0, 0], out[0, 1], dim=0).item()
    # The old layout: the features swamp the rest, the two tokens are nearly the same vector.
    assert cosine[False] > 0.999, cosine
    # Normalised parts: the class and place the segmentation gave set the tokens apart.
    assert cosine[True] < 0.95 and 1 - cosine[True] > 100 * (1 - cosine[False]), cosine
    assert hasattr(tokens, "colour_proj") and tokens.feature_proj.in_features == 11


# --------------------------------------------------------------------------------------------------------------------
# The model: loss, gradients, shared encoder passes


def test_loss_parts_and_gradients_reach_every_part(tiny):
    model, tokenizer, processor = tiny
    model = copy.deepcopy(model).train()
    pixel_values, seg_labels = shapes_batch(processor, 2)
    captions = tokenizer(["a red circle above a star.", "a blue square."], padding=True, return_tensors="pt").input_ids
    inputs, labels = captions[:, :-1], captions[:, 1:].masked_fill(captions[:, 1:] == tokenizer.pad_token_id, -100)
    out = model(pixel_values, decoder_input_ids=inputs, labels=labels, segmentation_labels=seg_labels)
    for part in (out.loss, out.caption_loss, out.segmentation_loss, out.attention_penalty):
        assert part is not None and part.ndim == 0 and torch.isfinite(part)
        assert part.requires_grad  # each part trains the model, the attention penalty included
    reg = model.config.decoder.attention_regularization
    torch.testing.assert_close(out.loss, out.caption_loss + reg * out.attention_penalty
                               + model.config.segmentation_loss_weight * out.segmentation_loss)

    def reached(module: torch.nn.Module) -> bool:
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    # The caption loss alone trains the shared encoder, the pooled U-Net features, the joining layers and the
    # decoder, but not the segmentation head: the segments that make the tokens are detached.
    out.caption_loss.backward(retain_graph=True)
    unet, st = model.segmenter.unet, model.segment_tokens
    for name, module in [("encoder", unet.encoder), ("unet decoder", unet.decoder), ("region_proj", model.region_proj),
                         ("caption decoder", model.decoder), ("attention", model.decoder.attention),
                         ("segment tokens: class embedding", st.class_embedding),
                         ("segment tokens: feature_proj", st.feature_proj),
                         ("segment tokens: geometry_proj", st.geometry_proj), ("segment tokens: norm", st.norm)]:
        assert reached(module), name
    assert not reached(unet.segmentation_head)
    model.zero_grad()
    out.loss.backward()
    assert reached(unet.segmentation_head) and reached(unet.encoder) and reached(st.feature_proj)


def test_without_the_attention_penalty_the_loss_is_caption_plus_segmentation(tiny):
    model, tokenizer, processor = tiny
    model = copy.deepcopy(model).train()
    model.config.decoder.attention_regularization = 0.0
    pixel_values, seg_labels = shapes_batch(processor, 2)
    captions = tokenizer(["a red circle above a star.", "a blue square."], padding=True, return_tensors="pt").input_ids
    inputs, labels = captions[:, :-1], captions[:, 1:].masked_fill(captions[:, 1:] == tokenizer.pad_token_id, -100)
    out = model(pixel_values, decoder_input_ids=inputs, labels=labels, segmentation_labels=seg_labels)
    assert out.attention_penalty is None and out.attention_weights is None
    expected = out.caption_loss + model.config.segmentation_loss_weight * out.segmentation_loss
    torch.testing.assert_close(out.loss, expected)
    # Asked for, the weights still come back (for pictures), and still do not enter the loss.
    out = model(pixel_values, decoder_input_ids=inputs, labels=labels, segmentation_labels=seg_labels,
                output_attentions=True)
    assert out.attention_weights is not None and out.attention_penalty is not None
    expected = out.caption_loss + model.config.segmentation_loss_weight * out.segmentation_loss
    torch.testing.assert_close(out.loss, expected)


def test_several_captions_per_image_share_its_encoder_pass(tiny, photos):
    model, tokenizer, processor = tiny
    px = pixels(processor, photos[:2])
    ids = tokenizer(["a red circle", "two shapes: a star", "a blue square above a cross"], padding=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        shared = model(px, decoder_input_ids=ids, caption_image_index=torch.tensor([0, 0, 1]), output_attentions=True)
        repeated = model(px[[0, 0, 1]], decoder_input_ids=ids, output_attentions=True)
    assert shared.logits.shape[:2] == ids.shape and shared.segmentation_logits.shape[0] == 2
    torch.testing.assert_close(shared.logits, repeated.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared.attention_weights, repeated.attention_weights, rtol=1e-5, atol=1e-5)
    assert torch.equal(shared.memory_mask, repeated.memory_mask)
    assert not torch.allclose(shared.logits[1], shared.logits[2], atol=1e-3)  # the two images do differ
    with pytest.raises(ValueError, match="caption_image_index"):
        model(px, decoder_input_ids=ids)


def test_without_segment_tokens_the_memory_is_the_regions_only(tiny, photos):
    model, tokenizer, processor = tiny
    px = pixels(processor, photos[:2])
    num_classes = len(model.config.id2label)
    with torch.no_grad():
        aware = model.encode(px, segment_aware=True)
        plain = model.encode(px, segment_aware=False)
    rows, cols = plain.region_grid
    assert plain.memory.shape == (2, rows * cols, model.config.hidden_size) and plain.memory_mask is None
    assert plain.segments is None  # not made when nothing uses them
    with torch.no_grad():
        regions = model.predict(px, segment_aware=False, region_captions=True, num_beams=1, max_new_tokens=3)
    assert regions.region_sequences is not None and len(regions.region_class_ids) > 0
    assert aware.memory.shape == (2, rows * cols + num_classes, model.config.hidden_size)
    torch.testing.assert_close(aware.memory[:, : rows * cols], plain.memory)
    assert aware.memory_mask[:, : rows * cols].all()
    assert torch.equal(aware.memory_mask[:, rows * cols:], model.segment_tokens.presence(aware.segments))
    torch.testing.assert_close(aware.segmentation_logits, plain.segmentation_logits)
    ids = tokenizer(["a red circle", "a star"], padding=True, return_tensors="pt").input_ids
    with torch.no_grad():
        with_tokens = model(px, decoder_input_ids=ids).logits
        without = model(px, decoder_input_ids=ids, segment_aware=False).logits
    assert not torch.allclose(with_tokens, without, atol=1e-3)
    assert model.config.segment_aware  # None means the config's default
    with torch.no_grad():
        torch.testing.assert_close(model(px, decoder_input_ids=ids, segment_aware=None).logits, with_tokens)


def test_a_model_trained_without_segment_tokens_refuses_them(photos):
    model, tokenizer, processor = build_tiny_caption_seg_model(segment_aware=False)
    px = pixels(processor, photos[:1])
    ids = tokenizer(["a red circle"], return_tensors="pt").input_ids
    for call in (lambda: model.encode(px, segment_aware=True), lambda: model.generate(px, segment_aware=True),
                 lambda: model(px, decoder_input_ids=ids, segment_aware=True),
                 lambda: model.predict(px, segment_aware=True)):
        with pytest.raises(ValueError, match="without segment tokens"):
            call()
    assert model.encode(px).memory_mask is None  # its default: regions only
    assert model.generate(px, segment_aware=False).shape[0] == 1


# --------------------------------------------------------------------------------------------------------------------
# Where the segment tokens come from


def caption_loss(model, pixel_values, seg_labels, ids) -> torch.Tensor:
    torch.manual_seed(0)  # the same dropout masks in every call
    labels = ids[:, 1:].masked_fill(ids[:, 1:] == 0, -100)
    with torch.no_grad():
        out = model(pixel_values, decoder_input_ids=ids[:, :-1], labels=labels, segmentation_labels=seg_labels)
    return out.caption_loss


def test_training_uses_the_ground_truth_segments_and_inference_the_prediction(tiny):
    model, tokenizer, processor = tiny
    model = copy.deepcopy(model)
    pixel_values, truth = shapes_batch(processor, 2)
    _, other = shapes_batch(processor, 2, seed_offset=7)  # other scenes' masks: other classes in other places
    assert not torch.equal(truth, other)
    ids = tokenizer(["a red circle above a star.", "a blue square."], padding=True, return_tensors="pt").input_ids
    num_classes = len(model.config.id2label)

    model.train()
    assert model.config.train_segments_from == "ground_truth"
    enc = model.encode(pixel_values, segmentation_labels=truth)
    valid = truth != 255
    expected = F.one_hot(truth.clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2) * valid[:, None]
    assert torch.equal(enc.segments, expected.float())
    # Same image, other masks: other segment tokens, another caption loss (and the same masks give the same loss).
    assert caption_loss(model, pixel_values, truth, ids) == caption_loss(model, pixel_values, truth, ids)
    assert caption_loss(model, pixel_values, truth, ids) != caption_loss(model, pixel_values, other, ids)

    model.config.train_segments_from = "predicted"
    assert caption_loss(model, pixel_values, truth, ids) == caption_loss(model, pixel_values, other, ids)
    model.config.train_segments_from = "ground_truth"

    model.eval()  # inference: the model's own arg-max, whatever labels come along
    enc = model.encode(pixel_values, segmentation_labels=truth)
    predicted = F.one_hot(enc.segmentation_logits.argmax(1), num_classes).permute(0, 3, 1, 2).float()
    assert torch.equal(enc.segments, predicted) and not torch.equal(enc.segments, expected.float())
    assert caption_loss(model, pixel_values, truth, ids) == caption_loss(model, pixel_values, other, ids)


# --------------------------------------------------------------------------------------------------------------------
# Prediction and generation


def test_predict_gives_one_region_caption_per_present_class_but_background(tiny, photos):
    model, tokenizer, processor = tiny
    px = pixels(processor, photos)
    pred = model.predict(px, region_captions=True)
    class_maps = pred.segmentation_logits.argmax(1)
    min_area = model.config.segment_min_area
    expected = [(b, k) for b in range(len(photos)) for k in range(1, len(model.config.id2label))
                if (class_maps[b] == k).float().mean() >= min_area]
    assert model.config.id2label[0] == "background"
    assert expected and (class_maps == 0).any()  # background is predicted somewhere, yet gets no region caption
    got = list(zip(pred.region_image_index.tolist(), pred.region_class_ids.tolist()))
    assert got == expected
    assert pred.region_sequences.shape[0] == len(expected)
    assert (pred.region_sequences[:, 0] == tokenizer.bos_token_id).all()
    assert pred.sequences.shape[0] == len(photos)
    # The captions of predict are those of generate.
    generated = model.generate(px)
    for a, b in zip(pred.sequences, generated):
        assert until_eos(a, tokenizer.eos_token_id) == until_eos(b, tokenizer.eos_token_id)


def test_predict_attention_over_regions_and_present_segments(tiny, photos):
    model, tokenizer, processor = tiny
    pred = model.predict(pixels(processor, photos[:2]), return_attention=True)
    rows, cols = pred.region_grid
    B, T = pred.sequences.shape
    assert pred.attention_weights.shape == (B, T - 1, rows * cols + len(model.config.id2label))
    torch.testing.assert_close(pred.attention_weights.sum(-1), torch.ones(B, T - 1))
    absent = ~pred.memory_mask[:, None, :].expand_as(pred.attention_weights)
    assert absent.any() and torch.all(pred.attention_weights[absent] == 0)


def test_a_batch_generates_what_single_images_generate(tiny, photos):
    model, tokenizer, processor = tiny
    eos = tokenizer.eos_token_id
    batched = model.generate(pixels(processor, photos), num_beams=2)
    singles = [model.generate(pixels(processor, [image]), num_beams=2)[0] for image in photos]
    assert len({tuple(until_eos(s, eos)) for s in singles}) > 1  # the images really get different captions
    for b, s in zip(batched, singles):
        assert until_eos(b, eos) == until_eos(s, eos)


def test_a_model_of_the_old_token_layout_saves_and_loads_unchanged(photos, tmp_path):
    model, tokenizer, processor = build_tiny_caption_seg_model(segment_part_norm=False)
    assert not hasattr(model.segment_tokens, "part_norms")
    save_caption_seg(model, tokenizer, processor, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["segment_part_norm"]  # as saved before the option existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded, _, _ = load_caption_seg(tmp_path)
    assert loaded.config.segment_part_norm is False
    assert loaded.state_dict().keys() == model.state_dict().keys()
    px = pixels(processor, photos)
    assert torch.equal(loaded.generate(px, num_beams=2), model.generate(px, num_beams=2))


def test_save_and_load_give_identical_captions(tiny, photos, tmp_path):
    model, tokenizer, processor = tiny
    assert model.config.segment_part_norm  # new models get the normalised token parts
    save_caption_seg(model, tokenizer, processor, tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "caption_seg_model.py",
            "segment_tokens.py", "lstm_decoder.py", "unet.py"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "caption_seg"
    assert config["auto_map"]["AutoModel"] == "caption_seg_model.CaptionSegModel"
    loaded, loaded_tokenizer, loaded_processor = load_caption_seg(tmp_path)
    assert isinstance(loaded, CaptionSegModel) and not loaded.training
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert loaded_processor.size == processor.size
    assert loaded.config.id2label == model.config.id2label and loaded.config.segment_aware
    px = pixels(processor, photos)
    assert torch.equal(loaded.generate(px, num_beams=2), model.generate(px, num_beams=2))
    a, b = loaded.predict(px, region_captions=True), model.predict(px, region_captions=True)
    assert torch.equal(a.region_sequences, b.region_sequences)


def test_loads_with_trust_remote_code_in_a_fresh_process_without_the_project(tiny, photos, tmp_path):
    model, tokenizer, processor = tiny
    folder = save_caption_seg(model, tokenizer, processor, tmp_path / "model")
    paths = []
    for i, image in enumerate(photos):
        paths.append(str(tmp_path / f"photo{i}.png"))
        image.save(paths[-1])
    images = [Image.open(p).convert("RGB") for p in paths]
    expected = model.generate(pixels(processor, images), num_beams=2).tolist()
    script = f"""
import sys
# This project is installed in editable mode: drop its import hook, and any path to it, so that only the folder's
# own code files can be used.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
import importlib.util, json
from pathlib import Path
repo = Path({str(REPO)!r})
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != repo]
from PIL import Image
from transformers import AutoImageProcessor, AutoModel
assert importlib.util.find_spec("models") is None and importlib.util.find_spec("pipelines") is None
folder = {str(folder)!r}
model = AutoModel.from_pretrained(folder, trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
images = [Image.open(p).convert("RGB") for p in {paths!r}]
ids = model.generate(processor(images, return_tensors="pt")["pixel_values"], num_beams=2)
print(json.dumps({{
    "ids": ids.tolist(),
    "model_module": type(model).__module__,
    "processor_module": type(processor).__module__,
    "project_imported": any(m.split(".")[0] in ("models", "pipelines", "datasets_cfg") for m in sys.modules),
    "repo_on_path": any(Path(p or ".").resolve() == repo for p in sys.path),
    "training": model.training,
}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model_module"].startswith("transformers_modules")
    assert report["processor_module"].startswith("transformers_modules")
    assert not report["project_imported"] and not report["repo_on_path"] and not report["training"]
    assert report["ids"] == expected


def test_bad_configurations_raise_value_errors(tiny):
    model, _, _ = tiny
    config = model.config.to_dict()
    for bad, match in [({"train_segments_from": "oracle"}, "train_segments_from"),
                       ({"hidden_size": 33}, "encoder_hidden_size"), ({"region_stage": 9}, "region_stage"),
                       ({"label_smoothing": 1.0}, "label_smoothing"), ({"max_length": 1}, "max_length")]:
        with pytest.raises(ValueError, match=match):
            type(model.config)(**{**config, **bad})


# ---------------------------------------------------------------------------------------------- instance segments
def test_instance_segments_split_each_class_into_its_connected_regions():
    from models.segment_tokens import instance_segments

    class_map = torch.zeros(1, 8, 8, dtype=torch.long)
    class_map[0, 0:2, 0:2] = 1  # a 2x2 region of class 1
    class_map[0, 5:8, 5:8] = 1  # a 3x3 region of class 1, apart from the first
    class_map[0, 0:3, 5:8] = 2  # a 3x3 region of class 2
    class_map[0, 7, 0] = 255  # ignored: in no segment
    segments, classes = instance_segments(class_map, num_classes=3, max_segments=5, min_pixels=1)
    assert segments.shape == (1, 5, 8, 8)
    # Largest first, ties by class: background (41 px), class 1 (9), class 2 (9), class 1 (4), then an empty slot.
    assert segments.sum(dim=(2, 3)).tolist() == [[41.0, 9.0, 9.0, 4.0, 0.0]]
    assert classes.tolist() == [[0, 1, 2, 1, 0]]
    assert bool(segments[0, 1, 6, 6]) and bool(segments[0, 3, 0, 0]) and not bool(segments[0, :, 7, 0].any())
    assert torch.equal(segments[0, :4].sum(0) + (class_map[0] == 255).float(), torch.ones(8, 8))
    # Too small regions and those past max_segments are dropped.
    segments, classes = instance_segments(class_map, 3, max_segments=2, min_pixels=5)
    assert segments.sum(dim=(2, 3)).tolist() == [[41.0, 9.0]] and classes.tolist() == [[0, 1]]


def test_instance_units_give_a_token_and_a_region_caption_per_connected_segment():
    model, _, processor = build_tiny_caption_seg_model()
    model.config.segment_units, model.config.max_segments = "instance", 6
    # Two squares of one class far apart, on background: three segments, two of them squares.
    mask = torch.zeros(1, 64, 64, dtype=torch.long)
    mask[0, 4:20, 4:20] = 2
    mask[0, 40:60, 40:60] = 2
    pixels = processor([generate_scene(0, image_size=64).image], return_tensors="pt")["pixel_values"]
    model.train()
    enc = model.encode(pixels, segmentation_labels=mask)  # training with ground-truth segments
    model.eval()
    present = enc.memory_mask[0, -6:]
    assert present.tolist() == [True, True, True, False, False, False]
    assert enc.segment_classes[0, :3].tolist() == [0, 2, 2]
    regions = model._region_memory(enc, skip_classes={0})
    memory, masks, image_index, class_ids = regions
    assert class_ids.tolist() == [2, 2] and image_index.tolist() == [0, 0]
    # Each square's region caption sees its own token only, and only the regions its square covers.
    rows, cols = enc.region_grid
    assert masks[:, rows * cols:].tolist() == [[False, True, False, False, False, False],
                                               [False, False, True, False, False, False]]
    assert not torch.equal(masks[0, : rows * cols], masks[1, : rows * cols])


# ------------------------------------------------------------------------------------ relations among segment tokens
def two_squares(left: tuple[int, int], right: tuple[int, int], size: int = 32) -> torch.Tensor:
    """(1, 3, size, size) masks: a 6x6 square at ``left`` (row, col), a 4x8 box at ``right``, and an empty slot."""
    segments = torch.zeros(1, 3, size, size)
    segments[0, 0, left[0]:left[0] + 6, left[1]:left[1] + 6] = 1
    segments[0, 1, right[0]:right[0] + 4, right[1]:right[1] + 8] = 1
    return segments


def relation_layer():
    from models.segment_relations import SegmentRelationLayer

    torch.manual_seed(0)
    return SegmentRelationLayer(hidden_size=32, num_heads=4).eval()


def pair_geometry_of(segments: torch.Tensor) -> torch.Tensor:
    from models.segment_relations import pairwise_geometry

    return pairwise_geometry(segment_geometry(segments))


def test_pairwise_geometry_is_signed_and_relative():
    from models.segment_relations import pairwise_geometry

    pair = pairwise_geometry(segment_geometry(two_squares((4, 2), (20, 20))))  # segment 1 is right of and below 0
    dx, dy, adx, ady, log_w, log_h = pair[0, 0, 1].tolist()
    assert dx == pytest.approx((24 - 5) / 32) and dy == pytest.approx((22 - 7) / 32)
    assert adx == pytest.approx(dx) and ady == pytest.approx(dy)
    assert log_w == pytest.approx(math.log(8 / 6)) and log_h == pytest.approx(math.log(4 / 6))
    torch.testing.assert_close(pair[0, 1, 0], torch.tensor([-dx, -dy, adx, ady, -log_w, -log_h]))
    assert torch.equal(pair[0, 0, 0], torch.zeros(6))


def test_relation_layer_is_permutation_equivariant_and_ignores_absent_tokens():
    layer = relation_layer()
    geometry = pair_geometry_of(two_squares((4, 2), (20, 20)))
    present = torch.tensor([[True, True, False]])
    tokens = torch.randn(1, 3, 32)
    out = layer(tokens, geometry, present)
    assert out.shape == (1, 3, 32) and torch.equal(out[0, 2], torch.zeros(32))
    assert not torch.allclose(out[0, :2], tokens[0, :2])
    order = [1, 2, 0]
    permuted = geometry[:, order][:, :, order]
    torch.testing.assert_close(layer(tokens[:, order], permuted, present[:, order]), out[:, order])
    changed = tokens.clone()
    changed[0, 2] = 100.0  # an absent token's content reaches no present token
    torch.testing.assert_close(layer(changed, geometry, present), out)


def test_relation_layer_sees_relative_places_not_absolute_ones():
    layer = relation_layer()
    present = torch.tensor([[True, True, False]])
    tokens = torch.randn(1, 3, 32)
    out = layer(tokens, pair_geometry_of(two_squares((4, 2), (20, 20))), present)
    # Both segments moved together: the same relative layout, the same tokens.
    moved = layer(tokens, pair_geometry_of(two_squares((6, 5), (22, 23))), present)
    torch.testing.assert_close(moved, out)
    # Mirrored left-right (segment 1 now left of segment 0): different tokens.
    mirrored = layer(tokens, pair_geometry_of(two_squares((4, 2), (20, 20)).flip(-1)), present)
    assert (mirrored - out).abs().max() > 1e-3


def test_relation_layers_in_the_model_train_save_and_load(photos, tmp_path):
    model, tokenizer, processor = build_tiny_caption_seg_model(segment_units="instance", max_segments=4,
                                                               segment_relation_layers=2, segment_relation_heads=4)
    assert len(model.segment_tokens.relations) == 2
    pixel_values, seg_labels = shapes_batch(processor, 2)
    captions = tokenizer(["a red circle above a star.", "a blue square."], padding=True, return_tensors="pt").input_ids
    inputs, labels = captions[:, :-1], captions[:, 1:].masked_fill(captions[:, 1:] == tokenizer.pad_token_id, -100)
    model.train()
    out = model(pixel_values, decoder_input_ids=inputs, labels=labels, segmentation_labels=seg_labels)
    out.caption_loss.backward()
    for name, param in model.segment_tokens.relations.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    model.eval()
    folder = save_caption_seg(model, tokenizer, processor, tmp_path / "model")
    assert (folder / "segment_relations.py").is_file()
    loaded, _, _ = load_caption_seg(folder)
    assert loaded.config.segment_relation_layers == 2
    px = pixels(processor, photos)
    assert torch.equal(loaded.generate(px, num_beams=2), model.generate(px, num_beams=2))
    for bad, match in [({"segment_relation_layers": -1}, "segment_relation_layers"),
                       ({"segment_relation_layers": 1, "segment_relation_heads": 5},
                        "multiple of segment_relation_heads")]:
        with pytest.raises(ValueError, match=match):
            type(model.config)(**{**model.config.to_dict(), **bad})


def test_segmenter_with_the_image_skip_trains_saves_and_loads(photos, tmp_path):
    """The caption-seg model runs the U-Net's encoder and decoder itself; the full-resolution skip must work there."""
    model, tokenizer, processor = build_tiny_caption_seg_model(image_skip_channels=4)
    assert model.config.segmenter.decoder_image_skip_channels == 4
    pixel_values, seg_labels = shapes_batch(processor, 2)
    captions = tokenizer(["a red circle.", "a blue square."], padding=True, return_tensors="pt").input_ids
    inputs, labels = captions[:, :-1], captions[:, 1:].masked_fill(captions[:, 1:] == tokenizer.pad_token_id, -100)
    model.train()
    out = model(pixel_values, decoder_input_ids=inputs, labels=labels, segmentation_labels=seg_labels)
    assert out.segmentation_logits.shape[-2:] == pixel_values.shape[-2:]
    out.segmentation_loss.backward()
    stem = model.segmenter.unet.decoder.image_stem[0].weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    model.eval()
    folder = save_caption_seg(model, tokenizer, processor, tmp_path / "model")
    assert (folder / "unet_image_skip.py").is_file()
    loaded, _, _ = load_caption_seg(folder)
    px = pixels(processor, photos)
    assert torch.equal(loaded.generate(px, num_beams=2), model.generate(px, num_beams=2))
