"""A run's state on disk: resume point, resume checks, the checkpoint to test, the config copy."""

from __future__ import annotations

from pathlib import Path

from segflow.checkpoint import check_model_matches, load_checkpoint, previous
from segflow.config.loader import config_to_yaml
from segflow.config.schema import Config
from segflow.errors import SegflowError
from segflow.io.atomic import atomic_write_text
from segflow.io.paths import RunPaths


def resume_point(paths: RunPaths) -> Path | None:
    """The checkpoint to resume from: the last one, or the one before it when the last is damaged."""
    for candidate in (paths.checkpoint("last"), previous(paths.checkpoint("last"))):
        if candidate.is_file():
            try:
                load_checkpoint(candidate)
            except SegflowError as exc:
                print(f"warning: {exc}; trying the previous checkpoint")
                continue
            return candidate
    return None


def check_resume(cfg: Config, paths: RunPaths, resume: Path) -> dict:
    """Refuse to continue run ``paths.job`` from checkpoint ``resume`` with a config that cannot continue it
    (another network, optimizer or schedule, or a fixed-length schedule made longer); return the checkpoint."""
    saved = load_checkpoint(resume)
    try:
        check_model_matches(resume, saved, cfg)
    except SegflowError as exc:
        hint = "(to train the new network instead: --overwrite, or a new --run_id)"
        raise SegflowError(f"run {paths.job} cannot resume: {exc} {hint}") from None
    before = Config.model_validate(saved["hyper_parameters"]["config"]).TRAIN
    for key, was, now in (
        ("TRAIN.OPTIMIZER", before.OPTIMIZER, cfg.TRAIN.OPTIMIZER),
        ("TRAIN.LR_SCHEDULER.NAME", before.LR_SCHEDULER.NAME, cfg.TRAIN.LR_SCHEDULER.NAME),
    ):
        if was != now:  # the saved optimizer / scheduler state belongs to the old one
            raise SegflowError(
                f"{key} {now!r}: run {paths.job} was started with {was!r} and its checkpoint {resume} holds that "
                "state; set it back to continue, or train afresh with --overwrite or a new --run_id"
            )
    if before.EPOCHS != cfg.TRAIN.EPOCHS and cfg.TRAIN.LR_SCHEDULER.NAME in ("onecycle", "warmupcosine"):
        raise SegflowError(
            f"TRAIN.EPOCHS {cfg.TRAIN.EPOCHS}: run {paths.job} was started with {before.EPOCHS} epochs and a "
            f"'{cfg.TRAIN.LR_SCHEDULER.NAME}' schedule whose length was fixed then; start a new --run_id (MODEL.LOAD_CHECKPOINT to start from its weights)"
        )
    return saved


def choose_checkpoint(cfg: Config, paths: RunPaths) -> Path:
    """The checkpoint the test phase uses when this run did not train: PATHS.CHECKPOINT_FILE or the job's own."""
    if cfg.PATHS.CHECKPOINT_FILE:
        return Path(cfg.PATHS.CHECKPOINT_FILE)
    which = "best" if cfg.MODEL.LOAD_CHECKPOINT_EPOCH == "best_on_val" else "last"
    return paths.checkpoint(which)


def write_config_copy(cfg: Config, paths: RunPaths) -> None:
    """Save the full resolved config (defaults and overrides included) as ``config_files/<name>_<run_id>.yaml``."""
    atomic_write_text(paths.config_copy, config_to_yaml(cfg))
