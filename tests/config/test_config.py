"""Unit tests of the config loader (config.py), the schema and the generated reference."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import BIAPY_TEMPLATES, tiny_config, write_yaml

from segflow.config.loader import (
    LEAF_KEYS,
    _parse_tuples,
    biapy_keys,
    build_config,
    config_to_yaml,
    load_config,
    parse_override,
    schema_keys,
)
from segflow.config.reference import reference_markdown
from segflow.config.schema import Config
from segflow.errors import SegflowError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config-reference.md"
TEMPLATES = sorted(BIAPY_TEMPLATES.glob("*.yaml"))


def error_of(tree: dict | None = None, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(SegflowError) as info:
        build_config(tree or {}, overrides)
    return str(info.value)


# --------------------------------------------------------------------------------------------- tuples
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(256, 256, 1)", (256, 256, 1)),
        ("(32,32)", (32, 32)),
        (" (-0.1, 0.1) ", (-0.1, 0.1)),
        ("(5)", (5,)),
        ("[16, 32, 64]", (16, 32, 64)),
    ],
)
def test_parse_tuples_reads_biapy_tuple_strings(text: str, expected: tuple) -> None:
    assert _parse_tuples(text) == expected
    assert isinstance(_parse_tuples(text), tuple)


@pytest.mark.parametrize("text", ["(256, 256", "/data/(x)/y", "unet", "(a, b)", ""])
def test_parse_tuples_leaves_other_strings_alone(text: str) -> None:
    assert _parse_tuples(text) == text


def test_parse_tuples_recurses_into_sections_and_lists() -> None:
    tree = {"DATA": {"PATCH_SIZE": "(8, 16, 1)", "TEST": {"PADDING": "(2,4)"}}, "X": ["(1, 2)", 3]}
    assert _parse_tuples(tree) == {"DATA": {"PATCH_SIZE": (8, 16, 1), "TEST": {"PADDING": (2, 4)}}, "X": [(1, 2), 3]}


def test_tuple_syntax_in_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "PROBLEM:\n  NDIM: 3D\nDATA:\n  PATCH_SIZE: (16, 32, 32, 1)\n  TEST:\n    PADDING: (2,4,4)\n"
        "AUGMENTOR:\n  BRIGHTNESS_FACTOR: (-0.2, 0.3)\n"
    )
    cfg, warnings = load_config(path)
    assert cfg.DATA.PATCH_SIZE == (16, 32, 32, 1)
    assert cfg.DATA.TEST.PADDING == (2, 4, 4)
    assert cfg.AUGMENTOR.BRIGHTNESS_FACTOR == (-0.2, 0.3)
    assert cfg.spatial_patch == (16, 32, 32) and cfg.in_channels == 1
    assert warnings == []


def test_biapy_float_syntax_in_a_yaml_file(tmp_path: Path) -> None:
    # BiaPy templates write LR: 1.E-3; YAML 1.1 reads 1e-4 (no dot) as text, pydantic must still give a float.
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN:\n  LR: 1.E-3\n  W_DECAY: 1e-4\n")
    cfg, _ = load_config(path)
    assert pytest.approx(1e-3) == cfg.TRAIN.LR
    assert pytest.approx(1e-4) == cfg.TRAIN.W_DECAY
    assert isinstance(cfg.TRAIN.W_DECAY, float)


# --------------------------------------------------------------------------------------------- overrides
@pytest.mark.parametrize(
    ("text", "key", "value", "kind"),
    [
        ("TRAIN.EPOCHS=5", "TRAIN.EPOCHS", 5, int),
        ("TRAIN.LR=0.5", "TRAIN.LR", 0.5, float),
        ("TRAIN.LR=1e-3", "TRAIN.LR", 1e-3, float),
        ("TRAIN.LR=1.E-3", "TRAIN.LR", 1e-3, float),
        ("TRAIN.ENABLE=false", "TRAIN.ENABLE", False, bool),
        ("TRAIN.ENABLE=True", "TRAIN.ENABLE", True, bool),
        ("DATA.PATCH_SIZE=(64, 64, 1)", "DATA.PATCH_SIZE", (64, 64, 1), tuple),
        ("DATA.PATCH_SIZE=(8,16,16,1)", "DATA.PATCH_SIZE", (8, 16, 16, 1), tuple),
        ("MODEL.FEATURE_MAPS=[4, 8, 16]", "MODEL.FEATURE_MAPS", [4, 8, 16], list),
        ("DATA.TRAIN.PATH=/data/x", "DATA.TRAIN.PATH", "/data/x", str),
        ("DATA.TRAIN.PATH=2024", "DATA.TRAIN.PATH", "2024", str),  # a folder named 2024 stays text
        ("TRAIN.LR_SCHEDULER.NAME=", "TRAIN.LR_SCHEDULER.NAME", "", str),
        ("TRAIN.PRECISION=32", "TRAIN.PRECISION", "32", str),
        (" TRAIN.EPOCHS =7", "TRAIN.EPOCHS", 7, int),
        ("MODEL.ARCHITECTURE=resunet", "MODEL.ARCHITECTURE", "resunet", str),
    ],
)
def test_parse_override_types(text: str, key: str, value: object, kind: type) -> None:
    got_key, got = parse_override(text)
    assert got_key == key
    assert got == value
    assert type(got) is kind


def test_parse_override_needs_equals() -> None:
    with pytest.raises(SegflowError, match=r"-D TRAIN\.EPOCHS: expected KEY=VALUE"):
        parse_override("TRAIN.EPOCHS")


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"TRAIN": {"EPOCHS": 2, "LR": 0.01}, "DATA": {"PATCH_SIZE": "(32, 32, 1)"}})
    cfg, _ = load_config(
        path,
        ["TRAIN.EPOCHS=5", "DATA.TRAIN.PATH=/data/x", "TRAIN.LR=2e-4", "DATA.PATCH_SIZE=(64, 64, 3)", "TRAIN.ENABLE=true"],
    )
    assert cfg.TRAIN.EPOCHS == 5
    assert cfg.DATA.TRAIN.PATH == "/data/x"
    assert pytest.approx(2e-4) == cfg.TRAIN.LR
    assert cfg.DATA.PATCH_SIZE == (64, 64, 3)
    assert cfg.TRAIN.ENABLE is True


def test_last_override_of_a_key_wins() -> None:
    cfg, _ = build_config({}, ["TRAIN.EPOCHS=5", "TRAIN.EPOCHS=9"])
    assert cfg.TRAIN.EPOCHS == 9


def test_text_keys_accept_numbers_from_yaml() -> None:
    # YAML reads PRECISION: 32 as an int; the schema allows the text '32'.
    cfg, _ = build_config({"TRAIN": {"PRECISION": 32}})
    assert cfg.TRAIN.PRECISION == "32"
    cfg, _ = build_config({"TRAIN": {"PRECISION": 16}})
    assert cfg.TRAIN.PRECISION == "16"


# --------------------------------------------------------------------------------------------- unknown keys
@pytest.mark.parametrize(
    ("tree", "bad", "right"),
    [
        ({"TRAIN": {"EPOCS": 3}}, "TRAIN.EPOCS", "TRAIN.EPOCHS"),
        ({"DATA": {"PATCHSIZE": "(64, 64, 1)"}}, "DATA.PATCHSIZE", "DATA.PATCH_SIZE"),
        ({"MODEL": {"N_CLASS": 3}}, "MODEL.N_CLASS", "MODEL.N_CLASSES"),
        ({"TRAINN": {"EPOCHS": 3}}, "TRAINN.EPOCHS", "TRAIN.EPOCHS"),
        ({"train": {"epochs": 3}}, "train.epochs", "TRAIN.EPOCHS"),
        ({"DATA": {"TRAIN": {"GTPATH": "y"}}}, "DATA.TRAIN.GTPATH", "DATA.TRAIN.GT_PATH"),
    ],
)
def test_unknown_key_suggests_the_right_one(tree: dict, bad: str, right: str) -> None:
    msg = error_of(tree)
    assert f"unknown config key {bad}" in msg
    assert f"did you mean {right}?" in msg


def test_unknown_key_in_an_override_suggests_the_right_one() -> None:
    msg = error_of({}, ("TRAIN.EPOCS=3",))
    assert msg.startswith("-D: unknown config key TRAIN.EPOCS")
    assert "did you mean TRAIN.EPOCHS?" in msg


def test_unknown_key_names_the_config_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "my.yaml", {"TRAIN": {"EPOCS": 3}})
    with pytest.raises(SegflowError, match=r"my\.yaml: unknown config key TRAIN\.EPOCS; did you mean TRAIN\.EPOCHS\?"):
        load_config(path)


def test_unknown_section_is_named_with_the_real_sections() -> None:
    msg = error_of({"FOO": {"BAR": 1}})
    assert "unknown config key FOO.BAR" in msg
    assert "FOO is not a section" in msg
    assert "SYSTEM, PROBLEM, DATA, AUGMENTOR, MODEL, LOSS, TRAIN, TEST, PATHS" in msg


def test_section_given_a_value_is_an_error() -> None:
    msg = error_of({"TRAIN": 3})
    assert "TRAIN is a section" in msg
    assert "TRAIN.ENABLE" in msg


def test_empty_sections_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("LOSS:\nDATA:\n  TRAIN:\n  VAL:\nTRAIN:\n  EPOCHS: 3\n")
    cfg, warnings = load_config(path)
    assert cfg.LOSS == Config().LOSS
    assert cfg.TRAIN.EPOCHS == 3
    assert warnings == []


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("# nothing yet\n")
    cfg, _ = load_config(path)
    assert cfg.TRAIN.EPOCHS == Config().TRAIN.EPOCHS == 360


# --------------------------------------------------------------------------------------------- BiaPy keys segflow lacks
def test_biapy_key_segflow_lacks_is_an_error_when_on() -> None:
    msg = error_of({"DATA": {"PREPROCESS": {"CLAHE": {"ENABLE": True}}}})
    assert "DATA.PREPROCESS.CLAHE.ENABLE is a BiaPy key that segflow does not implement" in msg
    assert "unknown" not in msg


def test_biapy_key_segflow_lacks_is_a_warning_when_off() -> None:
    cfg, warnings = build_config({"DATA": {"PREPROCESS": {"CLAHE": {"ENABLE": False}}}, "TRAIN": {"EPOCHS": 4}})
    assert cfg.TRAIN.EPOCHS == 4
    assert len(warnings) == 1
    assert "DATA.PREPROCESS.CLAHE.ENABLE" in warnings[0] and "does not implement" in warnings[0]


def test_biapy_key_segflow_lacks_in_an_override() -> None:
    assert "DATA.PREPROCESS.CLAHE.ENABLE is a BiaPy key" in error_of({}, ("DATA.PREPROCESS.CLAHE.ENABLE=true",))
    _, warnings = build_config({}, ("DATA.PREPROCESS.CLAHE.ENABLE=false",))
    assert len(warnings) == 1 and "DATA.PREPROCESS.CLAHE.ENABLE" in warnings[0]


def test_empty_biapy_section_segflow_lacks_is_a_warning() -> None:
    _, warnings = build_config({"DATA": {"PREPROCESS": None}})
    assert len(warnings) == 1 and "DATA.PREPROCESS" in warnings[0]


@pytest.mark.parametrize(
    "tree",
    [
        {"MODEL": {"SOURCE": "biapy"}},
        {"MODEL": {"SOURCE": "BiaPy", "UPSAMPLE_LAYER": "convtranspose", "SAVE_CKPT_FREQ": -1}},
        {"TEST": {"VERBOSE": True}, "TRAIN": {"VERBOSE": False}},
        {"DATA": {"TRAIN": {"RESOLUTION": "(-1,)"}, "VAL": {"RESOLUTION": "(1, 1)"}, "TEST": {"RESOLUTION": [1.0, 1.0]}}},
        {"TRAIN": {"METRICS": ["iou"], "CHECKPOINT_MONITOR": "val_loss"}, "TEST": {"METRICS": [], "AUGMENTATION_MODE": "mean"}},
        {"DATA": {"VAL": {"DIST_EVAL": True}, "TRAIN": {"INPUT_IMG_AXES_ORDER": "TZCYX"}}},
    ],
)
def test_biapy_values_that_mean_what_segflow_does_are_accepted_silently(tree: dict) -> None:
    cfg, warnings = build_config(tree)
    assert warnings == []
    assert cfg == Config()  # they change nothing


@pytest.mark.parametrize(
    ("tree", "key"),
    [
        ({"DATA": {"TRAIN": {"RESOLUTION": "(2, 1)"}}}, "DATA.TRAIN.RESOLUTION"),
        ({"TEST": {"AUGMENTATION_MODE": "max"}}, "TEST.AUGMENTATION_MODE"),
        ({"TRAIN": {"METRICS": ["iou", "dice"]}}, "TRAIN.METRICS"),
        ({"TEST": {"VERBOSE": "loud"}}, "TEST.VERBOSE"),
        ({"DATA": {"PREPROCESS": {"CLAHE": {"ENABLE": True, "CLIP_LIMIT": 0.01}}}}, "DATA.PREPROCESS.CLAHE.ENABLE"),
        ({"AUGMENTOR": {"CBLUR_SIZE": "(0.2, 0.4)", "CUTBLUR": True}}, "AUGMENTOR.CUTBLUR"),
    ],
)
def test_biapy_values_segflow_does_not_do_are_still_refused(tree: dict, key: str) -> None:
    assert f"{key} is a BiaPy key that segflow does not implement" in error_of(tree)


def test_settings_of_a_biapy_feature_that_is_off_are_notes() -> None:
    tree = {
        "DATA": {"PREPROCESS": {"CLAHE": {"ENABLE": False, "CLIP_LIMIT": 0.01}}},
        "AUGMENTOR": {"CBLUR_SIZE": "(0.2, 0.4)"},
        "MODEL": {"VIT_EMBED_DIM": 768},
        "TEST": {"BY_CHUNKS": {"WORKFLOW_PROCESS": {"ENABLE": True, "TYPE": "entire_pred"}}, "DET_TOLERANCE": [10]},
    }
    _, warnings = build_config(tree)
    because = {w.split(" is a BiaPy key")[0].removeprefix("config: "): w.split("ignored because ")[1] for w in warnings}
    assert because == {
        "DATA.PREPROCESS.CLAHE.ENABLE": "it is off (False)",
        "DATA.PREPROCESS.CLAHE.CLIP_LIMIT": "it only matters when DATA.PREPROCESS.CLAHE.ENABLE is on, which segflow refuses",
        "AUGMENTOR.CBLUR_SIZE": "it only matters when AUGMENTOR.CUTBLUR is on, which segflow refuses",
        "MODEL.VIT_EMBED_DIM": "it only applies to a MODEL.ARCHITECTURE that segflow does not have",
        "TEST.DET_TOLERANCE": "it belongs to another BiaPy workflow",
    }  # TEST.BY_CHUNKS.WORKFLOW_PROCESS: what segflow's prediction by chunks does, accepted without a word


@pytest.mark.parametrize("template", ["2d_semantic_segmentation.yaml", "3d_semantic_segmentation.yaml"])
def test_biapy_templates_with_data_paths_and_biapy_defaults_load(template: str, data2d: Path, data3d: Path) -> None:
    data = data3d if template.startswith("3d") else data2d
    paths = [f"DATA.{p}.{k}={data / p.lower() / d}" for p in ("TRAIN", "TEST") for k, d in (("PATH", "x"), ("GT_PATH", "y"))]
    defaults = ["MODEL.SOURCE=biapy", "TEST.VERBOSE=true", "DATA.TRAIN.RESOLUTION=(-1,)", "DATA.TEST.RESOLUTION=(1, 1)"]
    cfg, warnings = load_config(BIAPY_TEMPLATES / template, paths + defaults)
    assert warnings == []
    assert str(data / "train/x") == cfg.DATA.TRAIN.PATH and str(data / "test/y") == cfg.DATA.TEST.GT_PATH


def test_packaged_biapy_keys_are_biapy_3_5_10s() -> None:
    shipped = BIAPY_TEMPLATES / "biapy-3.5.10-config-keys.txt"
    lines = {line.strip() for line in shipped.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert biapy_keys() == lines
    assert len(lines) == 411


# BiaPy's names from before 3.5 that segflow still reads (3.5 replaced them with TEST.POST_PROCESSING.MEDIAN_FILTER*).
OLDER_BIAPY_KEYS = {f"TEST.POST_PROCESSING.{k}" for k in ("Z_FILTERING", "Z_FILTERING_SIZE", "YZ_FILTERING", "YZ_FILTERING_SIZE")}


def test_schema_keys_are_biapy_keys_or_marked_as_segflow_keys() -> None:
    extra = {k: f.description for k, f in schema_keys() if k not in biapy_keys() and k not in OLDER_BIAPY_KEYS}
    assert {"TRAIN.PRECISION", "TEST.BATCH_SIZE"} <= set(extra)
    undocumented = [k for k, d in extra.items() if not d.startswith("segflow key.")]
    assert undocumented == [], "keys that are not BiaPy's must say 'segflow key.' in their description"


# --------------------------------------------------------------------------------------------- relative paths
def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    tree = {
        "DATA": {
            "TRAIN": {"PATH": "data/train/x", "GT_PATH": "../shared/y"},
            "TEST": {"PATH": "/abs/test/x"},
        },
        "PATHS": {"CHECKPOINT_FILE": "ckpt/model.pth"},
        "MODEL": {"ARCHITECTURE": "unet"},
    }
    path = write_yaml(tmp_path / "project" / "cfg.yaml", tree)
    cfg, _ = load_config(Path("..") / "project" / "cfg.yaml")  # a relative --config, too
    folder = (tmp_path / "project").resolve()
    assert str(folder / "data/train/x") == cfg.DATA.TRAIN.PATH
    assert str(tmp_path.resolve() / "shared/y") == cfg.DATA.TRAIN.GT_PATH
    assert cfg.DATA.TEST.PATH == "/abs/test/x"
    assert str(folder / "ckpt/model.pth") == cfg.PATHS.CHECKPOINT_FILE
    assert cfg.PATHS.PROB_MAP_DIR == ""  # empty stays empty: it means "the default"
    assert path.exists()


def test_override_paths_resolve_against_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path / "project" / "cfg.yaml", {"DATA": {"TRAIN": {"PATH": "in_file"}}})
    (tmp_path / "shell").mkdir()
    monkeypatch.chdir(tmp_path / "shell")
    cfg, _ = load_config(path, ["DATA.TEST.PATH=typed/x", "DATA.TEST.GT_PATH=/abs/y"])
    assert str((tmp_path / "shell" / "typed/x").resolve()) == cfg.DATA.TEST.PATH
    assert cfg.DATA.TEST.GT_PATH == "/abs/y"
    assert str((tmp_path / "project" / "in_file").resolve()) == cfg.DATA.TRAIN.PATH


def test_home_in_paths_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write_yaml(tmp_path / "project" / "cfg.yaml", {"DATA": {"TRAIN": {"PATH": "~/data/x"}}})
    cfg, _ = load_config(path, ["DATA.TEST.PATH=~/data/t"])
    assert str(tmp_path / "home" / "data/x") == cfg.DATA.TRAIN.PATH
    assert str((tmp_path / "home" / "data/t").resolve()) == cfg.DATA.TEST.PATH


# --------------------------------------------------------------------------------------------- round trip
def test_config_to_yaml_round_trip(tmp_path: Path, data2d: Path) -> None:
    tree = tiny_config(
        data2d,
        AUGMENTOR={"ENABLE": True, "BRIGHTNESS_FACTOR": "(-0.2, 0.2)", "AFFINE_MODE": "constant"},
        TRAIN={"PRECISION": "32", "LR_SCHEDULER": {"NAME": "onecycle"}, "LR": 1e-5},
        DATA={"TEST": {"PADDING": "(4, 4)"}, "VAL": {"PATH": "/v/x", "GT_PATH": "/v/y"}},
        MODEL={"N_CLASSES": 3, "Z_DOWN": []},
    )
    cfg, _ = load_config(write_yaml(tmp_path / "a" / "c.yaml", tree))
    text = config_to_yaml(cfg)
    copy = tmp_path / "b" / "copy.yaml"
    copy.parent.mkdir()
    copy.write_text(text)
    again, warnings = load_config(copy)
    assert again == cfg
    assert again.model_dump() == cfg.model_dump()
    assert warnings == []
    # Every key is written out, defaults included.
    dumped = yaml.safe_load(text)
    flat = {f"{s}.{k}" for s, sec in dumped.items() for k in sec}
    assert "SYSTEM.PIN_MEM" in flat and "TRAIN.OPT_BETAS" in flat and "PATHS.PROB_MAP_DIR" in flat
    assert dumped["TRAIN"]["LR"] == pytest.approx(1e-5)


def test_default_config_round_trip() -> None:
    again, _ = build_config(yaml.safe_load(config_to_yaml(Config())))
    assert again == Config()


# --------------------------------------------------------------------------------------------- validation messages
def test_wrong_type_names_the_key_and_the_value(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"TRAIN": {"EPOCHS": "ten"}})
    with pytest.raises(SegflowError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: TRAIN.EPOCHS: ")
    assert "valid integer" in msg and "'ten'" in msg


@pytest.mark.parametrize("value", [-1, 0])
def test_non_positive_epochs_is_an_error(value: int) -> None:
    msg = error_of({"TRAIN": {"EPOCHS": value}})
    assert "TRAIN.EPOCHS" in msg and "greater than 0" in msg and f"(got {value})" in msg


def test_literal_error_lists_the_allowed_values() -> None:
    msg = error_of({"MODEL": {"ARCHITECTURE": "unet3"}})
    assert "MODEL.ARCHITECTURE" in msg
    assert "'unet', 'resunet', 'attention_unet', 'segresnet', 'seunet', 'multiresunet', 'resunet++', 'unetr', 'swinunetr' or 'flexible_unet'" in msg
    assert "'unet3'" in msg


def test_device_must_be_a_known_one() -> None:
    msg = error_of({"SYSTEM": {"DEVICE": "gpu"}})
    assert "SYSTEM.DEVICE" in msg and "'auto', 'cpu' or 'cuda'" in msg


def test_errors_in_overrides_name_the_key() -> None:
    msg = error_of({}, ("TRAIN.EPOCHS=ten",))
    assert "TRAIN.EPOCHS" in msg and "'ten'" in msg


def test_several_errors_are_reported_together() -> None:
    msg = error_of({"TRAIN": {"EPOCHS": "ten", "BATCH_SIZE": 0}})
    assert "TRAIN.EPOCHS" in msg and "TRAIN.BATCH_SIZE" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("ndim", "patch", "needs"),
    [("3D", "(64, 64, 1)", "needs 4: (z, y, x, channels)"), ("2D", "(8, 64, 64, 1)", "needs 3: (y, x, channels)")],
)
def test_patch_size_length_must_match_ndim(ndim: str, patch: str, needs: str) -> None:
    msg = error_of({"PROBLEM": {"NDIM": ndim}, "DATA": {"PATCH_SIZE": patch}})
    assert "DATA.PATCH_SIZE" in msg and f"PROBLEM.NDIM {ndim}" in msg and needs in msg
    assert not msg.startswith("config: config:")


def test_unparsable_tuple_names_the_key() -> None:
    msg = error_of({"DATA": {"PATCH_SIZE": "(64, 64, 1"}})
    assert "DATA.PATCH_SIZE" in msg and "tuple" in msg


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN:\n  EPOCHS: 5\n LR: 3\n")
    with pytest.raises(SegflowError, match=r"c\.yaml line 3, column 2: YAML syntax error"):
        load_config(path)


def test_key_given_twice_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN:\n  EPOCHS: 5\nMODEL:\n  N_CLASSES: 2\nTRAIN:\n  LR: 0.1\n")
    with pytest.raises(SegflowError, match=r"line 5, column 1: .*TRAIN is given twice"):
        load_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SegflowError, match=r"config file .*nope\.yaml not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- TRAIN\n- TEST\n")
    with pytest.raises(SegflowError, match="expected sections such as DATA: and TRAIN:, found a list"):
        load_config(path)


# --------------------------------------------------------------------------------------------- templates
@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_biapy_templates_load_as_is(template: Path) -> None:
    cfg, warnings = load_config(template)
    assert warnings == []
    assert cfg.TRAIN.OPTIMIZER == "ADAMW" and cfg.TRAIN.ENABLE and cfg.TEST.ENABLE
    expected = {
        "2d_semantic_segmentation": ("2D", (256, 256, 1), "unet", (32, 32), 1e-3),
        "3d_semantic_segmentation": ("3D", (80, 80, 80, 1), "resunet", (10, 10, 10), 1e-3),
        "wound_segmentation": ("2D", (256, 256, 1), "attention_unet", (32, 32), 1e-4),
    }[template.stem]
    ndim, patch, arch, padding, lr = expected
    assert ndim == cfg.PROBLEM.NDIM
    assert patch == cfg.DATA.PATCH_SIZE
    assert arch == cfg.MODEL.ARCHITECTURE
    assert padding == cfg.DATA.TEST.PADDING
    assert pytest.approx(lr) == cfg.TRAIN.LR
    assert cfg.DATA.TRAIN.PATH == "/path/to/data"


def test_found_templates() -> None:
    assert [p.name for p in TEMPLATES] == ["2d_semantic_segmentation.yaml", "3d_semantic_segmentation.yaml", "wound_segmentation.yaml"]


# --------------------------------------------------------------------------------------------- reference
def _rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0].strip("`")] = cells
    return rows


def test_committed_reference_is_up_to_date() -> None:
    assert DOCS.read_text() == reference_markdown(), "docs/config-reference.md is stale: run `segflow reference > docs/config-reference.md`"


def test_reference_lists_every_key_once_with_four_cells() -> None:
    rows = _rows(reference_markdown())
    assert set(rows) == set(LEAF_KEYS)
    assert all(len(cells) == 4 for cells in rows.values()), [k for k, c in rows.items() if len(c) != 4]
    fields = dict(schema_keys())
    for key, (_, _, _, meaning) in rows.items():
        assert meaning == fields[key].description.replace("|", "\\|")


def test_reference_shows_types_and_defaults() -> None:
    rows = _rows(reference_markdown())
    assert rows["TRAIN.EPOCHS"][1:3] == ["int", "`360`"]
    assert rows["DATA.PATCH_SIZE"][2] == "`(256, 256, 1)`"
    assert rows["MODEL.ARCHITECTURE"][1] == "'unet' \\| 'resunet' \\| 'attention_unet' \\| 'segresnet' \\| 'seunet' \\| 'multiresunet' \\| 'resunet++' \\| 'unetr' \\| 'swinunetr' \\| 'flexible_unet'"
    assert rows["AUGMENTOR.ENABLE"][2] == "`false`"


def test_other_workflow_keys_of_a_full_biapy_file_are_warnings():
    cfg, warnings = build_config({"PROBLEM": {"INSTANCE_SEG": {"DATA_CHANNELS": "BC"}}})
    assert cfg.PROBLEM.TYPE == "SEMANTIC_SEG"
    assert any("PROBLEM.INSTANCE_SEG.DATA_CHANNELS" in w and "another BiaPy workflow" in w for w in warnings)


@pytest.mark.parametrize("key", ["TRAIN", "VAL", "TEST"])
def test_overlap_of_one_is_refused_naming_the_key(key):
    with pytest.raises(SegflowError, match=rf"c.yaml: DATA.{key}.OVERLAP.0: Input should be less than 1 \(got 1.0\)"):
        build_config({"DATA": {key: {"OVERLAP": (1.0, 0.0)}}}, source="c.yaml")
    cfg, _ = build_config({"DATA": {key: {"OVERLAP": (0.5, 0.25)}}})
    assert getattr(cfg.DATA, key).OVERLAP == (0.5, 0.25)
