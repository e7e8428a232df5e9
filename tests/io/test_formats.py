"""Image file formats as objects chosen by suffix: what each may hold, and a new format as one object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segflow.errors import SegflowError
from segflow.io import formats
from segflow.io.formats import FORMATS, SUFFIXES, FileFormat, format_for
from segflow.io.images import check_output_suffix, label_style, read_image, write_output


def test_suffixes_choose_formats_in_any_case() -> None:
    assert SUFFIXES == (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")
    assert [type(format_for(Path(f"a{s.upper()}"))).__name__ for s in SUFFIXES] == ["Tiff", "Tiff", "Png", "Jpeg", "Jpeg", "Npy"]
    assert format_for(Path("a.zarr")) is None


def test_what_each_format_may_hold() -> None:
    def allowed(labels: bool, ndim: int | None) -> list[str]:
        return [s for f in FORMATS if f.cannot_hold(labels, ndim) is None for s in f.suffixes]

    assert allowed(True, 2) == allowed(True, None) == [".tif", ".tiff", ".png", ".npy"]
    assert allowed(True, 3) == allowed(False, 2) == [".tif", ".tiff", ".npy"]
    with pytest.raises(SegflowError, match=r"out.jpg: cannot hold class labels: JPEG is lossy .*; name it with .tif, .tiff, .png, .npy"):
        check_output_suffix("out.jpg", labels=True, ndim=2, option="--output")
    assert label_style("m.tiff") == (".tiff", False) and label_style("m.jpg") == (".png", False) and label_style(None) == (".tif", False)


def test_a_new_format_is_one_object(tmp_path: Path, monkeypatch) -> None:
    """Reading and writing go through the object chosen by suffix, so a format added to FORMATS works everywhere."""

    class Raw(FileFormat):
        suffixes = (".raw",)

        def read(self, path: Path, palette_indices: bool) -> tuple[np.ndarray, str | None]:
            return np.fromfile(path, dtype=np.uint8).reshape(4, 8), "YX"

        def write(self, path: Path, array: np.ndarray, ndim: int, reference: Path | None, palette: bool) -> None:
            np.ascontiguousarray(array, dtype=np.uint8).tofile(path)

    monkeypatch.setattr(formats, "FORMATS", [*FORMATS, Raw()])
    labels = np.arange(32, dtype=np.uint8).reshape(4, 8)
    write_output(tmp_path / "p.raw", labels, 2)
    np.testing.assert_array_equal(read_image(tmp_path / "p.raw", 2)[..., 0], labels)
