"""Run one training command and one evaluation command of this project, timed, for the benchmarks.

Benchmarks call ``scripts/train.py`` and ``scripts/evaluate.py`` as a user would (subprocesses), so what they
measure is the project's own command line, not a private shortcut.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # The model name alone hides what matters most here: two "AMD EPYC" VMs differed 2.7x in bf16 throughput.
    import torch

    try:
        bf16 = "native bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "bf16 emulated"
    except (AttributeError, RuntimeError):
        bf16 = "bf16 support unknown"
    return (f"{os.cpu_count()} cores, {cpu} ({torch.backends.cpu.get_cpu_capability()}, {bf16}), "
            f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}")


def run(args: list[str], log_path: Path) -> float:
    """Run ``python args...`` from the repository root, streaming its output to ``log_path``; returns seconds."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.run([sys.executable, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(args)}\n{tail}")
    return seconds


def add_run_arguments(parser, benchmark: str, shared_folder: str, out_help: str) -> None:
    """The flags every real-data benchmark shares: ``--root`` (default ``../shared/data/SHARED_FOLDER``),
    ``--work-dir``, ``--out``, ``--threads`` and, after ``--``, more ``scripts/train.py`` arguments."""
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / shared_folder), help="the dataset's folder")
    parser.add_argument("--work-dir", default=f"outputs/benchmarks/{benchmark}", help="training runs go here")
    parser.add_argument("--out", help=out_help)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="more scripts/train.py arguments (after --), e.g. -- --seed 1")


def train_and_evaluate(name: str, train_args: list[str], eval_args: list[str], out_dir: Path) -> dict:
    """Train into ``out_dir/name``, evaluate its best model; returns timings and the evaluation metrics."""
    run_dir = (REPO / out_dir / name).resolve()
    train_s = run(["scripts/train.py", *train_args, "--output-dir", str(run_dir), "--no-progress"], run_dir / "train.log")
    report = run_dir / "eval"
    eval_s = run(["scripts/evaluate.py", *eval_args, "--model", str(run_dir / "best"), "--out", str(report)], run_dir / "eval.log")
    metrics = json.loads((report / "metrics.json").read_text())
    best = json.loads((run_dir / "best" / "eval_metrics.json").read_text())
    return {"name": name, "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
            "best_step": best.get("step"), "metrics": metrics, "run_dir": str(run_dir)}


def write_results(path: Path, payload: dict) -> None:
    path = REPO / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"results written to {path}")
