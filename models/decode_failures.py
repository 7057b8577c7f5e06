"""Training goes on past an image that fails to decode mid-run: the row is skipped (its place in the batch goes to
the next row that decodes), counted, and reported in a warning. Validation and encoder-feature caching cannot skip
a row without changing what is scored or cached (another image would take its place, and across processes
Accelerate's gather would cut the wrong rows), so there a failure is one ``DatasetError`` naming the row, which the
training loop reports after saving a checkpoint.

The data layer checks every image when it builds a dataset, so this is for what happens later: a dataset built by
other code, a file changed on disk, a decoder that fails on one image only when it is read again. Neither
``datasets`` nor ``torch.utils.data`` has a skip-and-count option (a ``DataLoader`` stops at the first exception).
The replacement is chosen deterministically (the next index), so an exact ``--resume`` stays exact.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from PIL import Image

from datasets_cfg import DatasetError

logger = logging.getLogger(__name__)

# What PIL and datasets' Image feature raise for bytes that are not a (complete) image.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def decoded(image: Image.Image) -> Image.Image:
    """``image`` with its pixels read now: PIL opens lazily, and a truncated file fails only at ``load``."""
    image.load()
    return image


@contextmanager
def named_decode_failure(row: int, what: str) -> Iterator[None]:
    """Turns a decode error inside the block (reading the row decodes its image) into a ``DatasetError`` naming
    ``what`` (e.g. "validation image") and its row."""
    try:
        yield
    except DECODE_ERRORS as err:
        raise DatasetError(
            f"{what} {row} failed to decode ({type(err).__name__}: {err}); repair or remove that file and rebuild "
            "the dataset"
        ) from None


class DecodeFailures:
    """Reads training items through ``fetch`` and skips those whose image fails to decode.

    ``count`` is the number of distinct items skipped so far in this process (each DataLoader worker keeps its own).
    """

    def __init__(self, what: str = "training image"):
        self.what = what
        self.failed: set[int] = set()

    @property
    def count(self) -> int:
        return len(self.failed)

    def fetch(self, index: int, size: int, read: Callable[[int], Any]) -> Any:
        """``read(index)``, or ``read`` of the next index (wrapping around) whose image decodes."""
        for offset in range(size):
            j = (index + offset) % size
            if j in self.failed:
                continue
            try:
                return read(j)
            except DECODE_ERRORS as err:
                self.failed.add(j)
                logger.warning("%s %d failed to decode (%s: %s); skipped, %d skipped so far, training goes on",
                               self.what, j, type(err).__name__, err, self.count)
        raise DatasetError(f"none of the {size} rows has a {self.what} that decodes")
