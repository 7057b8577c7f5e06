"""Evaluate a saved model folder on a dataset split and write a report.

    python scripts/evaluate.py --task segment --model runs/seg/best --dataset camvid --root ../shared/data/camvid
    python scripts/evaluate.py --task caption --model runs/cap/best --dataset shapes --split test --metrics official
    python scripts/evaluate.py --task caption --model runs/cap/best --ensemble-with runs/cap2/best --dataset shapes

segment: ``metrics.json``, ``per_class.txt``, ``confusion_matrix.png`` and ``overlays/`` (photo, reference,
prediction, legend), predicting at each image's own resolution (whole image, or ``--sliding-window``).
caption: ``metrics.json`` / ``metrics.md`` (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, labelled fast or official;
distinct-caption share; attribute accuracy on shapes), ``predictions.jsonl``, ``samples.png`` and
``attention/`` (one picture per word). ``--ensemble-with FOLDER`` (repeatable) captions with several captioners at
once (``models.caption_ensemble``: beam search over their mean word probabilities).
caption-seg: both sets of metrics from ``pipeline("image-captioning-seg")`` (``pipelines.caption_seg_report``),
``predictions.jsonl`` and ``overlays/`` (photo, coloured mask, legend, caption); ``--no-segment-aware`` captions
without the segment tokens.

Bad input ends with one ``error:`` line (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# Run as a script, Python puts scripts/ first on sys.path, where scripts/evaluate.py would shadow the `evaluate`
# library: put the repository root there instead.
_SCRIPTS = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _SCRIPTS]
sys.path.insert(0, str(_SCRIPTS.parent))

from safetensors import SafetensorError  # noqa: E402

from datasets_cfg import (  # noqa: E402
    DatasetError,
    load_config,
    load_dataset_from_config,
    parse_overrides,
    resolve_config_path,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, choices=["segment", "caption", "caption-seg"])
    p.add_argument("--model", required=True, help="a folder written by scripts/train.py (e.g. OUTPUT_DIR/best)")
    p.add_argument("--dataset", required=True, help="dataset YAML path or shipped name")
    p.add_argument("--root", help="the dataset's folder")
    p.add_argument("--data-set", action="append", default=[], metavar="KEY=VALUE", help="override a dataset YAML key")
    p.add_argument("--split", default="validation")
    p.add_argument("--out", help="report folder (default: MODEL/eval_SPLIT)")
    p.add_argument("--max-samples", type=int, help="evaluate only the first N rows (at least 1)")
    p.add_argument("--examples", default="4",
                   help="overlays / attention pictures: for the first N rows (a number), or for the rows listed by "
                        "index or image id (e.g. 0,17,2008_000123)")
    p.add_argument("--cache-dir", help="Arrow cache folder")
    g = p.add_argument_group("segment")
    g.add_argument("--sliding-window", metavar="H,W", nargs="?", const="train-crop",
                   help="predict in windows of this size instead of whole images (no value: the model's training "
                        "crop size)")
    g.add_argument("--stride", metavar="H,W", help="sliding-window stride (default: half the window)")
    g.add_argument("--flip", action="store_true", help="average with the horizontally flipped prediction")
    g.add_argument("--scales", metavar="S,S,...",
                   help="multi-scale TTA: average the predictions at these resize factors (e.g. 0.75,1,1.25)")
    g = p.add_argument_group("caption")
    g.add_argument("--metrics", choices=["fast", "official"], default="fast",
                   help="official: PTB tokenizer and METEOR 1.5 through pycocoevalcap (needs Java)")
    g.add_argument("--num-beams", type=int, help="beam width (default: the model's generation config)")
    g.add_argument("--length-penalty", type=float,
                   help="beam search: scores are divided by length ** this, so > 0 favours longer captions and < 0 "
                        "shorter ones (default: the model's generation config, usually 1.0); --task caption only")
    g.add_argument("--ensemble-with", action="append", default=[], metavar="FOLDER",
                   help="caption with --model and this captioner together, averaging their word probabilities at "
                        "each beam-search step (repeat for more; they must share the vocabulary and image size)")
    g.add_argument("--ensemble-weights", metavar="W,W,...",
                   help="one weight per captioner, --model first (default: equal)")
    g.add_argument("--batch-size", type=int, default=16)
    g = p.add_argument_group("caption-seg (also --metrics, --num-beams, --batch-size)")
    g.add_argument("--no-segment-aware", action="store_true", help="caption without the segment tokens")
    args = p.parse_args(argv)
    if args.max_samples is not None and args.max_samples < 1:
        p.error(f"--max-samples must be at least 1, not {args.max_samples}")
    if args.length_penalty is not None and args.task != "caption":
        p.error(f"--length-penalty is for --task caption, not --task {args.task}")
    if args.length_penalty is not None and not math.isfinite(args.length_penalty):
        p.error(f"--length-penalty must be a finite number, not {args.length_penalty}")
    if (args.ensemble_with or args.ensemble_weights) and args.task != "caption":
        p.error(f"--ensemble-with and --ensemble-weights are for --task caption, not --task {args.task}")
    if args.ensemble_weights is not None:
        try:
            args.ensemble_weights = [float(w) for w in args.ensemble_weights.split(",")]
        except ValueError:
            p.error(f"--ensemble-weights must be numbers separated by commas, not {args.ensemble_weights!r}")
        if not args.ensemble_with:
            p.error("--ensemble-weights weighs the captioners of an ensemble: give --ensemble-with FOLDER too")
        if len(args.ensemble_weights) != 1 + len(args.ensemble_with):
            p.error(f"--ensemble-weights gives {len(args.ensemble_weights)} weights for "
                    f"{1 + len(args.ensemble_with)} captioners (--model and each --ensemble-with)")
        w = args.ensemble_weights
        if not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
            p.error(f"--ensemble-weights must be finite, non-negative and not all 0, not {w}")
    return args


def _pair(text: str | None, flag: str):
    """``H,W`` or ``S`` of ``flag`` as positive ints."""
    if text is None:
        return None
    try:
        parts = [int(v) for v in text.split(",")]
    except ValueError:
        raise DatasetError(f"{flag} {text!r}: give H,W or one size in pixels, e.g. 256,320") from None
    if len(parts) > 2 or min(parts) < 1:
        raise DatasetError(f"{flag} {text!r}: give H,W or one size in pixels, each at least 1")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _scales(text: str | None) -> tuple[float, ...] | None:
    from models.sliding_window import check_scales

    if text is None:
        return None
    try:
        return check_scales([float(v) for v in text.split(",") if v.strip()])
    except ValueError as err:
        raise DatasetError(f"--scales {text!r}: {err}") from None


def chosen_examples(text: str, split) -> int | list[int]:
    """``--examples``: a count of first rows, or a comma-separated list of row indices and image ids -> row indices."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if len(items) == 1 and items[0].isdigit() and "," not in str(text):
        return int(items[0])
    ids = split["image_id"] if "image_id" in split.column_names else []
    index_of = {str(image_id): i for i, image_id in enumerate(ids)}
    rows = []
    for item in items:
        if item in index_of:
            rows.append(index_of[item])
        elif item.isdigit() and int(item) < split.num_rows:
            rows.append(int(item))
        else:
            raise DatasetError(f"--examples: {item!r} is neither an image id nor a row index (0..{split.num_rows - 1}) "
                               "of this split")
    return rows


def check_classes(model_classes: list[str], model_ignore: int, split, data_ignore: int) -> None:
    """The model's class list and ``ignore_index`` must be the dataset's: the confusion matrix is indexed by
    class id, so a model of other classes would be scored under the wrong names without any error."""
    if "mask_classes" not in split.features:
        raise DatasetError(f"this dataset has no 'mask' column (columns: {split.column_names}); it cannot score "
                           "a segmenter")
    data_classes = list(split.features["mask_classes"].feature.names)
    if list(model_classes) != data_classes:
        raise DatasetError(
            f"the model's classes {list(model_classes)} are not the dataset's {data_classes}: evaluate a model "
            "trained on this class list (same names, same order)"
        )
    if int(model_ignore) != int(data_ignore):
        raise DatasetError(f"the model ignores label {model_ignore} but the dataset's ignore_index is {data_ignore}")


def evaluate_segment(args, split, out: Path) -> dict:
    from models.segmentation_image_processor import SegmentationImageProcessor
    from models.segmentation_report import evaluate_segmentation
    from models.unet import UnetForSemanticSegmentation

    model = UnetForSemanticSegmentation.from_pretrained(args.model).eval()
    config = model.config
    check_classes([config.id2label[i] for i in range(config.num_labels)], config.semantic_loss_ignore_index, split,
                  args.data_ignore_index)
    processor = SegmentationImageProcessor.from_pretrained(args.model)
    return evaluate_segmentation(
        model, processor, split, out,
        mode="slide" if args.sliding_window else "whole", window=args.window, stride=args.stride,
        flip=args.flip, scales=args.scales, examples=args.examples, max_samples=args.max_samples,
    )


def evaluate_caption(args, split, out: Path) -> dict:
    from metrics.caption_metrics import preflight
    from models.caption_report import write_caption_report
    from models.captioner import load_captioner

    missing = preflight(args.metrics)
    if missing:
        raise DatasetError(f"--metrics {args.metrics} cannot run here: " + "; ".join(missing))
    model, tokenizer, processor = load_captioner(args.model)
    details = {}
    if args.ensemble_with:
        model = ensemble_of(model, tokenizer, processor, args.ensemble_with, args.ensemble_weights)
        weights = args.ensemble_weights or [1.0] * len(model.members)
        details = {"ensemble": [str(args.model), *map(str, args.ensemble_with)],
                   "ensemble_weights": [w / sum(weights) for w in weights]}  # as the ensemble normalises them
    if args.max_samples:
        split = split.select(range(min(args.max_samples, split.num_rows)))
    return write_caption_report(
        model.eval(), tokenizer, processor, split, out, batch_size=args.batch_size, num_beams=args.num_beams,
        length_penalty=args.length_penalty, metrics_mode=args.metrics, attention_examples=args.examples,
        details=details,
    )


def ensemble_of(model, tokenizer, processor, folders: list[str], weights: list[float] | None):
    """``--model`` and the ``--ensemble-with`` captioners as one ``CaptionEnsemble``."""
    from models.caption_ensemble import CaptionEnsemble
    from models.captioner import load_captioner

    members, tokenizers = [model], [tokenizer]
    for folder in folders:  # each folder's existence and model type were checked in main()
        member, member_tokenizer, member_processor = load_captioner(folder)
        if member_processor.to_dict() != processor.to_dict():
            raise DatasetError(f"--ensemble-with {folder}: its image processor differs from --model's "
                               f"({member_processor.to_dict()} vs {processor.to_dict()}); the captioners of an "
                               "ensemble read the same pixels, so train them at the same image size")
        members.append(member)
        tokenizers.append(member_tokenizer)
    return CaptionEnsemble.from_members(members, weights=weights, tokenizers=tokenizers)


def evaluate_caption_seg(args, split, out: Path) -> dict:
    import pipelines  # noqa: F401  (registers the task)
    from metrics.caption_metrics import preflight
    from pipelines.caption_seg_report import evaluate_caption_seg as run_report
    from transformers import pipeline

    missing = preflight(args.metrics)
    if missing:
        raise DatasetError(f"--metrics {args.metrics} cannot run here: " + "; ".join(missing))
    pipe = pipeline("image-captioning-seg", model=args.model, trust_remote_code=True)
    check_classes(pipe.model.config.class_names, pipe.model.config.segmenter.semantic_loss_ignore_index, split,
                  args.data_ignore_index)
    return run_report(pipe, split, out, batch_size=args.batch_size, num_beams=args.num_beams,
                      segment_aware=False if args.no_segment_aware else None, metrics_mode=args.metrics,
                      examples=args.examples, max_samples=args.max_samples)


def model_types() -> dict[str, tuple[str, ...]]:
    """The model types (config.json's ``model_type``) each --task evaluates; stock VisionEncoderDecoderModel folders
    caption too."""
    from models.caption_seg_model import CaptionSegConfig
    from models.captioner import CaptionerConfig
    from models.unet import UnetConfig

    return {"segment": (UnetConfig.model_type,), "caption": (CaptionerConfig.model_type, "vision-encoder-decoder"),
            "caption-seg": (CaptionSegConfig.model_type,)}


def model_type_error(folder: Path, task: str, flag: str = "--model") -> str | None:
    """Why ``folder`` is not a model that ``--task task`` evaluates, read from its config.json before anything loads
    (a U-Net would otherwise load from a captioner's folder with freshly initialised weights); None when it is."""
    types = model_types()
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as err:
        return f"{flag} {folder}: no readable config.json ({err}); give a folder written by scripts/train.py"
    if model_type in types[task]:
        return None
    fits = [name for name, accepted in types.items() if model_type in accepted]
    hint = f" (that is a --task {fits[0]} model)" if fits else ""
    return (f"{flag} {folder} holds a {model_type!r} model{hint}; --task {task} evaluates "
            f"{' or '.join(repr(t) for t in types[task])} models")


def main(argv=None) -> int:
    args = parse_args(argv)
    if not Path(args.model).is_dir():
        print(f"error: --model {args.model}: no such model folder", file=sys.stderr)
        return 2
    wrong = model_type_error(Path(args.model), args.task)
    for folder in args.ensemble_with:  # before the dataset loads, as for --model
        if wrong:
            break
        wrong = (f"--ensemble-with {folder}: no such model folder" if not Path(folder).is_dir()
                 else model_type_error(Path(folder), "caption", flag="--ensemble-with"))
    if wrong:
        print(f"error: {wrong}", file=sys.stderr)
        return 2
    out = Path(args.out or Path(args.model) / f"eval_{args.split}")
    try:
        args.scales = _scales(args.scales)  # before loading anything: a typo fails at once
        args.window = None if args.sliding_window in (None, "train-crop") else _pair(args.sliding_window,
                                                                                      "--sliding-window")
        args.stride = _pair(args.stride, "--stride")
        overrides = parse_overrides(args.data_set)
        data_config = load_config(resolve_config_path(args.dataset), **overrides)
        args.data_ignore_index = data_config.ignore_index
        data = load_dataset_from_config(data_config, root=args.root, splits=[args.split], cache_dir=args.cache_dir)
        run = {"segment": evaluate_segment, "caption": evaluate_caption, "caption-seg": evaluate_caption_seg}[args.task]
        args.examples = chosen_examples(args.examples, data[args.split])
        metrics = run(args, data[args.split], out)
    except (DatasetError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SafetensorError as err:  # not an OSError: safetensors raises its own type for a damaged file
        print(f"error: --model {args.model}: its weights file is corrupt or truncated ({err})", file=sys.stderr)
        return 2
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and "/" not in k}
    print(json.dumps(shown, indent=2))
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
