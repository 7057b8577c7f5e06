"""Ablation on synthetic shapes: the segmentation-aware captioner vs the plain one, same encoder, data and budget;
and the combined pipeline's inference time vs the captioning and segmentation pipelines run one after the other.

    python benchmarks/caption_seg_ablation.py [--minutes 6] [--seeds 0 1 2] [--out benchmarks/results/caption_seg_ablation.json]

Part 1 trains ``scripts/train.py --task caption-seg`` (the ``make demo`` recipe, ``scripts/demo.py``) once per
seed and variant (``--variants``: segment tokens per class, per connected region ``--segment-units instance``,
per connected region refined by geometry-aware self-attention among the tokens ``--segment-relation-layers 2``, or
none ``--no-segment-tokens``), each for ``--minutes`` of training, and scores the
best checkpoint on the 200-image test split with ``scripts/evaluate.py --task caption-seg``: BLEU-4, CIDEr,
attribute accuracy (every object's shape and colour named, nothing false; ``shapes_attribute_accuracy``), the rate
of correct relations, and mIoU. Mean and spread (max - min) over the seeds.

Part 2 times, on the same 48 test images (``--timing-images``) and with the same caption length forced
(``min_new_tokens`` = ``max_new_tokens``, so that neither side wins by stopping early), ``pipeline
("image-captioning-seg")`` against ``pipeline("image-captioning")`` plus ``pipeline("semantic-segmentation")`` with
models of the same architecture: the same EfficientNet-Lite0 U-Net, and a captioner whose CNN encoder is the same
EfficientNet-Lite0 with the same LSTM decoder. The combined model runs the encoder once; the pair runs it twice.
It does so at each image side of ``--timing-sizes`` (models built for that side, images resized to it) and each
pipeline ``batch_size`` of ``--timing-batch-sizes``, since the encoder's share of the work, which is all that
sharing it can save, grows with the image and shrinks with per-call overheads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.training_run import machine, train_and_evaluate, write_results  # noqa: E402
from scripts.demo import DATA, TRAIN  # noqa: E402

MEASURES = ("BLEU-4", "CIDEr", "attribute_accuracy", "relation_accuracy", "relation_rate", "object_recall", "mIoU")
# The extra train.py flags of each variant: segment tokens per class (the default), per connected region (alone or
# related to each other), none.
VARIANTS = {
    "segment-aware": [],
    "segment-aware-instance": ["--segment-units", "instance"],
    # Per-region tokens that first exchange their relative places (geometry-aware self-attention, 2 layers).
    "segment-aware-relations": ["--segment-units", "instance", "--segment-relation-layers", "2"],
    "plain": ["--no-segment-tokens"],
}


def summarize(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "spread": max(values) - min(values), "values": values}


def ablation(args) -> dict:
    runs = {variant: [] for variant in args.variants}
    evaluate = ["--task", "caption-seg", *DATA, "--split", "test", "--examples", "4"]
    for seed in args.seeds:
        for variant in args.variants:
            extra = VARIANTS[variant]
            train = [*TRAIN, "--epochs", str(args.epochs), "--time-budget-min", str(args.minutes), "--seed", str(seed),
                     *extra, *args.extra]
            result = train_and_evaluate(f"{variant}_seed{seed}{args.run_suffix}", train, evaluate, Path(args.work_dir))
            m = result["metrics"]
            print(f"{variant} seed {seed}: " + ", ".join(f"{k} {m.get(k, float('nan')):.4f}" for k in MEASURES)
                  + f" ({result['train_seconds'] / 60:.1f} min)", flush=True)
            runs[variant].append(result)
    summary = {
        variant: {k: summarize([r["metrics"].get(k, float("nan")) for r in results]) for k in MEASURES}
        for variant, results in runs.items()
    }
    return {"runs": runs, "summary": summary}


def timing(args) -> dict:
    """Seconds per image of the three pipelines at each ``--timing-sizes`` side and ``--timing-batch-sizes``."""
    import torch
    from transformers import pipeline

    import pipelines  # noqa: F401
    from datasets_cfg import load_dataset_from_config
    from datasets_cfg.shapes import CLASS_NAMES
    from models.caption_seg_model import build_caption_seg_model, save_caption_seg
    from models.caption_tokenizer import train_caption_tokenizer
    from models.captioner import build_captioner, save_captioner
    from models.segmentation_image_processor import SegmentationImageProcessor

    torch.set_num_threads(args.threads)
    split = load_dataset_from_config("shapes", splits=["test"], num_test=args.timing_images)["test"]
    tokenizer = train_caption_tokenizer(split["captions"])
    options = {"embedding_size": 256, "hidden_size": 512, "attention_size": 256}
    tokens = args.caption_tokens
    forced = {"num_beams": 3, "max_new_tokens": tokens, "min_new_tokens": tokens}
    rows = []
    for variant, side in [(v, side) for v in args.timing_encoders for side in args.timing_sizes]:
        # Every model is built for this side and every image is this size, so the three pipelines do the same work
        # per image as far as the encoder goes: the pair runs it twice, the combined model once.
        images = [image.convert("RGB").resize((side, side)) for image in split["image"]]
        work = Path(tempfile.mkdtemp(prefix="capseg_timing_"))
        combined, processor = build_caption_seg_model(tokenizer, list(CLASS_NAMES), decoder_options=options,
                                                      image_size=side, encoder=f"tu-tf_efficientnet_{variant}")
        save_caption_seg(combined, tokenizer, processor, work / "combined")
        save_captioner(*_captioner(build_captioner, tokenizer, options, side, variant), work / "captioner")
        combined.segmenter.save_pretrained(work / "unet")
        SegmentationImageProcessor.for_model(combined.segmenter.config, do_resize=True,
                                             size={"height": side, "width": side}).save_pretrained(work / "unet")
        pipes = {
            "combined": pipeline("image-captioning-seg", model=str(work / "combined")),
            "captioning": pipeline("image-captioning", model=str(work / "captioner")),
            "segmentation": pipeline("semantic-segmentation", model=str(work / "unet")),
        }
        kwargs = {"combined": {"generate_kwargs": forced}, "captioning": {"generate_kwargs": forced},
                  "segmentation": {}}
        for batch_size in args.timing_batch_sizes:
            for name, pipe in pipes.items():
                pipe(images[:batch_size], batch_size=batch_size, **kwargs[name])  # warm-up
            # The fastest of --timing-repeats passes, taken in turn, so that a burst of load on a shared machine
            # slows one pass rather than one pipeline.
            seconds = dict.fromkeys(pipes, float("inf"))
            for _ in range(args.timing_repeats):
                for name, pipe in pipes.items():
                    start = time.perf_counter()
                    pipe(images, batch_size=batch_size, **kwargs[name])
                    seconds[name] = min(seconds[name], (time.perf_counter() - start) / len(images))
            two = seconds["captioning"] + seconds["segmentation"]
            rows.append({"encoder": f"tf_efficientnet_{variant}", "image_size": side, "batch_size": batch_size,
                         "seconds_per_image": seconds, "two_pipelines_seconds_per_image": two,
                         "speedup": two / seconds["combined"]})
            print(f"  {variant}, {side} px, batch {batch_size}: "
                  + ", ".join(f"{k} {v:.3f} s" for k, v in seconds.items())
                  + f"; speed-up {rows[-1]['speedup']:.2f}x", flush=True)
    return {"images": len(split), "caption_tokens": tokens, "num_beams": 3, "rows": rows}


def _captioner(build_captioner, tokenizer, options, image_size, variant="lite0"):
    model, processor = build_captioner(tokenizer, encoder=f"tf_efficientnet_{variant}", decoder="lstm",
                                       image_size=image_size,
                                       encoder_options={"feature_stage": 3, "hidden_size": 256},
                                       decoder_options=options)
    return model, tokenizer, processor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=6.0, help="training budget of every run")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the schedule (3 fit 6 minutes on 2 cores)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--caption-tokens", type=int, default=12)
    p.add_argument("--timing-images", type=int, default=48)
    p.add_argument("--timing-sizes", type=int, nargs="+", default=[128, 256, 384],
                   help="image sides to time the pipelines at (the models are built for each)")
    p.add_argument("--timing-batch-sizes", type=int, nargs="+", default=[1, 8],
                   help="pipeline batch_size values to time")
    p.add_argument("--timing-encoders", nargs="+", choices=["lite0", "lite1", "lite2"], default=["lite0"],
                   help="EfficientNet-Lite encoders (random weights) of the timed models")
    p.add_argument("--timing-repeats", type=int, default=3, help="timed passes per pipeline; the fastest counts")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["segment-aware", "plain"])
    p.add_argument("--skip-training", action="store_true", help="only the inference timing")
    p.add_argument("--skip-timing", action="store_true", help="only the ablation")
    p.add_argument("--work-dir", default="outputs/benchmarks/caption_seg_ablation")
    p.add_argument("--out", default="benchmarks/results/caption_seg_ablation.json")
    p.add_argument("--run-suffix", default="", help="appended to each run's folder name (e.g. _reg0)")
    p.add_argument("extra", nargs="*", help="more scripts/train.py arguments for every run (after --)")
    args = p.parse_args()

    result = {"benchmark": "caption_seg_ablation", "machine": machine(), "minutes_per_run": args.minutes,
              "train_args": [*TRAIN, *args.extra]}
    if not args.skip_training:
        result.update(ablation(args))
        print("\n| measure | " + " | ".join(f"{v} (mean ± spread)" for v in args.variants) + " |")
        print("|---|" + "---|" * len(args.variants))
        for k in MEASURES:
            cells = [result["summary"][v][k] for v in args.variants]
            print(f"| {k} | " + " | ".join(f"{c['mean']:.4f} ± {c['spread']:.4f}" for c in cells) + " |")
    if args.skip_timing:
        write_results(Path(args.out), result)
        return
    result["timing"] = t = timing(args)
    print("\n| encoder | image side | batch | combined s/image | captioning | segmentation | captioning + segmentation "
          "| speed-up (target >= 1.5x) |\n|---|---|---|---|---|---|---|---|")
    for r in t["rows"]:
        s = r["seconds_per_image"]
        print(f"| {r['encoder']} | {r['image_size']} | {r['batch_size']} | {s['combined']:.3f} | {s['captioning']:.3f} | "
              f"{s['segmentation']:.3f} | {r['two_pipelines_seconds_per_image']:.3f} | {r['speedup']:.2f}x |")
    write_results(Path(args.out), result)


if __name__ == "__main__":
    main()
