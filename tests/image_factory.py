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


# The mode PIL opens each written mode as: it reads a 16-bit RGB PNG as 8-bit RGB (the high bytes).
OPENED_MODE = {"RGB;16": "RGB"}


def write_photo(path: Path, w: int = 32, h: int = 24, mode: str = "RGB", seed: int = 0, fmt: str | None = None) -> Path:
    """Write a photo in ``mode``: RGB, RGBA, L, LA, CMYK (JPEG), P, I;16 (16-bit grayscale PNG), RGB;16 (16-bit
    per channel RGB PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(photo_array(w, h, seed))
    if mode == "RGB;16":
        return _write_rgb16_png(path, np.asarray(rgb).astype(">u2") * 257)
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


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, bit_depth: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 2, 0, 0, 0)  # colour type 2: RGB
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _write_rgb16_png(path: Path, pixels: np.ndarray) -> Path:
    """(h, w, 3) big-endian uint16 as a 48-bit PNG, written by hand: PIL cannot write 16-bit RGB."""
    rows = b"".join(b"\0" + row.tobytes() for row in pixels)  # filter type 0 before each row
    path.write_bytes(_png(pixels.shape[1], pixels.shape[0], 16, zlib.compress(rows)))
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels; nothing in it gets decoded (PIL reads only the size)."""
    path.write_bytes(_png(width, height, 8, zlib.compress(b"\0" * 10)))
    return path
