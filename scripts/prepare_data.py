"""Build a dataset from its YAML, print a summary, optionally save it with ``save_to_disk``.

    python scripts/prepare_data.py --dataset camvid --root ../shared/data/camvid
    python scripts/prepare_data.py --dataset shapes --set num_train=10000 --save-to data/shapes

``--dataset`` takes a YAML path or the name of one in ``datasets_cfg/``. Bad input ends with one ``error:`` line
(exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Run as a script, Python puts scripts/ first on sys.path, where scripts/evaluate.py would shadow the `evaluate`
# library: put the repository root there instead.
_SCRIPTS = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _SCRIPTS]
sys.path.insert(0, str(_SCRIPTS.parent))

from datasets_cfg import DatasetError, load_dataset_from_config, parse_overrides  # noqa: E402
from datasets_cfg.summary import summarize  # noqa: E402



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="dataset YAML path or shipped name (e.g. shapes, camvid)")
    parser.add_argument("--root", help="the dataset's folder (wins over the YAML's root)")
    parser.add_argument("--split", action="append", help="only this split (repeatable)")
    parser.add_argument("--set", "--data-set", dest="set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a YAML key (--data-set as in train.py and evaluate.py)")
    parser.add_argument("--skip-bad-rows", action="store_true", help="same as --set on_error=skip")
    parser.add_argument("--cache-dir", help="Arrow cache folder (default: the datasets cache)")
    parser.add_argument("--save-to", help="also write the DatasetDict here with save_to_disk")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.set, flag="--set")
        if args.skip_bad_rows:
            overrides["on_error"] = "skip"
        start = time.perf_counter()
        ds = load_dataset_from_config(args.dataset, root=args.root, splits=args.split, cache_dir=args.cache_dir, **overrides)
        elapsed = time.perf_counter() - start
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"dataset {args.dataset}: built in {elapsed:.1f} s")
    print(summarize(ds))
    if args.save_to:
        ds.save_to_disk(args.save_to)
        print(f"saved to {args.save_to} (load it with datasets.load_from_disk)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
