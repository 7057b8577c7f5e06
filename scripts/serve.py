"""Serve a combined caption + segmentation model as a web page (Gradio), on this machine only by default.

    python scripts/serve.py --model outputs/demo/caption_seg_model
    python scripts/serve.py --model runs/capseg/best --port 8080 --examples my_photos/ --max-upload-mb 20
    python scripts/serve.py --model runs/capseg/best --host 0.0.0.0    # reachable from the network: think first

Open the printed URL: upload a photo or pick an example (a few generated shapes scenes, or the images of
``--examples``) to get its caption, its classes over the photo with each one's pixel share, a per-class area table,
the region captions and where the decoder looked for each word. Beam size, overlay opacity and segmentation-aware
captioning are controls on the page. The page is ``pipelines.web_app``; it also answers ``gradio_client``:

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860/").predict(handle_file("photo.png"), 3, True, 0.5, api_name="/caption")[0]

The model is loaded once; requests wait in a queue (``--queue-size``) and run one at a time. Uploads over
``--max-upload-mb`` and images over ``--max-image-pixels`` are refused with a message, as are files that are not
images. Nothing leaves the machine: no share link, no analytics, no web fonts. Ctrl+C stops the server.

A bad command line (missing model folder, unusable examples folder, port in use) ends with one ``error:`` line,
exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

# Run as a script, Python puts scripts/ first on sys.path, where scripts/evaluate.py would shadow the `evaluate`
# library: put the repository root there instead.
_SCRIPTS = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _SCRIPTS]
sys.path.insert(0, str(_SCRIPTS.parent))

from scripts.device_flag import device_flag  # noqa: E402
from scripts.one_line_errors import OneLineErrorParser, UsageError  # noqa: E402
from pipelines.image_inputs import DEFAULT_MAX_IMAGE_PIXELS  # noqa: E402

TASK = "image-captioning-seg"


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineErrorParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", required=True, help="a combined caption + segmentation model folder")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--max-upload-mb", type=_positive(float), default=10.0, help="largest upload in MB (default 10)")
    p.add_argument("--max-image-pixels", type=_positive(int), default=DEFAULT_MAX_IMAGE_PIXELS,
                   help=f"largest image in width x height pixels (default {DEFAULT_MAX_IMAGE_PIXELS})")
    p.add_argument("--examples", metavar="DIR",
                   help="offer the images of this folder as examples (default: generated shapes scenes)")
    p.add_argument("--queue-size", type=_positive(int), default=64,
                   help="requests that may wait; past it new ones are told the queue is full (default 64)")
    p.add_argument("--num-beams", type=_positive(int),
                   help="the beam slider's starting value (default: the model's generation config)")
    p.add_argument("--device", type=device_flag,
                   help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: not a port number (1-65535)")
    return args


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not Path(args.model).is_dir():
        print(f"error: --model {args.model}: no such folder", file=sys.stderr)
        return 2

    import torch
    from transformers import pipeline

    import pipelines  # noqa: F401  (registers the image-captioning-seg task)
    from pipelines.web_app import MAX_BEAMS, build_app, copy_example_images, launch_app, write_example_images

    if args.num_beams and args.num_beams > MAX_BEAMS:
        print(f"error: --num-beams {args.num_beams}: the page offers 1 to {MAX_BEAMS}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        pipe = pipeline(TASK, model=args.model, device=device)
    except Exception as err:  # any loading failure is the model folder's (or the device's), said in one line
        print(f"error: --model {args.model}: cannot load it as a {TASK} model ({err})".replace("\n", " "),
              file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="serve_examples_") as examples_dir:
        try:
            examples = (copy_example_images(args.examples, examples_dir, max_image_pixels=args.max_image_pixels)
                        if args.examples else write_example_images(examples_dir))
        except ValueError as err:
            print(f"error: --examples: {err}", file=sys.stderr)
            return 2
        demo = build_app(pipe, examples=examples, max_image_pixels=args.max_image_pixels,
                         queue_size=args.queue_size, default_num_beams=args.num_beams)
        try:
            _, local_url, _ = launch_app(demo, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
                                         prevent_thread_lock=True)
        except OSError:  # gradio's "Cannot find empty port", whatever made the bind fail
            print(f"error: cannot serve on {args.host}:{args.port}: the port is in use or the address is not one "
                  "of this machine's (choose another --port or --host)", file=sys.stderr)
            return 2
        print(f"Serving the {TASK} model {args.model} on {local_url} (Ctrl+C stops)", flush=True)
        try:
            demo.block_thread()
        finally:
            demo.close(verbose=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
