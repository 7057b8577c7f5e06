"""Segmentation losses built from a command-line spec such as ``"ce:1,dice:1"`` or ``"focal:1,lovasz:0.5"``.

Every term honours ``ignore_index``: pixels labelled with it change neither the loss value nor any gradient, and a
loss over an image with an ignored border equals the loss over the image cropped to its labelled pixels. Terms:

- ``ce``: softmax cross-entropy (``torch.nn.functional.cross_entropy``, mean over labelled pixels, class-weighted).
- ``bce``: binary cross-entropy for two-class tasks (background, foreground), smp's ``SoftBCEWithLogitsLoss`` on the
  foreground log-odds ``logits[:, 1] - logits[:, 0]`` (what a two-way softmax gives, so it plays together with the
  other terms and with ``argmax`` prediction).
- ``dice``: smp ``DiceLoss`` (multiclass, soft Dice on softmax probabilities).
- ``focal``: smp ``FocalLoss`` (multiclass, one-vs-rest focal term per class, gamma 2).
- ``lovasz``: smp ``LovaszLoss`` (multiclass Lovász-softmax, a surrogate of the IoU).

Class weights (one per class) scale ``ce``, ``bce``, ``dice`` and ``focal``; smp's Lovász loss has no class weights,
so with weights given that term stays unweighted (a warning says so).
"""

from __future__ import annotations

import logging
import math

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

LOSS_NAMES = ("ce", "bce", "dice", "focal", "lovasz")
_WEIGHTED = {"ce", "bce", "dice", "focal"}


def parse_loss_spec(spec: str) -> list[tuple[str, float]]:
    """``"ce:1,dice:0.5"`` -> ``[("ce", 1.0), ("dice", 0.5)]``; a name without ``:weight`` weighs 1."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty loss spec {spec!r}: give terms like 'ce:1,dice:1' (names: {', '.join(LOSS_NAMES)})")
    terms: list[tuple[str, float]] = []
    for item in spec.split(","):
        item = item.strip()
        name, sep, weight_text = item.partition(":")
        name = name.strip().lower()
        if not name:
            raise ValueError(f"malformed loss spec {spec!r}: empty term; write it as 'name:weight,name:weight'")
        if name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {name!r} in {spec!r}; known losses: {', '.join(LOSS_NAMES)}")
        try:
            weight = float(weight_text) if sep else 1.0
        except ValueError:
            raise ValueError(
                f"malformed loss spec {spec!r}: weight {weight_text!r} of {name!r} is not a number"
            ) from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"loss weight of {name!r} must be a finite number >= 0, not {weight_text!r}")
        if any(name == seen for seen, _ in terms):
            raise ValueError(f"loss {name!r} appears twice in {spec!r}; give each term once")
        terms.append((name, weight))
    if all(w == 0 for _, w in terms):
        raise ValueError(f"every weight in loss spec {spec!r} is 0: nothing would be trained")
    return terms


def check_labels(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> None:
    """Refuse labels a loss would silently misread: wrong shape, float masks, or ids outside the class range
    (the classic 0/255 mask whose 255 is neither a class nor ``ignore_index``)."""
    if logits.ndim != 4:
        raise ValueError(f"logits must be (batch, classes, height, width), got shape {tuple(logits.shape)}")
    if labels.ndim != 3 or labels.shape[0] != logits.shape[0] or labels.shape[1:] != logits.shape[2:]:
        raise ValueError(
            f"labels must be (batch, height, width) = {(logits.shape[0], *logits.shape[2:])} to match the logits, "
            f"got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer class ids (torch.long), got {labels.dtype}")
    num_classes = logits.shape[1]
    bad = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_index)
    if bool(bad.any()):
        values = torch.unique(labels[bad]).tolist()[:8]
        raise ValueError(
            f"labels hold value(s) {values} outside the class ids 0..{num_classes - 1} and not ignore_index "
            f"({ignore_index}). A 0/255 foreground mask needs 'binary_mask: true' in the dataset YAML; otherwise "
            "fix the classes or ignore_index"
        )


class SegmentationLoss(nn.Module):
    """Weighted sum of the terms of a loss spec. Holds no parameters or buffers, so it never enters a state dict.

    Args:
        spec: e.g. ``"ce:1,dice:1"`` (see :func:`parse_loss_spec`).
        num_classes: logits channels.
        ignore_index: label value skipped by every term.
        class_weights: one non-negative weight per class, or ``None``.

    Call with ``logits`` (B, C, H, W) float and ``labels`` (B, H, W) long; returns a scalar. ``components`` returns the
    unweighted value of each term.
    """

    def __init__(
        self,
        spec: str,
        num_classes: int,
        ignore_index: int = 255,
        class_weights: list[float] | tuple[float, ...] | None = None,
    ):
        super().__init__()
        self.terms = parse_loss_spec(spec)
        self.spec = spec
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        if self.num_classes < 2:
            raise ValueError(f"a segmentation loss needs at least 2 classes (background + one), got {num_classes}")
        if 0 <= self.ignore_index < self.num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} is also a class id (classes are 0..{num_classes - 1}); "
                "pick a value outside the class range, e.g. 255"
            )
        names = {name for name, _ in self.terms}
        if "bce" in names and self.num_classes != 2:
            raise ValueError(
                f"'bce' is for binary tasks (2 classes: background, foreground) but there are {num_classes} classes; "
                "use 'ce' (optionally with 'dice') for multi-class segmentation"
            )
        self.class_weights = None
        if class_weights is not None:
            weights = [float(w) for w in class_weights]
            if len(weights) != self.num_classes:
                raise ValueError(
                    f"{len(weights)} class weights given for {self.num_classes} classes; give one per class"
                )
            if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) == 0:
                raise ValueError(f"class weights must be finite, >= 0 and not all 0, got {weights}")
            self.class_weights = tuple(weights)
            if "lovasz" in names:
                logger.warning("class weights do not apply to the 'lovasz' term (smp's LovaszLoss has none)")
        # smp's losses are built on first use rather than here: a model loaded by ``from_pretrained`` is constructed
        # on the meta device, and smp turns class weights into tensors in its constructors.
        self._smp: dict[str, nn.Module] = {}

    def _smp_loss(self, name: str) -> nn.Module:
        if name not in self._smp:
            cw = list(self.class_weights) if self.class_weights is not None else None
            if name == "dice":
                self._smp[name] = smp.losses.DiceLoss("multiclass", ignore_index=self.ignore_index, class_weights=cw)
            elif name == "focal":
                self._smp[name] = smp.losses.FocalLoss("multiclass", ignore_index=self.ignore_index, class_weights=cw)
            elif name == "lovasz":
                self._smp[name] = smp.losses.LovaszLoss("multiclass", ignore_index=self.ignore_index)
            else:
                self._smp[name] = smp.losses.SoftBCEWithLogitsLoss(ignore_index=self.ignore_index, reduction="none")
        return self._smp[name]

    def _weights(self, device: torch.device) -> torch.Tensor | None:
        if self.class_weights is None:
            return None
        return torch.tensor(self.class_weights, dtype=torch.float32, device=device)

    def _term(self, name: str, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if name == "ce":
            return F.cross_entropy(logits, labels, weight=self._weights(logits.device), ignore_index=self.ignore_index)
        if name == "bce":
            foreground_logit = logits[:, 1] - logits[:, 0]
            per_pixel = self._smp_loss("bce")(foreground_logit, labels.to(logits.dtype))
            weights = valid.to(logits.dtype)
            if self.class_weights is not None:
                weights = weights * self._weights(logits.device)[labels.clamp(0, 1)]
            # A weighted mean over labelled pixels: smp's "mean" would divide by every pixel, ignored ones included.
            return (per_pixel * weights).sum() / weights.sum()
        return self._smp_loss(name)(logits, labels)

    def components(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted value of every term, by name."""
        check_labels(logits, labels, self.ignore_index)
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} channels but the loss was built for {self.num_classes}")
        labels = labels.long()
        valid = labels != self.ignore_index
        if not bool(valid.any()):
            # Every pixel ignored: the means above would be 0/0. A zero that keeps the graph lets the step proceed.
            zero = logits.sum() * 0.0
            return {name: zero for name, _ in self.terms}
        # Losses in float32: Dice/Lovász sums over a whole batch lose too much precision in half precision.
        logits = logits.float()
        return {name: self._term(name, logits, labels, valid) for name, _ in self.terms}

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        parts = self.components(logits, labels)
        return sum(weight * parts[name] for name, weight in self.terms)


def build_loss(
    spec: str, num_classes: int, ignore_index: int = 255, class_weights: list[float] | None = None
) -> SegmentationLoss:
    """The loss a spec string describes; see the module docstring for the terms."""
    return SegmentationLoss(spec, num_classes, ignore_index=ignore_index, class_weights=class_weights)
