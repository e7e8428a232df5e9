"""segflow export --opset: another ONNX opset than the default, and an opset that torch cannot write or that
onnxruntime cannot run, each said in one line."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from segflow.errors import SegflowError
from segflow.export.base import Sample
from segflow.export.onnx_format import OnnxExporter


def test_an_older_opset_is_written_and_checked(checkpoint, tmp_path, cli) -> None:
    code, out, err = cli("export", checkpoint, "--format", "onnx", "--opset", "13", "--out", tmp_path / "m13.onnx")
    assert code == 0, err
    assert [o.version for o in onnx.load(str(tmp_path / "m13.onnx")).opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert float(out.strip().splitlines()[-1].rsplit(" ", 1)[1]) < 1e-4


@pytest.mark.parametrize(("args", "expected"), [
    (("--format", "onnx", "--opset", "30"), "--opset 30: torch 2.13.0 writes ONNX opsets 11 to 20 for segflow's networks"),
    (("--format", "torchscript", "--opset", "17"), "--opset 17: only --format onnx has an opset; drop --opset"),
])  # fmt: skip
def test_an_opset_torch_cannot_write_is_one_line(checkpoint, tmp_path, cli, args, expected) -> None:
    code, _, err = cli("export", checkpoint, *args, "--out", tmp_path / "m.x")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"segflow: error: {expected}")
    assert not (tmp_path / "m.x").exists()


def test_an_opset_the_runtime_lacks_is_one_line(tmp_path) -> None:
    """A file stamped with an opset newer than onnxruntime's (as from a newer exporter)."""
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["input"], ["output"])], "g",
                                   [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1])])  # fmt: skip
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 99)]), str(tmp_path / "new.onnx"))
    x = np.ones(1, np.float32)
    with pytest.raises(SegflowError, match=re.escape(f"{tmp_path / 'new.onnx'}: ONNX opset 99, which onnxruntime ") + r"[\d.]+ does not run \(it runs opsets up to \d+\); export with a lower --opset"):
        OnnxExporter().run(tmp_path / "new.onnx", Sample(x, x))
