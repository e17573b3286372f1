"""Free GPUs per node, kept up to date from watch events, for the prioritize verb.

:class:`NodeState` is pure bookkeeping: feed it Node and Pod objects, and the DRA kinds
(DeviceClasses, ResourceSlices, ResourceClaims), as API JSON dicts with :meth:`NodeState.apply`
(the shape of ``ClusterCache.on_change`` events) or rebuild it from full lists with
:meth:`NodeState.reset`. It counts only the GPU resources it is told about, in GPUs (a resource
whose name ends in ``-milli``, such as ``dunnage.io/gpu-milli``, counts thousandths): a
device plugin's in node allocatable, asked by pods' containers, and the devices of DRA drivers
that DeviceClasses serving those resources select (dunnage.scheduler_extender.devicegpus). As
kube-scheduler, a node serves a container's request of a resource from its allocatable when
that has the resource, else from DRA devices, allocated to the pod in a ResourceClaim.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dunnage.cluster.quantity import GPU, to_units
from dunnage.errors import InputError
from dunnage.scheduler_extender.devicegpus import KINDS as DEVICE_KINDS
from dunnage.scheduler_extender.devicegpus import DeviceGpus

DEFAULT_GPU_RESOURCES: tuple[str, ...] = (GPU,)
_FINISHED = ("Succeeded", "Failed")
# Nodes changed, remembered for readers that keep per-node results (prioritize's scores): a
# reader further behind than this many changes starts over.
CHANGE_LOG_LIMIT = 4096


def gpu_scale(resource: str) -> int:
    """Units per whole GPU: 1000 for ``*-milli`` resources, else 1."""
    return 1000 if resource.endswith("-milli") else 1


def gpus_by_resource(resources: Mapping[str, Any], names: Iterable[str]) -> dict[str, float]:
    """GPUs in a ResourceList (quantity strings or numbers) per resource, over the given
    resource names (those with none left out)."""
    out = {}
    for name in names:
        raw = resources.get(name)
        if raw is None:
            continue
        try:
            gpus = to_units(name, raw) / gpu_scale(name)
        except (InputError, OverflowError):
            continue  # an unparsable quantity counts as none; the scheduler rejects it anyway
        if gpus:
            out[name] = gpus
    return out


def gpus_in(resources: Mapping[str, Any], names: Iterable[str]) -> float:
    """GPUs in a ResourceList (quantity strings or numbers), over the given resource names."""
    return sum(gpus_by_resource(resources, names).values())


def pod_gpus(spec: Mapping[str, Any], names: Iterable[str]) -> float:
    """GPUs a pod spec requests: per resource, max(sum of containers, largest init
    container) + overhead, as Kubernetes counts a pod's requests.

    Extended resources have requests equal to limits; a limit alone counts as the request.
    """
    return sum(pod_gpus_by_resource(spec, names).values())


def pod_gpus_by_resource(spec: Mapping[str, Any], names: Iterable[str]) -> dict[str, float]:
    """:func:`pod_gpus` per resource (those with none left out)."""
    names = tuple(names)
    return {name: gpus for name in names if (gpus := _pod_gpus_of(spec, name))}


def _pod_gpus_of(spec: Mapping[str, Any], name: str) -> float:
    names = (name,)

    def container(c: Any) -> float:
        if not isinstance(c, Mapping):
            return 0.0
        res = c.get("resources")
        if not isinstance(res, Mapping):
            return 0.0
        req = res.get("requests")
        lim = res.get("limits")
        merged: dict[str, Any] = dict(lim) if isinstance(lim, Mapping) else {}
        if isinstance(req, Mapping):
            merged.update(req)
        return gpus_in(merged, names)

    containers = spec.get("containers")
    inits = spec.get("initContainers")
    regular = sum(container(c) for c in containers) if isinstance(containers, list) else 0.0
    init = max((container(c) for c in inits), default=0.0) if isinstance(inits, list) else 0.0
    overhead = spec.get("overhead")
    extra = gpus_in(overhead, names) if isinstance(overhead, Mapping) else 0.0
    return max(regular, init) + extra


@dataclass(frozen=True, slots=True)
class NodeGpus:
    capacity: float  # allocatable GPUs and DRA devices serving GPU resources
    free: float  # those not requested by bound pods or allocated to ResourceClaims


class NodeState:
    """Allocatable and requested GPUs per node, and which pod UID runs where."""

    def __init__(self, gpu_resources: Iterable[str] = DEFAULT_GPU_RESOURCES) -> None:
        self.gpu_resources = tuple(gpu_resources)
        self._lock = threading.Lock()
        self._capacity: dict[str, dict[str, float]] = {}  # node -> allocatable GPUs by resource
        self._used: dict[str, dict[str, float]] = {}  # node -> requested GPUs by resource
        self._pods: dict[str, tuple[str, dict[str, float]]] = {}  # uid -> (node, GPUs asked)
        self._devices = _device_gpus(self.gpu_resources)
        self._owner_of: dict[str, str] = {}  # uid -> "ns/Kind/name" of its controller
        self._owned: dict[tuple[str, str], int] = {}  # (owner, node) -> bound pods
        self.version = 0  # bumped on every change that can alter a score
        self.synced = False
        # (version, node) per node whose GPUs a change touched; entries at or below
        # _log_floor may have been dropped.
        self._log: deque[tuple[int, str]] = deque(maxlen=CHANGE_LOG_LIMIT)
        self._log_floor = 0

    # --- feeding ---------------------------------------------------------------------------

    def reset(
        self,
        nodes: Iterable[Mapping[str, Any]],
        pods: Iterable[Mapping[str, Any]],
        devices: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
        *,
        gpu_resources: Iterable[str] | None = None,
    ) -> None:
        """Start over from every Node and Pod, and the DRA kinds' objects (kind -> list),
        counting ``gpu_resources`` from now on if given."""
        names = self.gpu_resources if gpu_resources is None else tuple(gpu_resources)
        devices_now = _device_gpus(names)
        devices_now.reset(devices or {})  # the slow part (CEL selectors): outside the lock
        with self._lock:
            self.gpu_resources = names
            self._capacity, self._used, self._pods = {}, {}, {}
            self._owner_of, self._owned = {}, {}
            for node in nodes:
                self._put_node(node)
            for pod in pods:
                self._put_pod(pod)
            self._devices = devices_now
            self.version += 1
            self._log.clear()
            self._log_floor = self.version  # everything changed
            self.synced = True

    def apply(self, event_type: str, kind: str, obj: Mapping[str, Any]) -> None:
        """One watch event (``ClusterCache.on_change`` listener signature)."""
        if kind not in ("Node", "Pod", *DEVICE_KINDS) or not isinstance(obj, Mapping):
            return
        with self._lock:
            if kind in DEVICE_KINDS:
                touched = self._devices.apply(event_type, kind, obj)
            elif kind == "Node":
                name = _name(obj)
                touched = {name}
                if event_type == "DELETED":
                    self._capacity.pop(name, None)
                else:
                    self._put_node(obj)
            else:
                uid = _uid(obj)
                old = self._pods.get(uid)
                if event_type == "DELETED":
                    self._drop_pod(uid)
                else:
                    self._put_pod(obj)
                new = self._pods.get(uid)
                # Only GPU pods change a node's free GPUs.
                touched = {e[0] for e in (old, new) if e is not None and e[1]}
            self.version += 1
            for node in touched:
                if len(self._log) == self._log.maxlen:
                    self._log_floor = self._log[0][0]
                self._log.append((self.version, node))

    def _put_node(self, node: Mapping[str, Any]) -> None:
        status = node.get("status")
        alloc = status.get("allocatable") if isinstance(status, Mapping) else None
        name = _name(node)
        if name:
            self._capacity[name] = (
                gpus_by_resource(alloc, self.gpu_resources) if isinstance(alloc, Mapping) else {}
            )

    def _put_pod(self, pod: Mapping[str, Any]) -> None:
        uid = _uid(pod)
        if not uid:
            return
        self._drop_pod(uid)
        spec = pod.get("spec")
        status = pod.get("status")
        if not isinstance(spec, Mapping) or not spec.get("nodeName"):
            return
        if isinstance(status, Mapping) and status.get("phase") in _FINISHED:
            return
        node = str(spec["nodeName"])
        gpus = pod_gpus_by_resource(spec, self.gpu_resources)
        self._pods[uid] = (node, gpus)
        owner = _controller(pod)
        if owner:
            self._owner_of[uid] = owner
            self._owned[(owner, node)] = self._owned.get((owner, node), 0) + 1
        used = self._used.setdefault(node, {})
        for resource, amount in gpus.items():
            used[resource] = used.get(resource, 0.0) + amount

    def _drop_pod(self, uid: str) -> None:
        old = self._pods.pop(uid, None)
        if old is not None:
            used = self._used.get(old[0], {})
            for resource, amount in old[1].items():
                used[resource] = used.get(resource, 0.0) - amount
        owner = self._owner_of.pop(uid, None)
        if old is not None and owner is not None:
            self._owned[(owner, old[0])] -= 1

    # --- reading ---------------------------------------------------------------------------

    def gpus(self) -> dict[str, NodeGpus]:
        """Every known node's GPUs (a copy)."""
        with self._lock:
            return {n: self._gpus_on(n, cap) for n, cap in self._capacity.items()}

    def node_gpus(self, name: str) -> NodeGpus | None:
        """One node's GPUs, or None for a node not known."""
        with self._lock:
            cap = self._capacity.get(name)
            return None if cap is None else self._gpus_on(name, cap)

    def claimed_gpus(self, pod: Mapping[str, Any]) -> float:
        """GPUs a pod asks through its ResourceClaims (those known; its containers' requests
        are :func:`pod_gpus`)."""
        with self._lock:
            return self._devices.asked(pod)

    def _gpus_on(self, name: str, capacity: Mapping[str, float]) -> NodeGpus:
        # A container's request counts where allocatable has its resource; elsewhere DRA
        # serves it, and the devices allocated to the pod's claim count instead.
        used = self._used.get(name, {})
        devices = self._devices.capacity.get(name, 0.0)
        total = sum(capacity.values()) + devices
        taken = sum(used.get(r, 0.0) for r in capacity) + self._devices.used.get(name, 0.0)
        return NodeGpus(total, total - taken)

    def changes_since(self, version: int) -> tuple[int, set[str] | None]:
        """The current version and the nodes changed after ``version``; None for the nodes
        when that is too far back to tell (start over from :meth:`gpus`)."""
        with self._lock:
            if version < self._log_floor:
                return self.version, None
            changed = set()
            for v, node in reversed(self._log):  # versions only grow along the log
                if v <= version:
                    break
                changed.add(node)
            return self.version, changed

    def owned_on(self, owner: str, node: str) -> int:
        """Bound pods of a controller ("ns/Kind/name") on a node."""
        return self._owned.get((owner, node), 0)

    def pod_node(self, uid: str) -> str | None:
        """The node a pod (by UID) is bound to, or None when it is not bound or not known."""
        entry = self._pods.get(uid)
        return entry[0] if entry else None


def _device_gpus(names: tuple[str, ...]) -> DeviceGpus:
    return DeviceGpus(names, {r: gpu_scale(r) for r in names})


def _controller(pod: Mapping[str, Any]) -> str | None:
    meta = pod.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    for ref in meta.get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller") and ref.get("kind"):
            return f"{meta.get('namespace', '')}/{ref['kind']}/{ref.get('name', '')}"
    return None


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("name") or "") if isinstance(meta, Mapping) else ""


def _uid(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("uid") or "") if isinstance(meta, Mapping) else ""
