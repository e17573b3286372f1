"""The planner on small hand-made clusters whose best plan is known."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dunnage.cluster import Snapshot, snapshot_from_objects
from dunnage.solver.commands import format_table
from dunnage.solver.model import NeighbourhoodModel
from dunnage.solver.plan import Plan, PlanStatus
from dunnage.solver.planner import Techniques, _Search, solve
from dunnage.solver.problem import Problem
from tests.plan_checker import check_plan


def gpu_node(name: str, gpus: int, **labels: str) -> dict:
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "allocatable": {
                "cpu": "32",
                "memory": "128Gi",
                "pods": "110",
                "nvidia.com/gpu": str(gpus),
            }
        },
    }


def gpu_pod(
    name: str, gpus: int, priority: int = 0, node: str | None = None, **extra: object
) -> dict:
    spec: dict = {
        "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}],
        "priority": priority,
        **extra.pop("spec", {}),
    }
    if node:
        spec["nodeName"] = node
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "ml", **extra}, "spec": spec}


# Two half-used 4-GPU nodes and a pending 4-GPU pod: one move makes room.
FRAGMENTED_OBJECTS = (
    gpu_node("a", 4),
    gpu_node("b", 4),
    gpu_pod("x", 2, node="a"),
    gpu_pod("y", 2, node="b"),
    gpu_pod("big", 4, priority=100),
)
FRAGMENTED = snapshot_from_objects(list(FRAGMENTED_OBJECTS))


def test_fragmented_gpus_are_defragmented_by_a_move_not_an_eviction() -> None:
    plan = solve(FRAGMENTED, time_limit=2)
    assert plan.status is PlanStatus.IMPROVED and plan.proven_optimal
    assert plan.evictions == ()
    assert len(plan.moves) == 1 and len(plan.bindings) == 1
    assert plan.placed_after == {100: 1, 0: 2}
    # Found by the search, then proven with its disruption by the whole-cluster model.
    assert plan.stats["decided_by"] == "full_model"


def test_eviction_only_for_a_strictly_higher_priority_newcomer() -> None:
    # One node, full with a low pod; the pending pod of the same priority must not evict it.
    same = snapshot_from_objects(
        [gpu_node("a", 4), gpu_pod("old", 4, priority=5, node="a"), gpu_pod("new", 4, priority=5)]
    )
    plan = solve(same, time_limit=2)
    assert plan.status is PlanStatus.OPTIMAL and plan.evictions == ()
    higher = snapshot_from_objects(
        [gpu_node("a", 4), gpu_pod("old", 4, priority=5, node="a"), gpu_pod("new", 4, priority=6)]
    )
    plan = solve(higher, time_limit=2)
    assert plan.status is PlanStatus.IMPROVED
    assert [(e.pod, e.node) for e in plan.evictions] == [("ml/old", "a")]
    assert plan.assignments["ml/new"] == "a"


def test_preemption_policy_never_does_not_displace() -> None:
    snap = snapshot_from_objects(
        [
            gpu_node("a", 4),
            gpu_pod("old", 4, priority=1, node="a"),
            gpu_pod("polite", 4, priority=9, spec={"preemptionPolicy": "Never"}),
        ]
    )
    plan = solve(snap, time_limit=2)
    assert plan.status is PlanStatus.OPTIMAL
    assert plan.assignments == {"ml/old": "a", "ml/polite": None}


def test_pdb_budget_limits_disruption() -> None:
    # Room for the big pod needs both small pods on "a" moved; the budget allows one disruption.
    objs = [
        gpu_node("a", 4),
        gpu_node("b", 2),
        gpu_node("c", 2),
        gpu_pod("s1", 2, node="a", labels={"app": "s"}),
        gpu_pod("s2", 2, node="a", labels={"app": "s"}),
        gpu_pod("big", 4, priority=10),
        {
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "s", "namespace": "ml"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "s"}}},
        },
    ]
    plan = solve(snapshot_from_objects(objs), time_limit=2)
    assert plan.status is PlanStatus.OPTIMAL  # the budget forbids the only improving plan
    objs[-1]["spec"]["maxUnavailable"] = 2
    plan = solve(snapshot_from_objects(objs), time_limit=2)
    assert plan.status is PlanStatus.IMPROVED and len(plan.moves) == 2 and plan.evictions == ()


def test_affinity_and_taints_hold_on_target_nodes() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["H100"]}
                        ]
                    }
                ]
            }
        }
    }
    tainted = gpu_node("t", 8, **{"nvidia.com/gpu.product": "H100"})
    tainted["spec"] = {"taints": [{"key": "reserved", "effect": "NoSchedule"}]}
    snap = snapshot_from_objects(
        [
            gpu_node("a100", 8, **{"nvidia.com/gpu.product": "A100"}),
            tainted,
            gpu_node("h100", 8, **{"nvidia.com/gpu.product": "H100"}),
            gpu_pod("want-h100", 2, priority=3, spec={"affinity": affinity}),
        ]
    )
    plan = solve(snap, time_limit=2)
    assert plan.assignments["ml/want-h100"] == "h100"


HOSTNAME, ZONE = "kubernetes.io/hostname", "topology.kubernetes.io/zone"


def _anti(app: str, key: str = HOSTNAME) -> dict[str, Any]:
    term = {"topologyKey": key, "labelSelector": {"matchLabels": {"app": app}}}
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}


def _node(name: str, gpus: int = 4) -> dict:
    return gpu_node(name, gpus, **{HOSTNAME: name})


def _replica(name: str, gpus: int, node: str | None = None, app: str = "r") -> dict:
    return gpu_pod(name, gpus, node=node, labels={"app": app}, spec={"affinity": _anti(app)})


def test_pods_under_rules_between_pods_are_not_moved_and_not_claimed_optimal() -> None:
    """FRAGMENTED with x under a zone anti-affinity rule (selecting y too, so not a group the
    planner plans) and a newcomer that may not evict it, a and b in zones z1 and z2: moving
    x or y is the only plan. x is held (kube-scheduler could refuse its replacement), and y
    is kept out of x's zone, as kube-scheduler keeps it: no plan, and none claimed optimal."""
    big = gpu_pod("big", 4)
    x = gpu_pod("x", 2, node="a", labels={"app": "x"}, spec={"affinity": _anti("x", ZONE)})
    y = gpu_pod("y", 2, node="b", labels={"app": "x"})  # selected by x's term
    zoned = [_zoned("a", "z1"), _zoned("b", "z2")]
    snap = snapshot_from_objects([*zoned, x, y, big])
    plan = solve(snap, time_limit=2)
    assert plan.status is PlanStatus.NO_IMPROVEMENT and not plan.proven_optimal
    assert not plan.placements_proven_optimal and plan.stats["held_pods"] == 1
    assert plan.moves == () and plan.bindings == ()
    # Nodes without zones: x's term keeps y out of no domain, so y moves beside x.
    snap = snapshot_from_objects([_node("a"), _node("b"), x, y, big])
    plan = solve(snap, time_limit=2)
    assert [(m.pod, m.target) for m in plan.moves] == [("ml/y", "a")] and len(plan.bindings) == 1
    assert check_plan(snap, plan.to_dict()) == []
    # y not selected by anything: the plan moves it too.
    free_y = gpu_pod("y", 2, node="b", labels={"app": "y"})
    snap = snapshot_from_objects([*zoned, x, free_y, big])
    plan = solve(snap, time_limit=2)
    assert [m.pod for m in plan.moves] == ["ml/y"] and len(plan.bindings) == 1
    assert check_plan(snap, plan.to_dict()) == []


def test_a_pending_pod_under_rules_between_pods_is_left_to_kube_scheduler() -> None:
    term = {"topologyKey": ZONE, "labelSelector": {"matchLabels": {"app": "x"}}}
    affinity = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    big = gpu_pod("big", 4, priority=100, labels={"app": "big"}, spec={"affinity": affinity})
    snap = snapshot_from_objects([*FRAGMENTED_OBJECTS[:-1], big])
    plan = solve(snap, time_limit=1)
    assert plan.status is PlanStatus.NO_IMPROVEMENT and plan.bindings == () and plan.moves == ()
    assert plan.unplaced_reasons["ml/big"].startswith(
        "left to kube-scheduler: required pod affinity"
    )
    table = format_table(plan)
    assert (
        "\nnot planned:\n  ml/big: left to kube-scheduler" in table and "fit nowhere" not in table
    )


def test_the_table_lists_pods_a_plan_leaves_pending_and_whether_that_is_proven() -> None:
    snap = snapshot_from_objects([_node("a"), gpu_pod("low", 3, node="a"), gpu_pod("new", 2)])
    unproven = Plan.from_assignments(snap, {}, proven_optimal=False, solve_seconds=0.1)
    expected = "ml/new: not placed by this plan (that no plan could is not proven)"
    assert f"\nstill pending:\n  {expected}" in format_table(unproven)
    evicted = Plan.from_assignments(snap, {"ml/low": None}, proven_optimal=False, solve_seconds=0)
    assert "still pending:\n  ml/new:" in format_table(evicted)
    assert "ml/low:" not in format_table(evicted)  # listed as an eviction, not as pending


def test_replicas_kept_one_per_node_are_planned_one_per_node() -> None:
    """r3 fits beside r2 on b, but its rule says one replica per node: the plan moves f3 from
    c to b and places r3 on c, and proves it (the rule is modelled, nothing is held)."""
    snap = snapshot_from_objects(
        [
            *(_node(n) for n in "abc"),
            _replica("r1", 2, "a"),
            gpu_pod("f1", 2, node="a"),
            _replica("r2", 2, "b"),
            gpu_pod("f2", 2, node="c"),
            gpu_pod("f3", 2, node="c"),
            _replica("r3", 2),
        ]
    )
    plan = solve(snap, time_limit=2)
    assert check_plan(snap, plan.to_dict()) == []
    assert [(b.pod, b.node) for b in plan.bindings] == [("ml/r3", "c")]
    assert len(plan.moves) == 1 and plan.moves[0].target == "b" and plan.evictions == ()
    assert plan.proven_optimal and "held_pods" not in plan.stats


def _spread_replica(name: str, key: str, node: str | None = None) -> dict:
    """A 2-GPU replica of r, spread over ``key`` with maxSkew 1 (DoNotSchedule)."""
    spread = {
        "maxSkew": 1,
        "topologyKey": key,
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "r"}},
    }
    return gpu_pod(
        name, 2, node=node, labels={"app": "r"}, spec={"topologySpreadConstraints": [spread]}
    )


def test_replicas_spread_over_nodes_are_planned_within_max_skew_per_node() -> None:
    """As above with a DoNotSchedule spread over hostnames (maxSkew 1) instead of
    anti-affinity: three replicas on four nodes, so some node keeps none and the spread is
    at most one per node."""

    def replica(name: str, node: str | None = None) -> dict:
        return _spread_replica(name, HOSTNAME, node)

    snap = snapshot_from_objects(
        [
            *(_node(n) for n in "abc"),
            _node("d", gpus=1),
            replica("r1", "a"),
            gpu_pod("f1", 2, node="a"),
            replica("r2", "b"),
            gpu_pod("f2", 2, node="c"),
            gpu_pod("f3", 2, node="c"),
            replica("r3"),
        ]
    )
    plan = solve(snap, time_limit=2)
    assert check_plan(snap, plan.to_dict()) == []
    assert [(b.pod, b.node) for b in plan.bindings] == [("ml/r3", "c")]
    assert len(plan.moves) == 1 and plan.moves[0].target == "b" and plan.evictions == ()
    assert plan.proven_optimal and "held_pods" not in plan.stats


def test_replicas_already_sharing_a_node_are_held_and_one_pending_planned_alone() -> None:
    """One unit per node cannot hold two replicas already together (the rule is
    IgnoredDuringExecution): the running ones are held, and one pending replica at a time is
    planned, on a node none of them runs on (r4 waits for r3 to run)."""
    snap = snapshot_from_objects(
        [
            *(_node(n) for n in "abc"),
            _replica("r1", 1, "a"),
            _replica("r2", 1, "a"),
            _replica("r3", 1),
            _replica("r4", 1),
        ]
    )
    plan = solve(snap, time_limit=1)
    assert [b.pod for b in plan.bindings] == ["ml/r3"] and plan.bindings[0].node in "bc"
    assert plan.moves == () and not plan.proven_optimal and plan.stats["held_pods"] == 4
    assert plan.unplaced_reasons["ml/r4"].startswith(
        "left to kube-scheduler: required pod anti-affinity"
    )
    assert check_plan(snap, plan.to_dict()) == []


def _zoned(name: str, zone: str, gpus: int = 4) -> dict:
    return gpu_node(name, gpus, **{HOSTNAME: name, ZONE: zone})


def test_one_pending_replica_spread_over_zones_is_planned_where_the_skew_holds() -> None:
    """Replicas spread over zones (maxSkew 1): two run in z1, one in z2, none in z3, whose
    node two fillers fill. kube-scheduler takes the next replica only in z3 (the smallest
    count is 0 there): the plan moves a filler out and places the replica in z3; the other
    nodes have room without a move, but a skew of 2 or 3 over z3. The second pending replica
    waits for the first to run."""

    def replica(name: str, node: str | None = None) -> dict:
        return _spread_replica(name, ZONE, node)

    snap = snapshot_from_objects(
        [
            _zoned("a", "z1"),
            _zoned("b", "z1"),
            _zoned("c", "z2"),
            _zoned("d", "z3"),
            replica("r1", "a"),
            replica("r2", "b"),
            replica("r3", "c"),
            gpu_pod("f1", 2, node="d"),
            gpu_pod("f2", 2, node="d"),
            replica("r4"),
            replica("r5"),
        ]
    )
    plan = solve(snap, time_limit=2)
    assert check_plan(snap, plan.to_dict()) == []
    assert [(b.pod, b.node) for b in plan.bindings] == [("ml/r4", "d")]
    (move,) = plan.moves
    assert move.pod in ("ml/f1", "ml/f2") and move.target != "d" and plan.evictions == ()
    assert plan.unplaced_reasons["ml/r5"] == (
        "left to kube-scheduler: a topology spread constraint (DoNotSchedule) "
        "(one pod of the group at a time: ml/r4 first)"
    )


def test_pods_asking_for_one_host_port_are_planned_one_per_node() -> None:
    port = {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}

    def exporter(name: str, node: str | None = None) -> dict:
        return gpu_pod(name, 0, node=node, spec=port)

    snap = snapshot_from_objects(
        [*(_node(n) for n in "abc"), exporter("e1", "a"), exporter("e2", "b"), exporter("e3")]
    )
    plan = solve(snap, time_limit=1)
    assert [(b.pod, b.node) for b in plan.bindings] == [("ml/e3", "c")]
    assert plan.proven_optimal and check_plan(snap, plan.to_dict()) == []


def _with_claim(pod: dict, *claims: str) -> dict:
    pod["spec"]["volumes"] = [
        {"name": f"data-{i}", "persistentVolumeClaim": {"claimName": claim}}
        for i, claim in enumerate(claims)
    ]
    return pod


def test_a_pod_on_a_local_volume_stays_on_its_node_and_an_unbound_claim_is_left() -> None:
    here = {"key": HOSTNAME, "operator": "In", "values": ["a"]}
    objects = [
        _node("a"),
        _node("b"),
        _with_claim(gpu_pod("x", 2, node="a"), "cache"),  # its volume is on a: it cannot move
        gpu_pod("y", 2, node="b"),
        gpu_pod("big", 4),
        {
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "cache", "namespace": "ml"},
            "spec": {"volumeName": "local-a"},
            "status": {"phase": "Bound"},
        },
        {
            "kind": "PersistentVolume",
            "metadata": {"name": "local-a"},
            "spec": {
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [here]}]}}
            },
        },
    ]
    snap = snapshot_from_objects(objects)
    plan = solve(snap, time_limit=2)
    assert [(m.pod, m.target) for m in plan.moves] == [("ml/y", "a")]
    assert [(b.pod, b.node) for b in plan.bindings] == [("ml/big", "b")]
    assert plan.proven_optimal and check_plan(snap, plan.to_dict()) == []
    # A claim bound to no volume in the snapshot: where the pod may run is not known.
    objects[4] = _with_claim(gpu_pod("big", 4), "fresh")
    plan = solve(snapshot_from_objects(objects), time_limit=1)
    assert plan.bindings == () and plan.moves == ()
    assert plan.unplaced_reasons["ml/big"] == (
        "left to kube-scheduler: volume claim fresh not bound to a PersistentVolume in the snapshot, "
        "nor sure to be provisioned where the pod goes"
    )


def test_pods_with_resource_claims_or_scheduling_gates_are_held() -> None:
    """A device a DRA driver allocated is on its node (the planner does not model the
    claims); a gated pod is not taken by kube-scheduler until its gates go."""
    x = gpu_pod("x", 2, node="a", spec={"resourceClaims": [{"name": "nic"}]})
    gated = gpu_pod("gated", 4, spec={"schedulingGates": [{"name": "example.com/quota"}]})
    snap = snapshot_from_objects([_node("a"), _node("b"), x, gpu_pod("y", 2, node="b"), gated])
    plan = solve(snap, time_limit=1)
    assert plan.bindings == () and plan.moves == ()
    assert plan.unplaced_reasons["ml/gated"] == (
        "left to kube-scheduler: scheduling gate example.com/quota"
    )
    ungated = gpu_pod("big", 4)
    snap = snapshot_from_objects([_node("a"), _node("b"), x, gpu_pod("y", 2, node="b"), ungated])
    plan = solve(snap, time_limit=1)
    assert [m.pod for m in plan.moves] == ["ml/y"] and plan.stats["held_pods"] == 1


def _exclusive_claim(name: str) -> list[dict]:
    """A ReadWriteOncePod claim bound to a volume any node can use."""
    return [
        {
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "ml"},
            "spec": {"volumeName": f"pv-{name}", "accessModes": ["ReadWriteOncePod"]},
            "status": {"phase": "Bound"},
        },
        {"kind": "PersistentVolume", "metadata": {"name": f"pv-{name}"}},
    ]


def test_pods_sharing_a_read_write_once_pod_claim_are_held() -> None:
    """kube-scheduler runs one pod of a ReadWriteOncePod claim at a time (VolumeRestrictions).
    A newcomer naming the claim x uses is left to it, though moving x would make room (it
    would be refused while x runs), and x stays (the newcomer could take the claim while x's
    replacement waits). A claim only one pod names holds nothing: x then moves."""
    pinned_y = gpu_pod("y", 2, node="b", spec={"nodeSelector": {HOSTNAME: "b"}})
    x = _with_claim(gpu_pod("x", 2, node="a"), "cache")
    objects = [_node("a"), _node("b"), x, pinned_y, *_exclusive_claim("cache")]
    snap = snapshot_from_objects([*objects, _with_claim(gpu_pod("big", 4), "cache")])
    assert [p.exclusive_claims for p in snap.pods] == [("cache",), (), ("cache",)]
    plan = solve(snap, time_limit=1)
    assert plan.bindings == () and plan.moves == () and plan.evictions == ()
    assert plan.stats["held_pods"] == 2 and not plan.proven_optimal
    assert plan.unplaced_reasons["ml/big"] == (
        "left to kube-scheduler: volume claim cache (ReadWriteOncePod) shared with pod x"
    )
    snap = snapshot_from_objects([*objects, gpu_pod("big", 4)])
    plan = solve(snap, time_limit=1)
    assert [(m.pod, m.target) for m in plan.moves] == [("ml/x", "b")]
    assert [(b.pod, b.node) for b in plan.bindings] == [("ml/big", "a")]
    assert plan.proven_optimal and check_plan(snap, plan.to_dict()) == []


def test_one_pending_pod_of_a_read_write_once_pod_claim_none_runs_is_planned() -> None:
    """While no pod of the claim is bound, kube-scheduler takes any one of them: the
    highest-priority pending one is planned (y moved to make room), the other waits for it.
    A pod first on one claim but not on another it shares waits too."""
    y = gpu_pod("y", 2, node="a")
    objects = [_node("a"), _node("b"), y, gpu_pod("z", 2, node="b"), *_exclusive_claim("cache")]
    big = _with_claim(gpu_pod("big", 4, priority=10), "cache")
    later = _with_claim(gpu_pod("later", 4), "cache")
    snap = snapshot_from_objects([*objects, big, later])
    plan = solve(snap, time_limit=1)
    assert [b.pod for b in plan.bindings] == ["ml/big"] and len(plan.moves) == 1
    assert plan.unplaced_reasons["ml/later"] == (
        "left to kube-scheduler: volume claim cache (ReadWriteOncePod) one pod at a time: big first"
    )
    assert check_plan(snap, plan.to_dict()) == []
    # big also shares journal with a pod higher on it: both wait (and later for big).
    both = _with_claim(gpu_pod("big", 4, priority=10), "cache", "journal")
    first = _with_claim(gpu_pod("first", 4, priority=20), "journal")
    snap = snapshot_from_objects([*objects, *_exclusive_claim("journal"), both, later, first])
    plan = solve(snap, time_limit=1)
    assert [b.pod for b in plan.bindings] == ["ml/first"]
    assert plan.unplaced_reasons["ml/big"] == (
        "left to kube-scheduler: volume claim cache (ReadWriteOncePod) shared with pod later; "
        "volume claim journal (ReadWriteOncePod) one pod at a time: first first"
    )


@pytest.mark.parametrize("owner", ["Node", "DaemonSet"])
def test_a_static_pods_mirror_or_a_daemonsets_pod_is_neither_moved_nor_evicted(
    owner: str,
) -> None:
    """Evicting a mirror frees nothing (the kubelet runs the static pod regardless); a
    DaemonSet's evicted pod comes back to its node. Nothing would run either elsewhere: the
    newcomer that needs its room waits."""
    agent = gpu_pod(
        "agent", 2, node="a", ownerReferences=[{"kind": owner, "name": "a", "controller": True}]
    )
    snap = snapshot_from_objects([_node("a"), agent, gpu_pod("vip", 4, priority=100)])
    plan = solve(snap, time_limit=1)
    assert plan.evictions == () and plan.moves == () and plan.bindings == ()
    assert plan.status is PlanStatus.OPTIMAL  # a true limit: the proof stands
    assert "\nstill pending:\n  ml/vip: no plan places more pods" in format_table(plan)
    owned = copy.deepcopy(agent)
    owned["metadata"]["ownerReferences"][0]["kind"] = "ReplicaSet"
    plan = solve(
        snapshot_from_objects([_node("a"), owned, gpu_pod("vip", 4, priority=100)]), time_limit=1
    )
    assert [e.pod for e in plan.evictions] == ["ml/agent"]


def test_pod_that_fits_nowhere_has_a_reason() -> None:
    snap = snapshot_from_objects([gpu_node("a", 1), gpu_pod("huge", 16)])
    plan = solve(snap, time_limit=1)
    assert plan.status is PlanStatus.OPTIMAL and plan.proven_optimal
    assert "insufficient allocatable nvidia.com/gpu" in plan.unplaced_reasons["ml/huge"]


def test_already_optimal_placement_is_certified() -> None:
    # Two 3-GPU pods cannot share a 4-GPU node: the pending one cannot be placed by any plan.
    snap = snapshot_from_objects([gpu_node("a", 4), gpu_pod("p", 3, node="a"), gpu_pod("q", 3)])
    plan = solve(snap, time_limit=2)
    assert plan.status is PlanStatus.OPTIMAL and plan.proven_optimal
    assert plan.bindings == () and plan.moves == () and plan.evictions == ()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dunnage.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_json_contract(tmp_path: Path) -> None:
    items = [
        gpu_node("a", 4),
        gpu_node("b", 4),
        gpu_pod("x", 2, node="a"),
        gpu_pod("y", 2, node="b"),
        gpu_pod("big", 4, priority=100),
    ]
    path = tmp_path / "snap.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    done = run_cli("plan", str(path), "--time-limit", "2", "-o", "json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "improved"
    assert set(out["assignments"]) == {"ml/x", "ml/y", "ml/big"}
    assert out["placed_by_priority"] == {"before": {"100": 0, "0": 2}, "after": {"100": 1, "0": 2}}
    assert out["proven_optimal"] is True and isinstance(out["solve_seconds"], float)
    assert out["placements_proven_optimal"] is True
    assert {"bindings", "moves", "evictions"} <= set(out)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("kind: Pod\n", "expected a Kubernetes List"),
        (
            "kind: List\nitems:\n- kind: Pod\n  metadata: {namespace: x}\n",
            "Pod, field metadata.name",
        ),
        (
            "kind: List\nitems:\n- kind: Pod\n  metadata: {name: p}\n  spec:\n    containers:\n"
            "    - name: c\n      resources: {requests: {memory: 12XB}}\n",
            "Pod default/p, field spec.containers[0].resources.requests.memory",
        ),
    ],
)
def test_cli_bad_input_exits_2_naming_object_and_field(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    done = run_cli("plan", str(path))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_pod_too_big_for_every_node_does_not_hide_a_smaller_one() -> None:
    # Found by hypothesis: eligibility was cached per request *names*, so the unplaceable
    # pod's empty node list was reused for its smaller sibling.
    snap = snapshot_from_objects(
        [
            gpu_node("a", 0),
            gpu_pod(
                "huge",
                0,
                spec={"containers": [{"name": "c", "resources": {"requests": {"memory": "1Ti"}}}]},
            ),
            gpu_pod(
                "small",
                0,
                spec={"containers": [{"name": "c", "resources": {"requests": {"memory": "1Gi"}}}]},
            ),
        ]
    )
    plan = solve(snap, time_limit=2)
    assert plan.status is PlanStatus.IMPROVED and plan.proven_optimal
    assert [b.pod for b in plan.bindings] == ["ml/small"]


# The search alone, as on clusters too big for the whole-cluster model.
SEARCH_ONLY = Techniques(full_model_limit=0)


def test_search_only_plan_meeting_the_volume_bounds_has_its_placements_proven() -> None:
    plan = solve(FRAGMENTED, time_limit=2, techniques=SEARCH_ONLY)
    assert plan.status is PlanStatus.IMPROVED and plan.placed_after == {100: 1, 0: 2}
    # Every pod placed, which no plan can beat; whether one move is the fewest is not proven.
    assert plan.placements_proven_optimal and not plan.proven_optimal
    assert plan.stats["decided_by"] == "neighbourhood_search"
    assert plan.to_dict()["placements_proven_optimal"] is True
    assert format_table(plan).startswith("status: improved (placements proven optimal)")


def test_fragmentation_below_the_volume_bounds_proves_nothing_without_the_whole_model() -> None:
    # 8 GPUs, 8 requested, but the two free GPUs are on different nodes.
    objects = [
        gpu_node("a", 4),
        gpu_node("b", 4),
        gpu_pod("x", 3, node="a"),
        gpu_pod("y", 3, node="b"),
        gpu_pod("z", 2),
    ]
    snap = snapshot_from_objects(objects)
    plan = solve(snap, time_limit=1, techniques=SEARCH_ONLY)
    assert plan.status is PlanStatus.NO_IMPROVEMENT
    assert not plan.placements_proven_optimal and not plan.proven_optimal
    whole = solve(snap, time_limit=2)  # the placement proof shows z fits nowhere
    assert whole.status is PlanStatus.OPTIMAL
    assert whole.proven_optimal and whole.placements_proven_optimal


def test_no_better_plan_with_proven_placements_certifies_the_snapshot() -> None:
    # The search ends on an equally good plan with a move (x to b) after the placement proof,
    # and no whole-model proof follows. Nothing beats the snapshot's placements and it
    # disrupts nothing, so the snapshot is optimal: Certified, not "no improvement found".
    snap = snapshot_from_objects(
        [
            gpu_node("a", 4),
            gpu_node("b", 4),
            gpu_pod("x", 2, node="a"),
            gpu_pod("y", 1, node="b"),
            gpu_pod("z", 4),
        ]
    )
    assignments = {"ml/x": "b", "ml/y": "b", "ml/z": None}
    plan = Plan.from_assignments(
        snap, assignments, proven_optimal=False, placements_proven_optimal=True, solve_seconds=0
    )
    assert plan.status is PlanStatus.OPTIMAL and plan.proven_optimal
    assert plan.moves == () and plan.assignments["ml/x"] == "a"
    unproven = Plan.from_assignments(snap, assignments, proven_optimal=False, solve_seconds=0)
    assert unproven.status is PlanStatus.NO_IMPROVEMENT and not unproven.proven_optimal


def planned(snap: Snapshot, placed: dict[str, str | None]) -> tuple[Problem, list[int | None]]:
    """The snapshot's problem and its assignment changed by ``placed`` (pod name -> node
    name, or None: not running)."""
    problem = Problem.build(snap)
    pods = {pod.name: i for i, pod in enumerate(snap.pods)}
    nodes = {node.name: i for i, node in enumerate(snap.nodes)}
    assignment = list(problem.initial_assignment())
    for name, node in placed.items():
        assignment[pods[name]] = None if node is None else nodes[node]
    return problem, assignment


def test_disrupted_pods_go_back_to_their_nodes_where_those_still_have_room() -> None:
    snap = snapshot_from_objects(
        [
            gpu_node("a", 4),
            gpu_node("b", 4),
            gpu_node("c", 4),
            gpu_node("d", 4),
            gpu_pod("resident", 2, node="a"),
            gpu_pod("needless-move", 1, node="b"),
            gpu_pod("needless-eviction", 1, node="b"),
            gpu_pod("needed-move", 2, node="c"),
            gpu_pod("newcomer", 4, priority=10),
        ]
    )
    # A valid plan that places the newcomer on c (its pod moved to a) but also moves and
    # evicts pods from b for nothing.
    problem, plan = planned(
        snap,
        {"needed-move": "a", "newcomer": "c", "needless-move": "d", "needless-eviction": None},
    )
    assert all(
        used <= cap
        for row, caps in zip(problem.usage(plan), problem.capacity, strict=True)
        for used, cap in zip(row, caps, strict=True)
    )
    search = _Search(problem, plan)
    assert search.revert_disruption() == 2
    names = problem.to_names(search.assignment)
    assert names["ml/needless-move"] == "b" and names["ml/needless-eviction"] == "b"
    assert names["ml/needed-move"] == "a" and names["ml/newcomer"] == "c"
    assert search.used == problem.usage(search.assignment) == search.used_array.tolist()
    assert search.revert_disruption() == 0


def test_a_pod_moved_in_makes_way_for_a_disrupted_pod_to_go_home() -> None:
    snap = snapshot_from_objects(
        [
            gpu_node("a", 4),
            gpu_node("b", 4),
            gpu_node("c", 8),
            gpu_pod("homeward", 2, node="a"),
            gpu_pod("guest", 3, node="b"),
            gpu_pod("newcomer", 4, priority=10),
        ]
    )
    # A valid plan with two moves: the newcomer takes b, its guest went to a and took the room
    # homeward (moved to c) needs to go back; moving the guest on to c makes that room.
    problem, plan = planned(snap, {"newcomer": "b", "guest": "a", "homeward": "c"})
    search = _Search(problem, plan)
    assert search.revert_disruption() == 0  # a has 1 GPU free: no room without the guest
    assert search.make_way_home(float("inf")) == 1
    names = problem.to_names(search.assignment)
    assert names == {"ml/homeward": "a", "ml/guest": "c", "ml/newcomer": "b"}
    assert search.used == problem.usage(search.assignment) == search.used_array.tolist()
    assert (
        check_plan(
            snap,
            Plan.from_assignments(snap, names, proven_optimal=False, solve_seconds=0).to_dict(),
        )
        == []
    )
    assert search.make_way_home(float("inf")) == 0


def test_guests_that_cannot_make_enough_room_stay_where_they_are() -> None:
    snap = snapshot_from_objects(
        [
            gpu_node("a", 4),
            gpu_node("b", 4),
            gpu_node("c", 4),
            gpu_node("d", 1),
            gpu_pod("homeward", 3, node="a"),
            gpu_pod("big-guest", 2, node="b"),
            gpu_pod("small-guest", 1, node="b"),
            gpu_pod("newcomer", 4, priority=10),
        ]
    )
    # homeward needs 3 GPUs on a, where the guests hold 3: the small one could go on to c or
    # d, but the big one fits nowhere else, so 2 GPUs are all the guests can free.
    problem, plan = planned(
        snap, {"newcomer": "b", "big-guest": "a", "small-guest": "a", "homeward": "c"}
    )
    search = _Search(problem, list(plan))
    assert search.make_way_home(float("inf")) == 0
    assert search.assignment == plan
    assert search.used == problem.usage(plan)


def assert_hint_is_a_complete_solution(
    snap: Snapshot, placed: dict[str, str | None]
) -> NeighbourhoodModel:
    """The neighbourhood model of the whole cluster, hinted with the initial assignment
    changed by ``placed`` (pod name -> node name or None), takes the hint as a solution."""
    from ortools.sat.python import cp_model

    problem, assignment = planned(snap, placed)
    everyone = range(problem.num_pods)
    search = _Search(problem, assignment)
    model = NeighbourhoodModel(
        problem, assignment, range(problem.num_nodes), everyone, search.limits(set(everyone))
    )
    model.add_hint()
    proto = model.model.proto
    assert sorted(proto.solution_hint.vars) == list(range(len(proto.variables)))
    solver = cp_model.CpSolver()
    solver.parameters.fix_variables_to_their_hinted_value = True
    assert solver.solve(model.model) == cp_model.OPTIMAL
    assert round(solver.objective_value) == model.objective_of(assignment)
    return model


# CP-SAT starts from a hint only when it sets every variable and satisfies every constraint;
# otherwise a solve (polishing a found plan, say) may not even get back to it in its time.


@pytest.mark.parametrize("evicted", [False, True])
def test_hint_sets_the_eviction_flags(evicted: bool) -> None:
    snap = snapshot_from_objects(
        [
            gpu_node("a", 4),
            gpu_node("b", 4),
            gpu_pod("low", 4, priority=1, node="a"),
            gpu_pod("mid", 2, priority=5, node="b"),
            gpu_pod("high", 4, priority=9),
        ]
    )
    model = assert_hint_is_a_complete_solution(snap, {"low": None, "high": "a"} if evicted else {})
    assert model.evicts, "the scenario must let 'high' evict 'low'"


def test_hint_keeps_to_the_symmetry_breaking_order_of_empty_nodes() -> None:
    # a, b and c are empty and alike; the hint puts the newcomer on the last of them.
    snap = snapshot_from_objects([gpu_node(n, 4) for n in "abc"] + [gpu_pod("new", 2, priority=9)])
    assert_hint_is_a_complete_solution(snap, {"new": "c"})


def ejection_search(
    snapshot: Snapshot, *, pin_bare_pods: bool = False, **options: Any
) -> tuple[Problem, _Search]:
    problem = Problem.build(snapshot, pin_bare_pods=pin_bare_pods)
    return problem, _Search(problem, problem.initial_assignment(), **options)


def test_ejection_places_a_pod_by_moving_one_aside_without_a_solver() -> None:
    problem, search = ejection_search(FRAGMENTED)
    assert search.place_by_ejection(deadline=float("inf")) == (1, 1, 0)
    names = problem.to_names(search.assignment)
    assert names["ml/big"] in ("a", "b")
    assert {names["ml/x"], names["ml/y"]} == {"a", "b"} - {names["ml/big"]}
    assert search.used == problem.usage(search.assignment) == search.used_array.tolist()
    plan = Plan.from_assignments(FRAGMENTED, names, proven_optimal=False, solve_seconds=0.0)
    assert check_plan(FRAGMENTED, plan.to_dict()) == []


def test_ejection_spends_no_move_the_limits_or_budgets_forbid() -> None:
    # Without moves, the newcomer may still evict a lower pod (one eviction, no move)...
    _, search = ejection_search(FRAGMENTED, max_moves=0)
    assert search.place_by_ejection(deadline=float("inf")) == (1, 0, 1)
    # ... but not without evictions either.
    _, search = ejection_search(FRAGMENTED, max_moves=0, max_evictions=0)
    assert search.place_by_ejection(deadline=float("inf")) == (0, 0, 0)
    budget = {
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "all", "namespace": "ml"},
        "spec": {"maxUnavailable": 0, "selector": {}},
    }
    frozen = snapshot_from_objects([*FRAGMENTED_OBJECTS, budget])
    _, search = ejection_search(frozen)
    assert search.place_by_ejection(deadline=float("inf")) == (0, 0, 0)


def test_ejection_moves_a_pod_only_to_a_node_it_may_run_on() -> None:
    # y may run only on b: x must make room on a, since y cannot go there.
    objs = copy.deepcopy(list(FRAGMENTED_OBJECTS))
    objs[3] = gpu_pod("y", 2, node="b", spec={"nodeSelector": {"kubernetes.io/hostname": "b"}})
    objs[0]["metadata"]["labels"] = {"kubernetes.io/hostname": "a"}
    objs[1]["metadata"]["labels"] = {"kubernetes.io/hostname": "b"}
    snapshot = snapshot_from_objects(objs)
    problem, search = ejection_search(snapshot)
    assert search.place_by_ejection(deadline=float("inf")) == (1, 1, 0)
    assert problem.to_names(search.assignment) == {"ml/x": "b", "ml/y": "b", "ml/big": "a"}
    # With x pinned to a as well, no single move makes room anywhere: the newcomer evicts one
    # of the lower pods instead (none without evictions).
    objs[2] = gpu_pod("x", 2, node="a", spec={"nodeSelector": {"kubernetes.io/hostname": "a"}})
    _, search = ejection_search(snapshot_from_objects(objs))
    assert search.place_by_ejection(deadline=float("inf")) == (1, 0, 1)
    _, search = ejection_search(snapshot_from_objects(objs), max_evictions=0)
    assert search.place_by_ejection(deadline=float("inf")) == (0, 0, 0)


# Each "a" node: a low pod that may be evicted and a high pod that may move; each "c" node: a
# high pod pinned there and 2 GPUs free. A pending 4-GPU pod fits nowhere, no single move makes
# room, and kube-scheduler's preemption frees only 2 GPUs; evicting the low pod of an "a" node
# and moving its high pod to a "c" node makes room.
def preemption_pool(pairs: int) -> Snapshot:
    objs: list[dict] = []
    for i in range(pairs):
        objs += [gpu_node(f"a{i}", 4), gpu_node(f"c{i}", 4)]
        objs += [gpu_pod(f"low{i}", 2, priority=1, node=f"a{i}")]
        objs += [gpu_pod(f"high{i}", 2, priority=9, node=f"a{i}", ownerReferences=[OWNER])]
        objs += [gpu_pod(f"pinned{i}", 2, priority=9, node=f"c{i}")]
        objs += [gpu_pod(f"new{i}", 4, priority=5, ownerReferences=[OWNER])]
    return snapshot_from_objects(objs)


OWNER = {"kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": True}


def test_ejection_evicts_lower_pods_and_moves_one_aside() -> None:
    snapshot = preemption_pool(3)
    problem = Problem.build(snapshot, pin_bare_pods=True)
    search = _Search(problem, problem.initial_assignment())
    assert search.place_by_ejection(deadline=float("inf")) == (3, 3, 3)
    names = problem.to_names(search.assignment)
    assert {names[f"ml/new{i}"] for i in range(3)} == {"a0", "a1", "a2"}
    assert {names[f"ml/high{i}"] for i in range(3)} == {"c0", "c1", "c2"}
    assert all(names[f"ml/low{i}"] is None for i in range(3))
    plan = Plan.from_assignments(snapshot, names, proven_optimal=False, solve_seconds=0.0)
    assert check_plan(snapshot, plan.to_dict()) == []
    assert search.used == problem.usage(search.assignment) == search.used_array.tolist()


def test_a_pod_ejection_would_evict_moves_where_it_fits_instead() -> None:
    # preemption_pool(1) with the low pod owned (movable) and one more node with room for it:
    # the high pod moves aside to c0 and the low pod, instead of being evicted, to s0.
    objs = [gpu_node("a0", 4), gpu_node("c0", 4), gpu_node("s0", 4)]
    objs += [gpu_pod("low0", 2, priority=1, node="a0", ownerReferences=[OWNER])]
    objs += [gpu_pod("high0", 2, priority=9, node="a0", ownerReferences=[OWNER])]
    objs += [gpu_pod("pinned0", 2, priority=9, node="c0")]
    objs += [gpu_pod("pinned1", 2, priority=9, node="s0")]
    objs += [gpu_pod("new0", 4, priority=5, ownerReferences=[OWNER])]
    snapshot = snapshot_from_objects(objs)
    problem = Problem.build(snapshot, pin_bare_pods=True)
    search = _Search(problem, problem.initial_assignment())
    assert search.place_by_ejection(deadline=float("inf")) == (1, 2, 0)
    names = problem.to_names(search.assignment)
    assert names["ml/new0"] == "a0" and {names["ml/high0"], names["ml/low0"]} == {"c0", "s0"}
    plan = Plan.from_assignments(snapshot, names, proven_optimal=False, solve_seconds=0.0)
    assert check_plan(snapshot, plan.to_dict()) == []
    assert search.used == problem.usage(search.assignment) == search.used_array.tolist()
    # With the move limit spent on the pod moved aside, the low pod is evicted as before.
    search = _Search(problem, problem.initial_assignment(), max_moves=1)
    assert search.place_by_ejection(deadline=float("inf")) == (1, 1, 1)


def test_a_pod_left_evicted_goes_where_it_fits_before_the_plan_is_written() -> None:
    # As a neighbourhood answer may leave it: new0 on a0 in low0's place, low0 evicted
    # although c0 has room for it. The send-back cannot take it home; it moves to c0.
    objs = [gpu_node("a0", 4), gpu_node("c0", 4)]
    objs += [gpu_pod("low0", 2, priority=1, node="a0", ownerReferences=[OWNER])]
    objs += [gpu_pod("pinned0", 2, priority=9, node="c0")]
    objs += [gpu_pod("new0", 4, priority=5, ownerReferences=[OWNER])]
    snapshot = snapshot_from_objects(objs)
    problem = Problem.build(snapshot, pin_bare_pods=True)
    pods = [pod.key for pod in snapshot.pods]
    nodes = [node.name for node in snapshot.nodes]
    search = _Search(problem, problem.initial_assignment())
    search._relocate(pods.index("ml/low0"), None)
    search._relocate(pods.index("ml/new0"), nodes.index("a0"))
    assert search.revert_disruption() == 1
    names = problem.to_names(search.assignment)
    assert (names["ml/new0"], names["ml/low0"]) == ("a0", "c0")
    plan = Plan.from_assignments(snapshot, names, proven_optimal=False, solve_seconds=0.0)
    assert check_plan(snapshot, plan.to_dict()) == []
    # No move left: it stays evicted.
    search = _Search(problem, problem.initial_assignment(), max_moves=0)
    search._relocate(pods.index("ml/low0"), None)
    search._relocate(pods.index("ml/new0"), nodes.index("a0"))
    assert search.revert_disruption() == 0


def test_ejection_evicts_within_the_limit_and_only_for_a_higher_priority_pod() -> None:
    snapshot = preemption_pool(3)
    problem = Problem.build(snapshot, pin_bare_pods=True)
    search = _Search(problem, problem.initial_assignment(), max_evictions=2)
    assert search.place_by_ejection(deadline=float("inf")) == (2, 2, 2)
    # The low pods at the pending pods' own priority: nothing may be evicted.
    same = snapshot_from_objects(
        [
            {**o, "spec": {**o["spec"], "priority": 5}} if o["metadata"]["name"] == "low0" else o
            for o in (
                gpu_node("a0", 4),
                gpu_node("c0", 4),
                gpu_pod("low0", 2, priority=1, node="a0"),
                gpu_pod("high0", 2, priority=9, node="a0", ownerReferences=[OWNER]),
                gpu_pod("pinned0", 2, priority=9, node="c0"),
                gpu_pod("new0", 4, priority=5, ownerReferences=[OWNER]),
            )
        ]
    )
    problem = Problem.build(same, pin_bare_pods=True)
    search = _Search(problem, problem.initial_assignment())
    assert search.place_by_ejection(deadline=float("inf")) == (0, 0, 0)


def test_a_pool_needing_an_eviction_and_a_move_per_pod_is_placed_whole() -> None:
    # Before ejections could evict, the neighbourhood search placed 18 of these 64 in 5 s.
    snapshot = preemption_pool(64)  # 128 nodes, 64 pending pods
    problem = Problem.build(snapshot, pin_bare_pods=True)
    search = _Search(problem, problem.initial_assignment())
    assert search.place_by_ejection(deadline=float("inf")) == (64, 64, 64)
    plan = solve(preemption_pool(16), time_limit=2.0, pin_bare_pods=True)
    assert plan.placed_after[5] == 16, plan.stats
    assert len(plan.evictions) == len(plan.moves) == 16
    assert check_plan(preemption_pool(16), plan.to_dict()) == []


# A pending pod asking for a whole 8-GPU node "w": on it, a low pod it may evict and three high
# pods that must move, each to a receiver node "r{i}" with 2 GPUs free (``slots`` of them).
def whole_node_pool(slots: int, *, vip: bool = False, low_owned: bool = False) -> Snapshot:
    objs: list[dict] = [gpu_node("w", 8, **{"kubernetes.io/hostname": "w"})]
    owned = {"ownerReferences": [OWNER]} if low_owned else {}  # else bare: pinned to "w"
    objs += [gpu_pod("low", 2, priority=1, node="w", **owned)]
    objs += [
        gpu_pod(f"high{i}", 2, priority=9, node="w", ownerReferences=[OWNER]) for i in range(3)
    ]
    for i in range(slots):
        objs += [gpu_node(f"r{i}", 4), gpu_pod(f"pinned{i}", 2, priority=9, node=f"r{i}")]
    objs += [gpu_pod("whole", 8, priority=5, ownerReferences=[OWNER])]
    if vip:  # a higher pending pod for the same node that may not preempt: it cannot get it
        selector = {"kubernetes.io/hostname": "w"}
        vip_spec = {"nodeSelector": selector, "preemptionPolicy": "Never"}
        objs += [gpu_pod("vip", 8, priority=7, ownerReferences=[OWNER], spec=vip_spec)]
    return snapshot_from_objects(objs)


def test_ejection_clears_a_whole_node_by_moving_several_pods_aside() -> None:
    snapshot = whole_node_pool(3)
    problem, search = ejection_search(snapshot, pin_bare_pods=True)
    assert search.place_by_ejection(deadline=float("inf")) == (1, 3, 1)
    names = problem.to_names(search.assignment)
    assert names["ml/whole"] == "w" and names["ml/low"] is None
    assert sorted(names[f"ml/high{i}"] for i in range(3)) == ["r0", "r1", "r2"]
    assert search.used == problem.usage(search.assignment) == search.used_array.tolist()
    plan = Plan.from_assignments(snapshot, names, proven_optimal=False, solve_seconds=0.0)
    assert check_plan(snapshot, plan.to_dict()) == []
    # Without the technique (or with a move limit short of three), nothing is placed.
    for options in ({"techniques": Techniques(ejection_clears=False)}, {"max_moves": 2}):
        _, search = ejection_search(snapshot, pin_bare_pods=True, **options)
        assert search.place_by_ejection(deadline=float("inf")) == (0, 0, 0)


def test_clearing_moves_a_pod_it_would_evict_where_it_fits_elsewhere() -> None:
    # A fourth receiver: the low pod moves there and keeps its place (on the whole openb
    # cluster a 10 s plan evicted 79 best-effort pods this way; after, none).
    snapshot = whole_node_pool(4, low_owned=True)
    problem, search = ejection_search(snapshot, pin_bare_pods=True)
    assert search.place_by_ejection(deadline=float("inf")) == (1, 4, 0)
    names = problem.to_names(search.assignment)
    assert names["ml/whole"] == "w" and names["ml/low"] is not None
    plan = Plan.from_assignments(snapshot, names, proven_optimal=False, solve_seconds=0.0)
    assert check_plan(snapshot, plan.to_dict()) == []
    # With no room left for it, it is evicted as before.
    _, search = ejection_search(whole_node_pool(3, low_owned=True), pin_bare_pods=True)
    assert search.place_by_ejection(deadline=float("inf")) == (1, 3, 1)


def test_ejection_does_not_clear_a_node_without_room_for_every_pod_moved() -> None:
    # Two receivers for three pods: the third must not be sent where the first went.
    problem, search = ejection_search(whole_node_pool(2), pin_bare_pods=True)
    assert search.place_by_ejection(deadline=float("inf")) == (0, 0, 0)
    assert search.assignment == problem.initial_assignment()  # every tried move undone
    assert search.used == problem.usage(search.assignment) == search.used_array.tolist()


def test_no_node_is_cleared_for_a_pod_while_a_higher_one_waits() -> None:
    # vip (priority 7) cannot have the node (it may not evict the low pod): while it waits,
    # whole (5) does not take the receivers' room, which the search might still give vip.
    _, search = ejection_search(whole_node_pool(3, vip=True), pin_bare_pods=True)
    assert search.place_by_ejection(deadline=float("inf")) == (0, 0, 0)
    assert search.clearing_deferred == 7  # the search goes on with it once vip is placed
    _, search = ejection_search(whole_node_pool(3), pin_bare_pods=True)
    search.place_by_ejection(deadline=float("inf"))
    assert search.clearing_deferred is None
