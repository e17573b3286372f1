"""Errors shared across the project."""

from __future__ import annotations

import math


class InputError(ValueError):
    """Bad user input: the message names the object and the field. The CLI exits 2 on it."""

    def __init__(self, message: str, *, obj: str | None = None, field: str | None = None) -> None:
        where = ", ".join(part for part in (obj, f"field {field}" if field else None) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.obj = obj
        self.field = field


def require_positive(value: float | None, name: str) -> None:
    """An InputError naming ``name`` unless ``value`` is a positive finite number (None: not
    given). ``value <= 0`` alone lets NaN through."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InputError("must be a positive number", obj=name)
