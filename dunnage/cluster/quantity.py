"""Resource quantities in the integer units kube-scheduler compares.

Parsing is the ``kubernetes`` package's own parser; this module only decides the unit each
resource is counted in: CPU in millicores, everything else in whole base units (bytes, GPUs,
pods), rounded up as the API server's ``Quantity.MilliValue()``/``Value()`` do.
"""

from __future__ import annotations

import functools
import math
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from dunnage.errors import InputError

CPU = "cpu"
MEMORY = "memory"
PODS = "pods"
GPU = "nvidia.com/gpu"


def to_units(
    resource: str, quantity: Any, *, obj: str | None = None, field: str | None = None
) -> int:
    """Parse one quantity (``"1500m"``, ``"64Gi"``, ``2``) into the integer unit of ``resource``."""
    try:
        return _units(resource == CPU, quantity)
    except _Refused as exc:
        raise InputError(f"{exc} {quantity!r}", obj=obj, field=field) from exc.__cause__
    except TypeError as exc:  # unhashable: a map or a list
        raise InputError(f"unparsable quantity {quantity!r}", obj=obj, field=field) from exc


def parse_quantities(raw: Mapping[str, Any] | None, *, obj: str, field: str) -> dict[str, int]:
    """A Kubernetes ResourceList (``{"cpu": "2", "memory": "4Gi"}``) in units, every name it
    has kept (zeros too)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InputError("expected a map of resource quantities", obj=obj, field=field)
    return {
        str(name): to_units(str(name), q, obj=obj, field=f"{field}.{name}")
        for name, q in raw.items()
    }


class _Refused(ValueError):
    pass


# A cluster's objects repeat a few quantities (and the loader reads each pod's requests from
# its spec and, resized in place, its status): parsing each once saves most of the time.
@functools.lru_cache(maxsize=16384)
def _units(cpu: bool, quantity: Any) -> int:
    try:
        value: Decimal = parse_quantity(quantity)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise _Refused("unparsable quantity") from exc
    if value.is_nan() or value.is_infinite():
        raise _Refused("unparsable quantity")
    if value < 0:
        raise _Refused("negative quantity")
    return math.ceil(value * 1000 if cpu else value)


class Resources(Mapping[str, int]):
    """An immutable, hashable resource vector; missing resources count as zero."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        # (a dict first: the abstract class's isinstance check is the slower one)
        pairs = items.items() if type(items) is dict or isinstance(items, Mapping) else items
        self._items: dict[str, int] = {k: int(v) for k, v in pairs if v}
        self._hash: int | None = None  # on first use: most vectors are never hashed

    # The Mapping mixins' views and get() go through __getitem__ per key; the dict's own are
    # the same (get: a missing resource is 0 whatever the default, as __getitem__ says) and
    # several times faster, which the loader and the planner feel.
    def items(self) -> ItemsView[str, int]:
        return self._items.items()

    def keys(self) -> KeysView[str]:
        return self._items.keys()

    def values(self) -> ValuesView[int]:
        return self._items.values()

    def get(self, key: str, default: object = None) -> int:
        return self._items.get(key, 0)

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None, *, obj: str, field: str) -> Resources:
        """Parse a Kubernetes ResourceList (``{"cpu": "2", "memory": "4Gi"}``)."""
        return cls(parse_quantities(raw, obj=obj, field=field))

    def __getitem__(self, key: str) -> int:
        return self._items.get(key, 0)

    def __contains__(self, key: object) -> bool:
        # Mapping's own asks __getitem__, which never fails here: every name would be "in".
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._items.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Resources):
            return self._items == other._items
        return NotImplemented

    def __repr__(self) -> str:
        return f"Resources({self._items!r})"

    def __add__(self, other: Mapping[str, int]) -> Resources:
        merged = dict(self._items)
        for k, v in other.items():
            merged[k] = merged.get(k, 0) + v
        return Resources(merged)

    def __sub__(self, other: Mapping[str, int]) -> Resources:
        merged = dict(self._items)
        for k, v in other.items():
            merged[k] = merged.get(k, 0) - v
        return Resources(merged)

    def maximum(self, other: Mapping[str, int]) -> Resources:
        keys = set(self._items) | set(other)
        return Resources((k, max(self[k], other.get(k, 0))) for k in keys)

    def fits_in(self, capacity: Mapping[str, int]) -> bool:
        """True when every requested amount is within ``capacity``."""
        return all(v <= capacity.get(k, 0) for k, v in self._items.items())

    def shortfall(self, capacity: Mapping[str, int]) -> list[str]:
        """Names of the resources that do not fit in ``capacity``."""
        return sorted(k for k, v in self._items.items() if v > capacity.get(k, 0))

    def to_quantities(self) -> dict[str, str]:
        """Back to Kubernetes quantity strings."""
        return {k: (f"{v}m" if k == CPU else str(v)) for k, v in sorted(self._items.items())}
