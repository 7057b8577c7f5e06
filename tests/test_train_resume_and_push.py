"""scripts/train.py end to end for the ``caption`` and ``segment`` tasks on their own: an interrupted run resumed
with ``--resume latest`` ends with the same weights as a straight run, and ``--push-to-hub`` uploads a folder that
loads back as the trained model (the Hub replaced by a local stand-in: tests never reach the network)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scripts.train import main
from tests.saved_weights import assert_same_weights

DATA = ["--dataset", "shapes", "--data-set", "num_train=16", "--data-set", "num_validation=4", "--data-set",
        "num_test=0", "--data-set", "image_size=32"]
# --cpu also where a GPU is present: exact resume needs bit-reproducible steps (see tests/test_caption_seg_task.py).
LOOP = ["--batch-size", "4", "--no-progress", "--logging-steps", "2", "--epochs", "2", "--checkpoint-every", "3",
        "--cpu", "--threads", "1"]
TASKS = {
    # A captioner whose encoder trains too, so that the resumed optimizer state covers both parts.
    "caption": ["--task", "caption", "--image-size", "32", "--encoder", "resnet10t", "--decoder-dim", "32",
                "--embed-dim", "16", "--attention-dim", "16", "--num-beams", "1", "--max-caption-len", "12"],
    # Augmentation draws random crops and flips: a resumed run must redraw them alike.
    "segment": ["--task", "segment", "--encoder", "tu-test_efficientnet", "--encoder-depth", "3",
                "--decoder-channels", "16,16,8", "--crop-size", "32", "--augment", "shapes"],
}


def argv(task: str, out: Path, cache: str, *extra: str) -> list[str]:
    return [*TASKS[task], *DATA, "--cache-dir", cache, *LOOP, "--output-dir", str(out), *extra]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_resume_continues_exactly(task, tmp_path, cache_dir):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(argv(task, straight, cache_dir)) == 0
    # Stopped at step 3 of 8 (4 steps per epoch: mid-epoch), then resumed to the end.
    assert main(argv(task, resumed, cache_dir, "--stop-after-steps", "3")) == 0
    assert (resumed / "checkpoints" / "step_3").is_dir()
    assert main(argv(task, resumed, cache_dir, "--resume", "latest", "--keep-checkpoints", "5")) == 0
    b = assert_same_weights(straight / "last", resumed / "last")
    # The second half really trained: most weights moved after step 3.
    at_3 = load_file(str(resumed / "checkpoints" / "step_3" / "model.safetensors"))
    moved = [k for k in b if b[k].is_floating_point() and not torch.equal(at_3[k], b[k])]
    assert len(moved) > len(b) // 2, f"only {len(moved)} of {len(b)} tensors changed after step 3"


class LocalHub:
    """Stands in for ``huggingface_hub.HfApi`` where ``transformers``' stock ``push_to_hub`` calls it: repositories
    are folders, a commit copies its files in."""

    def __init__(self, root: Path):
        self.root = root
        self.commits: list[tuple[str, list[str]]] = []

    def create_repo(self, repo_id, **_):
        (self.root / repo_id).mkdir(parents=True, exist_ok=True)
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def create_commit(self, repo_id, operations, **_):
        names = []
        for op in operations:
            target = self.root / repo_id / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(Path(op.path_or_fileobj).read_bytes())
            names.append(op.path_in_repo)
        self.commits.append((repo_id, names))


@pytest.fixture
def local_hub(tmp_path, monkeypatch) -> LocalHub:
    import transformers.utils.hub

    hub = LocalHub(tmp_path / "hub")
    monkeypatch.setattr(transformers.utils.hub, "hf_api", lambda: hub)
    return hub


# What a user of each task expects to find on the Hub, how they load it (in a fresh process that never imported
# this project, as a Hub user would), and the commits: the model, the image processor and the captioner's tokenizer.
PUSHED = {
    "caption": ({"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "preprocessor_config.json"},
                "from transformers import AutoModelForImageTextToText as M, VisionEncoderDecoderModel as Base", 3),
    "segment": ({"config.json", "model.safetensors", "preprocessor_config.json"},
                "from transformers import AutoModelForSemanticSegmentation as M, PreTrainedModel as Base", 2),
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_push_to_hub_uploads_a_folder_that_loads_as_the_trained_model(task, tmp_path, cache_dir, local_hub):
    out = tmp_path / "run"
    assert main(argv(task, out, cache_dir, "--epochs", "1", "--push-to-hub", "--hub-model-id", "me/tiny")) == 0
    pushed = local_hub.root / "me" / "tiny"
    files, load, commits = PUSHED[task]
    assert files <= {p.name for p in pushed.iterdir()}, sorted(p.name for p in pushed.iterdir())
    assert [repo for repo, _ in local_hub.commits] == ["me/tiny"] * commits
    # The pushed weights are the best checkpoint's.
    best, up = load_file(str(out / "best" / "model.safetensors")), load_file(str(pushed / "model.safetensors"))
    assert best.keys() == up.keys() and all(torch.equal(best[k], up[k]) for k in best)
    code = (f"{load}; import sys; m = M.from_pretrained({str(pushed)!r}, trust_remote_code=True); "
            "print(isinstance(m, Base), type(m).__module__.split('.')[0], 'models' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    # The model's own code came with the upload (transformers_modules), not from this project.
    assert res.stdout.strip().splitlines()[-1] == "True transformers_modules False", res.stdout


def test_push_to_hub_without_a_repository_id_uses_the_output_folder_name(tmp_path, cache_dir, local_hub):
    out = tmp_path / "my-segmenter"
    assert main(argv("segment", out, cache_dir, "--epochs", "1", "--push-to-hub")) == 0
    assert (local_hub.root / "my-segmenter" / "model.safetensors").is_file()
