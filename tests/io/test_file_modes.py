"""Files and folders a run writes follow the user's umask, so collaborators on a shared file system can read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import tiny_config, write_yaml

from segflow.app.cli import main
from segflow.io.atomic import atomic_write_text, current_umask


@pytest.fixture
def umask():
    """Set the process umask for one test, then put the old one back."""
    from fsspec.implementations.local import get_umask

    def set_mask(mask: int) -> None:
        os.umask(mask)
        # fsspec (Lightning's checkpoint writer) caches the umask once per process, which is right for a
        # real segflow process; here the umask changes between tests.
        get_umask.cache_clear()

    old = os.umask(0o022)
    yield set_mask
    set_mask(old)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*")}


def test_current_umask_reads_without_changing(umask) -> None:
    umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_write_follows_umask(tmp_path: Path, umask, mask: int) -> None:
    umask(mask)
    atomic_write_text(tmp_path / "sub" / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "sub" / "a.txt").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "sub").stat().st_mode) == 0o777 & ~mask


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_every_file_of_a_run_follows_umask(tmp_path: Path, data2d: Path, umask, mask: int) -> None:
    """A real train + test run: config copy, checkpoints, TensorBoard events, logs, charts, predictions, metrics."""
    config = write_yaml(tmp_path / "c.yaml", tiny_config(data2d, TRAIN={"EPOCHS": 1}))
    umask(mask)
    assert main(["run", "--config", str(config), "--result_dir", str(tmp_path / "out"), "--name", "job"]) == 0
    modes = _modes(tmp_path / "out")
    files = {name for name in modes if (tmp_path / "out" / name).is_file()}
    # Every kind of output is there, so the check covers each writer.
    for part in (".pth", "tfevents", ".csv", ".png", "per_image/", "config_files/"):
        assert any(part in name for name in files), (part, sorted(files))
    if mask == 0o022:
        unreadable = {n: oct(m) for n, m in modes.items() if m & 0o044 != 0o044}
        assert not unreadable, unreadable
        closed = {n: oct(m) for n, m in modes.items() if n not in files and m & 0o055 != 0o055}
        assert not closed, closed  # folders: listable by group and others
    else:
        shared = {n: oct(m) for n, m in modes.items() if m & 0o077}
        assert not shared, shared
