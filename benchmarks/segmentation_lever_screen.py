"""Screen training levers for the segmentation benchmarks: several ``scripts/train.py`` variants of one recipe,
run side by side, compared by their best validation mIoU (and, for shapes, the best checkpoint's test mIoU).

The CPU benchmarks (``segmentation_camvid.py``, ``segmentation_shapes.py``) are time-boxed: one 55-minute CamVid
run per lever costs a whole session. This screen trains every lever for the *number of epochs* that lever fits
into the CPU budget (a lever that makes steps slower gets fewer epochs), so it can run on a faster machine (a GPU
box, several runs at once) and still answer "which lever would win inside the CPU budget?". Its numbers are a
screen, not the benchmark: the winner still has to be confirmed by the time-boxed CPU run.

    python benchmarks/segmentation_lever_screen.py --dataset camvid [--parallel 4] [--only base,focus_crops]
    python benchmarks/segmentation_lever_screen.py --dataset shapes

Epoch counts (measured on the 2-core CPU machine, fwd+bwd of one batch, bf16 + channels-last): lite1 costs 1.26x
lite0 per step (33 -> 26 epochs); adding smp's Lovász loss costs about 1.5x (its per-class sort: 1.9 s vs 3.7 s
per CamVid batch at one thread; 33 -> 22 epochs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from segmentation_camvid import camvid_train_args
from segmentation_shapes import SHAPES_DATA, shapes_train_args
from training_run import REPO, machine, run, write_results

# Lever name -> scripts/train.py arguments appended to the recipe (argparse: the last value of a flag wins).
CAMVID_LEVERS = {
    "base": [],
    "base_seed1": ["--seed", "1"],
    "focus_crops": ["--focus-classes", "pole,sign_symbol,pedestrian,bicyclist,fence", "--focus-crop-prob", "0.5"],
    "median_frequency_weights": ["--class-weights", "median-frequency"],
    "focal_dice": ["--loss", "focal:1,dice:1"],
    "lite1_26ep": ["--imagenet-weights", "lite1", "--epochs", "26"],
    "lovasz_22ep": ["--loss", "ce:1,dice:1,lovasz:1", "--epochs", "22"],
}
SHAPES_LEVERS = {
    "base": [],
    "lovasz": ["--loss", "ce:1,dice:1,lovasz:1"],
    "8000_images_2ep": ["--data-set", "num_train=8000", "--epochs", "2"],
    "decoder_128": ["--decoder-channels", "128,64,48,32,16"],
    "lr_6e-3": ["--lr", "6e-3"],
    "24ep_3x_budget": ["--epochs", "24"],
}


def recipe(dataset: str, root: str, threads: int, workers: int) -> tuple[list[str], dict, list[str] | None]:
    """Base training arguments, levers, and (shapes only) the evaluation arguments for the test split."""
    common = ["--num-workers", str(workers)]
    if dataset == "camvid":
        return [*camvid_train_args(root, 33, 6, threads), *common], CAMVID_LEVERS, None
    evaluate = ["--task", "segment", *SHAPES_DATA, "--split", "test"]
    return [*shapes_train_args(8, threads), "--bf16", "--channels-last", *common], SHAPES_LEVERS, evaluate


def summarise(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/mIoU" in r]
    best = max(evals, key=lambda r: r["eval/mIoU"])
    return {"curve": [(r["epoch"], round(r["eval/mIoU"], 4)) for r in evals], "best_val_mIoU": best["eval/mIoU"],
            "best_epoch": best["epoch"],
            "best_per_class": {k.split("/")[-1]: v for k, v in best.items() if k.startswith("eval/iou/")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=["camvid", "shapes"], required=True)
    p.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "camvid"), help="CamVid's folder")
    p.add_argument("--only", help="comma-separated lever names (default: all)")
    p.add_argument("--parallel", type=int, default=1, help="runs at once (a GPU box takes several)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--work-dir", default="outputs/benchmarks/segmentation_lever_screen")
    p.add_argument("--out", help="results JSON (default: benchmarks/results/segmentation_lever_screen_DATASET.json)")
    p.add_argument("extra", nargs="*", help="more scripts/train.py arguments for every run (after --)")
    args = p.parse_args()
    base, levers, evaluate = recipe(args.dataset, args.root, args.threads, args.num_workers)
    if args.only:
        unknown = set(args.only.split(",")) - set(levers)
        if unknown:
            raise SystemExit(f"unknown lever(s) {sorted(unknown)}; choose from {sorted(levers)}")
        levers = {k: v for k, v in levers.items() if k in args.only.split(",")}
    work = REPO / args.work_dir / args.dataset
    pending, running, results = list(levers.items()), {}, {}
    start = time.monotonic()
    while pending or running:
        while pending and len(running) < args.parallel:
            name, extra = pending.pop(0)
            run_dir = work / name
            run_dir.mkdir(parents=True, exist_ok=True)
            # One Arrow cache per run, so that concurrent runs never wait on each other's dataset locks.
            cmd = [sys.executable, "scripts/train.py", *base, *extra, *args.extra, "--output-dir", str(run_dir),
                   "--no-progress", "--cache-dir", str(run_dir / "arrow_cache")]
            log = (run_dir / "train.log").open("w")
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            running[name] = (proc, run_dir, time.monotonic())
            print(f"started {name}", flush=True)
        for name, (proc, run_dir, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode:
                tail = (run_dir / "train.log").read_text()[-2000:]
                results[name] = {"error": f"train.py exited with {proc.returncode}", "log_tail": tail}
                print(f"{name} FAILED\n{tail}", flush=True)
                continue
            res = {"args": levers[name], "minutes": round((time.monotonic() - t0) / 60, 2), **summarise(run_dir)}
            if evaluate:
                run(["scripts/evaluate.py", *evaluate, "--model", str(run_dir / "best"), "--out", str(run_dir / "eval")],
                    run_dir / "eval.log")
                res["test_mIoU"] = json.loads((run_dir / "eval" / "metrics.json").read_text())["mIoU"]
            results[name] = res
            print(f"finished {name}: best val mIoU {res['best_val_mIoU']:.4f}", flush=True)
        time.sleep(2)

    weak = ("pole", "sign_symbol", "pedestrian") if args.dataset == "camvid" else ("cross", "star")
    print(f"\n{args.dataset} lever screen ({machine()})\n")
    print("| lever | best val mIoU (epoch) |" + (" test mIoU |" if evaluate else "") + "".join(f" {w} |" for w in weak))
    print("|---|---|" + ("---|" if evaluate else "") + "---|" * len(weak))
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | failed |")
            continue
        test = f" {r['test_mIoU']:.4f} |" if evaluate else ""
        cls = "".join(f" {r['best_per_class'].get(w, float('nan')):.3f} |" for w in weak)
        print(f"| {name} | {r['best_val_mIoU']:.4f} ({r['best_epoch']}) |{test}{cls}")
    write_results(Path(args.out or f"benchmarks/results/segmentation_lever_screen_{args.dataset}.json"),
                  {"benchmark": "segmentation_lever_screen", "dataset": args.dataset, "machine": machine(),
                   "base_args": base, "wall_minutes": round((time.monotonic() - start) / 60, 2), "results": results})


if __name__ == "__main__":
    main()
