"""GPUs that DRA drivers publish, per node, for the extender's GPU scoring.

A node whose GPUs come from a dynamic resource allocation (DRA) driver has none in its
allocatable: they are devices in ResourceSlices, given to pods through ResourceClaims. The
devices counted are those a DeviceClass serving one of the scored GPU resources selects
(``extendedResourceName``, or ``deviceclass.resource.kubernetes.io/<class>`` named among
them), as the planner counts them (dunnage.cluster.devices). Each is one GPU (a thousandth for
a ``-milli`` resource); it is in use while a ResourceClaim is allocated it.

Kept up to date from watch events, one object at a time: a ResourceSlice change recounts its
pool, a ResourceClaim change its devices, a DeviceClass change every pool. A malformed object
is set aside with a warning naming it and the field. Not thread-safe: NodeState's lock guards
it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from dunnage.cluster.devices import (
    allocated_devices,
    pod_claims,
    read_device_class,
    requested_devices,
    selected_devices,
    serving_classes,
    slice_pool,
)
from dunnage.cluster.fields import name_of
from dunnage.errors import InputError

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]
KINDS = ("DeviceClass", "ResourceSlice", "ResourceClaim")
_Pool = tuple[str, str]  # (driver, pool)


class DeviceGpus:
    """Per node, the GPUs DRA devices give the scored ``resources`` and those allocated."""

    def __init__(self, resources: Iterable[str], scale: Mapping[str, int]) -> None:
        self.resources = tuple(resources)
        self._scale = scale  # units per whole GPU, per resource
        self._classes: dict[str, tuple[tuple[str, ...], str | None, str]] = {}
        self._gpus_per_device: dict[str, float] = {}  # serving class -> GPUs per device
        self._selectors: dict[str, tuple[str, ...]] = {}  # serving class -> its selectors
        self._slice_pool: dict[str, _Pool] = {}  # ResourceSlice name -> its pool
        self._slices: dict[_Pool, dict[str, Obj]] = {}  # pool -> its slices by name
        self._pool_devices: dict[_Pool, tuple[str, ...]] = {}  # pool -> its GPU devices
        self._device: dict[str, tuple[str, float]] = {}  # driver/pool/device -> (node, GPUs)
        # claim -> (devices allocated, devices asked per class); device -> claims holding it
        self._claims: dict[tuple[str, str], tuple[tuple[str, ...], dict[str, int]]] = {}
        self._holders: dict[str, int] = {}
        self.capacity: dict[str, float] = {}  # node -> GPUs
        self.used: dict[str, float] = {}  # node -> GPUs allocated

    # --- feeding: each returns the nodes whose GPUs changed -------------------------------

    def reset(self, objects: Mapping[str, Iterable[Obj]]) -> None:
        """Start over from full lists, by kind."""
        self._classes, self._slice_pool, self._slices = {}, {}, {}
        self._claims, self._holders = {}, {}
        for obj in objects.get("DeviceClass", ()):
            self._read_class(obj)
        for obj in objects.get("ResourceSlice", ()):
            self._read_slice(obj)
        for obj in objects.get("ResourceClaim", ()):
            self._read_claim(obj)
        self._serve()

    def apply(self, event_type: str, kind: str, obj: Obj) -> set[str]:
        """One watch event of a kind in :data:`KINDS`."""
        deleted = event_type == "DELETED"
        if kind == "DeviceClass":
            before = self._counts()
            self._classes.pop(_name(obj, kind), None)
            if not deleted:
                self._read_class(obj)
            self._serve()
            after = self._counts()
            return {n for n in {*before, *after} if before.get(n) != after.get(n)}
        if kind == "ResourceSlice":
            name = _name(obj, kind)
            old = self._drop_slice(name)
            if not deleted:
                self._read_slice(obj)
            new = self._slice_pool.get(name)
            touched: set[str] = set()
            for pool in {pool for pool in (old, new) if pool is not None}:
                touched |= self._count_pool(pool)
            return touched
        if kind == "ResourceClaim":
            key = name_of(obj, kind) if _named(obj) else None
            if key is None:
                return set()
            old_devices = self._drop_claim(key)
            if not deleted:
                self._read_claim(obj)
            new_devices = self._claims.get(key, ((), {}))[0]
            return {self._device[d][0] for d in (*old_devices, *new_devices) if d in self._device}
        return set()

    # --- reading ---------------------------------------------------------------------------

    def asked(self, pod: Obj) -> float:
        """GPUs the pod's ResourceClaims ask (not what its containers ask; unknown claims
        ask none)."""
        try:
            namespace = name_of(pod, "Pod")[0]
            names = pod_claims(pod)
        except InputError:
            return 0.0  # kube-scheduler rejects such a pod
        total = 0.0
        for name in names:
            for class_name, number in self._claims.get((namespace, name), ((), {}))[1].items():
                total += number * self._gpus_per_device.get(class_name, 0.0)
        return total

    # --- internals -------------------------------------------------------------------------

    def _counts(self) -> dict[str, tuple[float, float]]:
        return {n: (c, self.used.get(n, 0.0)) for n, c in self.capacity.items()}

    def _read_class(self, obj: Obj) -> None:
        try:
            name, selectors, extended, created = read_device_class(obj)
        except InputError as exc:
            log.warning("DRA GPUs: %s; left out", exc)
            return
        self._classes[name] = (selectors, extended, created)

    def _read_slice(self, obj: Obj) -> None:
        try:
            pool = slice_pool(obj)
        except InputError as exc:
            log.warning("DRA GPUs: %s; left out", exc)
            return
        name = _name(obj, "ResourceSlice")
        self._slice_pool[name] = pool
        self._slices.setdefault(pool, {})[name] = obj

    def _drop_slice(self, name: str) -> _Pool | None:
        pool = self._slice_pool.pop(name, None)
        if pool is not None:
            members = self._slices[pool]
            del members[name]
            if not members:
                del self._slices[pool]
        return pool

    def _read_claim(self, obj: Obj) -> None:
        try:
            key = name_of(obj, "ResourceClaim")
            entry = (tuple(allocated_devices(obj)), requested_devices(obj))
        except InputError as exc:
            log.warning("DRA GPUs: %s; left out", exc)
            return
        self._claims[key] = entry
        self._hold(entry[0], +1)

    def _drop_claim(self, key: tuple[str, str]) -> tuple[str, ...]:
        devices = self._claims.pop(key, ((), {}))[0]
        self._hold(devices, -1)
        return devices

    def _hold(self, devices: Iterable[str], sign: int) -> None:
        for d in devices:
            self._holders[d] = self._holders.get(d, 0) + sign
            found = self._device.get(d)
            if found is not None:
                self.used[found[0]] = self.used.get(found[0], 0.0) + sign * found[1]

    def _serve(self) -> None:
        """The classes serving the resources, then every pool's devices."""
        serving = serving_classes(self._classes, self.resources)
        self._gpus_per_device = {c: 1.0 / self._scale.get(r, 1) for c, r in serving.items()}
        self._selectors = {c: self._classes[c][0] for c in serving}
        self._pool_devices, self._device, self.capacity, self.used = {}, {}, {}, {}
        for pool in self._slices:
            self._count_pool(pool)

    def _count_pool(self, pool: _Pool) -> set[str]:
        """Count the pool's devices afresh; the nodes they were or are on."""
        touched = set()
        for d in self._pool_devices.pop(pool, ()):
            node, gpus = self._device.pop(d)
            self._add(node, gpus, -1, self._holders.get(d, 0))
            touched.add(node)
        members = list(self._slices.get(pool, {}).values())
        if not members or not self._selectors:
            return touched
        try:
            selected = selected_devices(members, self._selectors)
        except InputError as exc:
            log.warning("DRA GPUs: %s; pool %s/%s left out", exc, *pool)
            return touched
        for d, (node, class_name) in selected.items():
            gpus = self._gpus_per_device[class_name]
            self._device[d] = (node, gpus)
            self._add(node, gpus, +1, self._holders.get(d, 0))
            touched.add(node)
        if selected:
            self._pool_devices[pool] = tuple(selected)
        return touched

    def _add(self, node: str, gpus: float, sign: int, holders: int) -> None:
        """A device of ``gpus`` on ``node`` counted (sign 1) or taken away (-1), with what the
        ``holders`` (claims allocated it) use."""
        self.capacity[node] = self.capacity.get(node, 0.0) + sign * gpus
        self.used[node] = self.used.get(node, 0.0) + sign * gpus * holders


def _named(obj: Obj) -> bool:
    meta = obj.get("metadata")
    return isinstance(meta, Mapping) and isinstance(meta.get("name"), str) and bool(meta["name"])


def _name(obj: Obj, kind: str) -> str:
    return name_of(obj, kind)[1] if _named(obj) else ""
