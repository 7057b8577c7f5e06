"""Caption and segment images with a combined caption + segmentation model folder.

    python scripts/predict.py photo.jpg --model runs/capseg/best --out predictions
    python scripts/predict.py photos/ extra/a.png --model runs/capseg/best --out predictions --num-beams 3
    python scripts/predict.py photos/ --recursive --model runs/capseg/best --out predictions \\
        --batch-size 8 --alpha 0.35 --no-region-captions --device cpu

Inputs are image files and/or folders (a folder gives the image files in it, by extension, sorted; with
``--recursive`` those of its subfolders too; its other files are named in a warning and counted in the summary
line, not read). Each image goes through ``pipeline("image-captioning-seg")`` and gives, in ``--out``:

- one line of ``predictions.jsonl``: ``{"image", "caption", "classes": [{"label", "area"}], "region_captions",
  "consistency", "overlay"}``, ``area`` being the class's share of the image's pixels, largest first;
- ``overlays/<stem>.png``: photo | classes over the photo, a legend with pixel shares, and the captions
  (``models.prediction_overlay``); a stem shared by two inputs gets ``-2``, ``-3``, ... appended.

A file that is not a usable image (not an image, corrupt or truncated, too large) is reported on stderr with the
reason, skipped and counted in the summary line; the other images are still predicted. Exit status: 0 when at
least one image was predicted, 1 when none was, 2 (one ``error:`` line) for a bad command line: no inputs, a
missing file or folder, a folder without images, a model folder that is missing or cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Run as a script, Python puts scripts/ first on sys.path, where scripts/evaluate.py would shadow the `evaluate`
# library: put the repository root there instead.
_SCRIPTS = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _SCRIPTS]
sys.path.insert(0, str(_SCRIPTS.parent))

from scripts.device_flag import device_flag  # noqa: E402
from scripts.one_line_errors import OneLineErrorParser, UsageError  # noqa: E402
from datasets_cfg.folders import IMAGE_EXTENSIONS  # noqa: E402
from pipelines.image_inputs import DEFAULT_MAX_IMAGE_PIXELS, ImageTooLargeError, load_image  # noqa: E402

TASK = "image-captioning-seg"


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineErrorParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of images")
    p.add_argument("--model", required=True, help="a combined caption + segmentation model folder")
    p.add_argument("--out", required=True, help="output folder (predictions.jsonl, overlays/)")
    p.add_argument("--recursive", action="store_true", help="also take the images in the folders' subfolders")
    p.add_argument("--num-beams", type=int, help="beam width (default: the model's generation config)")
    p.add_argument("--no-segment-aware", action="store_true",
                   help="caption without attending over the predicted segments")
    p.add_argument("--no-region-captions", action="store_true", help="skip the per-region captions")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the class colours in the overlays (0..1)")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                   help="refuse images with more pixels than this (0: no limit)")
    p.add_argument("--device", type=device_flag,
                   help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    args = p.parse_args(argv)
    if not args.inputs:
        raise UsageError("no inputs: give image files and/or folders of images")
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha {args.alpha}: must be between 0 and 1")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.num_beams is not None and args.num_beams < 1:
        raise UsageError(f"--num-beams {args.num_beams}: must be at least 1")
    if args.max_image_pixels < 0:
        raise UsageError(f"--max-image-pixels {args.max_image_pixels}: must be 0 (no limit) or more")
    if not Path(args.model).is_dir():
        raise UsageError(f"--model {args.model}: no such model folder")
    return args


def collect_images(inputs: list[str], recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """The image paths named by ``inputs``, in order: a file as given (whatever its extension), a folder as its
    files with an image extension, sorted. A path named twice is kept once. Also returns the folders' other files
    (not images by their extension, or broken links), which are not read."""
    found: list[Path] = []
    ignored: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            candidates = sorted(p for p in (path.rglob("*") if recursive else path.iterdir()) if not p.is_dir())
            images = [p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
            if not images:
                hint = "nor in its subfolders" if recursive else "--recursive also looks in its subfolders"
                raise UsageError(f"{path}: folder has no image files ({', '.join(IMAGE_EXTENSIONS)}; {hint})")
            found.extend(images)
            kept = set(images)  # a set: folders of many thousand files
            ignored.extend(p for p in candidates if p not in kept)
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    seen, unique = set(), []
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique, ignored


class StemNamer:
    """File names for the overlays: the input's stem, with ``-2``, ``-3``, ... when taken. Compared without case,
    so that ``A.png`` and ``a.png`` do not overwrite each other on case-insensitive file systems."""

    def __init__(self):
        self._used: set[str] = set()

    def __call__(self, path: Path) -> str:
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in path.stem) or "image"
        name, n = stem, 1
        while name.casefold() in self._used:
            n += 1
            name = f"{stem}-{n}"
        self._used.add(name.casefold())
        return name


def _reason(err: Exception, path: Path) -> str:
    message = str(err)
    return message if str(path) in message else f"{path}: {message}"


def _record(path: Path, result: dict, class_names, overlay_path: Path) -> dict:
    from models.prediction_overlay import class_areas

    return {
        "image": str(path),
        "caption": result["caption"],
        "classes": [{"label": r["label"], "area": r["area"]} for r in class_areas(result["class_map"], class_names)],
        "region_captions": result.get("region_captions", []),
        "consistency": result.get("consistency", {}),
        "overlay": str(overlay_path),
    }


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        paths, ignored = collect_images(args.inputs, args.recursive)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if ignored:
        shown = ", ".join(str(p) for p in ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        print(f"warning: ignored {len(ignored)} file(s) in the input folders without an image extension "
              f"({', '.join(IMAGE_EXTENSIONS)}): {shown}; name a file directly to predict it", file=sys.stderr)

    import torch
    from tqdm.auto import tqdm
    from transformers import pipeline

    import pipelines  # noqa: F401  (registers the "image-captioning-seg" task)
    from models.prediction_overlay import prediction_overlay

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        pipe = pipeline(TASK, model=args.model, device=device)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        print(f"error: --model {args.model}: cannot load it as a {TASK} model ({err})".replace("\n", " "),
              file=sys.stderr)
        return 2
    class_names = pipe.model.config.id2label
    call_options = {
        "segment_aware": False if args.no_segment_aware else None,
        "region_captions": not args.no_region_captions,
        "consistency": True,
        "return_class_map": True,
    }
    if args.num_beams is not None:
        call_options["num_beams"] = args.num_beams
    if args.max_image_pixels != DEFAULT_MAX_IMAGE_PIXELS:
        call_options["max_image_pixels"] = args.max_image_pixels

    out = Path(args.out)
    overlay_dir = out / "overlays"
    try:
        overlay_dir.mkdir(parents=True, exist_ok=True)
        jsonl = (out / "predictions.jsonl").open("w", encoding="utf-8")
    except OSError as err:
        print(f"error: --out {out}: cannot write there ({err})", file=sys.stderr)
        return 2

    name_overlay = StemNamer()
    failures: list[str] = []
    done = 0
    bar = tqdm(total=len(paths), desc="predict", unit="image", file=sys.stderr, dynamic_ncols=True)

    def skip(path: Path, reason: str) -> None:
        failures.append(str(path))
        tqdm.write(f"warning: skipped {reason}", file=sys.stderr)

    def predict(batch: list[tuple[Path, object]]) -> list[tuple[Path, object, dict]]:
        images = [image for _, image in batch]
        try:
            results = pipe(images, batch_size=len(images), **call_options)
        except (ValueError, RuntimeError) as err:
            if len(batch) == 1:
                skip(batch[0][0], f"{batch[0][0]}: prediction failed ({err})")
                return []
            # One image spoilt the batch: redo it image by image so that only that one is lost.
            return [item for one in batch for item in predict([one])]
        return [(path, image, result) for (path, image), result in zip(batch, results)]

    with jsonl:
        for start in range(0, len(paths), args.batch_size):
            batch = []
            # Loaded one by one, before batching: a bad file is dropped alone, the good ones of its batch go on.
            for path in paths[start:start + args.batch_size]:
                try:
                    batch.append((path, load_image(path, args.max_image_pixels)))
                except ImageTooLargeError as err:
                    # The pipeline's message names its max_image_pixels= parameter; here the limit is a flag.
                    skip(path, err.message("pass a larger --max-image-pixels (0: no limit)"))
                except ValueError as err:
                    skip(path, _reason(err, path))
            for path, image, result in predict(batch) if batch else []:
                overlay_path = overlay_dir / f"{name_overlay(path)}.png"
                prediction_overlay(image, result["class_map"], class_names, caption=result["caption"],
                                   alpha=args.alpha, region_captions=result.get("region_captions")).save(overlay_path)
                jsonl.write(json.dumps(_record(path, result, class_names, overlay_path)) + "\n")
                jsonl.flush()
                done += 1
            bar.update(len(paths[start:start + args.batch_size]))
    bar.close()

    not_images = f", {len(ignored)} other files ignored (no image extension)" if ignored else ""
    print(f"{done} of {len(paths)} images predicted, {len(failures)} skipped (bad files){not_images}; "
          f"results in {out / 'predictions.jsonl'} and {overlay_dir}")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
