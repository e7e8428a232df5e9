"""The README's YAML examples are valid configs (every key known, every value accepted)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from segflow.config.loader import build_config

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_yaml_examples() -> None:
    assert len(BLOCKS) >= 2  # a Zarr volume and an LMDB


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_yaml_example_builds_a_config(block: str, request: pytest.FixtureRequest) -> None:
    import textwrap

    tree = yaml.safe_load(textwrap.dedent(block))
    if tree.get("MODEL", {}).get("BMZ", {}).get("SOURCE_MODEL_ID"):  # the reader's own package: a package made here
        tree["MODEL"]["BMZ"]["SOURCE_MODEL_ID"] = str(request.getfixturevalue("package")[0])
    tree.setdefault("PROBLEM", {"NDIM": "3D" if "(64, 64, 64" in block else "2D"})
    cfg, _ = build_config(tree)
    for part in ("TRAIN", "TEST"):  # the paths given are the paths read
        if part in tree.get("DATA", {}):
            assert tree["DATA"][part]["PATH"] == getattr(cfg.DATA, part).PATH
