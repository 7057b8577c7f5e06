"""Precomputed encoder features for training a caption decoder on a frozen encoder.

A frozen encoder gives the same ``last_hidden_state`` for an image in every epoch, so it is computed once per
dataset split and fed to the model as ``encoder_outputs=`` (``VisionEncoderDecoderModel`` then skips its encoder).
The features can be kept in a safetensors file whose metadata records what they were computed from (dataset
images, image processor settings, encoder weights and architecture), so a stale file is recomputed rather than reused.

>>> feats = cached_encoder_features(model.encoder, processor, ds["train"], "runs/x/encoder_features/train.safetensors")
>>> model(encoder_outputs=BaseModelOutput(last_hidden_state=feats[rows]), decoder_input_ids=...)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .decode_failures import decoded, named_decode_failure

logger = logging.getLogger(__name__)


def _weights_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _architecture(module: torch.nn.Module) -> str:
    # Weights alone do not pin the features: the same weights give a 7x7 or a 14x14 map by output_stride.
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return type(module).__name__
    # What saving and loading add or change (dtype: None when built, "float32" when loaded), not the computation;
    # the weights digest already covers the dtype.
    volatile = {"_name_or_path", "transformers_version", "architectures", "auto_map", "pretrained_weights", "dtype"}
    settings = {k: v for k, v in config.to_dict().items() if k not in volatile}
    return type(module).__name__ + json.dumps(settings, sort_keys=True, default=str)


def _images_digest(dataset, image_column: str) -> str:
    # Not the dataset's _fingerprint: that records how the dataset was made (the loader's code and arguments, every
    # transform since), so the same photos get a new one after a change to the loader, a select() or a dropped
    # column (on Flickr8k, between two sessions: identical features under a new key), and features that took minutes
    # would be computed again for nothing. The images, in order, are what the features depend on; hashing their
    # encoded bytes is quick (0.3 s for Flickr8k's 6,000 training photos, 0.16 GB, one core).
    h = hashlib.blake2b(digest_size=32)
    rows = dataset.select_columns([image_column]).with_format("arrow")
    for batch in rows.iter(batch_size=256):
        for value in batch.column(0).to_pylist():
            if isinstance(value, dict) and value.get("bytes") is not None:  # an Image feature with its file's bytes
                data = value["bytes"]
            elif isinstance(value, dict) and value.get("path"):  # only a path: the file's name, size and time
                path = value["path"]
                stat = os.stat(path) if os.path.exists(path) else None
                data = f"{path}|{stat.st_size if stat else ''}|{stat.st_mtime_ns if stat else ''}".encode()
            else:  # arrays or other values
                data = json.dumps(value, sort_keys=True, default=str).encode()
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.hexdigest()


def features_key(encoder: torch.nn.Module, image_processor, dataset, image_column: str = "image") -> str:
    """What the features depend on: the images in order, the preprocessing, the encoder weights and architecture."""
    if not hasattr(dataset, "select_columns") or not hasattr(dataset, "with_format"):
        raise ValueError("pass a datasets.Dataset to cache its encoder features, not a "
                         f"{type(dataset).__name__}")
    parts = [_images_digest(dataset, image_column), str(len(dataset)), image_column,
             image_processor.to_json_string(), _weights_digest(encoder), _architecture(encoder)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@torch.no_grad()
def compute_encoder_features(
    encoder: torch.nn.Module, image_processor, images, batch_size: int = 32, device: torch.device | str | None = None,
    progress: str | None = None,
) -> torch.Tensor:
    """(N, L, C) float32 ``last_hidden_state`` of ``encoder`` for a sequence of PIL images, in order. ``progress``:
    the label of a progress bar (minutes for a real dataset on a CPU), None for none."""
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    dtype = next(encoder.parameters()).dtype
    was_training, home = encoder.training, next(encoder.parameters()).device
    encoder.eval().to(device)
    chunks = []
    try:
        for start in tqdm(range(0, len(images), batch_size), desc=progress, unit="batch", disable=progress is None):
            batch = [images[i] for i in range(start, min(start + batch_size, len(images)))]
            pixels = image_processor(batch, return_tensors="pt")["pixel_values"].to(device, dtype)
            chunks.append(encoder(pixel_values=pixels).last_hidden_state.float().cpu())
    finally:
        encoder.train(was_training).to(home)
    if not chunks:
        raise ValueError("no images to encode")
    return torch.cat(chunks)


def cached_encoder_features(
    encoder: torch.nn.Module,
    image_processor,
    dataset,
    cache_file: str | Path | None = None,
    batch_size: int = 32,
    image_column: str = "image",
    device: torch.device | str | None = None,
    progress: str | None = None,
) -> torch.Tensor:
    """``compute_encoder_features`` for every row of a ``datasets.Dataset``, read from / written to ``cache_file``
    (safetensors) when given. The file is reused only when its recorded key matches (see ``features_key``)."""
    if image_column not in dataset.column_names:
        raise ValueError(f"the dataset has no {image_column!r} column to encode (columns: {dataset.column_names})")
    key = features_key(encoder, image_processor, dataset, image_column) if cache_file else None
    if cache_file and Path(cache_file).is_file():
        try:
            with safe_open(str(cache_file), framework="pt") as f:
                if (f.metadata() or {}).get("key") == key:
                    return f.get_tensor("features")
        except (SafetensorError, OSError) as err:  # a run killed while copying it, a disk error: compute anew
            logger.warning("encoder feature cache %s is damaged (%s); computing the features again", cache_file, err)
    images = dataset.select_columns([image_column])
    features = compute_encoder_features(encoder, image_processor, _Column(images, image_column), batch_size, device,
                                        progress)
    if cache_file:
        path = Path(cache_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({"features": features.contiguous()}, str(tmp), metadata={"key": key})
        os.replace(tmp, path)  # atomic: processes that race on the same file never read a half-written one
    return features


class _Column:
    """Index a datasets column lazily (images are decoded when read, not all at once)."""

    def __init__(self, dataset, column: str):
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        with named_decode_failure(i, "image to encode, row"):
            return decoded(self.dataset[i][self.column])


__all__ = ["cached_encoder_features", "compute_encoder_features", "features_key"]
