"""Kubernetes objects -> :class:`Snapshot`, and back.

The snapshot file is a Kubernetes ``List`` in YAML or JSON, exactly what
``kubectl get nodes,pods,pvc,pv,pdb,priorityclasses,namespaces,csinodes,volumeattachments,
storageclasses,csidrivers,csistoragecapacities,deviceclasses,resourceslices,resourceclaims -A
-o yaml`` prints. Nodes, Pods, PersistentVolumeClaims, PersistentVolumes,
PodDisruptionBudgets, PriorityClasses, Namespaces (their labels, for the namespace selectors
of pods' affinity terms), CSINodes and VolumeAttachments (the CSI drivers' attach limits and
what is attached), StorageClasses, CSIDrivers and CSIStorageCapacities (where a claim not
bound yet would be provisioned), DeviceClasses, ResourceSlices and ResourceClaims (dynamic
resource allocation: dunnage.cluster.devices) are read; other kinds are ignored. A pod's
claims resolve to the node affinity, zone labels and CSI volume of their bound volumes, or,
not bound yet, to the allowed topologies (and storage capacities) of the class that provisions
them where the pod goes; a claim the snapshot does not resolve (no PVC or PV in it) is kept by
name.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from dunnage.cluster.devices import device_resources
from dunnage.cluster.fields import mapping as _mapping
from dunnage.cluster.fields import name_of as _name
from dunnage.cluster.fields import sequence as _list
from dunnage.cluster.model import (
    DisruptionBudget,
    HostPort,
    LabelSelector,
    Node,
    Operator,
    Pod,
    PodAffinityTerm,
    PreemptionPolicy,
    Requirement,
    SelectorTerm,
    Snapshot,
    SpreadConstraint,
    Taint,
    TaintEffect,
    Toleration,
    csi_driver,
)
from dunnage.cluster.predicates import admission_key, admission_reason
from dunnage.cluster.quantity import PODS, Resources, parse_quantities, to_units
from dunnage.errors import InputError
from dunnage.gcpause import collector_paused

Obj = Mapping[str, Any]
_FINISHED_PHASES = ("Succeeded", "Failed")


def load_snapshot(path: str | Path) -> Snapshot:
    """Read a snapshot file; raises :class:`InputError` naming the object and field on bad input."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read snapshot: {exc.strerror}", obj=str(path)) from exc
    try:
        doc = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"not valid YAML or JSON: {exc}", obj=str(path)) from exc
    return snapshot_from_list(doc, source=str(path))


def snapshot_from_list(doc: Any, *, source: str = "snapshot") -> Snapshot:
    if (
        not isinstance(doc, Mapping)
        or doc.get("kind") != "List"
        or not isinstance(doc.get("items"), list)
    ):
        raise InputError("expected a Kubernetes List with an items array", obj=source, field="kind")
    return snapshot_from_objects(doc["items"], source=source)


@collector_paused()  # a third of the time of 1,500 nodes' DRA devices went to full passes
def snapshot_from_objects(items: Iterable[Any], *, source: str = "snapshot") -> Snapshot:
    """Build a snapshot from Kubernetes objects given as plain dicts (API JSON shape)."""
    by_kind: dict[str, list[Obj]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InputError("list item is not an object", obj=f"{source} items[{index}]")
        by_kind.setdefault(str(item.get("kind", "")), []).append(item)

    classes = _priority_classes(by_kind.get("PriorityClass", []))
    nodes = tuple(node_from_object(o) for o in by_kind.get("Node", []))
    _check_unique((n.name for n in nodes), "Node")
    volumes = _volumes(
        by_kind.get("PersistentVolumeClaim", []),
        by_kind.get("PersistentVolume", []),
        by_kind.get("StorageClass", []),
        by_kind.get("CSIDriver", []),
        by_kind.get("CSIStorageCapacity", []),
    )
    nodes = _with_volume_limits(
        nodes, by_kind.get("CSINode", []), by_kind.get("VolumeAttachment", []), volumes
    )
    namespaces = _namespace_labels(by_kind.get("Namespace", []), by_kind.get("Pod", []))
    live = [o for o in by_kind.get("Pod", []) if not _finished(o)]
    pods = tuple(pod_from_object(o, classes, volumes, namespaces) for o in live)
    _check_unique((p.key for p in pods), "Pod")
    if by_kind.get("DeviceClass") or any(p.resource_claims for p in pods):
        nodes, pods = _with_devices(nodes, pods, live, by_kind)
    budgets = tuple(budget_from_object(o, pods) for o in by_kind.get("PodDisruptionBudget", []))
    return Snapshot(nodes=nodes, pods=pods, budgets=budgets)


def _finished(pod: Obj) -> bool:
    status = pod.get("status")
    if type(status) is not dict:  # (the object's name only for an error)
        status = _mapping(status, obj="Pod {}/{}".format(*_name(pod, "Pod")), field="status")
    return status.get("phase") in _FINISHED_PHASES


def _with_devices(
    nodes: tuple[Node, ...],
    pods: tuple[Pod, ...],
    pod_objects: list[Obj],
    by_kind: Mapping[str, list[Obj]],
) -> tuple[tuple[Node, ...], tuple[Pod, ...]]:
    """Nodes and pods (read from ``pod_objects``) with the devices of dynamic resource
    allocation the planner models as resources (dunnage.cluster.devices); a pod keeps the
    claims it does not, with the why."""
    devices = device_resources(
        pod_objects,
        by_kind.get("DeviceClass", []),
        by_kind.get("ResourceSlice", []),
        by_kind.get("ResourceClaim", []),
        requests={p.key: p.requests for p in pods},
        allocatable={n.name: n.allocatable for n in nodes},
        priorities={p.key: p.priority for p in pods},
        admitted=_admitted(nodes, pods),
        taint_rules=by_kind.get("DeviceTaintRule", []),
    )
    nodes = tuple(
        replace(n, allocatable=n.allocatable + devices.offered[n.name])
        if n.name in devices.offered
        else n
        for n in nodes
    )
    by_name = {n.name: n for n in nodes}
    out = []
    for pod in pods:
        if pod.resource_claims or pod.key in devices.asked or pod.key in devices.unmodelled:
            unmodelled = list(devices.unmodelled.get(pod.key, ()))
            affinity = []
            node = by_name.get(pod.node_name or "")
            for entry, where, selector in devices.pinned.get(pod.key, ()):
                if selector is None:
                    continue
                base = "status.allocation.nodeSelector"
                terms = _node_selector_terms(selector, obj=where, base=base)
                affinity.append(terms)
                if node is not None and not any(t.matches(node) for t in terms):
                    unmodelled.append((entry, f"{where} has its devices on other nodes"))
            requests = pod.requests + devices.asked.get(pod.key, Resources())
            pod = replace(
                pod,
                requests=requests - devices.dropped.get(pod.key, Resources()),
                resource_claims=tuple(name for name, _ in unmodelled),
                resource_claims_why=tuple(why for _, why in unmodelled),
                claim_affinity=tuple(affinity),
                follows=devices.followers.get(pod.key, ""),
            )
        out.append(pod)
    # A pending pod others follow (they name the claim planned as its) asks their room too:
    # they go where it goes, so a plan placing it keeps room for them.
    following: dict[str, Resources] = {}
    for pod in out:
        if pod.follows and not pod.bound and not pod.terminating:
            following[pod.follows] = following.get(pod.follows, Resources()) + pod.requests
    if following:
        out = [
            replace(p, requests=p.requests + following[p.key])
            if p.key in following and not p.bound
            else p
            for p in out
        ]
    return nodes, tuple(out)


def _admitted(nodes: tuple[Node, ...], pods: tuple[Pod, ...]) -> Callable[[str], frozenset[str]]:
    """The names of the nodes a pod (by key) may go to by its own filters
    (:func:`admission_reason`), worked out once per admission key."""
    by_key = {p.key: p for p in pods}
    by_shape: dict[tuple[object, ...], frozenset[str]] = {}

    def admitted(key: str) -> frozenset[str]:
        pod = by_key[key]
        shape = admission_key(pod)
        if shape not in by_shape:
            by_shape[shape] = frozenset(n.name for n in nodes if admission_reason(pod, n) is None)
        return by_shape[shape]

    return admitted


def _namespace_labels(
    namespaces: Iterable[Obj], pods: Iterable[Obj]
) -> Mapping[str, Mapping[str, str]] | None:
    """Each Namespace's labels, to resolve (anti-)affinity terms' ``namespaceSelector`` as
    kube-scheduler does; None unless every pod's namespace is among them (a snapshot without
    Namespaces: the terms keep their selector, approximated where they are read)."""
    labels: dict[str, Mapping[str, str]] = {}
    for o in namespaces:
        _, name = _name(o, "Namespace")
        meta = _mapping(o.get("metadata"), obj=f"Namespace {name}", field="metadata")
        labels[name] = _labels(meta.get("labels"), obj=f"Namespace {name}", field="metadata.labels")
    if not labels or any(_name(o, "Pod")[0] not in labels for o in pods):
        return None
    return labels


def _check_unique(names: Iterable[str], kind: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError("duplicate object", obj=f"{kind} {name}")
        seen.add(name)


def _labels(value: Any, *, obj: str, field: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in _mapping(value, obj=obj, field=field).items()}


def _priority_classes(items: list[Obj]) -> dict[str | None, int]:
    """Name -> value; the key None holds the globalDefault class's value, if any."""
    classes: dict[str | None, int] = {}
    for o in items:
        _, name = _name(o, "PriorityClass")
        value = o.get("value")
        if not isinstance(value, int) or isinstance(value, bool):
            raise InputError("expected an integer", obj=f"PriorityClass {name}", field="value")
        classes[name] = value
        if o.get("globalDefault"):
            classes[None] = value
    return classes


def node_from_object(o: Obj) -> Node:
    _, name = _name(o, "Node")
    where = f"Node {name}"
    meta = _mapping(o.get("metadata"), obj=where, field="metadata")
    spec = _mapping(o.get("spec"), obj=where, field="spec")
    status = _mapping(o.get("status"), obj=where, field="status")
    raw = status.get("allocatable")
    field = "status.allocatable"
    if raw is None:
        raw, field = status.get("capacity"), "status.capacity"
    taints = []
    for i, t in enumerate(_list(spec.get("taints"), obj=where, field="spec.taints")):
        t = _mapping(t, obj=where, field=f"spec.taints[{i}]")
        try:
            effect = TaintEffect(str(t.get("effect")))
        except ValueError as exc:
            raise InputError(
                f"unknown taint effect {t.get('effect')!r}",
                obj=where,
                field=f"spec.taints[{i}].effect",
            ) from exc
        taints.append(
            Taint(key=str(t.get("key", "")), value=str(t.get("value") or ""), effect=effect)
        )
    return Node(
        name=name,
        allocatable=Resources.parse(raw, obj=where, field=field),
        labels=_labels(meta.get("labels"), obj=where, field="metadata.labels"),
        taints=tuple(taints),
        unschedulable=bool(spec.get("unschedulable", False)),
    )


def effective_requests(spec: Obj, *, obj: str, status: Obj | None = None) -> Resources:
    """Requests as kube-scheduler counts them.

    max(sum of containers + restartable init (sidecar) containers, peak of each regular init
    container plus the sidecars started before it), where pod-level requests
    (``spec.resources``, PodLevelResources: cpu, memory and hugepages) replace that sum, plus
    pod overhead, plus one ``pods`` slot. A pod resized in place (``status``: what the kubelet
    allocated and actuated, per container or for the pod) counts the most of what its spec
    asks, what is allocated and what is actuated, resource by resource; while its resize is
    infeasible (condition PodResizePending, reason Infeasible), not its spec: the resize will
    not happen.
    """
    status = _mapping(status, obj=obj, field="status")
    infeasible = _resize_infeasible(status, obj=obj)
    spec_requests = _once(lambda c, _, field: _container_requests(c, obj=obj, field=field))
    counted = _aggregate(spec, spec_requests, obj)
    pod_resources = _mapping(status.get("resources"), obj=obj, field="status.resources")
    if status.get("allocatedResources") is not None and pod_resources.get("requests") is not None:
        # (the pod-level maps, when the kubelet writes them, sum its containers already)
        allocated = parse_quantities(
            status["allocatedResources"], obj=obj, field="status.allocatedResources"
        )
        actuated = parse_quantities(
            pod_resources["requests"], obj=obj, field="status.resources.requests"
        )
        counted = _most(allocated, actuated, {} if infeasible else counted)
    elif infeasible or _resized(status, obj=obj):
        statuses = _container_statuses(status, obj=obj)
        allocated_requests = _once(_allocated(statuses, spec_requests, infeasible, obj))
        allocated = _aggregate(spec, allocated_requests, obj)
        actuated = _aggregate(spec, _actuated(statuses, allocated_requests, obj), obj)
        counted = _most(allocated, actuated, {} if infeasible else counted)
    total = _with_pod_level_requests(counted, spec, status, infeasible, obj=obj)
    overhead = parse_quantities(
        _mapping(spec.get("overhead"), obj=obj, field="spec.overhead"),
        obj=obj,
        field="spec.overhead",
    )
    return Resources(_plus(_plus(total, overhead), {PODS: 1}))


_Units = dict[str, int]
# A container's requests as one of the ways kube-scheduler reads them: (the container, its
# name, the field it is at) -> its requests.
_ContainerRequests = Callable[[Any, str, str], _Units]


def _once(requests_of: _ContainerRequests) -> _ContainerRequests:
    """``requests_of``, each container read once (by its field)."""
    read: dict[str, _Units] = {}

    def cached(c: Any, name: str, field: str) -> _Units:
        if field not in read:
            read[field] = requests_of(c, name, field)
        return read[field]

    return cached


def _plus(a: _Units, b: _Units) -> _Units:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def _most(*vectors: _Units) -> _Units:
    """Resource by resource, the most any of ``vectors`` has (every name any of them has)."""
    out: _Units = {}
    for vector in vectors:
        for k, v in vector.items():
            if k not in out or v > out[k]:
                out[k] = v
    return out


def _aggregate(spec: Obj, requests_of: _ContainerRequests, obj: str) -> _Units:
    """The pod's containers' requests, each as ``requests_of`` reads it, aggregated as
    kube-scheduler aggregates them (sidecars run beside the containers; each regular init
    container beside the sidecars started before it)."""
    total: _Units = {}
    for i, c in enumerate(_list(spec.get("containers"), obj=obj, field="spec.containers")):
        total = _plus(total, requests_of(c, _container_name(c), f"spec.containers[{i}]"))
    sidecars: _Units = {}
    init_peak: _Units = {}
    for i, c in enumerate(_list(spec.get("initContainers"), obj=obj, field="spec.initContainers")):
        req = requests_of(c, _container_name(c), f"spec.initContainers[{i}]")
        if isinstance(c, Mapping) and c.get("restartPolicy") == "Always":
            sidecars = _plus(sidecars, req)
            init_peak = _most(init_peak, sidecars)
        else:
            init_peak = _most(init_peak, _plus(sidecars, req))
    return _most(_plus(total, sidecars), init_peak)


def _container_name(c: Any) -> str:
    return str(c.get("name") or "") if isinstance(c, Mapping) else ""


def _resized(status: Obj, *, obj: str) -> bool:
    """Whether any container's status says what is allocated or actuated (a kubelet's since
    Kubernetes 1.33 do; kwok's do not)."""
    for kind in ("containerStatuses", "initContainerStatuses"):
        for cs in _list(status.get(kind), obj=obj, field=f"status.{kind}"):
            if isinstance(cs, Mapping) and (
                cs.get("allocatedResources") is not None or cs.get("resources") is not None
            ):
                return True
    return False


def _container_statuses(status: Obj, *, obj: str) -> dict[str, tuple[Obj, str]]:
    """The status of each container (regular and init) by name, with its field."""
    out: dict[str, tuple[Obj, str]] = {}
    for kind in ("containerStatuses", "initContainerStatuses"):
        for i, cs in enumerate(_list(status.get(kind), obj=obj, field=f"status.{kind}")):
            field = f"status.{kind}[{i}]"
            cs = _mapping(cs, obj=obj, field=field)
            out.setdefault(str(cs.get("name") or ""), (cs, field))
    return out


def _allocated(
    statuses: Mapping[str, tuple[Obj, str]],
    spec_requests: _ContainerRequests,
    infeasible: bool,
    obj: str,
) -> _ContainerRequests:
    """What the kubelet allocated a container (``allocatedResources``), else its spec's
    requests (none while a resize is infeasible)."""

    def requests_of(c: Any, name: str, field: str) -> _Units:
        cs, at = statuses.get(name, ({}, ""))
        if cs.get("allocatedResources") is not None:
            raw = cs["allocatedResources"]
            return parse_quantities(raw, obj=obj, field=f"{at}.allocatedResources")
        return {} if infeasible else spec_requests(c, name, field)

    return requests_of


def _actuated(
    statuses: Mapping[str, tuple[Obj, str]], allocated: _ContainerRequests, obj: str
) -> _ContainerRequests:
    """What a container runs with (``resources.requests`` of its status), else what is
    allocated it (``allocated``)."""

    def requests_of(c: Any, name: str, field: str) -> _Units:
        cs, at = statuses.get(name, ({}, ""))
        resources = _mapping(cs.get("resources"), obj=obj, field=f"{at}.resources")
        if resources.get("requests") is not None:
            raw = resources["requests"]
            return parse_quantities(raw, obj=obj, field=f"{at}.resources.requests")
        return allocated(c, name, field)

    return requests_of


def _resize_infeasible(status: Obj, *, obj: str) -> bool:
    """Whether the kubelet found the pod's resize infeasible (it will not happen)."""
    for i, c in enumerate(_list(status.get("conditions"), obj=obj, field="status.conditions")):
        c = _mapping(c, obj=obj, field=f"status.conditions[{i}]")
        if c.get("type") == "PodResizePending":
            return c.get("reason") == "Infeasible"
    return False


def _pod_level(name: str) -> bool:
    """Whether kube-scheduler takes ``name`` from pod-level resources when they set it."""
    return name in ("cpu", "memory") or name.startswith("hugepages-")


def _with_pod_level_requests(
    aggregate: _Units, spec: Obj, status: Obj, infeasible: bool, *, obj: str
) -> _Units:
    """The containers' ``aggregate`` with the pod-level requests in place of theirs. As the API
    server defaults them, a pod-level limit stands for a request no container makes. Resized
    in place, the pod counts the most of them and of what its status says is allocated and
    actuated (not them while the resize is infeasible)."""
    res = _mapping(spec.get("resources"), obj=obj, field="spec.resources")
    amounts: _Units = {}
    for kind in ("limits", "requests"):  # requests last: they win
        field = f"spec.resources.{kind}"
        parsed = parse_quantities(
            _mapping(res.get(kind), obj=obj, field=field), obj=obj, field=field
        )
        amounts |= {
            r: v
            for r, v in parsed.items()
            if _pod_level(r) and (kind == "requests" or not aggregate.get(r))
        }
    if not amounts:
        return aggregate
    if status.get("resources") is not None:
        resources = _mapping(status.get("resources"), obj=obj, field="status.resources")
        requests = resources.get("requests")
        allocated = status.get("allocatedResources")
        amounts = {
            r: v
            for r, v in _most(
                {} if infeasible else amounts,
                parse_quantities(requests, obj=obj, field="status.resources.requests"),
                parse_quantities(allocated, obj=obj, field="status.allocatedResources"),
            ).items()
            if _pod_level(r)
        }
    return {**aggregate, **amounts}


def _container_requests(c: Any, *, obj: str, field: str) -> _Units:
    c = _mapping(c, obj=obj, field=field)
    res = _mapping(c.get("resources"), obj=obj, field=f"{field}.resources")
    requests = _mapping(res.get("requests"), obj=obj, field=f"{field}.resources.requests")
    limits = _mapping(res.get("limits"), obj=obj, field=f"{field}.resources.limits")
    # The API server defaults a missing request to the limit.
    merged = {**limits, **requests}
    return parse_quantities(merged, obj=obj, field=f"{field}.resources.requests")


def _requirements(items: Any, *, obj: str, field: str) -> tuple[Requirement, ...]:
    out = []
    for i, r in enumerate(_list(items, obj=obj, field=field)):
        r = _mapping(r, obj=obj, field=f"{field}[{i}]")
        try:
            op = Operator(str(r.get("operator")))
        except ValueError as exc:
            raise InputError(
                f"unknown operator {r.get('operator')!r}", obj=obj, field=f"{field}[{i}].operator"
            ) from exc
        values = tuple(
            str(v) for v in _list(r.get("values"), obj=obj, field=f"{field}[{i}].values")
        )
        out.append(Requirement(key=str(r.get("key", "")), operator=op, values=values))
    return tuple(out)


def _affinity_terms(
    spec: Obj, *, obj: str, base: str = "spec.affinity"
) -> tuple[SelectorTerm, ...] | None:
    affinity = _mapping(spec.get("affinity"), obj=obj, field=base)
    node_affinity = _mapping(affinity.get("nodeAffinity"), obj=obj, field=f"{base}.nodeAffinity")
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    base += ".nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    return None if required is None else _node_selector_terms(required, obj=obj, base=base)


def _node_selector_terms(required: Any, *, obj: str, base: str) -> tuple[SelectorTerm, ...]:
    """A NodeSelector (``nodeSelectorTerms``, ORed), as node and volume affinity state it."""
    required = _mapping(required, obj=obj, field=base)
    return tuple(
        _node_selector_term(t, obj=obj, field=f"{base}.nodeSelectorTerms[{i}]")
        for i, t in enumerate(
            _list(required.get("nodeSelectorTerms"), obj=obj, field=f"{base}.nodeSelectorTerms")
        )
    )


def _node_selector_term(raw: Any, *, obj: str, field: str) -> SelectorTerm:
    t = _mapping(raw, obj=obj, field=field)
    return SelectorTerm(
        expressions=_requirements(
            t.get("matchExpressions"), obj=obj, field=f"{field}.matchExpressions"
        ),
        fields=_requirements(t.get("matchFields"), obj=obj, field=f"{field}.matchFields"),
    )


def check_affinity(raw: Any, *, obj: str, field: str) -> None:
    """An ``affinity``, read as the loader reads a pod's, its preferred terms too
    (kube-scheduler scores them): an InputError names the field."""
    spec = {"affinity": raw}
    _affinity_terms(spec, obj=obj, base=field)
    affinity = _mapping(raw, obj=obj, field=field)
    for kind in ("nodeAffinity", "podAffinity", "podAntiAffinity"):
        if kind != "nodeAffinity":
            _pod_affinity_terms(spec, kind, {}, None, obj=obj, base=field)
        section = _mapping(affinity.get(kind), obj=obj, field=f"{field}.{kind}")
        base = f"{field}.{kind}.preferredDuringSchedulingIgnoredDuringExecution"
        for i, p in enumerate(
            _list(
                section.get("preferredDuringSchedulingIgnoredDuringExecution"), obj=obj, field=base
            )
        ):
            p = _mapping(p, obj=obj, field=f"{base}[{i}]")
            weight = p.get("weight")
            if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 100:
                raise InputError(
                    f"expected an integer from 1 to 100, got {weight!r}",
                    obj=obj,
                    field=f"{base}[{i}].weight",
                )
            if kind == "nodeAffinity":
                _node_selector_term(p.get("preference"), obj=obj, field=f"{base}[{i}].preference")
            else:
                _pod_affinity_term(
                    p.get("podAffinityTerm"),
                    {},
                    None,
                    obj=obj,
                    field=f"{base}[{i}].podAffinityTerm",
                )


def _label_selector(value: Any, *, obj: str, field: str) -> LabelSelector:
    sel = _mapping(value, obj=obj, field=field)
    return LabelSelector(
        match_labels=_labels(sel.get("matchLabels"), obj=obj, field=f"{field}.matchLabels"),
        match_expressions=_requirements(
            sel.get("matchExpressions"), obj=obj, field=f"{field}.matchExpressions"
        ),
    )


def _optional_selector(value: Any, *, obj: str, field: str) -> LabelSelector | None:
    return None if value is None else _label_selector(value, obj=obj, field=field)


def _topology_key(value: Any, *, obj: str, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError("expected a non-empty node label key", obj=obj, field=field)
    return value


def _term_selector(
    source: Obj, labels: Mapping[str, str], *, mismatch: bool, obj: str, field: str
) -> LabelSelector | None:
    """The ``labelSelector`` of ``source`` (an affinity term or a spread constraint) with
    ``key In [the pod's value]`` for each of its ``matchLabelKeys`` the pod's labels have (and,
    with ``mismatch``, ``key NotIn [...]`` for its ``mismatchLabelKeys``), as kube-apiserver
    merges them when it admits a pod; a requirement it merged already is not added twice."""
    selector = _optional_selector(
        source.get("labelSelector"), obj=obj, field=f"{field}.labelSelector"
    )
    merged = list(selector.match_expressions) if selector is not None else []
    kinds = (("matchLabelKeys", Operator.IN), ("mismatchLabelKeys", Operator.NOT_IN))
    for name, operator in kinds[: 2 if mismatch else 1]:
        keys = _list(source.get(name), obj=obj, field=f"{field}.{name}")
        if not all(isinstance(k, str) for k in keys):
            raise InputError("expected label keys", obj=obj, field=f"{field}.{name}")
        for k in keys:
            wanted = Requirement(k, operator, (labels[k],)) if k in labels else None
            if wanted is not None and wanted not in merged:
                merged.append(wanted)
    if selector is None:  # selects no pod: nothing to narrow
        return None
    return replace(selector, match_expressions=tuple(merged))


def _pod_affinity_terms(
    spec: Obj,
    kind: str,
    labels: Mapping[str, str],
    namespaces: Mapping[str, Mapping[str, str]] | None,
    *,
    obj: str,
    base: str = "spec.affinity",
) -> tuple[PodAffinityTerm, ...]:
    """The required terms of ``spec.affinity.<kind>`` (podAffinity or podAntiAffinity)."""
    affinity = _mapping(spec.get("affinity"), obj=obj, field=base)
    base += f".{kind}"
    section = _mapping(affinity.get(kind), obj=obj, field=base)
    base += ".requiredDuringSchedulingIgnoredDuringExecution"
    return tuple(
        _pod_affinity_term(t, labels, namespaces, obj=obj, field=f"{base}[{i}]")
        for i, t in enumerate(
            _list(
                section.get("requiredDuringSchedulingIgnoredDuringExecution"), obj=obj, field=base
            )
        )
    )


def _pod_affinity_term(
    raw: Any,
    labels: Mapping[str, str],
    namespaces: Mapping[str, Mapping[str, str]] | None,
    *,
    obj: str,
    field: str,
) -> PodAffinityTerm:
    """One term, its ``matchLabelKeys`` and ``mismatchLabelKeys`` merged into the selector, and,
    given every namespace's labels, its ``namespaceSelector`` resolved into ``namespaces`` as
    kube-scheduler resolves it (a term whose scope is then empty selects no pod)."""
    t = _mapping(raw, obj=obj, field=field)
    selector = _term_selector(t, labels, mismatch=True, obj=obj, field=field)
    listed = tuple(str(n) for n in _list(t.get("namespaces"), obj=obj, field=f"{field}.namespaces"))
    scope = _optional_selector(
        t.get("namespaceSelector"), obj=obj, field=f"{field}.namespaceSelector"
    )
    if scope is not None and namespaces is not None:
        listed = tuple(sorted({*listed, *(n for n, lb in namespaces.items() if scope.matches(lb))}))
        scope = None
        if not listed:
            selector = None  # no namespace in scope: it selects no pod
    return PodAffinityTerm(
        topology_key=_topology_key(t.get("topologyKey"), obj=obj, field=f"{field}.topologyKey"),
        selector=selector,
        namespaces=listed,
        namespace_selector=scope,
    )


def _spread_constraints(
    spec: Obj, labels: Mapping[str, str], *, obj: str
) -> tuple[SpreadConstraint, ...]:
    """The pod's DoNotSchedule constraints (:func:`spread_constraint`)."""
    base = "spec.topologySpreadConstraints"
    out = []
    for i, c in enumerate(_list(spec.get("topologySpreadConstraints"), obj=obj, field=base)):
        constraint = spread_constraint(c, labels, obj=obj, field=f"{base}[{i}]")
        if constraint is not None:
            out.append(constraint)
    return tuple(out)


def spread_constraint(
    raw: Any, labels: Mapping[str, str], *, obj: str, field: str
) -> SpreadConstraint | None:
    """One ``topologySpreadConstraints`` item of a pod with ``labels``, checked; None for a
    ScheduleAnyway one (a preference kube-scheduler scores, not a rule). Each ``matchLabelKeys``
    key the pod has is merged into its selector as kube-apiserver merges them since 1.34
    (``key In [the pod's value]``): pods of a Deployment's revision spread among themselves."""
    c = _mapping(raw, obj=obj, field=field)
    when = c.get("whenUnsatisfiable")
    if when not in ("DoNotSchedule", "ScheduleAnyway"):
        raise InputError(
            f"expected DoNotSchedule or ScheduleAnyway, got {when!r}",
            obj=obj,
            field=f"{field}.whenUnsatisfiable",
        )
    skew = c.get("maxSkew")
    if not isinstance(skew, int) or isinstance(skew, bool) or skew < 1:
        raise InputError(
            f"expected an integer >= 1, got {skew!r}", obj=obj, field=f"{field}.maxSkew"
        )
    key = _topology_key(c.get("topologyKey"), obj=obj, field=f"{field}.topologyKey")
    selector = _term_selector(c, labels, mismatch=False, obj=obj, field=field)
    min_domains = c.get("minDomains")
    if min_domains is not None and (
        not isinstance(min_domains, int) or isinstance(min_domains, bool) or min_domains < 1
    ):
        raise InputError(
            f"expected an integer >= 1, got {min_domains!r}", obj=obj, field=f"{field}.minDomains"
        )
    policies = {}
    for name, default in (("nodeAffinityPolicy", "Honor"), ("nodeTaintsPolicy", "Ignore")):
        policy = c.get(name) or default
        if policy not in ("Honor", "Ignore"):
            raise InputError(
                f"expected Honor or Ignore, got {policy!r}", obj=obj, field=f"{field}.{name}"
            )
        policies[name] = str(policy)
    if when != "DoNotSchedule":
        return None
    return SpreadConstraint(
        max_skew=skew,
        topology_key=key,
        selector=selector,
        min_domains=min_domains,
        node_affinity_policy=policies["nodeAffinityPolicy"],
        node_taints_policy=policies["nodeTaintsPolicy"],
    )


def _host_ports(spec: Obj, *, obj: str) -> tuple[HostPort, ...]:
    """The host ports of every container and init container (NodePorts reads both)."""
    out = []
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(_list(spec.get(kind), obj=obj, field=f"spec.{kind}")):
            c = _mapping(c, obj=obj, field=f"spec.{kind}[{i}]")
            base = f"spec.{kind}[{i}].ports"
            for j, port in enumerate(_list(c.get("ports"), obj=obj, field=base)):
                port = _mapping(port, obj=obj, field=f"{base}[{j}]")
                number = port.get("hostPort")
                if number in (None, 0):
                    continue
                if (
                    not isinstance(number, int)
                    or isinstance(number, bool)
                    or not 0 < number < 65536
                ):
                    raise InputError(
                        f"expected a port number, got {number!r}",
                        obj=obj,
                        field=f"{base}[{j}].hostPort",
                    )
                out.append(
                    HostPort(
                        port=number,
                        protocol=str(port.get("protocol") or "TCP"),
                        host_ip=str(port.get("hostIP") or ""),
                    )
                )
    return tuple(out)


@dataclass(frozen=True)
class Volumes:
    """Bound PersistentVolumeClaims (namespace/name -> volume) and PersistentVolumes (name ->
    the node selectors a node must meet to use it: its required node affinity and its zone
    labels), to resolve a pod's claims; the claims (namespace/name) with the ReadWriteOncePod
    access mode; the CSI volumes' unique names (NodeVolumeLimits counts them)."""

    claims: Mapping[str, str]
    affinity: Mapping[str, tuple[tuple[SelectorTerm, ...], ...]]
    csi: Mapping[str, str]  # volume -> "driver/volumeHandle"
    # Claims not bound yet that kube-scheduler would have provisioned on the node their pod
    # goes to (namespace/name -> the node selectors that puts on the pod, and its CSI driver).
    provisioned: Mapping[str, tuple[tuple[tuple[SelectorTerm, ...], ...], str]]
    exclusive: frozenset[str] = frozenset()


# VolumeZone's labels, each with the GA key a node may carry instead of a beta one.
_VOLUME_ZONE_KEYS: Mapping[str, str | None] = {
    "failure-domain.beta.kubernetes.io/zone": "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region": "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone": None,
    "topology.kubernetes.io/region": None,
}


def _volume_zone_terms(labels: Mapping[str, str]) -> tuple[SelectorTerm, ...] | None:
    """kube-scheduler's VolumeZone filter for a PersistentVolume's labels as a node selector
    (None when it has none of them): a node without any zone or region label takes the volume
    (a single-zone cluster); any other must carry each of the volume's keys (or, for a beta
    key, the GA one) with one of its values (``a__b`` lists several). A value with an empty
    item is ignored, as kube-scheduler ignores what it cannot parse."""
    alternatives: list[list[tuple[Requirement, ...]]] = []
    for key, ga_key in _VOLUME_ZONE_KEYS.items():
        if key not in labels:
            continue
        zones = {z.strip() for z in labels[key].split("__")}
        if "" in zones:
            continue
        values = tuple(sorted(zones))
        ways: list[tuple[Requirement, ...]] = [(Requirement(key, Operator.IN, values),)]
        if ga_key is not None:
            absent = Requirement(key, Operator.DOES_NOT_EXIST)
            ways.append((absent, Requirement(ga_key, Operator.IN, values)))
        alternatives.append(ways)
    if not alternatives:
        return None
    unlabelled = SelectorTerm(
        expressions=tuple(Requirement(k, Operator.DOES_NOT_EXIST) for k in _VOLUME_ZONE_KEYS)
    )
    return (
        unlabelled,
        *(
            SelectorTerm(expressions=tuple(r for way in ways for r in way))
            for ways in itertools.product(*alternatives)
        ),
    )


# Set on a claim while it is provisioned for the node kube-scheduler chose.
_SELECTED_NODE = "volume.kubernetes.io/selected-node"


@dataclass(frozen=True)
class _Provisioner:
    """A StorageClass that provisions on the first consumer's node, and, when its CSI driver
    tracks storage capacity, the node selectors of its CSIStorageCapacity objects with the
    largest volume each allows (in bytes)."""

    allowed: tuple[SelectorTerm, ...] | None  # its allowedTopologies (None: any node)
    driver: str
    capacities: tuple[tuple[SelectorTerm | None, int], ...] | None  # None: not tracked


def _provisioners(
    classes: Iterable[Obj], drivers: Iterable[Obj], capacities: Iterable[Obj]
) -> dict[str, _Provisioner]:
    """The StorageClasses with binding mode WaitForFirstConsumer whose provisioner is a
    CSIDriver of the snapshot, by name (kube-scheduler's VolumeBinding provisions their claims
    on the node it picks)."""
    tracked: dict[str, bool] = {}
    for o in drivers:
        _, name = _name(o, "CSIDriver")
        spec = _mapping(o.get("spec"), obj=f"CSIDriver {name}", field="spec")
        tracked[name] = bool(spec.get("storageCapacity"))
    by_class: dict[str, list[tuple[SelectorTerm | None, int]]] = {}
    for o in capacities:
        namespace, name = _name(o, "CSIStorageCapacity")
        where = f"CSIStorageCapacity {namespace}/{name}"
        which = "maximumVolumeSize" if o.get("maximumVolumeSize") is not None else "capacity"
        if o.get(which) is None or o.get("nodeTopology") is None:
            continue  # no size, or no node has access: it offers nothing
        size = to_units("storage", o[which], obj=where, field=which)
        topology = _label_selector(o["nodeTopology"], obj=where, field="nodeTopology")
        expressions = (
            *(Requirement(k, Operator.IN, (v,)) for k, v in topology.match_labels.items()),
            *topology.match_expressions,
        )
        term = SelectorTerm(expressions=expressions) if expressions else None  # None: any node
        by_class.setdefault(str(o.get("storageClassName") or ""), []).append((term, size))
    out = {}
    for o in classes:
        _, name = _name(o, "StorageClass")
        driver = str(o.get("provisioner") or "")
        if o.get("volumeBindingMode") == "WaitForFirstConsumer" and driver in tracked:
            sizes = tuple(by_class.get(name, ())) if tracked[driver] else None
            out[name] = _Provisioner(_allowed_topologies(o), driver, sizes)
    return out


def _provisioned_terms(
    provisioner: _Provisioner, claim: Obj
) -> tuple[tuple[SelectorTerm, ...], ...]:
    """The node selectors a claim to provision puts on its pod (each an OR; all must hold):
    its class's allowed topologies, and, under storage capacity tracking, the topologies of
    the CSIStorageCapacity objects of its class whose size (the largest volume, else the
    capacity) holds the claim's request (none: no node; an empty topology: any node)."""
    groups = [provisioner.allowed] if provisioner.allowed is not None else []
    namespace, name = _name(claim, "PersistentVolumeClaim")
    where = f"PersistentVolumeClaim {namespace}/{name}"
    spec = _mapping(claim.get("spec"), obj=where, field="spec")
    resources = _mapping(spec.get("resources"), obj=where, field="spec.resources")
    requests = _mapping(resources.get("requests"), obj=where, field="spec.resources.requests")
    if provisioner.capacities is not None and requests.get("storage") is not None:
        wanted = to_units(
            "storage", requests["storage"], obj=where, field="spec.resources.requests.storage"
        )
        terms = [term for term, size in provisioner.capacities if size >= wanted]
        if None not in terms:  # else some capacity is reachable from any node
            groups.append(tuple(t for t in terms if t is not None))
    return tuple(groups)


def _allowed_topologies(storage_class: Obj) -> tuple[SelectorTerm, ...] | None:
    """A StorageClass's ``allowedTopologies`` as node selector terms (None: none, any node)."""
    name = storage_class["metadata"]["name"]
    where = f"StorageClass {name}"
    terms = []
    topologies = _list(storage_class.get("allowedTopologies"), obj=where, field="allowedTopologies")
    for i, t in enumerate(topologies):
        base = f"allowedTopologies[{i}].matchLabelExpressions"
        expressions = _list(
            _mapping(t, obj=where, field=base).get("matchLabelExpressions"), obj=where, field=base
        )
        requirements = []
        for j, e in enumerate(expressions):
            e = _mapping(e, obj=where, field=f"{base}[{j}]")
            values = _list(e.get("values"), obj=where, field=f"{base}[{j}].values")
            if not isinstance(e.get("key"), str) or not e["key"]:
                raise InputError("expected a label key", obj=where, field=f"{base}[{j}].key")
            requirements.append(Requirement(e["key"], Operator.IN, tuple(str(v) for v in values)))
        terms.append(SelectorTerm(expressions=tuple(requirements)))
    return tuple(terms) or None


def _volumes(
    claims: Iterable[Obj],
    volumes: Iterable[Obj],
    classes: Iterable[Obj],
    drivers: Iterable[Obj],
    capacities: Iterable[Obj],
) -> Volumes:
    bound: dict[str, str] = {}
    exclusive: set[str] = set()
    unbound: dict[str, tuple[str, Obj]] = {}  # claim -> its class, and itself
    for o in claims:
        namespace, name = _name(o, "PersistentVolumeClaim")
        where = f"PersistentVolumeClaim {namespace}/{name}"
        spec = _mapping(o.get("spec"), obj=where, field="spec")
        status = _mapping(o.get("status"), obj=where, field="status")
        meta = _mapping(o.get("metadata"), obj=where, field="metadata")
        if status.get("phase") == "Bound" and spec.get("volumeName"):
            bound[f"{namespace}/{name}"] = str(spec["volumeName"])
        elif (
            not spec.get("volumeName")
            and spec.get("storageClassName")
            and not meta.get("deletionTimestamp")  # kube-scheduler refuses its pods
            and _SELECTED_NODE
            not in _labels(meta.get("annotations"), obj=where, field="metadata.annotations")
        ):
            unbound[f"{namespace}/{name}"] = (str(spec["storageClassName"]), o)
        modes = _list(spec.get("accessModes"), obj=where, field="spec.accessModes")
        if "ReadWriteOncePod" in modes:
            exclusive.add(f"{namespace}/{name}")
    affinity: dict[str, tuple[tuple[SelectorTerm, ...], ...]] = {}
    csi: dict[str, str] = {}
    available: set[str] = set()  # classes with a volume no claim holds
    for o in volumes:
        _, name = _name(o, "PersistentVolume")
        where = f"PersistentVolume {name}"
        spec = _mapping(o.get("spec"), obj=where, field="spec")
        if not spec.get("claimRef"):
            available.add(str(spec.get("storageClassName") or ""))
        node_affinity = _mapping(spec.get("nodeAffinity"), obj=where, field="spec.nodeAffinity")
        required = node_affinity.get("required")
        labels = _labels(o["metadata"].get("labels"), obj=where, field="metadata.labels")
        selectors = (
            None
            if required is None
            else _node_selector_terms(required, obj=where, base="spec.nodeAffinity.required"),
            _volume_zone_terms(labels),
        )
        affinity[name] = tuple(s for s in selectors if s is not None)
        source = _mapping(spec.get("csi"), obj=where, field="spec.csi")
        if source.get("driver") and source.get("volumeHandle"):
            csi[name] = f"{source['driver']}/{source['volumeHandle']}"
    # A claim of a class with a free volume may bind to it (which one, kube-scheduler picks
    # by node): only classes without one are sure to provision.
    provisioners = _provisioners(classes, drivers, capacities)
    provisioned = {
        claim: (_provisioned_terms(provisioners[c], o), provisioners[c].driver)
        for claim, (c, o) in unbound.items()
        if c in provisioners and c not in available
    }
    return Volumes(
        claims=bound,
        affinity=affinity,
        csi=csi,
        provisioned=provisioned,
        exclusive=frozenset(exclusive),
    )


def _with_volume_limits(
    nodes: tuple[Node, ...],
    csi_nodes: Iterable[Obj],
    attachments: Iterable[Obj],
    volumes: Volumes,
) -> tuple[Node, ...]:
    """The nodes with their CSI drivers' attach limits (each CSINode's drivers with an
    allocatable count) and the CSI volumes VolumeAttachments attach to them (with an attacher
    and a PersistentVolume in the snapshot: what kube-scheduler's NodeVolumeLimits counts)."""
    limits: dict[str, dict[str, int]] = {}
    for o in csi_nodes:
        _, name = _name(o, "CSINode")
        where = f"CSINode {name}"
        spec = _mapping(o.get("spec"), obj=where, field="spec")
        for i, d in enumerate(_list(spec.get("drivers"), obj=where, field="spec.drivers")):
            d = _mapping(d, obj=where, field=f"spec.drivers[{i}]")
            field = f"spec.drivers[{i}].allocatable"
            count = _mapping(d.get("allocatable"), obj=where, field=field).get("count")
            if count is None:
                continue
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise InputError(
                    f"expected a count of volumes, got {count!r}", obj=where, field=f"{field}.count"
                )
            limits.setdefault(name, {})[str(d.get("name") or "")] = count
    attached: dict[str, set[str]] = {}
    for o in attachments:
        _, name = _name(o, "VolumeAttachment")
        where = f"VolumeAttachment {name}"
        spec = _mapping(o.get("spec"), obj=where, field="spec")
        source = _mapping(spec.get("source"), obj=where, field="spec.source")
        volume = volumes.csi.get(str(source.get("persistentVolumeName") or ""))
        if spec.get("attacher") and spec.get("nodeName") and volume is not None:
            handle = volume.removeprefix(f"{csi_driver(volume)}/")
            attached.setdefault(str(spec["nodeName"]), set()).add(f"{spec['attacher']}/{handle}")
    if not limits and not attached:
        return nodes
    return tuple(
        replace(
            n,
            volume_limits=limits.get(n.name, {}),
            attached_volumes=frozenset(attached.get(n.name, ())),
        )
        for n in nodes
    )


@dataclass(frozen=True)
class PodVolumes:
    """What a pod's claims mean for scheduling it (the fields of :class:`Pod` they fill)."""

    affinity: tuple[tuple[SelectorTerm, ...], ...]
    unresolved: tuple[str, ...]
    exclusive: tuple[str, ...]
    csi: tuple[str, ...]
    provisioned: tuple[str, ...]


def _pod_volumes(spec: Obj, namespace: str, name: str, volumes: Volumes, *, obj: str) -> PodVolumes:
    """The node selectors of the bound volumes the pod's claims name, its claims without one
    in the snapshot (a generic ephemeral volume's claim is ``<pod>-<volume>``), and its bound
    claims that are ReadWriteOncePod, its bound CSI volumes (each once), and its claims to be
    provisioned where it goes (their class's allowed topologies join the selectors; each is a
    new volume of its driver: ``driver/~namespace/claim``, as NodeVolumeLimits counts it)."""
    affinity: list[tuple[SelectorTerm, ...]] = []
    unresolved: list[str] = []
    exclusive: list[str] = []
    csi: list[str] = []
    provisioned: list[str] = []
    for i, v in enumerate(_list(spec.get("volumes"), obj=obj, field="spec.volumes")):
        v = _mapping(v, obj=obj, field=f"spec.volumes[{i}]")
        if v.get("ephemeral") is not None:
            claim = f"{name}-{v.get('name')}"
        elif v.get("persistentVolumeClaim") is not None:
            source = _mapping(
                v["persistentVolumeClaim"],
                obj=obj,
                field=f"spec.volumes[{i}].persistentVolumeClaim",
            )
            named = source.get("claimName")
            if not isinstance(named, str) or not named:
                raise InputError(
                    "expected a claim name",
                    obj=obj,
                    field=f"spec.volumes[{i}].persistentVolumeClaim.claimName",
                )
            claim = named
        else:
            continue
        volume = volumes.claims.get(f"{namespace}/{claim}")
        if volume is None and f"{namespace}/{claim}" in volumes.provisioned:
            groups, driver = volumes.provisioned[f"{namespace}/{claim}"]
            affinity.extend(groups)
            if f"{driver}/~{namespace}/{claim}" not in csi:
                csi.append(f"{driver}/~{namespace}/{claim}")
            if claim not in provisioned:
                provisioned.append(claim)
            continue
        if volume is None or volume not in volumes.affinity:
            unresolved.append(claim)
            continue
        affinity.extend(volumes.affinity[volume])
        if f"{namespace}/{claim}" in volumes.exclusive and claim not in exclusive:
            exclusive.append(claim)
        unique = volumes.csi.get(volume)
        if unique is not None and unique not in csi:
            csi.append(unique)
    return PodVolumes(
        tuple(affinity), tuple(unresolved), tuple(exclusive), tuple(csi), tuple(provisioned)
    )


def _tolerations(spec: Obj, *, obj: str) -> tuple[Toleration, ...]:
    out = []
    for i, t in enumerate(_list(spec.get("tolerations"), obj=obj, field="spec.tolerations")):
        t = _mapping(t, obj=obj, field=f"spec.tolerations[{i}]")
        effect = t.get("effect") or None
        try:
            parsed = TaintEffect(effect) if effect else None
        except ValueError as exc:
            raise InputError(
                f"unknown effect {effect!r}", obj=obj, field=f"spec.tolerations[{i}].effect"
            ) from exc
        out.append(
            Toleration(
                key=str(t.get("key") or ""),
                operator=str(t.get("operator") or "Equal"),
                value=str(t.get("value") or ""),
                effect=parsed,
            )
        )
    return tuple(out)


def pod_from_object(
    o: Obj,
    classes: Mapping[str | None, int] | None = None,
    volumes: Volumes | None = None,
    namespaces: Mapping[str, Mapping[str, str]] | None = None,
) -> Pod:
    namespace, name = _name(o, "Pod")
    where = f"Pod {namespace}/{name}"
    classes = classes or {}
    volumes = volumes or Volumes(claims={}, affinity={}, csi={}, provisioned={})
    meta = _mapping(o.get("metadata"), obj=where, field="metadata")
    spec = _mapping(o.get("spec"), obj=where, field="spec")
    priority = spec.get("priority")
    if priority is None:
        class_name = spec.get("priorityClassName")
        if class_name and class_name in classes:
            priority = classes[class_name]
        elif class_name and class_name not in ("system-cluster-critical", "system-node-critical"):
            raise InputError(
                f"PriorityClass {class_name!r} not found in the snapshot",
                obj=where,
                field="spec.priorityClassName",
            )
        elif class_name:
            priority = 2_000_000_000 if class_name == "system-cluster-critical" else 2_000_001_000
        else:
            priority = classes.get(None, 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise InputError("expected an integer", obj=where, field="spec.priority")
    try:
        policy = PreemptionPolicy(spec.get("preemptionPolicy") or "PreemptLowerPriority")
    except ValueError as exc:
        raise InputError(
            f"unknown preemptionPolicy {spec.get('preemptionPolicy')!r}",
            obj=where,
            field="spec.preemptionPolicy",
        ) from exc
    owner = None
    for ref in _list(meta.get("ownerReferences"), obj=where, field="metadata.ownerReferences"):
        if isinstance(ref, Mapping) and ref.get("controller"):
            owner = f"{ref.get('kind')}/{ref.get('name')}"
    node_name = spec.get("nodeName") or None
    claims = _pod_volumes(spec, namespace, name, volumes, obj=where)
    labels = _labels(meta.get("labels"), obj=where, field="metadata.labels")
    return Pod(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or ""),
        requests=effective_requests(spec, obj=where, status=o.get("status")),
        priority=priority,
        preemption_policy=policy,
        node_selector=_labels(spec.get("nodeSelector"), obj=where, field="spec.nodeSelector"),
        affinity_terms=_affinity_terms(spec, obj=where),
        tolerations=_tolerations(spec, obj=where),
        node_name=str(node_name) if node_name else None,
        labels=labels,
        owner=owner,
        scheduler_name=str(spec.get("schedulerName") or "default-scheduler"),
        pod_affinity=_pod_affinity_terms(spec, "podAffinity", labels, namespaces, obj=where),
        pod_anti_affinity=_pod_affinity_terms(
            spec, "podAntiAffinity", labels, namespaces, obj=where
        ),
        spread_constraints=_spread_constraints(spec, labels, obj=where),
        host_ports=_host_ports(spec, obj=where),
        volume_affinity=claims.affinity,
        unresolved_claims=claims.unresolved,
        exclusive_claims=claims.exclusive,
        csi_volumes=claims.csi,
        provisioned_claims=claims.provisioned,
        resource_claims=_names(spec, "resourceClaims", obj=where),
        scheduling_gates=_names(spec, "schedulingGates", obj=where),
        terminating=bool(meta.get("deletionTimestamp")),
    )


def _names(spec: Obj, field: str, *, obj: str) -> tuple[str, ...]:
    """The ``name`` of each entry of ``spec.<field>`` (resourceClaims, schedulingGates)."""
    out = []
    for i, entry in enumerate(_list(spec.get(field), obj=obj, field=f"spec.{field}")):
        name = _mapping(entry, obj=obj, field=f"spec.{field}[{i}]").get("name")
        if not isinstance(name, str) or not name:
            raise InputError("expected a name", obj=obj, field=f"spec.{field}[{i}].name")
        out.append(name)
    return tuple(out)


def _int_or_percent(value: Any, total: int, *, round_up: bool, obj: str, field: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            share = int(value[:-1]) * total / 100
        except ValueError as exc:
            raise InputError(f"bad percentage {value!r}", obj=obj, field=field) from exc
        return math.ceil(share) if round_up else math.floor(share)
    raise InputError(f"expected an integer or a percentage, got {value!r}", obj=obj, field=field)


def budget_from_object(o: Obj, pods: tuple[Pod, ...]) -> DisruptionBudget:
    namespace, name = _name(o, "PodDisruptionBudget")
    where = f"PodDisruptionBudget {namespace}/{name}"
    spec = _mapping(o.get("spec"), obj=where, field="spec")
    selector = _label_selector(spec.get("selector"), obj=where, field="spec.selector")
    status = _mapping(o.get("status"), obj=where, field="status")
    allowed = status.get("disruptionsAllowed")
    if not isinstance(allowed, int) or isinstance(allowed, bool):
        # No controller has computed it (an offline snapshot): derive it as the disruption
        # controller does, counting bound pods as healthy.
        matching = [p for p in pods if p.namespace == namespace and selector.matches(p.labels)]
        expected, healthy = len(matching), sum(1 for p in matching if p.bound)
        if spec.get("minAvailable") is not None:
            need = _int_or_percent(
                spec["minAvailable"], expected, round_up=True, obj=where, field="spec.minAvailable"
            )
            allowed = healthy - need
        elif spec.get("maxUnavailable") is not None:
            may = _int_or_percent(
                spec["maxUnavailable"],
                expected,
                round_up=True,
                obj=where,
                field="spec.maxUnavailable",
            )
            allowed = may - (expected - healthy)
        else:
            allowed = 0
    return DisruptionBudget(
        namespace=namespace, name=name, selector=selector, disruptions_allowed=max(0, allowed)
    )


# --- back to Kubernetes objects (for importers and generated scenarios) ---------------------


def node_to_object(node: Node) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if node.taints:
        spec["taints"] = [
            {"key": t.key, "value": t.value, "effect": t.effect.value}
            if t.value
            else {"key": t.key, "effect": t.effect.value}
            for t in node.taints
        ]
    if node.unschedulable:
        spec["unschedulable"] = True
    quantities = node.allocatable.to_quantities()
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": dict(node.labels)},
        "spec": spec,
        "status": {"capacity": quantities, "allocatable": quantities},
    }


def pod_to_object(pod: Pod) -> dict[str, Any]:
    requests = Resources((k, v) for k, v in pod.requests.items() if k != PODS).to_quantities()
    container: dict[str, Any] = {"name": "main", "image": "registry.k8s.io/pause:3.10"}
    if requests:
        container["resources"] = {
            "requests": requests,
            "limits": {k: v for k, v in requests.items() if k not in ("cpu", "memory")},
        }
    spec: dict[str, Any] = {"containers": [container], "priority": pod.priority}
    if pod.preemption_policy.value != "PreemptLowerPriority":
        spec["preemptionPolicy"] = pod.preemption_policy.value
    if pod.node_selector:
        spec["nodeSelector"] = dict(pod.node_selector)
    if pod.affinity_terms is not None:
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": _terms_obj(pod.affinity_terms)
                }
            }
        }
    for kind, terms in (
        ("podAffinity", pod.pod_affinity),
        ("podAntiAffinity", pod.pod_anti_affinity),
    ):
        if terms:
            spec.setdefault("affinity", {})[kind] = {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    _affinity_term_obj(t) for t in terms
                ]
            }
    if pod.spread_constraints:
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": c.max_skew,
                "topologyKey": c.topology_key,
                "whenUnsatisfiable": "DoNotSchedule",
                **({"labelSelector": _selector_obj(c.selector)} if c.selector is not None else {}),
                **({"minDomains": c.min_domains} if c.min_domains is not None else {}),
                **(
                    {"nodeAffinityPolicy": c.node_affinity_policy}
                    if c.node_affinity_policy != "Honor"
                    else {}
                ),
                **(
                    {"nodeTaintsPolicy": c.node_taints_policy}
                    if c.node_taints_policy != "Ignore"
                    else {}
                ),
            }
            for c in pod.spread_constraints
        ]
    if pod.host_ports:
        container["ports"] = [
            {
                "containerPort": h.port,
                "hostPort": h.port,
                "protocol": h.protocol,
                **({"hostIP": h.host_ip} if h.host_ip else {}),
            }
            for h in pod.host_ports
        ]
    if pod.tolerations:
        spec["tolerations"] = [
            {
                k: v
                for k, v in {
                    "key": t.key,
                    "operator": t.operator,
                    "value": t.value,
                    "effect": t.effect.value if t.effect else None,
                }.items()
                if v
            }
            for t in pod.tolerations
        ]
    claims = [_volume_names(pod, i)[0] for i in range(len(pod.volume_affinity))]
    claims += pod.unresolved_claims
    claims += pod.exclusive_claims
    claims += [f"{pod.name}-csi-{i}" for i in range(len(pod.csi_volumes))]
    claims += pod.provisioned_claims
    if claims:
        spec["volumes"] = [
            {"name": f"volume-{i}", "persistentVolumeClaim": {"claimName": claim}}
            for i, claim in enumerate(claims)
        ]
    for field, names in (
        ("resourceClaims", pod.resource_claims),
        ("schedulingGates", pod.scheduling_gates),
    ):
        if names:
            spec[field] = [{"name": name} for name in names]
    if pod.claim_affinity:
        spec.setdefault("resourceClaims", []).extend(
            {"name": f"shared-{i}", "resourceClaimName": _shared_claim_name(pod, i)}
            for i in range(len(pod.claim_affinity))
        )
    if pod.node_name:
        spec["nodeName"] = pod.node_name
    meta: dict[str, Any] = {"name": pod.name, "namespace": pod.namespace}
    if pod.labels:
        meta["labels"] = dict(pod.labels)
    if pod.uid:
        meta["uid"] = pod.uid
    if pod.terminating:
        meta["deletionTimestamp"] = "1970-01-01T00:00:00Z"  # when is not kept
    if pod.owner:
        kind, _, owner_name = pod.owner.partition("/")
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "name": owner_name,
                "uid": "",
                "controller": True,
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": "Running" if pod.node_name else "Pending"},
    }


def _shared_claim_name(pod: Pod, index: int) -> str:
    """The ResourceClaim that stands for the pod's ``index``-th allocated shared claim."""
    return f"{pod.name}-shared-{index}"


def _claim_objects(pod: Pod) -> list[dict[str, Any]]:
    """An allocated ResourceClaim with the node selector of each of the pod's shared claims
    (its devices are not kept: they are not offered to anyone)."""
    return [
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": _shared_claim_name(pod, i), "namespace": pod.namespace},
            "spec": {"devices": {"requests": []}},
            "status": {
                "allocation": {
                    "devices": {"results": []},
                    "nodeSelector": {"nodeSelectorTerms": _terms_obj(terms)},
                }
            },
        }
        for i, terms in enumerate(pod.claim_affinity)
    ]


def _volume_names(pod: Pod, index: int) -> tuple[str, str]:
    """The claim and the volume that stand for the pod's ``index``-th bound volume."""
    return f"{pod.name}-bound-{index}", f"dunnage-{pod.namespace}-{pod.name}-{index}"


def _volume_objects(pod: Pod) -> list[dict[str, Any]]:
    """A PersistentVolumeClaim and the PersistentVolume it is bound to for each of the pod's
    bound volumes with node affinity, for each of its ReadWriteOncePod claims (a volume
    without affinity; the same objects for every pod sharing the claim) and for each of its
    CSI volumes; and for each claim to provision, the claim with a class and a CSIDriver that
    provision it: what :func:`pod_to_object`'s volumes name."""
    out: list[dict[str, Any]] = []
    for claim in pod.provisioned_claims:
        # Its topologies and volume are in volume_affinity and csi_volumes (below): a class
        # of its driver with none, which kube-scheduler would provision for it.
        driver = next(
            csi_driver(v) for v in pod.csi_volumes if v.endswith(f"/~{pod.namespace}/{claim}")
        )
        storage_class = f"dunnage-{hashlib.sha256(driver.encode()).hexdigest()[:16]}"
        out += [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": pod.namespace},
                "spec": {"storageClassName": storage_class},
                "status": {"phase": "Pending"},
            },
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": storage_class},
                "provisioner": driver,
                "volumeBindingMode": "WaitForFirstConsumer",
            },
            {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": driver}},
        ]
    for i, unique in enumerate(pod.csi_volumes):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": f"{pod.name}-csi-{i}", "namespace": pod.namespace},
                "spec": {"volumeName": _csi_volume_name(unique)},
                "status": {"phase": "Bound"},
            }
        )
        out.append(_csi_volume_object(unique))
    for claim in pod.exclusive_claims:
        volume = f"dunnage-{pod.namespace}-{claim}"
        out.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": pod.namespace},
                "spec": {"volumeName": volume, "accessModes": ["ReadWriteOncePod"]},
                "status": {"phase": "Bound"},
            }
        )
        out.append({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume}})
    for i, terms in enumerate(pod.volume_affinity):
        claim, volume = _volume_names(pod, i)
        out.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": pod.namespace},
                "spec": {"volumeName": volume},
                "status": {"phase": "Bound"},
            }
        )
        out.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": volume},
                "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": _terms_obj(terms)}}},
            }
        )
    return out


def _terms_obj(terms: Iterable[SelectorTerm]) -> list[dict[str, Any]]:
    return [
        {
            **({"matchExpressions": [_req_obj(r) for r in t.expressions]} if t.expressions else {}),
            **({"matchFields": [_req_obj(r) for r in t.fields]} if t.fields else {}),
        }
        for t in terms
    ]


def _req_obj(r: Requirement) -> dict[str, Any]:
    out: dict[str, Any] = {"key": r.key, "operator": r.operator.value}
    if r.values:
        out["values"] = list(r.values)
    return out


def _selector_obj(selector: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if selector.match_labels:
        out["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        out["matchExpressions"] = [_req_obj(r) for r in selector.match_expressions]
    return out


def _affinity_term_obj(term: PodAffinityTerm) -> dict[str, Any]:
    out: dict[str, Any] = {"topologyKey": term.topology_key}
    if term.selector is not None:
        out["labelSelector"] = _selector_obj(term.selector)
    if term.namespaces:
        out["namespaces"] = list(term.namespaces)
    if term.namespace_selector is not None:
        out["namespaceSelector"] = _selector_obj(term.namespace_selector)
    return out


def _csi_volume_name(unique: str) -> str:
    """The PersistentVolume that stands for the CSI volume ``unique`` ("driver/handle")."""
    return f"dunnage-csi-{hashlib.sha256(unique.encode()).hexdigest()[:16]}"


def _csi_volume_object(unique: str) -> dict[str, Any]:
    driver = csi_driver(unique)
    handle = unique.removeprefix(f"{driver}/")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": _csi_volume_name(unique)},
        "spec": {"csi": {"driver": driver, "volumeHandle": handle}},
    }


def _attach_objects(node: Node) -> list[dict[str, Any]]:
    """A CSINode with the node's attach limits, and a VolumeAttachment (and its volume) for
    each CSI volume attached to it."""
    out: list[dict[str, Any]] = []
    if node.volume_limits:
        drivers = [
            {"name": d, "nodeID": node.name, "allocatable": {"count": count}}
            for d, count in sorted(node.volume_limits.items())
        ]
        out.append(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "CSINode",
                "metadata": {"name": node.name},
                "spec": {"drivers": drivers},
            }
        )
    for unique in sorted(node.attached_volumes):
        volume = _csi_volume_name(unique)
        out.append(_csi_volume_object(unique))
        out.append(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "VolumeAttachment",
                "metadata": {"name": f"{volume}-{node.name}"},
                "spec": {
                    "attacher": csi_driver(unique),
                    "nodeName": node.name,
                    "source": {"persistentVolumeName": volume},
                },
            }
        )
    return out


def snapshot_to_list(snapshot: Snapshot) -> dict[str, Any]:
    items: list[dict[str, Any]] = [node_to_object(n) for n in snapshot.nodes]
    items += [pod_to_object(p) for p in snapshot.pods]
    volumes = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in [
            *(o for p in snapshot.pods for o in _volume_objects(p)),
            *(o for p in snapshot.pods for o in _claim_objects(p)),
            *(o for n in snapshot.nodes for o in _attach_objects(n)),
        ]
    }
    items += volumes.values()
    for b in snapshot.budgets:
        items.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": b.name, "namespace": b.namespace},
                "spec": {"selector": _selector_obj(b.selector)},
                "status": {"disruptionsAllowed": b.disruptions_allowed},
            }
        )
    return {"apiVersion": "v1", "kind": "List", "items": items}
