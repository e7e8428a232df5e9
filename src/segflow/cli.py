"""The ``segflow`` command: run, check, init, demo, predict, reference."""

from __future__ import annotations

import argparse
import logging
import sys
import typing

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
    run.add_argument("--overwrite", action="store_true", help="replace this run's existing checkpoints")

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
    pred.add_argument("output", nargs="?", default=None, help="where to write it (default: <image name>_pred.tif here)")
    pred.add_argument("--input-dir", default=None, help="predict every image of this folder")
    pred.add_argument("--output-dir", default=None, help="folder for the predictions of --input-dir (same file names, .tif)")
    pred.add_argument("--tta", action="store_true", help="test-time augmentation: average 8 flips/rotations (16 in 3D)")
    pred.add_argument("--probabilities", action="store_true", help="write float32 probabilities instead of class labels")
    pred.add_argument("--overlap", type=float, default=None, help="window overlap fraction in [0, 1) (default: the model's DATA.TEST settings)")
    pred.add_argument("--batch-size", type=int, default=None, help="windows per forward pass")
    pred.add_argument("--gpu", default=None, help="GPU id such as 0, or 'cpu' (default: a GPU when present)")

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
            from segflow.workflow import run

            run(args.config, args.result_dir, args.name, args.run_id, args.gpu, args.overrides, args.overwrite)
        elif args.command == "check":
            from segflow.workflow import check

            check(args.config, args.overrides)
        elif args.command == "init":
            from segflow.reference import init_yaml

            sys.stdout.write(init_yaml(args.ndim))
        elif args.command == "demo":
            from segflow.demo import demo

            demo(args.out, args.gpu, tuple(args.overrides))
        elif args.command == "predict":
            from segflow.predict import predict_images

            predict_images(
                args.model, args.image, args.output, args.input_dir, args.output_dir,
                args.tta, args.probabilities, args.overlap, args.batch_size, args.gpu,
            )
        elif args.command == "reference":
            from segflow.reference import reference_markdown

            sys.stdout.write(reference_markdown())
    except SegflowError as exc:
        print(f"segflow: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segflow: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
