"""Exporting a trained model for other software: one ``Exporter`` per format, chosen by name (``get_exporter``).

Every format holds the same module (``base.activated``): the network with its encoding's activation, in fp32,
taking the normalised image ``(N, C, y, x)`` or ``(N, C, z, y, x)`` and giving the activated outputs ``(N, K, ...)``
(class probabilities); the normalisation it expects is written into the file's metadata and said by
``segflow export``. A new format is one module here with a ``write`` and a ``run``.
"""

from __future__ import annotations

from segflow.errors import SegflowError
from segflow.export.base import Exporter
from segflow.export.bioimageio_format import BioimageioExporter
from segflow.export.onnx_format import OnnxExporter
from segflow.export.torchscript_format import TorchScriptExporter

EXPORTERS: dict[str, Exporter] = {e.name: e for e in (OnnxExporter(), TorchScriptExporter(), BioimageioExporter())}


def get_exporter(name: str) -> Exporter:
    """The exporter of format ``name`` (``onnx``, ``torchscript``, ``bioimageio``)."""
    if name not in EXPORTERS:
        raise SegflowError(f"--format {name}: not a format segflow writes; choose one of {', '.join(EXPORTERS)}")
    return EXPORTERS[name]
