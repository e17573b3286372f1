"""GPUs that DRA drivers publish, per node, for the extender's GPU scoring.

A node whose GPUs come from a dynamic resource allocation (DRA) driver has none in its
allocatable: they are devices in ResourceSlices, given to pods through ResourceClaims. The
devices counted are those a DeviceClass serving one of the scored GPU resources selects
(``extendedResourceName``, or ``deviceclass.resource.kubernetes.io/<class>`` named among
them), as the planner counts them (dunnage.cluster.devices). Each is one GPU (a thousandth for
a ``-milli`` resource); it is in use while a ResourceClaim is allocated it.

A whole partitionable device (a GPU a driver offers whole and as MIG slices, all drawing on
one counter set) is in use while any device drawing on its counters is allocated.

Devices a taint blocks (their slice's, or a DeviceTaintRule's) are not counted.

Kept up to date from watch events, one object at a time: a ResourceSlice change recounts its
pool, a ResourceClaim change its devices, a DeviceClass or DeviceTaintRule change every pool.
A malformed object is set aside with a warning naming it and the field. Not thread-safe:
NodeState's lock guards it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from dunnage.cluster.devices import (
    TaintRule,
    allocated_devices,
    pod_claims,
    read_device_class,
    read_taint_rule,
    requested_devices,
    selected_devices,
    serving_classes,
    slice_pool,
)
from dunnage.cluster.fields import name_of
from dunnage.errors import InputError

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]
KINDS = ("DeviceClass", "ResourceSlice", "ResourceClaim", "DeviceTaintRule")
_Pool = tuple[str, str]  # (driver, pool)
# What an allocation takes: ("device", driver/pool/device) for a device drawing on no
# counters, else ("counters", driver/pool/set) for each counter set it draws on.
_Key = tuple[str, str]


class DeviceGpus:
    """Per node, the GPUs DRA devices give the scored ``resources`` and those allocated."""

    def __init__(self, resources: Iterable[str], scale: Mapping[str, int]) -> None:
        self.resources = tuple(resources)
        self._scale = scale  # units per whole GPU, per resource
        self._classes: dict[str, tuple[tuple[str, ...], str | None, str]] = {}
        self._rules: dict[str, TaintRule] = {}  # DeviceTaintRules blocking some device
        self._gpus_per_device: dict[str, float] = {}  # serving class -> GPUs per device
        self._selectors: dict[str, tuple[str, ...]] = {}  # serving class -> its selectors
        self._slice_pool: dict[str, _Pool] = {}  # ResourceSlice name -> its pool
        self._slices: dict[_Pool, dict[str, Obj]] = {}  # pool -> its slices by name
        self._pool_devices: dict[_Pool, tuple[str, ...]] = {}  # pool -> its GPU devices
        self._device: dict[str, tuple[str, float]] = {}  # driver/pool/device -> (node, GPUs)
        # devices drawing on counter sets -> those sets; pool -> such devices of it
        self._draws: dict[str, frozenset[str]] = {}
        self._pool_draws: dict[_Pool, tuple[str, ...]] = {}
        # claim -> (devices allocated, devices asked per class); device -> claims holding it
        self._claims: dict[tuple[str, str], tuple[tuple[str, ...], dict[str, int]]] = {}
        self._holders: dict[str, int] = {}
        self._drawn: dict[_Key, int] = {}  # what allocations take, counted
        self._users: dict[_Key, set[str]] = {}  # GPU devices by what allocating them takes
        self.capacity: dict[str, float] = {}  # node -> GPUs
        self.used: dict[str, float] = {}  # node -> GPUs in use

    # --- feeding: each returns the nodes whose GPUs changed -------------------------------

    def reset(self, objects: Mapping[str, Iterable[Obj]]) -> None:
        """Start over from full lists, by kind."""
        self._classes, self._slice_pool, self._slices = {}, {}, {}
        self._claims, self._holders, self._rules = {}, {}, {}
        for obj in objects.get("DeviceClass", ()):
            self._read_class(obj)
        for obj in objects.get("DeviceTaintRule", ()):
            self._read_rule(obj)
        for obj in objects.get("ResourceSlice", ()):
            self._read_slice(obj)
        for obj in objects.get("ResourceClaim", ()):
            self._read_claim(obj)
        self._serve()

    def apply(self, event_type: str, kind: str, obj: Obj) -> set[str]:
        """One watch event of a kind in :data:`KINDS`."""
        deleted = event_type == "DELETED"
        if kind in ("DeviceClass", "DeviceTaintRule"):
            before = self._counts()
            if kind == "DeviceClass":
                self._classes.pop(_name(obj, kind), None)
                if not deleted:
                    self._read_class(obj)
            else:
                self._rules.pop(_name(obj, kind), None)
                if not deleted:
                    self._read_rule(obj)
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
            try:
                key = name_of(obj, kind)
            except InputError:
                return set()  # no name: never listed, nothing to drop
            touched = self._drop_claim(key)
            if not deleted:
                touched |= self._read_claim(obj)
            return touched
        return set()

    # --- reading ---------------------------------------------------------------------------

    def asked(self, pod: Obj) -> float:
        """GPUs the pod's ResourceClaims ask (not what its containers ask; unknown claims
        ask none, nor does a claim it names that is allocated already: its devices are
        taken, by the pods sharing it)."""
        try:
            namespace = name_of(pod, "Pod")[0]
            names = pod_claims(pod)
        except InputError:
            return 0.0  # kube-scheduler rejects such a pod
        total = 0.0
        for name, named in names:
            allocated, requested = self._claims.get((namespace, name), ((), {}))
            for class_name, number in () if named and allocated else requested.items():
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

    def _read_rule(self, obj: Obj) -> None:
        try:
            rule = read_taint_rule(obj)
        except InputError as exc:
            log.warning("DRA GPUs: %s; left out", exc)
            return
        if rule is not None:
            self._rules[_name(obj, "DeviceTaintRule")] = rule

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

    def _read_claim(self, obj: Obj) -> set[str]:
        try:
            key = name_of(obj, "ResourceClaim")
            entry = (tuple(allocated_devices(obj)), requested_devices(obj))
        except InputError as exc:
            log.warning("DRA GPUs: %s; left out", exc)
            return set()
        self._claims[key] = entry
        return self._hold(entry[0], +1)

    def _drop_claim(self, key: tuple[str, str]) -> set[str]:
        return self._hold(self._claims.pop(key, ((), {}))[0], -1)

    def _hold(self, devices: Iterable[str], sign: int) -> set[str]:
        """Devices allocated (sign 1) or freed (-1); the nodes whose GPUs in use changed."""
        touched: set[str] = set()
        for d in devices:
            self._holders[d] = self._holders.get(d, 0) + sign
            touched |= self._draw(self._takes(d, self._draws.get(d)), sign)
        return touched

    def _takes(self, device: str, draws: frozenset[str] | None) -> tuple[_Key, ...]:
        """What allocating ``device`` takes (``draws``: the counter sets it draws on)."""
        return tuple(("counters", c) for c in draws) if draws else (("device", device),)

    def _in_use(self, device: str) -> bool:
        return any(self._drawn.get(k, 0) > 0 for k in self._takes(device, self._draws.get(device)))

    def _draw(self, keys: Iterable[_Key], sign: int) -> set[str]:
        """Allocations taking ``keys`` made (sign 1) or undone (-1); the nodes whose GPUs in
        use changed."""
        keys = tuple(keys)
        users = {d for k in keys for d in self._users.get(k, ())}
        before = {d: self._in_use(d) for d in users}
        for k in keys:
            self._drawn[k] = self._drawn.get(k, 0) + sign
        touched = set()
        for d, was in before.items():
            if self._in_use(d) != was:
                node, gpus = self._device[d]
                self.used[node] = self.used.get(node, 0.0) + (-gpus if was else gpus)
                touched.add(node)
        return touched

    def _serve(self) -> None:
        """The classes serving the resources, then every pool's devices."""
        serving = serving_classes(self._classes, self.resources)
        self._gpus_per_device = {c: 1.0 / self._scale.get(r, 1) for c, r in serving.items()}
        self._selectors = {c: self._classes[c][0] for c in serving}
        self._pool_devices, self._device, self._users = {}, {}, {}
        self._draws, self._pool_draws, self.capacity, self.used = {}, {}, {}, {}
        self._drawn = {}
        for d, holders in self._holders.items():  # as drawing on no counters, until counted
            if holders:
                self._drawn[("device", d)] = holders
        for pool in self._slices:
            self._count_pool(pool)

    def _count_pool(self, pool: _Pool) -> set[str]:
        """Count the pool's devices afresh; the nodes they were or are on."""
        touched = set()
        for d in self._pool_devices.pop(pool, ()):
            node, gpus = self._device[d]
            self.capacity[node] -= gpus
            self.used[node] -= gpus if self._in_use(d) else 0.0
            for k in self._takes(d, self._draws.get(d)):
                self._users[k].discard(d)
            del self._device[d]
            touched.add(node)
        old = {d: self._draws.pop(d) for d in self._pool_draws.pop(pool, ())}
        selected: dict[str, tuple[str, str]] = {}
        new: dict[str, frozenset[str]] = {}
        members = list(self._slices.get(pool, {}).values())
        if members and self._selectors:  # no class serving GPUs: nothing to count
            try:
                selected, new = selected_devices(members, self._selectors, self._rules.values())
            except InputError as exc:
                log.warning("DRA GPUs: %s; pool %s/%s left out", exc, *pool)
        # Allocations of the pool's devices take what the devices draw on now.
        for d in old.keys() | new.keys():
            holders = self._holders.get(d, 0)
            if holders:
                self._draw(self._takes(d, old.get(d)), -holders)
                self._draw(self._takes(d, new.get(d)), holders)
        self._draws.update(new)
        if new:
            self._pool_draws[pool] = tuple(new)
        for d, (node, class_name) in selected.items():
            gpus = self._gpus_per_device[class_name]
            self._device[d] = (node, gpus)
            for k in self._takes(d, new.get(d)):
                self._users.setdefault(k, set()).add(d)
            self.capacity[node] = self.capacity.get(node, 0.0) + gpus
            self.used[node] = self.used.get(node, 0.0) + (gpus if self._in_use(d) else 0.0)
            touched.add(node)
        if selected:
            self._pool_devices[pool] = tuple(selected)
        return touched


def _name(obj: Obj, kind: str) -> str:
    """The object's name, or "" for one without (no such object was read)."""
    try:
        return name_of(obj, kind)[1]
    except InputError:
        return ""
