"""Dynamic resource allocation (resource.k8s.io/v1) as countable node resources.

kube-scheduler's DynamicResources plugin places a pod only where it can allocate devices to
each of the pod's ResourceClaims: devices DRA drivers publish in ResourceSlices, chosen by the
CEL selectors of the request's DeviceClass and of the request itself. It also serves a
container's extended resource from the devices of the DeviceClass that names it
(``extendedResourceName``, or ``deviceclass.resource.kubernetes.io/<class>`` for any class) on
a node whose allocatable has none, in a claim it makes for the pod. The planner models the
common case exactly, as one more resource per set of devices:

- every request of the claim asks for an exact count of devices of one class (no capacity
  requests; its tolerations are not read: only devices no taint blocks are counted for it, a
  device tainted with a taint it tolerates is not); a request offering
  alternatives (``firstAvailable``) asks its first one while its pod is pending
  (kube-scheduler allocates the first that fits where it tries) and the one it holds once
  bound (a later one than the first pins the pod to its node), and one for all of a node's
  devices (``allocationMode: All``) asks as many as most of the nodes admitting its pod have
  (bound: as many as it holds), pinned to the nodes with that many;
- the claim is the pod's own (made from a ResourceClaimTemplate, or kube-scheduler's for its
  extended resources): evicting the pod frees its devices, its replacement gets a claim of
  its own; or one pods name (``resourceClaimName``), not allocated yet, as the own claim of
  the first of them (the highest priority): the others are held until it is allocated (the
  loader adds their requests to the first's: they go where it goes);
- the devices the request's selectors match are on one node each, in complete pools, neither
  partitions (taking part of a counter set, such as a MIG slice of a GPU) nor allocatable to
  several claims, and no two of them consume the same counter set; those a taint blocks
  (NoSchedule or NoExecute: the ResourceSlice's own, or a DeviceTaintRule's) are skipped,
  as kube-scheduler skips them;
- the device sets of the requests in use are disjoint or equal, in devices and in the counter
  sets they consume.

A claim's ``constraints`` (matchAttribute, distinctAttribute) pin its pod to the nodes where
they hold whichever devices the requests get there (all of one value, or each of its own; the
nodes where only some choices satisfy them are left out), and the node where it runs. A claim
whose requests all ask admin access (``adminAccess``: devices in use or not, taking none from
other claims) asks no devices and pins its pod to the nodes with as many as it asks.

A whole partitionable device (one consuming all of its counter sets: a GPU that MIG could
also split) is free only while no device drawing on those counters is allocated. Each such set
is a resource: a node offers its devices of the set that are free or allocated
to a pod the planner models; a pod asks the count its claims request (pending) or were
allocated (running), or what its containers ask. The resource is named as the containers ask
for it (a class's own ``extendedResourceName`` first), else as Kubernetes names a class's
extended resource, ``deviceclass.resource.kubernetes.io/<class>``, with ``~<hash>`` of the
request's own selectors when it narrows the class. Any other claim is kept by name with the
reason, and its pod is held (dunnage.solver.problem); devices allocated to it are not offered.
A node whose own allocatable has the resource (a device plugin's) keeps it: kube-scheduler
uses no DRA there.

A claim pods name (``resourceClaimName``) that is allocated pins them: its devices are taken,
and each pod naming it asks none but runs only where its allocation's ``nodeSelector`` admits
(``Devices.pinned``; the loader reads it as node affinity), unless the claim's reservedFor is
full without it.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cached_property
from typing import Any, cast

import celpy
from celpy import celtypes
from kubernetes.utils import parse_quantity

from dunnage.cluster.fields import count, mapping, name_of, sequence, text
from dunnage.cluster.quantity import Resources, to_units
from dunnage.errors import InputError

Obj = Mapping[str, Any]
CLASS_RESOURCE_PREFIX = "deviceclass.resource.kubernetes.io/"
# The annotation of the claim kube-scheduler makes for a pod's extended resources DRA serves
EXTENDED_RESOURCE_CLAIM = "resource.kubernetes.io/extended-resource-claim"
# How a pod's held claims name that claim ("resource claim for its extended resources"), and
# one for an extended resource R: "for R".
EXTENDED_ENTRY = "for its extended resources"
_BLOCKING_TAINTS = ("NoSchedule", "NoExecute")
# How many consumers a ResourceClaim's status.reservedFor holds at most (the API's
# ResourceClaimReservedForMaxSize): a pod a full claim is not reserved for cannot use it.
RESERVED_FOR_MAX = 256
# A request's count under ``allocationMode: All`` until the nodes it is planned on are known.
ALL_DEVICES = -1


def class_resource(name: str) -> str | None:
    """The resource of the DeviceClass whose devices the resource ``name`` counts (``name``
    without the hash of a request's own selectors), or None for other resources."""
    if not name.startswith(CLASS_RESOURCE_PREFIX):
        return None
    return name.partition("~")[0]


@dataclass(frozen=True)
class Devices:
    """What the loader adds to the snapshot: per node the devices it offers, per pod (key) the
    devices its claims ask, and per pod the claims not modelled, each (entry name, why)."""

    offered: Mapping[str, Resources]
    asked: Mapping[str, Resources]
    # What a pod's containers ask of extended resources that DRA devices serve, when the
    # planner holds the pod (its devices are not offered, so it asks none of them either).
    dropped: Mapping[str, Resources]
    unmodelled: Mapping[str, tuple[tuple[str, str], ...]]
    # Per pod: each allocated claim it shares by name, as (its entry, the claim, its
    # allocation's ``nodeSelector``: None where the devices are not bound to nodes). The
    # loader reads them as node affinity (Pod.claim_affinity).
    pinned: Mapping[str, tuple[tuple[str, str, Obj | None], ...]]
    # Per pod held because a claim it names is planned as another's (not allocated yet):
    # that pod's key (Pod.follows).
    followers: Mapping[str, str]


@dataclass(frozen=True)
class _Device:
    key: str  # driver/pool/device
    node: str | None  # None: not local to one node
    # What a selector may read of it (the CEL variable ``device``): its attributes and
    # capacities, and its driver and allowMultipleAllocations (map "").
    fields: tuple[_Field, ...]
    tainted: bool  # a NoSchedule or NoExecute taint blocks it (its slice's or a rule's)
    unusable: str | None  # why the planner cannot count it (a partition, ...)
    # The counter sets it draws on (``driver/pool/set``): a partitionable device, such as a
    # GPU a driver offers whole and as MIG slices. While another device drawing on one of them
    # is allocated, a whole one (consuming all of its sets) cannot be.
    counter_sets: frozenset[str] = frozenset()

    @cached_property
    def activation(self) -> celtypes.MapType:
        return _activation(self.fields)


# (map: "attributes", "capacity" or "", domain, name, type, value as text)
_Field = tuple[str, str, str, str, str]
# (class, class selectors + request selectors): what a request's devices must satisfy
_Signature = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class _Request:
    name: str
    signature: _Signature
    count: int
    entry: str = ""  # the pod's spec.resourceClaims entry whose claim has it
    alternative: int = 0  # the index of the alternative (firstAvailable) it asks
    subrequest: str = ""  # that alternative's name
    admin: bool = False  # adminAccess: devices in use or not, taking none from other claims

    @property
    def key(self) -> str:
        """The request among all of a pod's claims."""
        return f"{self.entry}/{self.name}"


@dataclass(frozen=True)
class _Constraint:
    """A claim's ``spec.devices.constraints`` item: every device allocated to the requests it
    names (``keys``, as _Request.key) has ``attribute``, the same value on all (matchAttribute)
    or a different one on each (``distinct``, distinctAttribute)."""

    entry: str
    where: str  # the claim, the item and its kind, for the pod's reasons
    attribute: tuple[str, str]  # (domain, name), as a device's fields have it
    distinct: bool
    keys: frozenset[str]


# --- CEL: the functions of Kubernetes' CEL library that device selectors use ----------------


class _Quantity(celtypes.DoubleType):
    """A resource.Quantity in CEL (``quantity("40Gi")``, a device's capacity)."""

    exact: Decimal

    def __new__(cls, text: str) -> _Quantity:
        value = parse_quantity(text)
        self = cast(_Quantity, super().__new__(cls, float(value)))
        self.exact = value
        return self


class _Semver(celtypes.StringType):
    """A semantic version in CEL (``semver("1.2.3")``, a device's version attribute)."""

    @property
    def parts(self) -> tuple[int, int, int]:
        core = str(self).split("-", 1)[0].split("+", 1)[0]
        major, minor, patch = (int(x) for x in core.split("."))
        return major, minor, patch


def _order(a: Any, b: Any) -> int:
    x: Any
    y: Any
    if isinstance(a, _Quantity) and isinstance(b, _Quantity):
        x, y = a.exact, b.exact
    elif isinstance(a, _Semver) and isinstance(b, _Semver):
        x, y = a.parts, b.parts
    else:
        raise TypeError(f"cannot compare {type(a).__name__} with {type(b).__name__}")
    return int(x > y) - int(x < y)


_FUNCTIONS: dict[str, Any] = {
    "quantity": lambda text: _Quantity(str(text)),
    "semver": lambda text: _Semver(str(text)),
    "compareTo": lambda a, b: celtypes.IntType(_order(a, b)),
    "isGreaterThan": lambda a, b: celtypes.BoolType(_order(a, b) > 0),
    "isLessThan": lambda a, b: celtypes.BoolType(_order(a, b) < 0),
    "asInteger": lambda q: celtypes.IntType(int(q.exact)),
    "asApproximateFloat": lambda q: celtypes.DoubleType(float(q.exact)),
    "major": lambda v: celtypes.IntType(v.parts[0]),
    "minor": lambda v: celtypes.IntType(v.parts[1]),
    "patch": lambda v: celtypes.IntType(v.parts[2]),
}
_ENV = celpy.Environment()
_programs: dict[str, Any] = {}


def _program(expression: str) -> Any:
    if expression not in _programs:
        _programs[expression] = _ENV.program(_ENV.compile(expression), functions=_FUNCTIONS)
    return _programs[expression]


# Selectors are evaluated once per expression and what it may read of a device: devices
# alike in every field the expression names (the driver's name, say) share one outcome. An
# expression that may iterate a map (a macro, size) may read fields it does not name: for it,
# devices share an outcome only when alike in every field.
_ITERATES = re.compile(r"\b(all|exists|exists_one|filter|map|size)\b")
_outcomes: dict[tuple[str, tuple[_Field, ...]], bool | str] = {}
_OUTCOMES_KEPT = 100_000


def _selects(expression: str, device: _Device) -> bool | str:
    """Whether the CEL ``expression`` selects ``device``, or why it cannot be told (a runtime
    error, which makes kube-scheduler give up on the claim too)."""
    fields = device.fields
    if not _ITERATES.search(expression):
        fields = tuple(f for f in fields if f[2] in expression)
    key = (expression, fields)
    outcome = _outcomes.get(key)
    if outcome is None:  # read once: the extender's threads may clear the cache meanwhile
        if len(_outcomes) >= _OUTCOMES_KEPT:
            _outcomes.clear()
        outcome = _outcomes[key] = _evaluate(expression, device)
    return outcome


def _evaluate(expression: str, device: _Device) -> bool | str:
    try:
        program = _program(expression)
    except celpy.CELParseError as exc:  # type: ignore[attr-defined]
        return f"selector {expression!r} is not understood: {exc}"
    try:
        result = program.evaluate({"device": device.activation})
    except Exception as exc:  # celpy raises its own and Python's errors alike
        return f"selector {expression!r} fails on device {device.key}: {exc}"
    if not isinstance(result, celtypes.BoolType):
        return f"selector {expression!r} is not a bool on device {device.key}"
    return bool(result)


# --- ResourceSlices ----------------------------------------------------------------------


def _attribute(value: Any, *, obj: str, field: str) -> tuple[str, str] | None:
    """A device attribute's type and value as text; None for a type this version does not
    know."""
    value = mapping(value, obj=obj, field=field)
    for kind, python_type in (("bool", bool), ("int", int), ("string", str), ("version", str)):
        if kind in value:
            if type(value[kind]) is not python_type:
                raise InputError(f"expected a {kind}", obj=obj, field=f"{field}.{kind}")
            return kind, str(value[kind])
    return None


def _capacity(value: Any, *, obj: str, field: str) -> tuple[str, str]:
    raw = mapping(value, obj=obj, field=field).get("value")
    to_units("capacity", str(raw), obj=obj, field=f"{field}.value")  # a quantity, or an error
    return "quantity", str(raw)


def _qualified(
    driver: str, kind: str, values: Any, convert: Any, *, obj: str, field: str
) -> list[_Field]:
    """A device's attributes or capacities as fields: unqualified names are the driver's
    domain's (as kube-scheduler's CEL environment has them)."""
    out = []
    for full, raw in mapping(values, obj=obj, field=field).items():
        domain, _, name = str(full).rpartition("/")
        converted = convert(raw, obj=obj, field=f"{field}.{full}")
        if converted is not None:
            out.append((kind, domain or driver, name, *converted))
    return out


_CEL_VALUES: dict[str, Any] = {
    "bool": lambda text: celtypes.BoolType(text == "True"),
    "int": lambda text: celtypes.IntType(int(text)),
    "string": celtypes.StringType,
    "version": _Semver,
    "quantity": _Quantity,
}


def _activation(fields: tuple[_Field, ...]) -> celtypes.MapType:
    """The CEL variable ``device`` of a device's fields."""
    maps: dict[str, dict[str, dict[celtypes.StringType, Any]]] = {
        "attributes": {},
        "capacity": {},
    }
    top: dict[celtypes.StringType, Any] = {}
    for where, domain, name, kind, value in fields:
        target = maps[where].setdefault(domain, {}) if where else top
        target[celtypes.StringType(name)] = _CEL_VALUES[kind](value)
    for where, by_domain in maps.items():
        top[celtypes.StringType(where)] = celtypes.MapType(
            {celtypes.StringType(d): celtypes.MapType(v) for d, v in by_domain.items()}
        )
    return celtypes.MapType(top)


@dataclass(frozen=True)
class _Slice:
    where: str
    spec: Obj
    driver: str
    pool: str
    generation: int
    slice_count: int


def _slice(obj: Obj) -> _Slice:
    _, name = name_of(obj, "ResourceSlice")
    where = f"ResourceSlice {name}"
    spec = mapping(obj.get("spec"), obj=where, field="spec")
    pool = mapping(spec.get("pool"), obj=where, field="spec.pool")
    return _Slice(
        where,
        spec,
        text(spec.get("driver"), obj=where, field="spec.driver"),
        text(pool.get("name"), obj=where, field="spec.pool.name"),
        count(pool.get("generation"), obj=where, field="spec.pool.generation", default=0),
        count(
            pool.get("resourceSliceCount"),
            obj=where,
            field="spec.pool.resourceSliceCount",
            default=1,
        ),
    )


def _counters(value: Any, *, obj: str, field: str) -> dict[str, Decimal]:
    """A ``counters`` map (name -> {value: quantity}), its zero counters left out."""
    out = {}
    for name, raw in mapping(value, obj=obj, field=field).items():
        quantity = mapping(raw, obj=obj, field=f"{field}.{name}").get("value")
        try:
            amount = parse_quantity(quantity)
        except (ValueError, TypeError):
            raise InputError(
                "expected a quantity", obj=obj, field=f"{field}.{name}.value"
            ) from None
        if amount:
            out[str(name)] = amount
    return out


def _counter_sets(members: Iterable[_Slice]) -> dict[str, dict[str, Decimal]]:
    """A pool's counter sets (``spec.sharedCounters`` of its slices) by name."""
    out = {}
    for m in members:
        field = "spec.sharedCounters"
        for i, raw in enumerate(sequence(m.spec.get("sharedCounters"), obj=m.where, field=field)):
            entry = mapping(raw, obj=m.where, field=f"{field}[{i}]")
            name = text(entry.get("name"), obj=m.where, field=f"{field}[{i}].name")
            out[name] = _counters(
                entry.get("counters"), obj=m.where, field=f"{field}[{i}].counters"
            )
    return out


def _consumption(
    key: str,
    consumes: Any,
    counter_sets: Mapping[str, Mapping[str, Decimal]],
    *,
    obj: str,
    field: str,
) -> tuple[frozenset[str], str | None]:
    """The counter sets a device consumes (by name), and why the planner cannot count it
    when it takes only part of one (a partition) or one its pool does not publish."""
    names, why = set(), None
    for i, raw in enumerate(sequence(consumes, obj=obj, field=field)):
        entry = mapping(raw, obj=obj, field=f"{field}[{i}]")
        name = text(entry.get("counterSet"), obj=obj, field=f"{field}[{i}].counterSet")
        taken = _counters(entry.get("counters"), obj=obj, field=f"{field}[{i}].counters")
        names.add(name)
        if name not in counter_sets:
            why = why or f"device {key} consumes counter set {name}, which its pool lacks"
        elif taken != counter_sets[name]:
            why = why or f"device {key} takes part of counter set {name} (a partition)"
    return frozenset(names), why


@dataclass(frozen=True)
class TaintRule:
    """A DeviceTaintRule with a blocking taint: the devices it selects (None: any)."""

    driver: str | None
    pool: str | None
    device: str | None

    def selects(self, driver: str, pool: str, device: str) -> bool:
        return (
            self.driver in (None, driver)
            and self.pool in (None, pool)
            and self.device in (None, device)
        )


def read_taint_rule(obj: Obj) -> TaintRule | None:
    """A DeviceTaintRule, or None when its taint blocks nothing: an effect other than
    NoSchedule and NoExecute (kube-scheduler ignores the others), or no ``deviceSelector``
    (which selects no device)."""
    _, name = name_of(obj, "DeviceTaintRule")
    where = f"DeviceTaintRule {name}"
    spec = mapping(obj.get("spec"), obj=where, field="spec")
    taint = mapping(spec.get("taint"), obj=where, field="spec.taint")
    effect = text(taint.get("effect"), obj=where, field="spec.taint.effect")
    selector = spec.get("deviceSelector")
    if effect not in _BLOCKING_TAINTS or selector is None:
        return None
    selector = mapping(selector, obj=where, field="spec.deviceSelector")
    driver, pool, device = (
        None
        if selector.get(k) is None
        else text(selector[k], obj=where, field=f"spec.deviceSelector.{k}")
        for k in ("driver", "pool", "device")
    )
    return TaintRule(driver, pool, device)


def _devices(slices: Iterable[Obj], rules: Iterable[TaintRule] = ()) -> dict[str, _Device]:
    """Every device of the newest generation of each pool, by ``driver/pool/device``, tainted
    by its slice or by one of the ``rules``."""
    rules = list(rules)
    pools: dict[tuple[str, str], list[_Slice]] = {}
    for obj in slices:
        parsed = _slice(obj)
        pools.setdefault((parsed.driver, parsed.pool), []).append(parsed)
    out: dict[str, _Device] = {}
    for (driver, pool), members in pools.items():
        newest = max(m.generation for m in members)
        current = [m for m in members if m.generation == newest]
        incomplete = len(current) < max(m.slice_count for m in current)
        counter_sets = _counter_sets(current)
        for m in current:
            where, node_name = m.where, m.spec.get("nodeName")
            for i, raw in enumerate(
                sequence(m.spec.get("devices"), obj=where, field="spec.devices")
            ):
                field = f"spec.devices[{i}]"
                d = mapping(raw, obj=where, field=field)
                device_name = text(d.get("name"), obj=where, field=f"{field}.name")
                key = f"{driver}/{pool}/{device_name}"
                node = node_name or d.get("nodeName") or None
                multiple = d.get("allowMultipleAllocations")
                consumed, partial = _consumption(
                    key,
                    d.get("consumesCounters"),
                    counter_sets,
                    obj=where,
                    field=f"{field}.consumesCounters",
                )
                unusable = None
                if incomplete:
                    unusable = f"pool {driver}/{pool} is incomplete (spec.pool.resourceSliceCount)"
                elif node is None:
                    unusable = f"device {key} is not local to one node"
                elif partial:
                    unusable = partial
                elif multiple:
                    unusable = f"device {key} may be allocated to several claims"
                fields = (
                    ("", "", "driver", "string", driver),
                    ("", "", "allowMultipleAllocations", "bool", str(bool(multiple))),
                    *_qualified(
                        driver,
                        "attributes",
                        d.get("attributes"),
                        _attribute,
                        obj=where,
                        field=f"{field}.attributes",
                    ),
                    *_qualified(
                        driver,
                        "capacity",
                        d.get("capacity"),
                        _capacity,
                        obj=where,
                        field=f"{field}.capacity",
                    ),
                )
                taints = sequence(d.get("taints"), obj=where, field=f"{field}.taints")
                tainted = any(
                    mapping(t, obj=where, field=f"{field}.taints[{j}]").get("effect")
                    in _BLOCKING_TAINTS
                    for j, t in enumerate(taints)
                ) or any(r.selects(driver, pool, device_name) for r in rules)
                out[key] = _Device(
                    key,
                    str(node) if node else None,
                    fields,
                    tainted,
                    unusable,
                    frozenset(f"{driver}/{pool}/{c}" for c in consumed),
                )
    return out


# --- ResourceClaims ----------------------------------------------------------------------


def _expressions(selectors: Any, *, obj: str, field: str) -> tuple[str, ...]:
    out = []
    for i, raw in enumerate(sequence(selectors, obj=obj, field=field)):
        cel = mapping(
            mapping(raw, obj=obj, field=f"{field}[{i}]").get("cel"),
            obj=obj,
            field=f"{field}[{i}].cel",
        )
        out.append(text(cel.get("expression"), obj=obj, field=f"{field}[{i}].cel.expression"))
    return tuple(out)


def _requests(
    claim: Obj,
    where: str,
    classes: Mapping[str, tuple[str, ...]],
    held: Mapping[str, str] | None = None,
) -> list[_Request] | str:
    """The claim's requests, or why the planner does not model them. A request offering
    alternatives (``firstAvailable``) asks the one ``held`` names for it (a bound pod's
    allocation: request -> alternative), else its first: kube-scheduler allocates the first
    alternative that fits on the node it tries, so where the first fits the pod gets it."""
    spec = mapping(claim.get("spec"), obj=where, field="spec")
    devices = mapping(spec.get("devices"), obj=where, field="spec.devices")
    out = []
    for i, raw in enumerate(
        sequence(devices.get("requests"), obj=where, field="spec.devices.requests")
    ):
        field = f"spec.devices.requests[{i}]"
        r = mapping(raw, obj=where, field=field)
        name = text(r.get("name"), obj=where, field=f"{field}.name")
        chosen = _tried_first(r, obj=where, field=field, held=(held or {}).get(name))
        if chosen is None:
            return f"{field}: its allocation names an alternative it does not offer"
        exactly, field, alternative = chosen
        mode = exactly.get("allocationMode") or "ExactCount"
        if mode not in ("ExactCount", "All"):
            return f"{field}.allocationMode is {mode}"
        if exactly.get("capacity"):
            return f"{field}.capacity is set"
        class_name = text(
            exactly.get("deviceClassName"), obj=where, field=f"{field}.deviceClassName"
        )
        if class_name not in classes:
            return f"DeviceClass {class_name} is not in the snapshot"
        own = _expressions(exactly.get("selectors"), obj=where, field=f"{field}.selectors")
        number = count(exactly.get("count"), obj=where, field=f"{field}.count", default=1)
        if mode == "All":
            number = ALL_DEVICES
        signature = (class_name, classes[class_name] + own)
        subrequest = str(exactly.get("name") or "")  # (an alternative's; ``exactly`` has none)
        admin = exactly.get("adminAccess") is True
        out.append(
            _Request(
                name, signature, number, alternative=alternative, subrequest=subrequest, admin=admin
            )
        )
    if len({r.admin for r in out}) > 1:
        return "its requests mix admin access (adminAccess) with requests without it"
    return out


def _constraints(
    claim: Obj, where: str, requests: list[_Request], entry: str
) -> list[_Constraint] | str:
    """The claim's ``spec.devices.constraints`` over the ``requests`` it asks (with their
    entry), or why the planner does not model them. An item naming requests applies to those
    and to the alternatives (``request/alternative``) it names that they ask; one naming
    none, to all."""
    spec = mapping(claim.get("spec"), obj=where, field="spec")
    devices = mapping(spec.get("devices"), obj=where, field="spec.devices")
    out = []
    field = "spec.devices.constraints"
    for i, raw in enumerate(sequence(devices.get("constraints"), obj=where, field=field)):
        item = mapping(raw, obj=where, field=f"{field}[{i}]")
        kinds = [k for k in ("matchAttribute", "distinctAttribute") if item.get(k) is not None]
        if len(kinds) != 1:
            return f"{field}[{i}] is of a kind the planner does not know"
        attribute = text(item[kinds[0]], obj=where, field=f"{field}[{i}].{kinds[0]}")
        domain, _, name = attribute.rpartition("/")
        names = {
            text(n, obj=where, field=f"{field}[{i}].requests[{j}]")
            for j, n in enumerate(
                sequence(item.get("requests"), obj=where, field=f"{field}[{i}].requests")
            )
        }
        keys = frozenset(
            r.key
            for r in requests
            if not names or r.name in names or f"{r.name}/{r.subrequest}" in names
        )
        described = f"{where} {field}[{i}] ({kinds[0]} {attribute})"
        if any(r.admin for r in requests if r.key in keys):
            return f"{field}[{i}] constrains requests with admin access (adminAccess)"
        out.append(
            _Constraint(entry, described, (domain, name), kinds[0] != "matchAttribute", keys)
        )
    return out


def _tried_first(
    request: Obj, *, obj: str, field: str, held: str | None = None
) -> tuple[Obj, str, int] | None:
    """What kube-scheduler tries first for the device request at ``field``: its ``exactly``,
    else its first alternative (``firstAvailable``; empty when it has none), or the
    alternative named ``held``; with that path and the alternative's index (None: no
    alternative of that name)."""
    if request.get("exactly") is not None:
        field += ".exactly"
        return mapping(request["exactly"], obj=obj, field=field), field, 0
    field += ".firstAvailable"
    alternatives = sequence(request.get("firstAvailable"), obj=obj, field=field)
    for i, raw in enumerate(alternatives):
        alternative = mapping(raw, obj=obj, field=f"{field}[{i}]")
        if held is None or alternative.get("name") == held:
            return alternative, f"{field}[{i}]", i
    return None if held is not None else ({}, f"{field}[0]", 0)


def _resource_name(signature: _Signature, class_selectors: int) -> str:
    class_name, expressions = signature
    own = expressions[class_selectors:]
    if not own:
        return CLASS_RESOURCE_PREFIX + class_name
    digest = hashlib.sha256("\n".join(own).encode()).hexdigest()[:8]
    return f"{CLASS_RESOURCE_PREFIX}{class_name}~{digest}"


def _owner_pod(claim: Obj, where: str) -> tuple[str, str] | None:
    """The name and uid of the pod controlling ``claim``, if a pod does."""
    meta = mapping(claim.get("metadata"), obj=where, field="metadata")
    refs = sequence(meta.get("ownerReferences"), obj=where, field="metadata.ownerReferences")
    for i, raw in enumerate(refs):
        ref = mapping(raw, obj=where, field=f"metadata.ownerReferences[{i}]")
        if ref.get("kind") == "Pod" and ref.get("controller"):
            return str(ref.get("name")), str(ref.get("uid") or "")
    return None


def _owned_by(claim: Obj, where: str, pod_name: str, pod_uid: str) -> bool:
    owner = _owner_pod(claim, where)
    if owner is None or owner[0] != pod_name:
        return False
    return not owner[1] or not pod_uid or owner[1] == pod_uid


def _claim_names(pod: Obj, where: str) -> list[tuple[str, str | None]]:
    """Each ``spec.resourceClaims`` entry's name and the ResourceClaim it names: its own
    ``resourceClaimName``, else the one made from its template (status.resourceClaimStatuses),
    else None (not made yet). A claim of its own name is marked with a leading ``=``."""
    spec = mapping(pod.get("spec"), obj=where, field="spec")
    status = mapping(pod.get("status"), obj=where, field="status")
    made = {}
    field = "status.resourceClaimStatuses"
    for i, raw in enumerate(sequence(status.get("resourceClaimStatuses"), obj=where, field=field)):
        entry = mapping(raw, obj=where, field=f"{field}[{i}]")
        claim = entry.get("resourceClaimName")  # null: none was needed
        made[text(entry.get("name"), obj=where, field=f"{field}[{i}].name")] = (
            text(claim, obj=where, field=f"{field}[{i}].resourceClaimName") if claim else None
        )
    out: list[tuple[str, str | None]] = []
    for i, raw in enumerate(
        sequence(spec.get("resourceClaims"), obj=where, field="spec.resourceClaims")
    ):
        entry = mapping(raw, obj=where, field=f"spec.resourceClaims[{i}]")
        name = text(entry.get("name"), obj=where, field=f"spec.resourceClaims[{i}].name")
        own = entry.get("resourceClaimName")
        if own is not None:
            own = "=" + text(own, obj=where, field=f"spec.resourceClaims[{i}].resourceClaimName")
        claim = own or made.get(name)
        out.append((name, str(claim) if claim else None))
    return out


def _results(claim: Obj, where: str) -> list[str]:
    """The devices allocated to ``claim`` (status.allocation.devices.results), each as
    ``request driver/pool/device``; not those of a request with admin access, which takes
    them from no other claim."""
    status = mapping(claim.get("status"), obj=where, field="status")
    allocation = mapping(status.get("allocation"), obj=where, field="status.allocation")
    devices = mapping(allocation.get("devices"), obj=where, field="status.allocation.devices")
    out = []
    field = "status.allocation.devices.results"
    keys = ("request", "driver", "pool", "device")
    for i, raw in enumerate(sequence(devices.get("results"), obj=where, field=field)):
        r = mapping(raw, obj=where, field=f"{field}[{i}]")
        parts = [r.get(k) for k in keys]
        if not all(type(part) is str and part for part in parts):  # name the wrong field
            parts = [text(r.get(k), obj=where, field=f"{field}[{i}].{k}") for k in keys]
        if r.get("adminAccess") is True:
            continue
        out.append(f"{parts[0]} {parts[1]}/{parts[2]}/{parts[3]}")
    return out


@dataclass
class _PodClaims:
    key: str
    node: str | None
    requests: list[_Request]  # of all its modelled claims
    allocated: dict[str, list[str]]  # _Request.key -> device keys
    unmodelled: list[tuple[str, str]]
    # Extended resources of its containers that DRA devices may serve, with their signature;
    # and the devices kube-scheduler allocated it for them (its special claim), if bound.
    extended: dict[str, _Signature]
    extended_devices: list[tuple[str, _Signature | None]]
    pinned: list[tuple[str, str, Obj | None]]  # as Devices.pinned has them
    constraints: list[_Constraint]  # of all its modelled claims
    follows: str = ""  # as Devices.followers has it
    admin: list[_Request] = field(default_factory=list)  # its requests with admin access


@dataclass(frozen=True)
class _Class:
    selectors: tuple[str, ...]
    extended_resource: str | None
    created: str  # metadata.creationTimestamp (RFC 3339, UTC: it sorts as text)


def _classes(classes: Iterable[Obj]) -> dict[str, _Class]:
    out = {}
    for c in classes:
        _, name = name_of(c, "DeviceClass")
        where = f"DeviceClass {name}"
        spec = mapping(c.get("spec"), obj=where, field="spec")
        extended = spec.get("extendedResourceName")
        out[name] = _Class(
            _expressions(spec.get("selectors"), obj=where, field="spec.selectors"),
            text(extended, obj=where, field="spec.extendedResourceName") if extended else None,
            str(
                mapping(c.get("metadata"), obj=where, field="metadata").get("creationTimestamp")
                or ""
            ),
        )
    return out


def _resolver(classes: Mapping[str, _Class]) -> dict[str, str]:
    """Extended resource name -> the DeviceClass whose devices serve it: a class's
    ``extendedResourceName`` (when several give one, the newest class, then the first by
    name, as kube-scheduler picks it) and every class's implicit
    ``deviceclass.resource.kubernetes.io/<class>``."""
    out = {CLASS_RESOURCE_PREFIX + name: name for name in classes}
    picked: dict[str, str] = {}
    for name, c in classes.items():
        other = picked.get(c.extended_resource or "")
        if c.extended_resource and (
            other is None or (c.created, other) > (classes[other].created, name)
        ):
            picked[c.extended_resource] = name
    return {**out, **picked}


def _extended_claims(
    claims: Mapping[tuple[str, str], Obj],
) -> dict[tuple[str, str], tuple[str, str]]:
    """The claims kube-scheduler made for pods' extended resources that DRA serves (namespace
    and name), by the namespace and name of the pod owning each."""
    out = {}
    for (namespace, name), claim in claims.items():
        where = f"ResourceClaim {namespace}/{name}"
        meta = mapping(claim.get("metadata"), obj=where, field="metadata")
        annotations = mapping(meta.get("annotations"), obj=where, field="metadata.annotations")
        owner = _owner_pod(claim, where)
        if annotations.get(EXTENDED_RESOURCE_CLAIM) == "true" and owner is not None:
            out[(namespace, owner[0])] = (namespace, name)
    return out


def _extended_devices(
    claim: Obj, where: str, results: list[str], selectors: Mapping[str, tuple[str, ...]]
) -> list[tuple[str, _Signature | None]]:
    """The devices allocated to a pod's extended resource claim (its ``results``), each with
    the signature of its request (None when the planner does not model the request)."""
    requests = _requests(claim, where, selectors)
    signatures = {r.name: r.signature for r in requests} if not isinstance(requests, str) else {}
    out = []
    for result in results:
        request, _, device = result.partition(" ")
        out.append((device, signatures.get(request)))
    return out


def device_resources(
    pods: Iterable[Obj],
    classes: Iterable[Obj],
    slices: Iterable[Obj],
    claims: Iterable[Obj],
    requests: Mapping[str, Mapping[str, int]],
    allocatable: Mapping[str, Mapping[str, int]],
    priorities: Mapping[str, int],
    admitted: Callable[[str], Collection[str]] | None = None,
    taint_rules: Iterable[Obj] = (),
) -> Devices:
    """The devices of ``slices`` offered per node and asked per pod, as the module says.
    ``requests``, ``allocatable`` and ``priorities`` are the pods' effective requests and
    priorities (by key) and the nodes' allocatable (by name); ``admitted``, the nodes a pod
    (by key) may go to by its own filters (None: any); ``taint_rules``, the DeviceTaintRules."""
    device_classes = _classes(classes)
    resolver = _resolver(device_classes)
    by_name = {name_of(c, "ResourceClaim"): c for c in claims}
    extended_claims = _extended_claims(by_name)
    rules = [r for r in map(read_taint_rule, taint_rules) if r is not None]
    devices = _devices(slices, rules)
    allocations = {
        (ns, name): _results(c, f"ResourceClaim {ns}/{name}") for (ns, name), c in by_name.items()
    }
    taken = {result.partition(" ")[2] for results in allocations.values() for result in results}
    # A device is not free while another consuming one of its counter sets is allocated.
    drawn_on: dict[str, set[str]] = {}
    for d in taken:
        for counter_set in devices[d].counter_sets if d in devices else ():
            drawn_on.setdefault(counter_set, set()).add(d)
    blocked = {
        d
        for d, device in devices.items()
        if any(drawn_on.get(c, set()) - {d} for c in device.counter_sets)
    }
    selectors = {name: c.selectors for name, c in device_classes.items()}

    # Each pod's claims, and the pods naming each claim that is named (resourceClaimName):
    # (whether it is being deleted, minus its priority, its name), the first of them first.
    pod_entries: list[tuple[Obj, str, str, list[tuple[str, str | None]]]] = []
    users: dict[tuple[str, str], list[tuple[bool, int, str]]] = {}
    for pod in pods:
        namespace, pod_name = name_of(pod, "Pod")
        where = f"Pod {namespace}/{pod_name}"
        entries = _claim_names(pod, where)
        pod_entries.append((pod, namespace, pod_name, entries))
        for _, claim_name in entries:
            if claim_name is not None and claim_name.startswith("="):
                meta = mapping(pod.get("metadata"), obj=where, field="metadata")
                priority = priorities.get(f"{namespace}/{pod_name}", 0)
                by = (bool(meta.get("deletionTimestamp")), -priority, pod_name)
                users.setdefault((namespace, claim_name[1:]), []).append(by)
    for named_by in users.values():
        named_by.sort()

    per_pod: list[_PodClaims] = []
    for pod, namespace, pod_name, entries in pod_entries:
        key, where = f"{namespace}/{pod_name}", f"Pod {namespace}/{pod_name}"
        node_name = mapping(pod.get("spec"), obj=where, field="spec").get("nodeName")
        node = str(node_name) if node_name else None  # as the loader reads it
        # A node with a device plugin's count of the resource serves it without DRA.
        extended = {
            r: (resolver[r], selectors[resolver[r]])
            for r, n in requests.get(key, {}).items()
            if n > 0 and r in resolver and not (node and allocatable.get(node, {}).get(r))
        }
        if not entries and not extended:
            continue
        uid = str(mapping(pod.get("metadata"), obj=where, field="metadata").get("uid") or "")
        found = _PodClaims(key, node, [], {}, [], extended, [], [], [])
        for entry, claim_name in entries:
            why = _modelled_claim(
                found,
                entry,
                claim_name,
                by_name,
                allocations,
                users,
                namespace,
                pod_name,
                uid,
                selectors,
            )
            if why is not None:
                found.unmodelled.append((entry, why))
        if extended and node is not None:
            special = extended_claims.get((namespace, pod_name))
            if special is not None:
                where = f"ResourceClaim {special[0]}/{special[1]}"
                claim = by_name[special]
                if _owned_by(claim, where, pod_name, uid):
                    found.extended_devices = _extended_devices(
                        claim, where, allocations[special], selectors
                    )
        per_pod.append(found)

    # The device set of each signature in use, or why it is not modelled; the sets named.
    sets: dict[_Signature, frozenset[str] | str] = {}
    aliases: dict[_Signature, set[str]] = {}  # extended resource names that use a signature
    for found in per_pod:
        for r in found.requests:
            aliases.setdefault(r.signature, set())
        for resource, signature in found.extended.items():
            aliases.setdefault(signature, set()).add(resource)
    for signature in aliases:
        sets[signature] = _matching(signature, devices)
    names = _names(sets, aliases, selectors, devices)

    asked: dict[str, Resources] = {}
    dropped: dict[str, Resources] = {}
    unmodelled: dict[str, tuple[tuple[str, str], ...]] = {}
    pinned: dict[str, tuple[tuple[str, str, Obj | None], ...]] = {}
    followers = {found.key: found.follows for found in per_pod if found.follows}
    counted: list[tuple[str, str]] = []  # (device, resource): devices the pods modelled hold
    all_counts: dict[_Signature, dict[str, int]] = {}  # for _all_devices
    satisfying: dict[tuple[frozenset[_Signature], tuple[str, str], bool], list[str] | None] = {}
    administrable: dict[tuple[_Signature, int], list[str] | str] = {}
    for found in per_pod:
        held = [(r.entry, d) for r in found.requests for d in found.allocated.get(r.key, [])]
        held += [(EXTENDED_ENTRY, d) for d, _ in found.extended_devices]
        gone = {entry: d for entry, d in held if d not in devices}
        for entry, device in gone.items():
            found.unmodelled.append((entry, f"device {device} is no longer published"))
        for i, r in enumerate(found.requests):
            members = sets[r.signature]
            if r.count == ALL_DEVICES and not isinstance(members, str):
                found.requests[i] = _all_devices(found, r, members, devices, all_counts, admitted)
        for r in found.requests:
            members = sets[r.signature]
            if isinstance(members, str):
                found.unmodelled.append((r.entry, members))
            elif found.node is not None and r.entry not in gone:
                got = found.allocated.get(r.key, [])
                tainted = [d for d in got if devices[d].tainted]
                if tainted:  # (tolerated, or tainted since)
                    why = f"it holds device {tainted[0]}, which a taint blocks"
                    found.unmodelled.append((r.entry, why))
                elif len(got) != r.count or not all(d in members for d in got):
                    why = "its allocation is not what its request selects now"
                    found.unmodelled.append((r.entry, why))
        for constraint in found.constraints:
            why = _constrained(found, constraint, sets, devices, satisfying)
            if why is not None:
                found.unmodelled.append((constraint.entry, why))
        for r in found.admin:
            why = _administered(found, r, devices, administrable)
            if why is not None:
                found.unmodelled.append((r.entry, why))
        if any(signature not in names for _, signature in found.extended_devices):
            why = "its extended resource claim has a request the planner does not model"
            found.unmodelled.append((EXTENDED_ENTRY, why))
        elif any(d not in sets[s] for d, s in found.extended_devices if s is not None):
            why = "its extended resource claim's allocation is not what its request selects now"
            found.unmodelled.append((EXTENDED_ENTRY, why))
        # A pending pod asking a resource its devices are not modelled under is planned on
        # the nodes with a device plugin's count of it alone; a running one is held.
        for resource, signature in found.extended.items() if found.node else ():
            members = sets[signature]
            if isinstance(members, str):
                found.unmodelled.append((f"for {resource}", members))
            elif names[signature] != resource:
                why = f"the same devices are asked as {names[signature]}"
                found.unmodelled.append((f"for {resource}", why))
        if found.unmodelled:
            unmodelled[found.key] = tuple(dict.fromkeys(found.unmodelled))  # once each
            # Held where it runs: what its containers ask of devices is not offered either.
            if found.extended and found.node is not None:
                dropped[found.key] = Resources({r: requests[found.key][r] for r in found.extended})
            continue
        if found.pinned:
            pinned[found.key] = tuple(found.pinned)
        amounts: dict[str, int] = {}
        for r in found.requests:
            amounts[names[r.signature]] = amounts.get(names[r.signature], 0) + r.count
            counted += [(d, names[r.signature]) for d in found.allocated.get(r.key, [])]
        if amounts:
            asked[found.key] = Resources(amounts)
        by_signature = {signature: r for r, signature in found.extended.items()}
        counted += [
            (d, by_signature.get(signature) or names[signature])
            for d, signature in found.extended_devices
            if signature in names
        ]

    offered: dict[str, dict[str, int]] = {}
    holding = {d for d, _ in counted}
    for d, resource in counted:
        node = devices[d].node
        if node is not None:
            offered.setdefault(node, {})[resource] = offered.get(node, {}).get(resource, 0) + 1
    named = {name: sets[signature] for signature, name in names.items()}  # one set a name
    for name, members in named.items():
        assert not isinstance(members, str)
        for d in members:
            node = devices[d].node
            if node is not None and d not in taken and d not in holding and d not in blocked:
                offered.setdefault(node, {})[name] = offered.get(node, {}).get(name, 0) + 1
    # A node whose own allocatable has the resource serves it by a device plugin, not DRA.
    return Devices(
        offered={
            n: Resources({r: k for r, k in v.items() if not allocatable.get(n, {}).get(r)})
            for n, v in offered.items()
        },
        asked=asked,
        dropped=dropped,
        unmodelled=unmodelled,
        pinned=pinned,
        followers=followers,
    )


def _names(
    sets: dict[_Signature, frozenset[str] | str],
    aliases: Mapping[_Signature, set[str]],
    selectors: Mapping[str, tuple[str, ...]],
    devices: Mapping[str, _Device],
) -> dict[_Signature, str]:
    """The resource each device set is counted as: the extended resource name pods' containers
    ask it by (a class's own first, if several), else the name of its first signature. Sets that
    overlap without being equal, in devices or in the counter sets they consume (two ways to
    take one GPU), are not modelled (``sets`` says why)."""
    by_set: dict[frozenset[str], list[_Signature]] = {}
    for signature, members in sets.items():
        if not isinstance(members, str):
            by_set.setdefault(members, []).append(signature)
    reach = {
        members: members | {c for d in members for c in devices[d].counter_sets}
        for members in by_set
    }
    names: dict[_Signature, str] = {}
    for members, same in by_set.items():
        if any(other != members and reach[other] & reach[members] for other in by_set):
            for signature in same:
                sets[signature] = "its devices overlap those another request selects"
            continue
        # A class's own extendedResourceName before the implicit ones.
        asked_as = sorted(
            {a for s in same for a in aliases[s]},
            key=lambda a: (a.startswith(CLASS_RESOURCE_PREFIX), a),
        )
        name = (
            asked_as[0] if asked_as else min(_resource_name(s, len(selectors[s[0]])) for s in same)
        )
        for signature in same:
            names[signature] = name
    return names


def _modelled_claim(
    found: _PodClaims,
    entry: str,
    claim_name: str | None,
    claims: Mapping[tuple[str, str], Obj],
    allocations: Mapping[tuple[str, str], list[str]],
    users: Mapping[tuple[str, str], list[tuple[bool, int, str]]],
    namespace: str,
    pod_name: str,
    pod_uid: str,
    classes: Mapping[str, tuple[str, ...]],
) -> str | None:
    """Add the requests (and the allocation) of the pod's claim ``entry`` to ``found``, or
    say why the planner does not model it. A claim the pod names (``resourceClaimName``,
    marked ``=``) that is allocated pins the pod to its devices' nodes (``found.pinned``);
    one not allocated yet is modelled as the own claim of the first pod naming it (the
    highest priority, then the first by name, of those not being deleted): the others wait to
    be pinned where it goes."""
    if claim_name is None:
        return "its claim is not made from its template yet"
    named = claim_name.startswith("=")
    claim_name = claim_name.removeprefix("=")
    where = f"ResourceClaim {namespace}/{claim_name}"
    claim = claims.get((namespace, claim_name))
    if claim is None:
        return f"{where} is not in the snapshot"
    if mapping(claim.get("metadata"), obj=where, field="metadata").get("deletionTimestamp"):
        return f"{where} is being deleted"
    status = mapping(claim.get("status"), obj=where, field="status")
    if named:
        if status.get("allocation") is not None:
            return _pinned(found, entry, where, status, pod_name, pod_uid)
        sharing = users[(namespace, claim_name)]
        first = sharing[0][-1]
        if first != pod_name:
            found.follows = f"{namespace}/{first}"
            return (
                f"{where} is named by {len(sharing)} pods and not allocated yet: it is "
                f"allocated where the first goes, planned first ({namespace}/{first})"
            )
    elif not _owned_by(claim, where, pod_name, pod_uid):
        return f"{where} is not the pod's own"
    results = allocations[(namespace, claim_name)]
    allocated = status.get("allocation") is not None
    if allocated != bool(found.node):
        return "allocated before its pod is bound" if allocated else "not allocated"
    # A result's request is "request/alternative" where the request offers alternatives.
    asked_by = [result.partition(" ")[0] for result in results]
    held = dict(request.split("/", 1) for request in asked_by if "/" in request)
    requests = _requests(claim, where, classes, held if found.node else None)
    if isinstance(requests, str):
        return requests
    requests = [replace(r, entry=entry) for r in requests]
    constraints = _constraints(claim, where, requests, entry)
    if isinstance(constraints, str):
        return constraints
    found.requests += [r for r in requests if not r.admin]
    found.admin += [r for r in requests if r.admin]
    found.constraints += constraints
    for result in results:
        request, _, device = result.partition(" ")
        found.allocated.setdefault(f"{entry}/{request.partition('/')[0]}", []).append(device)
    if found.node is not None and any(r.alternative for r in requests):
        # Moved, it would get the first alternative that fits where it goes, not this one.
        found.pinned.append((entry, f"{where} (a later alternative)", _on_nodes([found.node])))
    return None


def _on_nodes(nodes: list[str]) -> Obj:
    """A node selector admitting ``nodes`` by name, as kube-scheduler writes an allocation's."""
    field = {"key": "metadata.name", "operator": "In", "values": nodes}
    return {"nodeSelectorTerms": [{"matchFields": [field]}]}


def _all_devices(
    found: _PodClaims,
    request: _Request,
    members: frozenset[str],
    devices: Mapping[str, _Device],
    per_signature: dict[_Signature, dict[str, int]],
    admitted: Callable[[str], Collection[str]] | None,
) -> _Request:
    """A request for all of a node's matching devices (``allocationMode: All``) as a count,
    the pod pinned to the nodes with that many (``found.pinned``): a running pod's, the
    number it holds; a pending pod's, the number most of the nodes that admit it have
    (``admitted``: the nodes a pod's own filters admit; None: all). kube-scheduler allocates
    every matching device of the node or none, so a node with a matching device it cannot
    allocate (tainted) takes no such pod. ``per_signature`` keeps, for the next pod asking
    the same, each signature's count per node that may take such a pod."""
    if request.signature not in per_signature:
        tainted = {
            device.node
            for device in devices.values()
            if device.tainted
            and all(_selects(expression, device) is True for expression in request.signature[1])
        }
        per_node = Counter(devices[d].node for d in members)
        usable = {n: k for n, k in per_node.items() if n is not None and n not in tainted}
        per_signature[request.signature] = usable
    usable = per_signature[request.signature]
    if found.node is not None:
        number = len(found.allocated.get(request.key, []))
        if usable.get(found.node) != number:
            why = f"its node has other than the {number} matching devices it holds (All)"
            found.unmodelled.append((request.entry, why))
    else:
        if admitted is not None:
            admits = admitted(found.key)
            usable = {n: k for n, k in usable.items() if n in admits}
        common = Counter(usable.values()).most_common()
        # (none: kube-scheduler needs one device at least, and no node has it)
        number = min(k for k, times in common if times == common[0][1]) if common else 1
    nodes = sorted(node for node, n in usable.items() if n == number)
    where = f"request {request.name} (allocationMode: All)"
    found.pinned.append((request.entry, where, _on_nodes(nodes)))
    return replace(request, count=number)


def _constrained(
    found: _PodClaims,
    constraint: _Constraint,
    sets: Mapping[_Signature, frozenset[str] | str],
    devices: Mapping[str, _Device],
    satisfying: dict[tuple[frozenset[_Signature], tuple[str, str], bool], list[str] | None],
) -> str | None:
    """Pin the pod to the nodes where ``constraint`` holds whichever of their devices its
    requests are given (``found.pinned``): every device the requests it names may take there
    has the attribute, all with one value (matchAttribute) or each with its own
    (distinctAttribute), so the counts alone decide, as elsewhere. A node where only some
    choices satisfy it is left out (a plan that would use it is not sought); a bound pod may
    also stay where it is. Or say why the pod cannot be planned. ``satisfying`` keeps each
    set of devices' nodes for the next pod asking the same (None: every node with such
    devices, where the pin would add nothing to the counts)."""
    signatures = frozenset(r.signature for r in found.requests if r.key in constraint.keys)
    if not signatures or any(isinstance(sets[s], str) for s in signatures):
        return None  # a request it names is not asked, or its pod is held already
    key = (signatures, constraint.attribute, constraint.distinct)
    if key not in satisfying:
        values: dict[str, list[tuple[str, str] | None]] = {}
        for d in frozenset().union(*(cast(frozenset[str], sets[s]) for s in signatures)):
            device = devices[d]  # (a member: on a node, not tainted)
            value = next(
                (
                    (kind, v)
                    for m, domain, name, kind, v in device.fields
                    if m == "attributes" and (domain, name) == constraint.attribute
                ),
                None,
            )
            values.setdefault(str(device.node), []).append(value)
        holding = sorted(
            node
            for node, found_values in values.items()
            if None not in found_values
            and len(set(found_values)) == (len(found_values) if constraint.distinct else 1)
        )
        satisfying[key] = None if len(holding) == len(values) else holding
    nodes = satisfying[key]
    if nodes is None:
        return None
    none = f"no node's devices satisfy {constraint.where} whichever are allocated"
    return _pin(found, constraint.entry, constraint.where, nodes, none)


def _administered(
    found: _PodClaims,
    request: _Request,
    devices: Mapping[str, _Device],
    administrable: dict[tuple[_Signature, int], list[str] | str],
) -> str | None:
    """Pin the pod to the nodes with the devices a request with admin access may be given
    (``found.pinned``): as many as it asks (all mode: one at least), in use or not, since it
    takes them from no other claim, and its pod asks none of them. A bound pod may also stay
    where it is. Or say why the pod cannot be planned. ``administrable`` keeps the nodes per
    signature and count for the next pod asking the same."""
    need = 1 if request.count == ALL_DEVICES else request.count
    key = (request.signature, need)
    if key not in administrable:
        members = _matching(request.signature, devices)
        if isinstance(members, str):
            administrable[key] = members
        elif any(devices[d].counter_sets for d in members):
            administrable[key] = "admin access to devices drawing on counter sets"
        else:
            per_node = Counter(str(devices[d].node) for d in members)  # (members are local)
            administrable[key] = sorted(n for n, k in per_node.items() if k >= need)
    nodes = administrable[key]
    if isinstance(nodes, str):
        return nodes
    where = f"request {request.name} (adminAccess)"
    return _pin(
        found, request.entry, where, nodes, f"no node has the {need} devices its {where} selects"
    )


def _pin(found: _PodClaims, entry: str, where: str, nodes: list[str], none: str) -> str | None:
    """Pin the pod to ``nodes`` and, bound, to its own (its devices there serve it), as
    ``where`` requires (``found.pinned``); or ``none`` when that leaves no node."""
    if found.node is not None and found.node not in nodes:
        nodes = sorted([*nodes, found.node])
    if not nodes:
        return none
    found.pinned.append((entry, where, _on_nodes(nodes)))
    return None


def _pinned(
    found: _PodClaims, entry: str, where: str, status: Obj, pod_name: str, pod_uid: str
) -> str | None:
    """Pin the pod to the nodes of an allocated claim it shares (``status``), or say why it
    cannot use the claim."""
    field = "status.reservedFor"
    reserved = sequence(status.get("reservedFor"), obj=where, field=field)
    for i, raw in enumerate(reserved):
        consumer = mapping(raw, obj=where, field=f"{field}[{i}]")
        if consumer.get("resource") == "pods" and (
            consumer.get("uid") == pod_uid if pod_uid else consumer.get("name") == pod_name
        ):
            break
    else:
        if len(reserved) >= RESERVED_FOR_MAX:
            return f"{where} is reserved for {len(reserved)} pods, the most Kubernetes allows"
    allocation = mapping(status.get("allocation"), obj=where, field="status.allocation")
    selector = allocation.get("nodeSelector")
    field = "status.allocation.nodeSelector"
    found.pinned.append(
        (entry, where, None if selector is None else mapping(selector, obj=where, field=field))
    )
    return None


def _matching(signature: _Signature, devices: Mapping[str, _Device]) -> frozenset[str] | str:
    """The devices a request of ``signature`` may be allocated, or why that is not modelled."""
    members = []
    for key, device in devices.items():
        selected = True
        for expression in signature[1]:
            outcome = _selects(expression, device)
            if isinstance(outcome, str):
                return outcome
            if not outcome:
                selected = False
                break
        if not selected:
            continue
        if device.unusable is not None:
            return device.unusable
        if not device.tainted:
            members.append(key)
    consumer: dict[str, str] = {}  # counter set -> the member consuming it
    for key in members:
        for counter_set in devices[key].counter_sets:
            other = consumer.setdefault(counter_set, key)
            if other != key:
                return f"devices {other} and {key} consume the same counters ({counter_set})"
    return frozenset(members)


# --- what the extender's GPU scoring reads ------------------------------------------------
# Each reads one object and raises InputError on a malformed one, so that a caller keeping
# the objects apart (dunnage.scheduler_extender.devicegpus) can set that one aside.


def read_device_class(obj: Obj) -> tuple[str, tuple[str, ...], str | None, str]:
    """A DeviceClass's name, selectors, extendedResourceName and creationTimestamp."""
    ((name, parsed),) = _classes([obj]).items()
    return name, parsed.selectors, parsed.extended_resource, parsed.created


def serving_classes(
    classes: Mapping[str, tuple[tuple[str, ...], str | None, str]], resources: Iterable[str]
) -> dict[str, str]:
    """DeviceClass name -> the resource among ``resources`` whose devices it gives, as
    kube-scheduler resolves an extended resource (``extendedResourceName``, the newest class
    first, or ``deviceclass.resource.kubernetes.io/<class>``). ``classes``: name ->
    (selectors, extendedResourceName, creationTimestamp)."""
    resolver = _resolver({name: _Class(*spec) for name, spec in classes.items()})
    out: dict[str, str] = {}
    for resource in resources:
        name = resolver.get(resource)
        if name is not None:
            out.setdefault(name, resource)
    return out


def slice_pool(obj: Obj) -> tuple[str, str]:
    """The (driver, pool) a ResourceSlice publishes devices of."""
    parsed = _slice(obj)
    return parsed.driver, parsed.pool


def selected_devices(
    pool_slices: Iterable[Obj],
    selectors: Mapping[str, tuple[str, ...]],
    rules: Iterable[TaintRule] = (),
) -> tuple[dict[str, tuple[str, str]], dict[str, frozenset[str]]]:
    """The devices of one pool's ResourceSlices that a class of ``selectors`` (class name ->
    its CEL expressions) selects, by ``driver/pool/device``: (node, class), the first class by
    name that selects it; only devices the planner counts too (local to one node, blocked by
    no taint of their slice nor of the DeviceTaintRules ``rules``, neither partitions nor
    allocatable to several claims, in a complete pool), and a selector
    that fails on a device does not select it. Then the counter sets each device of the pool
    that draws on some draws on (``driver/pool/set``), selected or not: a whole GPU is taken
    while another device drawing on its counters is allocated."""
    selected, draws = {}, {}
    for key, device in _devices(pool_slices, rules).items():
        if device.counter_sets:
            draws[key] = device.counter_sets
        if device.node is None or device.tainted or device.unusable:
            continue
        for name in sorted(selectors):
            if all(_selects(e, device) is True for e in selectors[name]):
                selected[key] = (device.node, name)
                break
    return selected, draws


def allocated_devices(claim: Obj) -> list[str]:
    """The devices (``driver/pool/device``) allocated to a ResourceClaim."""
    namespace, name = name_of(claim, "ResourceClaim")
    return [r.partition(" ")[2] for r in _results(claim, f"ResourceClaim {namespace}/{name}")]


def requested_devices(claim: Obj) -> dict[str, int]:
    """DeviceClass name -> the devices a ResourceClaim's requests ask of it: exact counts, and
    a request's first alternative (``firstAvailable``, which kube-scheduler tries first);
    ``allocationMode: All`` asks a number not known before allocation and counts none, nor
    does admin access (``adminAccess``: devices in use or not, taking none). Empty
    for the claim kube-scheduler makes for a pod's extended resources (the pod's containers
    ask them)."""
    namespace, name = name_of(claim, "ResourceClaim")
    where = f"ResourceClaim {namespace}/{name}"
    meta = mapping(claim.get("metadata"), obj=where, field="metadata")
    annotations = mapping(meta.get("annotations"), obj=where, field="metadata.annotations")
    if annotations.get(EXTENDED_RESOURCE_CLAIM) == "true":
        return {}
    spec = mapping(claim.get("spec"), obj=where, field="spec")
    devices = mapping(spec.get("devices"), obj=where, field="spec.devices")
    out: dict[str, int] = {}
    for i, raw in enumerate(
        sequence(devices.get("requests"), obj=where, field="spec.devices.requests")
    ):
        field = f"spec.devices.requests[{i}]"
        request = mapping(raw, obj=where, field=field)
        chosen = _tried_first(request, obj=where, field=field)
        assert chosen is not None  # (None only for an alternative held by name)
        exactly, field, _ = chosen
        if (exactly.get("allocationMode") or "ExactCount") != "ExactCount" or exactly.get(
            "adminAccess"
        ):
            continue
        class_name = text(
            exactly.get("deviceClassName"), obj=where, field=f"{field}.deviceClassName"
        )
        number = count(exactly.get("count"), obj=where, field=f"{field}.count", default=1)
        out[class_name] = out.get(class_name, 0) + number
    return out


def pod_claims(pod: Obj) -> list[tuple[str, bool]]:
    """The names of the ResourceClaims a pod uses that exist, each with whether the pod names
    it (``resourceClaimName``: other pods may too) rather than having it made from a
    template."""
    namespace, name = name_of(pod, "Pod")
    claims = _claim_names(pod, f"Pod {namespace}/{name}")
    return [(c.removeprefix("="), c.startswith("=")) for _, c in claims if c]
