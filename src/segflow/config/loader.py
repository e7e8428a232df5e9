"""Load a YAML config: BiaPy tuple syntax, ``-D KEY=VALUE`` overrides, clear errors, relative paths.

Every problem becomes a ``SegflowError`` whose message names the key and says what is allowed.
"""

from __future__ import annotations

import ast
import difflib
import functools
import os
import re
import typing
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from segflow.config.biapy_compat import ignored_because, means_what_segflow_does
from segflow.config.bmz import read_package, segflow_part, source_package
from segflow.config.model_keys import network_keys
from segflow.config.schema import Config
from segflow.errors import SegflowError

# Keys holding data paths: relative values resolve against the config file's folder.
PATH_KEYS = (
    "DATA.TRAIN.PATH",
    "DATA.TRAIN.GT_PATH",
    "DATA.VAL.PATH",
    "DATA.VAL.GT_PATH",
    "DATA.TEST.PATH",
    "DATA.TEST.GT_PATH",
    "PATHS.CHECKPOINT_FILE",
    "PATHS.PROB_MAP_DIR",
)


def schema_keys(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted_key, field_info)`` for every leaf key of the schema."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            yield from schema_keys(sub, key + ".")
        else:
            yield key, field


def _section_keys(model: type[BaseModel] = Config, prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            keys.add(prefix + name)
            keys |= _section_keys(sub, prefix + name + ".")
    return keys


LEAF_KEYS = frozenset(k for k, _ in schema_keys())
SECTION_KEYS = frozenset(_section_keys())
TOP_SECTIONS = tuple(Config.model_fields)


def _is_text_field(annotation: Any) -> bool:
    """A ``str`` key, or a Literal of strings (e.g. TRAIN.PRECISION '32')."""
    if annotation is str:
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    return False


TEXT_KEYS = frozenset(k for k, f in schema_keys() if _is_text_field(f.annotation))


def _is_number_field(annotation: Any) -> bool:
    """An ``int`` or ``float`` key, or a tuple/list of them (e.g. DATA.PATCH_SIZE)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return bool(args) and all(a in (int, float) for a in args)
    return False


# pydantic reads true/false as 1/0 for a number; in a config that is a mistake (TRAIN.EPOCHS: true).
NUMBER_KEYS = frozenset(k for k, f in schema_keys() if _is_number_field(f.annotation))


def _holds_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value)


@functools.cache
def biapy_keys() -> frozenset[str]:
    """Leaf keys of BiaPy 3.5.10's configuration."""
    text = resources.files("segflow.config").joinpath("biapy_keys.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


@functools.cache
def biapy_sections() -> frozenset[str]:
    """Sections (every dotted prefix) of BiaPy 3.5.10's configuration."""
    out = set()
    for key in biapy_keys():
        parts = key.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return frozenset(out)


def _parse_tuples(value: Any) -> Any:
    """Turn BiaPy's tuple strings, e.g. ``'(256, 256, 1)'``, into tuples, recursively."""
    if isinstance(value, dict):
        return {k: _parse_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_parse_tuples(v) for v in value]
    if isinstance(value, str):
        text = value.strip()
        if (text.startswith("(") and text.endswith(")")) or (text.startswith("[") and text.endswith("]")):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return value
            return tuple(parsed) if isinstance(parsed, (tuple, list)) else (parsed,)
    return value


def _flatten(tree: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in LEAF_KEYS:
            yield from _flatten(value, dotted + ".")
        elif not (value is None and dotted in SECTION_KEYS):  # an empty section, e.g. "LOSS:" alone
            yield dotted, value


def _is_disabled(value: Any) -> bool:
    """A value that turns a feature off: such unsupported BiaPy keys are harmless."""
    if isinstance(value, dict):
        return all(_is_disabled(v) for v in value.values())
    return value in (False, None, "", 0) or value == [] or value == ()


# Settings of BiaPy's other workflows: a full BiaPy config file carries them, and they cannot change a
# semantic segmentation, so they are reported, not refused.
OTHER_WORKFLOWS = tuple(
    f"PROBLEM.{w}." for w in ("INSTANCE_SEG", "DETECTION", "DENOISING", "SUPER_RESOLUTION", "SELF_SUPERVISED", "CLASSIFICATION", "IMAGE_TO_IMAGE")
) + tuple(  # the ids, partners and locations of BiaPy's synapse detection in Zarr/HDF5 files
    f"{part}.INPUT_ZARR_MULTIPLE_DATA_{what}_PATH" for part in ("DATA.TRAIN", "DATA.VAL", "TEST.BY_CHUNKS")
    for what in ("ID", "PARTNERS", "LOCATIONS", "RESOLUTION")
)


def _check_keys(flat: Iterable[tuple[str, Any]], source: str) -> tuple[dict[str, Any], list[str]]:
    """Split user keys into known ones and warnings; raise on unknown or unsupported keys."""
    known: dict[str, Any] = {}
    warnings: list[str] = []
    biapy = biapy_keys()
    for key, value in flat:
        if key in LEAF_KEYS:
            if key in TEXT_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)  # YAML reads PRECISION: 32 or PATH: 2024 as numbers
            if key in NUMBER_KEYS and _holds_bool(value):
                what = "a number" if isinstance(value, bool) else "numbers"
                raise SegflowError(
                    f"{source}: {key}: expected {what}, not true/false (got {value!r}); write {what} (the default is {_default(key)!r})"
                )
            known[key] = value
            continue
        if key in SECTION_KEYS:
            example = next(k for k, _ in schema_keys() if k.startswith(key + "."))
            raise SegflowError(
                f"{source}: {key} is a section, not a key: put its keys under it (e.g. {example}) instead of the value {value!r}"
            )
        if key in biapy or key in biapy_sections():
            if means_what_segflow_does(key, value):
                continue  # e.g. MODEL.SOURCE: biapy, DATA.TRAIN.RESOLUTION: (-1,)
            if key.startswith(OTHER_WORKFLOWS):
                why: str | None = "it belongs to another BiaPy workflow"
            else:
                why = f"it is off ({value!r})" if _is_disabled(value) else ignored_because(key, biapy, LEAF_KEYS)
            if why is not None:
                warnings.append(f"{source}: {key} is a BiaPy key that segflow does not implement; ignored because {why}")
                continue
            raise SegflowError(
                f"{source}: {key} is a BiaPy key that segflow does not implement (value {value!r}); "
                f"remove it, or set it to false to ignore it (see docs/config-reference.md for what segflow supports)"
            )
        raise SegflowError(f"{source}: unknown config key {key}{_suggest(str(key))}")
    return known, warnings


def _default(key: str) -> Any:
    field = dict(schema_keys())[key]
    return field.get_default(call_default_factory=True)


def _suggest(key: str) -> str:
    """``; did you mean X?`` for a mistyped key (case-insensitive), or where to look."""
    upper = {k.upper(): k for k in sorted(LEAF_KEYS)}
    hint = difflib.get_close_matches(key.upper(), list(upper), n=1, cutoff=0.6)
    if not hint:
        last = key.rsplit(".", 1)[-1].upper()
        hint = [k for k in upper if k.rsplit(".", 1)[-1] == last][:1]
    if hint:
        return f"; did you mean {upper[hint[0]]}?"
    top = key.split(".", 1)[0]
    if top.upper() not in TOP_SECTIONS:
        return f" ({top} is not a section; the sections are {', '.join(TOP_SECTIONS)})"
    return "; see docs/config-reference.md for every key"


def _check_path_text(path: str, key: str, source: str) -> None:
    """A NUL character cannot be in a file name (os functions raise ValueError on it)."""
    if "\x00" in path:
        raise SegflowError(f"{source}: {key}: the path {path!r} holds a NUL character; give a real folder or file name")


def _nest(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``KEY=VALUE`` from ``-D``; the value is read as YAML, so ``5``, ``true``, ``(1, 2)`` work."""
    if "=" not in text:
        raise SegflowError(f"-D {text}: expected KEY=VALUE, e.g. -D TRAIN.EPOCHS=5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key in TEXT_KEYS:  # a path or a name: keep what was typed (2024, yes, 1e3 stay text)
        return key, raw.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):
        value = raw
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as text
    try:
        return key, _parse_tuples(value)
    except RecursionError:  # '&a [*a]' holds itself
        raise SegflowError(f"-D {key}: the value is nested too deeply or holds itself; give a plain value") from None


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _format_validation(err: ValidationError, source: str, overridden: Iterable[str] = ()) -> str:
    """One line for all of pydantic's errors; a key set with ``-D`` is blamed on ``-D``, not on the file."""
    overridden = set(overridden)
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        msg = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        where = "-D" if any(key == k or key.startswith(k + ".") for k in overridden) else source
        lines.append(f"{where}: {key + ': ' if key else ''}{msg}{shown}")
    return "; ".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' merges, as YAML allows; explicit keys win
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a name, not a {type(key).__name__}", key_node.start_mark
                ) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key} is given twice in the same section (the first would be ignored); merge them", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping; a syntax error names the line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SegflowError(f"config file {path} not found; check the path given to --config") from None
    except UnicodeDecodeError as exc:
        raise SegflowError(
            f"config file {path} is not a text file ({exc.reason} at byte {exc.start}); give the YAML config, saved as UTF-8 text"
        ) from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SegflowError(f"config file {path} cannot be read ({reason}); give a readable YAML file to --config") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except RecursionError:
        raise SegflowError(f"config file {path}: nested too deeply to read; write plain sections and keys") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SegflowError(f"config file {path}{where}: YAML syntax error: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SegflowError(f"config file {path}: expected sections such as DATA: and TRAIN:, found a {type(data).__name__}")
    return data


def build_config(
    tree: dict | None = None,
    overrides: Iterable[str] = (),
    base_dir: str | os.PathLike | None = None,
    source: str = "config",
) -> tuple[Config, list[str]]:
    """Validate a nested dict plus ``-D`` overrides into a ``Config``; return it and any warnings.

    Relative data paths in ``tree`` resolve against ``base_dir``; those given as overrides resolve
    against the current folder (they were typed in the user's shell).
    """
    try:
        return _build_config(tree, overrides, base_dir, source)
    except RecursionError:  # a YAML alias inside itself (TRAIN: &a {EPOCHS: *a}) or absurdly deep nesting
        raise SegflowError(f"{source}: a value is nested too deeply or holds itself (a YAML alias inside itself); write plain sections and keys") from None


def _build_config(
    tree: dict | None, overrides: Iterable[str], base_dir: str | os.PathLike | None, source: str
) -> tuple[Config, list[str]]:
    known, warnings = _check_keys(_flatten(_parse_tuples(tree or {})), source)
    for key in PATH_KEYS:
        if isinstance(known.get(key), str) and known[key]:
            _check_path_text(known[key], key, source)
            path = os.path.expanduser(known[key])
            if base_dir is not None and not os.path.isabs(path):
                path = str((Path(base_dir) / path).resolve())
            known[key] = path
    over: dict[str, Any] = {}
    for text in overrides:
        key, value = parse_override(text)
        over[key] = value
    over_known, over_warnings = _check_keys(_flatten(over), "-D")
    for key in PATH_KEYS:
        if isinstance(over_known.get(key), str) and over_known[key]:
            _check_path_text(over_known[key], key, "-D")
            over_known[key] = str(Path(over_known[key]).expanduser().resolve())
    known.update(over_known)
    if str(known.get("MODEL.SOURCE", "")).lower() == "bmz":
        _from_source_package(known, None if "MODEL.BMZ.SOURCE_MODEL_ID" in over_known else base_dir)
    try:
        cfg = Config.model_validate(_nest(known))
    except ValidationError as exc:
        raise SegflowError(_format_validation(exc, source, over_known)) from None
    return cfg, warnings + over_warnings


def _from_source_package(known: dict[str, Any], base_dir: str | os.PathLike | None) -> None:
    """MODEL.SOURCE bmz: every key of the package's network, patch size and normalisation that ``known`` (the user's
    keys) lacks, from the package's stored config; its weights as PATHS.CHECKPOINT_FILE with MODEL.LOAD_CHECKPOINT."""
    path = source_package(str(known.get("MODEL.BMZ.SOURCE_MODEL_ID", "")), None if base_dir is None else Path(base_dir))
    saved = dict(_flatten(segflow_part(path, read_package(path)[0])["config"]))
    for key in (*network_keys(), "DATA.PATCH_SIZE", *(k for k in saved if k.startswith("DATA.NORMALIZATION."))):
        known.setdefault(key, saved[key])
    if known.get("PATHS.CHECKPOINT_FILE") not in (None, "", str(path)):
        raise SegflowError(f"PATHS.CHECKPOINT_FILE {known['PATHS.CHECKPOINT_FILE']}: MODEL.SOURCE bmz takes the weights of "
                           f"MODEL.BMZ.SOURCE_MODEL_ID {path}; leave PATHS.CHECKPOINT_FILE empty, or set MODEL.SOURCE biapy")  # fmt: skip
    # As in BiaPy, the package's weights are used whatever MODEL.LOAD_CHECKPOINT says (BiaPy's files often say false).
    known.update({"MODEL.BMZ.SOURCE_MODEL_ID": str(path), "PATHS.CHECKPOINT_FILE": str(path), "MODEL.LOAD_CHECKPOINT": True})


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> tuple[Config, list[str]]:
    """Load and validate a YAML config file with ``-D`` overrides; return it and any warnings."""
    path = Path(path)
    return build_config(read_yaml(path), overrides, base_dir=path.resolve().parent, source=str(path))


def config_to_yaml(cfg: Config) -> str:
    """The full config (every key, defaults included) as YAML that ``load_config`` reads back."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
