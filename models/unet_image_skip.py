"""A U-Net decoder whose last block also sees the full-resolution input: smp's ``UnetDecoder`` plus an image skip.

smp's U-Net drops the encoder's stride-1 feature (the input image itself) and upsamples the stride-2 features to
full resolution without any skip connection, so every boundary is drawn from features at half resolution.
Thin parts (a star's tips, a cross's arms, CamVid's poles) and object edges suffer. ``segmentation_models_pytorch``
has no option for a full-resolution skip; this module adds one: a 3x3 convolution stem on the stride-1 feature
(``image_skip_channels`` wide) concatenated to the last decoder block's input, as every other block already
concatenates its encoder skip.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segmentation_models_pytorch.base import modules as md
from segmentation_models_pytorch.base.initialization import initialize_decoder
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder, UnetDecoderBlock


class ImageSkipUnetDecoder(UnetDecoder):
    """``UnetDecoder`` whose last block concatenates a stem of the encoder's stride-1 feature.

    Args:
        encoder_channels: the encoder's ``out_channels``; entry 0 is the stride-1 feature (the input image for
            every encoder but VGG-style ones, whose first stage already runs at full resolution).
        decoder_channels, n_blocks, use_norm, attention_type, interpolation_mode: as for smp's ``UnetDecoder``.
        image_skip_channels: width of the stem's output (the extra skip); > 0.

    ``forward(features)`` takes the encoder's feature list, ``features[0]`` of shape (batch, encoder_channels[0],
    height, width), and returns (batch, decoder_channels[-1], height, width).
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int],
        n_blocks: int,
        image_skip_channels: int,
        use_norm: str = "batchnorm",
        attention_type: str | None = None,
        interpolation_mode: str = "nearest",
    ):
        if image_skip_channels <= 0:
            raise ValueError(f"image_skip_channels must be positive, got {image_skip_channels}")
        super().__init__(
            encoder_channels, decoder_channels, n_blocks=n_blocks, use_norm=use_norm,
            attention_type=attention_type, interpolation_mode=interpolation_mode,
        )
        self.image_stem = md.Conv2dReLU(
            encoder_channels[0], image_skip_channels, kernel_size=3, padding=1, use_norm=use_norm
        )
        self.blocks[-1] = UnetDecoderBlock(
            decoder_channels[-2], image_skip_channels, decoder_channels[-1], use_norm=use_norm,
            attention_type=attention_type, interpolation_mode=interpolation_mode,
        )
        initialize_decoder(self)  # smp's decoder scheme, as smp.Unet applies to its own decoder

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        # The parent drops features[0] and gives its last block no skip. Handing it [x, stem(x), rest...] makes the
        # stem the last block's skip at the stride-1 size (the parent's loop, not a copy of it).
        return super().forward([features[0], self.image_stem(features[0]), *features[1:]])
