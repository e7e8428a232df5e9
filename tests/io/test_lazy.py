"""Lazy arrays: any stored axis order seen channels last, reading only what is sliced."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from segflow.errors import SegflowError
from segflow.io.lazy import LazyArray, value_range

KEY = "DATA.TRAIN.INPUT_IMG_AXES_ORDER"


class Counted:
    """A stored array that records every read."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.reads = array, []
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key):
        self.reads.append(key)
        return self.array[key]


def _lazy(stored: np.ndarray, axes: str, ndim: int) -> tuple[LazyArray, Counted]:
    counted = Counted(stored)
    return LazyArray(lambda: counted, axes, ndim, "vol.zarr", KEY), counted


@pytest.mark.parametrize(
    ("axes", "ndim", "to_ours"),
    [
        ("ZYXC", 3, lambda a: a),
        ("CZYX", 3, lambda a: np.moveaxis(a, 0, -1)),
        ("TZCYX", 3, lambda a: np.moveaxis(a[0], 1, -1)),
        ("ZYX", 3, lambda a: a[..., None]),
        ("YXC", 2, lambda a: a),
        ("XY", 2, lambda a: a.T[..., None]),
        ("CYX", 2, lambda a: np.moveaxis(a, 0, -1)),
    ],
)
def test_every_axis_order_reads_as_channels_last(axes, ndim, to_ours) -> None:
    sizes = {"T": 1, "Z": 5, "C": 3, "Y": 7, "X": 6}
    stored = np.random.default_rng(0).integers(0, 255, [sizes[a] for a in axes]).astype(np.uint8)
    lazy, counted = _lazy(stored, axes, ndim)
    ours = to_ours(stored)
    assert lazy.shape == ours.shape and lazy.dtype == np.uint8 and lazy.ndim == ndim + 1
    assert counted.reads == []  # shape and dtype read nothing
    keys = [(slice(1, 4),), (2,), (slice(None), slice(2, 5)), (Ellipsis, 0), (1, slice(0, 3), Ellipsis)]
    for key in keys:
        np.testing.assert_array_equal(lazy[key], ours[key], err_msg=f"{axes} {key}")
    np.testing.assert_array_equal(np.asarray(lazy), ours)
    assert value_range(lazy) == (stored.min(), stored.max())


class Opener:
    """Opens a fresh stored array each call (as a source opens a file), counting the calls."""

    opened = 0

    def __call__(self) -> Counted:
        Opener.opened += 1
        return Counted(np.zeros((4, 8, 8), np.uint8))


def test_only_the_slice_is_read_and_workers_open_their_own_handle() -> None:
    Opener.opened = 0
    lazy = LazyArray(Opener(), "ZYX", 3, "vol.h5", KEY)
    lazy[1:3, 2:4]
    assert lazy.stored.reads == [(slice(1, 3), slice(2, 4), slice(None))]
    clone = pickle.loads(pickle.dumps(lazy))  # what a forked or spawned data-loader worker gets
    assert clone._array is None and Opener.opened == 1
    assert clone[0].shape == (8, 8, 1) and Opener.opened == 2


@pytest.mark.parametrize(
    ("axes", "shape", "ndim", "says"),
    [
        ("ZYX", (4, 8), 3, "the axes order ZYX has 3 letters but the array has 2 axes (4, 8)"),
        ("ZYXQ", (4, 8, 8, 1), 3, "the axes order ZYXQ must use each of the letters TZCYX at most once"),
        ("CYX", (2, 8, 8), 3, "the axes order CYX lacks Z, needed for a 3D image"),
        ("TZYX", (3, 4, 8, 8), 3, "axes T (3) of the array (3, 4, 8, 8) (TZYX) hold more than one 3D image"),
        ("ZYX", (4, 8, 8), 2, "axes Z (4) of the array (4, 8, 8) (ZYX) hold more than one 2D image"),
    ],
)
def test_axes_that_do_not_fit_the_array_are_one_clear_line(axes, shape, ndim, says) -> None:
    with pytest.raises(SegflowError) as err:
        _lazy(np.zeros(shape, np.uint8), axes, ndim)
    assert str(err.value).startswith(f"vol.zarr: {says}") and str(err.value).endswith(f"set {KEY} to the order of the stored axes (letters of TZCYX)")


def test_aligned_slabs_hold_whole_chunks(tmp_path) -> None:
    """A mask checked slab by slab decodes each chunk once: slabs are whole chunks along the first axis."""
    import zarr

    from segflow.io.lazy import slabs

    zarr.create_array(str(tmp_path / "v.zarr"), data=np.zeros((40, 64, 64), np.uint8), chunks=(16, 32, 32))
    lazy = LazyArray(lambda: zarr.open(str(tmp_path / "v.zarr"), mode="r"), "ZYX", 3, "v.zarr", KEY, channels=False)
    assert lazy.chunk_rows == 16
    assert slabs(lazy, limit=64 * 64 * 3).step == 3 and slabs(lazy, limit=64 * 64 * 3, aligned=True).step == 16
    assert slabs(lazy, limit=64 * 64 * 20, aligned=True).step == 32 and slabs(np.zeros((40, 64, 64)), 64 * 64 * 3, aligned=True).step == 3
