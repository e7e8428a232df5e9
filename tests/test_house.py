"""The house rules that hold for the whole package: import order and cycles, a light prediction path,
file sizes, and dependencies pinned exactly when they are imported."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# The data flow, first to last: a module may import its own stage and the stages before it, never a later one.
# Stages on one rank (checkpoint/runtime; training/inference) are siblings; training and inference never
# import each other. `errors` and `progress` (console lines) are below everything; the package root and `__main__` are above everything.
RANKS = {
    "errors": 0, "progress": 0, "config": 1, "io": 2, "data": 3, "encodings": 4, "models": 5, "checkpoint": 6, "runtime": 6,
    "training": 7, "inference": 7, "evaluation": 8, "export": 8, "report": 9, "app": 10, "": 11, "__main__": 11,
}  # fmt: skip
NEVER = {("training", "inference"), ("inference", "training")}
# Backward imports allowed (none since issue 11; the set must only shrink).
KNOWN_BACKWARD: set[str] = set()


def _modules() -> dict[str, Path]:
    """``segflow.x.y`` -> its file, for every module under src/segflow."""
    mods = {}
    for path in (SRC / "segflow").rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        mods[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    return mods


def _imported_names(path: Path, module: str, at_import: bool = False) -> set[str]:
    """Every name that ``module`` (the file ``path``) imports anywhere, also inside functions, as absolute names;
    with ``at_import`` only what importing the module runs (its top-level import statements)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body if at_import else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _edges() -> dict[str, set[str]]:
    """Module -> the segflow modules it imports (the package above it excluded: importing a module runs it)."""
    mods = _modules()
    edges: dict[str, set[str]] = {}
    for module, path in mods.items():
        edges[module] = set()
        for name in _imported_names(path, module):
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                edges[module].add(name)
    return edges


def _stage(module: str) -> str:
    """``segflow.training.trainer`` -> ``training``; the package root -> ``""``."""
    return module.split(".")[1] if "." in module else ""


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        state[v] = 1
        stack.append(v)
        for w in sorted(edges[v]):
            if state.get(w) == 1:
                found.append([*stack[stack.index(w) :], w])
            elif w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in sorted(edges):
        if v not in state:
            visit(v)
    return found


def test_no_import_cycle_between_segflow_modules():
    assert _cycles(_edges()) == []


def test_no_module_imports_against_the_data_flow():
    wrong = []
    for module, targets in _edges().items():
        for target in targets:
            a, b = _stage(module), _stage(target)
            if a != b and (RANKS[b] > RANKS[a] or (a, b) in NEVER):
                wrong.append(f"{module} imports {target}")
    assert sorted(set(wrong) - KNOWN_BACKWARD) == []


def test_the_flow_check_sees_a_backward_import(tmp_path):
    """The walk resolves relative and function-level imports, so a late import cannot hide from the checks."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from ..training import trainer\n    from . import windows\n")
    assert _imported_names(path, "segflow.inference.m") >= {"segflow.training.trainer", "segflow.inference.windows"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_source_file_exceeds_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_prediction_loads_neither_lightning_nor_torchmetrics(checkpoint):
    """Predicting needs no training stack: in a fresh interpreter, the prediction modules and
    ``segflow.load_model`` on a real checkpoint leave ``lightning`` and ``torchmetrics`` unimported.

    ``import monai`` itself imports TensorBoard whenever it is installed (it is, for training), so
    ``tensorboard`` in ``sys.modules`` says nothing about segflow; instead no segflow module loaded on
    this path may import TensorBoard (or Lightning, or torchmetrics) when it is imported (an import inside a
    function that prediction never calls, such as the training IoU metric's, is allowed).
    """
    script = (
        "import json, sys, numpy as np, segflow, segflow.app.predict, segflow.inference.predictor\n"
        f"model = segflow.load_model({str(checkpoint)!r}, 'cpu')\n"
        "probs = model.predict(np.zeros((64, 64, 1), np.float32))\n"
        "print(json.dumps({'shape': list(probs.shape), 'modules': sorted(sys.modules)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["shape"] == [64, 64, 1]  # one foreground channel
    loaded = set(report["modules"])
    heavy = ("lightning", "pytorch_lightning", "lightning_fabric", "torchmetrics")
    assert sorted(m for m in loaded if m.split(".")[0] in heavy) == []
    mods = _modules()
    banned = re.compile(r"(lightning|torchmetrics|tensorboard)\b|torch\.utils\.tensorboard")
    direct = {m: sorted(n for n in _imported_names(mods[m], m, at_import=True) if banned.match(n)) for m in loaded & set(mods)}
    assert {m: names for m, names in direct.items() if names} == {}


# Distribution name -> the import name, where they differ.
IMPORT_NAME = {"PyYAML": "yaml", "Pillow": "PIL", "pydantic-core": "pydantic_core", "ome-zarr": "ome_zarr", "bioimageio.spec": "bioimageio",
               "bioimageio.core": "bioimageio"}  # fmt: skip
RUN_ONLY = {"tensorboard"}  # needed at run time by Lightning's TensorBoardLogger, never imported by name
TOOLS = {"pytest", "ruff"}  # run as commands (pytest is also imported by the tests)


def _pins(group: list[str]) -> dict[str, str]:
    """``"name==version"`` strings -> {import name: version}; every entry must pin one exact version."""
    pins = {}
    for entry in group:
        name, sep, version = entry.partition("==")
        assert sep and re.fullmatch(r"[\w.]+", version), f"{entry!r} does not pin one exact version"
        pins[IMPORT_NAME.get(name, name)] = version
    return pins


def _third_party(folders: list[Path]) -> set[str]:
    """The top-level names of non-standard, non-project imports in every .py file under ``folders``."""
    own = {"segflow", "bench", "conftest"} | {p.stem for p in (ROOT / "tests").rglob("*.py")}
    found = set()
    for folder in folders:
        for path in folder.rglob("*.py"):
            for name in _imported_names(path, "x.y"):
                top = name.split(".")[0]
                if top and top not in sys.stdlib_module_names and top not in own and top != "__future__":
                    found.add(top)
    return found


def test_dependencies_are_exactly_what_the_code_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _pins(project["dependencies"])
    dev = _pins(project["optional-dependencies"]["dev"])
    assert set(runtime) - RUN_ONLY == _third_party([SRC, ROOT / "bench"])
    assert _third_party([ROOT / "tests"]) <= set(runtime) | set(dev)
    assert set(dev) - TOOLS <= _third_party([ROOT / "tests"])
