"""The ``segflow`` command: run, check, init, demo, reference."""

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
