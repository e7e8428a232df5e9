"""The result folder layout of BiaPy's docs: ``<result_dir>/<name>/{config_files,checkpoints,results/<name>_<run_id>/...}``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    """Every folder and file name one run writes."""

    result_dir: Path
    name: str
    run_id: str

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

    def checkpoint(self, which: str) -> Path:
        """``checkpoints/<job>-checkpoint-{best,last}.pth``."""
        return self.checkpoints / f"{self.job}-checkpoint-{which}.pth"
