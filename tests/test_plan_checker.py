"""The checker itself must catch each kind of violation (a checker that cannot fail is no check)."""

from __future__ import annotations

from typing import Any

import pytest

from dunnage.cluster import snapshot_from_objects
from dunnage.solver.plan import Plan
from tests.csi_objects import attachment, claims, csi_claim, csi_node
from tests.plan_checker import check_plan


def node(name: str, gpus: int = 4, **spec: Any) -> dict:
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": {"zone": name}},
        "spec": spec,
        "status": {
            "allocatable": {"cpu": "8", "memory": "8Gi", "pods": "10", "nvidia.com/gpu": str(gpus)}
        },
    }


def pod(name: str, gpus: int, prio: int = 0, on: str | None = None, **spec: Any) -> dict:
    body = {
        "priority": prio,
        "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}],
        **spec,
    }
    if on:
        body["nodeName"] = on
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "t", "labels": {"app": "x"}},
        "spec": body,
    }


SNAP = snapshot_from_objects(
    [
        node("a"),
        node("b", unschedulable=False),
        node("tainted", taints=[{"key": "k", "effect": "NoSchedule"}]),
        pod("low", 2, 0, "a"),
        pod("mid", 2, 5, "b"),
        pod("new", 4, 9),
        pod("never", 2, 9, preemptionPolicy="Never"),
        {
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "x", "namespace": "t"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}},
            "status": {"disruptionsAllowed": 1},
        },
    ]
)


def plan_for(assignments: dict[str, str | None]) -> dict[str, Any]:
    """The plan as the planner would print it for these assignments (even a worse one)."""
    full = {p.key: p.node_name for p in SNAP.pods} | assignments
    plan = Plan.from_assignments(SNAP, full, proven_optimal=False, solve_seconds=0).to_dict()
    if plan["assignments"] != full:  # from_assignments keeps the snapshot when not better
        moved = {k: v for k, v in full.items() if v != SNAP.pod_by_key[k].node_name}
        plan["assignments"] = full
        plan["evictions"] = [
            {"pod": k, "node": SNAP.pod_by_key[k].node_name} for k, v in moved.items() if v is None
        ]
        plan["placed_by_priority"]["after"] = {
            str(k): v for k, v in SNAP.placed_by_priority(full).items()
        }
    return plan


def test_valid_plan_passes() -> None:
    good = plan_for({"t/new": "a", "t/low": None})  # evict low for a strictly higher newcomer
    assert check_plan(SNAP, good) == []


@pytest.mark.parametrize(
    ("assignments", "needle"),
    [
        ({"t/new": "b"}, "nvidia.com/gpu"),  # 4 + 2 GPUs on a 4-GPU node
        ({"t/new": "tainted"}, "taint k"),
        (
            {"t/never": "a", "t/low": None},
            "without a higher-priority newcomer",
        ),  # Never does not evict
        ({"t/low": None}, "without a higher-priority newcomer"),
        ({"t/low": None}, "lexicographically worse"),
        ({"t/new": "a", "t/low": "b", "t/mid": "tainted"}, "taint k"),
    ],
)
def test_violations_are_reported(assignments: dict[str, str | None], needle: str) -> None:
    errors = check_plan(SNAP, plan_for(assignments))
    assert any(needle in e for e in errors), errors


def test_pdb_budget_and_bookkeeping() -> None:
    # Two covered pods disrupted against a budget of one.
    plan = plan_for({"t/new": "a", "t/low": "tainted", "t/mid": "a"})
    assert any("PodDisruptionBudget t/x" in e for e in check_plan(SNAP, plan))
    plan = plan_for({"t/new": "a", "t/low": None})
    plan["evictions"] = []
    assert "bindings/moves/evictions disagree with assignments" in check_plan(SNAP, plan)
    plan = plan_for({"t/new": "a", "t/low": None})
    plan["placed_by_priority"]["after"]["9"] = 2
    assert any("placed_by_priority.after" in e for e in check_plan(SNAP, plan))
    del plan["assignments"]["t/new"]
    assert "assignments cover" in check_plan(SNAP, plan)[0]


def _zone_node(name: str, zone: str) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": zone}},
        "status": {"allocatable": {"cpu": "8", "memory": "8Gi", "pods": "10"}},
    }


def _labelled(name: str, app: str, on: str | None = None, **spec: Any) -> dict[str, Any]:
    body = {"containers": [{"name": "c", **spec.pop("container", {})}], **spec}
    if on:
        body["nodeName"] = on
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "t", "labels": {"app": app}},
        "spec": body,
    }


def _terms(kind: str, key: str, app: str) -> dict[str, Any]:
    term = {"topologyKey": key, "labelSelector": {"matchLabels": {"app": app}}}
    return {kind: {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}


RULES = snapshot_from_objects(
    [
        _zone_node("n1", "z1"),
        _zone_node("n2", "z1"),
        _zone_node("n3", "z2"),
        _labelled(
            "web-1",
            "web",
            "n1",
            affinity=_terms("podAntiAffinity", "kubernetes.io/hostname", "web"),
        ),
        _labelled("free", "web"),
        _labelled("anti", "db", affinity=_terms("podAntiAffinity", "zone", "web")),
        _labelled("aff", "cache", affinity=_terms("podAffinity", "zone", "web")),
        _labelled("s-1", "s", "n1"),
        _labelled("s-2", "s", "n1"),
        _labelled(
            "spread",
            "s",
            topologySpreadConstraints=[
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app": "s"}},
                }
            ],
        ),
        _labelled("p-1", "p", "n3", container={"ports": [{"containerPort": 80, "hostPort": 8080}]}),
        _labelled("port", "p", container={"ports": [{"containerPort": 81, "hostPort": 8080}]}),
    ]
)


def rules_plan(assignments: dict[str, str | None]) -> dict[str, Any]:
    full = {p.key: p.node_name for p in RULES.pods} | assignments
    return Plan.from_assignments(RULES, full, proven_optimal=False, solve_seconds=0).to_dict()


def test_rules_between_pods_hold_in_a_valid_plan() -> None:
    plan = rules_plan(
        {"t/free": "n2", "t/anti": "n3", "t/aff": "n2", "t/spread": "n2", "t/port": "n2"}
    )
    assert check_plan(RULES, plan) == []


@pytest.mark.parametrize(
    ("assignments", "needle"),
    [
        ({"t/free": "n1"}, "the pod anti-affinity of t/web-1"),  # the existing pod's term
        ({"t/anti": "n2"}, "its pod anti-affinity (zone)"),  # web-1 runs in zone z1
        ({"t/aff": "n3"}, "its pod affinity"),  # no web pod in zone z2
        ({"t/spread": "n1"}, "its topology spread (kubernetes.io/hostname, maxSkew 1)"),
        ({"t/port": "n3"}, "host port 8080/TCP of t/p-1"),
        ({"t/web-1": "n2", "t/free": "n2"}, "the pod anti-affinity of t/web-1"),  # moved next to it
    ],
)
def test_rules_between_pods_are_checked(assignments: dict[str, str | None], needle: str) -> None:
    errors = check_plan(RULES, rules_plan(assignments))
    assert any(needle in e for e in errors), errors


def _affinity_snapshot(pod: dict[str, Any], *others: dict[str, Any]) -> Any:
    return snapshot_from_objects(
        [_zone_node("n1", "z1"), _zone_node("n2", "z1"), _zone_node("n3", "z2"), pod, *others]
    )


def _term(app: str, **extra: Any) -> dict[str, Any]:
    return {"topologyKey": "zone", "labelSelector": {"matchLabels": {"app": app}}, **extra}


def _with_affinity(name: str, app: str, *terms: dict[str, Any]) -> dict[str, Any]:
    required = {"requiredDuringSchedulingIgnoredDuringExecution": list(terms)}
    return _labelled(name, app, affinity={"podAffinity": required})


@pytest.mark.parametrize(
    ("snapshot", "node", "refused"),
    [
        # Each term counts the pods matching every term: web and gpu in z1, none both.
        (
            _affinity_snapshot(
                _with_affinity("p", "x", _term("web"), _term("gpu")),
                _labelled("web", "web", "n1"),
                _labelled("gpu", "gpu", "n1"),
            ),
            "n2",
            True,
        ),
        # The first pod of a group (it matches its own term) goes anywhere ...
        (_affinity_snapshot(_with_affinity("p", "solo", _term("solo"))), "n3", False),
        # ... but not away from one running already.
        (
            _affinity_snapshot(
                _with_affinity("p", "solo", _term("solo")), _labelled("other", "solo", "n1")
            ),
            "n3",
            True,
        ),
        (
            _affinity_snapshot(
                _with_affinity("p", "solo", _term("solo")), _labelled("other", "solo", "n1")
            ),
            "n2",
            False,
        ),
        # A namespace selector may not select the web pod's namespace: not counted on ...
        (
            _affinity_snapshot(
                _with_affinity(
                    "p", "x", _term("web", namespaceSelector={"matchLabels": {"a": "b"}})
                ),
                _labelled("web", "web", "n1"),
            ),
            "n2",
            True,
        ),
        # ... an empty one selects every namespace.
        (
            _affinity_snapshot(
                _with_affinity("p", "x", _term("web", namespaceSelector={})),
                _labelled("web", "web", "n1"),
            ),
            "n2",
            False,
        ),
    ],
)
def test_pod_affinity_is_checked_as_kube_scheduler_counts_it(
    snapshot: Any, node: str, refused: bool
) -> None:
    full = {p.key: p.node_name for p in snapshot.pods} | {"t/p": node}
    plan = Plan.from_assignments(snapshot, full, proven_optimal=False, solve_seconds=0).to_dict()
    errors = check_plan(snapshot, plan)
    assert errors == (["t/p placed on " + node + " against its pod affinity"] if refused else [])


@pytest.mark.parametrize(
    ("owner", "what"), [("Node", "a static pod's mirror"), ("DaemonSet", "a DaemonSet's pod")]
)
def test_a_disrupted_mirror_or_daemonset_pod_is_reported(owner: str, what: str) -> None:
    agent = pod("agent", 2, 0, "a")
    agent["metadata"]["ownerReferences"] = [{"kind": owner, "name": "a", "controller": True}]
    snap = snapshot_from_objects([node("a"), agent, pod("vip", 4, 9)])
    full = {"t/agent": None, "t/vip": "a"}
    plan = Plan.from_assignments(snap, full, proven_optimal=False, solve_seconds=0).to_dict()
    assert f"t/agent is {what} and was disrupted" in check_plan(snap, plan)


def test_a_read_write_once_pod_claim_in_use_is_reported() -> None:
    """The newcomer shares holder's ReadWriteOncePod claim: placing it while holder runs is
    refused; once holder is evicted it is not."""
    claim = {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "journal"}}]}
    snap = snapshot_from_objects(
        [
            node("a"),
            node("b"),
            pod("holder", 2, 0, "a", **claim),
            pod("new", 2, 9, **claim),
            {
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "journal", "namespace": "t"},
                "spec": {"volumeName": "pv", "accessModes": ["ReadWriteOncePod"]},
                "status": {"phase": "Bound"},
            },
            {"kind": "PersistentVolume", "metadata": {"name": "pv"}},
        ]
    )

    def errors(assignments: dict[str, str | None]) -> list[str]:
        full = {p.key: p.node_name for p in snap.pods} | assignments
        plan = Plan.from_assignments(snap, full, proven_optimal=False, solve_seconds=0)
        return check_plan(snap, plan.to_dict())

    refused = "t/new placed on b against ReadWriteOncePod claim journal of t/holder"
    assert refused in errors({"t/new": "b"})
    assert errors({"t/new": "a", "t/holder": None}) == []


def test_a_csi_volume_past_its_drivers_count_is_reported() -> None:
    """a may attach one disk.csi volume and has holder's; b one and a VolumeAttachment of
    vol-9 with no pod. The newcomer's vol-2 fits neither while they stay; once holder is
    evicted from a it does (a leaving pod's volume is detached)."""
    snap = snapshot_from_objects(
        [
            node("a"),
            node("b"),
            node("c"),
            csi_node("a", disk_csi=1),
            csi_node("b", disk_csi=1),
            attachment("vol-9", "b"),
            *csi_claim("c9", "vol-9"),
            *csi_claim("c1", "vol-1"),
            *csi_claim("c2", "vol-2"),
            pod("holder", 2, 0, "a", **claims("c1")),
            pod("new", 2, 9, **claims("c2")),
        ]
    )

    def errors(assignments: dict[str, str | None]) -> list[str]:
        full = {p.key: p.node_name for p in snap.pods} | assignments
        plan = Plan.from_assignments(snap, full, proven_optimal=False, solve_seconds=0)
        return check_plan(snap, plan.to_dict())

    assert errors({"t/new": "a"}) == ["t/new placed on a: 2 volumes of disk.csi > its count 1"]
    assert errors({"t/new": "b"}) == ["t/new placed on b: 2 volumes of disk.csi > its count 1"]
    assert errors({"t/new": "a", "t/holder": None}) == []
    assert errors({"t/new": "c"}) == []  # no CSINode: no limit
