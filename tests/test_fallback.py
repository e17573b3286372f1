"""Pure parts of the fallback planner: which pods trigger it and what a PackingPlan records."""

from __future__ import annotations

from dunnage.cluster import snapshot_from_objects
from dunnage.scheduler_extender.fallback import (
    PlannerSettings,
    is_unschedulable,
    plan_object,
    steerable_only,
)
from dunnage.solver.planner import solve


def pending(reason: str = "Unschedulable", **spec: object) -> dict:
    return {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": dict(spec),
        "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": reason}]},
    }


def test_only_unschedulable_unbound_pods_trigger() -> None:
    assert is_unschedulable(pending())
    assert not is_unschedulable(pending(reason="SchedulerError"))
    assert not is_unschedulable(pending(nodeName="n1"))
    assert not is_unschedulable({"metadata": {}, "spec": {}, "status": {}})


def test_packing_plan_records_everything_needed_to_resume() -> None:
    def node(name):
        return {
            "kind": "Node",
            "metadata": {"name": name},
            "status": {
                "allocatable": {"cpu": "8", "memory": "8Gi", "pods": "10", "nvidia.com/gpu": "4"}
            },
        }

    def pod(name: str, gpus: int, prio: int, node_name: str | None = None) -> dict:
        spec: dict = {
            "priority": prio,
            "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}],
        }
        if node_name:
            spec["nodeName"] = node_name
        return {
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "ml",
                "uid": f"uid-{name}",
                "ownerReferences": [
                    {"kind": "ReplicaSet", "name": f"rs-{name}", "controller": True}
                ],
            },
            "spec": spec,
        }

    snap = snapshot_from_objects(
        [
            node("a"),
            node("b"),
            pod("x", 2, 0, "a"),
            pod("y", 2, 0, "b"),
            pod("z", 4, 0, "b"),
            pod("big", 4, 10),
        ]
    )
    plan = solve(snap, time_limit=2)
    obj = plan_object("plan-1", plan, snap, PlannerSettings(policy="gpu", plan_ttl_seconds=30))
    spec = obj["spec"]
    assert obj["kind"] == "PackingPlan" and obj["metadata"]["name"] == "plan-1"
    assert spec["policy"] == "gpu" and spec["outcome"] == "improved"
    assert spec["bindings"] == [{"pod": "ml/big", "node": plan.assignments["ml/big"]}]
    for move in spec["moves"]:
        assert move["uid"].startswith("uid-") and move["owner"].startswith("ReplicaSet/")
    for eviction in spec["evictions"]:
        assert eviction["uid"].startswith("uid-")
    assert spec["expiresAt"].endswith("Z")
    assert spec["provenOptimal"] is plan.proven_optimal
    assert spec["placementsProvenOptimal"] is plan.placements_proven_optimal


def test_pods_the_extender_never_sees_are_frozen_and_not_planned() -> None:
    def node(name: str) -> dict:
        alloc = {"cpu": "4", "memory": "8Gi", "pods": "110", "nvidia.com/gpu": "4"}
        return {"kind": "Node", "metadata": {"name": name}, "status": {"allocatable": alloc}}

    def pod(name: str, gpus: int, priority: int, on: str | None = None) -> dict:
        limits = {"nvidia.com/gpu": gpus} if gpus else {}
        spec: dict = {
            "containers": [
                {"name": "c", "resources": {"requests": {"cpu": "2"}, "limits": limits}}
            ],
            "priority": priority,
        }
        if on:
            spec["nodeName"] = on
        meta = {
            "name": name,
            "namespace": "t",
            "ownerReferences": [
                {
                    "kind": "ReplicaSet",
                    "name": name,
                    "controller": True,
                    "uid": name,
                    "apiVersion": "apps/v1",
                }
            ],
        }
        return {"kind": "Pod", "metadata": meta, "spec": spec}

    # cpu-low runs on a and is in the way of gpu-high (it needs 2 cpu); it requests no GPU,
    # so the extender would never see its replacement: the plan may not evict or move it.
    snap = snapshot_from_objects(
        [
            node("a"),
            pod("cpu-low", 0, 1, on="a"),
            pod("cpu-low-2", 0, 1, on="a"),
            pod("gpu-high", 1, 10),
            pod("cpu-pending", 0, 10),
        ]
    )
    narrowed = steerable_only(snap, ("nvidia.com/gpu",))
    assert {p.name for p in narrowed.pending} == {"gpu-high"}
    plan = solve(narrowed, time_limit=2)
    assert plan.moves == () and plan.evictions == () and plan.bindings == ()
    # Without the narrowing the planner would evict a cpu-only pod for gpu-high.
    assert solve(snap, time_limit=2).evictions
