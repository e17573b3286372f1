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
    (indexes on that node). Without ``own_claim`` the pod names a claim of its own name."""
    claim_name = f"{name}-gpus"
    request: dict[str, Any] = {"deviceClassName": device_class, "count": count}
    if selectors:
        request["selectors"] = [{"cel": {"expression": e}} for e in selectors]
    claim: dict[str, Any] = {
        "kind": "ResourceClaim",
        "metadata": {
            "name": claim_name,
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": name,
                    "uid": f"uid-{name}",
                    "controller": True,
                }
            ],
        },
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": request}]}},
    }
    if node is not None:
        indexes = allocated if allocated is not None else list(range(count))
        claim["status"] = {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": "gpu", "driver": DRIVER, "pool": node, "device": f"gpu-{i}"}
                        for i in indexes
                    ]
                }
            },
            "reservedFor": [{"resource": "pods", "name": name, "uid": f"uid-{name}"}],
        }
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
    pod = {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}],
        },
        "spec": spec,
        "status": {"resourceClaimStatuses": [{"name": "gpus", "resourceClaimName": claim_name}]},
    }
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
    it allocated the devices ``allocated`` (indexes on that node)."""
    pod: dict[str, Any] = {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}],
        },
        "spec": {
            "containers": [{"name": "c", "resources": {"limits": {resource: str(count)}}}],
            "priority": priority,
        },
    }
    if node is None:
        return [pod]
    pod["spec"]["nodeName"] = node
    indexes = allocated if allocated is not None else list(range(count))
    request = "container-0-request-0"
    claim = {
        "kind": "ResourceClaim",
        "metadata": {
            "name": f"{name}-extended-resources-x7k2p",
            "namespace": namespace,
            "annotations": {"resource.kubernetes.io/extended-resource-claim": "true"},
            "ownerReferences": [
                {"kind": "Pod", "name": name, "uid": f"uid-{name}", "controller": True}
            ],
        },
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": request,
                        "exactly": {"deviceClassName": device_class, "count": count},
                    }
                ]
            }
        },
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": request, "driver": DRIVER, "pool": node, "device": f"gpu-{i}"}
                        for i in indexes
                    ]
                }
            }
        },
    }
    return [pod, claim]
