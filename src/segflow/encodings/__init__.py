"""Label encodings (``PROBLEM.SEMANTIC_SEG.ENCODING``): how a mask becomes training targets and how
network outputs become label images again. One ``Encoding`` object per encoding (see ``base.Encoding``
for the interface), chosen by name with ``get_encoding``; adding an encoding means one class and one
registry entry (plus its name in the schema's ENCODING choices).

Targets are channels-last arrays cut into patches like the images:
- ``categorical`` and ``region``: one int64 channel of class ids (the ignored id kept as is);
- ``bitmask`` and ``double_membrane``: one float32 0/1 channel per bit (class), NaN where ignored;
- ``linear`` and ``distance``: one float32 channel of values to regress, NaN where ignored.
The encoding is part of the config, which every checkpoint carries, so prediction decodes the same way.
"""

from __future__ import annotations

from segflow.config.schema import Config
from segflow.encodings.base import Encoding
from segflow.encodings.bitmask import Bitmask, DoubleMembrane, bits, double_membrane, from_bits
from segflow.encodings.categorical import Categorical
from segflow.encodings.region import Region, region_labels
from segflow.encodings.regression import Distance, Linear, distance_transform

ENCODINGS: dict[str, type[Encoding]] = {
    cls.name: cls for cls in (Categorical, Region, Bitmask, DoubleMembrane, Linear, Distance)
}

__all__ = [
    "ENCODINGS", "Encoding", "bits", "distance_transform", "double_membrane", "from_bits", "get_encoding",
    "region_labels",
]


def get_encoding(cfg: Config) -> Encoding:
    """The config's encoding object (``PROBLEM.SEMANTIC_SEG.ENCODING``)."""
    return ENCODINGS[cfg.PROBLEM.SEMANTIC_SEG.ENCODING](cfg)
