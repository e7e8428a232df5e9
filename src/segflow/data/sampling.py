"""Where random patches are centred: on a pixel of a chosen kind (foreground or background for BiaPy's probability
map, a class for NIST's balancing), drawn from pixel counts per block of the mask.

A mask ``(*spatial)`` is counted once, one slab of its first axis at a time, into a low-resolution array of counts
per block and kind; a draw picks a block in proportion to its count, reads that block alone and picks one of its
pixels of the kind uniformly. Every pixel of the kind is drawn with the same probability, as from a list of all of
them, but neither the list nor the whole mask is ever held, so masks read lazily (larger than RAM) work the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from segflow.io.lazy import slabs

BLOCK = 32  # block edge along every axis: counts take 1/32**ndim of the mask's size per kind


def _block_sums(flags: np.ndarray, block: int) -> np.ndarray:
    """Sums of ``flags`` ``(*spatial)`` over blocks of ``block`` pixels along every axis (edge blocks smaller)."""
    pad = [(0, -n % block) for n in flags.shape]
    padded = np.pad(flags, pad) if any(after for _, after in pad) else flags
    shape = [d for n in padded.shape for d in (n // block, block)]
    return padded.reshape(shape).sum(axis=tuple(range(1, len(shape), 2)), dtype=np.int64)


class BlockCounts:
    """Pixels of each kind per block of one mask; ``kinds(values)`` maps a slab of mask values to an int array of
    kind ids (``0..K-1``, or -1 for pixels of no kind) and ``n_kinds`` is K, or None to take the kinds from the
    values present (``kinds`` then returns the values themselves, and ``kind_ids`` lists them)."""

    def __init__(self, mask: Any, kinds: Callable[[np.ndarray], np.ndarray], n_kinds: int | None, block: int = BLOCK) -> None:
        self.mask, self.kinds, self.block = mask, kinds, block
        per_kind: dict[int, list[np.ndarray]] = {}
        rows = slabs(mask, limit=max(2**22, block * int(np.prod(mask.shape[1:]))))
        step = rows.step - rows.step % block or block  # whole blocks per slab
        for r in range(0, mask.shape[0], step):
            ids = kinds(np.asarray(mask[r : r + step]))
            present = range(n_kinds) if n_kinds is not None else np.unique(ids[ids >= 0]).tolist()
            for k in present:
                per_kind.setdefault(int(k), []).append((r // block, _block_sums(ids == k, block)))
        grid = [-(-n // block) for n in mask.shape]
        self.kind_ids = sorted(per_kind) if n_kinds is None else list(range(n_kinds))
        self.counts = np.zeros((len(self.kind_ids), *grid), dtype=np.int64)
        for j, k in enumerate(self.kind_ids):
            for first, sums in per_kind.get(k, []):
                self.counts[j, first : first + sums.shape[0]] = sums
        self._cumulative = self.counts.reshape(len(self.kind_ids), -1).cumsum(axis=1)

    def total(self, kind: int) -> int:
        """Pixels of ``kind`` in the mask."""
        return int(self._cumulative[self.kind_ids.index(kind), -1]) if kind in self.kind_ids else 0

    def draw(self, kind: int, rng: np.random.RandomState) -> tuple[int, ...]:
        """One pixel of ``kind`` (which must be present), each with the same probability: ``(*spatial)`` coordinates."""
        cumulative = self._cumulative[self.kind_ids.index(kind)]
        pick = int(rng.randint(0, int(cumulative[-1])))
        flat = int(np.searchsorted(cumulative, pick, side="right"))
        corner = [b * self.block for b in np.unravel_index(flat, self.counts.shape[1:])]
        region = tuple(slice(c, c + self.block) for c in corner)
        pixels = np.flatnonzero(self.kinds(np.asarray(self.mask[region])) == kind)
        # The pick's rank within its block: the same pixel a list of every pixel of the kind would give.
        within = pick - (int(cumulative[flat - 1]) if flat else 0)
        offset = np.unravel_index(int(pixels[within]), tuple(min(self.block, n - c) for c, n in zip(corner, self.mask.shape)))
        return tuple(int(c + o) for c, o in zip(corner, offset))
