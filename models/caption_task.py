"""The ``caption`` task of ``scripts/train.py``: image captioning with a ``VisionEncoderDecoderModel``.

    python scripts/train.py --task caption --dataset shapes --output-dir runs/cap --encoder resnet10t --decoder lstm
    # fastest on a CPU: a frozen ImageNet encoder whose features are computed once
    python scripts/train.py --task caption --dataset shapes --output-dir runs/cap --encoder tf_efficientnet_lite0 \
        --imagenet-weights --freeze-encoder --cache-encoder-features

The model is built from parts (``captioner.py``): a region encoder (a timm CNN or a ViT) and a decoder (the
attention LSTM/GRU of ``lstm_decoder.py``, a small GPT-2 trained from scratch, or a pretrained causal LM). The
word-level tokenizer is trained on the training split's captions (``caption_tokenizer.py``).

Training data: **one row per image per epoch, with one of its captions drawn at random** (``--caption-sampling
random``, the default), the draw a function of (seed, epoch, row) so that ``--resume`` replays it. The captions of
an image are alternative descriptions of the same picture: drawing one per epoch keeps an epoch one pass over the
images (each image costs one encoder pass per epoch rather than five, and validation comes five times as often)
while over the epochs the decoder still sees every caption. ``--caption-sampling all`` gives one row per
(image, caption) pair instead. Images are not augmented: flips would break "to the left of".

Loss: token cross-entropy (``--label-smoothing``) plus, for the LSTM/GRU decoder, the doubly stochastic attention
penalty weighted by ``--attention-reg``. ``--objective scst`` replaces both with self-critical sequence training
(``self_critical.py``): captions sampled from the model, rewarded by their CIDEr-D. Validation generates a caption
per validation image (beam search, ``--num-beams``) on each process's shard, gathers them and scores them with
``metrics.caption_metrics`` (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D); it also reports the share of distinct captions
and warns when the model collapses to one caption. On data with a ``scene`` column (synthetic shapes) it adds the
attribute accuracy.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections import Counter
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from safetensors import SafetensorError
from torch.nn import functional as F
from transformers import AutoTokenizer, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .caption_tokenizer import train_caption_tokenizer, vocabulary_fingerprint
from .captioner import DECODER_KINDS, build_captioner, load_captioner, save_captioner, set_generation_defaults
from .cider_reward import CiderDReward
from .decode_failures import DecodeFailures, decoded, named_decode_failure
from .encoder_feature_cache import cached_encoder_features
from .lstm_decoder import LSTMDecoderForCausalLM, doubly_stochastic_penalty
from .region_encoders import IMAGENET_VARIANTS, set_encoder_trainable
from .self_critical import self_critical_loss
from .shapes_attribute_accuracy import shapes_attribute_accuracy
from .task import TrainingTask, register_task

logger = logging.getLogger(__name__)
# --imagenet-weights values: the EfficientNet-Lite encoders that have offline ImageNet weights, by short name.
LITE_NAMES = [name.removeprefix("tf_efficientnet_") for name in IMAGENET_VARIANTS]

# Collapse warning: fewer distinct captions than this share of the images, or one caption for more than this share.
MIN_DISTINCT_SHARE = 0.10
MAX_TOP_CAPTION_SHARE = 0.50
MIN_IMAGES_FOR_COLLAPSE_CHECK = 5


class CaptionTrainDataset(torch.utils.data.Dataset):
    """Training rows: (image or its cached encoder features, token ids of one caption).

    ``sampling="random"``: one row per image; ``set_epoch`` changes which caption each image gets.
    ``sampling="all"``: one row per (image, caption) pair.
    """

    def __init__(self, images, captions_ids: list[list[list[int]]], sampling: str = "random", seed: int = 0,
                 features: torch.Tensor | None = None):
        if sampling not in ("random", "all"):
            raise ValueError(f"caption sampling must be 'random' or 'all', not {sampling!r}")
        self.images, self.features, self.captions_ids = images, features, captions_ids
        self.sampling, self.seed, self.epoch = sampling, seed, 0
        self.rows = [r for r, caps in enumerate(captions_ids) if caps]  # images without a caption are not trained on
        self.pairs = [(r, k) for r in self.rows for k in range(len(captions_ids[r]))] if sampling == "all" else None
        self.decode_failures = DecodeFailures()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs is not None else len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.decode_failures.fetch(i, len(self), self._read)

    def _read(self, i: int) -> dict[str, Any]:
        if self.pairs is not None:
            row, k = self.pairs[i]
        else:
            row = self.rows[i]
            k = int(np.random.default_rng([self.seed, self.epoch, row]).integers(len(self.captions_ids[row])))
        item = {"row": row, "input_ids": self.captions_ids[row][k]}
        if self.features is not None:
            item["features"] = self.features[row]
        else:
            item["image"] = decoded(self.images[row]["image"])
        return item


class CaptionEvalDataset(torch.utils.data.Dataset):
    """One row per image: its row index and the image (or its cached encoder features)."""

    def __init__(self, images, features: torch.Tensor | None = None):
        self.images, self.features = images, features

    def __len__(self) -> int:
        return len(self.images) if self.features is None else self.features.shape[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.features is not None:
            return {"row": i, "features": self.features[i]}
        with named_decode_failure(i, "validation image"):
            return {"row": i, "image": decoded(self.images[i]["image"])}


@register_task
class CaptionTask(TrainingTask):
    name = "caption"
    main_metric = "CIDEr"
    greater_is_better = True

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        p = parser
        p.add_argument("--encoder", default=None,
                       help="'vit' (trained from scratch) or a timm CNN: resnet10t, resnet18, tf_efficientnet_lite0, "
                            "... (default: resnet10t, or the EfficientNet-Lite that --imagenet-weights names)")
        p.add_argument("--image-size", type=int, default=128, help="square input side in pixels")
        p.add_argument("--encoder-stage", type=int, default=3,
                       help="CNN feature stage that gives the regions (3 = stride 16: 8x8 regions at 128 px)")
        p.add_argument("--encoder-dim", type=int, help="CNN: map the regions to this many channels (default: the stage's own)")
        p.add_argument("--grid-size", type=int, help="CNN: average-pool the feature map to N x N regions")
        p.add_argument("--output-stride", type=int, choices=[8, 16, 32],
                       help="CNN: dilate the later stages so the map has this stride (16: 14x14 regions from the "
                            "last stage at 224 px instead of 7x7; same weights, more compute)")
        p.add_argument("--vit-patch-size", type=int, default=16)
        p.add_argument("--vit-dim", type=int, default=192)
        p.add_argument("--vit-layers", type=int, default=4)
        p.add_argument("--vit-heads", type=int, default=3)
        p.add_argument("--imagenet-weights", nargs="?", const="encoder", default=None,
                       choices=["encoder", *LITE_NAMES], metavar="{lite0,lite1,lite2}",
                       help="load offline ImageNet weights: 'lite0' (1, 2) picks the tf_efficientnet_lite0 (1, 2) "
                            "encoder; without a value, the weights of the --encoder given (one of those three)")
        p.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
        p.add_argument("--train-encoder-stages", type=int, metavar="N",
                       help="fine-tune only the encoder's last N stages (CNN stages / ViT layers); the rest is frozen")
        p.add_argument("--encoder-lr", type=float, help="learning rate of the encoder (default: --lr)")
        p.add_argument("--cache-encoder-features", action="store_true",
                       help="with --freeze-encoder: compute the encoder features once per split and train on them")
        p.add_argument("--decoder", default="lstm",
                       help=f"one of {', '.join(DECODER_KINDS)}, or the path / Hub id of a pretrained causal LM")
        p.add_argument("--embed-dim", type=int, default=256, help="LSTM/GRU word embedding size")
        p.add_argument("--decoder-dim", type=int, default=512, help="LSTM/GRU state size, or the transformer's width")
        p.add_argument("--attention-dim", type=int, default=256, help="LSTM/GRU additive attention size")
        p.add_argument("--decoder-layers", type=int, help="stacked cells (default 1) or transformer layers (default 3)")
        p.add_argument("--decoder-heads", type=int, default=4, help="transformer attention heads")
        p.add_argument("--dropout", type=float, default=0.3, help="decoder dropout")
        p.add_argument("--no-gated-context", action="store_true", help="LSTM/GRU: no gate on the attended context")
        p.add_argument("--attention-reg", type=float, default=1.0,
                       help="LSTM/GRU: weight of the doubly stochastic attention penalty (0 disables)")
        p.add_argument("--label-smoothing", type=float, default=0.0)
        p.add_argument("--min-word-freq", type=int, default=1, help="rarer training words become <unk>")
        p.add_argument("--max-caption-len", type=int, default=30,
                       help="longest caption in tokens (words and punctuation), for training and generation")
        p.add_argument("--num-beams", type=int, default=3, help="beam width of generation at validation")
        p.add_argument("--caption-sampling", choices=["random", "all"], default="random",
                       help="random: one random caption per image per epoch; all: every (image, caption) pair")
        p.add_argument("--caption-metrics", choices=["fast", "official"], default="fast",
                       help="how metrics.caption_metrics scores the validation captions")
        p.add_argument("--objective", choices=["cross-entropy", "scst"], default="cross-entropy",
                       help="scst: self-critical sequence training, which maximises the CIDEr-D of sampled captions "
                            "(models/self_critical.py); start it from a cross-entropy model with --init-from")
        p.add_argument("--scst-samples", type=int, default=5, help="scst: captions sampled per image (at least 2)")
        p.add_argument("--scst-dropout", choices=["on", "off"], default="on",
                       help="scst: sample and score with the decoder's dropout on (training mode) or off")
        p.add_argument("--init-from", default=None, metavar="FOLDER",
                       help="start from a saved captioner folder (model, tokenizer and image processor; its model "
                            "options win over the flags), e.g. to fine-tune the encoder of a frozen-encoder run")

    def __init__(self, args: argparse.Namespace, data, data_config):
        super().__init__(args, data, data_config)
        self.train_split = getattr(args, "train_split", "train")
        self.eval_split = getattr(args, "eval_split", "validation")
        for split in (self.train_split, self.eval_split):
            if split in data and "captions" not in data[split].column_names:
                raise ValueError(
                    f"the {split!r} split has no 'captions' column (columns: {data[split].column_names}); "
                    "the caption task needs a caption dataset"
                )
        self._check_arguments()
        self.model: PreTrainedModel | None = None
        self.tokenizer = None
        self.image_processor = None
        self._train_ds: CaptionTrainDataset | None = None
        self.reward: CiderDReward | None = None  # --objective scst: built with the training captions

    def _check_arguments(self) -> None:
        a = self.args
        # --imagenet-weights lite0 is one flag for encoder and weights, as for the segmentation tasks; after this,
        # a.encoder is the encoder's name and a.imagenet_weights whether to load them.
        variant = a.imagenet_weights if a.imagenet_weights not in (None, False, True, "encoder") else None
        if variant is not None:
            matching = f"tf_efficientnet_{variant}"
            if a.encoder not in (None, matching):
                raise ValueError(f"--imagenet-weights {variant} fits the encoder {matching!r}, not {a.encoder!r}: "
                                 f"give --encoder {matching} or leave --encoder out")
            a.encoder = matching
        a.encoder = a.encoder or "resnet10t"
        a.imagenet_weights = a.imagenet_weights not in (None, False)
        positive = ("image_size", "max_caption_len", "num_beams", "min_word_freq", "embed_dim", "decoder_dim",
                    "attention_dim", "decoder_layers", "decoder_heads", "vit_patch_size", "vit_dim", "vit_layers",
                    "vit_heads")
        for name in positive:
            value = getattr(a, name, None)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, not {value}")
        encoder_lr = getattr(a, "encoder_lr", None)
        if encoder_lr is not None and not encoder_lr >= 0:
            raise ValueError(f"--encoder-lr must be >= 0, not {encoder_lr}")
        if a.train_encoder_stages is not None and a.train_encoder_stages < 0:
            raise ValueError(f"--train-encoder-stages must be >= 0, not {a.train_encoder_stages}")
        if a.freeze_encoder and a.train_encoder_stages:
            raise ValueError("--freeze-encoder and --train-encoder-stages N > 0 contradict each other; pick one")
        if a.cache_encoder_features and not (a.freeze_encoder or a.train_encoder_stages == 0):
            raise ValueError("--cache-encoder-features needs a frozen encoder: add --freeze-encoder")
        if not 0.0 <= a.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1), not {a.label_smoothing}")
        if a.attention_reg < 0:
            raise ValueError(f"--attention-reg must be >= 0, not {a.attention_reg}")
        objective = getattr(a, "objective", "cross-entropy")
        if objective == "scst":
            if a.scst_samples < 2:
                raise ValueError(f"--scst-samples must be at least 2 (the baseline is the other samples' mean), "
                                 f"not {a.scst_samples}")
            if a.caption_sampling != "random":
                raise ValueError("--objective scst scores each image's samples against all its captions: use "
                                 "--caption-sampling random (one row per image), not all")
            if not getattr(a, "init_from", None):
                logger.warning("--objective scst without --init-from: from random weights the sampled captions "
                               "score near zero and there is little to reinforce; start from a cross-entropy model")
        check_caption_metrics_mode(a.caption_metrics)

    # ------------------------------------------------------------------------------------------------------------
    # Model

    def build_model(self) -> PreTrainedModel:
        a = self.args
        init_from = getattr(a, "init_from", None)
        max_length = a.max_caption_len + 1  # generated tokens after the start token, <eos> included
        if init_from:
            try:
                model, tokenizer, processor = load_captioner(init_from)
            except (OSError, ValueError, SafetensorError) as err:
                raise ValueError(f"--init-from {init_from}: not a loadable captioner folder ({err})") from err
            set_generation_defaults(model, tokenizer, max_length=max_length, num_beams=a.num_beams)
        else:
            tokenizer = self._tokenizer()
            model, processor = build_captioner(
                tokenizer,
                encoder=a.encoder,
                decoder=a.decoder,
                image_size=a.image_size,
                encoder_options=self._encoder_options(),
                decoder_options=self._decoder_options(),
                imagenet_weights=a.imagenet_weights,
                max_length=max_length,
                num_beams=a.num_beams,
            )
        set_encoder_trainable(model.encoder, 0 if a.freeze_encoder else a.train_encoder_stages)
        self.model, self.tokenizer, self.image_processor = model, tokenizer, processor
        self.max_length = max_length
        self.attention_reg = 0.0
        if isinstance(model.decoder, LSTMDecoderForCausalLM):  # also when --init-from brought another weight
            model.decoder.config.attention_regularization = self.attention_reg = a.attention_reg
        return model

    def _tokenizer(self):
        a = self.args
        if a.decoder not in DECODER_KINDS:  # a pretrained decoder comes with its own vocabulary
            try:
                tokenizer = AutoTokenizer.from_pretrained(a.decoder)
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"--decoder must be one of {', '.join(DECODER_KINDS)} or the path / Hub id of a pretrained causal "
                    f"LM with its tokenizer; loading a tokenizer from {a.decoder!r} failed: {err}"
                ) from err
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            return tokenizer
        return train_caption_tokenizer(
            self.data[self.train_split]["captions"], min_frequency=a.min_word_freq, max_length=a.max_caption_len + 2
        )

    def _encoder_options(self) -> dict[str, Any]:
        a = self.args
        if a.encoder == "vit":
            if a.output_stride is not None:
                raise ValueError("--output-stride is for CNN encoders; a ViT's regions are its patches (--vit-patch-size)")
            return {"patch_size": a.vit_patch_size, "hidden_size": a.vit_dim, "num_hidden_layers": a.vit_layers,
                    "num_attention_heads": a.vit_heads}
        return {"feature_stage": a.encoder_stage, "hidden_size": a.encoder_dim, "grid_size": a.grid_size,
                "output_stride": a.output_stride}

    def _decoder_options(self) -> dict[str, Any]:
        a = self.args
        if a.decoder in ("lstm", "gru"):
            return {"embedding_size": a.embed_dim, "hidden_size": a.decoder_dim, "attention_size": a.attention_dim,
                    "num_hidden_layers": a.decoder_layers or 1, "dropout": a.dropout,
                    "gated_context": not a.no_gated_context, "attention_regularization": a.attention_reg}
        if a.decoder == "transformer":
            if a.decoder_dim % a.decoder_heads:
                raise ValueError(f"--decoder-dim {a.decoder_dim} must be a multiple of --decoder-heads {a.decoder_heads}")
            return {"n_embd": a.decoder_dim, "n_layer": a.decoder_layers or 3, "n_head": a.decoder_heads,
                    "resid_pdrop": a.dropout, "embd_pdrop": a.dropout, "attn_pdrop": a.dropout}
        return {}

    def checkpoint_identity(self) -> dict[str, Any]:
        return vocabulary_fingerprint(self.tokenizer) if self.tokenizer is not None else {}

    def param_groups(self, model: PreTrainedModel) -> list[dict[str, Any]]:
        lr = self.args.lr
        encoder_lr = self.args.encoder_lr if self.args.encoder_lr is not None else lr
        encoder_ids = {id(p) for p in model.encoder.parameters()}
        groups = [
            {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids], "lr": lr},
            {"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": encoder_lr},
        ]
        return [g for g in groups if g["params"]]

    def save_pretrained(self, model: PreTrainedModel, out_dir: str) -> None:
        save_captioner(model, self.tokenizer, self.image_processor, out_dir)

    # ------------------------------------------------------------------------------------------------------------
    # Data

    def _require_model(self) -> None:
        if self.model is None:
            raise RuntimeError("call build_model() before asking the caption task for its datasets")

    def _features(self, split: str) -> torch.Tensor | None:
        if not self.args.cache_encoder_features:
            return None
        out = getattr(self.args, "output_dir", None)
        cache_file = f"{out}/encoder_features/{split}.safetensors" if out else None
        return cached_encoder_features(
            self.model.encoder, self.image_processor, self.data[split], cache_file=cache_file,
            batch_size=getattr(self.args, "eval_batch_size", 32), device=PartialState().device,
            progress=None if getattr(self.args, "no_progress", False) or not PartialState().is_main_process
            else f"encoder features ({split})",
        )

    def train_dataset(self) -> CaptionTrainDataset:
        self._require_model()
        split = self.data[self.train_split]
        gen = self.model.generation_config
        per_image = encode_caption_lists(self.tokenizer, split["captions"], self.args.max_caption_len,
                                         gen.decoder_start_token_id, gen.eos_token_id, self.train_split)
        features = self._features(self.train_split)
        images = None if features is not None else split.select_columns(["image"])
        self._train_ds = CaptionTrainDataset(images, per_image, self.args.caption_sampling,
                                             getattr(self.args, "seed", 0), features)
        if getattr(self.args, "objective", "cross-entropy") == "scst":
            # References without the start and end tokens, as the samples are scored.
            self.reward = CiderDReward([[ids[1:-1] for ids in caps] for caps in per_image])
        return self._train_ds

    def eval_dataset(self) -> CaptionEvalDataset:
        self._require_model()
        split = self.data[self.eval_split]
        if split.num_rows == 0:
            raise ValueError(f"the {self.eval_split!r} split is empty: nothing to validate on")
        features = self._features(self.eval_split)
        images = None if features is not None else split.select_columns(["image"])
        return CaptionEvalDataset(images, features)

    def set_epoch(self, epoch: int) -> None:
        if self._train_ds is not None:
            self._train_ds.set_epoch(epoch)

    def _encoder_inputs(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if "features" in examples[0]:
            return {"encoder_hidden_states": torch.stack([e["features"] for e in examples])}
        return {"pixel_values": self.image_processor([e["image"] for e in examples], return_tensors="pt")["pixel_values"]}

    def collate(self, examples: list[dict]) -> dict[str, Any]:
        """``decoder_input_ids`` (B, T) = <bos> w1 .. wn padded with <pad>; ``labels`` (B, T) = w1 .. wn <eos>
        padded with -100; plus ``pixel_values`` (B, 3, S, S) or cached ``encoder_hidden_states`` (B, N, C)."""
        pad = self.tokenizer.pad_token_id
        length = max(len(e["input_ids"]) for e in examples) - 1
        inputs = torch.full((len(examples), length), pad, dtype=torch.long)
        labels = torch.full((len(examples), length), -100, dtype=torch.long)
        for i, e in enumerate(examples):
            ids = torch.tensor(e["input_ids"], dtype=torch.long)
            inputs[i, : len(ids) - 1] = ids[:-1]
            labels[i, : len(ids) - 1] = ids[1:]
        return {"decoder_input_ids": inputs, "labels": labels, "row_index": torch.tensor([e["row"] for e in examples]),
                **self._encoder_inputs(examples)}

    def eval_collate(self, examples: list[dict]) -> dict[str, Any]:
        return {"row_index": torch.tensor([e["row"] for e in examples]), **self._encoder_inputs(examples)}

    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        """Encoder inputs for the model: ``pixel_values``, or cached features as ``encoder_outputs``."""
        if "encoder_hidden_states" in batch:
            return {"encoder_outputs": BaseModelOutput(last_hidden_state=batch["encoder_hidden_states"])}
        return {"pixel_values": batch["pixel_values"]}

    # ------------------------------------------------------------------------------------------------------------
    # Training and validation

    def training_step(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        if getattr(self.args, "objective", "cross-entropy") == "scst":
            return self_critical_loss(model, self.model_inputs(batch), batch["row_index"].tolist(), self.reward,
                                      num_samples=self.args.scst_samples, max_length=self.max_length,
                                      eos_id=self.model.generation_config.eos_token_id,
                                      dropout=self.args.scst_dropout == "on")
        labels = batch["labels"]
        use_penalty = self.attention_reg > 0
        # The padding mask changes nothing for right-padded captions under causal attention, but without it
        # transformers warns (GPT-2 decoder) that the padded input_ids may give wrong outputs.
        out = model(**self.model_inputs(batch), decoder_input_ids=batch["decoder_input_ids"],
                    decoder_attention_mask=(labels != -100).long(),
                    output_attentions=True if use_penalty else None, use_cache=False)
        logits = out.logits
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100,
                             label_smoothing=self.args.label_smoothing)
        logs = {"cross_entropy": float(ce.detach())}
        loss = ce
        if use_penalty:
            penalty = doubly_stochastic_penalty(out.cross_attentions[0][:, 0], labels != -100)
            loss = loss + self.attention_reg * penalty
            logs["attention_penalty"] = float(penalty.detach())
        return loss, logs

    def generate(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model.generate(**self.model_inputs(batch), num_beams=self.args.num_beams, max_length=self.max_length)

    def evaluate(self, model: torch.nn.Module, dataloader, accelerator) -> dict[str, float]:
        was_training = model.training
        model.eval()
        tokens, rows = [], []
        pad = self.tokenizer.pad_token_id
        with torch.no_grad():
            for batch in dataloader:
                generated = self.generate(model, batch)
                generated = accelerator.pad_across_processes(generated.contiguous(), dim=1, pad_index=pad)
                generated, index = accelerator.gather_for_metrics((generated, batch["row_index"]))
                tokens += generated.tolist()
                rows += index.tolist()
        model.train(was_training)
        if not rows:
            raise ValueError("the validation dataloader gave no images")
        predictions = [p.strip() for p in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        return caption_scores(predictions, rows, self.data[self.eval_split], self.args.caption_metrics,
                              accelerator.is_main_process)


def encode_caption_lists(tokenizer, captions: list[list[str]], max_words: int, start_id: int, eos_id: int,
                         split_name: str = "train") -> list[list[list[int]]]:
    """Per image, the token ids of each of its non-empty captions: start token, at most ``max_words`` tokens of
    words and punctuation, ``<eos>`` (added here: a pretrained decoder's tokenizer may add neither itself)."""
    captions = [[c for c in caps if c and c.strip()] for caps in captions]
    flat = [c for caps in captions for c in caps]
    if not flat:
        raise ValueError(f"the {split_name!r} split has no captions to train on")
    # verbose=False: the over-length captions are counted and cut here, with one clear warning below, instead of
    # transformers' "Token indices sequence length is longer than ..." about indexing errors that cannot happen.
    words = tokenizer(flat, add_special_tokens=False, verbose=False)["input_ids"]
    too_long = sum(1 for ids in words if len(ids) > max_words)
    if too_long:
        logger.warning(f"{too_long} of {len(flat)} {split_name} captions are longer than {max_words} tokens and were cut")
    encoded = [[start_id] + ids[:max_words] + [eos_id] for ids in words]
    per_image, start = [], 0
    for caps in captions:
        per_image.append(encoded[start: start + len(caps)])
        start += len(caps)
    missing = sum(1 for caps in captions if not caps)
    if missing:
        logger.warning(f"{missing} {split_name} images have no caption and are left out")
    return per_image


def check_caption_metrics_mode(mode: str) -> None:
    """Refuse before training what the first validation would hit after an epoch: official metrics without Java."""
    from metrics.caption_metrics import preflight

    problems = preflight(mode)
    if problems:
        raise ValueError(f"--caption-metrics {mode} cannot run on this machine:\n- " + "\n- ".join(problems)
                         + "\n(--caption-metrics fast scores in pure Python)")


def caption_scores(predictions: list[str], rows: list[int], split, mode: str = "fast",
                   log_warnings: bool = True) -> dict[str, float]:
    """Metrics of generated captions against the references of dataset rows ``rows``: BLEU-1..4, METEOR, ROUGE-L,
    CIDEr-D (``metrics.caption_metrics``), the distinct-caption share and, on data with a ``scene`` column
    (shapes), attribute accuracy; logs a warning when the captions collapsed to one."""
    from metrics.caption_metrics import score_captions  # the metrics family of metrics/caption_metrics

    captions = split["captions"]
    references = [captions[r] for r in rows]
    scores = score_captions(predictions, references, mode=mode)
    metrics = {k: float(v) for k, v in scores.items() if k != "mode"}
    metrics["metrics_mode"] = scores["mode"]  # every report says whether these are fast or official numbers
    metrics.update(caption_diversity(predictions))
    if "scene" in split.column_names:
        scenes = split["scene"]
        accuracy = shapes_attribute_accuracy(predictions, [scenes[r] for r in rows])
        metrics.update({k: v for k, v in accuracy.items() if not math.isnan(v)})
    warning = collapse_warning(predictions)
    if warning and log_warnings:
        logger.warning(warning)
    return metrics


def caption_diversity(predictions: list[str]) -> dict[str, float]:
    """``distinct_captions``: distinct captions / captions; ``top_caption_share``: share of the most common one."""
    counts = Counter(predictions)
    n = max(len(predictions), 1)
    return {"distinct_captions": len(counts) / n, "top_caption_share": max(counts.values(), default=0) / n}


def collapse_warning(predictions: list[str]) -> str | None:
    """A warning text when the captions collapsed to (almost) one, else None."""
    if len(predictions) < MIN_IMAGES_FOR_COLLAPSE_CHECK:
        return None
    d = caption_diversity(predictions)
    if d["distinct_captions"] < MIN_DISTINCT_SHARE or d["top_caption_share"] > MAX_TOP_CAPTION_SHARE:
        top, count = Counter(predictions).most_common(1)[0]
        return (
            f"caption collapse: {len(set(predictions))} distinct captions for {len(predictions)} images, "
            f"{count} of them are {top!r}. The model ignores the image (too few steps, a too high learning rate, "
            "or an encoder that gives the same features for every image)."
        )
    return None


__all__ = [
    "CaptionEvalDataset",
    "CaptionTask",
    "CaptionTrainDataset",
    "caption_diversity",
    "caption_scores",
    "check_caption_metrics_mode",
    "collapse_warning",
    "encode_caption_lists",
]
