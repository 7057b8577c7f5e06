"""Segmentation training throughput on CamVid crops: bf16 autocast + channels-last vs fp32, and the project's loop
vs a bare PyTorch loop, all in one run.

    python benchmarks/segmentation_throughput.py [--steps 30] [--out benchmarks/results/segmentation_throughput.json]

Same model everywhere: the project's ``UnetForSemanticSegmentation`` with the ``tu-tf_efficientnet_lite0``
encoder and the offline ImageNet weights (CE + Dice loss), batch 8 of 288x384 crops, AdamW, 2 threads.

- **bare loop**: forward, backward and ``optimizer.step()`` on one fixed in-memory batch (no data loading, no
  Accelerate), timed after 3 warm-up steps; an upper bound for any loop.
- **project loop**: ``scripts/train.py --task segment`` on real CamVid (albumentations crops, the image processor,
  Accelerate, logging), ``--max-steps``; its images/s is the ``train/images_per_s`` it logs for the steps after
  the first logging window (so start-up and the first steps' warm-up do not count).

Targets (issue 4): bf16 + channels-last >= 1.5x fp32; the project loop within 10 % of the bare loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.training_run import machine, run, write_results  # noqa: E402

BATCH, CROP = 8, (288, 384)


def bare_loop(steps: int, bf16: bool, threads: int) -> float:
    """Images/s of a plain training loop over one in-memory batch."""
    import contextlib

    import torch

    from models.unet import UnetConfig, UnetForSemanticSegmentation

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = UnetConfig(encoder_name="tu-tf_efficientnet_lite0", id2label={i: str(i) for i in range(11)},
                        loss="ce:1,dice:1")
    model = UnetForSemanticSegmentation(config)
    model.load_imagenet_encoder("lite0")
    model.train()
    pixels = torch.randn(BATCH, 3, *CROP)
    labels = torch.randint(0, 11, (BATCH, *CROP))
    if bf16:
        model = model.to(memory_format=torch.channels_last)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    for step in range(steps + 3):
        if step == 3:
            start = time.perf_counter()
        with autocast():
            loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return steps * BATCH / (time.perf_counter() - start)


def project_loop(steps: int, bf16: bool, threads: int, root: str, work: Path) -> float:
    out = work / ("bf16_channels_last" if bf16 else "fp32")
    args = ["scripts/train.py", "--task", "segment", "--dataset", "camvid", "--root", root, "--imagenet-weights", "lite0",
            "--batch-size", str(BATCH), "--crop-size", f"{CROP[0]},{CROP[1]}", "--max-steps", str(steps),
            "--logging-steps", "10", "--threads", str(threads), "--max-eval-samples", "2", "--no-progress",
            "--output-dir", str(out)]
    if bf16:
        args += ["--bf16", "--channels-last"]
    run(args, out / "train.log")
    rates = [json.loads(line).get("train/images_per_s") for line in (out / "history.jsonl").read_text().splitlines()]
    rates = [r for r in rates if r is not None][1:]  # the first window holds start-up and warm-up
    if not rates:
        raise SystemExit(f"no throughput logged after the first window in {out}; raise --steps")
    return sum(rates) / len(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "camvid"))
    p.add_argument("--work-dir", default="outputs/benchmarks/segmentation_throughput")
    p.add_argument("--out", default="benchmarks/results/segmentation_throughput.json")
    args = p.parse_args()
    work = (REPO / args.work_dir).resolve()
    rates = {}
    for bf16 in (False, True):
        name = "bf16+channels-last" if bf16 else "fp32"
        rates[f"bare {name}"] = bare_loop(args.steps, bf16, args.threads)
        rates[f"project {name}"] = project_loop(args.steps, bf16, args.threads, args.root, work)
        print(f"{name}: bare {rates[f'bare {name}']:.2f} images/s, project {rates[f'project {name}']:.2f} images/s",
              flush=True)
    ratios = {
        "bf16+channels-last / fp32 (bare)": rates["bare bf16+channels-last"] / rates["bare fp32"],
        "bf16+channels-last / fp32 (project)": rates["project bf16+channels-last"] / rates["project fp32"],
        "project / bare (fp32)": rates["project fp32"] / rates["bare fp32"],
        "project / bare (bf16+channels-last)": rates["project bf16+channels-last"] / rates["bare bf16+channels-last"],
    }
    print("\n| loop | images/s |\n|---|---|")
    for k, v in rates.items():
        print(f"| {k} | {v:.2f} |")
    print("\n| ratio | value | target |\n|---|---|---|")
    for k, v in ratios.items():
        print(f"| {k} | {v:.2f} | {'>= 1.5' if 'fp32 (' in k else '>= 0.90'} |")
    write_results(Path(args.out), {"benchmark": "segmentation_throughput", "machine": machine(), "batch": BATCH,
                                   "crop": CROP, "steps": args.steps, "images_per_s": rates, "ratios": ratios})


if __name__ == "__main__":
    main()
