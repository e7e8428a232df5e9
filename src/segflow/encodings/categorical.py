"""The ``categorical`` encoding: mask values are class ids."""

from __future__ import annotations

from segflow.encodings.base import Encoding


class Categorical(Encoding):
    """One int64 target channel of class ids (the ignored id kept as is)."""

    name = "categorical"

    def value_limit(self) -> int | None:
        return self.n
