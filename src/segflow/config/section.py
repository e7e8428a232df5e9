"""The base of every config section, and the types sections share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# A window or patch-grid overlap per axis: a fraction in [0, 1) (1 would never advance).
Overlap = tuple[Annotated[float, Field(ge=0, lt=1)], ...]


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
