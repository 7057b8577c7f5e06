"""Small image and mask files for tests, written with PIL in any mode a user might hand us."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo_array(w: int = 32, h: int = 24, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 noise with a little structure, so JPEG round-trips stay close."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(1, 1, 3))
    ramp = np.linspace(0, 60, w)[None, :, None]
    return np.clip(base + ramp + rng.integers(0, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)


def write_photo(path: Path, w: int = 32, h: int = 24, mode: str = "RGB", seed: int = 0, fmt: str | None = None) -> Path:
    """Write a photo in ``mode``: RGB, RGBA, L, CMYK (JPEG), P, I;16 (16-bit grayscale PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(photo_array(w, h, seed))
    if mode == "I;16":
        img = Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257))
    elif mode == "RGBA":
        img = rgb.convert("RGBA")
        img.putalpha(128)
    else:
        img = rgb.convert(mode)
    img.save(path, format=fmt)
    return path


def write_mask(path: Path, mask: np.ndarray, palette: bool = False) -> Path:
    """Write an (H, W) class-id array: uint8 -> 8-bit PNG (or palette PNG), uint16 -> 16-bit PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.asarray(mask)
    if palette:
        img = Image.new("P", (mask.shape[1], mask.shape[0]))
        img.putdata(mask.astype(np.uint8).ravel().tolist())
        # Random palette colours, so that colour != index: a reader that used colours would get them wrong.
        img.putpalette(np.random.default_rng(1).integers(0, 256, size=768).astype(np.uint8).tolist())
    else:
        img = Image.fromarray(mask)
    img.save(path)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels; nothing in it gets decoded (PIL reads only the size)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10))
                     + chunk(b"IEND", b""))
    return path
