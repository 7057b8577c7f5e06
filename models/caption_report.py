"""The caption evaluation report of ``scripts/evaluate.py --task caption``.

``write_caption_report(model, tokenizer, image_processor, dataset, out_dir)`` captions every image of a split and
writes into ``out_dir``:

- ``metrics.json`` and ``metrics.md`` (a table): BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (``metrics.caption_metrics``),
  the share of distinct captions and, on the synthetic shapes data, the attribute accuracy;
- ``predictions.jsonl``: one line per image with its id, the generated caption and the references;
- ``samples.png``: a grid of photos with the generated caption (bold) and references under each;
- ``attention/<image_id>.png`` for the chosen examples: the photo once per generated word, with where the decoder
  looked for that word laid over it. The LSTM/GRU decoder gives its attention weights over the H x W regions;
  a transformer decoder its cross-attentions averaged over heads and layers. The region grid is upsampled over the
  photo (bilinear).
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from torch.nn import functional as F

from .caption_ensemble import CaptionEnsemble
from .caption_task import caption_diversity
from .caption_tokenizer import display_tokens
from .lstm_decoder import LSTMDecoderConfig
from .region_encoders import region_layout
from .shapes_attribute_accuracy import shapes_attribute_accuracy

METRIC_ORDER = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generate_caption_ids(
    model, image_processor, images: Sequence, batch_size: int = 16, num_beams: int | None = None,
    max_length: int | None = None, length_penalty: float | None = None,
) -> list[list[int]]:
    """Generated token ids (start token included) for each image, with the model's generation config unless
    ``num_beams`` / ``max_length`` / ``length_penalty`` are given (``length_penalty``: beam scores are divided by
    length ** length_penalty, so > 0 favours longer captions; stock ``generate`` applies it)."""
    was_training = model.training
    model.eval()
    options = {k: v for k, v in (("num_beams", num_beams), ("max_length", max_length),
                                 ("length_penalty", length_penalty)) if v is not None}
    out: list[list[int]] = []
    try:
        for start in tqdm(range(0, len(images), batch_size), desc="caption", unit="batch", disable=len(images) <= batch_size):
            batch = [images[i] for i in range(start, min(start + batch_size, len(images)))]
            pixels = image_processor(batch, return_tensors="pt")["pixel_values"].to(_device(model))
            out += model.generate(pixel_values=pixels, **options).tolist()
    finally:
        model.train(was_training)
    return out


def generate_captions(model, tokenizer, image_processor, images: Sequence, **kwargs) -> list[str]:
    """One caption per image (see ``generate_caption_ids`` for the options)."""
    ids = generate_caption_ids(model, image_processor, images, **kwargs)
    return [c.strip() for c in tokenizer.batch_decode(ids, skip_special_tokens=True)]


@torch.no_grad()
def attention_maps(model, tokenizer, image_processor, image, caption_ids: Sequence[int] | None = None):
    """Where the decoder looked for each word of a caption.

    Args:
        caption_ids: the caption's token ids, start token first (as ``generate`` returns them); None: generate.

    Returns:
        (words, maps): ``words[t]`` is the t-th generated word and ``maps[t]`` a (rows, columns) array of the
        attention weights over the region grid while predicting it (summing to 1 over the grid, or less for a ViT
        whose [CLS] token took the rest).
    """
    was_training = model.training
    model.eval()
    device = _device(model)
    pixels = image_processor([image], return_tensors="pt")["pixel_values"].to(device, dtype=model.dtype)
    if caption_ids is None:
        caption_ids = model.generate(pixel_values=pixels)[0].tolist()
    ids = list(caption_ids)
    special = set(tokenizer.all_special_ids)
    if ids and ids[0] == model.generation_config.decoder_start_token_id:
        ids = ids[1:]
    while ids and ids[-1] in special:  # <eos> and padding after it
        ids = ids[:-1]
    if not ids:
        model.train(was_training)
        return [], np.zeros((0, 1, 1), dtype=np.float32)
    start = model.generation_config.decoder_start_token_id
    decoder_input_ids = torch.tensor([[start] + ids[:-1]], device=device)
    restore = None
    is_lstm = model.decoder.config.model_type == LSTMDecoderConfig.model_type  # trust_remote_code classes differ
    if not is_lstm and model.decoder.config._attn_implementation != "eager":
        # sdpa cannot return attention weights; switch to eager for this forward only.
        restore = model.decoder.config._attn_implementation
        model.decoder.set_attn_implementation("eager")
    try:
        # The encoder runs apart so that only the decoder is asked for attention weights.
        encoder_outputs = model.encoder(pixel_values=pixels)
        out = model(encoder_outputs=encoder_outputs, decoder_input_ids=decoder_input_ids, output_attentions=True,
                    use_cache=False)
    finally:
        if restore is not None:
            model.decoder.set_attn_implementation(restore)
        model.train(was_training)
    if not out.cross_attentions or any(a is None for a in out.cross_attentions):
        raise ValueError(f"the decoder {type(model.decoder).__name__} returned no cross-attention weights")
    weights = torch.stack([a[0].float() for a in out.cross_attentions]).mean(dim=(0, 1))  # layers, heads -> (T, N)
    height, width = pixels.shape[-2:]
    rows, cols, leading = region_layout(model.encoder, height, width)
    grid = weights[:, leading:]
    if grid.shape[-1] != rows * cols:
        raise ValueError(f"{grid.shape[-1]} regions do not form the expected {rows} x {cols} grid")
    words = display_tokens(tokenizer, ids, skip_special_tokens=False)
    return words, grid.reshape(-1, rows, cols).cpu().numpy()


def save_attention_figure(image, words: Sequence[str], maps: np.ndarray, path: str | Path, columns: int = 5,
                          size: int = 224) -> Path:
    """The photo once per word with its attention map (upsampled, normalised per word) laid over it."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    photo = np.asarray(image.convert("RGB").resize((size, size)))
    n = len(words) + 1
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(photo)
    axes.flat[0].set_title(textwrap.fill(" ".join(words), 30) if words else "(empty caption)", fontsize=7)
    for ax, word, weights in zip(axes.flat[1:], words, maps):
        up = F.interpolate(torch.as_tensor(weights)[None, None].float(), size=(size, size), mode="bilinear",
                           align_corners=False)[0, 0].numpy()
        up = (up - up.min()) / (up.max() - up.min() + 1e-8)
        ax.imshow(photo)
        ax.imshow(up, cmap="jet", alpha=0.45)
        ax.set_title(word, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save_sample_grid(images: Sequence, predictions: Sequence[str], references: Sequence[Sequence[str]],
                     path: str | Path, columns: int = 4, max_references: int = 3, size: int = 192) -> Path:
    """A grid of photos, each with its generated caption (bold) and up to ``max_references`` references."""
    if not images:
        raise ValueError("no images for the sample grid")
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 5.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, pred, refs in zip(axes.flat, images, predictions, references):
        ax.imshow(np.asarray(image.convert("RGB").resize((size, size))))
        ax.text(0.0, -0.03, textwrap.fill(pred or "(empty)", 38), transform=ax.transAxes, va="top", fontsize=8,
                fontweight="bold")
        ref_text = "\n".join(textwrap.fill("- " + r, 42) for r in list(refs)[:max_references])
        ax.text(0.0, -0.17, ref_text, transform=ax.transAxes, va="top", fontsize=6.5, color="dimgray")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def metrics_table(metrics: dict[str, float]) -> str:
    """A Markdown table of the metrics, the caption metrics first."""
    keys = [k for k in METRIC_ORDER if k in metrics] + sorted(k for k in metrics if k not in METRIC_ORDER)
    lines = ["| metric | value |", "|---|---|"]
    for k in keys:
        v = metrics[k]
        if isinstance(v, (list, tuple)):
            v = ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v)
        lines.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return "\n".join(lines) + "\n"


def write_caption_report(
    model,
    tokenizer,
    image_processor,
    dataset,
    out_dir: str | Path,
    batch_size: int = 16,
    num_beams: int | None = None,
    max_length: int | None = None,
    length_penalty: float | None = None,
    metrics_mode: str = "fast",
    num_samples: int = 16,
    attention_examples: int | Sequence[int] = 4,
    details: dict | None = None,
) -> dict[str, float]:
    """Caption every row of ``dataset`` (columns ``image``, ``captions``; ``image_id`` and ``scene`` if present)
    and write the report files listed in the module docstring. Returns the metrics.

    Args:
        model: a captioner, or a ``CaptionEnsemble`` of several (its attention figures show its first member's
            attention, for the ensemble's caption).
        attention_examples: how many rows (the first ones) or which row indices get an attention figure.
        details: more entries for ``metrics.json`` (e.g. the ensemble's members), recorded as they are.
    """
    from metrics.caption_metrics import score_captions

    for column in ("image", "captions"):
        if column not in dataset.column_names:
            raise ValueError(f"the dataset has no {column!r} column (columns: {dataset.column_names})")
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: nothing to caption")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = dataset.select_columns(["image"])
    image_list = _LazyImages(images)
    ids = generate_caption_ids(model, image_processor, image_list, batch_size, num_beams, max_length, length_penalty)
    predictions = [c.strip() for c in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    references = dataset["captions"]
    image_ids = dataset["image_id"] if "image_id" in dataset.column_names else [str(i) for i in range(len(dataset))]

    scores = score_captions(predictions, references, mode=metrics_mode)
    metrics: dict = {k: float(v) for k, v in scores.items() if k != "mode"}
    metrics["metrics_mode"] = scores.get("mode", metrics_mode)
    metrics.update(caption_diversity(predictions))
    if "scene" in dataset.column_names:
        accuracy = shapes_attribute_accuracy(predictions, dataset["scene"])
        metrics.update({k: v for k, v in accuracy.items() if not math.isnan(v)})
    metrics["num_images"] = len(predictions)
    metrics["num_beams"] = int(num_beams if num_beams is not None else model.generation_config.num_beams)
    if length_penalty is None:
        length_penalty = model.generation_config.length_penalty
    # Unset in the generation config means transformers' own default, 1.0 (GenerationConfig's defaults table).
    metrics["length_penalty"] = float(1.0 if length_penalty is None else length_penalty)
    metrics.update(details or {})

    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "metrics.md").write_text(metrics_table(metrics))
    with (out_dir / "predictions.jsonl").open("w") as f:
        for image_id, pred, refs in zip(image_ids, predictions, references):
            f.write(json.dumps({"image_id": image_id, "prediction": pred, "references": refs}) + "\n")
    shown = list(range(min(num_samples, len(predictions))))
    if shown:
        save_sample_grid([image_list[i] for i in shown], [predictions[i] for i in shown],
                         [references[i] for i in shown], out_dir / "samples.png")
    chosen = range(min(attention_examples, len(dataset))) if isinstance(attention_examples, int) else attention_examples
    drawn = model.members[0] if isinstance(model, CaptionEnsemble) else model  # an ensemble has no one attention
    for i in chosen:
        if not 0 <= i < len(dataset):
            raise ValueError(f"attention example {i} is not a row of the dataset (0..{len(dataset) - 1})")
        words, maps = attention_maps(drawn, tokenizer, image_processor, image_list[i], ids[i])
        safe_id = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(image_ids[i]))
        save_attention_figure(image_list[i], words, maps, out_dir / "attention" / f"{safe_id}.png")
    return metrics


class _LazyImages:
    """Decode a split's images one at a time."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i]["image"]


__all__ = [
    "attention_maps",
    "generate_caption_ids",
    "generate_captions",
    "metrics_table",
    "save_attention_figure",
    "save_sample_grid",
    "write_caption_report",
]
