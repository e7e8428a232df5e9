"""BiaPy's MODEL.BMZ keys: the BioImage Model Zoo package a run starts from (MODEL.BMZ.SOURCE_MODEL_ID), and what
the package made at the end of a run says of itself (MODEL.BMZ.EXPORT); reading a package's description."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import Field, model_validator

from segflow.config.section import Section
from segflow.errors import SegflowError


class BmzAuthor(Section):
    name: str = Field(description="The author's name.")
    affiliation: str = ""
    github_user: str = ""
    orcid: str = ""
    email: str = ""


class BmzCite(Section):
    text: str = Field(description="What is cited, e.g. 'training library'.")
    doi: str = ""
    url: str = ""

    @model_validator(mode="after")
    def _doi_or_url(self) -> BmzCite:
        if not (self.doi or self.url):
            raise ValueError(f"the citation {self.text!r} needs a doi or a url")
        return self


class BmzDataset(Section):
    name: str = ""
    doi: str = ""
    image_modality: str = ""
    dataset_id: str = ""


class BmzExportConfig(Section):
    ENABLE: bool = Field(False, description="At the end of the run (after the test phase), write the model as a BioImage Model Zoo package "
                         "(segflow export --format bioimageio) into PATHS.BMZ_EXPORT_PATH, its test input the first test image "
                         "(or training image).")  # fmt: skip
    MODEL_NAME: str = Field("", description="The package's name; '' = 'segflow <architecture> <2D|3D>'.")
    DESCRIPTION: str = Field("", description="The package's description, e.g. 'Mitochondria segmentation for electron microscopy'.")
    AUTHORS: list[BmzAuthor] = Field([], description="Authors, each {name, affiliation, github_user, orcid, email} (name required); "
                                     "none = 'segflow user'.")  # fmt: skip
    LICENSE: str = Field("CC-BY-4.0", description="An SPDX license id the BioImage Model Zoo takes (e.g. CC-BY-4.0, MIT).")
    DOCUMENTATION: str = Field("", description="A Markdown file documenting the model; '' = segflow writes one (inputs, normalisation, outputs).")
    TAGS: list[str] = Field([], description="Tags besides segflow's own (segflow, semantic-segmentation, 2d/3d), e.g. [electron-microscopy, mitochondria].")
    CITE: list[BmzCite] = Field([], description="Citations besides segflow's, each {text, doi or url}.")
    DATASET_INFO: list[BmzDataset] = Field([], description="The training data, {name, doi, image_modality, dataset_id} (BiaPy's "
                                           "[{}] = none): written into the package's documentation.")  # fmt: skip
    MODEL_VERSION: str = Field("0.1.0", description="The package's version.")
    REUSE_BMZ_CONFIG: bool = Field(False, description="With MODEL.SOURCE bmz: the package takes the name, description, authors, "
                                   "license, tags, citations, documentation and version of MODEL.BMZ.SOURCE_MODEL_ID's package "
                                   "instead of the keys above.")  # fmt: skip


class BmzConfig(Section):
    SOURCE_MODEL_ID: str = Field("", description="With MODEL.SOURCE bmz: a BioImage Model Zoo package (spec 0.5) that segflow "
                                 "exported, as a local .zip file or unzipped folder (relative paths resolve against the config's folder; "
                                 "nothing is downloaded: a Zoo id or DOI must be fetched from bioimage.io first).")  # fmt: skip
    EXPORT: BmzExportConfig = BmzExportConfig()


# The description file of a package: spec 0.5 zips hold rdf.yaml; an unzipped folder may name it bioimageio.yaml.
DESCRIPTION_FILES = ("rdf.yaml", "bioimageio.yaml")


def is_package(path: Path) -> bool:
    """A zip file or a folder holding a package description (torch's own checkpoints are zip files too)."""
    if path.is_dir():
        return any((path / name).is_file() for name in DESCRIPTION_FILES)
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name in archive.namelist() for name in DESCRIPTION_FILES)


def read_package(path: Path) -> tuple[dict, Callable[[str], bytes | None]]:
    """``(the package's description, a reader of its files by name: None for a file it lacks)``, of a zip file or an
    unzipped folder; read with zipfile and YAML alone (no bioimageio needed)."""
    if path.is_dir():
        read = lambda name: (path / name).read_bytes() if (path / name).is_file() else None  # noqa: E731
    else:
        with zipfile.ZipFile(path) as archive:
            files = {name: archive.read(name) for name in archive.namelist()}
        read = files.get
    text = next(filter(None, map(read, DESCRIPTION_FILES)))
    rdf = yaml.safe_load(text) or {}
    if not isinstance(rdf, dict):
        raise SegflowError(f"{path}: its package description is not a mapping; give a BioImage Model Zoo package")
    return rdf, read


def segflow_part(path: Path, rdf: dict) -> dict:
    """``config.segflow`` of a package segflow wrote (its training config and normalisation), or one line saying why a
    package cannot be read."""
    version = str(rdf.get("format_version", "?"))
    if not version.startswith("0.5."):
        raise SegflowError(f"{path}: a BioImage Model Zoo package of spec {version}; segflow reads spec 0.5 packages (bioimageio update-format converts one)")
    ours = (rdf.get("config") or {}).get("segflow")
    if not ours:
        raise SegflowError(f"{path}: a BioImage Model Zoo package that segflow did not write: segflow predict runs it on image files, but only a package segflow "
                           "wrote can be tested, fine-tuned or exported; predict with segflow predict PACKAGE IMAGE OUTPUT")
    return ours


def source_package(value: str, base_dir: Path | None) -> Path:
    """MODEL.BMZ.SOURCE_MODEL_ID as a local package path (relative to ``base_dir``), or one line saying what to do."""
    path = Path(value).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = (base_dir / path).resolve()
    if not value:
        raise SegflowError("MODEL.SOURCE bmz: give the package in MODEL.BMZ.SOURCE_MODEL_ID (a .zip file or folder that segflow exported)")
    if not path.exists():
        raise SegflowError(f"MODEL.BMZ.SOURCE_MODEL_ID {value!r}: no such file or folder; segflow downloads nothing: get the package "
                           "(its .zip) from bioimage.io and give its path")  # fmt: skip
    if not is_package(path):
        raise SegflowError(f"MODEL.BMZ.SOURCE_MODEL_ID {path}: not a BioImage Model Zoo package (no rdf.yaml inside); give a package's .zip or folder")
    return path
