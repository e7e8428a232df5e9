"""Documentation generated from the schema: the config reference and ``segflow init``'s starting config."""

from __future__ import annotations

import json
import typing

from pydantic_core import PydanticUndefined

from segflow.config.loader import schema_keys

# Keys a starting config shows, by section, in the order a user fills them in.
INIT_KEYS = (
    "PROBLEM.NDIM",
    "DATA.PATCH_SIZE",
    "DATA.EXTRACT_RANDOM_PATCH",
    "DATA.NORMALIZATION.TYPE",
    "DATA.TRAIN.PATH",
    "DATA.TRAIN.GT_PATH",
    "DATA.VAL.SPLIT_TRAIN",
    "DATA.TEST.PATH",
    "DATA.TEST.GT_PATH",
    "DATA.TEST.PADDING",
    "AUGMENTOR.ENABLE",
    "AUGMENTOR.VFLIP",
    "AUGMENTOR.HFLIP",
    "AUGMENTOR.ZFLIP",
    "AUGMENTOR.ROT90",
    "MODEL.ARCHITECTURE",
    "MODEL.FEATURE_MAPS",
    "MODEL.N_CLASSES",
    "LOSS.TYPE",
    "TRAIN.ENABLE",
    "TRAIN.OPTIMIZER",
    "TRAIN.LR",
    "TRAIN.BATCH_SIZE",
    "TRAIN.EPOCHS",
    "TRAIN.PATIENCE",
    "TRAIN.LR_SCHEDULER.NAME",
    "TEST.ENABLE",
)

# A starting config differs from the schema defaults where a first run needs it.
INIT_VALUES = {
    "2D": {"DATA.PATCH_SIZE": "(256, 256, 1)", "DATA.TEST.PADDING": "(32, 32)"},
    "3D": {"DATA.PATCH_SIZE": "(32, 128, 128, 1)", "DATA.TEST.PADDING": "(4, 16, 16)", "AUGMENTOR.ZFLIP": True},
    "all": {
        "DATA.TRAIN.PATH": "data/train/x",
        "DATA.TRAIN.GT_PATH": "data/train/y",
        "DATA.TEST.PATH": "data/test/x",
        "DATA.TEST.GT_PATH": "data/test/y",
        "AUGMENTOR.ENABLE": True,
        "AUGMENTOR.VFLIP": True,
        "AUGMENTOR.HFLIP": True,
        "AUGMENTOR.ROT90": True,
        "DATA.EXTRACT_RANDOM_PATCH": True,
        "TRAIN.ENABLE": True,
        "TRAIN.OPTIMIZER": "ADAMW",
        "TRAIN.LR": 0.001,
        "TRAIN.BATCH_SIZE": 6,
        "TRAIN.EPOCHS": 100,
        "TRAIN.PATIENCE": 20,
        "TRAIN.LR_SCHEDULER.NAME": "onecycle",
        "TEST.ENABLE": True,
    },
}


def _type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:  # a constrained type: its bounds are in the description
        return _type_name(typing.get_args(annotation)[0])
    if origin is tuple and typing.get_args(annotation)[-1:] == (Ellipsis,):
        return f"tuple[{_type_name(typing.get_args(annotation)[0])}, ...]"
    if origin is list:  # a list of sections (MODEL.BMZ.EXPORT.AUTHORS): its entries' keys are in the description
        return f"list[{_type_name(typing.get_args(annotation)[0])}]"
    text = getattr(annotation, "__name__", None) if origin is None else str(annotation)
    return (text or str(annotation)).replace("typing.", "")


def _yaml_value(value: object) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(json.dumps(v) for v in value) + ")"
    if isinstance(value, str) and value.startswith("("):
        return value
    return json.dumps(value)


def reference_markdown() -> str:
    """Every config key: type, default and meaning, as a Markdown document."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `src/segflow/schema.py` by `segflow reference` (`make docs`); do not edit by hand.",
        "Keys follow BiaPy's names. Tuples may be written as in BiaPy, `(256, 256, 1)`, or as YAML lists.",
        "Relative data paths resolve against the config file's folder; `-D KEY=VALUE` overrides any key.",
        "",
    ]
    section = None
    for key, field in schema_keys():
        top = key.split(".")[0]
        if top != section:
            section = top
            lines += ["", f"## {section}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        default = field.default if field.default is not PydanticUndefined else None
        cells = (f"`{key}`", _type_name(field.annotation), f"`{_yaml_value(default)}`", field.description or "")
        # A '|' inside a cell (Literal types: 'unet' | 'resunet') would split the table row.
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def init_yaml(ndim: str) -> str:
    """A commented starting config for ``segflow init --ndim 2D|3D``."""
    values = {**INIT_VALUES["all"], **INIT_VALUES[ndim], "PROBLEM.NDIM": ndim}
    fields = dict(schema_keys())
    out = [
        f"# segflow starting config ({ndim} semantic segmentation). Every key: docs/config-reference.md",
        "# Run:  segflow check --config this.yaml   then   segflow run --config this.yaml --result_dir results --name myjob",
    ]
    section: list[str] = []
    for key in INIT_KEYS:
        *parents, leaf = key.split(".")
        common = 0
        while common < min(len(parents), len(section)) and parents[common] == section[common]:
            common += 1
        for depth in range(common, len(parents)):
            if depth == 0:
                out.append("")
            out.append("  " * depth + parents[depth] + ":")
        section = parents
        value = values.get(key, fields[key].default)
        indent = "  " * len(parents)
        out.append(f"{indent}# {fields[key].description}")
        out.append(f"{indent}{leaf}: {_yaml_value(value)}")
    return "\n".join(out) + "\n"
