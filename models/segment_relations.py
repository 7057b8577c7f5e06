"""Geometry-aware self-attention among segment tokens, so each token knows where the other segments are.

A caption like "a red circle to the left of a blue square" states a relation between two segments. A decoder that
attends over segment tokens one at a time has to carry the first segment's place in its state and compare it with
the second's; this layer lets the tokens exchange that before the decoder starts. Every token attends over the
other present tokens with

    score_ij = q_i . k_j / sqrt(d) + b_h(g_ij)          out_i = sum_j softmax_j(score_ij) (v_j + r_h(g_ij))

where ``g_ij`` is the pairwise geometry of segments i and j (signed centroid offsets, their magnitudes, log width
and height ratios), ``b_h`` a per-head bias and ``r_h`` a per-head relative value, both from one small MLP. The
bias follows the geometric attention of Relation Networks for Object Detection (Hu et al., 2018) and the Object
Relation Transformer for captioning (Herdade et al., 2019); the relative values follow Shaw et al. (2018), so a
token receives *where* the others are, not only *what* they are. Unlike those papers the offsets keep their sign:
"to the left of" and "to the right of" differ only in it. ``torch.nn.MultiheadAttention`` takes an additive bias
but no per-pair values, hence this small layer of its own.

Shapes: ``tokens`` (B, S, C), ``pair_geometry`` (B, S, S, PAIR_FEATURES) from ``pairwise_geometry`` (computed once
and shared by all layers), ``present`` (B, S) bool -> (B, S, C), zero where absent.
"""

from __future__ import annotations

import math

import torch
from torch import nn

PAIR_FEATURES = 6  # dx, dy, |dx|, |dy|, log width ratio, log height ratio


def pairwise_geometry(geometry: torch.Tensor) -> torch.Tensor:
    """(B, S, S, PAIR_FEATURES) geometry of segment j relative to segment i, from (B, S, 9) ``segment_geometry``
    rows (sqrt area, centroid x, y, spread x, y, box x0, y0, x1, y1; [0, 1] image coordinates)."""
    cx, cy = geometry[..., 1], geometry[..., 2]
    width = (geometry[..., 7] - geometry[..., 5]).clamp(min=1e-3)
    height = (geometry[..., 8] - geometry[..., 6]).clamp(min=1e-3)
    dx = cx[:, None, :] - cx[:, :, None]  # [b, i, j] = cx_j - cx_i: > 0 when j is right of i
    dy = cy[:, None, :] - cy[:, :, None]  # > 0 when j is below i (image y grows downwards)
    log_w = width.log()[:, None, :] - width.log()[:, :, None]
    log_h = height.log()[:, None, :] - height.log()[:, :, None]
    return torch.stack([dx, dy, dx.abs(), dy.abs(), log_w, log_h], dim=-1)


class SegmentRelationLayer(nn.Module):
    """One pre-norm transformer block of geometry-aware self-attention over segment tokens (see the module
    docstring), followed by a feed-forward block; both residual."""

    def __init__(self, hidden_size: int, num_heads: int, geometry_size: int = 64, dropout: float = 0.0):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be a multiple of the {num_heads} relation heads")
        self.num_heads, self.head_size = num_heads, hidden_size // num_heads
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.geometry = nn.Sequential(
            nn.Linear(PAIR_FEATURES, geometry_size), nn.GELU(), nn.Linear(geometry_size, num_heads + hidden_size)
        )
        self.attention_out = nn.Linear(hidden_size, hidden_size)
        self.feed_forward_norm = nn.LayerNorm(hidden_size)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden_size, 2 * hidden_size), nn.GELU(), nn.Linear(2 * hidden_size, hidden_size)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, pair_geometry: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        B, S, C = tokens.shape
        h, d = self.num_heads, self.head_size
        pair = self.geometry(pair_geometry.to(tokens.dtype))  # (B, S, S, h + C)
        bias = pair[..., :h].permute(0, 3, 1, 2)  # (B, h, S, S)
        relative_values = pair[..., h:].reshape(B, S, S, h, d)
        q, k, v = self.qkv(self.attention_norm(tokens)).reshape(B, S, 3, h, d).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
        # Absent tokens are never attended; each token may always attend to itself, so that an absent one's row
        # is not all -inf (its output is zeroed below anyway).
        allowed = present[:, None, None, :] | torch.eye(S, dtype=torch.bool, device=tokens.device)
        weights = self.dropout(scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1))
        attended = weights @ v + torch.einsum("bhij,bijhd->bhid", weights, relative_values)
        tokens = tokens + self.dropout(self.attention_out(attended.transpose(1, 2).reshape(B, S, C)))
        tokens = tokens + self.dropout(self.feed_forward(self.feed_forward_norm(tokens)))
        return tokens * present[..., None].to(tokens.dtype)


__all__ = ["PAIR_FEATURES", "SegmentRelationLayer", "pairwise_geometry"]
