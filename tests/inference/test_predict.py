"""`segflow predict` and the Python API, outside an experiment: the checkpoint alone is enough."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

import segflow


def test_predict_one_image_labels_and_probabilities(cli, tmp_path, checkpoint, data2d):
    src = data2d / "test" / "x" / "img_000.tif"
    code, _out, err = cli("predict", checkpoint, src, tmp_path / "labels.tif")
    assert code == 0, err
    labels = tifffile.imread(tmp_path / "labels.tif")
    assert labels.shape == (64, 64) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}
    code, _, err = cli(
        "predict", checkpoint, src, tmp_path / "probs.tif", "--probabilities", "--overlap", "0.5", "--batch-size", "2"
    )
    assert code == 0, err
    probs = tifffile.imread(tmp_path / "probs.tif")
    assert probs.dtype == np.float32 and probs.shape == (64, 64)
    # The API gives the same probabilities; labels are the 0.5 threshold of them.
    model = segflow.load_model(str(checkpoint), "cpu")
    api = model.predict(tifffile.imread(src), overlap=[0.5, 0.5], batch_size=2)
    np.testing.assert_allclose(api[..., 0], probs, atol=1e-6)
    default = model.predict(tifffile.imread(src))
    np.testing.assert_array_equal(model.labels(default), labels)
    np.testing.assert_array_equal(model.predict_labels(tifffile.imread(src)), labels)


def test_predict_folder_with_tta(cli, tmp_path, checkpoint, data2d):
    code, _out, err = cli(
        "predict", checkpoint, "--input-dir", data2d / "test" / "x", "--output-dir", tmp_path / "out", "--tta"
    )
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img_000.tif", "img_001.tif"]
    model = segflow.load_model(str(checkpoint), "cpu")
    expected = model.predict_labels(tifffile.imread(data2d / "test" / "x" / "img_001.tif"), tta=True)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "img_001.tif"), expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["IMG", "--input-dir", "DIR", "--output-dir", "OUT"], "either IMAGE or --input-dir"),
        (["--input-dir", "DIR"], "--input-dir needs --output-dir"),
        (["IMG", "--overlap", "1.5"], "--overlap 1.5"),
        (["missing.tif"], "no such image file"),
    ],
)
def test_predict_bad_arguments(cli, tmp_path, checkpoint, data2d, args, message):
    subst = {
        "IMG": str(data2d / "test" / "x" / "img_000.tif"),
        "DIR": str(data2d / "test" / "x"),
        "OUT": str(tmp_path / "o"),
    }
    code, _, err = cli("predict", checkpoint, *[subst.get(a, a) for a in args])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_not_a_checkpoint_and_truncated_checkpoint(cli, tmp_path, checkpoint, data2d):
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint at all")
    code, _, err = cli("predict", bogus, data2d / "test" / "x" / "img_000.tif")
    assert code == 2 and "cannot be read" in err
    cut = tmp_path / "cut.pth"
    cut.write_bytes(checkpoint.read_bytes()[:5000])
    code, _, err = cli("predict", cut, data2d / "test" / "x" / "img_000.tif")
    assert code == 2 and "truncated, corrupt or not a checkpoint" in err


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (
            np.zeros((4, 8, 8, 8), np.uint8),
            r"image of shape \(4, 8, 8, 8\) does not fit: this model is 2D with 1 channel; give a \(y, x\) image",
        ),
        (np.zeros((8, 8, 3), np.uint8), r"of shape \(8, 8, 3\) does not fit: this model is 2D with 1 channel"),
        (np.zeros((0, 64), np.float32), r"has no pixels \(an axis of size 0\)"),
        (np.zeros((64, 0, 1), np.uint8), r"has no pixels"),
        (np.where(np.eye(64) > 0, np.nan, 0).astype(np.float32), "holds NaN or infinite values"),
        (np.full((64, 64), np.inf), "holds NaN or infinite values"),
        (np.zeros((64, 64), np.complex64), "pixel type complex64, not supported"),
    ],
    ids=["3d", "channels", "empty_y", "empty_x", "nan", "inf", "complex"],
)
def test_api_refuses_bad_arrays_with_a_clear_error(checkpoint, array, message):
    model = segflow.load_model(str(checkpoint), "cpu")
    with pytest.raises(segflow.errors.SegflowError, match=message):
        model.predict(array)


def test_api_names_a_bad_overlap_or_batch_size(checkpoint):
    model = segflow.load_model(str(checkpoint), "cpu")
    with pytest.raises(segflow.errors.SegflowError, match=r"overlap \[1.0, 0.5\]: give 2 fractions in \[0, 1\)"):
        model.predict(np.zeros((64, 64), np.uint8), overlap=[1.0, 0.5])
    with pytest.raises(segflow.errors.SegflowError, match="batch_size 0: must be positive"):
        model.predict(np.zeros((64, 64), np.uint8), batch_size=0)


def test_api_accepts_finite_float_and_plain_lists(checkpoint):
    model = segflow.load_model(str(checkpoint), "cpu")
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(image.tolist()), model.predict(image))


# ------------------------------------------------------------------------------------------ output formats
def test_output_format_follows_the_suffix(cli, tmp_path, checkpoint, data2d):
    """.png is a grayscale PNG of class ids (imageio reads the ids back), .npy and .tiff hold the same labels."""
    import imageio.v3 as iio
    from PIL import Image

    src = data2d / "test" / "x" / "img_000.tif"
    expected = segflow.load_model(str(checkpoint), "cpu").predict_labels(tifffile.imread(src))
    for name in ("l.png", "l.npy", "l.tiff", "L.NPY"):
        code, _, err = cli("predict", checkpoint, src, tmp_path / name)
        assert code == 0, err
    assert Image.open(tmp_path / "l.png").mode == "L"  # not a palette: other readers see the ids, not colours
    np.testing.assert_array_equal(iio.imread(tmp_path / "l.png"), expected)
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), expected)
    np.testing.assert_array_equal(np.load(tmp_path / "L.NPY"), expected)
    assert tifffile.TiffFile(tmp_path / "l.tiff").pages[0].dtype == np.uint8
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "l.tiff"), expected)
    code, _, err = cli("predict", checkpoint, src, tmp_path / "p.npy", "--probabilities")
    assert code == 0, err
    assert np.load(tmp_path / "p.npy").dtype == np.float32 and np.load(tmp_path / "p.npy").shape == (64, 64)


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [
        (
            "out.jpg",
            [],
            "cannot hold class labels: JPEG is lossy and would change the values; name it with .tif, .tiff, .png, .npy",
        ),
        ("out.JPEG", ["--probabilities"], "cannot hold float probabilities or values: JPEG is lossy"),
        ("out.png", ["--probabilities"], "PNG holds integers, not floats; name it with .tif, .tiff, .npy"),
        ("out.bmp", [], "segflow does not write '.bmp' files"),
        ("out", [], "the name has no suffix to choose a format by"),
    ],
)
def test_output_suffix_refused_before_the_model_is_loaded(cli, tmp_path, data2d, name, extra, message):
    # The checkpoint does not exist: the suffix is refused before anything looks at it.
    code, _, err = cli("predict", tmp_path / "no.pth", data2d / "test" / "x" / "img_000.tif", tmp_path / name, *extra)
    assert code == 2 and message in err and f"OUTPUT {tmp_path / name}" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ input and output paths
def _bad_paths(tmp_path: Path, data2d: Path) -> dict[str, tuple[list, str]]:
    img = data2d / "test" / "x" / "img_000.tif"
    (tmp_path / "a_file").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    same = tmp_path / "same"
    same.mkdir()
    tifffile.imwrite(same / "a.tif", np.zeros((64, 64), np.uint8))
    np.save(same / "a.npy", np.zeros((64, 64), np.uint8))
    own = tmp_path / "own.tif"
    own.write_bytes(img.read_bytes())
    return {
        "output_is_a_folder": (
            [img, tmp_path / "folder"],
            f"OUTPUT {tmp_path / 'folder'} is a folder; give a file name such as",
        ),
        "output_below_a_file": ([img, tmp_path / "a_file" / "o.tif"], f"{tmp_path / 'a_file'} is a file, not a folder"),
        "output_dir_is_a_file": (
            ["--input-dir", data2d / "test" / "x", "--output-dir", tmp_path / "a_file"],
            "--output-dir",
        ),
        "output_dir_below_a_file": (
            ["--input-dir", data2d / "test" / "x", "--output-dir", tmp_path / "a_file" / "o"],
            "is a file, not a folder",
        ),
        "image_is_a_folder": (
            [tmp_path / "folder"],
            "is a folder; give one image file, or predict a folder with --input-dir",
        ),
        "output_is_the_input": ([own, own], f"OUTPUT {own} is the input image"),
        "two_inputs_one_output": (
            ["--input-dir", same, "--output-dir", tmp_path / "o"],
            "a.npy and a.tif would both be written to",
        ),
        "input_dir_is_a_file": (
            ["--input-dir", tmp_path / "a_file", "--output-dir", tmp_path / "o"],
            "is a file, not a folder; give a folder of images",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "output_is_a_folder",
        "output_below_a_file",
        "output_dir_is_a_file",
        "output_dir_below_a_file",
        "image_is_a_folder",
        "output_is_the_input",
        "two_inputs_one_output",
        "input_dir_is_a_file",
    ],
)
def test_bad_paths_are_refused_before_the_model_is_loaded(cli, tmp_path, data2d, case):
    args, message = _bad_paths(tmp_path, data2d)[case]
    before = sorted(p for p in tmp_path.rglob("*"))
    code, _, err = cli("predict", tmp_path / "no.pth", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert "checkpoint" not in err  # refused before the (missing) checkpoint was looked at
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_unreadable_image_says_permission_denied(cli, tmp_path, checkpoint, data2d, monkeypatch):
    src = tmp_path / "img.tif"
    src.write_bytes((data2d / "test" / "x" / "img_000.tif").read_bytes())
    src.chmod(0o000)
    real = os.access
    # root reads anything: let os.access answer as it does for a normal user
    monkeypatch.setattr(
        os, "access", lambda p, mode, *a, **k: False if Path(p) == src and mode & os.R_OK else real(p, mode, *a, **k)
    )
    code, _, err = cli("predict", checkpoint, src, tmp_path / "o.tif")
    src.chmod(0o644)
    assert code == 2 and f"{src}: permission denied; make it readable" in err and "corrupt" not in err


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (
            lambda p: tifffile.imwrite(p, np.zeros((5, 64, 64), np.uint8), metadata={"axes": "ZYX"}),
            "a 3D stack; this model is 2D with 1 channel; give a (y, x) image",
        ),
        (
            lambda p: tifffile.imwrite(p, np.zeros((64, 64, 3), np.uint8), photometric="rgb"),
            "does not fit: this model is 2D with 1 channel",
        ),
        (
            lambda p: tifffile.imwrite(p, np.zeros((64, 64, 5), np.uint8)),
            "as (y, x, c) it has 5 channels; this model is 2D with 1 channel",
        ),
        (
            lambda p: tifffile.imwrite(p, np.zeros((2, 3, 64, 64), np.uint8)),
            "this model is 2D with 1 channel; give a (y, x) image",
        ),
        (
            lambda p: tifffile.imwrite(p, np.where(np.eye(64) > 0, np.nan, 1).astype(np.float32)),
            "holds NaN or infinite values",
        ),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros((0, 64), np.uint8)), "no pixels"),
    ],
    ids=["3d_stack", "rgb", "5_channels", "4d", "nan", "zero_pixels"],
)
def test_images_the_model_cannot_take_say_what_it_expects(cli, tmp_path, checkpoint, write, message):
    """predict has no config: the line says what the model takes, never which config key to edit."""
    write(tmp_path / "img.tif")
    src = next(tmp_path.iterdir())
    code, _, err = cli("predict", checkpoint, src, tmp_path / "o.tif")
    assert code == 2 and f"{src}: " in err and message in err, err
    assert "PROBLEM.NDIM" not in err and "DATA.PATCH_SIZE" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.tif").exists()


def test_folder_progress_is_one_line_per_image_when_not_a_terminal(cli, tmp_path, checkpoint, data2d):
    code, out, err = cli("predict", checkpoint, "--input-dir", data2d / "test" / "x", "--output-dir", tmp_path / "o")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("predict image")]
    assert [line.split(":")[0] for line in lines] == ["predict image 1/2 img_000.tif", "predict image 2/2 img_001.tif"]
    assert all(line.endswith(" s") for line in lines) and "\r" not in out + err and "it/s" not in err


@pytest.mark.parametrize(
    ("code", "line"),
    [
        (errno.ENOTDIR, "o/x.tif: a part of this path is a file, not a folder; choose the OUTPUT path elsewhere"),
        (errno.EISDIR, "o/x.tif: this is a folder, not a file; choose the OUTPUT path elsewhere"),
    ],
)
def test_os_error_for_a_file_where_a_folder_belongs_is_one_line(code, line):
    """A late ENOTDIR / EISDIR (a path changed under a running command) is bad input, not a traceback."""
    from segflow.app.cli import _os_error_line, _parser

    args = _parser().parse_args(["predict", "m.pth", "i.tif", "o/x.tif"])
    assert _os_error_line(OSError(code, os.strerror(code), "o/x.tif"), args) == line


def test_output_folder_without_write_permission_is_refused_first(cli, tmp_path, data2d, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    # root may write anywhere: let os.access answer as it does for a normal user of a read-only folder
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == locked else real(p, mode, *a, **k))
    code, _, err = cli("predict", tmp_path / "no.pth", data2d / "test" / "x" / "img_000.tif", locked / "sub" / "o.tif")
    assert code == 2 and f"OUTPUT {locked / 'sub' / 'o.tif'}: permission denied in {locked}" in err
