"""Segment tokens: one feature vector per class of a segmentation, for a caption decoder to attend over.

A semantic segmentation says *which* classes are in the image and *where*; a caption decoder that attends only over
a grid of image regions has to rediscover both. ``SegmentTokens`` turns a (one-hot) segmentation into one token per
class, so the decoder can attend to "the circle" as one thing:

    token_k = LayerNorm(class_embedding[k] + W_f [mask-pooled features of segment k] + W_g [geometry of segment k])

or, with ``part_norm`` (the default of new models), each part normalised on its own before the sum, and the
segment's mean colour given its own projection:

    token_k = LayerNorm(LN(class_embedding[k]) + LN(W_f [pooled features]) + LN(W_c [mean colour]) + LN(W_g [geometry]))

Why: without it the pooled deep features dominate the sum. In a trained ``make demo`` model their projection had a
norm of about 260 against 0.7 for the class embedding and 4 for the geometry, so after the LayerNorm a token said
little more than the regions it pooled: which class the segmentation found, and where, was lost. Normalising
each part gives each the same weight whatever its input's scale.

- mask-pooled features: the mean, over the segment's pixels, of the U-Net decoder's last feature map (full
  resolution), of the region features (the segment's mask averaged down to the region grid) and of the input
  pixels themselves (the segment's mean colour, which names like "red" depend on);
- geometry: area (square root), centroid, spread and bounding box, in [0, 1] image coordinates, which relations
  such as "to the left of" and "above" depend on.

What a segment is (``CaptionSegConfig.segment_units``):

- ``"class"``: all pixels of one class, one token per class (K tokens); two red circles share one token;
- ``"instance"``: each connected region of one class (``instance_segments``), up to ``max_segments`` tokens
  largest first, each with its class's embedding; two circles get a token each, with their own colour and place.

With ``relation_layers`` > 0 the tokens then pass through that many layers of geometry-aware self-attention
among themselves (``segment_relations.py``), so that each token also carries where the other segments are relative
to it (what "to the left of" compares), and a final LayerNorm.

A segment is *present* when it covers at least ``min_area`` of the image; absent ones (and padding) get a zero
token and a False entry in the presence mask, which the decoder uses as its ``encoder_attention_mask``.

Shapes: ``segments`` (B, S, H, W) float in [0, 1] (one-hot masks), ``segment_classes`` (B, S) class ids,
``pixel_features`` (B, D, H, W), ``region_map`` (B, C, h, w), ``pixel_values`` (B, 3, H, W) -> tokens (B, S, C)
and presence (B, S) bool.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from .segment_relations import SegmentRelationLayer, pairwise_geometry

# area (sqrt), centroid (x, y), spread (x, y), box (x0, y0, x1, y1)
GEOMETRY_FEATURES = 9


def segment_geometry(segments: torch.Tensor) -> torch.Tensor:
    """(B, K, GEOMETRY_FEATURES) geometry of each segment of (B, K, H, W) masks; zeros for an empty segment."""
    B, K, H, W = segments.shape
    dtype = segments.dtype
    ys = (torch.arange(H, device=segments.device, dtype=dtype) + 0.5) / H
    xs = (torch.arange(W, device=segments.device, dtype=dtype) + 0.5) / W
    mass = segments.sum(dim=(2, 3))  # (B, K)
    safe = mass.clamp(min=1e-6)
    row_mass, col_mass = segments.sum(dim=3), segments.sum(dim=2)  # (B, K, H), (B, K, W)
    cy = (row_mass * ys).sum(-1) / safe
    cx = (col_mass * xs).sum(-1) / safe
    sy = ((row_mass * (ys - cy[..., None]) ** 2).sum(-1) / safe).clamp(min=0).sqrt()
    sx = ((col_mass * (xs - cx[..., None]) ** 2).sum(-1) / safe).clamp(min=0).sqrt()
    rows_on, cols_on = row_mass > 0, col_mass > 0

    def extent(on: torch.Tensor, coords: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = torch.where(on, coords, torch.full_like(coords, 2.0)).amin(-1) - 0.5 / size
        last = torch.where(on, coords, torch.full_like(coords, -1.0)).amax(-1) + 0.5 / size
        return first, last

    y0, y1 = extent(rows_on, ys.expand_as(row_mass), H)
    x0, x1 = extent(cols_on, xs.expand_as(col_mass), W)
    geometry = torch.stack([(mass / (H * W)).sqrt(), cx, cy, sx, sy, x0, y0, x1, y1], dim=-1)
    return torch.where((mass > 0)[..., None], geometry, torch.zeros_like(geometry))


def instance_segments(class_map: torch.Tensor, num_classes: int, max_segments: int,
                      min_pixels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The connected regions (8-connectivity) of each class in (B, H, W) ``class_map`` as (B, S, H, W) float
    one-hot masks, S = ``max_segments``, largest first (ties by class, then position), and their (B, S) class ids.
    Pixels outside 0..num_classes-1 (ignored) belong to no segment; regions under ``min_pixels`` and those past
    ``max_segments`` are dropped; unused slots are empty masks with class 0."""
    B, H, W = class_map.shape
    maps = class_map.detach().cpu().numpy()
    segments = np.zeros((B, max_segments, H, W), dtype=np.float32)
    classes = np.zeros((B, max_segments), dtype=np.int64)
    structure = np.ones((3, 3), dtype=bool)
    for b in range(B):
        found = []
        for k in np.unique(maps[b]):
            if not 0 <= k < num_classes:
                continue
            labels, count = ndimage.label(maps[b] == k, structure=structure)
            if count == 0:
                continue
            sizes = np.bincount(labels.ravel(), minlength=count + 1)
            for i in range(1, count + 1):
                if sizes[i] >= min_pixels:
                    found.append((-int(sizes[i]), int(k), i, labels))
        found.sort(key=lambda f: f[:3])
        for slot, (_, k, i, labels) in enumerate(found[:max_segments]):
            segments[b, slot] = labels == i
            classes[b, slot] = k
    device = class_map.device
    return torch.from_numpy(segments).to(device), torch.from_numpy(classes).to(device)


def mask_pool(segments: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """(B, K, D): the mean of (B, D, h, w) ``features`` over each of the (B, K, H, W) segments (resized to h x w
    by area averaging, so a segment's weight on a region is the share of the region it covers)."""
    if segments.shape[-2:] != features.shape[-2:]:
        segments = F.adaptive_avg_pool2d(segments, features.shape[-2:])
    weights = segments.flatten(2)  # (B, K, hw)
    pooled = torch.bmm(weights, features.flatten(2).transpose(1, 2))  # (B, K, D)
    return pooled / weights.sum(-1, keepdim=True).clamp(min=1e-6)


class SegmentTokens(nn.Module):
    """One token of size ``hidden_size`` per class from a segmentation; see the module docstring."""

    def __init__(self, num_classes: int, pixel_feature_size: int, region_feature_size: int, hidden_size: int,
                 image_channels: int = 3, min_area: float = 0.002, relation_layers: int = 0, relation_heads: int = 8,
                 part_norm: bool = False):
        super().__init__()
        self.min_area = float(min_area)
        self.part_norm = bool(part_norm)
        self.class_embedding = nn.Embedding(num_classes, hidden_size)
        colour_in_features = 0 if part_norm else image_channels
        self.feature_proj = nn.Linear(pixel_feature_size + region_feature_size + colour_in_features, hidden_size)
        self.geometry_proj = nn.Sequential(
            nn.Linear(GEOMETRY_FEATURES, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size)
        )
        if part_norm:
            self.colour_proj = nn.Linear(image_channels, hidden_size)
            # class, pooled features, colour, geometry
            self.part_norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(4))
        self.norm = nn.LayerNorm(hidden_size)
        # Only built when asked, so models saved without them load (and initialise) exactly as before.
        if relation_layers > 0:
            self.relations = nn.ModuleList(
                SegmentRelationLayer(hidden_size, relation_heads) for _ in range(relation_layers)
            )
            self.relations_norm = nn.LayerNorm(hidden_size)
        else:
            self.relations = None

    def presence(self, segments: torch.Tensor) -> torch.Tensor:
        """(B, K) True where a class covers at least ``min_area`` of the image (and at least one pixel)."""
        area = segments.flatten(2).mean(-1)
        pixels = segments.flatten(2).sum(-1)
        return (area >= self.min_area) & (pixels > 0)

    def forward(self, segments: torch.Tensor, pixel_features: torch.Tensor, region_map: torch.Tensor,
                pixel_values: torch.Tensor, segment_classes: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``segment_classes`` (B, S): the class of each segment; None: segment k is class k (per-class masks)."""
        B, K = segments.shape[:2]
        segments = segments.to(pixel_features.dtype)
        deep = [mask_pool(segments, pixel_features), mask_pool(segments, region_map)]
        colour = mask_pool(segments, pixel_values.to(pixel_features.dtype))
        if segment_classes is None:
            segment_classes = torch.arange(K, device=segments.device).expand(B, K)
        geometry = segment_geometry(segments)
        if self.part_norm:
            parts = (self.class_embedding(segment_classes), self.feature_proj(torch.cat(deep, dim=-1)),
                     self.colour_proj(colour), self.geometry_proj(geometry))
            tokens = sum(norm(part) for norm, part in zip(self.part_norms, parts))
        else:
            tokens = (self.class_embedding(segment_classes) + self.feature_proj(torch.cat([*deep, colour], dim=-1))
                      + self.geometry_proj(geometry))
        present = self.presence(segments)
        tokens = self.norm(tokens) * present[..., None].to(tokens.dtype)
        if self.relations is not None:
            pair_geometry = pairwise_geometry(geometry)
            for layer in self.relations:
                tokens = layer(tokens, pair_geometry, present)
            tokens = self.relations_norm(tokens) * present[..., None].to(tokens.dtype)
        return tokens, present


__all__ = ["GEOMETRY_FEATURES", "SegmentTokens", "instance_segments", "mask_pool", "segment_geometry"]
