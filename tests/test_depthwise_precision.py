"""models/depthwise_precision.py: under CPU bf16 autocast the depthwise convolutions run in fp32 and the rest in
bf16; outside autocast nothing changes, and saved models are the same; scripts/train.py --bf16 applies it."""

import logging

import pytest
import torch
from torch import nn

from models.depthwise_precision import is_depthwise, keep_depthwise_convs_fp32
from models.unet import UnetConfig, UnetForSemanticSegmentation
from scripts.train import main
from tests.test_train_resume_and_push import argv


def tiny_unet(encoder="tu-test_efficientnet"):
    torch.manual_seed(0)
    config = UnetConfig(encoder_name=encoder, encoder_depth=3, decoder_channels=[16, 16, 8],
                        id2label={i: str(i) for i in range(3)})
    return UnetForSemanticSegmentation(config).eval()


def output_dtypes(model, x):
    """{module name: output dtype} of every convolution in one bf16-autocast forward pass."""
    seen, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.dtype)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(pixel_values=x)
    for hook in hooks:
        hook.remove()
    return seen


def test_depthwise_convs_run_in_fp32_and_the_others_in_bf16():
    model, x = tiny_unet(), torch.randn(2, 3, 32, 32)
    depthwise = {name for name, m in model.named_modules() if is_depthwise(m)}
    assert depthwise, "the test encoder should have depthwise convolutions"
    assert set(output_dtypes(model, x)[n] for n in depthwise) == {torch.bfloat16}  # autocast's own choice

    assert keep_depthwise_convs_fp32(model) == len(depthwise)
    dtypes = output_dtypes(model, x)
    assert {dtypes[n] for n in depthwise} == {torch.float32}
    others = {dtypes[n] for n in dtypes if n not in depthwise}
    assert others == {torch.bfloat16}


def test_a_kept_conv_computes_the_fp32_convolution_of_its_input():
    conv = nn.Conv2d(8, 8, 5, padding=2, groups=8)
    x = torch.randn(2, 8, 9, 9).bfloat16()
    expected = nn.functional.conv2d(x.float(), conv.weight, conv.bias, padding=2, groups=8)
    assert keep_depthwise_convs_fp32(nn.Sequential(conv)) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_outside_autocast_and_once_saved_nothing_changes(tmp_path):
    model, x = tiny_unet(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(pixel_values=x).logits
    keys = list(model.state_dict())
    count = keep_depthwise_convs_fp32(model)
    kept_types = [type(m) for m in model.modules() if is_depthwise(m)]
    assert keep_depthwise_convs_fp32(model) == count  # a second call wraps nothing twice
    assert [type(m) for m in model.modules() if is_depthwise(m)] == kept_types
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x).logits, before)
    assert list(model.state_dict()) == keys

    model.save_pretrained(tmp_path / "saved")
    loaded = UnetForSemanticSegmentation.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=x).logits, before)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert set(output_dtypes(loaded, x).values()) == {torch.bfloat16}  # the saved model is plain


def test_dense_and_grouped_convs_are_left_alone():
    dense, grouped, depthwise = nn.Conv2d(4, 8, 3), nn.Conv2d(4, 8, 3, groups=2), nn.Conv2d(4, 8, 3, groups=4)
    assert keep_depthwise_convs_fp32(nn.Sequential(dense, grouped, depthwise)) == 1
    assert type(dense) is nn.Conv2d and type(grouped) is nn.Conv2d and type(depthwise) is not nn.Conv2d


@pytest.mark.parametrize("flag, kept", [([], True), (["--bf16-depthwise", "bf16"], False)])
def test_train_bf16_on_cpu_keeps_depthwise_convs_in_fp32_unless_told(tmp_path, cache_dir, caplog, flag, kept):
    with caplog.at_level(logging.INFO):
        assert main(argv("segment", tmp_path / "run", cache_dir, "--epochs", "1", "--bf16", *flag)) == 0
    logged = [r.getMessage() for r in caplog.records if "depthwise convolutions kept in fp32" in r.getMessage()]
    if kept:
        assert len(logged) == 1 and int(logged[0].split(": ")[1].split()[0]) > 0
    else:
        assert not logged
    assert (tmp_path / "run" / "last" / "model.safetensors").is_file()
