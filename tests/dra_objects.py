"""Dynamic resource allocation objects (resource.k8s.io/v1) for the tests: a DeviceClass, a
node's ResourceSlice, a pod with a claim made from a template, and a pod asking an extended
resource that DRA devices serve; allocated or not."""

from __future__ import annotations

from typing import Any

DRIVER = "gpu.example.com"


def device_class(
    name: str = "gpu", *expressions: str, extended_resource: str | None = None
) -> dict[str, Any]:
    """A DeviceClass whose devices are the driver's (and satisfy ``expressions``), serving
    ``extended_resource`` if given."""
    selectors = [f'device.driver == "{DRIVER}"', *expressions]
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": e}} for e in selectors]}
    if extended_resource:
        spec["extendedResourceName"] = extended_resource
    return {"kind": "DeviceClass", "metadata": {"name": name}, "spec": spec}


def node_slice(node: str, models: list[str], **extra: Any) -> dict[str, Any]:
    """The ResourceSlice of ``node``'s devices ``<node>-gpu-<i>``, one per model given."""
    devices = [
        {
            "name": f"gpu-{i}",
            "attributes": {"model": {"string": model}, "index": {"int": i}},
            "capacity": {"memory": {"value": "80Gi" if model == "h100" else "40Gi"}},
            **extra,
        }
        for i, model in enumerate(models)
    ]
    return {
        "kind": "ResourceSlice",
        "metadata": {"name": f"{node}-{DRIVER}"},
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": devices,
        },
    }


def taint_rule(name: str, effect: str = "NoSchedule", **selector: str | None) -> dict[str, Any]:
    """A DeviceTaintRule tainting the devices ``selector`` (driver, pool, device) selects;
    without ``selector``, none (``deviceSelector`` absent)."""
    spec: dict[str, Any] = {"taint": {"key": "example.com/broken", "effect": effect}}
    if selector:
        spec["deviceSelector"] = {k: v for k, v in selector.items() if v is not None}
    return {"kind": "DeviceTaintRule", "metadata": {"name": name}, "spec": spec}


def partitioned_slices(node: str, gpus: int) -> list[dict[str, Any]]:
    """``node``'s GPUs as a driver publishes them when MIG may split them (partitionable
    devices): a counter set ``gpu-<i>-counters`` per GPU, in a slice of its own, and per GPU the
    whole device ``gpu-<i>`` (type "gpu", consuming all its counters) and two halves
    ``gpu-<i>-half-<j>`` (type "half", half of them each)."""
    whole = {"memory": {"value": "80Gi"}, "slices": {"value": "8"}}
    half = {"memory": {"value": "40Gi"}, "slices": {"value": "4"}}
    devices = []
    for i in range(gpus):
        counters = f"gpu-{i}-counters"
        for name, kind, taken in (
            (f"gpu-{i}", "gpu", whole),
            (f"gpu-{i}-half-0", "half", half),
            (f"gpu-{i}-half-1", "half", half),
        ):
            devices.append(
                {
                    "name": name,
                    "attributes": {"model": {"string": "h100"}, "type": {"string": kind}},
                    "consumesCounters": [{"counterSet": counters, "counters": taken}],
                }
            )
    pool = {"name": node, "generation": 1, "resourceSliceCount": 2}
    counter_sets = [{"name": f"gpu-{i}-counters", "counters": whole} for i in range(gpus)]
    return [
        {
            "kind": "ResourceSlice",
            "metadata": {"name": f"{node}-{DRIVER}-counters"},
            "spec": {
                "driver": DRIVER,
                "nodeName": node,
                "pool": pool,
                "sharedCounters": counter_sets,
            },
        },
        {
            "kind": "ResourceSlice",
            "metadata": {"name": f"{node}-{DRIVER}"},
            "spec": {"driver": DRIVER, "nodeName": node, "pool": pool, "devices": devices},
        },
    ]


def _pod(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A pod of a ReplicaSet (its uid ``uid-<name>``)."""
    meta = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{name}",
        "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}],
    }
    return {"kind": "Pod", "metadata": meta, "spec": spec}


def _claim(
    name: str,
    pod: str,
    namespace: str,
    request: str,
    exactly: dict[str, Any],
    node: str | None,
    allocated: list[int],
) -> dict[str, Any]:
    """The claim ``name`` of ``pod`` (owned by it) with one request; on ``node``, allocated
    the devices ``allocated`` (indexes on that node)."""
    owner = {"kind": "Pod", "name": pod, "uid": f"uid-{pod}", "controller": True}
    claim: dict[str, Any] = {
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "ownerReferences": [owner]},
        "spec": {"devices": {"requests": [{"name": request, "exactly": exactly}]}},
    }
    if node is not None:
        results = [
            {"request": request, "driver": DRIVER, "pool": node, "device": f"gpu-{i}"}
            for i in allocated
        ]
        claim["status"] = {"allocation": {"devices": {"results": results}, **on_node(node)}}
    return claim


def on_node(node: str) -> dict[str, Any]:
    """An allocation's node selector as kube-scheduler writes it for a node's own devices."""
    field = {"key": "metadata.name", "operator": "In", "values": [node]}
    return {"nodeSelector": {"nodeSelectorTerms": [{"matchFields": [field]}]}}


def shared_claim(
    name: str,
    count: int,
    *,
    node: str | None = None,
    allocated: list[int] | None = None,
    reserved_for: tuple[str, ...] = (),
    namespace: str = "ml",
) -> dict[str, Any]:
    """A ResourceClaim made by hand (no owner) for ``count`` GPUs, which pods name
    (:func:`naming_pod`); allocated the devices ``allocated`` of ``node`` (by default the first
    ones) and reserved for the pods ``reserved_for`` when ``node`` is given."""
    exactly = {"deviceClassName": "gpu", "count": count}
    devices = allocated if allocated is not None else list(range(count))
    claim = _claim(name, "", namespace, "gpu", exactly, node, devices)
    del claim["metadata"]["ownerReferences"]
    if node is not None:
        claim["status"]["reservedFor"] = [
            {"resource": "pods", "name": pod, "uid": f"uid-{pod}"} for pod in reserved_for
        ]
    return claim


def naming_pod(
    name: str, claim: str, *, node: str | None = None, priority: int = 0, cpu: str = "1"
) -> dict[str, Any]:
    """A pod of namespace ml naming the ResourceClaim ``claim`` (``resourceClaimName``)."""
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}],
        "priority": priority,
        "resourceClaims": [{"name": "gpus", "resourceClaimName": claim}],
    }
    if node is not None:
        spec["nodeName"] = node
    return _pod(name, "ml", spec)


def dra_pod(
    name: str,
    count: int = 1,
    *,
    priority: int = 0,
    node: str | None = None,
    allocated: list[int] | None = None,
    device_class: str = "gpu",
    selectors: tuple[str, ...] = (),
    own_claim: bool = True,
    namespace: str = "ml",
) -> list[dict[str, Any]]:
    """A pod with the claim ``gpus`` made from a template: ``count`` devices of
    ``device_class``; running on ``node`` with its claim allocated the devices ``allocated``
    (indexes on that node; by default the first ones). Without ``own_claim`` the pod names a
    claim of its own name."""
    claim_name = f"{name}-gpus"
    exactly: dict[str, Any] = {"deviceClassName": device_class, "count": count}
    if selectors:
        exactly["selectors"] = [{"cel": {"expression": e}} for e in selectors]
    devices = allocated if allocated is not None else list(range(count))
    claim = _claim(claim_name, name, namespace, "gpu", exactly, node, devices)
    entry: dict[str, Any] = {"name": "gpus"}
    if own_claim:
        entry["resourceClaimTemplateName"] = "gpus"
    else:
        entry["resourceClaimName"] = claim_name
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}],
        "priority": priority,
        "resourceClaims": [entry],
    }
    if node is not None:
        spec["nodeName"] = node
    pod = _pod(name, namespace, spec)
    pod["status"] = {"resourceClaimStatuses": [{"name": "gpus", "resourceClaimName": claim_name}]}
    return [pod, claim]


def extended_pod(
    name: str,
    count: int,
    *,
    resource: str = "nvidia.com/gpu",
    device_class: str = "gpu",
    priority: int = 0,
    node: str | None = None,
    allocated: list[int] | None = None,
    namespace: str = "ml",
) -> list[dict[str, Any]]:
    """A pod whose container asks ``count`` of ``resource``, an extended resource that a
    DeviceClass's devices serve; running on ``node`` with the claim kube-scheduler made for
    it allocated the devices ``allocated`` (indexes on that node; by default the first ones)."""
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "resources": {"limits": {resource: str(count)}}}],
        "priority": priority,
    }
    pod = _pod(name, namespace, spec)
    if node is None:
        return [pod]
    spec["nodeName"] = node
    exactly = {"deviceClassName": device_class, "count": count}
    devices = allocated if allocated is not None else list(range(count))
    request = "container-0-request-0"  # as kube-scheduler names them
    claim = _claim(
        f"{name}-extended-resources-x7k2p", name, namespace, request, exactly, node, devices
    )
    claim["metadata"]["annotations"] = {"resource.kubernetes.io/extended-resource-claim": "true"}
    return [pod, claim]
