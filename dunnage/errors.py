"""Errors shared across the project."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message names the object and the field. The CLI exits 2 on it."""

    def __init__(self, message: str, *, obj: str | None = None, field: str | None = None) -> None:
        where = ", ".join(part for part in (obj, f"field {field}" if field else None) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.obj = obj
        self.field = field
