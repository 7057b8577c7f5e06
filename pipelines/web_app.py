"""The web page of the caption + segmentation pipeline: a ``gradio.Blocks`` app, served by ``scripts/serve.py``.

    import pipelines
    from transformers import pipeline
    from pipelines.web_app import build_app, launch_app, write_example_images

    pipe = pipeline("image-captioning-seg", model="outputs/demo/caption_seg_model")
    demo = build_app(pipe, examples=write_example_images("/tmp/examples"))
    app, url, _ = launch_app(demo, port=7860, prevent_thread_lock=True)   # or block (the default)
    ...
    demo.close()

The page: upload a photo (or pick an example), choose the beam width, the overlay opacity and whether the caption
decoder attends over the predicted segments; get the caption, the photo with its classes laid over it (legend with
each class's pixel share), a per-class area table, the region captions and one picture of where the decoder looked
for each word. Moving the opacity slider redraws the overlay without running the model again.

API (``gradio_client``): the page's own event is the endpoint ``/caption``::

    from gradio_client import Client, handle_file
    caption, overlay_png, areas, regions, notes = Client(url).predict(
        handle_file("photo.png"), 3, True, 0.5, api_name="/caption")   # image, beams, segment-aware, opacity

Bad input (not an image, a corrupt or truncated file, too many pixels, an out-of-range setting) is answered with a
``gr.Error`` naming the file and the reason: a message on the page, an ``AppError`` for API clients; the server
keeps serving. Uploads over the size limit are refused by Gradio before they reach the model.

Uploads and results are deleted from gradio's cache an hour after they were made. Offline by construction:
analytics off, no share link, a system-font theme (no font download), no monitoring endpoint, client-side rendering
(no Node server).
"""

from __future__ import annotations

import html
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

# Read when gradio is imported: no usage statistics or version checks leave the machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from datasets_cfg.image_io import open_image_file  # noqa: E402
from models.prediction_overlay import class_areas, class_name_list, prediction_overlay  # noqa: E402

from .image_inputs import DEFAULT_MAX_IMAGE_PIXELS, ImageTooLargeError, describe_input, load_image  # noqa: E402

logger = logging.getLogger(__name__)

API_NAME = "caption"
MAX_BEAMS = 10
DEFAULT_QUEUE_SIZE = 64
DEFAULT_MAX_UPLOAD_MB = 10
# No "share" button: it posts to Hugging Face Spaces discussions.
OUTPUT_IMAGE_BUTTONS = ["download", "fullscreen"]
# Photos larger than this (a side, in pixels) are shown scaled down; areas are still measured at full size.
DISPLAY_MAX_SIDE = 1024
# Sessions whose last prediction is kept (for the opacity slider); gradio's default is 10000.
STATE_SESSIONS = 200
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# System fonts only: gradio's default theme would otherwise name web fonts, and the page must not wait on any
# resource outside this server.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])


def write_example_images(folder: str | Path, count: int = 3, image_size: int = 128) -> list[Path]:
    """``count`` generated shapes scenes (the test split of the embedded synthetic dataset) as PNGs in ``folder``."""
    from datasets_cfg.shapes import generate_scene

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"shapes_{index}.png"
        Image.fromarray(generate_scene(index, split="test", image_size=image_size).image).save(path)
        paths.append(path)
    return paths


def copy_example_images(source: str | Path, folder: str | Path, limit: int = 8,
                        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> list[Path]:
    """The first ``limit`` readable images of ``source`` (sorted by name), re-saved as PNGs in ``folder``.

    Copied rather than served in place, so that the server only ever exposes its own temporary folder; files that
    are not usable images are skipped with a warning.
    """
    source, folder = Path(source), Path(folder)
    if not source.is_dir():
        raise ValueError(f"{source}: the examples folder does not exist")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for path in sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if len(paths) == limit:
            break
        try:
            image = load_image(path, max_image_pixels=max_image_pixels)
        except ValueError as err:
            logger.warning("skipping example %s", err)
            continue
        target = folder / f"{len(paths)}_{path.stem}.png"
        image.save(target)
        paths.append(target)
    if not paths:
        raise ValueError(f"{source}: no usable image files (looked for {', '.join(IMAGE_SUFFIXES)})")
    return paths


def _user_error(message: str) -> gr.Error:
    # gr.Error renders its message as HTML: escape it, since it quotes the user's own file name. The toast stays
    # until closed (duration=None) so a message is not missed; expected input errors need no server traceback.
    # Quotes need no escaping in HTML text, and API clients (gradio_client) read the same message: escape only
    # what could open a tag or an entity.
    return gr.Error(html.escape(message, quote=False), duration=None, print_exception=False)


def _too_large(shown_name: str, width: int, height: int, max_image_pixels: int) -> gr.Error:
    # A web user cannot change the server's limit: no max_image_pixels= or command-line advice, only what to do.
    return _user_error(
        f"{shown_name}: the image is {width}x{height} pixels ({width * height / 1e6:.1f} MP); this server "
        f"accepts up to {max_image_pixels / 1e6:.1f} MP. Please upload a smaller image."
    )


def _uploaded_image(payload, max_image_pixels: int | None) -> tuple[Image.Image, str]:
    """The RGB image of an ``gr.Image`` payload that gradio did not preprocess (see ``build_app``), and the name
    the user knows the file by."""
    if not payload:
        raise _user_error("No image: upload a photo or pick an example first.")
    path = payload.get("path") if isinstance(payload, dict) else None
    if not path:
        raise _user_error("The upload did not reach the server; please upload the image again.")
    shown_name = payload.get("orig_name") or Path(path).name
    try:
        # The header alone gives the size: an oversized image is refused before anything is decoded.
        with open_image_file(path, max_pixels=0) as header:
            width, height = header.size
        image = None
        if not max_image_pixels or width * height <= max_image_pixels:
            image = load_image(path, max_image_pixels=None)
    except ValueError as err:
        # The messages name the server's cache path; the user knows the file by its own name.
        raise _user_error(str(err).replace(str(path), shown_name)) from None
    if image is None:
        raise _too_large(shown_name, width, height, max_image_pixels)
    return image, shown_name


def _number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool):  # float(True) is 1.0: a checkbox's value in a slider's place is a mistake
        raise _user_error(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _user_error(f"{name} must be a number, got {value!r}") from None
    if not low <= number <= high:
        raise _user_error(f"{name} must be between {low:g} and {high:g}, got {number:g}")
    return number


def _whole_number(value, name: str, low: int, high: int) -> int:
    number = _number(value, name, low, high)
    if not number.is_integer():
        raise _user_error(f"{name} must be a whole number, got {value!r}")
    return int(number)


def _flag(value, name: str) -> bool:
    """A checkbox's value: a bool from the page; API clients may also send 0/1 or "true"/"false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _user_error(f"{name} must be true or false, got {value!r}")


def _consistency_notes(consistency: dict | None) -> str:
    if not consistency:
        return ""
    lines = []
    if consistency.get("named_but_absent"):
        lines.append("Named in the caption but not found in the image: "
                     + ", ".join(consistency["named_but_absent"]))
    if consistency.get("present_but_unnamed"):
        lines.append("Found in the image but not named in the caption: "
                     + ", ".join(consistency["present_but_unnamed"]))
    return "\n\n".join(lines) or "The caption names exactly the classes found in the image."


def display_copy(image: Image.Image, class_map: np.ndarray, max_side: int = DISPLAY_MAX_SIDE):
    """(photo, class map) no larger than ``max_side`` pixels a side, for the page: the overlay's legend and caption
    stay readable next to the photo, and a session's stored prediction stays small. The class map is subsampled
    (nearest pixel), so it still holds only real class ids; it is stored in the smallest unsigned type."""
    class_map = np.asarray(class_map)
    scale = max_side / max(image.size)
    if scale < 1:
        width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        image = image.resize((width, height), Image.Resampling.LANCZOS)
        rows = np.arange(height) * class_map.shape[0] // height
        columns = np.arange(width) * class_map.shape[1] // width
        class_map = class_map[np.ix_(rows, columns)]
    return image, class_map.astype(np.min_scalar_type(max(int(class_map.max(initial=0)), 0)))


def attention_picture(image: Image.Image, words: Sequence[str], maps) -> Image.Image | None:
    """``caption_report.save_attention_figure`` (the photo once per word, with where the decoder looked) as an
    image in memory; None when the prediction carries no attention maps."""
    from models.caption_report import save_attention_figure

    if maps is None or not len(words):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = save_attention_figure(image, list(words), np.asarray(maps), Path(tmp) / "attention.png")
        with Image.open(path) as picture:
            return picture.convert("RGB")


def build_app(pipe, examples: Sequence[str | Path] = (), max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
              queue_size: int = DEFAULT_QUEUE_SIZE, default_num_beams: int | None = None) -> gr.Blocks:
    """The page (see the module docstring) around one loaded ``image-captioning-seg`` pipeline, queued.

    Args:
        pipe: the pipeline, loaded once; every request uses it (``segment_aware`` is a call parameter).
        examples: image files offered as one-click examples.
        max_image_pixels: width x height above which an image is refused with a message.
        queue_size: requests that may wait in the queue; past it, new ones are told the queue is full.
        default_num_beams: the beam slider's starting value (default: the model's generation config, else 3).
    """
    class_names = class_name_list(pipe.model.config.id2label)
    # A model trained without segment tokens can only caption with segment_aware=False: the box stays unticked.
    can_segment_aware = bool(getattr(pipe.model.config, "segment_aware", True))
    if default_num_beams is None:
        # The combined model keeps its beam width in its config; other generators in their generation config.
        default_num_beams = (getattr(pipe.model.config, "num_beams", None)
                             or getattr(getattr(pipe.model, "generation_config", None), "num_beams", None) or 3)
    default_num_beams = int(min(max(default_num_beams, 1), MAX_BEAMS))

    def caption(image_payload, num_beams, segment_aware, alpha):
        # Gradio does not preprocess this event's inputs (preprocess=False below), so they are checked here.
        image, shown_name = _uploaded_image(image_payload, max_image_pixels)
        beams = _whole_number(num_beams, "beam size", 1, MAX_BEAMS)
        alpha = _number(alpha, "overlay opacity", 0.0, 1.0)
        segment_aware = _flag(segment_aware, "segment-aware")
        try:
            # The server's limit, not the pipeline's own (64 MP by default): an image this server accepts must not
            # be refused by a second, smaller limit. 0 is the pipeline's "no limit", the server's None.
            out = pipe(image, num_beams=beams, segment_aware=segment_aware, region_captions=True,
                       consistency=True, return_attention=True, return_class_map=True,
                       max_image_pixels=max_image_pixels or 0)
        except ImageTooLargeError as err:
            raise _too_large(shown_name, *err.size, err.max_image_pixels) from None
        except ValueError as err:
            # The pipeline names the image by its cache path or its type; the user knows it by its own name.
            raise _user_error(str(err).replace(describe_input(image), shown_name)) from None
        except Exception:
            # A model failure is the server's problem: full traceback in its log, a plain sentence for the user.
            logger.exception("prediction failed")
            raise _user_error("The model failed on this image; the server log has the details.") from None
        areas = class_areas(out["class_map"], class_names)  # at full resolution
        regions = out.get("region_captions") or []
        shown, shown_map = display_copy(image, out["class_map"])
        overlay = prediction_overlay(shown, shown_map, class_names, caption=out["caption"], alpha=alpha,
                                     region_captions=regions)
        # Kept in the session for the opacity slider and the attention picture.
        state = {"image": shown, "class_map": shown_map, "caption": out["caption"], "regions": regions,
                 "words": out.get("words") or [], "maps": out.get("attention_maps")}
        return (
            out["caption"],
            overlay,
            [[r["label"], round(100 * r["area"], 2)] for r in areas],
            [[r.get("label", ""), r.get("caption", "")] for r in regions],
            _consistency_notes(out.get("consistency")),
            state,
        )

    def redraw_overlay(state, alpha):
        if not state:
            return gr.skip()
        return prediction_overlay(state["image"], state["class_map"], class_names, caption=state["caption"],
                                  alpha=_number(alpha, "overlay opacity", 0.0, 1.0),
                                  region_captions=state["regions"])

    def draw_attention(state):
        if not state:
            return None
        return attention_picture(state["image"], state["words"], state["maps"])

    # delete_cache: users' uploads and the pictures made from them leave gradio's cache after an hour (examples stay).
    with gr.Blocks(title="Caption + segmentation", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("## Caption + segmentation\nUpload a photo (or pick an example) and press **Caption**.")
        prediction = gr.State(None)
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Photo", type="filepath", sources=["upload", "clipboard"], elem_id="photo")
                num_beams = gr.Slider(1, MAX_BEAMS, value=default_num_beams, step=1, label="Beam size",
                                      elem_id="num-beams")
                segment_aware = gr.Checkbox(
                    value=can_segment_aware, interactive=can_segment_aware, label="Segmentation-aware caption",
                    info="the decoder also attends over the predicted segments" if can_segment_aware
                    else "this model was trained without segment tokens", elem_id="segment-aware")
                alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity", elem_id="alpha")
                submit = gr.Button("Caption", variant="primary", elem_id="submit")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[image], label="Examples")
            with gr.Column():
                caption_box = gr.Textbox(label="Caption", interactive=False, elem_id="caption")
                overlay = gr.Image(label="Classes over the photo", type="pil", format="png", interactive=False,
                                   buttons=OUTPUT_IMAGE_BUTTONS, elem_id="overlay")
                areas = gr.Dataframe(headers=["class", "area %"], datatype=["str", "number"], interactive=False,
                                     label="Area per class", elem_id="areas")
                regions = gr.Dataframe(headers=["region", "caption"], datatype=["str", "str"], interactive=False,
                                       label="Region captions", elem_id="regions")
                notes = gr.Markdown(elem_id="notes")
        attention = gr.Image(label="Where the decoder looked for each word", type="pil", format="png",
                             interactive=False, buttons=OUTPUT_IMAGE_BUTTONS, elem_id="attention")

        # preprocess=False: gr.Image's own preprocessing opens the upload with PIL and turns a non-image into an
        # anonymous "Error" toast; unprocessed, the upload's cache path reaches caption(), whose load_image names
        # the file and the reason. Gradio still checks that the path is one of its own uploads.
        event = submit.click(caption, [image, num_beams, segment_aware, alpha],
                             [caption_box, overlay, areas, regions, notes, prediction],
                             api_name=API_NAME, preprocess=False, concurrency_id="model")
        # The attention picture (matplotlib, the slow part) follows the caption instead of delaying it, and API
        # clients calling /caption do not pay for it.
        event.success(draw_attention, [prediction], [attention], api_visibility="private", concurrency_id="pyplot")
        # A new photo clears the previous one's results, so they are never shown side by side with it.
        image.change(lambda: (None, None, [], [], "", None, None), None,
                     [caption_box, overlay, areas, regions, notes, attention, prediction], queue=False,
                     api_visibility="private")
        alpha.release(redraw_overlay, [prediction, alpha], [overlay], api_visibility="private")

    # One request runs the model at a time (one pipeline object, a CPU-bound model); the others wait in the queue.
    return demo.queue(max_size=queue_size, default_concurrency_limit=1)


def launch_app(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, prevent_thread_lock: bool = False, quiet: bool = True):
    """Serve ``demo`` on ``host:port`` offline (no share link, no analytics, no monitoring endpoint) with uploads
    limited to ``max_upload_mb``; returns gradio's ``(app, local_url, share_url)`` once ``prevent_thread_lock``
    lets it return."""
    return demo.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=prevent_thread_lock,
        quiet=quiet, max_file_size=int(max_upload_mb * 1024 * 1024), theme=THEME, ssr_mode=False,
        enable_monitoring=False, mcp_server=False, run_history=False, show_error=False,
        state_session_capacity=STATE_SESSIONS,
    )


__all__ = ["API_NAME", "THEME", "attention_picture", "build_app", "copy_example_images", "display_copy",
           "launch_app", "write_example_images"]
