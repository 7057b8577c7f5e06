"""The contract between ``scripts/train.py`` (which owns only the loop) and a task (which owns everything else).

A task is chosen with ``--task NAME``. It adds its own command-line flags, builds its model from a dataset, turns
dataset rows into batches, computes the training loss, runs validation and saves the model folder. The loop
(Accelerate, optimizer, schedule, accumulation, clipping, checkpoints, ``--resume``, TensorBoard, progress bar,
best-checkpoint selection, ``--push-to-hub``) is the same for every task.
"""

from __future__ import annotations

import argparse
from typing import Any, ClassVar

import datasets
import numpy as np
import torch
from transformers import PreTrainedModel

from datasets_cfg import DatasetConfig

TASKS: dict[str, type["TrainingTask"]] = {}


def register_task(cls):
    TASKS[cls.name] = cls
    return cls


class TrainingTask:
    name: ClassVar[str]
    # Validation metric that picks the best checkpoint, and its direction.
    main_metric: ClassVar[str]
    greater_is_better: ClassVar[bool] = True

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the task's own flags (model size, loss, augmentation, ...)."""

    def __init__(self, args: argparse.Namespace, data: datasets.DatasetDict, data_config: DatasetConfig):
        self.args = args
        self.data = data
        self.data_config = data_config
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the loop at the start of every epoch (before its DataLoader iterator is made)."""
        self.epoch = epoch

    def sample_rng(self, index: int) -> np.random.Generator:
        """The random stream for augmenting training sample ``index`` in the current epoch.

        Augmentation must draw from this, never from the global RNGs: Accelerate's DataLoader prefetches a batch
        ahead, so a checkpoint's saved global RNG state already includes the next batch's draws, and an augmentation
        using it would make ``--resume`` inexact (and differ between 1 and N processes).
        """
        return np.random.default_rng([self.args.seed, self.epoch, index])

    def build_model(self) -> PreTrainedModel:
        """A fresh model for this dataset (or one loaded from ``--init-from``)."""
        raise NotImplementedError

    def checkpoint_identity(self) -> dict[str, Any]:
        """What a checkpoint must share with this run to be resumed, besides the model's config (which the loop
        compares itself): JSON-serialisable, e.g. a caption vocabulary. Saved with every checkpoint and compared by
        ``--resume``; a difference is refused. Call after ``build_model``."""
        return {}

    def param_groups(self, model: PreTrainedModel) -> list[dict[str, Any]]:
        """AdamW parameter groups; override to give the encoder its own learning rate."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": self.args.lr}]

    def train_dataset(self) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def eval_dataset(self) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def collate(self, examples: list[dict]) -> dict[str, Any]:
        raise NotImplementedError

    def eval_collate(self, examples: list[dict]) -> dict[str, Any]:
        return self.collate(examples)

    def training_step(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss to back-propagate, scalars to log)."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, dataloader, accelerator) -> dict[str, float]:
        """Validation metrics over ``dataloader`` gathered across processes (``accelerator.gather_for_metrics``).
        Must include ``main_metric``; warnings (e.g. collapse to one class or one caption) are logged here."""
        raise NotImplementedError

    def save_pretrained(self, model: PreTrainedModel, out_dir: str) -> None:
        """Write the model folder: config, safetensors weights and whatever processor/tokenizer it needs."""
        model.save_pretrained(out_dir)
