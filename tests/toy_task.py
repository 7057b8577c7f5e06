"""A toy task for testing scripts/train.py apart from any real model (``--task-module tests.toy_task --task toy``)."""

import numpy as np
import torch
from transformers import PretrainedConfig, PreTrainedModel

from datasets_cfg import DatasetError
from models.task import TrainingTask, register_task


class ToyConfig(PretrainedConfig):
    model_type = "captionseg_toy"

    def __init__(self, num_classes=7, **kwargs):
        self.num_classes = num_classes
        super().__init__(**kwargs)


class ToyModel(PreTrainedModel):
    """Predicts which shape classes are present from a 16x16 thumbnail; has dropout so resume must restore RNG."""

    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3),
            torch.nn.Linear(32, config.num_classes),
        )
        self.post_init()

    def forward(self, pixel_values):
        return self.net(pixel_values)


@register_task
class ToyTask(TrainingTask):
    name = "toy"
    main_metric = "accuracy"

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--toy-noise", type=float, default=0.1)
        parser.add_argument("--toy-broken-validation", action="store_true",
                            help="validation meets an image that does not decode")

    def build_model(self):
        if self.args.toy_noise < 0:
            raise ValueError("--toy-noise must be >= 0")
        return ToyModel(ToyConfig())

    def _rows(self, split):
        ds = self.data[split]
        return [(np.asarray(r["image"].resize((16, 16)), np.float32) / 255.0, r["mask_classes"]) for r in ds]

    def train_dataset(self):
        rows = self._rows(self.args.train_split)
        task = self

        class Noisy(torch.utils.data.Dataset):
            # Random augmentation from the per-sample stream, as models/task.py asks of every task.
            def __len__(self):
                return len(rows)

            def __getitem__(self, i):
                img, classes = rows[i]
                noise = task.sample_rng(i).normal(0, task.args.toy_noise, img.shape).astype(np.float32)
                return img + noise, classes

        return Noisy()

    def eval_dataset(self):
        return self._rows(self.args.eval_split)

    def collate(self, examples):
        x = torch.stack([torch.from_numpy(img).permute(2, 0, 1) for img, _ in examples])
        y = torch.zeros(len(examples), 7)
        for i, (_, classes) in enumerate(examples):
            y[i, classes] = 1
        return {"pixel_values": x, "labels": y}

    def training_step(self, model, batch):
        logits = model(batch["pixel_values"])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"])
        return loss, {"positives": float(batch["labels"].mean())}

    def evaluate(self, model, dataloader, accelerator):
        if self.args.toy_broken_validation:
            raise DatasetError("validation image 3 failed to decode (OSError: image file is truncated)")
        correct = total = 0
        for batch in dataloader:
            pred = (model(batch["pixel_values"]) > 0).float()
            pred, labels = accelerator.gather_for_metrics((pred, batch["labels"]))
            correct += (pred == labels).float().sum().item()
            total += labels.numel()
        return {"accuracy": correct / total}
