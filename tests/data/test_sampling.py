"""Patch centres drawn from pixel counts per block: every pixel of a kind exactly once per pick, any mask size."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.data.patches import class_ids, foreground_or_background
from segflow.data.sampling import BlockCounts


class Picks:
    """Stands in for the generator: returns 0, 1, 2, ... so every possible pick is made once."""

    def __init__(self) -> None:
        self.next = 0

    def randint(self, low: int, high: int) -> int:
        pick, self.next = self.next, self.next + 1
        assert low <= pick < high
        return pick


class Rows:
    """A mask that counts which rows are read, as a lazy (larger than RAM) mask would be."""

    def __init__(self, mask: np.ndarray) -> None:
        self.array, self.shape, self.read = mask, mask.shape, 0

    def __getitem__(self, key):
        part = self.array[key]
        self.read = max(self.read, part.size)
        return part


@pytest.mark.parametrize("shape", [(70, 45), (9, 40, 33)])
def test_every_pixel_of_a_kind_is_one_pick(shape) -> None:
    mask = (np.random.default_rng(0).random(shape) < 0.2).astype(np.uint8) * 3
    counts = BlockCounts(mask, foreground_or_background, 2, block=8)
    for kind, expected in ((0, mask > 0), (1, mask == 0)):
        assert counts.total(kind) == int(expected.sum())
        rng = Picks()
        drawn = [counts.draw(kind, rng) for _ in range(counts.total(kind))]
        assert sorted(drawn) == sorted(map(tuple, np.argwhere(expected).tolist()))  # each pixel exactly once


def test_classes_present_are_the_kinds_and_a_large_mask_is_never_read_whole() -> None:
    mask = np.zeros((256, 96), np.uint8)
    mask[10:20, 5:7], mask[200:, 90:], mask[0, 0] = 2, 5, 255
    lazy = Rows(mask)
    counts = BlockCounts(lazy, lambda v: class_ids(v, ignore_id=255), None, block=16)
    assert counts.kind_ids == [0, 2, 5] and [counts.total(k) for k in (0, 2, 5)] == [256 * 96 - 20 - 56 * 6 - 1, 20, 336]
    assert counts.counts.shape == (3, 16, 6) and lazy.read <= 96 * 256  # counted in slabs (here one: it is small)
    lazy.read = 0
    rng = np.random.RandomState(1)
    centres = [counts.draw(2, rng) for _ in range(50)]
    assert all(mask[c] == 2 for c in centres) and lazy.read == 16 * 16  # a draw reads one block
