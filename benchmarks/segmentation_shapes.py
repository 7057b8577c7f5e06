"""Segmentation on the synthetic shapes dataset: mIoU on the held-out test split after a time-boxed training.

Target (issue 4): test mIoU >= 0.97 trained in <= 10 minutes on the 2-core CPU machine.

    python benchmarks/segmentation_shapes.py [--minutes 9] [--out benchmarks/results/segmentation_shapes.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training_run import machine, train_and_evaluate, write_results


SHAPES_DATA = ["--dataset", "shapes", "--data-set", "num_train=2000", "--data-set", "num_validation=100",
               "--data-set", "num_test=200"]


def shapes_train_args(epochs: int, threads: int) -> list[str]:
    """The benchmark's recipe as ``scripts/train.py`` arguments (no time budget; later arguments override these)."""
    return [
        "--task", "segment", *SHAPES_DATA, "--imagenet-weights", "lite0", "--decoder-channels", "64,48,32,24,16",
        "--loss", "ce:1,dice:1", "--batch-size", "16", "--lr", "3e-3", "--warmup-steps", "30",
        "--epochs", str(epochs), "--threads", str(threads), "--eval-batch-size", "50",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=9.0, help="training budget (validation and saving come on top)")
    p.add_argument("--work-dir", default="outputs/benchmarks/segmentation_shapes")
    p.add_argument("--out", default="benchmarks/results/segmentation_shapes.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=7, help="sized so that the cosine schedule ends inside the budget")
    p.add_argument("extra", nargs="*", help="more scripts/train.py arguments (after --), e.g. -- --bf16 --channels-last")
    args = p.parse_args()
    data = SHAPES_DATA
    train = [*shapes_train_args(args.epochs, args.threads), "--time-budget-min", str(args.minutes), *args.extra]
    evaluate = ["--task", "segment", *data, "--split", "test", "--examples", "4"]
    result = train_and_evaluate("unet_lite0", train, evaluate, Path(args.work_dir))
    m = result["metrics"]
    rows = [("test mIoU", f"{m['mIoU']:.4f}", ">= 0.97"), ("pixel accuracy", f"{m['pixel_accuracy']:.4f}", ""),
            ("train minutes", f"{result['train_seconds'] / 60:.1f}", "<= 10"),
            ("weakest class IoU", "{1} {0:.4f}".format(*min((v["iou"], k) for k, v in m["per_class"].items()
                                                             if v["iou"] is not None)), "")]
    print("| measure | value | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")
    write_results(Path(args.out), {"benchmark": "segmentation_shapes", "machine": machine(), "train_args": train,
                                   "target": {"mIoU": 0.97, "train_minutes": 10}, **result})


if __name__ == "__main__":
    main()
