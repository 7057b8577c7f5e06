"""The web interface (pipelines/web_app.py, scripts/serve.py): a real browser gets a caption and an overlay and sees
the message for a bad file; gradio_client gets the pipeline's own answer; 50 concurrent requests all complete; bad
input is refused with a message while the server keeps answering; the CLI prints its URL and refuses bad flags.

One server, started in-process on a free loopback port for the whole module, around the tiny random-weight model.
The browser test needs Playwright and /usr/bin/chromium: skipped without them, failed under CI=true.
"""

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.prediction_overlay import class_areas, prediction_overlay
from pipelines.image_inputs import load_image
from tests.caption_seg_factory import save_tiny_caption_seg_model
from tests.image_factory import OPENED_MODE, write_photo
from tests.conftest import IN_CI, REPO

# gradio's queue builds its timing statistics with pandas options that pandas 3 deprecates: its noise, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning:gradio.queueing")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = REPO / "outputs" / "test_artifacts" / "serve_page.png"
MAX_UPLOAD_MB = 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_caption_seg_model(tmp_path_factory.mktemp("model") / "caption_seg")


@pytest.fixture(scope="module")
def pipe(model_dir):
    import pipelines  # noqa: F401  (registers the task)
    from transformers import pipeline

    return pipeline("image-captioning-seg", model=str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Three shapes scenes, a text file named .png, a 20000 x 20000 PNG of 50 kB, and a 1.2 MB PNG of noise."""
    from pipelines.web_app import write_example_images

    folder = tmp_path_factory.mktemp("uploads")
    scenes = write_example_images(folder, count=3)
    not_image = folder / "notes.png"
    not_image.write_text("this is a text file, not a picture\n")
    huge = folder / "huge.png"
    Image.new("1", (20000, 20000)).save(huge)  # compresses to ~50 kB: under the upload limit, over the pixel limit
    heavy = folder / "heavy.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (640, 640, 3), dtype=np.uint8)).save(heavy)
    assert heavy.stat().st_size > MAX_UPLOAD_MB * 1024 * 1024
    return {"scenes": scenes, "not_image": not_image, "huge": huge, "heavy": heavy}


@pytest.fixture(scope="module")
def server(pipe, files):
    """The app served in this process on a free loopback port; its URL. Closed after the module."""
    from pipelines.web_app import build_app, launch_app

    demo = build_app(pipe, examples=files["scenes"][:2])
    _, url, _ = launch_app(demo, host="127.0.0.1", port=_free_port(), max_upload_mb=MAX_UPLOAD_MB,
                           prevent_thread_lock=True)
    yield url
    demo.close(verbose=False)


def _expected(pipe, path, num_beams, segment_aware) -> dict:
    """What the page should show for ``path``: the pipeline's caption, area table and region captions, called
    directly."""
    out = pipe(load_image(path), num_beams=num_beams, segment_aware=segment_aware, region_captions=True)
    areas = [[r["label"], round(100 * r["area"], 2)] for r in class_areas(out["class_map"], pipe.model.config.id2label)]
    return {"caption": out["caption"], "areas": areas, "out": out}


# --------------------------------------------------------------------------------------------------------------------
# a real browser


@pytest.fixture(scope="module")
def sync_playwright():
    """Playwright's entry point; listed first by the browser test, so that a missing browser skips it before the
    server starts."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright (Python) is not installed"
    if reason is None and not Path(CHROMIUM).exists():
        reason = f"no browser at {CHROMIUM} (apt-get install chromium)"
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but the browser test cannot run: {reason}")
        pytest.skip(reason)
    return sync_playwright


def _upload(page, path: Path):
    """Upload ``path`` through the photo's file input and wait until the page shows it (the upload finished)."""
    page.locator("#photo input[type=file]").set_input_files(str(path))
    page.locator(f"#photo img[src*='{path.name}']").wait_for(timeout=20_000)


def test_browser_gets_caption_and_overlay_and_a_message_for_a_non_image(sync_playwright, server, pipe, files):
    from playwright.sync_api import expect

    first, second = files["scenes"][0], files["scenes"][1]
    beams, aware = pipe.model.config.num_beams, bool(pipe.model.config.segment_aware)  # the page's defaults
    expected_first, expected_second = _expected(pipe, first, beams, aware), _expected(pipe, second, beams, aware)
    outside = []  # requests to anything but this server: the page must need none (no web fonts, no CDN)

    def only_this_server(route):
        if route.request.url.startswith(server.rstrip("/")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.route("**/*", only_this_server)
            page.goto(server, wait_until="load")
            caption = page.locator("#caption textarea")

            _upload(page, first)
            page.locator("#submit").click()
            expect(caption).to_have_value(expected_first["caption"], timeout=30_000)
            overlay = page.locator("#overlay img")
            expect(overlay).to_be_visible(timeout=20_000)
            assert overlay.evaluate("img => img.complete && img.naturalWidth > 0"), "the overlay image did not load"
            expect(page.locator("#areas")).to_contain_text(expected_first["areas"][0][0])
            expect(page.locator("#attention img")).to_be_visible(timeout=30_000)  # drawn after the caption
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            print(f"screenshot: {SCREENSHOT}")

            # Opacity 0 (the slider's left end) redraws the overlay from the stored prediction: the same figure
            # as prediction_overlay(alpha=0) of the pipeline's own output.
            old_src = overlay.get_attribute("src")
            slider = page.locator("#alpha input[type=range]").bounding_box()
            page.mouse.click(slider["x"] + 1, slider["y"] + slider["height"] / 2)
            expect(overlay).not_to_have_attribute("src", old_src, timeout=20_000)
            redrawn = Image.open(io.BytesIO(page.request.get(overlay.get_attribute("src")).body()))
            out = expected_first["out"]
            assert np.array_equal(np.asarray(redrawn.convert("RGB")), np.asarray(prediction_overlay(
                load_image(first), out["class_map"], pipe.model.config.id2label, caption=out["caption"], alpha=0.0,
                region_captions=out["region_captions"])))

            _upload(page, files["not_image"])
            expect(caption).to_have_value("")  # a new photo clears the previous photo's results
            page.locator("#submit").click()
            expect(page.get_by_text("notes.png: not an image file")).to_be_visible(timeout=20_000)
            assert caption.input_value() == "", "a failed request must not show a caption"

            # The server still answers, with the new photo's own result.
            _upload(page, second)
            page.locator("#submit").click()
            expect(caption).to_have_value(expected_second["caption"], timeout=30_000)
            expect(page.locator("#areas")).to_contain_text(expected_second["areas"][0][0])
        finally:
            browser.close()
    assert not outside, f"the page requested resources outside the server: {outside}"


# --------------------------------------------------------------------------------------------------------------------
# gradio_client


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


@pytest.mark.parametrize("num_beams, segment_aware", [(3, True), (1, False)])
def test_client_gets_the_pipelines_caption_and_areas(client, pipe, files, num_beams, segment_aware):
    from gradio_client import handle_file

    scene = files["scenes"][2]
    caption, overlay_png, areas, regions, notes = client.predict(
        handle_file(str(scene)), num_beams, segment_aware, 0.5, api_name="/caption")
    expected = _expected(pipe, scene, num_beams, segment_aware)
    assert caption == expected["caption"] and caption
    assert areas["data"] == expected["areas"]
    assert sum(row[1] for row in areas["data"]) == pytest.approx(100, abs=0.05)
    with Image.open(overlay_png) as overlay:
        assert overlay.format == "PNG" and overlay.width >= 2 * 128  # photo | classes over the photo
    assert regions["data"] == [[r["label"], r["caption"]] for r in expected["out"]["region_captions"]]
    assert isinstance(notes, str)


def test_bad_input_is_refused_with_a_message_and_the_server_keeps_answering(client, files):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    scene = handle_file(str(files["scenes"][0]))
    with pytest.raises(AppError, match=r"notes\.png: not an image file"):
        client.predict(handle_file(str(files["not_image"])), 2, True, 0.5, api_name="/caption")
    with pytest.raises(AppError, match=r"huge\.png: the image is 20000x20000 pixels \(400\.0 MP\); this server "
                                       r"accepts up to 64\.0 MP"):
        client.predict(handle_file(str(files["huge"])), 2, True, 0.5, api_name="/caption")
    with pytest.raises(AppError, match="beam size must be between 1 and 10, got 11"):
        client.predict(scene, 11, True, 0.5, api_name="/caption")
    with pytest.raises(AppError, match="overlay opacity must be between 0 and 1"):
        client.predict(scene, 2, True, 1.5, api_name="/caption")
    # Over the upload limit: gradio refuses the upload itself (HTTP 413), the model never sees it.
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(files["heavy"])), 2, True, 0.5, api_name="/caption")
    assert client.predict(scene, 2, True, 0.5, api_name="/caption")[0]


def test_fifty_concurrent_requests_all_complete(server, pipe, files):
    from gradio_client import Client, handle_file

    scenes = files["scenes"]
    expected = [_expected(pipe, scene, 2, True) for scene in scenes]
    client = Client(server, verbose=False, download_files=False)

    def one(i):
        caption, _, areas, _, _ = client.predict(handle_file(str(scenes[i % 3])), 2, True, 0.5, api_name="/caption")
        return i, caption, areas["data"]

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50), timeout=120))
    elapsed = time.monotonic() - start
    assert len(results) == 50 and elapsed < 120
    for i, caption, areas in results:
        # Each answer is its own image's: no request got another's result.
        assert caption and caption == expected[i % 3]["caption"]
        assert areas == expected[i % 3]["areas"]


# --------------------------------------------------------------------------------------------------------------------
# the /caption event, called directly (no server)


def _caption_event(demo):
    from pipelines.web_app import API_NAME

    return next(f.fn for f in demo.fns.values() if f.api_name == API_NAME)


def test_api_arguments_are_read_strictly_and_messages_keep_their_quotes(pipe, files):
    """The event does not preprocess its inputs, so API clients' values are checked here: "false" is off (not a
    truthy string), a fractional beam size is refused (not truncated), and a message quoting a value reads as
    plain text to the client (gr.Error renders HTML, so only tag and entity characters are escaped)."""
    import gradio as gr

    from pipelines.web_app import build_app

    caption = _caption_event(build_app(pipe))
    scene = {"path": str(files["scenes"][0]), "orig_name": "scene.png"}
    off, on = (caption(scene, 2, flag, 0.5)[0] for flag in (False, True))
    assert caption(scene, 2, "false", 0.5)[0] == off and caption(scene, 2, "True", 0.5)[0] == on
    assert caption(scene, 2.0, 0, 0.5)[0] == off  # a whole float and 0/1 are fine
    assert off == pipe(files["scenes"][0], num_beams=2, segment_aware=False)["caption"]
    for args, message in [((scene, 2.5, True, 0.5), "beam size must be a whole number, got 2.5"),
                          ((scene, 2, "maybe", 0.5), "segment-aware must be true or false, got 'maybe'"),
                          ((scene, True, True, 0.5), "beam size must be a number, got True")]:
        with pytest.raises(gr.Error) as err:
            caption(*args)
        assert err.value.message == message
    with pytest.raises(gr.Error) as err:
        caption({"path": str(files["not_image"]), "orig_name": "a&b's <notes>.png"}, 2, True, 0.5)
    assert err.value.message.startswith("a&amp;b's &lt;notes&gt;.png: not an image file")


def test_the_servers_pixel_limit_is_the_pipelines_and_refusals_name_the_upload(model_dir, files):
    import gradio as gr
    from transformers import pipeline

    from pipelines.image_inputs import ImageTooLargeError, describe_input
    from pipelines.web_app import build_app

    # A pipeline whose own limit (1000 pixels) is below the 128 x 128 scene: the server's limit must decide.
    strict = pipeline("image-captioning-seg", model=str(model_dir), device="cpu", max_image_pixels=1000)
    upload = {"path": str(files["scenes"][0]), "orig_name": "my photo.png"}
    assert _caption_event(build_app(strict, max_image_pixels=200 * 200))(upload, 1, False, 0.5)[0]
    assert _caption_event(build_app(strict, max_image_pixels=None))(upload, 1, False, 0.5)[0]
    with pytest.raises(gr.Error) as err:
        _caption_event(build_app(strict, max_image_pixels=100 * 100))(upload, 1, False, 0.5)
    assert err.value.message.startswith("my photo.png: the image is 128x128 pixels")

    class Refusing:
        """A pipeline that refuses the image itself, naming it as pipelines do: by its file name or its type."""
        model = strict.model

        def __init__(self, error):
            self.error = error

        def __call__(self, image, **kwargs):
            raise self.error(image)

    too_large = lambda image: ImageTooLargeError(describe_input(image), image.size, 1000)  # noqa: E731
    corrupt = lambda image: ValueError(f"{describe_input(image)}: corrupt or truncated image data")  # noqa: E731
    for error, expected in [(too_large, "my photo.png: the image is 128x128 pixels (0.0 MP); this server accepts "
                                        "up to 0.0 MP. Please upload a smaller image."),
                            (corrupt, "my photo.png: corrupt or truncated image data")]:
        with pytest.raises(gr.Error) as err:
            _caption_event(build_app(Refusing(error)))(upload, 1, False, 0.5)
        assert err.value.message == expected  # not the cache path, no max_image_pixels= advice


def _cache_copy(tmp_path: Path, data: bytes) -> Path:
    """``data`` where gradio keeps an upload: a hashed folder and a name that is not the user's."""
    path = tmp_path / "gradio" / "3f9c0d1e7a" / "image.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def test_a_truncated_or_corrupt_upload_is_a_message_naming_the_users_file(pipe, files, tmp_path):
    import gradio as gr

    from pipelines.web_app import build_app

    caption = _caption_event(build_app(pipe))
    whole = files["scenes"][0].read_bytes()
    corrupt = bytearray(whole)
    start = whole.index(b"IDAT") + 20
    corrupt[start:start + 40] = b"\xff" * 40  # the header reads, the pixel data does not decode
    for name, data in [("cut.png", whole[: len(whole) // 2]), ("garbled.png", bytes(corrupt))]:
        path = _cache_copy(tmp_path / name, data)
        with pytest.raises(gr.Error) as err:
            caption({"path": str(path), "orig_name": name}, 1, True, 0.5)
        message = err.value.message
        assert message.startswith(f"{name}: corrupt or truncated image data"), message
        assert str(path.parent) not in message and "3f9c0d1e7a" not in message and "image.png" not in message
    # The app still answers the next upload.
    assert caption({"path": str(files["scenes"][1]), "orig_name": "scene.png"}, 1, True, 0.5)[0]


@pytest.mark.parametrize("mode, size", [("RGB", (1, 1)), ("RGBA", (40, 30)), ("L", (40, 30)), ("LA", (40, 30)),
                                        ("I;16", (40, 30)), ("RGB;16", (40, 30)), ("P", (40, 30)), ("CMYK", (40, 30))])
def test_one_pixel_rgba_grayscale_palette_cmyk_and_16_bit_uploads_get_a_caption_and_an_overlay(pipe, tmp_path, mode,
                                                                                               size):
    from pipelines.web_app import build_app

    path = write_photo(tmp_path / ("upload.jpg" if mode == "CMYK" else "upload.png"), *size, mode=mode)
    with Image.open(path) as written:
        assert (written.mode, written.size) == (OPENED_MODE.get(mode, mode), size)
    caption, overlay, areas, regions, notes, state = _caption_event(build_app(pipe))(
        {"path": str(path), "orig_name": "photo.png"}, 1, True, 0.5)
    assert isinstance(caption, str) and caption
    assert isinstance(overlay, Image.Image) and overlay.mode == "RGB"
    assert overlay.width >= 2 * size[0] and overlay.height > size[1]
    assert areas and sum(row[1] for row in areas) == pytest.approx(100, abs=0.05)
    assert state["image"].mode == "RGB" and state["image"].size == size
    assert state["class_map"].shape == (size[1], size[0])
    assert isinstance(notes, str) and all(len(row) == 2 for row in regions)


# --------------------------------------------------------------------------------------------------------------------
# scripts/serve.py


def test_examples_folder_gives_its_usable_images_as_pngs(tmp_path, files):
    from pipelines.web_app import copy_example_images

    source = tmp_path / "mine"
    source.mkdir()
    Image.open(files["scenes"][0]).convert("L").save(source / "b_gray.jpg")
    (source / "a_notes.png").write_bytes(files["not_image"].read_bytes())
    (source / "readme.txt").write_text("not looked at")
    copied = copy_example_images(source, tmp_path / "served")
    assert [p.name for p in copied] == ["0_b_gray.png"]
    with Image.open(copied[0]) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (128, 128)
    (source / "b_gray.jpg").unlink()
    with pytest.raises(ValueError, match="no usable image files"):
        copy_example_images(source, tmp_path / "none")
    with pytest.raises(ValueError, match="does not exist"):
        copy_example_images(tmp_path / "missing", tmp_path / "none")


def test_large_photos_are_shown_scaled_down_with_their_class_map_subsampled():
    from pipelines.web_app import DISPLAY_MAX_SIDE, display_copy

    class_map = np.zeros((1500, 3000), dtype=np.int64)
    class_map[:, 2000:] = 7
    shown, shown_map = display_copy(Image.new("RGB", (3000, 1500)), class_map)
    assert shown.size == (DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE // 2) and shown_map.shape == (DISPLAY_MAX_SIDE // 2,
                                                                                            DISPLAY_MAX_SIDE)
    assert shown_map.dtype == np.uint8 and set(np.unique(shown_map)) == {0, 7}  # ids only, no blended values
    assert (shown_map == 7).mean() == pytest.approx(1 / 3, abs=0.01)
    small, small_map = display_copy(Image.new("RGB", (30, 20)), np.ones((20, 30), dtype=np.int64))
    assert small.size == (30, 20) and np.array_equal(small_map, np.ones((20, 30)))


def test_serve_cli_refuses_a_bad_command_line(tmp_path, capsys):
    from scripts.serve import main

    assert main(["--model", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --model {tmp_path / 'missing'}: no such folder"
    assert main(["--model", str(tmp_path), "--max-upload-mb", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: argument --max-upload-mb: must be positive")
    assert main(["--model", str(tmp_path), "--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: argument --device: 'gpu' is not a device")


def test_serve_cli_serves_on_loopback_and_prints_its_url(model_dir, tmp_path):
    import httpx

    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "serve.py"), "--model", str(model_dir),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=tmp_path)
    try:
        deadline, lines, url = time.monotonic() + 90, [], None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            match = re.search(r"on (http://\S+) ", line)
            url = match.group(1) if match else None
        assert url == f"http://127.0.0.1:{port}/", "".join(lines)
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "gradio" in page.text.lower()
        proc.send_signal(signal.SIGINT)  # Ctrl+C: the server closes and the script ends normally
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
