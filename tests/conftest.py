"""Test-wide settings: never reach a hub, keep Arrow caches per test, find ../shared/data."""

import os
from pathlib import Path

# Set before any Hugging Face library is imported: nothing at test time may try the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHARED_DATA_DIR", REPO.parent / "shared" / "data"))
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; skips when absent on a developer box, fails under CI=true where it must exist."""
    if not SHARED_DATA.is_dir():
        if IN_CI:
            pytest.fail(f"CI=true but the shared data folder {SHARED_DATA} is missing")
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (set SHARED_DATA_DIR to run these tests)")
    return SHARED_DATA


@pytest.fixture
def cache_dir(tmp_path) -> str:
    """A fresh Arrow cache for each test, so tests never see each other's cached datasets."""
    d = tmp_path / "hf_cache"
    d.mkdir()
    return str(d)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps one state per process (device, mixed precision) and refuses a different one later; tests
    that run ``scripts/train.py``'s ``main`` in-process with other settings (``--cpu``, ``--bf16``, a GPU when one
    is there) each get a fresh one."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
