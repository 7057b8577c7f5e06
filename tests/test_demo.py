"""``scripts/demo.py`` (what ``make demo`` runs) end to end with a tiny model: data, training, evaluation, and the
second run reusing the trained model instead of training again. Serving is tested in test_serve.py."""

import json
import subprocess
import sys

from tests.conftest import REPO

TINY = [
    "--data-set=num_train=32", "--imagenet-weights=none", "--encoder=tu-test_efficientnet", "--encoder-depth=3",
    "--decoder-channels=16,8,8", "--region-stage=-1", "--hidden-size=32", "--embed-dim=16", "--decoder-dim=32",
    "--attention-dim=16", "--max-steps=4", "--num-beams=1", "--eval-batch-size=50",
]


def run_demo(out, *extra):
    command = [sys.executable, "scripts/demo.py", "--out", str(out), "--no-serve", "--epochs", "1",
               *(f"--train-arg={a}" for a in TINY), *extra]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_demo_trains_evaluates_and_then_reuses_the_model(tmp_path):
    out = tmp_path / "demo"
    first = run_demo(out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    model = out / "caption_seg_model"
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= {
        p.name for p in model.iterdir()}
    assert not (out / "caption_seg_model.partial").exists()
    metrics = json.loads((out / "eval_test" / "metrics.json").read_text())
    assert metrics["num_images"] == 200 and 0.0 <= metrics["mIoU"] <= 1.0 and "CIDEr" in metrics
    assert len(list((out / "eval_test" / "overlays").glob("*.png"))) == 8
    assert (out / "shapes_dataset").is_dir()
    assert "reusing" not in first.stdout

    weights = (model / "model.safetensors").stat().st_mtime_ns
    second = run_demo(out)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "reusing the trained model" in second.stdout
    assert "training the segmentation-aware captioner" not in second.stdout
    assert (model / "model.safetensors").stat().st_mtime_ns == weights
