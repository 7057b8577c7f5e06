"""Segmentation on real CamVid (../shared/data/camvid, 11 classes, unlabelled ignored): train on train, report
val mIoU at the full 360x480 resolution, within a wall-clock training budget.

The bar (issue 4), measured on this machine: a plain PyTorch loop with smp.Unet("tu-tf_efficientnet_lite0") and
the offline ImageNet weights, CE + Dice, scale 0.5-1.5 / 288x384 crops / flip / light colour jitter, AdamW
(1e-3 encoder, 3e-3 decoder, cosine, 30 warm-up steps), batch 8, reached val mIoU 0.736 in 55 minutes.
Goals: > 0.736 within 55 minutes, >= 0.76 within 2 hours.

    python benchmarks/segmentation_camvid.py --minutes 55 [--epochs 33] [-- more scripts/train.py arguments]

Training uses bf16 autocast and channels-last, as the bar did. The best checkpoint (by validation mIoU) is then
evaluated three times on val at full resolution: plain; with horizontal-flip test-time augmentation (``--flip``:
the average of the image's and its mirror's logits); and with flip plus multi-scale TTA (``--scales``, default
0.75,1,1.25, fixed in advance rather than tuned on val), all reported. Test-time augmentation costs inference
time only, not training budget.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training_run import add_run_arguments, machine, run, train_and_evaluate, write_results


def camvid_train_args(root: str, epochs: int, eval_every_epochs: int, threads: int) -> list[str]:
    """The bar's recipe as ``scripts/train.py`` arguments (no time budget; later arguments override these)."""
    return [
        "--task", "segment", "--dataset", "camvid", "--root", root, "--imagenet-weights", "lite0",
        "--loss", "ce:1,dice:1", "--augment", "camvid", "--crop-size", "288,384", "--scale-range", "0.5,1.5",
        "--batch-size", "8", "--lr", "3e-3", "--encoder-lr-multiplier", "0.3333", "--warmup-steps", "30",
        "--epochs", str(epochs), "--eval-every-epochs", str(eval_every_epochs), "--eval-batch-size", "4",
        "--bf16", "--channels-last", "--threads", str(threads),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=55.0, help="training budget")
    p.add_argument("--epochs", type=int, default=33, help="size the cosine schedule to what fits in the budget")
    p.add_argument("--eval-every-epochs", type=int, default=6, help="each validation costs about 25 s of the budget")
    p.add_argument("--tta-scales", default="0.75,1,1.25", help="resize factors of the multi-scale TTA evaluation")
    add_run_arguments(p, "segmentation_camvid", "camvid", "results JSON (default: benchmarks/results/segmentation_camvid.json)")
    args = p.parse_args()
    data = ["--dataset", "camvid", "--root", args.root]
    train = [*camvid_train_args(args.root, args.epochs, args.eval_every_epochs, args.threads),
             "--time-budget-min", str(args.minutes), *args.extra]
    evaluate = ["--task", "segment", *data, "--split", "validation", "--examples", "4"]
    result = train_and_evaluate(f"unet_lite0_{args.minutes:g}min", train, evaluate, Path(args.work_dir))
    run_dir = Path(result["run_dir"])
    flip_seconds = run(["scripts/evaluate.py", *evaluate, "--flip", "--model", str(run_dir / "best"),
                        "--out", str(run_dir / "eval_flip")], run_dir / "eval_flip.log")
    flip = json.loads((run_dir / "eval_flip" / "metrics.json").read_text())
    ms_seconds = run(["scripts/evaluate.py", *evaluate, "--flip", "--scales", args.tta_scales, "--model",
                      str(run_dir / "best"), "--out", str(run_dir / "eval_flip_ms")], run_dir / "eval_flip_ms.log")
    ms = json.loads((run_dir / "eval_flip_ms" / "metrics.json").read_text())
    m = result["metrics"]
    print(f"| measure | plain | flip TTA | flip + scales {args.tta_scales} | bar |\n|---|---|---|---|---|")
    print(f"| val mIoU (360x480) | {m['mIoU']:.4f} | {flip['mIoU']:.4f} | {ms['mIoU']:.4f} | 0.736 in 55 min (plain smp loop) |")
    print(f"| train minutes | {result['train_seconds'] / 60:.1f} | | | |")
    for name, v in m["per_class"].items():
        print(f"| IoU {name} | {v['iou']:.4f} | {flip['per_class'][name]['iou']:.4f} | "
              f"{ms['per_class'][name]['iou']:.4f} | |")
    out = Path(args.out or "benchmarks/results/segmentation_camvid.json")
    write_results(out, {"benchmark": "segmentation_camvid", "machine": machine(), "train_args": train,
                        "bar": {"mIoU": 0.736, "minutes": 55}, **result,
                        "flip_eval_seconds": round(flip_seconds, 1), "flip_metrics": flip,
                        "flip_multiscale_eval_seconds": round(ms_seconds, 1), "flip_multiscale_metrics": ms})


if __name__ == "__main__":
    main()
