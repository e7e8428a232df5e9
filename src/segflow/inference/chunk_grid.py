"""The grid of chunks a volume is predicted in: their indices, regions, the halo around them, and their size."""

from __future__ import annotations

import itertools

from segflow.errors import SegflowError


def cores(spatial: tuple[int, ...], chunk: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Chunk indices of a ``spatial`` grid cut in ``chunk``-sized blocks (the last ones smaller), in C order."""
    return list(itertools.product(*(range(-(-n // c)) for n, c in zip(spatial, chunk))))


def region(index: tuple[int, ...], spatial: tuple[int, ...], chunk: tuple[int, ...]) -> tuple[slice, ...]:
    """The spatial region of the chunk at ``index``."""
    return tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, chunk, spatial))


def grow(core: tuple[slice, ...], halo: tuple[int, ...], spatial: tuple[int, ...]) -> tuple[slice, ...]:
    """``core`` widened by ``halo`` voxels a side (none when ``halo`` is empty), within the volume."""
    if not halo:
        return core
    return tuple(slice(max(0, s.start - h), min(n, s.stop + h)) for s, h, n in zip(core, halo, spatial))


def inside(core: tuple[slice, ...], grown: tuple[slice, ...]) -> tuple[slice, ...]:
    """Where ``core`` lies in an array that covers ``grown``."""
    return tuple(slice(c.start - g.start, c.stop - g.start) for c, g in zip(core, grown))


def default_chunk(patch: tuple[int, ...], spatial: tuple[int, ...], windows: int = 4) -> tuple[int, ...]:
    """``windows`` windows a side (e.g. 256^3 for 64^3 windows: 64 MiB of float32 a class), at most the image."""
    return tuple(min(windows * p, n) for p, n in zip(patch, spatial))


def check_chunk(chunk: tuple[int, ...], patch: tuple[int, ...], spatial: tuple[int, ...], halo: tuple[int, ...] = ()) -> None:
    """A chunk holds at least one window along every axis (or the whole axis): a thinner one would predict every
    window it touches for a sliver of output, again and again; and at least its post-processing's ``halo``."""
    if len(chunk) != len(patch) or any(c <= 0 for c in chunk):
        raise SegflowError(f"--chunk {','.join(map(str, chunk))}: give {len(patch)} positive sizes, one per spatial axis")
    if any(c < min(p, n) for c, p, n in zip(chunk, patch, spatial)):
        raise SegflowError(
            f"--chunk {','.join(map(str, chunk))}: smaller than the model's window {tuple(patch)} along an axis; each chunk "
            f"reads the windows around it, so give chunks of at least the window (e.g. {','.join(str(4 * p) for p in patch)})"
        )
    if halo and any(h > c for h, c, n in zip(halo, chunk, spatial) if c < n):
        raise SegflowError(
            f"--chunk {','.join(map(str, chunk))}: the median filters read {','.join(map(str, halo))} voxels beyond each chunk, "
            "more than a chunk; give bigger chunks or smaller TEST.POST_PROCESSING filter sizes"
        )
