"""The result folder layout of BiaPy's docs:
``<result_dir>/<name>/{config_files,checkpoints,results/<name>_<run_id>/...}``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from segflow.errors import SegflowError

# The longest suffix a run adds to ``<name>_<run_id>`` in a file name (a checkpoint being written).
_LONGEST_SUFFIX = "-checkpoint-last.prev.pth.part"
_NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")  # a name from undecodable command-line bytes holds lone surrogates
    except UnicodeEncodeError:
        return False
    return True


def check_plain_name(option: str, value: str) -> None:
    """``--name`` and ``--run_id`` become folder and file names: refuse anything but one plain name.

    A separator (``/`` or ``\\``), ``.`` or ``..`` would write outside ``--result_dir`` or into another
    run's files; a leading ``-`` reads as an option in every later shell command; control characters
    and surrounding spaces are almost always a quoting mistake.
    """
    reason = None
    if not value.strip():
        reason = "is empty" if not value else "is only spaces"
    elif value in (".", ".."):
        reason = "is not a folder name ('.' and '..' stand for --result_dir itself and the folder above it)"
    elif "/" in value or "\\" in value:
        reason = "must not contain '/' or '\\' (it is one folder name, not a path)"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        reason = "holds a control character (NUL, tab, newline, ...)"
    elif not value.isprintable() and not _is_utf8(value):
        reason = "is not UTF-8 text (undecodable bytes in the name)"
    elif value != value.strip():
        reason = "starts or ends with a space"
    elif value.startswith("-"):
        reason = "starts with '-', which reads as an option"
    if reason:
        shown = value if value and value.isprintable() and value == value.strip() else repr(value)
        raise SegflowError(f"{option} {shown}: {reason}; use one plain folder name such as myjob or 1")


@dataclass(frozen=True)
class RunPaths:
    """Every folder and file name one run writes."""

    result_dir: Path
    name: str
    run_id: str

    @classmethod
    def checked(cls, result_dir: str | os.PathLike, name: str, run_id: str) -> RunPaths:
        """The paths of run ``<name>_<run_id>`` under ``result_dir``, after refusing names that are not plain."""
        text = os.fspath(result_dir)
        if not text.strip():
            raise SegflowError(
                "--result_dir is empty; give the folder under which <name>/ is created (e.g. --result_dir results)"
            )
        if "\x00" in text:
            raise SegflowError(f"--result_dir {text!r} holds a NUL character; give a real folder name")
        check_plain_name("--name", name)
        check_plain_name("--run_id", run_id)
        job = f"{name}_{run_id}"
        size = len(os.fsencode(job + _LONGEST_SUFFIX))  # fsencode: a name from undecodable bytes has surrogates
        if size > _NAME_MAX:
            raise SegflowError(
                f"--name and --run_id are too long: with them a checkpoint file name ({job[:20]}...{_LONGEST_SUFFIX}) "
                f"has {size} bytes, over the file system's limit of {_NAME_MAX} bytes; "
                "use shorter ones"
            )
        try:
            folder = Path(text).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
            reason = f"--result_dir {text}: cannot be resolved ({exc})"
            raise SegflowError(f"{reason}; fix the symbolic link loop, or give a real folder") from None
        if not _is_utf8(str(folder)):  # TensorBoard (and YAML) cannot write such paths
            raise SegflowError(f"--result_dir {str(folder)!r}: its path is not UTF-8 text; choose a folder whose path is")
        return cls(folder, name, run_id)

    @property
    def job(self) -> str:
        """``<name>_<run_id>``, the prefix of this run's files."""
        return f"{self.name}_{self.run_id}"

    @property
    def root(self) -> Path:
        return self.result_dir / self.name

    @property
    def config_files(self) -> Path:
        return self.root / "config_files"

    @property
    def config_copy(self) -> Path:
        """``config_files/<name>_<run_id>.yaml``: one per run, so runs never replace each other's (BiaPy 3's name)."""
        return self.config_files / f"{self.job}.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def prob_map(self) -> Path:
        return self.root / "prob_map"

    @property
    def run(self) -> Path:
        """``results/<name>_<run_id>``: everything this run writes besides config and checkpoints."""
        return self.root / "results" / self.job

    def sub(self, folder: str) -> Path:
        """A folder of the run (``aug``, ``charts``, ``per_image``, ...)."""
        return self.run / folder

    @property
    def train_logs(self) -> Path:
        """``results/<job>/train_logs``: the epoch log and the finished marker."""
        return self.sub("train_logs")

    @property
    def log_csv(self) -> Path:
        """``train_logs/<job>_log.csv``: one row per epoch."""
        return self.train_logs / f"{self.job}_log.csv"

    @property
    def finished_marker(self) -> Path:
        """``train_logs/<job>_finished.json``: written when training ends (all epochs, or early stopping),
        so that a re-run goes straight to testing."""
        return self.train_logs / f"{self.job}_finished.json"

    @property
    def charts(self) -> Path:
        """``results/<job>/charts``: the loss and metric curves."""
        return self.sub("charts")

    @property
    def aug(self) -> Path:
        """``results/<job>/aug``: augmented training samples, when ``AUGMENTOR.AUG_SAMPLES`` is on."""
        return self.sub("aug")

    @property
    def tensorboard_name(self) -> str:
        """The TensorBoard logger's folder name under :attr:`run`."""
        return "tensorboard"

    @property
    def tensorboard(self) -> Path:
        """``results/<job>/tensorboard``: TensorBoard event files."""
        return self.sub(self.tensorboard_name)

    def training_outputs(self) -> tuple[Path, ...]:
        """The folders one training writes besides checkpoints (``--overwrite`` removes them)."""
        return (self.train_logs, self.charts, self.tensorboard, self.aug)

    def per_image(self, suffix: str = "") -> Path:
        """``results/<job>/per_image<suffix>``: test outputs, e.g. ``_binarized`` or ``_post_processing``."""
        return self.sub(f"per_image{suffix}")

    @property
    def test_metrics(self) -> Path:
        """``results/<job>/test_metrics.csv``: the test phase's metrics."""
        return self.sub("test_metrics.csv")

    def checkpoint(self, which: str) -> Path:
        """``checkpoints/<job>-checkpoint-{best,last}.pth``."""
        return self.checkpoints / f"{self.job}-checkpoint-{which}.pth"

    def own_checkpoints(self) -> list[Path]:
        """Every checkpoint file name this run may have: best and last, the ``.prev`` kept before each, and
        the ``.part`` of one being written (``training.AtomicCheckpoint``); another run's never match."""
        names = [f"{self.job}-checkpoint-{which}{prev}.pth" for which in ("best", "last") for prev in ("", ".prev")]
        return [self.checkpoints / n for name in names for n in (name, name + ".part")]
