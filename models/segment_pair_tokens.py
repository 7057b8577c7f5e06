"""Pair tokens: one token per ordered pair of segments, saying where one segment is relative to the other.

A caption such as "a small red circle above a large blue star" states a relation between two segments. With one
token per segment, the decoder must hold the first segment's place in its state and compare it with the second's
while it chooses the relation word; on the shapes data it gets the horizontal-or-vertical choice mostly right but
the sign of a vertical relation ("above" or "below") no better than a coin. A pair token puts the answer in one
vector the decoder can attend to, as scene-graph captioners do with their relation nodes (Yang et al., 2019,
"Auto-Encoding Scene Graphs for Image Captioning"; Yao et al., 2018, "Exploring Visual Relationship for Image
Captioning"):

    pair_ij = LayerNorm(LN(W_s token_i) + LN(W_o token_j) + LN(MLP(g_ij)))

where ``g_ij`` is ``segment_relations.pairwise_geometry`` (signed centroid offsets of j from i, their magnitudes, log
width and height ratios). Each part is normalised on its own so that none drowns the others (the same reason as the
segment tokens' ``part_norm``). A pair is present when both of its segments are.

Shapes: ``tokens`` (B, S, C), ``geometry`` (B, S, 9) from ``segment_geometry``, ``present`` (B, S) bool ->
pair tokens (B, S(S-1), C), their presence (B, S(S-1)) and ``pair_index`` (S(S-1), 2): the (i, j) of each pair.
"""

from __future__ import annotations

import torch
from torch import nn

from .segment_relations import PAIR_FEATURES, pairwise_geometry


def ordered_pairs(num_segments: int, device: torch.device | None = None) -> torch.Tensor:
    """(S(S-1), 2) every ordered pair (i, j) of ``num_segments`` segments with i != j, row-major in i then j."""
    i, j = torch.meshgrid(torch.arange(num_segments, device=device), torch.arange(num_segments, device=device),
                          indexing="ij")
    keep = i != j
    return torch.stack([i[keep], j[keep]], dim=-1)


class SegmentPairTokens(nn.Module):
    """One token of size ``hidden_size`` per ordered pair of segments; see the module docstring."""

    def __init__(self, hidden_size: int, geometry_size: int = 64):
        super().__init__()
        self.subject_proj = nn.Linear(hidden_size, hidden_size)
        self.object_proj = nn.Linear(hidden_size, hidden_size)
        self.geometry_proj = nn.Sequential(
            nn.Linear(PAIR_FEATURES, geometry_size), nn.GELU(), nn.Linear(geometry_size, hidden_size)
        )
        self.part_norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(3))  # subject, object, geometry
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, tokens: torch.Tensor, geometry: torch.Tensor, present: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        S = tokens.shape[1]
        pair_index = ordered_pairs(S, tokens.device)
        i, j = pair_index[:, 0], pair_index[:, 1]
        pair_geometry = pairwise_geometry(geometry.to(tokens.dtype))[:, i, j]  # (B, P, PAIR_FEATURES)
        parts = (self.subject_proj(tokens[:, i]), self.object_proj(tokens[:, j]), self.geometry_proj(pair_geometry))
        pairs = self.norm(sum(norm(part) for norm, part in zip(self.part_norms, parts)))
        pair_present = present[:, i] & present[:, j]
        return pairs * pair_present[..., None].to(pairs.dtype), pair_present, pair_index


__all__ = ["SegmentPairTokens", "ordered_pairs"]
