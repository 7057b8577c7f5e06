"""scripts/predict.py and its figure (models/prediction_overlay.py): predictions.jsonl and overlays for the good
images of a folder, bad files named on stderr and skipped, exit statuses, and one ``error:`` line for a bad
command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import models.prediction_overlay as prediction_overlay_module
from datasets_cfg.shapes import CLASS_NAMES, generate_scene
from models.prediction_overlay import MIN_FIGURE_WIDTH, class_areas, prediction_overlay, wrap_text
from models.segmentation_report import _font, _text_width, class_palette
from scripts.predict import main
from tests.image_factory import OPENED_MODE, photo_array, png_header_only, write_photo

REPO = Path(__file__).resolve().parents[1]
GOOD = ["scene_0.png", "scene_1.png", "scene_2.png"]
BAD = ["notes.png", "broken.png"]  # text renamed .png; a PNG cut in half


# --------------------------------------------------------------------------------------------------------------------
# class_areas / prediction_overlay


def _class_map() -> np.ndarray:
    """10 x 10: 60 background pixels, 30 of class 2 (square), 10 of class 1 (circle); no other class."""
    class_map = np.zeros((10, 10), dtype=np.int64)
    class_map[:3] = 2
    class_map[9] = 1
    return class_map


def test_class_areas_are_shares_of_the_classes_present_largest_first():
    areas = class_areas(_class_map(), CLASS_NAMES)
    assert [(r["label"], r["class_id"]) for r in areas] == [("background", 0), ("square", 2), ("circle", 1)]
    assert [r["area"] for r in areas] == pytest.approx([0.6, 0.3, 0.1])
    # An id2label dict as configs store it (string keys) names the same classes; unnamed ids get a name too.
    class_map = _class_map()
    class_map[5, 5] = 9
    areas = class_areas(class_map, {str(i): name for i, name in enumerate(CLASS_NAMES)})
    assert {r["label"]: r["area"] for r in areas}["class 9"] == pytest.approx(0.01)
    assert sum(r["area"] for r in areas) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        class_areas(np.zeros((2, 3, 3), dtype=np.int64), CLASS_NAMES)


def _find_panels(figure: Image.Image, photo: np.ndarray) -> tuple[int, int]:
    """(y, x) where the overlay panel starts: the photo panel is found at the left edge, the overlay panel is the
    next place on the same rows holding exactly the photo (call with alpha=0)."""
    pixels = np.asarray(figure)
    h, w = photo.shape[:2]
    rows = [y for y in range(pixels.shape[0] - h + 1) if np.array_equal(pixels[y:y + h, :w], photo)]
    assert rows, "the photo panel is not in the figure"
    y = rows[0]
    columns = [x for x in range(w, pixels.shape[1] - w + 1) if np.array_equal(pixels[y:y + h, x:x + w], photo)]
    assert columns, "with alpha=0 the overlay panel should be the photo unchanged"
    return y, columns[0]


def test_alpha_zero_leaves_the_photo_and_alpha_one_paints_the_class_colours():
    photo = photo_array(40, 10, seed=3)
    class_map = _class_map().repeat(4, axis=1)  # 10 x 40
    y, x = _find_panels(prediction_overlay(photo, class_map, CLASS_NAMES, alpha=0.0), photo)
    painted = np.asarray(prediction_overlay(photo, class_map, CLASS_NAMES, alpha=1.0))[y:y + 10, x:x + 40]
    palette = class_palette(len(CLASS_NAMES))
    assert (painted[class_map == 2] == palette[2]).all() and (painted[class_map == 1] == palette[1]).all()
    assert np.array_equal(painted[class_map == 0], photo[class_map == 0])  # background stays untinted
    half = np.asarray(prediction_overlay(photo, class_map, CLASS_NAMES, alpha=0.5))[y:y + 10, x:x + 40]
    expected = (0.5 * photo[class_map == 2] + 0.5 * palette[2].astype(np.float32)).astype(np.uint8)
    assert np.abs(half[class_map == 2].astype(int) - expected).max() <= 1


def test_legend_shows_the_present_classes_with_their_pixel_share(monkeypatch):
    photo = photo_array(40, 10, seed=1)
    class_map = _class_map().repeat(4, axis=1)
    figure = np.asarray(prediction_overlay(photo, class_map, CLASS_NAMES, alpha=0.0))
    y, _ = _find_panels(Image.fromarray(figure), photo)
    below = figure[y + 10:].reshape(-1, 3)  # legend (and no caption: none given)
    palette = class_palette(len(CLASS_NAMES))

    def has_colour(c):
        return bool((below == palette[c]).all(axis=1).any())

    assert has_colour(1) and has_colour(2)  # the swatches of circle and square
    assert not any(has_colour(c) for c in (3, 4, 5, 6))  # absent classes get no swatch
    # The names handed to the legend carry the shares; background keeps its name (so it stays untinted).
    seen = {}
    real = prediction_overlay_module.overlay_figure

    def spy(image, prediction, class_names, *args, **kwargs):
        seen["names"] = list(class_names)
        return real(image, prediction, class_names, *args, **kwargs)

    monkeypatch.setattr(prediction_overlay_module, "overlay_figure", spy)
    prediction_overlay(photo, class_map, CLASS_NAMES)
    assert seen["names"][:3] == ["background", "circle 10%", "square 30%"]
    assert seen["names"][3:] == list(CLASS_NAMES[3:])


def test_caption_is_wrapped_under_the_figure_and_grows_it():
    scene = generate_scene(0, image_size=64)
    sizes = [prediction_overlay(scene.image, scene.mask, CLASS_NAMES, caption=text).size
             for text in (None, "a red circle", " ".join(scene.captions), " ".join(scene.captions * 3))]
    assert len({w for w, _ in sizes}) == 1 and sizes[0][0] >= MIN_FIGURE_WIDTH
    heights = [h for _, h in sizes]
    assert heights == sorted(heights) and len(set(heights)) == 4
    # Region captions add lines too, and an unbreakable word is cut rather than run off the figure.
    with_regions = prediction_overlay(scene.image, scene.mask, CLASS_NAMES, caption="a red circle",
                                      region_captions=[{"label": "circle", "caption": "a red circle"}])
    assert with_regions.height > heights[1]
    long_word = prediction_overlay(scene.image, scene.mask, CLASS_NAMES, caption="x" * 400)
    assert long_word.width == sizes[0][0] and long_word.height > heights[1]


def test_wrap_text_keeps_every_word_within_the_width():
    font = _font(13)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text = "a small red square to the left of a large blue circle " * 4 + "y" * 90
    lines = wrap_text(text, font, 150, draw)
    assert len(lines) > 3 and all(_text_width(draw, line, font) <= 150 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")


def test_bad_overlay_arguments_are_clear_errors():
    photo = photo_array(40, 10)
    with pytest.raises(ValueError, match="alpha"):
        prediction_overlay(photo, _class_map().repeat(4, axis=1), CLASS_NAMES, alpha=1.5)
    with pytest.raises(ValueError, match="size"):
        prediction_overlay(photo, _class_map(), CLASS_NAMES)


# --------------------------------------------------------------------------------------------------------------------
# scripts/predict.py


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from tests.caption_seg_factory import save_tiny_caption_seg_model

    return save_tiny_caption_seg_model(tmp_path_factory.mktemp("caption_seg"))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """3 shapes images, a text file renamed .png and a truncated PNG."""
    folder = tmp_path_factory.mktemp("images")
    for index, name in enumerate(GOOD):
        Image.fromarray(generate_scene(index, image_size=64).image).save(folder / name)
    (folder / "notes.png").write_text("shopping list: milk, eggs\n")
    whole = (folder / GOOD[0]).read_bytes()
    (folder / "broken.png").write_bytes(whole[: len(whole) // 2])
    return folder


def _check_outputs(out: Path, image_folder: Path, id2label_values: set, region_captions: bool) -> list[dict]:
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(Path(r["image"]).name for r in records) == GOOD
    for record in records:
        assert Path(record["image"]).parent == image_folder
        assert isinstance(record["caption"], str)
        assert record["classes"] and {c["label"] for c in record["classes"]} <= id2label_values
        areas = [c["area"] for c in record["classes"]]
        assert areas == sorted(areas, reverse=True) and sum(areas) == pytest.approx(1.0)
        assert set(record["consistency"]) == {"named_but_absent", "present_but_unnamed"}
        if region_captions:
            assert all(set(r) >= {"label", "caption"} for r in record["region_captions"])
        else:
            assert record["region_captions"] == []
        with Image.open(record["overlay"]) as overlay:
            assert overlay.format == "PNG" and overlay.mode == "RGB"
            assert overlay.width >= 2 * 64 and overlay.height > 64
    assert sorted(p.name for p in (out / "overlays").iterdir()) == GOOD
    return records


def _id2label(model_folder: Path) -> set:
    return set(json.loads((model_folder / "config.json").read_text())["id2label"].values())


def test_predict_in_process(model_folder, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    status = main([str(image_folder), "--model", str(model_folder), "--out", str(out), "--batch-size", "2",
                   "--num-beams", "2", "--alpha", "0.4", "--device", "cpu"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    records = _check_outputs(out, image_folder, _id2label(model_folder), region_captions=True)
    assert any(r["region_captions"] for r in records)  # every image shows some class, so regions get captions
    for bad in BAD:
        assert any(bad in line and "warning" in line for line in captured.err.splitlines()), captured.err
    assert "not an image" in captured.err and "truncated" in captured.err
    assert "3 of 5 images predicted, 2 skipped" in captured.out


def test_predict_as_a_subprocess(model_folder, image_folder, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "predict.py"), str(image_folder), "--model", str(model_folder),
         "--out", str(out), "--no-region-captions", "--no-segment-aware", "--device", "cpu"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    _check_outputs(out, image_folder, _id2label(model_folder), region_captions=False)
    assert "notes.png" in done.stderr and "broken.png" in done.stderr
    assert "Traceback" not in done.stderr
    assert "3 of 5 images predicted" in done.stdout


def test_all_bad_exits_1_and_shared_stems_get_distinct_overlays(model_folder, image_folder, tmp_path, capsys):
    huge = png_header_only(tmp_path / "huge.png", 20000, 20000)
    status = main([str(image_folder / "notes.png"), str(huge), "--model", str(model_folder),
                   "--out", str(tmp_path / "bad")])
    captured = capsys.readouterr()
    assert status == 1
    assert "huge.png" in captured.err and "over the limit" in captured.err and "notes.png" in captured.err
    assert (tmp_path / "bad" / "predictions.jsonl").read_text() == ""

    other = tmp_path / "other"
    other.mkdir()
    (other / GOOD[0]).write_bytes((image_folder / GOOD[0]).read_bytes())
    out = tmp_path / "out"
    assert main([str(image_folder / GOOD[0]), str(other / GOOD[0]), "--model", str(model_folder),
                 "--out", str(out), "--no-region-captions"]) == 0
    stem = Path(GOOD[0]).stem
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [f"{stem}-2.png", f"{stem}.png"]
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [Path(r["overlay"]).name for r in records] == [f"{stem}.png", f"{stem}-2.png"]


def test_an_image_over_the_limit_is_skipped_with_the_flag_that_raises_it(model_folder, image_folder, tmp_path,
                                                                         capsys):
    scene = image_folder / GOOD[0]
    assert main([str(scene), "--model", str(model_folder), "--out", str(tmp_path / "out"),
                 "--max-image-pixels", "100"]) == 1
    err = capsys.readouterr().err
    # On the command line the limit is a flag, not the pipeline's max_image_pixels= parameter.
    assert f"{scene}: image is" in err and "over the limit" in err and "pass a larger --max-image-pixels" in err
    assert "max_image_pixels=" not in err


def test_one_pixel_rgba_grayscale_palette_cmyk_and_16_bit_images_are_predicted_with_the_others(model_folder, tmp_path,
                                                                                               capsys):
    """load_image turns every one of these into 8-bit RGB: each gets its record and its overlay, none is skipped,
    and in one batch with a normal image (different sizes padded together)."""
    folder = tmp_path / "modes"
    folder.mkdir()
    Image.fromarray(generate_scene(0, image_size=64).image).save(folder / "scene.png")
    written_modes = {"tiny.png": "RGB", "rgba.png": "RGBA", "gray.png": "L", "gray_alpha.png": "LA",
                     "deep.png": "I;16", "deep_rgb.png": "RGB;16", "palette.png": "P", "print.jpg": "CMYK"}
    sizes = {"scene.png": (64, 64), "tiny.png": (1, 1),
             **{name: (40, 30) for name in written_modes if name != "tiny.png"}}
    for name, mode in written_modes.items():
        write_photo(folder / name, *sizes[name], mode=mode)
        with Image.open(folder / name) as written:
            assert (written.mode, written.size) == (OPENED_MODE.get(mode, mode), sizes[name])
    out = tmp_path / "out"
    status = main([str(folder), "--model", str(model_folder), "--out", str(out), "--batch-size", "9",
                   "--no-region-captions", "--device", "cpu"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "9 of 9 images predicted, 0 skipped" in captured.out
    assert "skipped" not in captured.err and "Traceback" not in captured.err
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(Path(r["image"]).name for r in records) == sorted(sizes)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(f"{Path(name).stem}.png" for name in sizes)
    for record in records:
        width, height = sizes[Path(record["image"]).name]
        assert isinstance(record["caption"], str)
        assert sum(c["area"] for c in record["classes"]) == pytest.approx(1.0)
        assert {c["label"] for c in record["classes"]} <= _id2label(model_folder)
        with Image.open(record["overlay"]) as overlay:
            assert overlay.format == "PNG" and overlay.mode == "RGB"
            assert overlay.width >= 2 * width and overlay.height > height
    tiny = next(r for r in records if r["image"].endswith("tiny.png"))
    assert [c["area"] for c in tiny["classes"]] == [1.0]  # one pixel: one class, all of the image


def test_folder_files_without_an_image_extension_are_named_and_counted_not_silently_dropped(model_folder, tmp_path,
                                                                                          capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(generate_scene(0, image_size=64).image).save(folder / "scene.gif")  # GIF is an image extension
    (folder / "notes.txt").write_text("not a picture")
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a broken link is not an image either
    out = tmp_path / "out"
    assert main([str(folder), "--model", str(model_folder), "--out", str(out), "--no-region-captions",
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "1 of 1 images predicted, 0 skipped (bad files), 2 other files ignored (no image extension)" in captured.out
    warning = [line for line in captured.err.splitlines() if line.startswith("warning: ignored 2 file(s)")]
    assert len(warning) == 1 and "notes.txt" in warning[0] and "gone.png" in warning[0]
    assert [json.loads(line)["image"] for line in (out / "predictions.jsonl").read_text().splitlines()] == [
        str(folder / "scene.gif")]


def test_usage_errors_are_one_line_with_status_2(model_folder, image_folder, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    model, out = ["--model", str(model_folder)], ["--out", str(tmp_path / "out")]
    cases = [
        ([*model, *out], "no inputs"),
        ([str(image_folder), "--model", str(tmp_path / "missing"), *out], "no such model folder"),
        ([str(empty), *model, *out], "no image files"),
        ([str(tmp_path / "nowhere.png"), *model, *out], "no such file or folder"),
        ([str(image_folder), *model, *out, "--alpha", "2"], "--alpha"),
        ([str(image_folder), *model, *out, "--batch-size", "0"], "--batch-size"),
        ([str(image_folder), *model, *out, "--frobnicate"], "unrecognized arguments"),
        ([str(image_folder), *model], "--out"),
        ([str(image_folder), "--model", str(empty), *out], "cannot load it"),
        ([str(image_folder), *model, *out, "--device", "gpu"], "argument --device: 'gpu' is not a device"),
    ]
    if not torch.cuda.is_available():
        cases.append(([str(image_folder), *model, *out, "--device", "cuda"],
                      "--device: cuda: this machine has no CUDA"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)
    assert not (tmp_path / "out").exists()
