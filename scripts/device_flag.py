"""``--device`` for the scripts that run a model: checked before any model loads, so that a device this machine
lacks is said to be the device's fault, not reported as a model folder that cannot load."""

from __future__ import annotations

import argparse


def device_flag(text: str) -> str:
    """An argparse ``type``: ``cpu``, ``cuda``, ``cuda:N``, ... as torch reads it, and present on this machine."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda, cuda:1, ...") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: this machine has no CUDA GPU that torch can use; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return text


__all__ = ["device_flag"]
