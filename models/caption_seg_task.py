"""The ``caption-seg`` task of ``scripts/train.py``: a segmentation-aware captioner (``caption_seg_model.py``)
trained on a dataset with both captions and masks (synthetic shapes; COCO captions joined to COCO instances).

    python scripts/train.py --task caption-seg --dataset shapes --output-dir runs/caption_seg \\
        --imagenet-weights lite0 --epochs 8
    # the plain captioner on the same encoder, for the ablation: no segment tokens
    python scripts/train.py --task caption-seg --dataset shapes --output-dir runs/plain --no-segment-tokens ...

One training row is one image with its mask and **up to ``--captions-per-image`` of its captions** (drawn from
``sample_rng``, so ``--resume`` replays them): the U-Net encoder runs once per image and its memory is shared by
all of that image's caption rows (``caption_image_index``), so five captions cost little more than one. Images
are not augmented: flips would break "to the left of", colour jitter the colour names.

Loss: caption cross-entropy (``--label-smoothing``) + ``--attention-reg`` x the attention penalty +
``--seg-loss-weight`` x the segmentation loss (``--seg-loss``). Validation: one forward pass per batch gives both
the segmentation (mIoU, per-class IoU, from a confusion matrix) and the beam-searched captions (BLEU, METEOR,
ROUGE-L, CIDEr-D, distinct captions, and attribute accuracy on shapes). The best checkpoint is chosen by CIDEr.
"""

from __future__ import annotations

import argparse
import logging
import math
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import PreTrainedModel

from datasets_cfg.image_io import to_rgb
from metrics.segmentation_metrics.segmentation_metrics import (
    confusion_matrix,
    dominant_prediction,
    flat_scores,
    scores_from_confusion,
)

from .caption_seg_model import (
    SEGMENT_UNITS,
    TRAIN_SEGMENT_SOURCES,
    CaptionSegModel,
    build_caption_seg_model,
    caption_seg_image_processor,
    load_caption_seg,
    save_caption_seg,
)
from .caption_task import caption_scores, check_caption_metrics_mode, encode_caption_lists
from .caption_tokenizer import train_caption_tokenizer, vocabulary_fingerprint
from .class_ids import class_ids
from .decode_failures import DecodeFailures, decoded, named_decode_failure
from .segmentation_losses import build_loss
from .segmentation_task import COLLAPSE_THRESHOLD
from .task import TrainingTask, register_task
from .unet import IMAGENET_VARIANTS

logger = logging.getLogger(__name__)


class CaptionSegTrainDataset(torch.utils.data.Dataset):
    """One row per captioned image: image, mask and the ids of up to ``per_image`` of its captions."""

    def __init__(self, split, captions_ids: list[list[list[int]]], per_image: int, task: TrainingTask):
        self.split, self.captions_ids, self.per_image, self.task = split, captions_ids, per_image, task
        self.rows = [r for r, caps in enumerate(captions_ids) if caps]
        self.decode_failures = DecodeFailures()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.decode_failures.fetch(i, len(self), self._read)

    def _read(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        item = self.split[row]
        captions = self.captions_ids[row]
        take = min(self.per_image, len(captions))
        chosen = self.task.sample_rng(row).choice(len(captions), size=take, replace=False)
        return {"image": decoded(item["image"]), "mask": decoded(item["mask"]),
                "input_ids": [captions[k] for k in sorted(chosen)]}


class CaptionSegEvalDataset(torch.utils.data.Dataset):
    def __init__(self, split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, Any]:
        with named_decode_failure(i, "validation image or mask"):
            item = self.split[i]
            return {"row": i, "image": decoded(item["image"]), "mask": decoded(item["mask"])}


@register_task
class CaptionSegTask(TrainingTask):
    name = "caption-seg"
    main_metric = "CIDEr"
    greater_is_better = True

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        p = parser
        p.add_argument("--encoder", default="tu-tf_efficientnet_lite0",
                       help="U-Net encoder shared by both heads: an smp encoder or 'tu-' + a timm model")
        p.add_argument("--imagenet-weights", default="none", choices=["none", *IMAGENET_VARIANTS],
                       help="offline ImageNet weights for a tu-tf_efficientnet_liteN encoder")
        p.add_argument("--image-size", type=int, default=128, help="square side images are resized to")
        p.add_argument("--encoder-depth", type=int, default=5, choices=[3, 4, 5])
        p.add_argument("--decoder-channels", default="64,48,32,24,16", help="U-Net decoder widths, one per stage")
        p.add_argument("--image-skip-channels", type=int, default=0,
                       help="U-Net full-resolution skip: an N-channel stem on the image feeding the decoder's last "
                            "block (0: none, smp's U-Net)")
        p.add_argument("--region-stage", type=int, default=-2,
                       help="encoder feature stage giving the caption regions (-2: stride 16, 8x8 at 128 px)")
        p.add_argument("--hidden-size", type=int, default=256, help="size of the regions and segment tokens")
        p.add_argument("--no-segment-tokens", action="store_true",
                       help="the plain captioner: the decoder attends over the regions only")
        p.add_argument("--train-segments", choices=TRAIN_SEGMENT_SOURCES, default="ground_truth",
                       help="which segmentation makes the segment tokens in training (inference: the prediction)")
        p.add_argument("--segment-min-area", type=float, default=0.002, help="smallest segment share with a token")
        p.add_argument("--segment-units", choices=SEGMENT_UNITS, default="class",
                       help="a segment token per class, or per connected region of a class (instance)")
        p.add_argument("--max-segments", type=int, default=8, help="with --segment-units instance: most tokens")
        p.add_argument("--segment-relation-layers", type=int, default=0,
                       help="layers of geometry-aware self-attention among the segment tokens (0: none)")
        p.add_argument("--segment-relation-heads", type=int, default=8, help="heads of those layers")
        p.add_argument("--segment-part-norm", choices=["on", "off"], default="on",
                       help="normalise each part of a segment token (class, pooled features, colour, geometry) on "
                            "its own before summing them (off: the layout of models saved before this option)")
        p.add_argument("--seg-loss", default="ce:1,dice:1", help="segmentation loss terms, e.g. 'ce:1,dice:1'")
        p.add_argument("--seg-loss-weight", type=float, default=1.0)
        p.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
        p.add_argument("--embed-dim", type=int, default=256)
        p.add_argument("--decoder-dim", type=int, default=512)
        p.add_argument("--attention-dim", type=int, default=256)
        p.add_argument("--dropout", type=float, default=0.3)
        p.add_argument("--attention-reg", type=float, default=1.0, help="weight of the attention penalty")
        p.add_argument("--label-smoothing", type=float, default=0.0)
        p.add_argument("--captions-per-image", type=int, default=5,
                       help="captions trained per image and step (they share the image's encoder pass)")
        p.add_argument("--min-word-freq", type=int, default=1)
        p.add_argument("--max-caption-len", type=int, default=30)
        p.add_argument("--num-beams", type=int, default=3)
        p.add_argument("--caption-metrics", choices=["fast", "official"], default="fast")
        p.add_argument("--encoder-lr-multiplier", type=float, default=1.0,
                       help="encoder learning rate = --lr times this")
        p.add_argument("--train-encoder-stages", type=int, default=None, metavar="N",
                       help="fine-tune only the shared encoder's last N stages (of --encoder-depth; stride 2, 4, ... "
                            "32); the first ones stay frozen, BatchNorm statistics included (timm 'tu-' encoders)")
        p.add_argument("--init-from", default=None, metavar="FOLDER", help="start from a saved caption-seg folder")

    def __init__(self, args: argparse.Namespace, data, data_config):
        super().__init__(args, data, data_config)
        self.train_split = getattr(args, "train_split", "train")
        self.eval_split = getattr(args, "eval_split", "validation")
        some_split = next(iter(data.values()))
        missing = [c for c in ("captions", "mask", "mask_classes") if c not in some_split.column_names]
        if missing:
            raise ValueError(
                f"--task caption-seg needs a dataset with captions and masks; {getattr(data_config, 'name', '?')!r} "
                f"has no {', '.join(repr(m) for m in missing)} column (columns: {some_split.column_names}). Use "
                "shapes or coco_captions_masks"
            )
        self.class_names = list(some_split.features["mask_classes"].feature.names)
        self.ignore_index = int(data_config.ignore_index)
        self._check_arguments()
        self.model: CaptionSegModel | None = None
        self.tokenizer = self.image_processor = None

    def _check_arguments(self) -> None:
        a = self.args
        for name in ("max_segments", "image_size", "hidden_size", "embed_dim", "decoder_dim", "attention_dim", "captions_per_image",
                     "min_word_freq", "max_caption_len", "num_beams", "segment_relation_heads"):
            if getattr(a, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(a, name)}")
        if a.image_skip_channels < 0:
            raise ValueError(f"--image-skip-channels must be >= 0, not {a.image_skip_channels}")
        if a.train_encoder_stages is not None and a.train_encoder_stages < 0:
            raise ValueError(f"--train-encoder-stages must be >= 0, not {a.train_encoder_stages}")
        if a.segment_relation_layers < 0:
            raise ValueError(f"--segment-relation-layers must be >= 0, not {a.segment_relation_layers}")
        if a.segment_relation_layers and a.hidden_size % a.segment_relation_heads:
            raise ValueError(f"--hidden-size {a.hidden_size} must be a multiple of --segment-relation-heads "
                             f"{a.segment_relation_heads}")
        if a.seg_loss_weight < 0 or a.attention_reg < 0:
            raise ValueError("--seg-loss-weight and --attention-reg must be >= 0")
        if not 0.0 <= a.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1), not {a.label_smoothing}")
        check_caption_metrics_mode(a.caption_metrics)
        if a.imagenet_weights != "none" and a.encoder != f"tu-tf_efficientnet_{a.imagenet_weights}":
            raise ValueError(
                f"--imagenet-weights {a.imagenet_weights} fits --encoder tu-tf_efficientnet_{a.imagenet_weights}, "
                f"not {a.encoder!r}"
            )
        build_loss(a.seg_loss, len(self.class_names), self.ignore_index)  # an unknown or unparsable loss fails here

    # ------------------------------------------------------------------------------------------------------ model
    def build_model(self) -> PreTrainedModel:
        a = self.args
        if a.init_from:
            try:
                model, tokenizer, processor = load_caption_seg(a.init_from)
            except (OSError, ValueError, SafetensorError) as err:
                raise ValueError(f"--init-from {a.init_from}: not a loadable caption-seg model folder ({err})") from err
            if model.config.class_names != self.class_names:
                raise ValueError(
                    f"--init-from {a.init_from} was trained on the classes {model.config.class_names}, but the dataset "
                    f"has {self.class_names}"
                )
        else:
            tokenizer = train_caption_tokenizer(self.data[self.train_split]["captions"], min_frequency=a.min_word_freq,
                                                max_length=a.max_caption_len + 2)
            try:
                channels = [int(c) for c in a.decoder_channels.split(",")]
            except ValueError as err:
                raise ValueError(f"--decoder-channels must be comma-separated integers, not {a.decoder_channels!r}") from err
            try:
                model, processor = build_caption_seg_model(
                    tokenizer, self.class_names, encoder=a.encoder, image_size=a.image_size,
                    decoder_channels=channels, encoder_depth=a.encoder_depth,
                    imagenet_weights=None if a.imagenet_weights == "none" else a.imagenet_weights,
                    ignore_index=self.ignore_index, segmentation_loss=a.seg_loss,
                    image_skip_channels=a.image_skip_channels,
                    decoder_options={"embedding_size": a.embed_dim, "hidden_size": a.decoder_dim,
                                     "attention_size": a.attention_dim, "cell_type": a.cell, "dropout": a.dropout,
                                     "attention_regularization": a.attention_reg},
                    region_stage=a.region_stage, hidden_size=a.hidden_size, segment_aware=not a.no_segment_tokens,
                    segment_min_area=a.segment_min_area, segment_units=a.segment_units,
                    max_segments=a.max_segments, segment_relation_layers=a.segment_relation_layers,
                    segment_relation_heads=a.segment_relation_heads, segment_part_norm=a.segment_part_norm == "on",
                    train_segments_from=a.train_segments, segmentation_loss_weight=a.seg_loss_weight,
                    label_smoothing=a.label_smoothing, max_length=a.max_caption_len + 1, num_beams=a.num_beams,
                )
            except (KeyError, RuntimeError) as err:  # smp / timm: an unknown encoder name
                raise ValueError(f"cannot build the U-Net with --encoder {a.encoder!r}: {err}") from err
        if a.train_encoder_stages is not None:
            model.segmenter.set_trainable_encoder_stages(a.train_encoder_stages)
        self.model, self.tokenizer, self.image_processor = model, tokenizer, processor
        return model

    def checkpoint_identity(self) -> dict[str, Any]:
        return vocabulary_fingerprint(self.tokenizer) if self.tokenizer is not None else {}

    def param_groups(self, model: PreTrainedModel) -> list[dict[str, Any]]:
        multiplier = self.args.encoder_lr_multiplier
        if not math.isfinite(multiplier) or multiplier < 0:
            raise ValueError(f"--encoder-lr-multiplier must be >= 0, got {multiplier}")
        encoder = {id(p) for p in model.segmenter.unet.encoder.parameters()}
        lr = self.args.lr
        groups = [
            {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in encoder], "lr": lr},
            {"params": [p for p in model.segmenter.unet.encoder.parameters() if p.requires_grad],
             "lr": lr * multiplier},
        ]
        return [g for g in groups if g["params"]]

    def save_pretrained(self, model: PreTrainedModel, out_dir: str) -> None:
        save_caption_seg(model, self.tokenizer, self.image_processor or caption_seg_image_processor(model.config),
                         out_dir)

    # ------------------------------------------------------------------------------------------------------- data
    def train_dataset(self) -> CaptionSegTrainDataset:
        if self.model is None:
            raise RuntimeError("call build_model() before asking the caption-seg task for its datasets")
        split = self.data[self.train_split]
        d = self.model.config.decoder
        per_image = encode_caption_lists(self.tokenizer, split["captions"], self.args.max_caption_len,
                                         d.bos_token_id, d.eos_token_id, self.train_split)
        return CaptionSegTrainDataset(split.select_columns(["image", "mask"]), per_image,
                                      self.args.captions_per_image, self)

    def eval_dataset(self) -> CaptionSegEvalDataset:
        split = self.data[self.eval_split]
        if split.num_rows == 0:
            raise ValueError(f"the {self.eval_split!r} split is empty: nothing to validate on")
        return CaptionSegEvalDataset(split.select_columns(["image", "mask"]))

    def _images_and_masks(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        images = [to_rgb(e["image"]) for e in examples]
        masks = [np.asarray(e["mask"]) for e in examples]
        batch = self.image_processor(images, segmentation_maps=masks, return_tensors="pt")
        return {"pixel_values": batch["pixel_values"], "segmentation_labels": batch["labels"]}

    def collate(self, examples: list[dict]) -> dict[str, Any]:
        """Images (B, 3, S, S) and masks (B, S, S); caption rows ``decoder_input_ids`` / ``labels`` (B', T) with
        ``caption_image_index`` (B',) naming each row's image."""
        rows = [(i, ids) for i, e in enumerate(examples) for ids in e["input_ids"]]
        length = max(len(ids) for _, ids in rows) - 1
        inputs = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        for r, (_, ids) in enumerate(rows):
            ids = torch.tensor(ids, dtype=torch.long)
            inputs[r, : len(ids) - 1] = ids[:-1]
            labels[r, : len(ids) - 1] = ids[1:]
        return {**self._images_and_masks(examples), "decoder_input_ids": inputs, "labels": labels,
                "caption_image_index": torch.tensor([i for i, _ in rows])}

    def eval_collate(self, examples: list[dict]) -> dict[str, Any]:
        return {**self._images_and_masks(examples), "row_index": torch.tensor([e["row"] for e in examples])}

    # ------------------------------------------------------------------------------------------- train and eval
    def training_step(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(**batch)
        logs = {"caption_loss": float(out.caption_loss.detach()),
                "segmentation_loss": float(out.segmentation_loss.detach())}
        if out.attention_penalty is not None:
            logs["attention_penalty"] = float(out.attention_penalty.detach())
        return out.loss, logs

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataloader, accelerator) -> dict[str, float]:
        num_classes = len(self.class_names)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        cm = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)
        tokens, rows = [], []
        pad = self.tokenizer.pad_token_id
        try:
            for batch in dataloader:
                pred = model.predict(batch["pixel_values"].to(device), num_beams=self.args.num_beams)
                labels = batch["segmentation_labels"].to(device)
                per_sample = confusion_matrix(class_ids(pred.segmentation_logits, dim=1), labels, num_classes,
                                              self.ignore_index, per_sample=True)
                generated = accelerator.pad_across_processes(pred.sequences.contiguous(), dim=1, pad_index=pad)
                per_sample, generated, index = accelerator.gather_for_metrics(
                    (per_sample, generated, batch["row_index"].to(device))
                )
                cm += per_sample.sum(dim=0)
                tokens += generated.tolist()
                rows += index.tolist()
        finally:
            model.train(was_training)
        if not rows:
            raise ValueError("the validation dataloader gave no images")
        predictions = [p.strip() for p in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        metrics = caption_scores(predictions, rows, self.data[self.eval_split], self.args.caption_metrics,
                                 accelerator.is_main_process)
        scores = scores_from_confusion(cm)
        metrics.update(flat_scores(scores, self.class_names))
        dominant = dominant_prediction(cm, COLLAPSE_THRESHOLD)
        if dominant is not None and accelerator.is_main_process:
            logger.warning("segmentation collapsed: %.1f%% of the validation pixels are predicted as %r",
                           100 * scores["predicted_fraction"][dominant], self.class_names[dominant])
        return metrics


__all__ = ["CaptionSegEvalDataset", "CaptionSegTask", "CaptionSegTrainDataset"]
