"""Reading images and masks: formats, dtypes, axis orders (BiaPy's (y, x, c) / (z, y, x, c)) and clear errors."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from segflow.errors import SegflowError
from segflow.io.formats import write_tiff
from segflow.io.images import list_images, read_image, read_mask


def ramp(shape: tuple[int, ...], dtype=np.uint8, scale: float = 1.0) -> np.ndarray:
    """Distinct values per pixel (wrapping for small dtypes) so any axis mix-up changes them."""
    return (np.arange(int(np.prod(shape))).reshape(shape) * scale % (np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1e9)).astype(dtype)


# ------------------------------------------------------------------------------------------ listing
def test_list_images_sorted_skips_hidden_and_other_files(tmp_path: Path) -> None:
    for name in ("b_2.tif", "a_10.png", "a_1.tif", ".hidden.tif", "notes.txt", "c.JPG", "d.npy"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.tif").mkdir()
    assert [p.name for p in list_images(tmp_path, "train images")] == ["a_1.tif", "a_10.png", "b_2.tif", "c.JPG", "d.npy"]


def test_list_images_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SegflowError, match="does not exist") as err:
        list_images(missing, "train images (DATA.TRAIN.PATH)")
    assert str(missing) in str(err.value) and "DATA.TRAIN.PATH" in str(err.value)


def test_list_images_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SegflowError, match="empty") as err:
        list_images(tmp_path, "train images")
    assert str(tmp_path) in str(err.value)


def test_list_images_only_unsupported_files(tmp_path: Path) -> None:
    (tmp_path / "a.bmp").write_bytes(b"BM")
    (tmp_path / "b.bmp").write_bytes(b"BM")
    with pytest.raises(SegflowError, match=r"holds no images \(found only: \.bmp\)") as err:
        list_images(tmp_path, "train images")
    assert ".tif" in str(err.value)  # says what segflow reads


# ------------------------------------------------------------------------------------------ TIFF 2D/3D, dtypes
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_2d_keeps_dtype_and_values(tmp_path: Path, dtype) -> None:
    data = ramp((32, 40), dtype, scale=1.5 if dtype == np.float32 else 37)
    tifffile.imwrite(tmp_path / "im.tif", data)
    out = read_image(tmp_path / "im.tif", ndim=2, channels=1)
    assert out.shape == (32, 40, 1) and out.dtype == dtype
    np.testing.assert_array_equal(out[..., 0], data)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_3d_stack(tmp_path: Path, dtype) -> None:
    data = ramp((6, 32, 40), dtype, scale=3)
    tifffile.imwrite(tmp_path / "st.tiff", data)
    out = read_image(tmp_path / "st.tiff", ndim=3, channels=1)
    assert out.shape == (6, 32, 40, 1) and out.dtype == dtype
    np.testing.assert_array_equal(out[..., 0], data)


@pytest.mark.parametrize("n_slices", [3, 4])
def test_tiff_small_3d_stack_written_plainly(tmp_path: Path, n_slices: int) -> None:
    """tifffile stores a plain (3 or 4, y, x) array as planar RGB(A); in 3D it is still a z-stack, image and mask."""
    data = ramp((n_slices, 32, 40), np.uint8, 3)
    mask = (data % 2).astype(np.uint8)
    tifffile.imwrite(tmp_path / "st.tif", data)
    tifffile.imwrite(tmp_path / "m.tif", mask)
    out = read_image(tmp_path / "st.tif", ndim=3, channels=1)
    assert out.shape == (n_slices, 32, 40, 1)
    np.testing.assert_array_equal(out[..., 0], data)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.tif", 3), mask)


def test_tiff_imagej_3d_stack(tmp_path: Path) -> None:
    data = ramp((5, 32, 32), np.uint16, 7)
    tifffile.imwrite(tmp_path / "st.tif", data, imagej=True, metadata={"axes": "ZYX"})
    out = read_image(tmp_path / "st.tif", ndim=3, channels=1)
    assert out.shape == (5, 32, 32, 1)
    np.testing.assert_array_equal(out[..., 0], data)


def test_tiff_2d_channels_last(tmp_path: Path) -> None:
    data = ramp((32, 40, 2), np.uint16, 11)
    tifffile.imwrite(tmp_path / "c.tif", data, metadata={"axes": "YXC"})
    out = read_image(tmp_path / "c.tif", ndim=2, channels=2)
    assert out.shape == (32, 40, 2)
    np.testing.assert_array_equal(out, data)


def test_tiff_rgb_interleaved(tmp_path: Path) -> None:
    data = ramp((32, 40, 3), np.uint8, 5)
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb")
    out = read_image(tmp_path / "rgb.tif", ndim=2, channels=3)
    np.testing.assert_array_equal(out, data)


def test_tiff_channels_first_from_axes_metadata(tmp_path: Path) -> None:
    """A CYX file (e.g. tifffile metadata={'axes': 'CYX'}) comes back channels last, with each channel intact."""
    data = ramp((3, 32, 40), np.uint16, 13)
    tifffile.imwrite(tmp_path / "cyx.tif", data, metadata={"axes": "CYX"})
    out = read_image(tmp_path / "cyx.tif", ndim=2, channels=3)
    assert out.shape == (32, 40, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], data[c])


def test_tiff_channels_first_planar_rgb(tmp_path: Path) -> None:
    data = ramp((3, 32, 40), np.uint8, 3)
    tifffile.imwrite(tmp_path / "planar.tif", data, photometric="rgb", planarconfig="separate")
    out = read_image(tmp_path / "planar.tif", ndim=2, channels=3)
    assert out.shape == (32, 40, 3)
    np.testing.assert_array_equal(np.moveaxis(out, -1, 0), data)


def test_tiff_channels_first_metadata_beats_channel_count(tmp_path: Path) -> None:
    """Axes come from the file, not the shape: a 2-channel CYX file whose x size happens to be 2 stays right."""
    data = ramp((2, 32, 2), np.uint8, 7)
    tifffile.imwrite(tmp_path / "odd.tif", data, metadata={"axes": "CYX"})
    out = read_image(tmp_path / "odd.tif", ndim=2, channels=2)
    assert out.shape == (32, 2, 2)
    np.testing.assert_array_equal(out[..., 1], data[1])


def test_tiff_channels_first_without_metadata_uses_channel_count(tmp_path: Path) -> None:
    """A plain (c, y, x) page stack with no axis metadata: the expected channel count decides."""
    data = ramp((2, 32, 40), np.uint8, 9)
    tifffile.imwrite(tmp_path / "plain.tif", data)
    out = read_image(tmp_path / "plain.tif", ndim=2, channels=2)
    assert out.shape == (32, 40, 2)
    np.testing.assert_array_equal(out[..., 1], data[1])


@pytest.mark.parametrize("axes", ["ZCYX", "CZYX"])
def test_tiff_3d_multichannel(tmp_path: Path, axes: str) -> None:
    zyxc = ramp((4, 32, 32, 2), np.uint16, 17)
    data = np.moveaxis(zyxc, -1, axes.index("C"))
    kwargs = {"imagej": True} if axes == "ZCYX" else {}
    tifffile.imwrite(tmp_path / "mc.tif", data, metadata={"axes": axes}, **kwargs)
    out = read_image(tmp_path / "mc.tif", ndim=3, channels=2)
    assert out.shape == (4, 32, 32, 2)
    np.testing.assert_array_equal(out, zyxc)


def test_tiff_leading_singleton_axis_dropped(tmp_path: Path) -> None:
    data = ramp((1, 1, 32, 40), np.uint8)
    np.save(tmp_path / "t.npy", data)
    out = read_image(tmp_path / "t.npy", ndim=2, channels=1)
    assert out.shape == (32, 40, 1)


# ------------------------------------------------------------------------------------------ PNG / JPG / NPY
def test_png_grey_rgb_and_uint16(tmp_path: Path) -> None:
    grey = ramp((32, 40), np.uint8, 3)
    rgb = ramp((32, 40, 3), np.uint8, 5)
    deep = ramp((32, 40), np.uint16, 1001)
    iio.imwrite(tmp_path / "g.png", grey)
    iio.imwrite(tmp_path / "c.png", rgb)
    iio.imwrite(tmp_path / "d.png", deep)
    g = read_image(tmp_path / "g.png", 2, 1)
    c = read_image(tmp_path / "c.png", 2, 3)
    d = read_image(tmp_path / "d.png", 2, 1)
    assert g.shape == (32, 40, 1) and c.shape == (32, 40, 3) and d.dtype == np.uint16
    np.testing.assert_array_equal(g[..., 0], grey)
    np.testing.assert_array_equal(c, rgb)
    np.testing.assert_array_equal(d[..., 0], deep)


def test_jpg_grey_and_rgb(tmp_path: Path) -> None:
    smooth = np.tile(np.linspace(20, 230, 40), (32, 1)).astype(np.uint8)
    iio.imwrite(tmp_path / "g.jpg", smooth)
    iio.imwrite(tmp_path / "c.jpeg", np.stack([smooth, smooth[:, ::-1], np.full_like(smooth, 128)], -1))
    g = read_image(tmp_path / "g.jpg", 2, 1)
    c = read_image(tmp_path / "c.jpeg", 2, 3)
    assert g.shape == (32, 40, 1) and g.dtype == np.uint8 and c.shape == (32, 40, 3)
    assert np.abs(g[..., 0].astype(int) - smooth).max() < 12  # lossy, but the same picture
    assert c[5, 0, 0] < 60 and c[5, 0, 1] > 190 and abs(int(c[5, 20, 2]) - 128) < 12


def test_npy_channels_last(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((32, 40, 2)).astype(np.float32)
    np.save(tmp_path / "a.npy", data)
    np.testing.assert_array_equal(read_image(tmp_path / "a.npy", 2, 2), data)


def test_bool_image_becomes_uint8(tmp_path: Path) -> None:
    data = np.zeros((32, 32), bool)
    data[4:9, 2:5] = True
    np.save(tmp_path / "b.npy", data)
    out = read_image(tmp_path / "b.npy", 2, 1)
    assert out.dtype == np.uint8 and out.sum() == 15


# ------------------------------------------------------------------------------------------ dimensionality errors
def test_2d_image_with_ndim_3d_is_an_error(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "flat.tif", ramp((32, 32)))
    with pytest.raises(SegflowError, match="PROBLEM.NDIM") as err:
        read_image(tmp_path / "flat.tif", ndim=3, channels=1)
    assert "flat.tif" in str(err.value) and "2D" in str(err.value)


@pytest.mark.parametrize("name", ["rgb.png", "rgb.tif"])
def test_rgb_2d_image_with_ndim_3d_is_an_error(tmp_path: Path, name: str) -> None:
    """An RGB 2D image must not be read as a stack of 32 slices 3 pixels wide."""
    rgb = ramp((32, 32, 3), np.uint8, 5)
    (iio.imwrite if name.endswith(".png") else lambda p, a: tifffile.imwrite(p, a, photometric="rgb"))(tmp_path / name, rgb)
    with pytest.raises(SegflowError, match="PROBLEM.NDIM") as err:
        read_image(tmp_path / name, ndim=3, channels=1)
    assert name in str(err.value) and "2D" in str(err.value)


@pytest.mark.parametrize("kind", ["plain", "imagej", "zyx_metadata"])
def test_3d_stack_with_ndim_2d_is_an_error(tmp_path: Path, kind: str) -> None:
    stack = ramp((8, 32, 32))
    kwargs = {"plain": {}, "imagej": {"imagej": True, "metadata": {"axes": "ZYX"}}, "zyx_metadata": {"metadata": {"axes": "ZYX"}}}[kind]
    tifffile.imwrite(tmp_path / "stack.tif", stack, **kwargs)
    with pytest.raises(SegflowError, match="3D") as err:
        read_image(tmp_path / "stack.tif", ndim=2, channels=1)
    msg = str(err.value)
    assert "stack.tif" in msg and "PROBLEM.NDIM" in msg


def test_3d_multichannel_stack_with_ndim_2d_is_an_error(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "s.tif", ramp((4, 32, 32, 2)))
    with pytest.raises(SegflowError, match="3D stack"):
        read_image(tmp_path / "s.tif", ndim=2, channels=2)


# ------------------------------------------------------------------------------------------ unreadable files
def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "zero.tif").write_bytes(b"")
    with pytest.raises(SegflowError, match=r"the file is empty \(0 bytes\)") as err:
        read_image(tmp_path / "zero.tif", 2)
    assert "zero.tif" in str(err.value)


@pytest.mark.parametrize("name", ["bad.tif", "bad.png", "bad.jpg", "bad.npy"])
def test_corrupt_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"this is not an image at all" * 4)
    with pytest.raises(SegflowError, match="cannot be read") as err:
        read_image(tmp_path / name, 2)
    assert name in str(err.value)
    assert "\n" not in str(err.value)  # one line, as the CLI prints it


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    data = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    tifffile.imwrite(full, data) if suffix == ".tif" else iio.imwrite(full, data)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(SegflowError) as err:
        read_image(cut, 2)
    assert f"cut{suffix}" in str(err.value)


def test_unsupported_extension(tmp_path: Path) -> None:
    (tmp_path / "x.bmp").write_bytes(b"BM" + b"\0" * 64)
    with pytest.raises(SegflowError, match="unsupported file type '.bmp'") as err:
        read_image(tmp_path / "x.bmp", 2)
    assert "x.bmp" in str(err.value)


def test_complex_dtype_is_an_error(tmp_path: Path) -> None:
    np.save(tmp_path / "z.npy", np.zeros((32, 32), np.complex64))
    with pytest.raises(SegflowError, match="z.npy.*complex64"):
        read_image(tmp_path / "z.npy", 2)


# ------------------------------------------------------------------------------------------ masks
def test_mask_integer_2d_and_3d(tmp_path: Path) -> None:
    m2 = (ramp((32, 40)) % 3).astype(np.uint8)
    m3 = (ramp((4, 32, 40)) % 4).astype(np.uint16)
    tifffile.imwrite(tmp_path / "m2.tif", m2)
    tifffile.imwrite(tmp_path / "m3.tif", m3)
    a, b = read_mask(tmp_path / "m2.tif", 2), read_mask(tmp_path / "m3.tif", 3)
    assert a.shape == (32, 40) and b.shape == (4, 32, 40)
    np.testing.assert_array_equal(a, m2)
    np.testing.assert_array_equal(b, m3)


@pytest.mark.parametrize("name", ["m.png", "m.tif"])
def test_rgb_mask_with_equal_channels_is_one_channel(tmp_path: Path, name: str) -> None:
    m = np.zeros((32, 40), np.uint8)
    m[5:20, 3:30] = 1
    m[25:, :] = 2
    rgb = np.repeat(m[..., None], 3, -1)
    iio.imwrite(tmp_path / name, rgb) if name.endswith(".png") else tifffile.imwrite(tmp_path / name, rgb, photometric="rgb")
    out = read_mask(tmp_path / name, 2)
    assert out.shape == (32, 40)
    np.testing.assert_array_equal(out, m)


def test_rgb_mask_with_different_channels_is_an_error(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 1
    iio.imwrite(tmp_path / "col.png", rgb)
    with pytest.raises(SegflowError, match="col.png: mask has 3 channels"):
        read_mask(tmp_path / "col.png", 2)


def test_float_mask_with_integer_values_is_read(tmp_path: Path) -> None:
    m = np.zeros((32, 32), np.float32)
    m[:10] = 1.0
    tifffile.imwrite(tmp_path / "f.tif", m)
    out = read_mask(tmp_path / "f.tif", 2)
    assert np.issubdtype(out.dtype, np.integer) and out.sum() == 320


@pytest.mark.parametrize("bad", [0.5, np.nan])
def test_float_mask_with_non_integer_values_is_an_error(tmp_path: Path, bad: float) -> None:
    m = np.zeros((32, 32), np.float32)
    m[3, 3] = bad
    tifffile.imwrite(tmp_path / "soft.tif", m)
    with pytest.raises(SegflowError, match="non-integer") as err:
        read_mask(tmp_path / "soft.tif", 2)
    assert "soft.tif" in str(err.value)


# ------------------------------------------------------------------------------------------ writing
def test_write_tiff_round_trip_and_copies_resolution(tmp_path: Path) -> None:
    ref = tmp_path / "ref.tif"
    tifffile.imwrite(ref, np.zeros((32, 32), np.uint8), resolution=(2.0, 4.0), resolutionunit="CENTIMETER")
    pred = ramp((32, 32, 1), np.uint8)
    write_tiff(tmp_path / "out" / "p.tif", pred, ndim=2, reference=ref)
    with tifffile.TiffFile(tmp_path / "out" / "p.tif") as tif:
        page = tif.pages[0]
        np.testing.assert_array_equal(page.asarray(), pred[..., 0])
        assert page.tags["XResolution"].value == (2, 1) and page.tags["YResolution"].value == (4, 1)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["p.tif"]  # no temporary file left behind


def test_write_tiff_is_an_imagej_hyperstack_keeping_pixel_size_and_z_spacing(tmp_path):
    ref = tmp_path / "ref.tif"
    tifffile.imwrite(ref, np.zeros((5, 16, 16), np.uint8), imagej=True, resolution=(2.0, 4.0), metadata={"unit": "um", "spacing": 0.5, "axes": "ZYX"})
    probs = np.random.default_rng(0).random((5, 16, 16, 3)).astype(np.float32)
    write_tiff(tmp_path / "out.tif", probs, 3, reference=ref)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.series[0].axes == "ZCYX" and tif.series[0].shape == (5, 3, 16, 16)
        assert tif.imagej_metadata["unit"] == "um" and tif.imagej_metadata["spacing"] == 0.5
        assert tif.pages[0].tags["XResolution"].value == (2, 1) and tif.pages[0].tags["YResolution"].value == (4, 1)
    np.testing.assert_array_equal(read_image(tmp_path / "out.tif", 3), probs)


def test_palette_png_mask_reads_class_indices_and_image_reads_colours(tmp_path):
    from PIL import Image

    idx = np.zeros((8, 8), np.uint8)
    idx[2:5, 2:5] = 3
    idx[0, 0] = 255
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0, 0, 0] * 251 + [224, 224, 192])
    im.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "pal.png", 2), idx)
    rgb = read_image(tmp_path / "pal.png", 2)
    assert rgb.shape == (8, 8, 3) and tuple(rgb[3, 3]) == (128, 128, 0)


# ------------------------------------------------------------------------------------------ permissions, empty, expectations
def test_unreadable_file_says_permission_denied_not_corrupt(tmp_path: Path, monkeypatch) -> None:
    tifffile.imwrite(tmp_path / "a.tif", ramp((8, 8)))

    def denied(*args, **kwargs):  # root reads anything: raise what open() raises for a normal user
        raise PermissionError(13, "Permission denied", str(tmp_path / "a.tif"))

    monkeypatch.setattr(tifffile, "TiffFile", denied)
    with pytest.raises(SegflowError, match=r"a.tif: permission denied; make it readable") as err:
        read_image(tmp_path / "a.tif", 2)
    assert "corrupt" not in str(err.value)


def test_image_without_pixels_is_an_error(tmp_path: Path) -> None:
    np.save(tmp_path / "e.npy", np.zeros((0, 16), np.uint8))
    with pytest.raises(SegflowError, match=r"e.npy: image has shape \(0, 16\), no pixels"):
        read_image(tmp_path / "e.npy", 2)


def test_list_images_of_a_file(tmp_path: Path) -> None:
    (tmp_path / "f.tif").write_bytes(b"x")
    with pytest.raises(SegflowError, match="is a file, not a folder; give a folder"):
        list_images(tmp_path / "f.tif", "--input-dir", advice="give a folder")


def test_shape_errors_say_what_the_model_expects_when_asked(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "s.tif", ramp((8, 32, 32)), metadata={"axes": "ZYX"})
    with pytest.raises(SegflowError, match="PROBLEM.NDIM: 3D"):
        read_image(tmp_path / "s.tif", 2, 1)
    with pytest.raises(SegflowError) as err:
        read_image(tmp_path / "s.tif", 2, 1, expect="this model is 2D with 1 channel; give a (y, x) image")
    assert str(err.value) == (
        f"{tmp_path / 's.tif'}: image has shape (8, 32, 32) (axes ZYX), a 3D stack; "
        "this model is 2D with 1 channel; give a (y, x) image"
    )


# ------------------------------------------------------------------------------------------ writing predictions
def test_write_output_png_holds_class_ids_readable_by_any_reader(tmp_path: Path) -> None:
    from PIL import Image

    from segflow.io.images import write_output

    small = (ramp((16, 16)) % 5).astype(np.uint8)
    big = (ramp((16, 16), np.uint16) * 300).astype(np.uint16)
    write_output(tmp_path / "s.png", small, 2)
    write_output(tmp_path / "b.png", big, 2)
    write_output(tmp_path / "i.png", small.astype(np.int64)[..., None], 2)  # a wide integer type that fits
    write_output(tmp_path / "p.png", small, 2, palette=True)
    assert Image.open(tmp_path / "s.png").mode == "L" and Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(iio.imread(tmp_path / "s.png"), small)
    np.testing.assert_array_equal(iio.imread(tmp_path / "b.png"), big)
    np.testing.assert_array_equal(iio.imread(tmp_path / "i.png"), small)
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png", 2), small)


@pytest.mark.parametrize(
    ("name", "array", "ndim", "message"),
    [
        ("a.png", np.zeros((4, 16, 16), np.uint8), 3, "PNG holds one 2D image; name it with .tif, .tiff, .npy"),
        ("a.png", np.zeros((16, 16), np.float32), 2, "PNG holds integers, not floats"),
        ("a.jpg", np.zeros((16, 16), np.uint8), 2, "JPEG is lossy"),
        ("a.png", np.full((16, 16), 70000, np.int32), 2, "do not fit a PNG; write .tif instead"),
    ],
)
def test_write_output_refuses_what_the_format_cannot_hold(
    tmp_path: Path, name: str, array: np.ndarray, ndim: int, message: str
) -> None:
    from segflow.io.images import write_output

    with pytest.raises(SegflowError, match=message):
        write_output(tmp_path / name, array, ndim)
    assert list(tmp_path.iterdir()) == []
