"""``make demo``: generate the shapes data, train the segmentation-aware captioner, evaluate it, serve it.

    python scripts/demo.py                       # what `make demo` runs
    python scripts/demo.py --no-serve            # stop after the evaluation
    python scripts/demo.py --retrain             # train again even if a model exists

Steps, each printed as it starts:

1. generate the synthetic shapes dataset (one canonical caption per image) and print its summary
   (``scripts/prepare_data.py``);
2. train the combined model (U-Net segmenter + segmentation-aware LSTM captioner over one shared EfficientNet-Lite0
   encoder with the offline ImageNet weights, its first two stages frozen) with ``scripts/train.py --task
   caption-seg`` for at most ``--minutes`` minutes, and copy its best checkpoint to ``OUT/caption_seg_model``.
   With the default ``--out`` that folder is what ``pipeline("image-captioning-seg")`` loads without ``model=``;
   with another, the demo prints the ``CAPTIONSEG_DEFAULT_MODEL=...`` line that makes it so. When it already
   exists the demo reuses it;
3. evaluate it on the held-out test split (``scripts/evaluate.py --task caption-seg``): print the metrics and
   save overlays (photo, coloured mask, legend, caption) under ``OUT/eval_test/overlays``;
4. start the web page (``scripts/serve.py``) and print its local URL.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where pipeline("image-captioning-seg") looks without model= (pipelines/caption_seg_pipeline.py's
# default_model_dir; not imported, since that pulls in torch and transformers for one path).
DEFAULT_MODEL_ENV = "CAPTIONSEG_DEFAULT_MODEL"
DEFAULT_MODEL_DIR = ROOT / "outputs" / "demo" / "caption_seg_model"

# The data and the training recipe of the demo (benchmarks/caption_seg_ablation.py measures the same recipe).
# caption_style=canonical: one caption per image naming every object (see datasets_cfg/shapes.py), the captions
# the BLEU / CIDEr / attribute-accuracy targets can be held to.
DATA = ["--dataset", "shapes", "--data-set", "num_train=2000", "--data-set", "num_validation=100",
        "--data-set", "num_test=200", "--data-set", "caption_style=canonical"]
# --channels-last and --train-encoder-stages 3 (stem and the stride-2 and stride-4 stages frozen): 24 training
# images/s against 16 on a 2-core CPU, so 6 epochs fit the budget instead of 5 (benchmarks/README.md).
TRAIN = ["--task", "caption-seg", *DATA, "--imagenet-weights", "lite0", "--batch-size", "16", "--lr", "3e-3",
         "--warmup-steps", "30", "--eval-every-epochs", "2", "--eval-batch-size", "50", "--threads", "2",
         "--channels-last", "--train-encoder-stages", "3"]


def run(step: str, command: list[str]) -> None:
    print(f"\n>>> {step}\n    {' '.join(command)}", flush=True)
    code = subprocess.call(command, cwd=ROOT)
    if code != 0:
        raise SystemExit(f"error: {step} failed (exit status {code})")


def default_model_hint(model_dir: Path) -> str | None:
    """The shell line that makes ``pipeline("image-captioning-seg")`` without ``model=`` load ``model_dir``; None
    when it already does."""
    current = Path(os.environ.get(DEFAULT_MODEL_ENV, DEFAULT_MODEL_DIR))
    if current.resolve() == Path(model_dir).resolve():
        return None
    return f"export {DEFAULT_MODEL_ENV}={shlex.quote(str(Path(model_dir).resolve()))}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/demo", help="where the data, model and reports go")
    p.add_argument("--minutes", type=float, default=9.0, help="training budget (validation comes on top)")
    p.add_argument("--epochs", type=int, default=6,
                   help="epochs of the learning-rate schedule (6 fit the 9 minutes on 2 cores; the budget stops it first)")
    p.add_argument("--retrain", action="store_true", help="train even if OUT/caption_seg_model exists")
    p.add_argument("--no-serve", action="store_true", help="stop after the evaluation")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for scripts/train.py (repeatable; e.g. --train-arg=--batch-size=8)")
    args = p.parse_args(argv)

    out = (ROOT / args.out).resolve()
    model_dir = out / "caption_seg_model"
    python = sys.executable

    run("1/4 generating the synthetic shapes dataset",
        [python, "scripts/prepare_data.py", *DATA, "--save-to", str(out / "shapes_dataset")])

    if (model_dir / "config.json").is_file() and not args.retrain:
        print(f"\n>>> 2/4 reusing the trained model in {model_dir} (--retrain to train again)", flush=True)
    else:
        train_dir = out / "train"
        run(f"2/4 training the segmentation-aware captioner (at most {args.minutes:g} minutes)",
            [python, "scripts/train.py", *TRAIN, "--output-dir", str(train_dir), "--epochs", str(args.epochs),
             "--time-budget-min", str(args.minutes), *args.train_arg])
        staging = out / "caption_seg_model.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(train_dir / "best", staging)
        shutil.rmtree(model_dir, ignore_errors=True)
        staging.rename(model_dir)  # only a complete model folder ever has the final name
    hint = default_model_hint(model_dir)
    if hint:
        # Not the folder the pipeline's default looks in: say so now, or pipeline() without model= fails later.
        print(f"    pipeline('image-captioning-seg') without model= loads {model_dir} once this is set:\n"
              f"    {hint}", flush=True)

    run("3/4 evaluating on the held-out test split",
        [python, "scripts/evaluate.py", "--task", "caption-seg", "--model", str(model_dir), *DATA, "--split", "test",
         "--out", str(out / "eval_test"), "--examples", "8"])
    print(f"    overlays: {out / 'eval_test' / 'overlays'}", flush=True)

    if args.no_serve:
        return 0
    print("\n>>> 4/4 starting the web page (Ctrl+C stops it)", flush=True)
    return subprocess.call([python, "scripts/serve.py", "--model", str(model_dir), "--port", str(args.port)], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
