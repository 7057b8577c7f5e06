"""Segmentation on real CamVid (../shared/data/camvid, 11 classes, unlabelled ignored): train on train, report
val mIoU at the full 360x480 resolution, within a wall-clock training budget.

The bar (issue 4), measured on this machine: a plain PyTorch loop with smp.Unet("tu-tf_efficientnet_lite0") and
the offline ImageNet weights, CE + Dice, scale 0.5-1.5 / 288x384 crops / flip / light colour jitter, AdamW
(1e-3 encoder, 3e-3 decoder, cosine, 30 warm-up steps), batch 8, reached val mIoU 0.736 in 55 minutes.
Goals: > 0.736 within 55 minutes, >= 0.76 within 2 hours.

    python benchmarks/segmentation_camvid.py --minutes 55 [--epochs 39]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training_run import REPO, machine, train_and_evaluate, write_results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=55.0, help="training budget")
    p.add_argument("--epochs", type=int, default=39, help="size the cosine schedule to what fits in the budget")
    p.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "camvid"))
    p.add_argument("--work-dir", default="outputs/benchmarks/segmentation_camvid")
    p.add_argument("--out", default="benchmarks/results/segmentation_camvid.json")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    data = ["--dataset", "camvid", "--root", args.root]
    train = [
        "--task", "segment", *data, "--imagenet-weights", "lite0", "--loss", "ce:1,dice:1",
        "--augment", "camvid", "--crop-size", "288,384", "--scale-range", "0.5,1.5",
        "--batch-size", "8", "--lr", "3e-3", "--encoder-lr-multiplier", "0.3333", "--warmup-steps", "30",
        "--epochs", str(args.epochs), "--eval-every-epochs", "3", "--eval-batch-size", "4",
        "--time-budget-min", str(args.minutes), "--threads", str(args.threads),
    ]
    evaluate = ["--task", "segment", *data, "--split", "validation", "--examples", "4"]
    result = train_and_evaluate(f"unet_lite0_{args.minutes:g}min", train, evaluate, Path(args.work_dir))
    m = result["metrics"]
    print("| measure | value | bar |\n|---|---|---|")
    print(f"| val mIoU (360x480) | {m['mIoU']:.4f} | 0.736 in 55 min (plain smp loop) |")
    print(f"| train minutes | {result['train_seconds'] / 60:.1f} | |")
    for name, v in m["per_class"].items():
        print(f"| IoU {name} | {v['iou']:.4f} | |")
    write_results(Path(args.out), {"benchmark": "segmentation_camvid", "machine": machine(), "train_args": train,
                                   "bar": {"mIoU": 0.736, "minutes": 55}, **result})


if __name__ == "__main__":
    main()
