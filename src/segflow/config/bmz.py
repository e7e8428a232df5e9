"""BiaPy's MODEL.BMZ.EXPORT keys: what a BioImage Model Zoo package made at the end of a run says of itself."""

from __future__ import annotations

from pydantic import Field, model_validator

from segflow.config.section import Section


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


class BmzConfig(Section):
    EXPORT: BmzExportConfig = BmzExportConfig()
