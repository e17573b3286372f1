"""Problem.build: node shapes and static eligibility."""

from __future__ import annotations

from typing import Any

import pytest

from dunnage.cluster import snapshot_from_objects
from dunnage.solver.problem import PLANNED_ALONE, Problem
from dunnage.solver.rules import NOT_MODELLED
from tests.csi_objects import (
    attachment,
    claims,
    csi_claim,
    csi_driver,
    csi_node,
    storage_class,
    unbound_claim,
)

ZONE = "topology.kubernetes.io/zone"


def node(name: str, **labels: str) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
    }


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "t"},
        "spec": {"containers": [{"name": "c"}], **spec},
    }


def required(**term: Any) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


def build(*pods: dict[str, Any]) -> tuple[Problem, dict[str, tuple[str, ...]]]:
    nodes = [node("a", gpu="A100"), node("b", gpu="H100"), node("c", gpu="H100")]
    snap = snapshot_from_objects([*nodes, *pods])
    problem = Problem.build(snap)
    eligible = {
        p.name: tuple(snap.nodes[i].name for i in problem.eligible[pi])
        for pi, p in enumerate(snap.pods)
    }
    return problem, eligible


def test_nodes_alike_but_for_labels_no_pod_selects_share_a_shape() -> None:
    problem, eligible = build(pod("any"))
    assert len(set(problem.node_shape_id)) == 1  # hostname and gpu labels differ; nobody asks
    assert eligible["any"] == ("a", "b", "c")


@pytest.mark.parametrize(
    ("spec", "expected", "shapes"),
    [
        ({"nodeSelector": {"kubernetes.io/hostname": "c"}}, ("c",), 3),
        (
            {
                "affinity": required(
                    matchFields=[{"key": "metadata.name", "operator": "In", "values": ["c"]}]
                )
            },
            ("c",),
            3,
        ),
        (
            {
                "affinity": required(
                    matchExpressions=[{"key": "gpu", "operator": "NotIn", "values": ["H100"]}]
                )
            },
            ("a",),
            2,
        ),
    ],
    ids=["hostname-selector", "match-fields", "affinity-key"],
)
def test_a_pod_selecting_what_tells_nodes_apart_splits_their_shape(
    spec: dict[str, Any], expected: tuple[str, ...], shapes: int
) -> None:
    problem, eligible = build(pod("picky", **spec), pod("any"))
    assert len(set(problem.node_shape_id)) == shapes
    assert eligible["picky"] == expected
    assert eligible["any"] == ("a", "b", "c")


def _anti(app: str, key: str = "kubernetes.io/hostname", **term: Any) -> dict[str, Any]:
    return {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": key, "labelSelector": {"matchLabels": {"app": app}}, **term}
            ]
        }
    }


def _in(namespace: str, name: str, app: str, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c"}], **spec},
    }


def test_pods_with_rules_between_pods_stay_where_they_are_or_are_left_pending() -> None:
    port = {"containers": [{"name": "c", "ports": [{"containerPort": 1, "hostPort": 9}]}]}
    problem, eligible = build(
        _in("t", "web-1", "web", nodeName="a", affinity=_anti("web")),
        _in("t", "web-2", "web", affinity=_anti("web")),
        _in("t", "stray", "web"),  # selected by web-1's term: kept off web-1's node
        _in("t", "stray-running", "web", nodeName="b"),
        _in("other", "elsewhere", "web"),  # another namespace: the term does not select it
        _in("t", "ported", "x", nodeName="c", **port),
        _in("t", "sole", "x", nodeName="c", nodeSelector={"kubernetes.io/hostname": "c"}, **port),
    )
    assert eligible == {
        "web-1": ("a",),
        "web-2": (),
        "stray": ("b", "c"),
        "stray-running": ("b", "c"),
        "elsewhere": ("a", "b", "c"),
        "ported": ("c",),
        "sole": ("c",),
    }
    names = [p.name for p in problem.snapshot.pods]
    held = {names[pi]: why for pi, why in problem.held.items()}
    assert held == {
        "web-1": f"required pod anti-affinity ({NOT_MODELLED})",
        "web-2": f"required pod anti-affinity ({NOT_MODELLED})",
        "ported": f"host port 9/TCP ({NOT_MODELLED})",
        # "sole" could run nowhere else anyway: it restricts nothing.
    }
    reasons = {names[pi]: why for pi, why in problem.unplaceable.items()}
    assert reasons["web-2"] == (
        "left to kube-scheduler: required pod anti-affinity "
        "(the planner does not model this rule between pods)"
    )


def _namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def test_a_namespace_selector_is_read_as_every_namespace() -> None:
    """Without the pods' Namespaces in the snapshot, a namespace selector is read as every
    namespace (for anti-affinity); with them, it selects the namespaces whose labels match."""
    team = {"matchLabels": {"team": "ml"}}
    pods = [
        _in("t", "web-1", "web", nodeName="a", affinity=_anti("web", namespaceSelector=team)),
        _in("other", "elsewhere", "web"),
        _in("ml", "teammate", "web"),
        _in("t", "pending-owner", "db", affinity=_anti("db", namespaceSelector={})),
        _in("other", "db-1", "db"),  # only a running pod's term keeps others away
    ]
    _, eligible = build(*pods)
    assert eligible["elsewhere"] == eligible["teammate"] == ("b", "c")
    assert eligible["db-1"] == ("a", "b", "c")
    namespaces = [_namespace("t"), _namespace("other"), _namespace("ml", team="ml")]
    _, eligible = build(*pods, *namespaces)
    assert eligible["elsewhere"] == ("a", "b", "c") and eligible["teammate"] == ("b", "c")
    # A Namespace missing (the snapshot is partial): read as before.
    _, eligible = build(*pods, *namespaces[1:])
    assert eligible["elsewhere"] == ("b", "c")


def test_one_per_node_groups_become_a_unit_of_every_node() -> None:
    """A workload's own hostname anti-affinity and a host port on every address: one unit of
    a resource of their own per node, asked for by each pod of the group; nothing held."""
    port = {"containers": [{"name": "c", "ports": [{"containerPort": 1, "hostPort": 9}]}]}
    problem, eligible = build(
        _in("t", "web-1", "web", nodeName="a", affinity=_anti("web")),
        _in("t", "web-2", "web", affinity=_anti("web")),
        _in("t", "exporter-1", "x", nodeName="a", **port),
        _in("t", "exporter-2", "x", nodeName="b", **port),
        _in("t", "other", "y"),
    )
    assert problem.held == {} and problem.unplaceable == {}
    assert eligible["web-2"] == ("a", "b", "c") and eligible["exporter-1"] == ("a", "b", "c")
    real = problem.real_resources
    groups = problem.resources[real:]
    assert groups == (
        "dunnage.io/per-node/anti-affinity-0-t",
        "dunnage.io/per-node/host-port-TCP-9",
    )
    assert all(cap[real:] == (1, 1) for cap in problem.capacity)
    assert [d[real:] for d in problem.demand] == [(1, 0), (1, 0), (0, 1), (0, 1), (0, 0)]


def _ported(name: str, node: str | None = None, host_ip: str = "") -> dict[str, Any]:
    port = {"containerPort": 1, "hostPort": 9, **({"hostIP": host_ip} if host_ip else {})}
    spec = {"containers": [{"name": "c", "ports": [port]}], **({"nodeName": node} if node else {})}
    return _in("t", name, "x", **spec)


def test_groups_one_unit_per_node_cannot_hold_are_not_modelled_per_node() -> None:
    # Two nodes share a hostname: a domain spans both, so one unit per node is too little.
    # web-2 is planned alone of its group instead, on the one domain without a web pod.
    nodes = [node("a"), node("b"), node("c")]
    nodes[1]["metadata"]["labels"]["kubernetes.io/hostname"] = "a"
    pods = [
        _in("t", "web-1", "web", nodeName="a", affinity=_anti("web")),
        _in("t", "web-2", "web", affinity=_anti("web")),
        _ported("exporter-1", "a"),
        _ported("exporter-2"),
    ]
    problem = Problem.build(snapshot_from_objects([*nodes, *pods]))
    assert problem.resources[problem.real_resources :] == ("dunnage.io/per-node/host-port-TCP-9",)
    assert problem.eligible[1] == (2,) and 1 not in problem.unplaceable
    assert problem.held[1].startswith("required pod anti-affinity: planned alone of its group")
    # A port on one address does not clash with the same port on another.
    pods[-1] = _ported("exporter-2", host_ip="10.0.0.1")
    problem = Problem.build(snapshot_from_objects([node("a"), node("b"), *pods]))
    assert problem.resources[problem.real_resources :] == ("dunnage.io/per-node/anti-affinity-0-t",)
    assert problem.unplaceable[3].startswith("left to kube-scheduler: host port 9/TCP")
    ported = f"host port 9/TCP ({NOT_MODELLED})"
    assert problem.held == {2: ported, 3: ported}


def test_at_most_max_groups_are_modelled_those_with_pods_to_place_first() -> None:
    from dunnage.solver.rules import MAX_GROUPS

    workloads = [
        _in("t", f"w{i}", f"w{i}", priority=i, affinity=_anti(f"w{i}"))
        for i in range(MAX_GROUPS + 2)
    ]
    running = _in("t", "r-1", "r", nodeName="a", affinity=_anti("r"))  # nothing to place
    problem, eligible = build(*workloads, running)
    assert len(problem.resources) - problem.real_resources == MAX_GROUPS
    # The two lowest-priority workloads' pods and the running group's are not modelled:
    # the pending ones are planned alone of their groups (anywhere: no replica runs yet).
    assert {problem.snapshot.pods[pi].name for pi in problem.held} == {"w0", "w1", "r-1"}
    assert problem.held[0].endswith(PLANNED_ALONE) and problem.held[1].endswith(PLANNED_ALONE)
    assert eligible["w0"] == eligible["w1"] == eligible["w2"] == ("a", "b", "c")
    assert eligible["r-1"] == ("a",)


def _spread(app: str, key: str = "kubernetes.io/hostname", skew: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "maxSkew": skew,
            "topologyKey": key,
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": app}},
        }
    ]


def test_spread_over_fewer_pods_than_nodes_is_a_per_node_limit_of_max_skew() -> None:
    """Two replicas on three nodes: some node keeps none whatever the plan, so the skew's
    minimum is 0 and maxSkew is a limit per node. Three on three: the minimum can rise
    above 0, which a limit per node cannot say, so the group is held."""
    spread = _spread("s", skew=2)
    problem, _ = build(
        _in("t", "s-1", "s", nodeName="a", topologySpreadConstraints=spread),
        _in("t", "s-2", "s", topologySpreadConstraints=spread),
    )
    real = problem.real_resources
    assert problem.resources[real:] == ("dunnage.io/per-node/spread-0-t",)
    assert [c[real:] for c in problem.capacity] == [(2,), (2,), (2,)]
    assert problem.held == {}
    problem, eligible = build(
        *(_in("t", f"s-{i}", "s", topologySpreadConstraints=spread) for i in range(3))
    )
    assert problem.resources[problem.real_resources :] == ()
    # Not modelled per node: one pending pod of the group planned at a time, the others held.
    assert eligible == {"s-0": ("a", "b", "c"), "s-1": (), "s-2": ()}
    problem, eligible = build(
        _in("t", "z-1", "z", topologySpreadConstraints=_spread("z", "topology.kubernetes.io/zone"))
    )
    assert eligible == {"z-1": ()}  # kube-scheduler takes it on no node without a zone
    assert problem.unplaceable[0] == (
        "a topology spread constraint (DoNotSchedule): no node takes it now"
    )


def test_a_node_without_the_spreads_key_takes_none_of_its_pods() -> None:
    """kube-scheduler refuses a spread's pod on a node without the topology key: that node
    gets a limit of 0, and so is no longer interchangeable with the others."""
    nodes = [node(name) for name in "abcd"]
    del nodes[3]["metadata"]["labels"]["kubernetes.io/hostname"]
    spread = _spread("s")
    pods = [
        _in("t", "s-1", "s", topologySpreadConstraints=spread),
        _in("t", "s-2", "s", topologySpreadConstraints=spread),
    ]
    problem = Problem.build(snapshot_from_objects([*nodes, *pods]))
    assert [c[problem.real_resources :] for c in problem.capacity] == [(1,), (1,), (1,), (0,)]
    assert len(set(problem.node_shape_id)) == 2


def _zone_nodes(*zones: str | None) -> list[dict[str, Any]]:
    """Nodes n0, n1, ... in the given zones (None: no zone label)."""
    out = []
    for i, zone in enumerate(zones):
        n = node(f"n{i}")
        if zone is not None:
            n["metadata"]["labels"][ZONE] = zone
        out.append(n)
    return out


def _alone(*items: dict[str, Any]) -> dict[str, tuple[str, ...] | None]:
    """Per pending pod planned alone of its group, the nodes it may go to; None for the
    pending pods held."""
    snap = snapshot_from_objects(list(items))
    problem = Problem.build(snap)
    return {
        p.name: tuple(snap.nodes[n].name for n in problem.eligible[pi])
        if problem.held.get(pi, "").endswith(PLANNED_ALONE)
        else None
        for pi, p in enumerate(snap.pods)
        if p.node_name is None
    }


def test_one_pending_pod_under_zone_anti_affinity_goes_where_none_of_its_group_runs() -> None:
    """Replicas kept one per zone: r-1 runs in z1. r-2 (the higher of the pending two) may
    go to z2 or to the node without a zone (no domain, no conflict); r-3 waits its turn."""
    zone = _anti("r", ZONE)
    assert _alone(
        *_zone_nodes("z1", "z1", "z2", None),
        _in("t", "r-1", "r", nodeName="n0", affinity=zone),
        _in("t", "r-2", "r", affinity=zone, priority=5),
        _in("t", "r-3", "r", affinity=zone),
    ) == {"r-2": ("n2", "n3"), "r-3": None}
    # A running pod of another workload whose anti-affinity selects r's pods keeps them out of
    # its zone too (its term selects others than its own pods: not a group planned, held).
    in_r = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["r"]}]}
    term = {"topologyKey": ZONE, "labelSelector": in_r}  # r's, but not the same term
    guard = _in(
        "t",
        "guard",
        "g",
        nodeName="n2",
        affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}},
    )
    assert _alone(
        *_zone_nodes("z1", "z1", "z2", None),
        _in("t", "r-1", "r", nodeName="n0", affinity=zone),
        _in("t", "r-2", "r", affinity=zone),
        guard,
    ) == {"r-2": ("n3",)}


def test_one_pending_pod_spread_over_zones_keeps_the_skew_whatever_the_plan_evicts() -> None:
    """One replica runs in each zone, so the pending one may go to any (skew 1). But if a
    pending pod that may evict r-1 (lower) waits, z1 may lose its replica, and then a
    replica in z2 or z3 would be 2 above z1: the pod may go nowhere now. A spread counts
    only the domains the pod's node affinity admits (and needs the key on its node), and
    below minDomains domains the smallest count is 0."""
    spread = {"topologySpreadConstraints": _spread("r", ZONE)}
    nodes = _zone_nodes("z1", "z2", "z3", None)
    running = [
        _in("t", "r-1", "r", nodeName="n0", priority=1, **spread),
        _in("t", "r-2", "r", nodeName="n1", priority=9, **spread),
        _in("t", "r-3", "r", nodeName="n2", priority=9, **spread),
    ]
    pending = _in("t", "r-4", "r", priority=9, **spread)
    assert _alone(*nodes, *running, pending) == {"r-4": ("n0", "n1", "n2")}
    evictor = _in("t", "vip", "v", priority=5)
    assert _alone(*nodes, *running, pending, evictor)["r-4"] == ()
    leaving = [dict(r, metadata=dict(r["metadata"])) for r in running]
    leaving[1]["metadata"]["deletionTimestamp"] = "2026-12-06T20:00:00Z"  # r-2 on its way out
    # kube-scheduler counts z2 as none already: only z2 takes the next one.
    assert _alone(*nodes, *leaving, pending)["r-4"] == ("n1",)
    # r-1 gone: z1 holds none, so only z1 takes the next one...
    assert _alone(*nodes, *running[1:], pending) == {"r-4": ("n0",)}
    # ...unless the pod's node affinity leaves z1 out of the domains counted.
    not_z1 = required(matchExpressions=[{"key": ZONE, "operator": "NotIn", "values": ["z1"]}])
    only_z2_z3 = _in("t", "r-4", "r", priority=9, affinity=not_z1, **spread)
    assert _alone(*nodes, *running[1:], only_z2_z3) == {"r-4": ("n1", "n2")}
    # Fewer domains than minDomains: the smallest count is 0 (not 1, as the zones have), so
    # no zone takes the next replica.
    two = [_in("t", f"r-{i}", "r", nodeName=f"n{i}", **spread) for i in range(2)]
    assert _alone(*_zone_nodes("z1", "z2"), *two, pending) == {"r-4": ("n0", "n1")}
    spread["topologySpreadConstraints"][0]["minDomains"] = 3
    two = [_in("t", f"r-{i}", "r", nodeName=f"n{i}", **spread) for i in range(2)]
    pending = _in("t", "r-4", "r", priority=9, **spread)
    assert _alone(*_zone_nodes("z1", "z2"), *two, pending) == {"r-4": ()}


def test_a_spread_over_zones_counts_the_domains_its_node_inclusion_policies_admit() -> None:
    """nodeTaintsPolicy Honor: z3's only node is tainted against the pod, so z3 is not
    counted and the smallest count is 1 (Ignore, the default: 0, and only z3, where the
    pod cannot go, would take it). nodeAffinityPolicy Ignore: z1, which the pod's node
    affinity rules out, is counted with none (Honor, the default: not counted)."""
    nodes = _zone_nodes("z1", "z2", "z3")
    nodes[2]["spec"] = {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}

    def replicas(policy: dict[str, str], **spec: Any) -> list[dict[str, Any]]:
        spread = {"topologySpreadConstraints": [_spread("r", ZONE)[0] | policy]}
        return [
            _in("t", "r-1", "r", nodeName="n0", priority=9, **spread),
            _in("t", "r-2", "r", nodeName="n1", priority=9, **spread),
            _in("t", "r-3", "r", priority=9, **spread, **spec),
        ]

    assert _alone(*nodes, *replicas({})) == {"r-3": ()}
    assert _alone(*nodes, *replicas({"nodeTaintsPolicy": "Honor"})) == {"r-3": ("n0", "n1")}
    nodes = _zone_nodes("z1", "z2", "z3")
    not_z1 = required(matchExpressions=[{"key": ZONE, "operator": "NotIn", "values": ["z1"]}])
    moved = [  # r-1 and r-2 in z2 and z3
        dict(r, spec={**r["spec"], "nodeName": f"n{i + 1}"}) if i < 2 else r
        for i, r in enumerate(replicas({}, affinity=not_z1))
    ]
    assert _alone(*nodes, *moved) == {"r-3": ("n1", "n2")}
    ignore = replicas({"nodeAffinityPolicy": "Ignore"}, affinity=not_z1)
    moved = [
        dict(r, spec={**r["spec"], "nodeName": f"n{i + 1}"}) if i < 2 else r
        for i, r in enumerate(ignore)
    ]
    assert _alone(*nodes, *moved) == {"r-3": ()}


def _together(app: str, **term: Any) -> dict[str, Any]:
    """Required pod affinity: in the zone of a pod of ``app``."""
    selects = {"topologyKey": ZONE, "labelSelector": {"matchLabels": {"app": app}}, **term}
    return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [selects]}}


def test_one_pending_pod_under_zone_pod_affinity_goes_beside_a_pod_that_stays() -> None:
    """Replicas kept in one zone: the first of the group (none runs) may go to any node
    with a zone, the next waits its turn; once r-1 runs in z1 (held: its rule is not
    modelled, so no plan moves it), the next goes to z1, unless a pending pod that may
    evict r-1 waits (then r-1 may leave) or r-1 is on its way out."""
    zone = _together("r")
    nodes = _zone_nodes("z1", "z1", "z2", None)
    assert _alone(
        *nodes, _in("t", "r-1", "r", affinity=zone, priority=5), _in("t", "r-2", "r", affinity=zone)
    ) == {"r-1": ("n0", "n1", "n2"), "r-2": None}
    running = _in("t", "r-1", "r", nodeName="n0", affinity=zone)
    pending = _in("t", "r-2", "r", affinity=zone)
    assert _alone(*nodes, running, pending) == {"r-2": ("n0", "n1")}
    evictor = _in("t", "vip", "v", priority=5)
    assert _alone(*nodes, running, pending, evictor) == {"r-2": None, "vip": None}
    leaving = dict(running, metadata={**running["metadata"], "deletionTimestamp": "2026-12-06"})
    assert _alone(*nodes, leaving, pending) == {"r-2": None}


def test_pod_affinity_to_another_workloads_pod_pins_it_unless_one_never_moves() -> None:
    """Affinity to another workload's pod: a plain pod may be moved by a plan, so the plan
    keeps it where it runs, neither moved nor evicted (pinned, and it says why), and the
    pending pod goes beside it; a DaemonSet's pod never moves, so nothing is pinned. One a
    pending pod may evict anchors nothing (held, and it says why). Of several, the highest
    whose domain admits the pod is pinned. A pending pod the term selects that is not of the
    group may be placed first: no first-pod rule then. A namespace selector that may not
    select the pod's namespace anchors nothing."""
    nodes = _zone_nodes("z1", "z1", "z2", None)
    plain = _in("t", "cache", "cache", nodeName="n2")
    daemon = dict(
        plain,
        metadata={
            **plain["metadata"],
            "ownerReferences": [{"kind": "DaemonSet", "name": "cache", "controller": True}],
        },
    )
    pending = _in("t", "p", "p", affinity=_together("cache"))
    assert _alone(*nodes, plain, pending) == {"p": ("n2",)}
    problem = Problem.build(snapshot_from_objects([*nodes, plain, pending]))
    assert problem.eligible[0] == (2,)
    assert problem.held[0] == (
        "kept where it runs, neither moved nor evicted, for the pod affinity of t/p"
    )
    evictor = _in("t", "vip", "v", priority=5)
    problem = Problem.build(snapshot_from_objects([*nodes, plain, pending, evictor]))
    assert problem.unplaceable[1] == (
        "left to kube-scheduler: required pod affinity (no pod its pod affinity surely "
        "selects runs, and may stay, on a node with its keys)"
    )
    assert 0 not in problem.held
    in_z1 = _in("t", "cache-2", "cache", nodeName="n0", priority=9)
    assert _alone(*nodes, plain, in_z1, pending) == {"p": ("n0", "n1")}
    not_z1 = required(matchExpressions=[{"key": ZONE, "operator": "NotIn", "values": ["z1"]}])
    elsewhere = _in("t", "p", "p", affinity={**not_z1, **_together("cache")})
    problem = Problem.build(snapshot_from_objects([*nodes, plain, in_z1, elsewhere]))
    assert problem.eligible[2] == (2,) and problem.held[0].endswith("pod affinity of t/p")
    assert 1 not in problem.held
    assert _alone(*nodes, daemon, pending) == {"p": ("n2",)}
    other_ns = dict(daemon, metadata={**daemon["metadata"], "namespace": "u"})
    some_ns = _in(
        "t", "p", "p", affinity=_together("cache", namespaceSelector={"matchLabels": {"team": "x"}})
    )
    every_ns = _in("t", "p", "p", affinity=_together("cache", namespaceSelector={}))
    assert _alone(*nodes, other_ns, some_ns) == {"p": None}
    assert _alone(*nodes, other_ns, every_ns) == {"p": ("n2",)}
    self_only = _in("t", "s-1", "s", affinity=_together("s"))
    stranger = _in("t", "s-free", "s")  # selected, not of the group: may be placed first
    assert _alone(*nodes, self_only, stranger) == {"s-1": None, "s-free": None}


def test_a_pod_selected_by_a_pod_on_a_node_the_snapshot_lacks_is_held() -> None:
    """web-1 runs on a node the snapshot does not have: its domain is unknown, so the pods
    its anti-affinity selects are held, not kept out of some nodes."""
    problem, eligible = build(
        _in("t", "web-1", "web", nodeName="gone", affinity=_anti("web", ZONE)),
        _in("t", "stray", "web"),
    )
    assert eligible["stray"] == ()
    assert problem.held[1] == f"the required pod anti-affinity of t/web-1 ({NOT_MODELLED})"


def test_attach_limits_are_a_resource_per_limited_driver() -> None:
    """disk.csi may attach 2 volumes to a and b, 1 to c (and other.csi is limited nowhere).
    a has vol-1 (p1's) and vol-9 (a VolumeAttachment, no pod): no room; b has room for 2;
    c is over its count (p2's vol-2 and p3's vol-3; the count was lowered): its pods stay,
    no other volume of the driver comes in. new (vol-4) may go to b only (or to a node
    without a CSINode, d); plain (no volume) anywhere. p4 and p5 share vol-5: held, and
    vol-5 counts where it is attached (on b, beside p4)."""
    objects = [
        node("a"),
        node("b"),
        node("c"),
        node("d"),
        csi_node("a", disk_csi=2),
        csi_node("b", disk_csi=3),
        csi_node("c", disk_csi=1),
        attachment("vol-9", "a"),
        *csi_claim("c9", "vol-9"),
        pod("p1", nodeName="a", **claims("c1")),
        pod("p2", nodeName="c", **claims("c2")),
        pod("p3", nodeName="c", **claims("c3")),
        pod("p4", nodeName="b", **claims("c5")),
        pod("p5", **claims("c5")),
        pod("new", **claims("c4", "o4")),
        pod("plain"),
    ]
    for i in range(1, 6):
        objects += csi_claim(f"c{i}", f"vol-{i}")
    objects += csi_claim("o4", "o-4", driver="other.csi")
    snap = snapshot_from_objects(objects)
    problem = Problem.build(snap)
    assert problem.resources[-1:] == ("dunnage.io/attach/disk.csi",)
    index = {p.name: pi for pi, p in enumerate(snap.pods)}
    room = [c[-1] for c in problem.capacity]
    assert room[:3] == [1, 2, 2]  # a: 2 - vol-9; b: 3 - vol-5 (shared); c: over, keeps 2
    units = {n: problem.demand[index[n]][-1] for n in ("p1", "p2", "new", "p4", "plain")}
    assert units == {"p1": 1, "p2": 1, "new": 1, "p4": 0, "plain": 0}
    names = [n.name for n in snap.nodes]
    assert [names[n] for n in problem.eligible[index["new"]]] == ["a", "b", "d"]
    assert [names[n] for n in problem.eligible[index["plain"]]] == ["a", "b", "c", "d"]
    assert [names[n] for n in problem.eligible[index["p2"]]] == ["a", "b", "c", "d"]
    assert problem.held[index["p4"]] == (
        "CSI volume disk.csi/vol-5 (its driver's attach limit counts it once per node) "
        "shared with pod p5"
    )
    assert index["p5"] in problem.unplaceable


def test_a_claim_to_provision_filters_by_its_class_and_holds_the_pods_sharing_it() -> None:
    """new's claim is provisioned where it goes: its class allows zone z2 only (n1, n2), and
    it is a new volume of disk.csi, which n2 may attach none of. a and b share one claim to
    provision: held (kube-scheduler provisions it where the first goes)."""
    zone = {"matchLabelExpressions": [{"key": ZONE, "values": ["z2"]}]}
    objects = [
        *_zone_nodes("z1", "z2", "z2"),
        csi_node("n2", disk_csi=0),
        storage_class("fast", allowedTopologies=[zone]),
        csi_driver(),
        unbound_claim("scratch", "fast"),
        unbound_claim("shared", "fast"),
        pod("new", **claims("scratch")),
        pod("a", **claims("shared")),
        pod("b", **claims("shared")),
    ]
    snap = snapshot_from_objects(objects)
    problem = Problem.build(snap)
    assert problem.eligible[0] == (1, 2)
    assert problem.demand[0][-1] == 1 and [c[-1] for c in problem.capacity] == [1, 1, 0]
    assert problem.held[1].endswith(
        "volume claim shared (not bound yet: provisioned where the first of its pods goes) "
        "shared with pod b"
    )
    assert problem.eligible[1] == problem.eligible[2] == ()
