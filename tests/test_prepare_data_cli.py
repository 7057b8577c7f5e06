"""The data command line: a summary on success, one 'error:' line and exit status 2 on bad input."""

import json
import subprocess
import sys

import numpy as np

from tests.conftest import REPO
from tests.image_factory import write_mask, write_photo


def run_cli(*args, tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "--cache-dir", str(tmp_path / "cache"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_summary_of_a_segmentation_folder(tmp_path):
    m = np.zeros((24, 32), np.uint8)
    m[:12] = 1
    write_photo(tmp_path / "d" / "images" / "a.png")
    write_mask(tmp_path / "d" / "masks" / "a.png", m)
    res = run_cli("--dataset", "image_mask_folders", "--root", str(tmp_path / "d"), tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "train: 1 images" in res.stdout
    assert "background 50.0%" in res.stdout and "foreground 50.0%" in res.stdout


def test_bad_input_is_one_error_line_not_a_traceback(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.png").write_text("not a picture")
    (tmp_path / "d" / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "caption": "c"}) + "\n")
    res = run_cli("--dataset", "imagefolder_captions", "--root", str(tmp_path / "d"), tmp_path=tmp_path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "error: " in res.stderr and "x.png: not an image file" in res.stderr


def test_bad_set_flag(tmp_path):
    res = run_cli("--dataset", "camvid", "--set", "nokey", tmp_path=tmp_path)
    assert res.returncode == 2 and "--set expects KEY=VALUE" in res.stderr
