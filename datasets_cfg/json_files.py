"""Reading JSON annotation files with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import DatasetError


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file, turning a missing or malformed file into a ``DatasetError`` that names it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} not found (check --root and the dataset YAML)", path)
    try:
        with path.open("r", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{what} is not valid JSON ({err}); re-download or fix the file", path) from None


def list_key(data: Any, key: str, path: Path, what: str) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DatasetError(f"not a {what}: expected a JSON object with a {key!r} list", path)
    return data[key]
