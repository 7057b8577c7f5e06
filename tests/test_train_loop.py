"""scripts/train.py's loop, driven by a toy task so that it is tested apart from any real model: exact --resume,
gradient accumulation, checkpoints, best-model selection, TensorBoard logs and curves."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import PretrainedConfig, PreTrainedModel

from models.task import TASKS, TrainingTask, register_task


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

    def build_model(self):
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
        correct = total = 0
        for batch in dataloader:
            pred = (model(batch["pixel_values"]) > 0).float()
            pred, labels = accelerator.gather_for_metrics((pred, batch["labels"]))
            correct += (pred == labels).float().sum().item()
            total += labels.numel()
        return {"accuracy": correct / total}


from scripts.train import main  # noqa: E402  (after the toy task is registered)


@pytest.fixture
def base_args(tmp_path, cache_dir):
    return [
        "--task", "toy", "--dataset", "shapes", "--cache-dir", cache_dir,
        "--data-set", "num_train=40", "--data-set", "num_validation=8", "--data-set", "num_test=0",
        "--data-set", "image_size=32", "--batch-size", "4", "--lr", "0.01", "--warmup-steps", "2",
        "--no-progress", "--logging-steps", "2",
    ]


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_resume_continues_exactly(tmp_path, base_args):
    straight = tmp_path / "straight"
    assert main(base_args + ["--output-dir", str(straight), "--epochs", "2", "--checkpoint-every", "7"]) == 0
    # Stop an identical run at step 7 (mid-epoch: 10 steps per epoch), then resume it to the end.
    resumed = tmp_path / "resumed"
    assert main(base_args + ["--output-dir", str(resumed), "--epochs", "2", "--checkpoint-every", "7", "--stop-after-steps", "7"]) == 0
    assert (resumed / "checkpoints" / "step_7").is_dir()
    assert main(base_args + ["--output-dir", str(resumed), "--epochs", "2", "--checkpoint-every", "7", "--resume", "latest", "--keep-checkpoints", "5"]) == 0
    a, b = _weights(straight / "last"), _weights(resumed / "last")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    # The second half really trained: the final weights differ from those saved at step 7.
    from safetensors.torch import load_file

    at_7 = load_file(str(resumed / "checkpoints" / "step_7" / "model.safetensors"))
    assert not torch.equal(at_7["net.1.weight"], b["net.1.weight"])


def test_outputs_best_model_logs_and_curves(tmp_path, base_args):
    out = tmp_path / "run"
    assert main(base_args + ["--output-dir", str(out), "--epochs", "3", "--grad-accum", "2"]) == 0
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    steps = [h["step"] for h in history if "train/loss" in h]
    assert max(steps) == 3 * math.ceil(10 / 2)  # 10 batches per epoch, 2 per optimizer step
    evals = [h for h in history if "eval/accuracy" in h]
    assert len(evals) == 3
    best = json.loads((out / "best" / "eval_metrics.json").read_text())
    assert best["accuracy"] == max(h["eval/accuracy"] for h in evals)
    assert (out / "best" / "model.safetensors").is_file() and (out / "last" / "config.json").is_file()
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    assert (out / "training_curves.png").stat().st_size > 1000
    first, last = history[0]["train/loss"], [h for h in history if "train/loss" in h][-1]["train/loss"]
    assert last < first


def test_bad_flags_and_dataset_errors(tmp_path, base_args, capsys):
    assert main(base_args[:2] + ["--dataset", "camvid", "--output-dir", str(tmp_path / "x")]) == 2
    assert "--root" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(base_args + ["--output-dir", str(tmp_path / "y"), "--batch-size", "0"])
    with pytest.raises(SystemExit, match="no checkpoint"):
        main(base_args + ["--output-dir", str(tmp_path / "z"), "--resume", "latest"])
