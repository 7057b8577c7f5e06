"""--channels-last: the region encoder and the combined model give the same outputs in either memory format (the
U-Net: test_unet.py), their inputs follow the weights' format, and scripts/train.py converts the model of every task
before training."""

import pytest
import torch

import models.caption_seg_task  # noqa: F401  (registers the tasks the spy wraps)
import models.caption_task  # noqa: F401
import models.segmentation_task  # noqa: F401
from models.memory_format import like_weight
from models.region_encoders import CNNRegionEncoderConfig, CNNRegionEncoderModel
from models.task import TASKS
from scripts.train import main
from tests.caption_seg_factory import build_tiny_caption_seg_model

CHANNELS_LAST = torch.channels_last


def is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=CHANNELS_LAST) and not t.is_contiguous()


def test_like_weight_follows_the_weights_memory_format_and_dtype():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)
    assert like_weight(x, conv.weight).is_contiguous()
    conv = conv.to(memory_format=CHANNELS_LAST)
    y = like_weight(x, conv.weight)
    assert is_channels_last(y)
    torch.testing.assert_close(y, x, rtol=0, atol=0)
    z = like_weight(x, conv.weight.to(torch.bfloat16))
    assert z.dtype == torch.bfloat16 and is_channels_last(z)


def _same_outputs_in_both_formats(model, run):
    """run(model) -> tensors; compares them before and after converting the model to channels-last."""
    model.eval()
    with torch.no_grad():
        before = run(model)
        model.to(memory_format=CHANNELS_LAST)
        after = run(model)
    assert any(is_channels_last(p) for p in model.parameters())  # the conversion really happened
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_region_encoder_same_regions_in_either_format():
    torch.manual_seed(0)
    model = CNNRegionEncoderModel(CNNRegionEncoderConfig(backbone="resnet10t", feature_stage=3, image_size=64))
    pixels = torch.randn(2, 3, 64, 64)
    seen = []
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_pre_hook(lambda _m, args: seen.append(is_channels_last(args[0])))
    _same_outputs_in_both_formats(model, lambda m: (m(pixel_values=pixels).last_hidden_state,))
    assert seen == [False, True]  # the images followed the weights into channels-last


def test_caption_seg_model_same_logits_and_captions_in_either_format():
    model, tokenizer, _ = build_tiny_caption_seg_model()
    pixels = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([[tokenizer.bos_token_id, 5, 6, tokenizer.eos_token_id]] * 2)

    def run(m):
        out = m(pixel_values=pixels, labels=labels)
        return out.logits, out.segmentation_logits, m.generate(pixel_values=pixels, num_beams=1)

    _same_outputs_in_both_formats(model, run)


TINY_RUNS = {
    "caption": ["--image-size", "64", "--encoder", "resnet10t", "--decoder-dim", "32", "--embed-dim", "16",
                "--attention-dim", "16", "--num-beams", "1", "--train-encoder-stages", "1"],
    "caption-seg": ["--image-size", "64", "--encoder", "tu-test_efficientnet", "--encoder-depth", "3",
                    "--decoder-channels", "16,8,8", "--region-stage", "-1", "--hidden-size", "32", "--embed-dim",
                    "16", "--decoder-dim", "32", "--attention-dim", "16", "--num-beams", "1"],
    "segment": ["--encoder", "tu-test_efficientnet", "--encoder-depth", "3", "--decoder-channels", "16,16,8"],
}


@pytest.mark.parametrize("task", sorted(TINY_RUNS))
def test_train_converts_the_model_of_every_task(task, tmp_path, cache_dir, monkeypatch):
    built = []
    build_model = TASKS[task].build_model

    def spy(self):
        built.append(build_model(self))
        return built[-1]

    monkeypatch.setattr(TASKS[task], "build_model", spy)
    out = tmp_path / "run"
    argv = ["--task", task, "--dataset", "shapes", "--cache-dir", cache_dir, "--data-set", "num_train=8",
            "--data-set", "num_validation=4", "--data-set", "num_test=0", "--data-set", "image_size=64",
            "--batch-size", "4", "--max-steps", "2", "--no-progress", "--output-dir", str(out),
            "--channels-last", *TINY_RUNS[task]]
    assert main(argv) == 0
    convs = [m.weight for m in built[0].modules() if isinstance(m, torch.nn.Conv2d)]
    # A 1x1 or depthwise kernel is both layouts at once; every weight must be channels-last (a weight left
    # contiguous of any other shape fails this), and some only that.
    assert all(w.is_contiguous(memory_format=CHANNELS_LAST) for w in convs)
    assert any(is_channels_last(w) for w in convs)
    # What it saved loads like any other run's weights (safetensors stores them contiguous).
    from safetensors.torch import load_file

    saved = load_file(str(out / "best" / "model.safetensors"))
    state = built[0].state_dict()
    assert saved.keys() <= state.keys()
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, state[name].to(tensor.dtype), rtol=0, atol=0)
