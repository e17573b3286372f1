"""Property tests: random small clusters, every plan verified by the independent checker.

The checker (tests/plan_checker.py) re-implements capacity, predicates, the preemption rule and
PDB accounting without importing the solver. On the smallest clusters the planner's proven
optimum is compared with brute force over every assignment.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dunnage.cluster import snapshot_from_objects
from dunnage.cluster.model import Snapshot
from dunnage.solver.plan import PlanStatus, lexicographic_key
from dunnage.solver.planner import MAX_CLEARING_MOVES, solve
from tests import test_baseline as objects
from tests.csi_objects import (
    attachment,
    csi_claim,
    csi_driver,
    csi_node,
    storage_class,
    unbound_claim,
)
from tests.plan_checker import check_plan
from tests.test_problem import required

PRODUCTS = ("A100", "H100")
ZONE = "topology.kubernetes.io/zone"


@st.composite
def clusters(draw: st.DrawFn, max_nodes: int = 5, max_pods: int = 12) -> list[dict[str, Any]]:
    """Nodes, pods (some running where they fit, some pending), an optional PDB."""
    nodes = []
    for i in range(draw(st.integers(1, max_nodes))):
        spec: dict[str, Any] = {}
        if draw(st.integers(0, 6)) == 0:
            spec["taints"] = [
                {
                    "key": "dedicated",
                    "value": "x",
                    "effect": draw(st.sampled_from(["NoSchedule", "NoExecute"])),
                }
            ]
        if draw(st.integers(0, 8)) == 0:
            spec["unschedulable"] = True
        nodes.append(
            {
                "kind": "Node",
                "metadata": {
                    "name": f"n{i}",
                    "labels": {
                        "nvidia.com/gpu.product": draw(st.sampled_from(PRODUCTS)),
                        "kubernetes.io/hostname": f"n{i}",
                        ZONE: draw(st.sampled_from(["za", "zb"])),
                    },
                },
                "spec": spec,
                "status": {
                    "allocatable": {
                        "cpu": str(draw(st.integers(1, 8))),
                        "memory": f"{draw(st.integers(1, 16))}Gi",
                        "nvidia.com/gpu": str(draw(st.integers(0, 4))),
                        "pods": str(draw(st.integers(2, 10))),
                    }
                },
            }
        )
    used = {n["metadata"]["name"]: [0, 0, 0, 0] for n in nodes}
    pods: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    skew = draw(st.integers(1, 2))  # one spread for every "s" replica: a workload's
    for j in range(draw(st.integers(0, max_pods))):
        cpu, mem, gpu = (
            draw(st.integers(1, 4)) * 500,
            draw(st.integers(1, 8)),
            draw(st.integers(0, 2)),
        )
        spec = {
            "containers": [
                {
                    "name": "c",
                    "resources": {
                        "requests": {"cpu": f"{cpu}m", "memory": f"{mem}Gi"},
                        "limits": {"nvidia.com/gpu": gpu},
                    },
                }
            ],
            "priority": draw(st.integers(0, 2)) * 10,
        }
        if draw(st.booleans()):
            spec["preemptionPolicy"] = "Never"
        constraint = draw(st.integers(0, 6))
        # A node to pin the pod to (by hostname or name): one it fits when empty, if any.
        roomy = [
            n["metadata"]["name"]
            for n in nodes
            if cpu <= int(n["status"]["allocatable"]["cpu"]) * 1000
            and mem <= int(n["status"]["allocatable"]["memory"][:-2])
            and gpu <= int(n["status"]["allocatable"]["nvidia.com/gpu"])
        ]
        some_node = draw(st.sampled_from(roomy or [n["metadata"]["name"] for n in nodes]))
        volumes += add_volume(draw, spec, f"p{j}", some_node)
        if constraint == 1:
            spec["nodeSelector"] = {"nvidia.com/gpu.product": draw(st.sampled_from(PRODUCTS))}
        elif constraint == 2:
            spec["affinity"] = required(
                matchExpressions=[
                    {
                        "key": "nvidia.com/gpu.product",
                        "operator": "NotIn",
                        "values": [draw(st.sampled_from(PRODUCTS))],
                    }
                ]
            )
        elif constraint == 3:
            spec["nodeSelector"] = {"kubernetes.io/hostname": some_node}
        elif constraint == 4:
            spec["affinity"] = required(
                matchFields=[{"key": "metadata.name", "operator": "In", "values": [some_node]}]
            )
        if draw(st.booleans()):
            spec["tolerations"] = [{"key": "dedicated", "operator": "Exists"}]
            if draw(st.booleans()):  # cordoned nodes too (NodeUnschedulable)
                unschedulable = {"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}
                spec["tolerations"].append(unschedulable)
        app = draw(st.sampled_from(["a", "b", "r", "s"]))
        if app == "s":  # replicas spread over nodes: a group the planner may model
            spec["topologySpreadConstraints"] = [
                {
                    "maxSkew": skew,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app": "s"}},
                }
            ]
        elif app == "r":  # replicas kept one per node: a group the planner models
            spec["affinity"] = spec.get("affinity", {}) | {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app": "r"}},
                        }
                    ]
                }
            }
        else:
            add_rule_between_pods(draw, spec)
        # Run it somewhere it fits (capacity only: a running pod may sit on a node it no longer
        # tolerates), or leave it pending.
        target = draw(st.sampled_from([None, *used]))
        if target is not None:
            alloc = next(n for n in nodes if n["metadata"]["name"] == target)["status"][
                "allocatable"
            ]
            u = used[target]
            if (
                u[0] + cpu <= int(alloc["cpu"]) * 1000
                and u[1] + mem <= int(alloc["memory"][:-2])
                and u[2] + gpu <= int(alloc["nvidia.com/gpu"])
                and u[3] + 1 <= int(alloc["pods"])
            ):
                for k, v in enumerate((cpu, mem, gpu, 1)):
                    u[k] += v
                spec["nodeName"] = target
        owner = []
        if target is not None and spec.get("nodeName") and draw(st.integers(0, 9)) == 0:
            # a static pod's mirror or a DaemonSet's pod: the planner must neither move nor
            # evict it
            kind, name = draw(st.sampled_from([("Node", target), ("DaemonSet", "agent")]))
            owner = [{"kind": kind, "name": name, "controller": True}]
        pods.append(
            {
                "kind": "Pod",
                "metadata": {
                    "name": f"p{j}",
                    "namespace": "t",
                    "labels": {"app": app},
                    **({"ownerReferences": owner} if owner else {}),
                },
                "spec": spec,
            }
        )
    unique = {(v["kind"], v["metadata"]["name"]): v for v in volumes}  # a shared claim once
    return nodes + pods + list(unique.values()) + attach_limits(draw, nodes) + maybe_budget(draw, 2)


def attach_limits(draw: st.DrawFn, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Maybe, per node, a CSINode with disk.csi's count (0-2), and a VolumeAttachment of a
    volume no pod uses (kube-scheduler's NodeVolumeLimits; add_volume draws CSI volumes)."""
    out: list[dict[str, Any]] = []
    for n in nodes:
        name = n["metadata"]["name"]
        if draw(st.booleans()):
            out.append(csi_node(name, disk_csi=draw(st.integers(0, 2))))
        if draw(st.integers(0, 5)) == 0:
            out += [attachment(f"left-{name}", name), *csi_claim(f"c-{name}", f"left-{name}")]
    return out


def add_rule_between_pods(draw: st.DrawFn, spec: dict[str, Any]) -> None:
    """Maybe one rule that depends on where other pods run (the planner leaves such pods, and
    those a running pod's anti-affinity selects, where they are; the checker checks them)."""
    rule = draw(st.integers(0, 9))
    app = draw(st.sampled_from(["a", "b"]))
    selects = draw(
        st.sampled_from(
            [
                {"matchLabels": {"app": app}},
                {"matchExpressions": [{"key": "app", "operator": "In", "values": [app]}]},
            ]
        )
    )
    key = draw(st.sampled_from(["kubernetes.io/hostname", ZONE]))
    if rule in (0, 1):
        kind = "podAntiAffinity" if rule == 0 else "podAffinity"
        term = {"topologyKey": key, "labelSelector": selects}
        spec.setdefault("affinity", {})[kind] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [term]
        }
    elif rule == 2:
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": selects,
            }
        ]
    elif rule == 3:
        spec["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]


def add_volume(draw: st.DrawFn, spec: dict[str, Any], pod: str, node: str) -> list[dict[str, Any]]:
    """Maybe a claim: bound to a volume on one node (a local volume: the pod may run only
    there), bound to one any node can use (or any of a zone's, or a CSI disk, which may be
    another pod's too), not in the snapshot (the planner holds the pod), not bound yet but
    provisioned where its pod goes (maybe in one zone, maybe shared), or the ReadWriteOncePod
    claim every pod drawing it shares (one of them may run at a time)."""
    kind = draw(st.integers(0, 7))
    if kind == 7:
        kind = 1  # a CSI disk more often: attach limits need several on a node
    if kind == 3:
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "journal"}}]
        claim = {"volumeName": "pv-journal", "accessModes": ["ReadWriteOncePod"]}
        return [
            {
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "journal", "namespace": "t"},
                "spec": claim,
                "status": {"phase": "Bound"},
            },
            {"kind": "PersistentVolume", "metadata": {"name": "pv-journal"}},
        ]
    if kind > 3:
        return []
    claim = f"{pod}-data"
    spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    if kind == 2 and draw(st.booleans()):
        return []  # no such claim in the snapshot
    if kind == 2:  # not bound yet: provisioned where the pod goes (in zone za, maybe)
        zone = {"matchLabelExpressions": [{"key": ZONE, "values": ["za"]}]}
        topologies = draw(st.sampled_from([{}, {"allowedTopologies": [zone]}]))
        shared = draw(st.integers(0, 3)) == 0  # the first pod drawing it goes first
        if shared:
            spec["volumes"][0]["persistentVolumeClaim"]["claimName"] = "scratch"
        return [
            unbound_claim("scratch" if shared else claim, "fast"),
            storage_class("fast", **topologies),  # one class for all: the last drawn
            csi_driver(),
        ]
    volume: dict[str, Any] = {"kind": "PersistentVolume", "metadata": {"name": f"pv-{pod}"}}
    if kind == 1 and draw(st.booleans()):  # a zonal disk (kube-scheduler's VolumeZone)
        volume["metadata"]["labels"] = {ZONE: draw(st.sampled_from(["za", "zb", "za__zb"]))}
    if kind == 1 and draw(st.integers(0, 2)):  # a CSI disk (NodeVolumeLimits), maybe shared
        handle = draw(st.sampled_from([pod, pod, "shared"]))
        volume["spec"] = {"csi": {"driver": "disk.csi", "volumeHandle": handle}}
    if kind == 0:
        here = {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
        volume["spec"] = {
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [here]}]}}
        }
    bound = {"volumeName": f"pv-{pod}"}
    return [
        {
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": "t"},
            "spec": bound,
            "status": {"phase": "Bound"},
        },
        volume,
    ]


def maybe_budget(draw: st.DrawFn, most: int) -> list[dict[str, Any]]:
    """Maybe a PodDisruptionBudget over the pods labelled app=a."""
    if not draw(st.booleans()):
        return []
    spec = {"maxUnavailable": draw(st.integers(0, most)), "selector": {"matchLabels": {"app": "a"}}}
    return [
        {"kind": "PodDisruptionBudget", "metadata": {"name": "pdb", "namespace": "t"}, "spec": spec}
    ]


@st.composite
def groups_under_pressure(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One group kept at most k per node (a hostname spread of maxSkew k, a one-per-node
    anti-affinity, or a host port), or the same over zones, or kept together on a node or
    in a zone (pod affinity to itself), fewer pods than nodes, on small
    nodes mostly filled by lower-priority fillers (some higher, which may evict the group's
    pods): a plan is tempted to stack the group's pending pods on the nodes with room, so a
    limit modelled one too high shows (clusters() rarely gets there)."""
    count = draw(st.integers(3, 6))
    # Now and then a node without a hostname or zone label: a spread keeps none there.
    items = []
    for i in range(count):
        labels = {
            "kubernetes.io/hostname": f"n{i}",
            ZONE: draw(st.sampled_from(["za", "zb", "zc"])),
        }
        for key in list(labels):
            if draw(st.integers(0, 5)) == 0:
                del labels[key]
        items.append(objects.node(f"n{i}", cpu="2", labels=labels))
        if draw(st.integers(0, 5)) == 0:  # a node no pod here tolerates
            items[-1]["spec"] = {"taints": [{"key": "reserved", "effect": "NoSchedule"}]}
    kind = draw(st.sampled_from(["spread", "anti-affinity", "host-port", "affinity"]))
    key = draw(st.sampled_from(["kubernetes.io/hostname", "kubernetes.io/hostname", ZONE]))
    has_key = [key in n["metadata"]["labels"] for n in items]
    limit = draw(st.integers(1, 2)) if kind == "spread" else 1
    selects = {"matchLabels": {"app": "g"}}
    rule: dict[str, Any] = {}
    if kind == "spread":
        rule["topologySpreadConstraints"] = [
            {
                "maxSkew": limit,
                "topologyKey": key,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": selects,
                **({"minDomains": draw(st.integers(2, 4))} if draw(st.booleans()) else {}),
                **({"nodeTaintsPolicy": "Honor"} if draw(st.booleans()) else {}),
            }
        ]
    elif kind in ("anti-affinity", "affinity"):  # kept apart, or together
        term = {"topologyKey": key, "labelSelector": selects}
        which = "podAntiAffinity" if kind == "anti-affinity" else "podAffinity"
        rule["affinity"] = {which: {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    used = [0] * count  # millicores
    members = [0] * count
    # Now and then the group runs over its limit already (labels changed under it): held.
    over = draw(st.integers(0, 7)) == 0

    def add(name: str, app: str, cpu: int, priority: int, node: int | None, **spec: Any) -> None:
        pod = objects.pod(name, f"{cpu}m", priority=priority, labels={"app": app}, **spec)
        if node is not None:
            pod["spec"]["nodeName"] = f"n{node}"
            used[node] += cpu
        items.append(pod)

    for j in range(draw(st.integers(1, count - 1))):
        cpu = draw(st.sampled_from([250, 500]))
        node = draw(st.sampled_from([None, *range(count)]))
        if node is not None and (
            used[node] + cpu > 2000
            or (members[node] >= limit and not over)
            or (kind == "spread" and not has_key[node])  # kube-scheduler never put it there
        ):
            node = None
        add(f"g{j}", "g", cpu, 10, node, **rule)
        if node is not None and draw(st.integers(0, 5)) == 0:  # on its way out
            items[-1]["metadata"]["deletionTimestamp"] = "2026-12-07T00:00:00Z"
        if kind == "host-port":
            items[-1]["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
        if node is not None:
            members[node] += 1
    for j in range(draw(st.integers(0, 3 * count))):
        cpu = draw(st.sampled_from([500, 1000, 1500]))
        node = draw(st.sampled_from([None, *range(count)]))
        if node is not None and used[node] + cpu > 2000:
            node = None
        add(f"f{j}", "a", cpu, draw(st.sampled_from([0, 0, 20])), node)
    return items + maybe_budget(draw, 2)


def newcomer_justifying_an_eviction() -> list[dict[str, Any]]:
    """Found by the test below in CI (2026-12-05): the search evicts p6 from n2 for the
    newcomer p2 and moves p0 there; a later ejection pass moved p2 aside to n0 to make room
    for p3, leaving p6's eviction without the higher-priority pod it was evicted for."""
    return [
        objects.node("n0", cpu="2", memory="4Gi", gpus=1),
        objects.node("n2", cpu="1", memory="5Gi", gpus=2),
        objects.pod("p0", cpu="500m", memory="3Gi", gpus=1, priority=10, on="n0"),
        objects.pod("p1", cpu="500m"),
        objects.pod("p2", cpu="500m", priority=10),
        objects.pod("p3", cpu="500m", memory="2Gi"),
        objects.pod("p4", cpu="500m"),
        objects.pod("p5", cpu="500m"),
        objects.pod("p6", cpu="500m", gpus=2, on="n2"),
    ]


def test_an_ejection_never_moves_aside_the_newcomer_an_eviction_was_for() -> None:
    from dunnage.solver.planner import _Search
    from dunnage.solver.problem import Problem

    snapshot = snapshot_from_objects(newcomer_justifying_an_eviction())
    problem = Problem.build(snapshot)
    search = _Search(problem, problem.initial_assignment())
    index = {pod.key: pi for pi, pod in enumerate(snapshot.pods)}
    names = [node.name for node in snapshot.nodes]
    n0, n2 = names.index("n0"), names.index("n2")
    # The state the neighbourhood search left: p6 evicted for p2, p0 moved in beside it.
    for name, node in [("p6", None), ("p2", n2), ("p0", n2), ("p1", n0), ("p4", n0), ("p5", n0)]:
        search._relocate(index[f"t/{name}"], node)
    assert (
        check_plan(snapshot, plan_dict(snapshot, dict(problem.to_names(search.assignment)))) == []
    )
    search.place_by_ejection(deadline=float("inf"))
    assert search.assignment[index["t/p2"]] == n2
    assert (
        check_plan(snapshot, plan_dict(snapshot, dict(problem.to_names(search.assignment)))) == []
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(newcomer_justifying_an_eviction())
@given(clusters())
def test_every_plan_passes_the_independent_checker(items: list[dict[str, Any]]) -> None:
    snapshot = snapshot_from_objects(items)
    plan = solve(snapshot, time_limit=0.5, workers=1)
    assert check_plan(snapshot, plan.to_dict()) == []
    assert lexicographic_key(plan.placed_after) >= lexicographic_key(plan.placed_before)
    if plan.status is not PlanStatus.IMPROVED:
        assert dict(plan.assignments) == {p.key: p.node_name for p in snapshot.pods}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(max_nodes=6, max_pods=14), st.integers(0, 3), st.integers(0, 3))
def test_a_plan_keeps_within_the_policys_move_and_eviction_limits(
    items: list[dict[str, Any]], max_moves: int, max_evictions: int
) -> None:
    """A PackingPolicy's maxMovesPerPlan and maxEvictionsPerPlan, through every phase."""
    snapshot = snapshot_from_objects(items)
    plan = solve(
        snapshot, time_limit=0.5, workers=1, max_moves=max_moves, max_evictions=max_evictions
    ).to_dict()
    assert check_plan(snapshot, plan) == []
    assert len(plan["moves"]) <= max_moves and len(plan["evictions"]) <= max_evictions


@settings(max_examples=160, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(clusters(max_nodes=6, max_pods=16), groups_under_pressure()),
    st.integers(0, 3),
    st.integers(0, 3),
)
def test_ejections_alone_give_a_plan_the_checker_accepts(
    items: list[dict[str, Any]], max_moves: int, max_evictions: int
) -> None:
    from dunnage.solver.planner import _Search
    from dunnage.solver.problem import Problem

    snapshot = snapshot_from_objects(items)
    problem = Problem.build(snapshot)
    search = _Search(
        problem, problem.initial_assignment(), max_moves=max_moves, max_evictions=max_evictions
    )
    placed, moved, evicted = search.place_by_ejection(deadline=float("inf"))
    assignments = dict(problem.to_names(search.assignment))
    plan = plan_dict(snapshot, assignments)
    # Capacities, predicates, budgets, and every eviction justified by a higher-priority
    # newcomer on the victim's node: the independent checker.
    assert check_plan(snapshot, plan) == []
    assert len(plan["evictions"]) == evicted <= max_evictions
    assert len(plan["moves"]) <= min(moved, max_moves)
    assert moved <= MAX_CLEARING_MOVES * placed  # a whole node cleared per placement at most
    assert len(plan["bindings"]) == placed
    before = lexicographic_key(snapshot.placed_by_priority())
    after = lexicographic_key(snapshot.placed_by_priority(assignments))
    assert after >= before and (after > before or placed == 0)
    assert search.used == problem.usage(search.assignment) == search.used_array.tolist()


@st.composite
def beside_movable_pods(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Pending pods under pod affinity (by zone or hostname) to cache pods of another
    workload that plans could move, on small nodes with fillers: moving a cache pod is
    often the cheapest way to make room, and it would leave a newcomer without its anchor
    (the plan keeps the one it counts on where it runs)."""
    count = draw(st.integers(2, 5))
    items = [
        objects.node(
            f"n{i}",
            cpu="2",
            labels={"kubernetes.io/hostname": f"n{i}", ZONE: draw(st.sampled_from(["za", "zb"]))},
        )
        for i in range(count)
    ]
    used = [0] * count

    def running(name: str, app: str, cpus: list[int], priority: int) -> None:
        cpu = draw(st.sampled_from(cpus))
        node = draw(st.integers(0, count - 1))
        if used[node] + cpu <= 2000:
            used[node] += cpu
            items.append(
                objects.pod(name, f"{cpu}m", priority=priority, labels={"app": app}, on=f"n{node}")
            )

    for j in range(draw(st.integers(1, 3))):
        running(f"cache{j}", "cache", [500, 1000], draw(st.sampled_from([10, 20])))
    for j in range(draw(st.integers(0, 2 * count))):
        running(f"f{j}", "f", [500, 1000, 1500], draw(st.sampled_from([0, 20])))
    for j in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(["kubernetes.io/hostname", ZONE]))
        term = {"topologyKey": key, "labelSelector": {"matchLabels": {"app": "cache"}}}
        affinity = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
        cpu = draw(st.sampled_from([500, 1000, 1500]))
        items.append(
            objects.pod(f"p{j}", f"{cpu}m", priority=10, labels={"app": "p"}, affinity=affinity)
        )
    return items + maybe_budget(draw, 2)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(beside_movable_pods())
def test_a_plan_keeps_the_pods_a_pod_affinity_counts_on(items: list[dict[str, Any]]) -> None:
    snapshot = snapshot_from_objects(items)
    plan = solve(snapshot, time_limit=0.5, workers=1)
    assert check_plan(snapshot, plan.to_dict()) == []


@st.composite
def packed_gpu_pools(draw: st.DrawFn) -> list[dict[str, Any]]:
    """GPU nodes filled with running pods of 1-3 GPUs (a PDB over some of them, maybe):
    moved at random, pods moved in often hold the room of pods moved out."""
    objects: list[dict[str, Any]] = []
    for i in range(draw(st.integers(2, 6))):
        gpus = draw(st.integers(2, 6))
        objects.append(
            {
                "kind": "Node",
                "metadata": {"name": f"n{i}", "labels": {"kubernetes.io/hostname": f"n{i}"}},
                "status": {
                    "allocatable": {
                        "cpu": "64",
                        "memory": "256Gi",
                        "pods": "20",
                        "nvidia.com/gpu": str(gpus),
                    }
                },
            }
        )
        while gpus > 0 and draw(st.booleans()):
            size = draw(st.integers(1, min(3, gpus)))
            gpus -= size
            objects.append(
                {
                    "kind": "Pod",
                    "metadata": {
                        "name": f"p{len(objects)}",
                        "namespace": "t",
                        "labels": {"app": draw(st.sampled_from(["a", "b"]))},
                    },
                    "spec": {
                        "nodeName": f"n{i}",
                        "priority": draw(st.integers(0, 2)) * 10,
                        "containers": [
                            {"name": "c", "resources": {"limits": {"nvidia.com/gpu": size}}}
                        ],
                    },
                }
            )
    return objects + maybe_budget(draw, 4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups_under_pressure())
def test_plans_keep_a_group_within_its_limit_per_node(items: list[dict[str, Any]]) -> None:
    snapshot = snapshot_from_objects(items)
    plan = solve(snapshot, time_limit=0.5, workers=1)
    assert check_plan(snapshot, plan.to_dict()) == []


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(clusters(max_nodes=6, max_pods=16), packed_gpu_pools()),
    st.lists(st.tuples(*[st.integers(0, 100)] * 3), max_size=20),
)
def test_making_way_home_keeps_the_placements_and_only_lowers_disruption(
    items: list[dict[str, Any]], relocations: list[tuple[int, int, int]]
) -> None:
    """Running pods moved at random (each to a node it may use, with room, within the
    budgets), each followed by another moved into the room it left; then sending disrupted
    pods home by moving guests on: the checker still accepts the plan, every level keeps its
    placements, and the pods disrupted fall by at least the pods sent home (a guest moved on
    stays one move)."""
    from dunnage.solver.planner import _Search
    from dunnage.solver.problem import Problem

    snapshot = snapshot_from_objects(items)
    problem = Problem.build(snapshot)
    search = _Search(problem, problem.initial_assignment())

    def movable(pod: int, node: int) -> bool:
        origin, now = problem.origin[pod], search.assignment[pod]
        if origin is None or now is None or node == now or node not in problem.eligible[pod]:
            return False
        budgets = search.limits(set()).budget_left
        if now == origin and any(budgets[b] <= 0 for b in problem.budgets_of_pod[pod]):
            return False
        return search.has_room(pod, node)

    for pick, node, guest in relocations:
        if not problem.num_pods:
            break
        # A pod moved away, and another moved into the room it left (a guest there).
        pod, node = pick % problem.num_pods, node % problem.num_nodes
        left = search.assignment[pod]
        if left is None or not movable(pod, node):
            continue
        search._relocate(pod, node)
        others = [(guest + k) % problem.num_pods for k in range(problem.num_pods)]
        moved_in = next((q for q in others if q != pod and movable(q, left)), None)
        if moved_in is not None:
            search._relocate(moved_in, left)
    before = dict(problem.to_names(search.assignment))
    assert check_plan(snapshot, plan_dict(snapshot, before)) == []  # valid by construction
    disrupted = len(search.disrupted())
    brought = search.make_way_home(deadline=float("inf"))
    after = dict(problem.to_names(search.assignment))
    assert check_plan(snapshot, plan_dict(snapshot, after)) == []
    assert snapshot.placed_by_priority(after) == snapshot.placed_by_priority(before)
    assert len(search.disrupted()) <= disrupted - brought
    assert search.used == problem.usage(search.assignment) == search.used_array.tolist()


def brute_force_best(snapshot: Snapshot) -> tuple[tuple[int, ...], int, int]:
    """Best (lexicographic placement, -evictions, -moves) over every assignment the checker
    accepts; the snapshot as it is scores (its placement, 0, 0)."""
    names = [n.name for n in snapshot.nodes]
    pods = snapshot.pods
    best = (lexicographic_key(snapshot.placed_by_priority()), 0, 0)
    for choice in itertools.product([None, *names], repeat=len(pods)):
        assignments = {p.key: node for p, node in zip(pods, choice, strict=True)}
        key = lexicographic_key(snapshot.placed_by_priority(assignments))
        if key < best[0]:
            continue
        evictions = sum(1 for p, n in zip(pods, choice, strict=True) if p.node_name and n is None)
        moves = sum(
            1
            for p, n in zip(pods, choice, strict=True)
            if p.node_name and n not in (None, p.node_name)
        )
        candidate = (key, -evictions, -moves)
        if candidate <= best:
            continue
        if not check_plan(snapshot, plan_dict(snapshot, assignments)):
            best = candidate
    return best


def plan_dict(snapshot: Snapshot, assignments: dict[str, str | None]) -> dict[str, Any]:
    from dunnage.solver.plan import Plan

    return Plan.from_assignments(
        snapshot, assignments, proven_optimal=False, solve_seconds=0.0
    ).to_dict()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(max_nodes=2, max_pods=5))
def test_proven_optimum_matches_brute_force(items: list[dict[str, Any]]) -> None:
    snapshot = snapshot_from_objects(items)
    plan = solve(snapshot, time_limit=2, workers=1)
    if plan.stats.get("decided_by") == "placement_proof":  # certifies the snapshot as it is
        assert not (plan.bindings or plan.moves or plan.evictions)
    if plan.proven_optimal:
        achieved = (lexicographic_key(plan.placed_after), -len(plan.evictions), -len(plan.moves))
        assert achieved == brute_force_best(snapshot)


@settings(max_examples=80, deadline=None)
@given(clusters(max_nodes=6, max_pods=8), st.sampled_from([1, 2, 4]))
def test_eligibility_by_node_shape_equals_the_predicates_node_by_node(
    items: list[dict[str, Any]], copies: int
) -> None:
    # Copies of each node that differ in name and hostname, every other one in GPU product too:
    # nodes share shapes unless some pod selects by what tells them apart, and then they must not.
    from dunnage.cluster.predicates import static_reason
    from dunnage.solver.attach_limits import attach_limits
    from dunnage.solver.problem import KEPT_OUT, PLANNED_ALONE, Problem
    from dunnage.solver.rules import rules_between_pods

    nodes = [o for o in items if o["kind"] == "Node"]
    twins = []
    for node in nodes:
        product = node["metadata"]["labels"]["nvidia.com/gpu.product"]
        for k in range(1, copies):
            name = f"{node['metadata']['name']}-copy{k}"
            labels = {
                "nvidia.com/gpu.product": product if k % 2 == 0 else _other(product),
                "kubernetes.io/hostname": name,
            }
            twins.append({**node, "metadata": {"name": name, "labels": labels}})
    snap = snapshot_from_objects([*items, *twins])
    problem = Problem.build(snap)
    rules = rules_between_pods(snap.pods, snap.nodes)
    names = [n.name for n in snap.nodes]
    attach = attach_limits(snap.pods, snap.nodes, problem.origin)
    for pi, pod in enumerate(snap.pods):
        where = names.index(pod.node_name) if pod.node_name is not None else None
        expected = tuple(
            ni
            for ni, n in enumerate(snap.nodes)
            if static_reason(pod, n) is None and (ni == where or not attach.refuses(pi, ni))
        )
        reason = problem.held.get(pi, "")
        held = (
            reason != "" and not reason.endswith(PLANNED_ALONE) and not reason.startswith(KEPT_OUT)
        )
        if pod.tied_to_node and where is not None:  # a mirror, a DaemonSet's pod
            expected = (where,)
        if pi in rules.kept_out and not held and pi not in rules.one_at_a_time:
            # out of the domains of other pods' anti-affinity, but it may stay where it is
            off = rules.kept_out[pi].nodes
            expected = tuple(ni for ni in expected if ni not in off or ni == where)
        if reason.endswith(PLANNED_ALONE):  # where its rules allow
            expected = tuple(ni for ni in expected if ni in rules.one_at_a_time[pi].nodes)
        elif held and expected not in ((), (where,)):  # kept where it runs, or left pending
            expected = () if where is None else (where,)
        assert problem.eligible[pi] == expected, pod.key
    selects_nodes = any(
        "kubernetes.io/hostname" in p.node_selector
        or any(t.fields for t in p.affinity_terms or ())
        or bool(p.volume_affinity)  # local volumes select by hostname
        for p in snap.pods
    ) or any(n.volume_limits or n.attached_volumes for n in snap.nodes)  # the twins have none
    if copies > 2 and not selects_nodes:
        assert len(set(problem.node_shape_id)) <= 2 * len(nodes) < len(snap.nodes)


def _other(product: str) -> str:
    return next(p for p in PRODUCTS if p != product)
