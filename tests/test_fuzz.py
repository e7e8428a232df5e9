"""Fuzzing the config loader and the image readers: whatever the input, they return or raise SegflowError.

Anything else (TypeError, RecursionError, a decoder's own exception) would reach the user as a
traceback. The inputs that once crashed them are pinned at the end of this file.
"""

from __future__ import annotations

import io
import string
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from segflow.config.loader import LEAF_KEYS, SECTION_KEYS, biapy_keys, build_config, load_config, parse_override
from segflow.config.schema import Config
from segflow.errors import SegflowError
from segflow.io.images import read_image, read_mask

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def fuzz(n: int) -> settings:
    return settings(FUZZ, max_examples=n)

# --------------------------------------------------------------------------------------------- config values and keys
REAL_KEYS = sorted(LEAF_KEYS)
SOME_BIAPY_KEYS = sorted(biapy_keys())[::7]  # a spread of them: enough to hit 'not implemented' and 'off' paths
key_names = st.one_of(
    st.sampled_from(REAL_KEYS),
    st.sampled_from(sorted(SECTION_KEYS)),
    st.sampled_from(SOME_BIAPY_KEYS),
    st.text(string.ascii_uppercase + "._", min_size=1, max_size=20),
    st.text(max_size=12),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["(256, 256, 1)", "(16, 32, 32, 1)", "[1, 2", "(0, 0)", "()", "(1e999,)", "2D", "3D", "unet", "ADAMW", "~/x", "", "-1"]),
    st.binary(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(key_names, inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def config_trees(draw: st.DrawFn) -> dict:
    """A nested dict like a YAML config: some real dotted keys (nested as sections), some junk."""
    tree: dict = {}
    for _ in range(draw(st.integers(0, 6))):
        parts = draw(key_names).split(".")
        node = tree
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = draw(values)
    return tree


overrides = st.lists(
    st.one_of(
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(REAL_KEYS), st.one_of(st.text(max_size=15), scalars.map(str))),
        st.text(max_size=30),
    ),
    max_size=3,
)


@fuzz(700)
@given(tree=config_trees(), extra=overrides)
def test_build_config_never_crashes(tree: dict, extra: list[str]) -> None:
    try:
        cfg, warnings_ = build_config(tree, extra, base_dir="/tmp", source="fuzz.yaml")
    except SegflowError as exc:
        assert str(exc).strip()
        return
    assert isinstance(cfg, Config) and all(isinstance(w, str) for w in warnings_)


@fuzz(500)
@given(text=st.text(max_size=60))
def test_parse_override_never_crashes(text: str) -> None:
    try:
        key, _ = parse_override(text)
    except SegflowError as exc:
        assert "-D" in str(exc)
        return
    assert key == text.split("=", 1)[0].strip()


# --------------------------------------------------------------------------------------------- config files
yaml_ish = st.text(alphabet=string.ascii_letters + string.digits + " :-[]{}()&*!|>'\"#,.?<%@`\n\t", max_size=120)


@st.composite
def yaml_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["dump", "mutated dump", "yaml-ish text", "any text", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "any text":
        return draw(st.text(max_size=120)).encode("utf-8", "surrogatepass")
    if kind == "yaml-ish text":
        return draw(yaml_ish).encode()
    text = yaml.safe_dump(draw(config_trees()), sort_keys=False)
    if kind == "mutated dump" and text:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(yaml_ish) + text[at + draw(st.integers(0, 5)) :]
    return text.encode("utf-8", "surrogatepass")


@fuzz(500)
@given(content=yaml_files(), extra=overrides)
def test_load_config_never_crashes(tmp_path: Path, content: bytes, extra: list[str]) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content)
    try:
        cfg, _ = load_config(path, extra)
    except SegflowError as exc:
        assert str(exc).strip()
        return
    assert isinstance(cfg, Config)


# --------------------------------------------------------------------------------------------- image files
def _valid_files() -> dict[str, bytes]:
    """Small valid files of every kind segflow reads: the seeds that get truncated and bit-flipped."""
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}

    def tif(name: str, array: np.ndarray, **kwargs: object) -> None:
        buf = io.BytesIO()
        tifffile.imwrite(buf, array, **kwargs)
        files[name] = buf.getvalue()

    tif("grey.tif", rng.integers(0, 255, (12, 10), dtype=np.uint8))
    tif("mask.tif", rng.integers(0, 3, (12, 10), dtype=np.uint8))
    tif("stack16.tif", rng.integers(0, 65535, (4, 8, 6), dtype=np.uint16), metadata={"axes": "ZYX"})
    tif("rgb.tif", rng.integers(0, 255, (8, 6, 3), dtype=np.uint8), photometric="rgb")
    tif("float_imagej.tif", rng.random((3, 2, 8, 6), dtype=np.float32), imagej=True, metadata={"axes": "ZCYX"})
    tif("compressed.tif", rng.integers(0, 255, (8, 8), dtype=np.uint8), compression="zlib")
    for name, array in (("grey.png", rng.integers(0, 255, (9, 7), dtype=np.uint8)), ("rgb.png", rng.integers(0, 255, (9, 7, 3), dtype=np.uint8))):
        files[name] = iio.imwrite("<bytes>", array, extension=".png")
    files["rgb.jpg"] = iio.imwrite("<bytes>", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), extension=".jpg")
    buf = io.BytesIO()
    np.save(buf, rng.integers(0, 2, (6, 5), dtype=np.int16))
    files["mask.npy"] = buf.getvalue()
    return files


VALID = _valid_files()
SUFFIXES = [".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".bmp", ""]


def _read_both(path: Path, ndim: int, channels: int | None) -> None:
    """read_image and read_mask: an array of the promised layout, or SegflowError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # decoders warn about odd files; only exceptions matter here
        for read in (lambda: read_image(path, ndim, channels), lambda: read_mask(path, ndim)):
            try:
                arr = read()
            except SegflowError as exc:
                assert str(path) in str(exc)
                continue
            assert isinstance(arr, np.ndarray) and arr.ndim in (ndim, ndim + 1)


@fuzz(600)
@given(data=st.binary(max_size=300), suffix=st.sampled_from(SUFFIXES), ndim=st.sampled_from([2, 3]), channels=st.sampled_from([None, 1, 3]))
def test_readers_on_random_bytes(tmp_path: Path, data: bytes, suffix: str, ndim: int, channels: int | None) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    _read_both(path, ndim, channels)


@st.composite
def damaged_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid file, truncated and/or with a few bytes changed (headers first: that is where parsers break)."""
    name = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[name])
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.one_of(st.integers(0, min(63, len(data) - 1)), st.integers(0, len(data) - 1)))
        if draw(st.booleans()):
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return name, bytes(data)


@fuzz(1200)
@given(file=damaged_files(), ndim=st.sampled_from([2, 3]), channels=st.sampled_from([None, 1, 3]))
def test_readers_on_truncated_and_bit_flipped_files(tmp_path: Path, file: tuple[str, bytes], ndim: int, channels: int | None) -> None:
    name, data = file
    assume(len(data) > 0)  # zero bytes has its own message (pinned below)
    path = tmp_path / name
    path.write_bytes(data)
    _read_both(path, ndim, channels)


def test_undamaged_seed_files_read() -> None:
    """The seeds are valid: the fuzzing above damages real files, not files no reader accepts."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, data in VALID.items():
            path = Path(tmp) / name
            path.write_bytes(data)
            ndim = 3 if name.startswith(("stack", "float")) else 2
            arr = read_image(path, ndim, 3 if name.startswith("rgb") else None)
            assert arr.ndim == ndim + 1, name


# --------------------------------------------------------------------------------------------- inputs that crashed them once
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("? [1, 2]\n: 3\n", "line 1, column 3: YAML syntax error: a key must be a name, not a list"),
        ("TRAIN:\n  ? {EPOCHS: 1}\n  : 3\n", "line 2, column 5: YAML syntax error: a key must be a name, not a dict"),
        ("[" * 5000, "nested too deeply"),
        ("TRAIN: &a {EPOCHS: *a}\n", "holds itself"),
        ("TRAIN:\n  EPOCHS: 3\n  EPOCHS: 4\n", "EPOCHS is given twice"),
    ],
)
def test_config_files_that_crashed_the_loader(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(SegflowError, match=message.replace("[", r"\[").replace("(", r"\(")) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_yaml_merge_keys_work_and_explicit_keys_win(tmp_path: Path) -> None:
    # The duplicate-key check once tried to build the '<<' key itself and refused every merge.
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN:\n  <<: {EPOCHS: 3, LR: 0.5}\n  LR: 0.1\n")
    cfg, _ = load_config(path)
    assert (cfg.TRAIN.EPOCHS, cfg.TRAIN.LR) == (3, 0.1)


@pytest.mark.parametrize("text", ["TRAIN.LR=" + "[" * 3000, "TRAIN.LR=&a [*a]"])
def test_overrides_that_crashed_the_parser(text: str) -> None:
    try:
        cfg, _ = build_config({}, [text])
    except SegflowError as exc:
        assert "TRAIN.LR" in str(exc)
    else:  # pragma: no cover - a deep list is not a learning rate
        pytest.fail(f"accepted {cfg.TRAIN.LR!r}")


@pytest.mark.parametrize("override", [False, True])
def test_nul_in_a_data_path(override: bool) -> None:
    tree = {} if override else {"DATA": {"TRAIN": {"PATH": "x\x00y"}}}
    with pytest.raises(SegflowError, match="DATA.TRAIN.PATH: the path 'x\\\\x00y' holds a NUL character"):
        build_config(tree, ["DATA.TRAIN.PATH=x\x00y"] if override else [], base_dir="/tmp")


@pytest.mark.parametrize(("tree", "key"), [({"TRAIN": {"EPOCHS": True}}, "TRAIN.EPOCHS"), ({"DATA": {"PATCH_SIZE": [True, 32, 1]}}, "DATA.PATCH_SIZE")])
def test_true_false_is_not_a_number(tree: dict, key: str) -> None:
    # pydantic would read true as 1: TRAIN.EPOCHS: true trained one epoch without a word.
    with pytest.raises(SegflowError, match=f"{key}: expected (a number|numbers), not true/false"):
        build_config(tree)
    with pytest.raises(SegflowError, match=f"-D: {key}: expected"):
        build_config({}, [f"{key}={'yes' if key == 'TRAIN.EPOCHS' else '(True, 32, 1)'}"])


def test_zero_byte_image(tmp_path: Path) -> None:
    path = tmp_path / "empty.tif"
    path.write_bytes(b"")
    with pytest.raises(SegflowError, match="the file is empty"):
        read_image(path, 2)


def _with_tag(data: bytes, tag: str, value: int) -> bytes:
    """``data`` (a little-endian classic TIFF) with one LONG/SHORT tag of the first page set to ``value``."""
    import struct

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        t = tif.pages[0].tags[tag]
        offset, fmt = t.valueoffset, "<I" if t.dtype == 4 else "<H"
    out = bytearray(data)
    out[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("seed", "tag", "value", "message"),
    [
        # A flipped bit in the width of an uncompressed file: tifffile went on to allocate 12 GiB.
        ("grey.tif", "ImageWidth", 2**30, "the header declares 12.0 GiB of pixels but the file holds only"),
        # A flipped height in a compressed file: 2 million strips listed as one; reading looped for seconds.
        ("compressed.tif", "ImageLength", 2**24, "the header declares 2097152 strips or tiles but lists 1"),
        # A flipped height in an ImageJ hyperstack: tifffile's series took minutes before any check ran.
        ("float_imagej.tif", "ImageLength", 2**31 + 8, "the header declares 268435457 strips or tiles but lists 1"),
    ],
)
def test_tiff_headers_that_declare_more_than_the_file_holds(tmp_path: Path, seed: str, tag: str, value: int, message: str) -> None:
    path = tmp_path / seed
    path.write_bytes(_with_tag(VALID[seed], tag, value))
    for read in (lambda: read_image(path, 2), lambda: read_mask(path, 2)):
        with pytest.raises(SegflowError, match=message) as info:
            read()
        assert str(info.value).startswith(str(path)) and "corrupt or truncated" in str(info.value)


def test_npy_header_that_declares_more_than_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (100_000, 100_000)})
        f.write(bytes(64))
    with pytest.raises(SegflowError, match=r"declares 74\.5 GiB of pixels but the file holds only 64 bytes"):
        read_image(path, 2)
