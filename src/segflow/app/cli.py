"""The ``segflow`` command: run, check, init, demo, predict, slurm, export, build-lmdb, reference."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
import typing
from pathlib import Path

from segflow import __version__
from segflow.errors import SegflowError


class _UsageError(Exception):
    """A command-line mistake argparse found (missing or unknown option, bad choice)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake as one ``segflow: error:`` line, like every other error."""

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="segflow", description="Train and apply 2D/3D semantic segmentation models from one YAML file.")
    p.add_argument("--version", action="version", version=f"segflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and/or test as the config's TRAIN.ENABLE / TEST.ENABLE say")
    run.add_argument("--config", required=True, help="YAML config file (BiaPy key names)")
    run.add_argument("--result_dir", required=True, help="folder under which <name>/ is created")
    run.add_argument("--name", required=True, help="job name: results go to <result_dir>/<name>/")
    run.add_argument("--run_id", default="1", help="run number; runs with different ids never overwrite each other (default 1)")
    run.add_argument("--gpu", default=None, help="GPU ids such as 0 or 0,1, or 'cpu' (default: SYSTEM.DEVICE)")
    run.add_argument("-D", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. -D TRAIN.EPOCHS=5 (repeatable)")
    run.add_argument("--overwrite", action="store_true", help="train this run afresh, replacing its checkpoints")
    run.add_argument("--resume", action="store_true", help="continue this run's training from its last checkpoint (the default when it has one and is unfinished); with a raised TRAIN.EPOCHS it trains further (constant or reduceonplateau LR)")

    check = sub.add_parser("check", help="validate the config and read all its data without training")
    check.add_argument("--config", required=True)
    check.add_argument("-D", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    init = sub.add_parser("init", help="print a commented starting config")
    init.add_argument("--ndim", choices=["2D", "3D"], default="2D")

    demo = sub.add_parser("demo", help="train and test on a built-in synthetic dataset")
    demo.add_argument("--out", default="demo_results", help="folder for the data and results (default demo_results)")
    demo.add_argument("--gpu", default=None)
    demo.add_argument("-D", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    pred = sub.add_parser("predict", help="apply a trained checkpoint to an image or a folder of images")
    pred.add_argument("model", help="a checkpoint written by segflow run (…-checkpoint-best.pth)")
    pred.add_argument("image", nargs="?", default=None, help="one image to predict")
    pred.add_argument(
        "output", nargs="?", default=None,
        help="where to write it, in the format its suffix names: .tif/.tiff, .npy, or .png (2D labels) "
        "(default: <image name>_pred.tif here)",
    )
    pred.add_argument("--input-dir", default=None, help="predict every image of this folder")
    pred.add_argument("--output-dir", default=None, help="folder for the predictions of --input-dir (same file names, .tif)")
    pred.add_argument("--tta", action="store_true", help="test-time augmentation: average 8 flips/rotations (16 in 3D)")
    pred.add_argument("--probabilities", action="store_true", help="write float32 probabilities instead of class labels")
    pred.add_argument("--overlap", type=float, default=None, help="window overlap fraction in [0, 1) (default: the model's DATA.TEST settings)")
    pred.add_argument("--batch-size", type=int, default=None, help="windows per forward pass (default: TEST.BATCH_SIZE of the model, -1 = the device's best: about 262,144 pixels a batch on the CPU)")
    pred.add_argument("--gpu", default=None, help="GPU id such as 0, or 'cpu' (default: a GPU when present)")
    vol = pred.add_argument_group("volumes (IMAGE a .zarr store, .h5 file or TIFF; OUTPUT .zarr, .ome.zarr or .h5): chunk by chunk, any size")
    vol.add_argument("--chunk", default=None, help="chunk of the work and of the output, e.g. 256,256,256 (default: 4 windows a side)")
    vol.add_argument("--workers", type=int, default=None, help="chunks predicted at once on this machine, threads sharing the cores (default: on the CPU one per core, at most 4; on a GPU 1)")
    vol.add_argument("--scheduler", default=None, help="a running dask.distributed scheduler, tcp://host:port, to send the chunks to")
    vol.add_argument("--overwrite", action="store_true", help="predict anew into an OUTPUT made with another model or options")
    vol.add_argument("--axes", default="TZCYX", help="the stored axes of the input array, BiaPy's letters (default: (Z)YX(C) from its shape)")
    vol.add_argument("--array", default=None, help="the array inside the store or file (default: its one array, or level 0 of an OME-Zarr image)")
    vol.add_argument("--dtype", default="float16", help="float16 (default) or float32 probabilities")
    vol.add_argument("--gt", default=None, help="the volume's mask of class ids (.zarr, .h5, .tif): IoU per class over the whole volume, from each chunk's confusion matrix")
    vol.add_argument("--gt-array", default=None, help="the array inside --gt (default: its one array)")
    vol.add_argument("--output-format", default=None, help="zarr, ome-zarr (multiscale, with the input's voxel size: napari opens it as layers) or h5 (default: by OUTPUT's suffix, .ome.zarr for OME-Zarr)")
    vol.add_argument("--median-filter", dest="median", action="append", default=[], metavar="AXES:SIZE",
                     help="also write the probabilities and labels median-filtered along AXES (z, yz, xy, zx), e.g. z:5; repeatable, applied in order")

    sl = sub.add_parser("slurm", help="print (or --submit) the sbatch script that trains a config, or predicts, on a SLURM cluster")
    sl.add_argument("--config", default=None, help="the YAML file to train with")
    sl.add_argument("--result_dir", default="results", help="where the run writes (default results)")
    sl.add_argument("--name", default="job", help="the run's name (default job)")
    sl.add_argument("--nodes", type=int, default=1, help="machines (default 1)")
    sl.add_argument("--gpus-per-node", type=int, default=0, help="GPUs a machine, one training process each (default 0: CPU nodes)")
    sl.add_argument("--tasks-per-node", type=int, default=1, help="on CPU nodes, training processes a machine (default 1)")
    sl.add_argument("--cpus-per-task", type=int, default=8, help="CPU cores a process (default 8)")
    sl.add_argument("--mem", default="32G", help="memory a machine (default 32G)")
    sl.add_argument("--time", default="04:00:00", help="time limit (default 04:00:00)")
    sl.add_argument("--partition", default=None, help="SLURM partition")
    sl.add_argument("--account", default=None, help="SLURM account")
    sl.add_argument("--job-name", default="segflow", help="SLURM job name (default segflow)")
    sl.add_argument("--predict", nargs=3, default=None, metavar=("MODEL", "IMAGE", "OUTPUT"), help="a prediction script instead: segflow predict MODEL IMAGE OUTPUT on one node")
    sl.add_argument("--submit", action="store_true", help="pass the script to sbatch instead of printing it")
    sl.add_argument("-D", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config overrides for segflow run")

    ex = sub.add_parser("export", help="write a checkpoint's model as ONNX, TorchScript or a BioImage Model Zoo package, checked against PyTorch")
    ex.add_argument("model", help="a checkpoint written by segflow run (…-checkpoint-best.pth)")
    ex.add_argument("--format", required=True, help="onnx (opset 17, or --opset; any batch and spatial size), torchscript, or bioimageio (a spec 0.5 zip for Fiji/deepImageJ, napari, bioimageio.core)")
    ex.add_argument("--out", default=None, help="the file to write (default: beside the checkpoint, .onnx, .pt or .zip)")
    ex.add_argument("--opset", type=int, default=None, help="onnx: the ONNX opset to write, 11 to 20 (default 17: onnxruntime 1.16 and later run it)")
    ex.add_argument("--image", default=None, help="an image to check the export on, normalised as in training (default: noise); bioimageio: required, the package's test input and cover")

    lm = sub.add_parser("build-lmdb", help="store the 2D images and masks of two folders as train and val LMDB databases")
    lm.add_argument("--image_folder", required=True, help="folder of the images")
    lm.add_argument("--mask_folder", required=True, help="folder of the masks (class ids), paired with the images by name")
    lm.add_argument("--output_folder", required=True, help="where <dataset_name>-train.lmdb and -val.lmdb are written")
    lm.add_argument("--dataset_name", required=True, help="the name of the two databases")
    lm.add_argument("--train_fraction", type=float, default=0.8, help="fraction of the records to train on (default 0.8)")
    lm.add_argument("--image_format", default="tif", help="suffix of the images to read: tif, png, jpg, npy (default tif)")
    # NIST's tool takes --use_tiling 0/1; a bare --use_tiling means 1.
    lm.add_argument("--use_tiling", type=int, nargs="?", const=1, default=0, choices=[0, 1], help="cut images into tiles")
    lm.add_argument("--tile_size", type=int, default=256, help="tile edge in pixels with --use_tiling (default 256)")
    lm.add_argument("--seed", type=int, default=0, help="seed of the shuffle that splits train from val (default 0)")
    lm.add_argument("--overwrite", action="store_true", help="replace databases of that name")

    sub.add_parser("reference", help="print the configuration reference (Markdown) generated from the schema")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input prints one line and exits 2, never a traceback."""
    try:
        args = _parser().parse_args(argv)
    except _UsageError as exc:
        print(f"segflow: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    # tifffile logs its own warning before raising on a corrupt file; the error line says it all.
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    try:
        if args.command == "run":
            from segflow.app.run import run
            from segflow.runtime import is_rank_zero

            # The other processes of a distributed run say what rank 0 says: only their errors are shown.
            with contextlib.redirect_stdout(open(os.devnull, "w") if not is_rank_zero() else sys.stdout):
                run(args.config, args.result_dir, args.name, args.run_id, args.gpu, args.overrides, args.overwrite, args.resume)
        elif args.command == "check":
            from segflow.app.check import check

            check(args.config, args.overrides)
        elif args.command == "init":
            from segflow.config.reference import init_yaml

            sys.stdout.write(init_yaml(args.ndim))
        elif args.command == "demo":
            from segflow.app.demo import demo

            demo(args.out, args.gpu, tuple(args.overrides))
        elif args.command == "predict" and _volume(args):
            from segflow.app.predict_volume import predict_volume_cli

            predict_volume_cli(
                args.model, args.image, args.output, args.chunk, args.workers, args.scheduler, args.overwrite,
                args.tta, args.overlap, args.batch_size, args.gpu, args.axes, args.array, args.dtype, args.gt, args.gt_array,
                args.output_format, args.median,
            )
        elif args.command == "predict":
            from segflow.app.predict import predict_images

            predict_images(
                args.model, args.image, args.output, args.input_dir, args.output_dir,
                args.tta, args.probabilities, args.overlap, args.batch_size, args.gpu,
            )
        elif args.command == "slurm":
            from segflow.app.slurm import Request, slurm_cli

            req = Request(args.nodes, args.gpus_per_node, args.tasks_per_node, args.cpus_per_task, args.mem, args.time,
                          args.partition, args.account, args.job_name)  # fmt: skip
            slurm_cli(req, args.config, args.result_dir, args.name, args.predict, args.submit, tuple(args.overrides))
        elif args.command == "export":
            from segflow.app.export import export_model

            export_model(args.model, args.format, args.out, args.image, opset=args.opset)
        elif args.command == "build-lmdb":
            from segflow.app.build_lmdb import build_lmdb

            build_lmdb(
                args.image_folder, args.mask_folder, args.output_folder, args.dataset_name, args.train_fraction,
                args.image_format, bool(args.use_tiling), args.tile_size, args.seed, args.overwrite,
            )
        elif args.command == "reference":
            from segflow.config.reference import reference_markdown

            sys.stdout.write(reference_markdown())
    except SegflowError as exc:
        print(f"segflow: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segflow: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        line = _os_error_line(exc, args)
        if line is None:
            return _distributed(exc)  # any other OSError is a bug, not bad input: keep the traceback
        print(f"segflow: error: {line}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError, SystemExit) as exc:  # SystemExit: Lightning's SIGTERMException
        if not _is_out_of_memory(exc):
            return _distributed(exc)
        print(f"segflow: error: {_memory_line(exc, args)}", file=sys.stderr)
        return 2
    return 0


def _distributed(exc: BaseException) -> int:
    """Print the one line for a failure of a distributed run (another process lost, a rendezvous timeout, a port
    in use) and return the exit code; re-raise any other error (a bug: keep its traceback)."""
    from segflow.app.dist_errors import distributed_line

    found = distributed_line(exc)
    if found is None:
        raise exc
    line, code = found
    if line:
        print(f"segflow: error: {line}", file=sys.stderr)
    return code


_DISK_FULL = {errno.ENOSPC} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())
_READ_ONLY = {errno.EROFS}
_DENIED = {errno.EACCES, errno.EPERM}
_WRONG_KIND = {errno.ENOTDIR, errno.EISDIR}  # a file where a folder belongs, or the other way round


def _volume(args: argparse.Namespace) -> bool:
    """``segflow predict`` of a Zarr/HDF5 volume, or into a Zarr store: predicted chunk by chunk."""
    from segflow.app.predict_volume import is_volume

    return args.input_dir is None and is_volume(args.image, args.output, args.output_format)


def _outputs(args: argparse.Namespace) -> tuple[str, list[Path]]:
    """The option that chooses where this command writes, and those places."""
    if args.command == "run":
        return "--result_dir", [Path(args.result_dir)]
    if args.command == "demo":
        return "--out", [Path(args.out)]
    if args.command == "export":
        return "--out", [Path(args.out) if args.out else Path(args.model).parent]
    if args.command == "predict":
        if args.output_dir is not None:
            return "--output-dir", [Path(args.output_dir)]
        return "the OUTPUT path", [Path(args.output) if args.output else Path.cwd()]
    return "", []


def _inside(path: Path, folders: list[Path]) -> bool:
    try:
        resolved = path.resolve()
        return any(resolved == f.resolve() or f.resolve() in resolved.parents for f in folders)
    except (OSError, RuntimeError):
        return False


def _os_error_line(exc: OSError, args: argparse.Namespace) -> str | None:
    """One line for a full disk, a read-only disk, a permission problem or a file where a folder belongs
    (or a folder where a file does); None for any other OSError."""
    if exc.errno not in _DISK_FULL | _READ_ONLY | _DENIED | _WRONG_KIND:
        return None
    option, outputs = _outputs(args)
    path = Path(os.fsdecode(exc.filename)) if exc.filename is not None else (outputs[0] if outputs else Path.cwd())
    elsewhere = f"choose {option} on another disk" if option else "write elsewhere"
    if exc.errno in _DISK_FULL:
        return f"{path}: no space left on the disk (disk full or quota reached); free some space, or {elsewhere}"
    if exc.errno in _READ_ONLY:
        return f"{path}: the file system is read-only; {elsewhere.replace('another disk', 'a writable disk')}"
    if exc.errno in _WRONG_KIND:
        folder = exc.errno == errno.EISDIR
        kind = "this is a folder, not a file" if folder else "a part of this path is a file, not a folder"
        return f"{path}: {kind}; {f'choose {option} elsewhere' if option else 'check the path'}"
    if option and (_inside(path, outputs) or exc.filename is None):
        return f"{path}: permission denied; choose {option} you can write to, or fix its permissions"
    return f"{path}: permission denied; make it readable (and its folder listable) by your user"


def _is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's (CUDA) OutOfMemoryError, or a RuntimeError that says 'out of memory'."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # never import torch only to classify an error
    if torch is not None:
        kinds = tuple(
            k for k in (getattr(torch, "OutOfMemoryError", None), getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)) if isinstance(k, type)
        )
        if kinds and isinstance(exc, kinds):
            return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _memory_line(exc: BaseException, args: argparse.Namespace) -> str:
    """One line for running out of memory that says what to make smaller."""
    reason = _one_line(exc) or type(exc).__name__
    if len(reason) > 120:
        reason = reason[:117] + "..."
    memory = "memory (RAM)" if isinstance(exc, MemoryError) else "GPU memory" if "cuda" in reason.lower() or "gpu" in reason.lower() else "memory"
    if args.command == "predict":
        return (
            f"{args.model}: out of {memory} while predicting ({reason}); use a smaller --batch-size (e.g. --batch-size 1)"
            + (", or --gpu cpu" if memory == "GPU memory" else "")
        )
    if args.command == "check":
        return f"{args.config}: out of {memory} while reading the data ({reason}); the images are too large for this machine's memory"
    source = args.config if args.command == "run" else "segflow demo"
    return (
        f"{source}: out of {memory} ({reason}); use a smaller TRAIN.BATCH_SIZE or DATA.PATCH_SIZE "
        "(e.g. -D TRAIN.BATCH_SIZE=1), or a smaller TEST.BATCH_SIZE if it happened in the test phase"
    )


if __name__ == "__main__":
    sys.exit(main())
