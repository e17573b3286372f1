"""A small fragmented GPU pool for the fallback planner's e2e tests: kwok nodes with 4 GPUs
each, one pool per test namespace, workloads pinned to the pool by a nodeSelector."""

from __future__ import annotations

from typing import Any

from dunnage.devcluster.cluster import DevCluster, NodeSpec
from e2e.conftest import pods_by_name, wait_for

POOL = "dunnage.io/pool"
CLASSES = {"frag-low": 10, "frag-mid": 500, "frag-high": 1000}


def deployment(
    name: str, gpus: int, priority_class: str, pool: str, *, replicas: int = 1, cpu: str = ""
) -> dict[str, Any]:
    """Pods of ``gpus`` GPUs (and ``cpu``, if given) pinned to the pool by a nodeSelector."""
    labels = {"app": name}
    resources: dict[str, Any] = {"limits": {"nvidia.com/gpu": gpus}}
    if cpu:
        resources["requests"] = {"cpu": cpu}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": priority_class,
                    "nodeSelector": {POOL: pool},
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "engine",
                            "image": "registry.k8s.io/pause:3.10",
                            "resources": resources,
                        }
                    ],
                },
            },
        },
    }


def running_on(cluster: DevCluster, namespace: str) -> dict[str, str]:
    """Deployment (app label) -> node, for Running pods."""
    out = {}
    for pod in pods_by_name(cluster, namespace).values():
        if pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"):
            out[pod["metadata"]["labels"]["app"]] = pod["spec"]["nodeName"]
    return out


def place(
    cluster: DevCluster,
    namespace: str,
    node: str,
    names: list[tuple[str, int, str]],
    bare: tuple[str, ...] = (),
    labels: dict[str, str] | None = None,
) -> None:
    """Create one pool node (with ``labels`` too), then Deployments (bare pods for the names in
    ``bare``) that can only land there: it is the only node of the pool with room."""
    cluster.create_nodes([NodeSpec(node, gpus=4, labels={POOL: namespace, **(labels or {})})])
    objects = [(bare_pod if n in bare else deployment)(n, g, c, namespace) for n, g, c in names]
    cluster.apply(objects, "-n", namespace)
    wait_for(
        lambda: all(running_on(cluster, namespace).get(n) == node for n, _, _ in names),
        what=f"{[n for n, _, _ in names]} Running on {node}",
    )


def priority_classes() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
        }
        for name, value in CLASSES.items()
    ]


def bare_pod(name: str, gpus: int, priority_class: str, pool: str) -> dict[str, Any]:
    """A pod no controller recreates: evicted, it is gone; the planner never moves it."""
    template = deployment(name, gpus, priority_class, pool)["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **template["metadata"]},
        "spec": template["spec"],
    }


def unschedulable(cluster: DevCluster, namespace: str, app: str) -> bool:
    """kube-scheduler marked the pod of ``app`` PodScheduled=False, reason Unschedulable."""
    for pod in pods_by_name(cluster, namespace).values():
        if pod["metadata"]["labels"].get("app") == app:
            return any(
                c.get("reason") == "Unschedulable" for c in pod["status"].get("conditions", [])
            )
    return False
