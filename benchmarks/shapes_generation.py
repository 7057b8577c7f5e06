"""How fast the synthetic shapes dataset is generated on one CPU core.

Three stages, each timed on its own:

1. ``generate``: ``generate_scene`` for N images (image + mask + captions + scene truth), the number the
   requirement is about (10,000 128x128 images in under a minute on one core);
2. ``png``: PNG-encoding the image and mask of the first M of them, as the Arrow builder does (level 1 / level 6);
3. ``arrow``: the whole ``load_dataset_from_config("shapes", num_train=M, ...)`` path into a fresh cache:
   generation, mask validation, PNG encoding and Arrow writing.

    .venv/bin/python benchmarks/shapes_generation.py                 # N=10000, M=1000
    .venv/bin/python benchmarks/shapes_generation.py --num 2000 --arrow-num 200

Prints a table and writes JSON (default benchmarks/results/shapes_generation.json).
"""

from __future__ import annotations

import os

# One core means one thread too: set before numpy loads its BLAS (the noise background does a tiny matmul).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from datasets_cfg import load_dataset_from_config  # noqa: E402
from datasets_cfg.image_io import encode_png  # noqa: E402
from datasets_cfg.shapes import generate_scene  # noqa: E402


def pin_to_one_core() -> str:
    """Restrict this process to a single CPU (Linux); returns what was done, for the report."""
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity on this OS)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=10_000, help="images for the generation timing")
    ap.add_argument("--arrow-num", type=int, default=1_000, help="images for the PNG and Arrow timings")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "shapes_generation.json"))
    args = ap.parse_args(argv)
    pinning = pin_to_one_core()

    rows = []

    t0 = time.perf_counter()
    kept = []
    for i in range(args.num):
        scene = generate_scene(i, "train", args.seed, args.image_size)
        if i < args.arrow_num:
            kept.append(scene)
    gen_s = time.perf_counter() - t0
    rows.append(("generate (image+mask+captions)", args.num, gen_s))

    t0 = time.perf_counter()
    png_bytes = 0
    for scene in kept:
        png_bytes += len(encode_png(scene.image)) + len(encode_png(Image.fromarray(scene.mask), compress_level=6))
    png_s = time.perf_counter() - t0
    rows.append(("png encode (image+mask)", len(kept), png_s))

    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        ds = load_dataset_from_config(
            "shapes",
            num_train=args.arrow_num,
            num_validation=0,
            num_test=0,
            seed=args.seed,
            image_size=args.image_size,
            cache_dir=cache,
        )
        arrow_s = time.perf_counter() - t0
        assert len(ds["train"]) == args.arrow_num
    rows.append(("full dataset build (Arrow)", args.arrow_num, arrow_s))

    print(f"{'stage':34s} {'images':>8s} {'seconds':>9s} {'images/s':>10s} {'ms/image':>9s}")
    for name, n, s in rows:
        print(f"{name:34s} {n:8d} {s:9.2f} {n / s:10.0f} {1000 * s / n:9.3f}")
    per_10k = gen_s / args.num * 10_000
    print(f"generation of 10,000 images: {per_10k:.1f} s (requirement: < 60 s on one core)")

    result = {
        "benchmark": "shapes_generation",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "image_size": args.image_size,
        "seed": args.seed,
        "cpu": cpu_model(),
        "cores_visible": os.cpu_count(),
        "pinning": pinning,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "stages": [
            {"stage": name, "images": n, "seconds": round(s, 3), "images_per_s": round(n / s, 1)}
            for name, n, s in rows
        ],
        "png_bytes_per_image": round(png_bytes / max(1, len(kept))),
        "generation_seconds_per_10k": round(per_10k, 2),
        "meets_requirement": per_10k < 60,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
