"""The paper's comparison, end to end on the real control plane: a "Priority Matters" grid
scenario (16 nodes, ReplicaSets, 4 priority classes) scheduled by the real kube-scheduler alone,
then with dunnage's fallback planner; placed pods per priority, before and after.

kube-scheduler consults the extender only for pods requesting one of its managedResources
(``nvidia.com/gpu``), so only those can be steered. The paper's pods request cpu and memory;
here each also takes one GPU slot of a node with one per pod slot (110), which never binds:
the packing problem is the paper's."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from dunnage.devcluster.cluster import DevCluster, NodeSpec
from dunnage.solver.plan import lexicographic_key
from dunnage.solver.scenarios import (
    MAX_PODS_PER_NODE,
    ReplicaSetSpec,
    ScenarioSpec,
    generate_replicasets,
    node_capacity,
)
from e2e.conftest import get_json, pods_by_name, wait_for
from e2e.gpu_pool import POOL

POLICY = {
    "apiVersion": "dunnage.io/v1alpha1",
    "kind": "PackingPolicy",
    "metadata": {"name": "default"},
    "spec": {
        "timeBudgetSeconds": 2,
        "maxEvictionsPerPlan": 8,
        "maxMovesPerPlan": 8,
        "batchWindowSeconds": 1,
        "planTTLSeconds": 60,
    },
}
# 16 nodes, 4 pods per node, 4 priority levels, requests at 105% of capacity: some must wait.
SPEC = ScenarioSpec(nodes=16, pods_per_node=4, priorities=4, utilisation=1.05, seed=0)


def priority_class(level: int) -> str:
    return f"paper-p{level}"


def replicaset(rs: ReplicaSetSpec, pool: str) -> dict[str, Any]:
    labels = {"app": rs.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": rs.name, "labels": labels},
        "spec": {
            "replicas": rs.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": priority_class(rs.priority),
                    "nodeSelector": {POOL: pool},
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "c",
                            "image": "registry.k8s.io/pause:3.10",
                            "resources": {
                                "requests": {
                                    "cpu": f"{rs.cpu_milli}m",
                                    "memory": f"{rs.memory_mb}M",
                                },
                                "limits": {"nvidia.com/gpu": 1},
                            },
                        }
                    ],
                },
            },
        },
    }


def placed_by_priority(cluster: DevCluster, namespace: str) -> dict[int, int]:
    counts = dict.fromkeys(range(SPEC.priorities, 0, -1), 0)
    for pod in pods_by_name(cluster, namespace).values():
        running = pod["status"].get("phase") == "Running"
        if running and not pod["metadata"].get("deletionTimestamp"):
            counts[int(pod["spec"]["priority"]) // 100] += 1  # classes are 100 x level
    return counts


def settled(cluster: DevCluster, namespace: str, quiet: float = 4.0) -> dict[int, int]:
    """Placed pods per priority once every pod is Running or Unschedulable and nothing has
    changed for ``quiet`` seconds (the scheduler's own preemption included)."""

    def state() -> tuple[Any, ...] | None:
        pods = pods_by_name(cluster, namespace).values()
        if len(pods) < SPEC.pods:
            return None
        for pod in pods:
            running = pod["status"].get("phase") == "Running"
            waiting = any(
                c.get("reason") == "Unschedulable" for c in pod["status"].get("conditions", [])
            )
            if not (running or waiting) or pod["metadata"].get("deletionTimestamp"):
                return None
        return tuple(sorted((p["metadata"]["name"], p["spec"].get("nodeName")) for p in pods))

    last, since = None, time.monotonic()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        now = state()
        if now is None or now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return placed_by_priority(cluster, namespace)
        time.sleep(0.5)
    raise AssertionError(f"{namespace} did not settle")


def settled_with_planner(
    cluster: DevCluster, namespace: str, earlier: Collection[str]
) -> dict[int, int]:
    """Placed pods per priority once no plan executes, pods are settled, and the planner has
    not started another plan meanwhile (it plans again while pods stay pending)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        before = [
            (p["metadata"]["name"], (p.get("status") or {}).get("phase"))
            for p in plans(cluster, earlier)
        ]
        if before and all(phase not in (None, "Executing") for _, phase in before):
            placed = settled(cluster, namespace, quiet=6.0)
            after = [
                (p["metadata"]["name"], (p.get("status") or {}).get("phase"))
                for p in plans(cluster, earlier)
            ]
            if after == before:
                return placed
        time.sleep(1)
    raise AssertionError("the planner did not come to rest")


def plans(cluster: DevCluster, exclude: Collection[str] = ()) -> list[dict[str, Any]]:
    return [
        p
        for p in get_json(cluster, "packingplans")["items"]
        if p["metadata"]["name"] not in exclude
    ]


def test_paper_scenario_default_then_dunnage(cluster: DevCluster, namespace: str) -> None:
    replicasets = generate_replicasets(SPEC)
    cpu, memory = node_capacity(replicasets, SPEC.nodes, SPEC.utilisation)
    cluster.apply(
        [
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": priority_class(level)},
                "value": 100 * level,
            }
            for level in range(1, SPEC.priorities + 1)
        ]
    )
    cluster.stop_component("extender")  # the real default scheduler alone
    cluster.create_nodes(
        [
            NodeSpec(
                f"{namespace}-n{i:02d}",
                cpu=f"{cpu}m",
                memory=str(memory),
                gpus=MAX_PODS_PER_NODE,
                labels={POOL: namespace},
            )
            for i in range(SPEC.nodes)
        ]
    )
    cluster.apply([replicaset(rs, namespace) for rs in replicasets], "-n", namespace)
    default = settled(cluster, namespace)
    assert sum(default.values()) < SPEC.pods  # 105% of capacity requested

    earlier = {p["metadata"]["name"] for p in plans(cluster)}  # other tests' plans
    # What an admin would set: a few seconds to plan, and few disruptions per plan (the
    # planner plans again once a plan is done and pods are still pending).
    cluster.apply([POLICY])
    try:
        cluster.start_extender()
        wait_for(lambda: plans(cluster, earlier), timeout=60, what="a PackingPlan")
        with_dunnage = settled_with_planner(cluster, namespace, earlier)
        # The policy says it is followed, for the generation applied, and names its latest plan.
        followed = get_json(cluster, "packingpolicy", "default")
        (ready,) = followed["status"]["conditions"]
        assert (ready["status"], ready["reason"]) == ("True", "Accepted"), ready
        assert followed["status"]["observedGeneration"] == followed["metadata"]["generation"]
        assert followed["status"]["lastPlan"] in {p["metadata"]["name"] for p in plans(cluster)}
    finally:
        cluster.kubectl("delete", "packingpolicy", "default", "--ignore-not-found")
    ended = plans(cluster, earlier)
    phases = [p["status"]["phase"] for p in ended]
    print(f"\n{SPEC.name}: placed per priority (4 = highest)")
    print(f"  default scheduler:  {default}")
    print(f"  default + dunnage:  {with_dunnage}   plans: {phases}")
    assert lexicographic_key(with_dunnage) >= lexicographic_key(default)
    # An Expired plan's condition says what it still waited for.
    assert "Expired" not in phases and "Failed" not in phases, [p["status"] for p in ended]
    if "Succeeded" in phases:
        assert lexicographic_key(with_dunnage) > lexicographic_key(default)
    else:
        assert set(phases) <= {"Certified", "NoImprovement"}
