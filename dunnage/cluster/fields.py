"""Reading fields of Kubernetes objects given as plain dicts: a wrong shape raises an
:class:`InputError` naming the object and the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dunnage.errors import InputError

Obj = Mapping[str, Any]


def name_of(obj: Obj, kind: str) -> tuple[str, str]:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise InputError("missing name", obj=kind, field="metadata.name")
    namespace = meta.get("namespace") or (
        "default"
        if kind in ("Pod", "PodDisruptionBudget", "PersistentVolumeClaim", "ResourceClaim")
        else ""
    )
    return str(namespace), str(meta["name"])


def mapping(value: Any, *, obj: str, field: str) -> Mapping[str, Any]:
    if type(value) is dict:  # the usual case, without the abstract class's slower check
        return value
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError("expected an object", obj=obj, field=field)
    return value


def sequence(value: Any, *, obj: str, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError("expected a list", obj=obj, field=field)
    return value


def text(value: Any, *, obj: str, field: str) -> str:
    """A non-empty string field."""
    if not isinstance(value, str) or not value:
        raise InputError("expected a non-empty string", obj=obj, field=field)
    return value


def count(value: Any, *, obj: str, field: str, default: int) -> int:
    """A non-negative integer field (``default`` when absent)."""
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError("expected a non-negative integer", obj=obj, field=field)
    return value
