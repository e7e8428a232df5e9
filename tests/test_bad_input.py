"""The bad-input catalogue: every way a user can get the input wrong, each through the real CLI.

One row per case: (case id, how to build the bad input, what the one error line must contain, what the
user should do). Every case must give exit status 2, exactly one ``segflow: error:`` line on stderr
naming the file or key, no traceback, and must leave every file that existed before byte-identical
(a previous run's checkpoints and config copy, the data, an existing output). docs/troubleshooting.md
lists every case with its message; ``test_every_case_is_documented`` keeps the two together.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import tiny_config, write_yaml

import segflow.io.atomic
from segflow.app.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"
RANDOM_BYTES = np.random.default_rng(0).bytes(3000)


# --------------------------------------------------------------------------------------------- building bad input
class Ctx:
    """One case's private folder: a copy of a previous run's results, configs and (copied) data."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch | None, data2d: Path, data3d: Path, prior: Path) -> None:
        self.tmp, self.mp, self.data2d, self.data3d = tmp, monkeypatch, data2d, data3d
        self.results = tmp / "results"
        shutil.copytree(prior, self.results)  # job "job", run 1: checkpoints, config_files/job_1.yaml, logs
        self.checkpoint = self.results / "job" / "checkpoints" / "job_1-checkpoint-best.pth"
        self.vars: dict[str, str] = {"tmp": str(tmp), "results": str(self.results), "checkpoint": str(self.checkpoint)}
        self.cleanup: list[Callable[[], None]] = []
        self.env: dict[str, str] = {}  # a subprocess case's environment variables
        self.keep: list[object] = []  # what must live as long as the case (a socket holding a port)

    def own_data(self, ndim: int = 2) -> Path:
        """A private copy of the session dataset, safe to damage."""
        data = Path(shutil.copytree(self.data2d if ndim == 2 else self.data3d, self.tmp / "data"))
        self.vars["data"] = str(data)
        return data

    def config(self, data: Path | None = None, ndim: str = "2D", name: str = "c.yaml", **sections: dict) -> Path:
        path = write_yaml(self.tmp / name, tiny_config(data or (self.data2d if ndim == "2D" else self.data3d), ndim, **sections))
        self.vars["config"] = str(path)
        return path

    def text_config(self, text: str | bytes) -> Path:
        path = self.tmp / "c.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        self.vars["config"] = str(path)
        return path

    def run(self, config: Path, *extra: str, run_id: str = "2") -> list[str]:
        return ["run", "--config", str(config), "--result_dir", str(self.results), "--name", "job", "--run_id", run_id, *extra]

    def check(self, config: Path, *extra: str) -> list[str]:
        return ["check", "--config", str(config), *extra]

    def patch(self, target: object, name: str, value: object) -> None:
        assert self.mp is not None, "a subprocess case cannot monkeypatch"
        self.mp.setattr(target, name, value)


def _damage(c: Ctx, ndim: int, change: Callable[[Path], None], **sections: dict) -> list[str]:
    """Copy the data, damage it with ``change(data)``, and run on it."""
    data = c.own_data(ndim)
    change(data)
    return c.run(c.config(data, "2D" if ndim == 2 else "3D", **sections))


def _truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def _to_png(data: Path, name: str) -> Path:
    import imageio.v3 as iio

    tif = data / name
    png = tif.with_suffix(".png")
    iio.imwrite(png, tifffile.imread(tif))
    tif.unlink()
    return png


def _rewrite(path: Path, fn: Callable[[np.ndarray], np.ndarray], **kwargs: object) -> None:
    tifffile.imwrite(path, fn(tifffile.imread(path)), **kwargs)


def _set_pixel(value: float, dtype: type) -> Callable[[np.ndarray], np.ndarray]:
    def fn(a: np.ndarray) -> np.ndarray:
        a = a.astype(dtype)
        a[3, 5] = value
        return a

    return fn


def _rgb_images(data: Path) -> None:
    for p in (data / "train/x").iterdir():
        _rewrite(p, lambda a: np.stack([a] * 3, -1), photometric="rgb")


def _rename_all(folder: Path, suffix: str) -> None:
    for p in folder.iterdir():
        p.rename(p.with_suffix(suffix))


def _unreadable_folder(c: Ctx) -> list[str]:
    data = c.own_data()
    folder = data / "train/x"
    folder.chmod(0o000)
    c.cleanup.append(lambda: folder.chmod(0o755))
    if os.geteuid() == 0:  # root reads anything: list the folder as a normal user would fail to
        real = Path.iterdir

        def iterdir(self: Path):
            if self == folder:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return real(self)

        c.patch(Path, "iterdir", iterdir)
    return c.run(c.config(data))


def _read_only_result_dir(c: Ctx) -> list[str]:
    job = c.results / "job"
    job.chmod(0o500)
    c.cleanup.append(lambda: job.chmod(0o755))
    if os.geteuid() == 0:  # root may write anywhere: let os.access answer as it does for a normal user
        real = os.access
        c.patch(os, "access", lambda p, mode, *a, **k: False if mode & os.W_OK and Path(p) == job else real(p, mode, *a, **k))
    return c.run(c.config())


def _failing_writes(code: int) -> Callable[[Ctx], list[str]]:
    """Every atomic write of segflow (config copy, logs, outputs) fails with ``code`` (full or read-only disk)."""

    def build(c: Ctx) -> list[str]:
        @contextlib.contextmanager
        def refuse(target: str | os.PathLike, suffix: str | None = None):
            raise OSError(code, os.strerror(code), str(target))
            yield  # pragma: no cover

        c.patch(segflow.io.atomic, "atomic_path", refuse)
        return c.run(c.config())

    return build


def _disk_full_at_checkpoint(c: Ctx) -> list[str]:
    """The disk fills while the first checkpoint of a new run is written: the other runs' checkpoints are kept."""
    import lightning

    def save(self, filepath, weights_only=False, storage_options=None):
        Path(filepath).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))

    c.patch(lightning.Trainer, "save_checkpoint", save)
    return c.run(c.config(TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False}), run_id="3")


def _out_of_memory(gpu: bool) -> Callable[[Ctx], list[str]]:
    """Training runs out of GPU memory (torch.OutOfMemoryError) or out of RAM (MemoryError)."""

    def build(c: Ctx) -> list[str]:
        import torch

        import segflow.training.trainer

        def boom(*args: object, **kwargs: object) -> None:
            if gpu:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB. GPU 0 has a total capacity of 15.77 GiB")
            raise MemoryError("Unable to allocate 31.3 GiB for an array with shape (4, 2048, 2048, 512) and data type float32")

        c.patch(segflow.training.trainer, "train", boom)
        return c.run(c.config())

    return build


def _out_of_memory_predict(c: Ctx) -> list[str]:
    import torch

    import segflow.inference.predictor

    def boom(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB. GPU 0 has a total capacity of 15.77 GiB")

    c.patch(segflow.inference.predictor.Predictor, "predict", boom)
    return ["predict", str(c.checkpoint), str(c.data2d / "test/x/img_000.tif"), str(c.tmp / "out.tif")]


def _predict_keeps_output(c: Ctx) -> list[str]:
    out = c.tmp / "out.tif"
    tifffile.imwrite(out, np.ones((64, 64), np.uint8))  # a prediction from yesterday
    bad = c.tmp / "new.tif"
    bad.write_bytes((c.data2d / "test/x/img_000.tif").read_bytes()[:100])
    return ["predict", str(c.checkpoint), str(bad), str(out)]


def _predict(c: Ctx, *args: str | Path) -> list[str]:
    """``segflow predict`` with the previous run's checkpoint."""
    return ["predict", str(c.checkpoint), *[str(a) for a in args]]


def _volume(c: Ctx, *args: str) -> list[str]:
    """``segflow predict`` of a 2D Zarr image (96x80) into ``out.zarr``, with ``args``."""
    import zarr

    zarr.create_array(str(c.tmp / "in.zarr"), data=np.zeros((96, 80), np.uint8), chunks=(32, 32))
    return _predict(c, c.tmp / "in.zarr", c.tmp / "out.zarr", *args)


def _volume_predicted_before(c: Ctx) -> list[str]:
    """An output a first run made with 64x64 chunks, asked for again with 32x80."""
    command = _volume(c, "--chunk", "64,64")
    assert main(command) == 0
    return command[:-1] + ["32,80"]


def _volume_disk_fills(c: Ctx) -> list[str]:
    """The disk fills as the third chunk is written (the store's write raises ENOSPC, as a full disk does)."""
    import errno

    from segflow.inference.stores import ZarrStore

    real, calls = ZarrStore.write, []

    def fills(self, *args):
        calls.append(args)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args)

    c.mp.setattr(ZarrStore, "write", fills)
    return _volume(c, "--chunk", "32,32", "--workers", "1")


def _test_volumes_without_a_mask(c: Ctx) -> list[str]:
    """TEST.BY_CHUNKS with two Zarr test volumes and a mask for only one of them."""
    import zarr

    for folder, names in (("vx", ("a", "b")), ("vy", ("a",))):
        (c.tmp / folder).mkdir()
        for name in names:
            zarr.create_array(str(c.tmp / folder / f"{name}.zarr"), data=np.zeros((64, 64), np.uint8), chunks=(32, 32))
    config = c.config(DATA={"TEST": {"PATH": str(c.tmp / "vx"), "GT_PATH": str(c.tmp / "vy")}}, TEST={"BY_CHUNKS": {"ENABLE": True}})
    return c.run(config)


def _predict_array(c: Ctx, name: str, array: np.ndarray, **kwargs: object) -> list[str]:
    """Predict an image file holding ``array`` (TIFF, or .npy by name)."""
    path = c.tmp / name
    np.save(path, array) if name.endswith(".npy") else tifffile.imwrite(path, array, **kwargs)
    return _predict(c, path, c.tmp / "out.tif")


def _predict_into_folder(c: Ctx) -> list[str]:
    (c.tmp / "preds").mkdir()
    return _predict(c, c.data2d / "test/x/img_000.tif", c.tmp / "preds")


def _predict_image_folder(c: Ctx) -> list[str]:
    (c.tmp / "images").mkdir()
    return _predict(c, c.tmp / "images", c.tmp / "out.tif")


def _predict_unreadable_image(c: Ctx) -> list[str]:
    image = c.tmp / "img.tif"
    shutil.copy(c.data2d / "test/x/img_000.tif", image)
    image.chmod(0o000)  # left so: the snapshots after the command must see the same unreadable file
    if os.geteuid() == 0:  # root reads anything: let os.access answer as it does for a normal user
        real = os.access
        c.patch(os, "access", lambda p, mode, *a, **k: False if mode & os.R_OK and Path(p) == image else real(p, mode, *a, **k))
    return _predict(c, image, c.tmp / "out.tif")


def _predict_onto_input(c: Ctx) -> list[str]:
    image = c.tmp / "img.tif"
    shutil.copy(c.data2d / "test/x/img_000.tif", image)
    return _predict(c, image, image)


def _predict_two_inputs_one_output(c: Ctx) -> list[str]:
    images = c.tmp / "images"
    images.mkdir()
    shutil.copy(c.data2d / "test/x/img_000.tif", images / "a.tif")
    np.save(images / "a.npy", tifffile.imread(images / "a.tif"))
    return _predict(c, "--input-dir", images, "--output-dir", c.tmp / "preds")


def _foreign_checkpoint(c: Ctx) -> list[str]:
    import torch

    torch.save({"weights": torch.zeros(3)}, c.tmp / "other.pth")
    return ["predict", str(c.tmp / "other.pth"), str(c.data2d / "test/x/img_000.tif"), str(c.tmp / "out.tif")]


def _truncated_checkpoint(c: Ctx) -> list[str]:
    (c.tmp / "cut.pth").write_bytes(c.checkpoint.read_bytes()[:5000])
    return ["predict", str(c.tmp / "cut.pth"), str(c.data2d / "test/x/img_000.tif"), str(c.tmp / "out.tif")]


def _text_checkpoint(c: Ctx) -> list[str]:
    (c.tmp / "notes.pth").write_text("these are my notes, not a checkpoint\n")
    return c.run(c.config(TRAIN={"ENABLE": False}, PATHS={"CHECKPOINT_FILE": str(c.tmp / "notes.pth")}))


def _checkpoint_for(**model: object) -> Callable[[Ctx], list[str]]:
    """Start training from the previous run's checkpoint with other MODEL settings."""

    def build(c: Ctx) -> list[str]:
        return c.run(c.config(MODEL={**model, "LOAD_CHECKPOINT": True}, PATHS={"CHECKPOINT_FILE": str(c.checkpoint)}))

    return build


def _test_only_with(**model: object) -> Callable[[Ctx], list[str]]:
    def build(c: Ctx) -> list[str]:
        return c.run(c.config(MODEL=model, TRAIN={"ENABLE": False}, PATHS={"CHECKPOINT_FILE": str(c.checkpoint)}))

    return build


def _unsupported_extension(c: Ctx) -> list[str]:
    (c.tmp / "scan.bmp").write_bytes(b"BM" + bytes(100))
    return ["predict", str(c.checkpoint), str(c.tmp / "scan.bmp"), str(c.tmp / "out.tif")]


def _config_copy_of_previous_run(c: Ctx) -> list[str]:
    # The previous run again (its config copy is config_files/job_1.yaml), with --overwrite and bad data:
    # the error must come before that run's config copy is replaced and before --overwrite removes anything.
    data = c.own_data()
    tifffile.imwrite(data / "train/y/img_001.tif", np.zeros((60, 64), np.uint8))
    return c.run(c.config(data), "--overwrite", run_id="1")


def _named(c: Ctx, name: str = "job", run_id: str = "2", result_dir: Path | None = None) -> list[str]:
    """A run with this --name, --run_id and --result_dir (written as --opt=value: a value may start with '-')."""
    where = c.results if result_dir is None else result_dir
    return ["run", "--config", str(c.config()), f"--result_dir={where}", f"--name={name}", f"--run_id={run_id}"]


def _a_file(c: Ctx, relative: str) -> Path:
    path = c.tmp / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("my notes\n")
    return path


def _symlink_loop(c: Ctx) -> list[str]:
    (c.tmp / "loop").symlink_to("loop")
    return _named(c, result_dir=c.tmp / "loop" / "results")


def _checkpoints_folder_is_a_file(c: Ctx) -> list[str]:
    shutil.rmtree(c.results / "job" / "checkpoints")
    (c.results / "job" / "checkpoints").write_text("not a folder\n")
    return c.run(c.config())


def _config_copy_target_is_a_folder(c: Ctx) -> list[str]:
    (c.results / "job/config_files/job_2.yaml").mkdir(parents=True)
    return c.run(c.config())


def _resume_with(override: str) -> Callable[[Ctx], list[str]]:
    """--resume the previous (finished) run 1 with a setting it cannot continue with."""
    return lambda c: c.run(c.config(TEST={"ENABLE": False}), "--resume", "-D", override, run_id="1")


def _single_training_image(c: Ctx) -> list[str]:
    data = c.own_data()
    for i in (1, 2, 3):
        (data / f"train/x/img_00{i}.tif").unlink()
        (data / f"train/y/img_00{i}.tif").unlink()
    return c.run(c.config(data))


def _stack_of_mixed_sizes(c: Ctx) -> list[str]:
    data = c.own_data()
    for folder in ("x", "y"):
        tifffile.imwrite(data / f"test/{folder}/img_001.tif", np.zeros((48, 64), np.uint8))
    return c.run(c.config(data, TEST={"ANALIZE_2D_IMGS_AS_3D_STACK": True}))


def _two_machines(c: Ctx, port_in_use: bool) -> list[str]:
    """SYSTEM.NUM_NODES 2 started on machine 0 alone, at a free port or at one that a socket holds."""
    import socket

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    if port_in_use:
        held.listen()
        c.keep.append(held)
    else:
        held.close()
    c.env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK="0")
    c.vars["port"] = str(port)
    return c.run(c.config(SYSTEM={"NUM_NODES": 2, "DIST_TIMEOUT": 2}))


def _no_master_address(c: Ctx) -> list[str]:
    for key in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        c.mp.delenv(key, raising=False)
    return c.run(c.config(SYSTEM={"NUM_NODES": 2}))


def _testing_package(c: Ctx, rdf: dict) -> list[str]:
    """A test-only run whose PATHS.CHECKPOINT_FILE is a zip holding ``rdf`` as its rdf.yaml."""
    _package(c, rdf)
    return c.run(c.config(TRAIN={"ENABLE": False}, PATHS={"CHECKPOINT_FILE": str(c.tmp / "pkg.zip")}))


def _package(c: Ctx, rdf: dict, name: str = "pkg.zip") -> list[str]:
    """``segflow predict`` with a zip holding ``rdf`` as its rdf.yaml (and an empty weights file)."""
    import zipfile

    import yaml

    path = c.tmp / name
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("rdf.yaml", yaml.safe_dump(rdf))
        z.writestr("weights.pt", b"")
    return ["predict", str(path), str(c.data2d / "test" / "x" / "img_000.tif"), str(c.tmp / "out.tif")]


def _rgb_image(c: Ctx) -> Path:
    path = c.tmp / "rgb.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    return path


def _gpu_not_present(c: Ctx) -> list[str]:
    if c.mp is not None:  # in-process: pretend this machine has no GPU
        import torch

        c.patch(torch.cuda, "is_available", lambda: False)
        c.patch(torch.cuda, "device_count", lambda: 0)
    return c.run(c.config(), "--gpu", "3")


def _containers(c: Ctx, mask_shape: tuple[int, ...] = (16, 32, 32), sections: dict | None = None, **train: object) -> list[str]:
    """Train from a Zarr image and mask (3D, 16x32x32) read patch by patch, with ``train`` keys in DATA.TRAIN and
    ``sections`` besides."""
    import zarr

    for name, shape in (("x", (16, 32, 32)), ("y", mask_shape)):
        zarr.create_array(str(c.tmp / name / "a.zarr"), data=np.zeros(shape, np.uint8), chunks=(8, 32, 32))
    config = tiny_config(c.data3d, "3D", DATA={"PATCH_SIZE": "(8, 16, 16, 1)", "VAL": {"SPLIT_TRAIN": 0.5}}, **(sections or {}))
    config["DATA"]["TRAIN"] = {"PATH": str(c.tmp / "x"), "GT_PATH": str(c.tmp / "y"), "IN_MEMORY": False, **train}
    return c.run(write_yaml(c.tmp / "c.yaml", config))


def _lazy_tiffs(c: Ctx, image: np.ndarray, mask: np.ndarray) -> list[str]:
    """Train from folders of TIFF files read patch by patch (3D)."""
    for name, array in (("x", image), ("y", mask)):
        (c.tmp / name).mkdir()
        tifffile.imwrite(c.tmp / name / "a.tif", array)
    config = tiny_config(c.data3d, "3D", DATA={"PATCH_SIZE": "(8, 16, 16, 1)", "VAL": {"SPLIT_TRAIN": 0.5}})
    config["DATA"]["TRAIN"] = {"PATH": str(c.tmp / "x"), "GT_PATH": str(c.tmp / "y"), "IN_MEMORY": False}
    return c.run(write_yaml(c.tmp / "c.yaml", config))


def _reader_meets_a_bad_chunk(c: Ctx) -> list[str]:
    """A Zarr image chunk that fails to decode, first read in a data-loading worker process."""
    import zarr

    zarr.create_array(str(c.tmp / "x.zarr"), data=np.ones((128, 128), np.uint8), chunks=(32, 32), zarr_format=2)
    zarr.create_array(str(c.tmp / "y.zarr"), data=np.eye(128, dtype=np.uint8), chunks=(32, 32), zarr_format=2)
    for k in range(16):  # every image chunk: whichever a patch reads
        (c.tmp / "x.zarr" / f"{k // 4}.{k % 4}").write_bytes(b"not a compressed chunk")
    config = tiny_config(c.data2d, SYSTEM={"NUM_WORKERS": 1}, DATA={"VAL": {"SPLIT_TRAIN": 0.0}, "NORMALIZATION": {"TYPE": "div"}})
    config["DATA"]["TRAIN"] = {"PATH": str(c.tmp / "x.zarr"), "GT_PATH": str(c.tmp / "y.zarr"), "IN_MEMORY": False}
    return c.run(write_yaml(c.tmp / "c.yaml", config))


def _h5_without_labels(c: Ctx) -> list[str]:
    import h5py

    (c.tmp / "vols").mkdir()
    with h5py.File(c.tmp / "vols" / "a.h5", "w") as f:
        f["raw"] = np.zeros((16, 32, 32), np.uint8)
    config = tiny_config(c.data3d, "3D")
    config["DATA"]["TRAIN"] = {
        "PATH": str(c.tmp / "vols"), "GT_PATH": str(c.tmp / "vols"), "INPUT_ZARR_MULTIPLE_DATA": True,
        "INPUT_ZARR_MULTIPLE_DATA_RAW_PATH": "raw", "INPUT_ZARR_MULTIPLE_DATA_GT_PATH": "labels",
    }  # fmt: skip
    return c.run(write_yaml(c.tmp / "c.yaml", config))


# --------------------------------------------------------------------------------------------- the catalogue
@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Ctx], list[str]]
    message: tuple[str, ...]  # substrings of the error line; {config}, {data}, {results}, {tmp}, {checkpoint} filled in
    todo: str  # what the user should do (docs/troubleshooting.md says the same)
    via: str = "inproc"  # or "subprocess": a real `python -m segflow.app.cli`
    xfail: str | None = None  # a known bug outside this test's files
    trains: bool = False  # the case is expected to start training (a checkpoint write fails)
    may_change: str = ""  # a folder (relative to the case's folder) the command was asked to replace (--overwrite)


T = "train/x/img_001.tif"
M = "train/y/img_001.tif"
CASES = [
    # ----- the config file
    Case("config_file_missing", lambda c: c.check(c.tmp / "nope.yaml"), ("{tmp}/nope.yaml", "not found", "--config"), "check the path given to --config"),
    Case(
        "yaml_syntax_error",
        lambda c: c.check(c.text_config("TRAIN:\n  EPOCHS: 5\n  LR: [0.1, 0.2\nTEST:\n  ENABLE: true\n")),
        ("{config}", "line 4", "YAML syntax error"),
        "fix the YAML at (or just before) the line given",
        via="subprocess",
    ),
    Case(
        "yaml_key_given_twice",
        lambda c: c.run(c.text_config("TRAIN:\n  EPOCHS: 5\n  EPOCHS: 6\n")),
        ("{config}", "line 3", "EPOCHS is given twice"),
        "keep one of the two",
    ),
    Case("config_not_a_mapping", lambda c: c.run(c.text_config("- TRAIN\n- TEST\n")), ("{config}", "expected sections such as DATA:"), "write sections (DATA:, TRAIN:, ...) with keys under them"),
    Case("config_not_text", lambda c: c.run(c.text_config(RANDOM_BYTES)), ("{config}", "is not a text file", "saved as UTF-8"), "give the YAML file, not another file"),
    Case("config_is_a_folder", lambda c: c.check(c.tmp), ("config file {tmp}", "cannot be read (Is a directory)"), "give the YAML file itself to --config"),
    Case("unknown_key", lambda c: c.run(c.config(TRAIN={"EPOCS": 3})), ("{config}", "unknown config key TRAIN.EPOCS", "did you mean TRAIN.EPOCHS?"), "fix the spelling as suggested"),
    Case("unknown_section", lambda c: c.run(c.config(TRIAN={"EPOCHS": 3})), ("{config}", "unknown config key TRIAN.EPOCHS", "did you mean TRAIN.EPOCHS?"), "fix the section name"),
    Case("section_given_a_value", lambda c: c.run(c.text_config("TRAIN: 5\n")), ("{config}", "TRAIN is a section, not a key"), "put the keys under the section"),
    Case(
        "biapy_key_not_implemented",
        lambda c: c.run(c.config(DATA={"PREPROCESS": {"CLAHE": {"ENABLE": True}}})),
        ("{config}", "DATA.PREPROCESS.CLAHE.ENABLE", "BiaPy key that segflow does not implement", "set it to false"),
        "remove the key or switch it off",
    ),
    Case("wrong_type_text_for_number", lambda c: c.run(c.config(TRAIN={"EPOCHS": "ten"})), ("{config}", "TRAIN.EPOCHS", "valid integer", "'ten'"), "write a number"),
    Case("wrong_type_bool_for_number", lambda c: c.run(c.config(TRAIN={"EPOCHS": True})), ("{config}", "TRAIN.EPOCHS", "not true/false", "the default is 360"), "write a number"),
    Case("wrong_type_list_for_number", lambda c: c.run(c.config(TRAIN={"LR": [0.1, 0.2]})), ("{config}", "TRAIN.LR", "valid number", "[0.1, 0.2]"), "write one number"),
    Case("wrong_type_patch_size_text", lambda c: c.run(c.config(DATA={"PATCH_SIZE": "big"})), ("{config}", "DATA.PATCH_SIZE", "valid tuple", "'big'"), "write the patch as (y, x, c) or (z, y, x, c)"),
    Case("unknown_choice", lambda c: c.run(c.config(MODEL={"ARCHITECTURE": "unet3"})), ("{config}", "MODEL.ARCHITECTURE", "'unet', 'resunet', 'attention_unet', 'segresnet', 'seunet', 'multiresunet', 'resunet++', 'unetr', 'swinunetr' or 'flexible_unet'"), "use one of the values listed"),
    Case("zero_epochs", lambda c: c.run(c.config(TRAIN={"EPOCHS": 0})), ("{config}", "TRAIN.EPOCHS", "greater than 0", "(got 0)"), "set TRAIN.EPOCHS to a positive number"),
    Case("negative_epochs", lambda c: c.run(c.config(TRAIN={"EPOCHS": -3})), ("{config}", "TRAIN.EPOCHS", "greater than 0", "(got -3)"), "set TRAIN.EPOCHS to a positive number"),
    Case("zero_learning_rate", lambda c: c.run(c.config(TRAIN={"LR": 0})), ("{config}", "TRAIN.LR", "greater than 0", "(got 0)"), "set TRAIN.LR to a positive number, e.g. 0.001"),
    Case("negative_learning_rate", lambda c: c.run(c.config(TRAIN={"LR": -0.01})), ("{config}", "TRAIN.LR", "greater than 0", "(got -0.01)"), "set TRAIN.LR to a positive number"),
    Case("zero_batch_size", lambda c: c.run(c.config(TRAIN={"BATCH_SIZE": 0})), ("{config}", "TRAIN.BATCH_SIZE", "greater than 0"), "set TRAIN.BATCH_SIZE to 1 or more"),
    Case("negative_batch_size", lambda c: c.run(c.config(TRAIN={"BATCH_SIZE": -4})), ("{config}", "TRAIN.BATCH_SIZE", "greater than 0", "(got -4)"), "set TRAIN.BATCH_SIZE to 1 or more"),
    Case("zero_patch_size", lambda c: c.run(c.config(DATA={"PATCH_SIZE": "(0, 32, 1)"})), ("{config}", "PATCH_SIZE (0, 32, 1)", "every size must be positive"), "give positive sizes"),
    Case("negative_patch_size", lambda c: c.run(c.config(DATA={"PATCH_SIZE": "(-32, 32, 1)"})), ("{config}", "PATCH_SIZE (-32, 32, 1)", "every size must be positive"), "give positive sizes"),
    Case("patch_size_wrong_length", lambda c: c.run(c.config(DATA={"PATCH_SIZE": "(16, 32, 32, 1)"})), ("{config}", "DATA.PATCH_SIZE", "PROBLEM.NDIM 2D needs 3"), "give (y, x, c) in 2D, (z, y, x, c) in 3D"),
    Case(
        "patch_not_a_multiple_of_the_levels",
        lambda c: c.run(c.config(DATA={"PATCH_SIZE": "(30, 30, 1)"})),
        ("DATA.PATCH_SIZE (30, 30, 1)", "multiple of (4, 4)", "use e.g. (32, 32, 1)"),
        "use the size suggested or fewer MODEL.FEATURE_MAPS levels",
    ),
    Case(
        "patch_larger_than_image",
        lambda c: c.run(c.config(DATA={"PATCH_SIZE": "(128, 128, 1)"})),
        ("img_000.tif", "smaller than DATA.PATCH_SIZE (128, 128)", "REFLECT_TO_COMPLETE_SHAPE"),
        "use a smaller DATA.PATCH_SIZE or DATA.REFLECT_TO_COMPLETE_SHAPE: true",
    ),
    Case(
        "patch_deeper_than_stack",
        lambda c: c.run(c.config(ndim="3D", DATA={"PATCH_SIZE": "(32, 32, 32, 1)"})),
        ("img_000.tif", "DATA.PATCH_SIZE", "z: 16 < 32", "REFLECT_TO_COMPLETE_SHAPE"),
        "use a smaller DATA.PATCH_SIZE or DATA.REFLECT_TO_COMPLETE_SHAPE: true",
    ),
    Case("override_without_equals", lambda c: c.run(c.config(), "-D", "TRAIN.EPOCHS"), ("-D TRAIN.EPOCHS", "expected KEY=VALUE"), "write -D KEY=VALUE"),
    Case("override_unknown_key", lambda c: c.run(c.config(), "-D", "TRAIN.EPOCS=3"), ("-D: unknown config key TRAIN.EPOCS", "did you mean TRAIN.EPOCHS?"), "fix the key"),
    Case("override_wrong_type", lambda c: c.run(c.config(), "-D", "TRAIN.LR=fast"), ("-D: TRAIN.LR", "valid number", "'fast'"), "give a number"),
    Case(
        "nothing_to_do",
        lambda c: c.run(c.config(TRAIN={"ENABLE": False}, TEST={"ENABLE": False})),
        ("{config}", "TRAIN.ENABLE and TEST.ENABLE are both false"),
        "switch on TRAIN.ENABLE or TEST.ENABLE",
    ),
    Case("missing_command_line_option", lambda c: ["run", "--config", "c.yaml"], ("--result_dir", "--name", "segflow run --help"), "give the options listed"),
    # ----- data folders and pairing
    Case(
        "image_folder_missing",
        lambda c: c.run(c.config(DATA={"TRAIN": {"PATH": str(c.tmp / "no/such/x")}})),
        ("DATA.TRAIN.PATH", "{tmp}/no/such/x", "does not exist", "check the path in the config"),
        "fix DATA.TRAIN.PATH",
    ),
    Case("mask_folder_missing", lambda c: _damage(c, 2, lambda d: shutil.rmtree(d / "train/y")), ("DATA.TRAIN.GT_PATH", "{data}/train/y", "does not exist"), "fix DATA.TRAIN.GT_PATH"),
    Case(
        "test_folder_missing",
        lambda c: c.run(c.config(TRAIN={"ENABLE": False}, DATA={"TEST": {"PATH": str(c.tmp / "no/test")}}, PATHS={"CHECKPOINT_FILE": str(c.checkpoint)})),
        ("DATA.TEST.PATH", "{tmp}/no/test", "does not exist"),
        "fix DATA.TEST.PATH",
    ),
    Case(
        "test_folder_missing_found_before_training",
        lambda c: c.run(c.config(DATA={"TEST": {"PATH": str(c.tmp / "no/test")}}, TRAIN={"EPOCHS": 1})),
        ("DATA.TEST.PATH", "{tmp}/no/test", "does not exist"),
        "fix DATA.TEST.PATH",
    ),
    Case(
        "image_folder_not_readable",
        _unreadable_folder,
        ("{data}/train/x", "permission denied", "make it readable"),
        "fix the folder's permissions (chmod) or run as a user who can read it",
    ),
    Case(
        "image_folder_empty",
        lambda c: _damage(c, 2, lambda d: [p.unlink() for p in (d / "train/x").iterdir()]),
        ("DATA.TRAIN.PATH", "{data}/train/x", "holds no images (it is empty)"),
        "put the images there or fix the path",
    ),
    Case(
        "only_unsupported_files",
        lambda c: _damage(c, 2, lambda d: _rename_all(d / "train/x", ".bmp")),
        ("DATA.TRAIN.PATH", "{data}/train/x", "found only: .bmp", ".tif, .tiff, .png, .jpg, .jpeg, .npy"),
        "convert the images to TIFF or PNG",
    ),
    Case(
        "more_images_than_masks",
        lambda c: _damage(c, 2, lambda d: (d / "train/y/img_002.tif").unlink()),
        ("4 images in {data}/train/x", "3 masks in {data}/train/y", "without a partner, by name: img_002", "every image needs one mask"),
        "add the missing mask or remove the image",
    ),
    Case(
        "more_masks_than_images",
        lambda c: _damage(c, 2, lambda d: shutil.copy(d / M, d / "train/y/img_009.tif")),
        ("4 images in {data}/train/x", "5 masks in {data}/train/y", "img_009"),
        "remove the extra mask or add its image",
    ),
    Case(
        "names_do_not_pair",
        lambda c: _damage(c, 2, lambda d: (d / "train/y/img_003.tif").rename(d / "train/y/img_007.tif")),
        ("image img_003.tif is paired with mask img_007.tif", "rename the files"),
        "rename the files so images and masks sort in the same order",
    ),
    Case(
        "hdf5_dataset_path_missing",
        _h5_without_labels,
        ("{tmp}/vols/a.h5", "no dataset 'labels' inside (it holds: raw)", "INPUT_ZARR_MULTIPLE_DATA_RAW_PATH / _GT_PATH"),
        "set DATA.TRAIN.INPUT_ZARR_MULTIPLE_DATA_RAW_PATH / _GT_PATH to datasets the files hold",
    ),
    Case(
        "zarr_axes_order_does_not_fit",
        lambda c: _containers(c, INPUT_IMG_AXES_ORDER="CZYX"),
        ("{tmp}/x/a.zarr", "the axes order CZYX has 4 letters but the array has 3 axes (16, 32, 32)", "set DATA.TRAIN.INPUT_IMG_AXES_ORDER"),
        "set INPUT_IMG_AXES_ORDER (or INPUT_MASK_AXES_ORDER) to the order the arrays are stored in",
    ),
    Case(
        "zarr_image_and_mask_shapes_differ",
        lambda c: _containers(c, mask_shape=(16, 32, 30)),
        ("train: image {tmp}/x/a.zarr has shape (16, 32, 32) but its mask {tmp}/y/a.zarr has (16, 32, 30)",),
        "give the mask the image's size",
    ),
    Case(
        "lazy_masks_with_region_encoding",
        lambda c: _containers(c, sections={"PROBLEM": {"SEMANTIC_SEG": {"ENCODING": "region"}}}),
        ("{tmp}/y/a.zarr", "PROBLEM.SEMANTIC_SEG.ENCODING region needs every mask pixel at once", "set DATA.TRAIN.IN_MEMORY"),
        "set DATA.TRAIN.IN_MEMORY: true, or use another encoding",
    ),
    Case(
        "lazy_tiff_axes_cannot_be_told",
        lambda c: _lazy_tiffs(c, np.zeros((2, 3, 16, 32, 32), np.uint8), np.zeros((16, 32, 32), np.uint8)),
        ("{tmp}/x/a.tif: cannot tell the axes of the TIFF (tifffile reads QQQYX for (2, 3, 16, 32, 32))", "set DATA.TRAIN.INPUT_IMG_AXES_ORDER"),
        "set DATA.TRAIN.INPUT_IMG_AXES_ORDER to the file's axes, e.g. TCZYX",
    ),
    Case(
        "lazy_mask_not_integer",
        lambda c: _lazy_tiffs(c, np.zeros((16, 32, 32), np.uint8), np.full((16, 32, 32), 0.5, np.float32)),
        ("{tmp}/y/a.tif: mask holds non-integer values (float32)", "integer class ids"),
        "save the masks with integer class ids",
    ),
    Case(
        "reader_process_fails",
        _reader_meets_a_bad_chunk,
        ("{tmp}/x.zarr: cannot read [", "the file may be corrupt or truncated (in data-loading worker process 0)"),
        "restore or rewrite the damaged array (the message names it and the part that failed)",
    ),
    Case(
        "image_mask_shape_mismatch",
        lambda c: _damage(c, 2, lambda d: tifffile.imwrite(d / M, np.zeros((60, 64), np.uint8))),
        ("image img_001.tif has shape (64, 64)", "mask img_001.tif has (60, 64)", "same size"),
        "give the mask the image's size",
    ),
    # ----- image contents
    Case("2d_images_with_ndim_3d", lambda c: c.run(c.config(c.data2d, "3D")), ("img_000.tif", "a 2D image, but PROBLEM.NDIM is 3D", "set PROBLEM.NDIM: 2D"), "set PROBLEM.NDIM: 2D or give 3D stacks"),
    Case(
        "3d_stack_with_ndim_2d",
        lambda c: _damage(c, 2, lambda d: tifffile.imwrite(d / T, np.zeros((5, 64, 64), np.uint8), metadata={"axes": "ZYX"})),
        ("{data}/" + T, "a 3D stack, but PROBLEM.NDIM is 2D", "set PROBLEM.NDIM: 3D"),
        "set PROBLEM.NDIM: 3D or give 2D images",
    ),
    Case(
        "channels_do_not_match_patch_size",
        lambda c: _damage(c, 2, _rgb_images),
        ("img_000.tif", "3 channel(s)", "DATA.PATCH_SIZE (32, 32, 1) ends in 1", "set the last value of DATA.PATCH_SIZE to 3"),
        "make the last value of DATA.PATCH_SIZE the images' channel count",
    ),
    Case(
        "mask_values_outside_classes",
        lambda c: _damage(c, 2, lambda d: _rewrite(d / M, _set_pixel(2, np.uint8))),
        ("{data}/" + M, "mask values 2", "MODEL.N_CLASSES=2", "raise MODEL.N_CLASSES"),
        "fix the mask or raise MODEL.N_CLASSES",
    ),
    Case(
        "test_mask_values_outside_classes",
        lambda c: _damage(c, 2, lambda d: _rewrite(d / "test/y/img_000.tif", _set_pixel(3, np.uint8))),
        ("{data}/test/y/img_000.tif", "mask values 3", "MODEL.N_CLASSES=2"),
        "fix the test mask or raise MODEL.N_CLASSES; found before training starts",
    ),
    Case(
        "mask_0_255",
        lambda c: _damage(c, 2, lambda d: _rewrite(d / M, lambda a: a * 255)),
        ("{data}/" + M, "mask values 255", "divide it by 255"),
        "divide the masks by 255",
    ),
    Case(
        "float_mask",
        lambda c: _damage(c, 2, lambda d: _rewrite(d / M, _set_pixel(0.5, np.float32))),
        ("{data}/" + M, "non-integer values (float32)", "integer class ids"),
        "save the masks as integer images",
    ),
    Case(
        "mask_with_colours",
        lambda c: _damage(c, 2, lambda d: _rewrite(d / M, lambda a: np.stack([a, 1 - a, a], -1), photometric="rgb")),
        ("{data}/" + M, "mask has 3 channels", "one class id per pixel"),
        "save the masks as one-channel class-id images",
    ),
    Case(
        "nan_image",
        lambda c: _damage(c, 2, lambda d: _rewrite(d / T, _set_pixel(np.nan, np.float32))),
        ("{data}/" + T, "NaN or infinite values"),
        "fix or remove the image",
    ),
    Case(
        "mask_negative_int8",
        lambda c: _damage(c, 2, lambda d: _rewrite(d / M, _set_pixel(-1, np.int8))),
        ("{data}/" + M, "mask values -1 are negative", "IGNORE_CLASS_ID"),
        "fix the mask, or give ignored pixels an id >= 0 and set IGNORE_CLASS_ID to it",
    ),
    Case(
        "mask_negative_int32_with_ignore_id",
        lambda c: _damage(c, 2, lambda d: _rewrite(d / M, _set_pixel(-3, np.int32)), PROBLEM={"SEMANTIC_SEG": {"IGNORE_CLASS_ID": 255}}),
        ("{data}/" + M, "mask values -3 are negative"),
        "fix the mask",
    ),
    Case(
        "mask_uint32_huge_value",
        lambda c: _damage(c, 2, lambda d: _rewrite(d / M, _set_pixel(2**32 - 1, np.uint32))),
        ("{data}/" + M, "mask values 4294967295 are outside the classes 0..1"),
        "fix the mask",
    ),
    Case(
        "mask_with_nan",
        lambda c: _damage(c, 2, lambda d: _rewrite(d / M, _set_pixel(np.nan, np.float32))),
        ("{data}/" + M, "non-integer values (float32)"),
        "save the masks as integer images",
    ),
    Case(
        "uint32_image_beyond_16_bits",
        lambda c: _damage(c, 2, lambda d: _rewrite(d / T, _set_pixel(4_000_000_000, np.uint32))),
        ("{data}/" + T, "uint32 image with values", "4000000000", "DATA.NORMALIZATION.TYPE to scale_range or zero_mean_unit_variance"),
        "set DATA.NORMALIZATION.TYPE: scale_range (or zero_mean_unit_variance), or convert the images",
    ),
    Case(
        "int64_image_negative_values",
        lambda c: _damage(c, 2, lambda d: _rewrite(d / T, _set_pixel(-7, np.int64))),
        ("{data}/" + T, "int64 image with values -7..", "DATA.NORMALIZATION.TYPE"),
        "set DATA.NORMALIZATION.TYPE: scale_range (or zero_mean_unit_variance), or convert the images",
    ),
    Case(
        "complex_image",
        lambda c: _damage(c, 2, lambda d: _rewrite(d / T, lambda a: a.astype(np.complex64))),
        ("{data}/" + T, "pixel type complex64 is not supported"),
        "save the images as integer or float images",
    ),
    Case(
        "corrupt_tiff",
        lambda c: _damage(c, 2, lambda d: (d / T).write_bytes(RANDOM_BYTES)),
        ("{data}/" + T, "cannot be read as an image", "corrupt or truncated"),
        "replace the file",
    ),
    Case(
        "truncated_tiff",
        lambda c: _damage(c, 2, lambda d: _truncate(d / T)),
        ("{data}/" + T, "cannot be read as an image", "corrupt or truncated"),
        "copy the file again",
    ),
    Case(
        "truncated_png",
        lambda c: _damage(c, 2, lambda d: _truncate(_to_png(d, T))),
        ("{data}/train/x/img_001.png", "cannot be read as an image", "corrupt or truncated"),
        "copy the file again",
    ),
    Case(
        "zero_byte_file",
        lambda c: _damage(c, 2, lambda d: (d / M).write_bytes(b"")),
        ("{data}/" + M, "the file is empty (0 bytes)", "replace it"),
        "replace the file",
        via="subprocess",
    ),
    Case("unsupported_extension", _unsupported_extension, ("{tmp}/scan.bmp", "unsupported file type '.bmp'", ".tif, .tiff, .png"), "convert the image to TIFF or PNG"),
    Case(
        "predict_image_missing",
        lambda c: ["predict", str(c.checkpoint), str(c.tmp / "missing.tif"), str(c.tmp / "out.tif")],
        ("{tmp}/missing.tif", "no such image file"),
        "check the image path",
    ),
    Case(
        "predict_image_is_a_folder",
        _predict_image_folder,
        ("IMAGE {tmp}/images is a folder", "give one image file", "--input-dir {tmp}/images --output-dir DIR"),
        "give one image, or the folder to --input-dir",
    ),
    Case("predict_image_not_readable", _predict_unreadable_image, ("{tmp}/img.tif", "permission denied", "make it readable"), "fix the file's permissions (chmod a+r)"),
    Case("predict_image_without_pixels", lambda c: _predict_array(c, "empty.npy", np.zeros((0, 64), np.uint8)), ("{tmp}/empty.npy", "no pixels"), "replace the file"),
    Case(
        "predict_nan_image",
        lambda c: _predict_array(c, "nan.tif", np.where(np.eye(64) > 0, np.nan, 0.5).astype(np.float32)),
        ("{tmp}/nan.tif", "holds NaN or infinite values"),
        "replace the NaN or infinite values",
    ),
    Case(
        "predict_3d_stack_with_2d_model",
        lambda c: _predict_array(c, "stack.tif", np.zeros((5, 64, 64), np.uint8), metadata={"axes": "ZYX"}),
        ("{tmp}/stack.tif", "a 3D stack", "this model is 2D with 1 channel; give a (y, x) image"),
        "give the model images of the kind it was trained on",
    ),
    Case(
        "predict_rgb_with_1_channel_model",
        lambda c: _predict_array(c, "rgb.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb"),
        ("{tmp}/rgb.tif", "does not fit: this model is 2D with 1 channel"),
        "give images with the model's channel count",
    ),
    Case(
        "predict_image_with_5_channels",
        lambda c: _predict_array(c, "five.tif", np.zeros((64, 64, 5), np.uint8)),
        ("{tmp}/five.tif", "it has 5 channels", "this model is 2D with 1 channel"),
        "give images with the model's channel count",
    ),
    Case(
        "single_image_validation_smaller_than_patch",
        _single_training_image,
        ("{data}/train/x/img_000.tif", "DATA.VAL.SPLIT_TRAIN=0.25", "16 to validation (16, 64)", "smaller than DATA.PATCH_SIZE (32, 32)", "DATA.VAL.FROM_TRAIN: false"),
        "raise DATA.VAL.SPLIT_TRAIN as suggested, give validation images, or DATA.REFLECT_TO_COMPLETE_SHAPE: true",
    ),
    Case(
        "3d_stack_of_mixed_sizes",
        _stack_of_mixed_sizes,
        ("TEST.ANALIZE_2D_IMGS_AS_3D_STACK", "img_000.tif is (64, 64) and img_001.tif is (48, 64)", "one size"),
        "give test images of one size or switch TEST.ANALIZE_2D_IMGS_AS_3D_STACK off",
    ),
    # ----- checkpoints
    Case(
        "checkpoint_missing",
        lambda c: c.run(c.config(TRAIN={"ENABLE": False}), run_id="7"),
        ("{results}/job/checkpoints/job_7-checkpoint-best.pth", "not found", "PATHS.CHECKPOINT_FILE"),
        "train first, or give PATHS.CHECKPOINT_FILE",
    ),
    Case("checkpoint_not_a_checkpoint", _text_checkpoint, ("{tmp}/notes.pth", "cannot be read", "not a checkpoint"), "give a checkpoint segflow wrote"),
    Case("checkpoint_truncated", _truncated_checkpoint, ("{tmp}/cut.pth", "truncated, corrupt or not a checkpoint"), "copy the checkpoint again"),
    Case("checkpoint_of_another_program", _foreign_checkpoint, ("{tmp}/other.pth", "not a segflow checkpoint"), "give a checkpoint segflow wrote"),
    Case(
        "checkpoint_other_architecture",
        _checkpoint_for(ARCHITECTURE="resunet"),
        ("checkpoint {checkpoint}", "do not fit MODEL.* of this config"),
        "set MODEL.* as when the checkpoint was trained, or MODEL.LOAD_CHECKPOINT: false",
    ),
    Case(
        "checkpoint_other_feature_maps",
        _checkpoint_for(FEATURE_MAPS=[8, 16, 32]),
        ("checkpoint {checkpoint}", "do not fit MODEL.* of this config", "MODEL.FEATURE_MAPS=[4, 8, 16] in the checkpoint"),
        "set MODEL.FEATURE_MAPS as when the checkpoint was trained (another MODEL.N_CLASSES is fine: the output layer starts anew)",
    ),
    Case(
        "checkpoint_other_n_classes_test_only",
        _test_only_with(N_CLASSES=3),
        ("{checkpoint}", "MODEL.N_CLASSES"),
        "set MODEL.N_CLASSES as when the checkpoint was trained",
    ),
    # ----- the result folder and earlier results
    Case(
        "resume_without_checkpoint",
        lambda c: c.run(c.config(), "--resume"),
        ("--resume: run job_2 has no checkpoint in {results}/job/checkpoints", "drop --resume"),
        "drop --resume to start the run, or give the --run_id of the run to continue",
    ),
    Case(
        "bad_data_keeps_previous_config_copy",
        _config_copy_of_previous_run,
        ("image img_001.tif has shape (64, 64)", "mask img_001.tif has (60, 64)"),
        "fix the data; the previous run's config copy must survive",
    ),
    Case("predict_corrupt_image_keeps_output", _predict_keeps_output, ("{tmp}/new.tif", "corrupt or truncated"), "replace the image; the old output is kept"),
    Case(
        "predict_output_is_a_folder",
        _predict_into_folder,
        ("OUTPUT {tmp}/preds is a folder", "give a file name such as {tmp}/preds/img_000_pred.tif"),
        "name the output file",
    ),
    Case(
        "predict_output_below_a_file",
        lambda c: _predict(c, c.data2d / "test/x/img_000.tif", _a_file(c, "notes.txt") / "out.tif"),
        ("OUTPUT {tmp}/notes.txt/out.tif", "{tmp}/notes.txt is a file, not a folder"),
        "write the output in a folder",
    ),
    Case(
        "predict_output_dir_is_a_file",
        lambda c: _predict(c, "--input-dir", c.data2d / "test/x", "--output-dir", _a_file(c, "notes.txt")),
        ("--output-dir {tmp}/notes.txt is a file, not a folder",),
        "give a folder to --output-dir",
    ),
    Case(
        "predict_output_dir_below_a_file",
        lambda c: _predict(c, "--input-dir", c.data2d / "test/x", "--output-dir", _a_file(c, "notes.txt") / "preds"),
        ("--output-dir {tmp}/notes.txt/preds", "{tmp}/notes.txt is a file, not a folder"),
        "give a folder to --output-dir",
    ),
    Case(
        "predict_input_dir_is_a_file",
        lambda c: _predict(c, "--input-dir", _a_file(c, "notes.txt"), "--output-dir", c.tmp / "preds"),
        ("--input-dir: {tmp}/notes.txt is a file, not a folder",),
        "give a folder of images to --input-dir",
    ),
    Case(
        "predict_output_jpeg",
        lambda c: _predict(c, c.data2d / "test/x/img_000.tif", c.tmp / "out.jpg"),
        ("OUTPUT {tmp}/out.jpg", "JPEG is lossy", "name it with .tif, .tiff, .png, .npy"),
        "name the output .tif, .png or .npy",
    ),
    Case(
        "predict_probabilities_as_png",
        lambda c: _predict(c, c.data2d / "test/x/img_000.tif", c.tmp / "out.png", "--probabilities"),
        ("OUTPUT {tmp}/out.png", "PNG holds integers, not floats", "name it with .tif, .tiff, .npy"),
        "name the output .tif or .npy",
    ),
    Case("predict_output_is_the_input", _predict_onto_input, ("OUTPUT {tmp}/img.tif is the input image",), "write the prediction elsewhere"),
    Case(
        "predict_two_inputs_one_output",
        _predict_two_inputs_one_output,
        ("a.npy and a.tif would both be written to {tmp}/preds/a.tif", "rename one of them"),
        "rename one of the two images",
    ),
    Case("name_with_slash", lambda c: c.run(c.config(), "--name", "a/b"), ("--name a/b", "must not contain '/'"), "use a plain name"),
    Case("name_with_backslash", lambda c: _named(c, name="a\\b"), ("--name a\\b", "must not contain '/' or '\\'"), "use a plain name"),
    Case("name_dot_dot", lambda c: _named(c, name=".."), ("--name ..", "is not a folder name"), "use a plain name"),
    Case("name_dot", lambda c: _named(c, name="."), ("--name .:", "is not a folder name"), "use a plain name"),
    Case("name_empty", lambda c: _named(c, name=""), ("--name '': is empty",), "give a name"),
    Case("name_with_nul", lambda c: _named(c, name="a\x00b"), ("--name 'a\\x00b'", "control character"), "use a plain name"),
    Case("name_leading_dash", lambda c: _named(c, name="-x"), ("--name -x", "starts with '-'"), "use a name that starts with a letter or digit"),
    Case("name_too_long", lambda c: _named(c, name="n" * 240), ("--name and --run_id are too long", "255 bytes"), "use a shorter --name or --run_id"),
    Case("run_id_with_path", lambda c: _named(c, run_id="../x"), ("--run_id ../x", "must not contain '/'"), "use a plain run number"),
    Case("run_id_with_space", lambda c: _named(c, run_id=" 2"), ("--run_id ' 2'", "starts or ends with a space"), "drop the space"),
    Case(
        "result_dir_is_a_file",
        lambda c: _named(c, result_dir=_a_file(c, "notes.txt")),
        ("--result_dir {tmp}/notes.txt is a file, not a folder",),
        "choose a folder for --result_dir",
    ),
    Case(
        "result_dir_below_a_file",
        lambda c: _named(c, result_dir=_a_file(c, "notes.txt") / "results"),
        ("--result_dir {tmp}/notes.txt/results", "{tmp}/notes.txt is a file"),
        "move the file away or choose another --result_dir",
    ),
    Case(
        "job_folder_is_a_file",
        lambda c: _named(c, name="notes.txt", result_dir=_a_file(c, "results/notes.txt").parent),
        ("--result_dir {results}", "{results}/notes.txt is a file"),
        "move the file away or choose another --name",
    ),
    Case(
        "result_dir_empty",
        lambda c: ["run", "--config", str(c.config()), "--result_dir=", "--name=job"],
        ("--result_dir is empty",),
        "give the folder for the results",
    ),
    Case(
        "result_dir_name_too_long",
        lambda c: _named(c, result_dir=c.tmp / ("r" * 300)),
        ("--result_dir {tmp}/rrrr", "cannot be made", "use shorter folder names"),
        "use shorter folder names",
    ),
    Case(
        "result_dir_with_nul",
        lambda c: _named(c, result_dir=Path(f"{c.tmp}/a\x00b")),
        ("--result_dir '{tmp}/a\\x00b' holds a NUL character",),
        "give a real folder name",
    ),
    Case("name_not_utf8", lambda c: _named(c, name="job\udcff"), ("--name 'job\\udcff'", "is not UTF-8 text"), "use a plain name"),
    Case(
        "result_dir_not_utf8",
        lambda c: _named(c, result_dir=c.tmp / "r\udcff"),
        ("--result_dir '{tmp}/r\\udcff'", "is not UTF-8 text"),
        "choose a folder whose path is UTF-8 text",
    ),
    Case(
        "result_dir_symlink_loop",
        _symlink_loop,
        ("--result_dir {tmp}/loop/results", "fix the symbolic link loop, or give a real folder"),
        "fix or remove the symbolic link",
    ),
    Case(
        "checkpoints_folder_is_a_file",
        _checkpoints_folder_is_a_file,
        ("--result_dir {results}", "{results}/job/checkpoints is a file, where a folder is needed"),
        "move the file away",
    ),
    Case(
        "config_copy_target_is_a_folder",
        _config_copy_target_is_a_folder,
        ("{results}/job/config_files/job_2.yaml is a folder", "--run_id"),
        "move the folder away or choose another --run_id",
    ),
    Case(
        "overwrite_and_resume",
        lambda c: c.run(c.config(), "--overwrite", "--resume", run_id="1"),
        ("--overwrite and --resume contradict each other", "give one of them"),
        "drop one of the two options",
    ),
    Case(
        "resume_with_other_feature_maps",
        _resume_with("MODEL.FEATURE_MAPS=[8, 16, 32]"),
        ("run job_1 cannot resume", "MODEL.FEATURE_MAPS=[4, 8, 16] in the checkpoint", "--overwrite, or a new --run_id"),
        "set MODEL.* back, or train afresh with --overwrite or a new --run_id; the run's files are kept",
    ),
    Case(
        "resume_with_other_architecture",
        _resume_with("MODEL.ARCHITECTURE=resunet"),
        ("run job_1 cannot resume", "MODEL.ARCHITECTURE=unet in the checkpoint", "--overwrite"),
        "set MODEL.ARCHITECTURE back, or train afresh with --overwrite or a new --run_id",
    ),
    Case(
        "resume_with_other_optimizer",
        _resume_with("TRAIN.OPTIMIZER=SGD"),
        ("TRAIN.OPTIMIZER 'SGD'", "run job_1 was started with 'ADAMW'", "--overwrite or a new --run_id"),
        "set TRAIN.OPTIMIZER back, or train afresh with --overwrite or a new --run_id",
    ),
    Case(
        "result_dir_read_only",
        _read_only_result_dir,
        ("--result_dir {results}", "{results}/job is not writable", "choose a folder you can write to"),
        "choose another --result_dir",
    ),
    Case(
        "read_only_file_system",
        _failing_writes(errno.EROFS),
        ("{results}/job/config_files/job_2.yaml", "read-only", "choose --result_dir on a writable disk"),
        "choose --result_dir on a writable disk",
    ),
    Case(
        "disk_full",
        _failing_writes(errno.ENOSPC),
        ("{results}/job/config_files/job_2.yaml", "no space left", "free some space, or choose --result_dir on another disk"),
        "free space or choose another --result_dir",
    ),
    Case(
        "disk_full_during_checkpoint",
        _disk_full_at_checkpoint,
        ("{results}/job/checkpoints/job_3-checkpoint-", "no space left", "--result_dir"),
        "free space; the other runs' checkpoints are kept",
        trains=True,
    ),
    # ----- devices and memory
    Case("gpu_not_present", _gpu_not_present, ("--gpu 3", "no CUDA GPU", "--gpu cpu"), "choose an existing GPU or --gpu cpu", via="subprocess"),
    Case(
        "export_unknown_format",
        lambda c: ["export", str(c.checkpoint), "--format", "bmz"],
        ("--format bmz: not a format segflow writes", "onnx, torchscript"),
        "choose --format onnx, torchscript or bioimageio",
    ),
    Case(
        "export_opset_unsupported",
        lambda c: ["export", str(c.checkpoint), "--format", "onnx", "--opset", "30"],
        ("--opset 30: torch", "writes ONNX opsets 11 to 20"),
        "give --opset between 11 and 20 (17, the default, runs on onnxruntime 1.16 and later)",
    ),
    Case(
        "bmz_source_not_local",
        lambda c: c.run(c.config(MODEL={"SOURCE": "bmz", "BMZ": {"SOURCE_MODEL_ID": "affable-shark"}})),
        ("MODEL.BMZ.SOURCE_MODEL_ID 'affable-shark': no such file or folder", "segflow downloads nothing"),
        "download the package's .zip from bioimage.io and give its path",
    ),
    Case(
        "bmz_source_without_id",
        lambda c: c.run(c.config(MODEL={"SOURCE": "bmz"})),
        ("MODEL.SOURCE bmz: give the package in MODEL.BMZ.SOURCE_MODEL_ID",),
        "give the package's .zip or folder in MODEL.BMZ.SOURCE_MODEL_ID",
    ),
    Case(
        "checkpoint_optimizer_other",
        lambda c: c.run(c.config(MODEL={"LOAD_CHECKPOINT": True, "LOAD_CHECKPOINT_ONLY_WEIGHTS": False}, TRAIN={"OPTIMIZER": "SGD"},
                                 PATHS={"CHECKPOINT_FILE": str(c.checkpoint)})),
        ("MODEL.LOAD_CHECKPOINT_ONLY_WEIGHTS false: checkpoint {checkpoint} holds the state of a ADAMW optimizer", "set TRAIN.OPTIMIZER ADAMW"),
        "set TRAIN.OPTIMIZER as when the checkpoint was trained, or MODEL.LOAD_CHECKPOINT_ONLY_WEIGHTS: true",
    ),
    Case(
        "export_package_without_image",
        lambda c: ["export", str(c.checkpoint), "--format", "bioimageio", "--out", str(c.tmp / "m.zip")],
        ("--format bioimageio needs --image", "test input and cover"),
        "give --image: a real image the package carries as its test input",
    ),
    Case(
        "package_of_another_spec",
        lambda c: _package(c, {"format_version": "0.4.10", "type": "model", "config": {"segflow": {}}}),
        ("{tmp}/pkg.zip: a BioImage Model Zoo package of spec 0.4.10", "segflow reads spec 0.5 packages"),
        "convert it to spec 0.5 (bioimageio update-format) or export the model again",
    ),
    Case(
        "package_not_from_segflow",
        lambda c: _testing_package(c, {"format_version": "0.5.4", "type": "model", "weights": {"onnx": {"source": "weights.pt"}}}),
        ("{tmp}/pkg.zip: a BioImage Model Zoo package that segflow did not write", "segflow predict runs it on image files"),
        "predict with it through segflow predict PACKAGE IMAGE OUTPUT; only segflow's own packages are tested or fine-tuned",
    ),
    Case(
        "package_weights_segflow_cannot_run",
        lambda c: _package(c, {"format_version": "0.5.4", "type": "model", "weights": {"tensorflow_saved_model_bundle": {"source": "weights.pt"}}}),
        ("{tmp}/pkg.zip: its weights are tensorflow_saved_model_bundle, which segflow cannot run", "torchscript, pytorch_state_dict, onnx"),
        "export the model again as torchscript, pytorch_state_dict or onnx weights",
    ),
    Case(
        "package_without_state_dict",
        lambda c: _package(c, {"format_version": "0.5.4", "type": "model", "config": {"segflow": {"config": {}}},
                               "weights": {"onnx": {"source": "weights.pt"}}}),
        ("{tmp}/pkg.zip: the package has no pytorch_state_dict weights", "export it again with segflow"),
        "export the model again with segflow export --format bioimageio",
    ),
    Case(
        "bmz_export_license_unknown",
        lambda c: c.run(c.config(MODEL={"BMZ": {"EXPORT": {"ENABLE": True, "LICENSE": "not-a-license"}}})),
        ("MODEL.BMZ.EXPORT.LICENSE 'not-a-license': not what the BioImage Model Zoo takes", "CC-BY-4.0"),
        "give an SPDX license id (CC-BY-4.0, MIT, ...)",
    ),
    Case(
        "bmz_export_documentation_missing",
        lambda c: c.run(c.config(MODEL={"BMZ": {"EXPORT": {"ENABLE": True, "DOCUMENTATION": str(c.tmp / "nope.md")}}})),
        ("MODEL.BMZ.EXPORT.DOCUMENTATION {tmp}/nope.md: no such file",),
        "give the Markdown file's path, or '' for segflow's own",
    ),
    Case(
        "export_image_does_not_fit",
        lambda c: ["export", str(c.checkpoint), "--format", "onnx", "--out", str(c.tmp / "m.onnx"), "--image", str(_rgb_image(c))],
        ("{tmp}/rgb.tif: image of shape", "this model is 2D with 1 channel"),
        "give --image an image the model takes (its channels and dimensions)",
    ),
    Case("gpu_not_a_number", lambda c: c.run(c.config(), "--gpu", "first"), ("--gpu first", "expected GPU numbers"), "give GPU numbers or cpu"),
    Case(
        "out_of_gpu_memory",
        _out_of_memory(gpu=True),
        ("{config}", "out of GPU memory", "Tried to allocate 8.00 GiB", "smaller TRAIN.BATCH_SIZE or DATA.PATCH_SIZE"),
        "lower TRAIN.BATCH_SIZE or DATA.PATCH_SIZE",
    ),
    Case(
        "out_of_ram",
        _out_of_memory(gpu=False),
        ("{config}", "out of memory (RAM)", "smaller TRAIN.BATCH_SIZE or DATA.PATCH_SIZE"),
        "lower TRAIN.BATCH_SIZE or DATA.PATCH_SIZE",
    ),
    Case(
        "volume_output_format_unknown",
        lambda c: _predict(c, _volume(c)[2], c.tmp / "out.tif"),
        ("OUTPUT {tmp}/out.tif: name it .zarr, .ome.zarr, .h5 or .hdf5 (the output's format), or give --output-format",),
        "name the output .zarr, .ome.zarr or .h5",
    ),
    Case(
        "volume_output_format_and_name_differ",
        lambda c: _volume(c, "--output-format", "h5"),
        ("OUTPUT {tmp}/out.zarr: --output-format h5 is written to a name ending .h5 or .hdf5; rename the output",),
        "name the output with the format's suffix",
    ),
    Case(
        "volume_hdf5_on_a_cluster",
        lambda c: _predict(c, _volume(c)[2], c.tmp / "out.h5", "--scheduler", "tcp://127.0.0.1:9"),
        ("--scheduler tcp://127.0.0.1:9: an h5 output is written by one process; write Zarr or OME-Zarr on a cluster",),
        "write .zarr or .ome.zarr on a cluster, or HDF5 without --scheduler",
    ),
    Case(
        "volume_filter_halo_larger_than_chunk",
        lambda c: _volume(c, "--chunk", "32,32", "--median-filter", "xy:81"),
        ("--chunk 32,32: the median filters read 40,40 voxels beyond each chunk, more than a chunk", "give bigger chunks"),
        "give bigger --chunk sizes or smaller filters",
    ),
    Case(
        "volume_median_filter_unreadable",
        lambda c: _volume(c, "--median-filter", "q5"),
        ("--median-filter q5: give AXES:SIZE, AXES one of z, yz, xy, zx and SIZE a positive whole number (e.g. z:5)",),
        "write the filter as AXES:SIZE, e.g. z:5",
    ),
    Case(
        "volume_disk_full_part_way",
        _volume_disk_fills,
        ("{tmp}/out.zarr: the disk is full (No space left on device) after 2 of 9 chunks were written and recorded",
         "run the same command again: it predicts only the other chunks"),
        "free space and run the same command again: the recorded chunks are kept",
    ),
    Case(
        "more_processes_than_patches",
        lambda c: c.run(c.config(SYSTEM={"NUM_PROCESSES": 99})),
        ("99 training processes but only 12 patches an epoch", "use fewer processes"),
        "use fewer processes or more training data",
    ),
    Case(
        "nodes_without_master_address",
        _no_master_address,
        ("SYSTEM.NUM_NODES 2: set MASTER_ADDR, MASTER_PORT, NODE_RANK on every machine", "or launch with torchrun --nnodes or srun"),
        "set MASTER_ADDR, MASTER_PORT and NODE_RANK on each machine, or use torchrun or srun",
    ),
    Case(
        "rendezvous_timeout",
        lambda c: _two_machines(c, port_in_use=False),
        ("SYSTEM.DIST_TIMEOUT: only 1 of 2", "met at 127.0.0.1:{port} within", "start the same command on every machine"),
        "start the command on every machine, check the address and port, or raise SYSTEM.DIST_TIMEOUT",
        via="subprocess",
    ),
    Case(
        "master_port_in_use",
        lambda c: _two_machines(c, port_in_use=True),
        ("MASTER_PORT {port}: the port is in use on this machine", "set MASTER_PORT to a free port"),
        "set MASTER_PORT to a free port (the same on every machine)",
        via="subprocess",
    ),
    Case(
        "test_volume_without_mask",
        _test_volumes_without_a_mask,
        ("DATA.TEST.GT_PATH {tmp}/vy: no mask named like b.zarr", "or set DATA.TEST.LOAD_GT false"),
        "give one mask per test volume, named like it",
    ),
    Case(
        "volume_chunk_thinner_than_window",
        lambda c: _volume(c, "--chunk", "8,64"),
        ("--chunk 8,64: smaller than the model's window (32, 32) along an axis", "give chunks of at least the window"),
        "give --chunk sizes of at least the window (DATA.PATCH_SIZE of the model)",
    ),
    Case(
        "volume_output_from_another_run",
        _volume_predicted_before,
        ("{tmp}/out.zarr: was predicted with chunk [64, 64] there, [32, 80] now", "give --overwrite"),
        "re-run the command that made it, write elsewhere, or give --overwrite",
    ),
    Case(
        "volume_scheduler_does_not_answer",
        lambda c: _volume(c, "--scheduler", "tcp://127.0.0.1:9"),
        ("--scheduler tcp://127.0.0.1:9: no dask scheduler answers there", "leave --scheduler out"),
        "start the dask scheduler (dask scheduler, or dask-jobqueue on SLURM) or fix the address",
    ),
    Case("out_of_memory_predicting", _out_of_memory_predict, ("{checkpoint}", "out of GPU memory", "--batch-size 1", "--gpu cpu"), "use a smaller --batch-size"),
]
IDS = [case.id for case in CASES]
assert len(set(IDS)) == len(IDS) >= 30


# --------------------------------------------------------------------------------------------- running a case
@pytest.fixture(scope="module")
def prior(tmp_path_factory: pytest.TempPathFactory, data2d: Path) -> Path:
    """A previous, successful run (job, run 1): its files must survive every later error."""
    root = tmp_path_factory.mktemp("prior")
    config = write_yaml(root / "prior.yaml", tiny_config(data2d, TRAIN={"EPOCHS": 1}, TEST={"ENABLE": False}))
    assert main(["run", "--config", str(config), "--result_dir", str(root / "results"), "--name", "job"]) == 0
    assert (root / "results/job/checkpoints/job_1-checkpoint-best.pth").is_file()
    return root / "results"


def _snapshot(folder: Path) -> dict[Path, bytes]:
    # A file made unreadable on purpose is compared by its (unreadable) state; its bytes cannot be read.
    return {p: p.read_bytes() if os.access(p, os.R_OK) else b"<unreadable>" for p in folder.rglob("*") if p.is_file()}


def _segflow_process(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "segflow.app.cli", *args], cwd=cwd, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory, data2d: Path, data3d: Path, prior: Path) -> dict:
    """The subprocess cases, all started at once (each process spends seconds importing torch)."""
    out = {}
    for case in CASES:
        if case.via == "subprocess":
            tmp = tmp_path_factory.mktemp(case.id)
            ctx = Ctx(tmp, None, data2d, data3d, prior)
            args = case.build(ctx)
            out[case.id] = (ctx, _snapshot(tmp), _segflow_process(args, tmp, ctx.env))
    yield out
    for _, _, proc in out.values():  # cases deselected with -k: their processes are not needed
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _params() -> list:
    # Subprocess cases last: they start together with the first case and import torch while the others run.
    order = sorted(CASES, key=lambda case: case.via == "subprocess")
    return [pytest.param(case, id=case.id, marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []) for case in order]


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, launched: dict, monkeypatch, capsys, tmp_path: Path, data2d: Path, data3d: Path, prior: Path) -> None:
    if case.via == "subprocess":
        if case.id == "gpu_not_present":
            import torch

            if torch.cuda.device_count() > 3:
                pytest.skip("this machine has a GPU 3")
        ctx, before, proc = launched[case.id]
        out, err = proc.communicate(timeout=300)
        code = proc.returncode
    else:
        ctx = Ctx(tmp_path, monkeypatch, data2d, data3d, prior)
        args = case.build(ctx)
        before = _snapshot(tmp_path)
        try:
            code = main(args)
        finally:
            for undo in ctx.cleanup:
                undo()
        captured = capsys.readouterr()
        out, err = captured.out, captured.err
    line = _one_error_line(case, code, out, err)
    for needle in case.message:
        needle = needle.format(**ctx.vars)
        assert needle in line, f"{needle!r} not in {line!r}"
    # Nothing that existed before is damaged: previous checkpoints, config copies, logs, data, outputs.
    after = _snapshot(ctx.tmp)
    changed = sorted(str(p.relative_to(ctx.tmp)) for p, data in before.items() if after.get(p) != data)
    if case.may_change:
        changed = [p for p in changed if not p.startswith(case.may_change + "/")]
    assert not changed, f"changed or removed by the failed command: {changed}"
    new_checkpoints = [p for p in after if p not in before and p.suffix == ".pth"]
    assert not new_checkpoints, new_checkpoints


def _one_error_line(case: Case, code: int, out: str, err: str) -> str:
    """Exit 2, one ``segflow: error:`` line as the last line of stderr, nothing else there, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("segflow: error: ")]
    assert len(errors) == 1, err
    assert lines[-1] == errors[0], err
    if not case.trains:  # training may draw a progress bar before it fails
        assert lines == errors, err
    return errors[0]


# --------------------------------------------------------------------------------------------- the table in the docs
def test_every_case_is_documented() -> None:
    """docs/troubleshooting.md has one table row per case id, with the message and what to do."""
    text = DOCS.read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")}
    missing = [case_id for case_id in IDS if case_id not in rows]
    assert not missing, f"not in {DOCS.name}: {missing}"
    stale = sorted(set(rows) - set(IDS))
    assert not stale, f"{DOCS.name} lists cases the catalogue does not have: {stale}"
    for case in CASES:
        cells = [cell.strip() for cell in rows[case.id].strip().strip("|").split("|")]
        assert len(cells) == 4 and all(cells), rows[case.id]  # case, input, message, what to do
        shown = cells[2]
        assert "segflow: error:" in shown or case.xfail, rows[case.id]
        for needle in case.message:  # the documented message is the real one (paths shown as placeholders)
            if "{" not in needle:
                assert needle.replace("|", "\\|") in shown or case.xfail, f"{case.id}: {needle!r} not in the documented message"
