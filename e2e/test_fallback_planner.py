"""The fallback planner on the real scheduler: a fragmented GPU pool where kube-scheduler, with
its own preemption, leaves a multi-GPU pod Pending; dunnage plans, evicts only what the plan
says (lower priority only), moves one pod, and the pod runs."""

from __future__ import annotations

import json
import time
from typing import Any

from dunnage.devcluster.cluster import DevCluster, NodeSpec
from e2e.conftest import get_json, pods_by_name, wait_for

POOL = "dunnage.io/pool"
CLASSES = {"frag-low": 10, "frag-mid": 500, "frag-high": 1000}


def deployment(name: str, gpus: int, priority_class: str, pool: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
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
                            "resources": {"limits": {"nvidia.com/gpu": gpus}},
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
    cluster: DevCluster, namespace: str, node: str, names: list[tuple[str, int, str]]
) -> None:
    """Create one pool node, then Deployments that can only land there (it is the only one with room)."""
    cluster.create_nodes([NodeSpec(node, gpus=4, labels={POOL: namespace})])
    cluster.apply([deployment(n, g, c, namespace) for n, g, c in names], "-n", namespace)
    wait_for(
        lambda: all(running_on(cluster, namespace).get(n) == node for n, _, _ in names),
        what=f"{[n for n, _, _ in names]} Running on {node}",
    )


def test_fragmented_gpus_planned_and_executed(cluster: DevCluster, namespace: str) -> None:
    cluster.apply(
        [
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
            }
            for name, value in CLASSES.items()
        ]
    )
    # With the extender (and its planner) down, kube-scheduler keeps scheduling: it is ignorable.
    cluster.stop_component("extender")
    a, b, c = (f"{namespace}-{x}" for x in "abc")
    place(cluster, namespace, a, [("low-a", 2, "frag-low"), ("high-a", 2, "frag-high")])
    place(cluster, namespace, b, [("low-b", 2, "frag-low"), ("high-b", 2, "frag-high")])
    place(cluster, namespace, c, [("high-c", 2, "frag-high")])
    before = running_on(cluster, namespace)

    # 4 GPUs at mid priority: no node frees 4 GPUs by preempting lower pods alone.
    cluster.apply([deployment("big", 4, "frag-mid", namespace)], "-n", namespace)

    def unschedulable() -> bool:
        for pod in pods_by_name(cluster, namespace).values():
            if pod["metadata"]["labels"]["app"] == "big":
                return any(
                    c.get("reason") == "Unschedulable" for c in pod["status"].get("conditions", [])
                )
        return False

    wait_for(unschedulable, what="the 4-GPU pod marked Unschedulable")
    time.sleep(5)  # the scheduler retries with its own preemption; nothing changes
    assert running_on(cluster, namespace) == before
    assert "big" not in running_on(cluster, namespace)

    # Dunnage on: the planner sees the unschedulable pod, plans, evicts, steers.
    started = time.monotonic()
    cluster.start_extender()
    wait_for(
        lambda: running_on(cluster, namespace).get("big"), timeout=60, what="the 4-GPU pod Running"
    )
    elapsed = time.monotonic() - started

    plans = [
        p
        for p in get_json(cluster, "packingplans")["items"]
        if any(b["pod"].startswith(f"{namespace}/big") for b in p["spec"]["bindings"])
    ]
    assert len(plans) == 1, json.dumps(plans)[:2000]
    spec = plans[0]["spec"]
    evicted = {e["pod"].split("/")[1] for e in spec["evictions"]}
    moved = {m["pod"].split("/")[1] for m in spec["moves"]}
    after = running_on(cluster, namespace)
    # Only planned victims lost their place, and only lower-priority ones.
    lost = {app for app in before if app not in after}
    assert {name.rsplit("-", 2)[0] for name in evicted} == lost
    assert all(app.startswith("low-") for app in lost)
    # Every high-priority pod still runs (a moved one on its planned node).
    assert {"high-a", "high-b", "high-c"} <= set(after)
    assert len(spec["evictions"]) <= 1 and len(moved) <= 1
    wait_for(
        lambda: (
            get_json(cluster, "packingplan", plans[0]["metadata"]["name"])["status"].get("phase")
            == "Succeeded"
        ),
        timeout=30,
        what="PackingPlan Succeeded",
    )
    print(f"planned and placed in {elapsed:.1f}s: {spec['evictions']} {spec['moves']}")
