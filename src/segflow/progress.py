"""Progress over a list of images: a tqdm bar on a terminal, one plain line per image elsewhere.

Carriage-return bar updates flood SLURM logs, ``| tee`` and CI logs; there each image gets one line
when it is done, e.g. ``test image 3/10 img_003.tif: 1.2 s``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def each_image(items: Sequence[T], what: str, name: Callable[[T], str]) -> Iterator[T]:
    """Yield ``items`` in order, showing progress; ``name(item)`` is the image's file name in the lines."""
    if sys.stdout.isatty():
        yield from tqdm(items, desc=what.capitalize(), unit="img")
        return
    for i, item in enumerate(items, 1):
        start = time.perf_counter()
        yield item  # the caller's loop body runs here: the time printed is that image's
        print(f"{what} {i}/{len(items)} {name(item)}: {time.perf_counter() - start:.1f} s", flush=True)
