"""Dynamic resource allocation read as node resources (dunnage.cluster.devices), and plans
over them checked by the independent checker."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunnage.cluster import snapshot_from_objects, snapshot_to_list
from dunnage.cluster.devices import CLASS_RESOURCE_PREFIX, class_resource
from dunnage.errors import InputError
from dunnage.scheduler_extender.fallback import _asks_steerable, plannable
from dunnage.solver.planner import solve
from tests.dra_objects import (
    device_class,
    dra_pod,
    extended_pod,
    naming_pod,
    node_slice,
    on_node,
    partitioned_slices,
    shared_claim,
    taint_rule,
)
from tests.json_fuzz import replace_a_field
from tests.plan_checker import check_plan
from tests.test_planner import gpu_node

GPU = CLASS_RESOURCE_PREFIX + "gpu"
H100 = 'device.attributes["gpu.example.com"].model == "h100"'


def _cluster(*extra: Any, models: tuple[list[str], ...] = (["a100"] * 4, ["a100"] * 4)) -> list:
    objects: list[Any] = [device_class()]
    for i, node_models in enumerate(models):
        name = "ab"[i]
        objects += [gpu_node(name, 0), node_slice(name, node_models)]
    for item in extra:
        objects += item if isinstance(item, list) else [item]
    return objects


def test_devices_are_offered_per_node_and_asked_per_pod() -> None:
    snap = snapshot_from_objects(_cluster(dra_pod("x", 2, node="a"), dra_pod("big", 4)))
    assert snap.node_by_name["a"].allocatable[GPU] == 4  # two free, two the plan may move
    assert snap.node_by_name["b"].allocatable[GPU] == 4
    assert snap.pod_by_key["ml/x"].requests[GPU] == 2
    assert snap.pod_by_key["ml/big"].requests[GPU] == 4
    assert snap.pod_by_key["ml/big"].resource_claims == ()
    assert class_resource(GPU) == GPU and class_resource("nvidia.com/gpu") is None


def test_a_plan_moves_a_dra_pod_to_make_room_and_the_checker_agrees() -> None:
    objects = _cluster(
        dra_pod("x", 2, node="a"), dra_pod("y", 2, node="b"), dra_pod("big", 4, priority=100)
    )
    snap = snapshot_from_objects(objects)
    plan = solve(snap, time_limit=5)
    assert len(plan.moves) == 1 and plan.assignments["ml/big"] in ("a", "b")
    assert check_plan(snap, plan.to_dict()) == []


def test_a_request_narrowing_its_class_is_a_resource_of_its_own() -> None:
    objects = _cluster(
        dra_pod("big", 2, selectors=(H100,)), models=(["a100"] * 4, ["h100", "h100", "a100"])
    )
    snap = snapshot_from_objects(objects)
    (name,) = snap.pod_by_key["ml/big"].requests.keys() - {"cpu", "pods"}
    assert name.startswith(GPU + "~") and class_resource(name) == GPU
    assert name not in snap.node_by_name["a"].allocatable
    assert snap.node_by_name["b"].allocatable[name] == 2


def test_overlapping_requests_hold_their_pods() -> None:
    objects = _cluster(
        dra_pod("x", 1, node="a"),
        dra_pod("big", 2, selectors=(H100,)),
        models=(["a100"] * 4, ["h100"] * 4),  # the H100s are some of the class's devices
    )
    snap = snapshot_from_objects(objects)
    for key in ("ml/x", "ml/big"):
        assert snap.pod_by_key[key].resource_claims == ("gpus",)
        assert "overlap" in snap.pod_by_key[key].resource_claims_why[0]
    plan = solve(snap, time_limit=1)
    assert plan.moves == () and plan.assignments["ml/big"] is None


def test_the_same_devices_under_two_classes_are_one_resource() -> None:
    both = device_class("everything")  # the same selector: the same devices
    snap = snapshot_from_objects(
        [*_cluster(dra_pod("x", 1, node="a")), both, *dra_pod("y", 1, device_class="everything")]
    )
    one = CLASS_RESOURCE_PREFIX + "everything"  # the first name of the two
    assert snap.pod_by_key["ml/x"].requests[one] == snap.pod_by_key["ml/y"].requests[one] == 1
    assert (
        snap.node_by_name["a"].allocatable[one] == 4
        and GPU not in snap.node_by_name["a"].allocatable
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"device_class": "nic"}, "DeviceClass nic is not in the snapshot"),
        ({"selectors": ("device.attributes['x.com'].y == 1",)}, "fails on device"),
        ({"selectors": ("device.driver ==",)}, "not understood"),
    ],
)
def test_claims_not_modelled_hold_their_pods_with_the_reason(change: dict, why: str) -> None:
    snap = snapshot_from_objects(_cluster(dra_pod("big", 4, **change)))
    pod = snap.pod_by_key["ml/big"]
    assert pod.resource_claims == ("gpus",) and why in pod.resource_claims_why[0]
    plan = solve(snap, time_limit=1)
    assert why in plan.unplaced_reasons["ml/big"]


def _cpu_pod(name: str, node: str, cpu: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ml", "uid": f"uid-{name}"}
    meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": "f", "controller": True}]
    spec = {
        "nodeName": node,
        "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}],
    }
    return {"kind": "Pod", "metadata": meta, "spec": spec}


def test_a_pod_sharing_an_allocated_claim_is_planned_where_its_devices_are() -> None:
    """Node a holds the claim's two GPUs (reserved for x) and is full of cpu; node b is empty.
    The pending y names the same claim: kube-scheduler takes it only on a, so the plan makes
    room there (moving the filler to b) instead of sending it to b; y asks no more GPUs."""
    objects = _cluster(
        shared_claim("shared", 2, node="a", reserved_for=("x",)),
        naming_pod("x", "shared", node="a", cpu="2"),
        _cpu_pod("filler", "a", "29"),
        naming_pod("y", "shared", priority=100, cpu="4"),
    )
    snap = snapshot_from_objects(objects)
    y = snap.pod_by_key["ml/y"]
    assert y.resource_claims == () and GPU not in y.requests and len(y.claim_affinity) == 1
    plan = solve(snap, time_limit=5)
    assert plan.assignments["ml/y"] == "a" and plan.assignments["ml/filler"] == "b"
    assert plan.evictions == ()
    assert check_plan(snap, plan.to_dict()) == []
    # The checker reads the claim's node selector: y on b is a violation.
    wrong = {**plan.to_dict(), "assignments": {**plan.to_dict()["assignments"], "ml/y": "b"}}
    assert any("resource claim" in problem for problem in check_plan(snap, wrong))
    # The live planner plans y where GPUs of a DeviceClass are steered (it asks them by a
    # claim), not where only a device plugin's are.
    assert "ml/y" in {p.key for p in plannable(snap, (GPU,)).pending}
    assert plannable(snap, ("nvidia.com/gpu",)).pending == ()
    # Written as a list and read again, y keeps its claim's node selector.
    again = snapshot_from_objects(snapshot_to_list(snap)["items"])
    assert again.pod_by_key["ml/y"].claim_affinity == y.claim_affinity


def test_a_claim_only_one_pending_pod_names_is_asked_as_its_own() -> None:
    snap = snapshot_from_objects(
        _cluster(shared_claim("solo", 3), naming_pod("y", "solo", priority=100))
    )
    y = snap.pod_by_key["ml/y"]
    assert y.requests[GPU] == 3 and y.resource_claims == () and y.claim_affinity == ()


def test_of_the_pods_naming_a_claim_not_allocated_the_first_asks_its_devices() -> None:
    """The highest priority first (then the first by name), but not one being deleted: the
    others follow it (Pod.follows)."""
    going = naming_pod("a-going", "both", priority=300)
    going["metadata"]["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    pods = [naming_pod(name, "both", priority=100) for name in ("c", "b")]
    snap = snapshot_from_objects(_cluster(shared_claim("both", 3), going, *pods))
    b, c = snap.pod_by_key["ml/b"], snap.pod_by_key["ml/c"]
    assert b.requests[GPU] == 3 and b.resource_claims == () and b.follows == ""
    assert GPU not in c.requests and c.resource_claims == ("gpus",) and c.follows == "ml/b"
    assert snap.pod_by_key["ml/a-going"].follows == "ml/b"
    assert b.requests["cpu"] == 2000  # its own and c's: c goes where b goes


def test_the_first_of_the_pods_sharing_a_claim_is_planned_where_its_followers_fit_too() -> None:
    """p asks the claim's 4 GPUs and 10 cpu, q follows it with 10 cpu. a has its 4 GPUs free
    but 12 cpu (a DaemonSet's pod has 20: never moved); b 4 GPUs, 2 of them x's, and all its
    cpu. p alone would fit on a, stranding q: the plan makes room on b, where both fit."""
    p = naming_pod("p", "both", priority=100, cpu="10")
    q = naming_pod("q", "both", priority=100, cpu="10")
    daemon = _cpu_pod("daemon", "a", "20")
    daemon["metadata"]["ownerReferences"][0]["kind"] = "DaemonSet"
    objects = _cluster(shared_claim("both", 4), daemon, dra_pod("x", 2, node="b"), p, q)
    snap = snapshot_from_objects(objects)
    assert snap.pod_by_key["ml/p"].requests["cpu"] == 20000
    plan = solve(snap, time_limit=5)
    assert plan.assignments["ml/p"] == "b"
    assert check_plan(snap, plan.to_dict()) == []
    # q's 10 cpu fit on b beside what the plan puts there (p's own 10, x's 1 if it stays).
    own = {"daemon": 20, "x": 1, "p": 10}
    assert sum(c for name, c in own.items() if plan.assignments[f"ml/{name}"] == "b") + 10 <= 32


@pytest.mark.parametrize(
    ("objects", "why"),
    [
        (
            [shared_claim("both", 1), naming_pod("z", "both", priority=200)],
            "ResourceClaim ml/both is named by 2 pods and not allocated yet: it is allocated "
            "where the first goes, planned first (ml/z)",
        ),
        (
            [shared_claim("full", 1, node="a", reserved_for=tuple(f"p{i}" for i in range(256)))],
            "ResourceClaim ml/full is reserved for 256 pods, the most Kubernetes allows",
        ),
        ([], "ResourceClaim ml/gone is not in the snapshot"),
    ],
)
def test_pods_that_cannot_use_a_claim_they_name_are_held_with_the_reason(
    objects: list[Any], why: str
) -> None:
    claim = objects[0]["metadata"]["name"] if objects else "gone"
    snap = snapshot_from_objects(_cluster(*objects, naming_pod("y", claim, priority=100)))
    y = snap.pod_by_key["ml/y"]
    assert y.resource_claims == ("gpus",) and y.resource_claims_why[0].startswith(why)
    assert why in solve(snap, time_limit=1).unplaced_reasons["ml/y"]


def test_a_running_pod_whose_shared_claim_is_on_another_node_is_held() -> None:
    claim = shared_claim("shared", 1, node="a", reserved_for=("x",))
    claim["status"]["allocation"].update(on_node("b"))
    snap = snapshot_from_objects(_cluster(claim, naming_pod("x", "shared", node="a")))
    x = snap.pod_by_key["ml/x"]
    assert x.resource_claims_why == ("ResourceClaim ml/shared has its devices on other nodes",)


def _alternatives(objects: list[Any], *first: dict[str, Any]) -> list[Any]:
    """``dra_pod``'s objects with its claim's request offering ``first`` (each a subrequest's
    fields), then one GPU, as alternatives (``firstAvailable``)."""
    claim = objects[1]
    alternatives = [{"name": f"alt-{i}", **fields} for i, fields in enumerate(first)]
    alternatives.append({"name": "one", "deviceClassName": "gpu", "count": 1})
    claim["spec"]["devices"]["requests"] = [{"name": "gpu", "firstAvailable": alternatives}]
    return objects


def test_a_pod_offering_alternatives_asks_its_first_pending_and_its_own_bound() -> None:
    """Four GPUs first, else one: kube-scheduler takes the four where they fit, so the plan
    makes room for four (a move) and the checker agrees. Bound, a pod asks the alternative it
    holds."""
    big = _alternatives(dra_pod("big", priority=100), {"deviceClassName": "gpu", "count": 4})
    objects = _cluster(dra_pod("x", 2, node="a"), dra_pod("y", 2, node="b"), big)
    snap = snapshot_from_objects(objects)
    assert snap.pod_by_key["ml/big"].requests[GPU] == 4
    assert snap.pod_by_key["ml/big"].resource_claims == ()
    plan = solve(snap, time_limit=5)
    assert len(plan.moves) == 1 and plan.assignments["ml/big"] in ("a", "b")
    assert check_plan(snap, plan.to_dict()) == []
    # Bound: it asks the alternative it holds; a later one than the first pins it to its node
    # (moved, it would get the first that fits there).
    four = {"deviceClassName": "gpu", "count": 4}
    later = _alternatives(dra_pod("z", 1, node="a"), four)
    later[1]["status"]["allocation"]["devices"]["results"][0]["request"] = "gpu/one"
    first = _alternatives(dra_pod("v", 4, node="b"), four)
    for result in first[1]["status"]["allocation"]["devices"]["results"]:
        result["request"] = "gpu/alt-0"
    snap = snapshot_from_objects(_cluster(later, first))
    z, v = snap.pod_by_key["ml/z"], snap.pod_by_key["ml/v"]
    assert z.resource_claims == v.resource_claims == ()
    assert z.requests[GPU] == 1 and v.requests[GPU] == 4
    assert len(z.claim_affinity) == 1 and _admitting(snap, z) == ["a"]
    assert v.claim_affinity == ()
    assert check_plan(snap, solve(snap, time_limit=1).to_dict()) == []
    measuring = {"deviceClassName": "gpu", "capacity": {"requests": {"memory": "10Gi"}}}
    w = snapshot_from_objects(_cluster(_alternatives(dra_pod("w"), measuring))).pod_by_key["ml/w"]
    assert w.resource_claims_why == ("spec.devices.requests[0].firstAvailable[0].capacity is set",)


def test_a_pending_pod_asking_all_devices_is_planned_on_nodes_with_as_many() -> None:
    """allocationMode All: kube-scheduler allocates every matching device of a node or none.
    a and b have 4 GPUs (2 of each taken), c has 2, d has 4 with one tainted: the pod asks 4
    on a or b, and the plan clears one of them (a move)."""
    every = dra_pod("big", priority=100)
    every[1]["spec"]["devices"]["requests"][0]["exactly"] = {
        "deviceClassName": "gpu",
        "allocationMode": "All",
    }
    tainted = node_slice("d", ["a100"] * 4)
    tainted["spec"]["devices"][3]["taints"] = [{"key": "k", "effect": "NoSchedule"}]
    objects = _cluster(
        dra_pod("x", 2, node="a"),
        dra_pod("y", 2, node="b"),
        every,
        gpu_node("c", 0),
        node_slice("c", ["a100"] * 2),
        gpu_node("d", 0),
        tainted,
    )
    snap = snapshot_from_objects(objects)
    big = snap.pod_by_key["ml/big"]
    assert big.requests[GPU] == 4 and big.resource_claims == ()
    assert len(big.claim_affinity) == 1 and _admitting(snap, big) == ["a", "b"]
    plan = solve(snap, time_limit=5)
    assert len(plan.moves) == 1 and plan.assignments["ml/big"] in ("a", "b")
    assert check_plan(snap, plan.to_dict()) == []
    again = snapshot_from_objects(snapshot_to_list(snap)["items"])
    assert again.pod_by_key["ml/big"].claim_affinity == big.claim_affinity
    # Bound: it asks the devices it holds, and may move only to nodes with as many.
    on_c = dra_pod("z", 4, node="c", allocated=[0, 1])
    on_a = dra_pod("v", 4, node="a", allocated=[0, 1])  # a has 4: a device was added since
    for bound in (on_c, on_a):
        bound[1]["spec"]["devices"]["requests"][0]["exactly"]["allocationMode"] = "All"
    extra = (gpu_node("c", 0), node_slice("c", ["a100"] * 2), gpu_node("e", 0))
    snap = snapshot_from_objects(_cluster(on_c, on_a, *extra, node_slice("e", ["a100"] * 2)))
    z, v = snap.pod_by_key["ml/z"], snap.pod_by_key["ml/v"]
    assert z.requests[GPU] == 2 and z.resource_claims == ()
    assert len(z.claim_affinity) == 1 and _admitting(snap, z) == ["c", "e"]
    assert v.resource_claims_why == (
        "its node has other than the 2 matching devices it holds (All)",
    )
    assert check_plan(snap, solve(snap, time_limit=1).to_dict()) == []


def _constrained(objects: list[Any], *constraints: dict[str, Any]) -> list[Any]:
    """``dra_pod``'s objects with ``constraints`` on its claim."""
    objects[1]["spec"]["devices"]["constraints"] = list(constraints)
    return objects


MODEL = "gpu.example.com/model"


def _admitting(snap: Any, pod: Any) -> list[str]:
    """The nodes every one of the pod's claim node selectors admits."""
    return [
        n.name
        for n in snap.nodes
        if all(any(t.matches(n) for t in terms) for terms in pod.claim_affinity)
    ]


def test_a_constrained_claim_is_planned_where_any_devices_satisfy_it() -> None:
    """matchAttribute model: a's 4 free GPUs are of two models, so kube-scheduler cannot give
    the pending pod 4 of one there; b's are all a100, 2 of them x's. The plan moves x to a
    and puts big on b (where any 4 satisfy the constraint) instead of on a without a move;
    the checker reads a claim's pin and agrees, and flags big on a."""
    big = _constrained(dra_pod("big", 4, priority=100), {"matchAttribute": MODEL})
    objects = _cluster(
        dra_pod("x", 2, node="b"), big, models=(["a100", "a100", "h100", "h100"], ["a100"] * 4)
    )
    snap = snapshot_from_objects(objects)
    pod = snap.pod_by_key["ml/big"]
    assert pod.requests[GPU] == 4 and pod.resource_claims == ()
    assert _admitting(snap, pod) == ["b"]
    plan = solve(snap, time_limit=5)
    assert plan.assignments["ml/big"] == "b" and plan.assignments["ml/x"] == "a"
    assert check_plan(snap, plan.to_dict()) == []
    unmoved = {"assignments": {"ml/x": "b", "ml/big": "a"}, "moves": []}
    wrong = {**plan.to_dict(), **unmoved, "bindings": [{"pod": "ml/big", "node": "a"}]}
    assert any("resource claim" in problem for problem in check_plan(snap, wrong))
    again = snapshot_from_objects(snapshot_to_list(snap)["items"])
    assert again.pod_by_key["ml/big"].claim_affinity == pod.claim_affinity
    # Bound where only some choices satisfy it, a pod may stay or go where any do.
    on_a = _constrained(dra_pod("z", 2, node="a"), {"matchAttribute": MODEL})
    snap = snapshot_from_objects(
        _cluster(on_a, models=(["a100", "a100", "h100", "h100"], ["a100"] * 4))
    )
    z = snap.pod_by_key["ml/z"]
    assert z.resource_claims == () and _admitting(snap, z) == ["a", "b"]


@pytest.mark.parametrize(
    ("constraint", "nodes", "why"),
    [
        ({"distinctAttribute": "gpu.example.com/index"}, ["a", "b"], None),
        ({"matchAttribute": "gpu.example.com/index"}, [], "no node's devices satisfy"),
        ({"matchAttribute": "gpu.example.com/memory"}, [], "no node's devices satisfy"),
        ({"distinctAttribute": MODEL}, [], "no node's devices satisfy"),
        ({"matchAttribute": MODEL, "requests": ["gpu/alt-0"]}, ["a"], None),
        ({"matchAttribute": MODEL, "requests": ["gpu/one"]}, ["a", "b"], None),
        ({"matchAttribute": MODEL, "requests": ["gpu"]}, ["a"], None),
        ({}, [], "spec.devices.constraints[0] is of a kind the planner does not know"),
    ],
)
def test_constraints_pin_pods_to_the_nodes_where_they_always_hold(
    constraint: dict[str, Any], nodes: list[str], why: str | None
) -> None:
    """a's GPUs are all a100, b's of two models; each node's have distinct indexes and no
    attribute "memory" (a capacity). The pod asks 2 GPUs, else 1 (firstAvailable: it asks
    the first, alt-0, which a constraint naming only "gpu/one" leaves alone)."""
    pod = _alternatives(dra_pod("y", priority=100), {"deviceClassName": "gpu", "count": 2})
    objects = _cluster(_constrained(pod, constraint), models=(["a100"] * 4, ["a100", "h100"] * 2))
    y = snapshot_from_objects(objects).pod_by_key["ml/y"]
    if why is None:
        assert y.resource_claims == () and _admitting(snapshot_from_objects(objects), y) == nodes
    else:
        assert y.resource_claims == ("gpus",) and why in y.resource_claims_why[0]


def _admin(objects: list[Any]) -> list[Any]:
    """``dra_pod``'s objects with its request asking admin access (and, allocated, given it)."""
    claim = objects[1]
    claim["spec"]["devices"]["requests"][0]["exactly"]["adminAccess"] = True
    for result in (
        claim.get("status", {}).get("allocation", {}).get("devices", {}).get("results", [])
    ):
        result["adminAccess"] = True
    return objects


def test_a_request_with_admin_access_is_planned_where_its_devices_are_taking_none() -> None:
    """mon asks admin access to 3 GPUs: only a has as many, all 4 of them x's, and a's cpu
    is the filler's. mon may share x's devices (admin access takes none from other claims),
    so the plan moves the filler to b and puts mon on a, asking no GPU; the checker agrees
    and flags mon on b. A bound pod's admin access takes no device from the others."""
    mon = _admin(dra_pod("mon", 3, priority=100))
    mon[0]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "4"
    objects = _cluster(
        dra_pod("x", 4, node="a"),
        _cpu_pod("filler", "a", "29"),
        mon,
        models=(["a100"] * 4, ["a100"] * 2),
    )
    snap = snapshot_from_objects(objects)
    pod = snap.pod_by_key["ml/mon"]
    assert pod.resource_claims == () and GPU not in pod.requests
    assert _admitting(snap, pod) == ["a"]
    plan = solve(snap, time_limit=5)
    assert plan.assignments["ml/mon"] == "a" and plan.assignments["ml/filler"] == "b"
    assert check_plan(snap, plan.to_dict()) == []
    unmoved = {"assignments": {**plan.assignments, "ml/mon": "b", "ml/filler": "a"}}
    wrong = {**plan.to_dict(), **unmoved, "moves": [], "bindings": [{"pod": "ml/mon", "node": "b"}]}
    assert any("resource claim" in problem for problem in check_plan(snap, wrong))
    again = snapshot_from_objects(snapshot_to_list(snap)["items"])
    assert again.pod_by_key["ml/mon"].claim_affinity == pod.claim_affinity
    # Bound on b, holding b's 2 GPUs by admin access: they are free for others all the same.
    watching = _admin(dra_pod("watch", 2, node="b"))
    snap = snapshot_from_objects(
        _cluster(watching, dra_pod("big", 2), models=(["a100"] * 4, ["a100"] * 2))
    )
    assert snap.node_by_name["b"].allocatable[GPU] == 2
    assert snap.pod_by_key["ml/watch"].resource_claims == ()
    assert GPU not in snap.pod_by_key["ml/watch"].requests
    assert _admitting(snap, snap.pod_by_key["ml/watch"]) == ["a", "b"]


def _mixed(objects: list[Any]) -> list[Any]:
    requests = objects[1]["spec"]["devices"]["requests"]
    requests.append({"name": "own", "exactly": {"deviceClassName": "gpu", "count": 1}})
    return objects


@pytest.mark.parametrize(
    ("objects", "why"),
    [
        (
            _admin(dra_pod("y", 5)),
            "no node has the 5 devices its request gpu (adminAccess) selects",
        ),
        (_mixed(_admin(dra_pod("y", 1))), "its requests mix admin access (adminAccess) with"),
        (
            _constrained(_admin(dra_pod("y", 1)), {"matchAttribute": MODEL}),
            "spec.devices.constraints[0] constrains requests with admin access",
        ),
    ],
)
def test_admin_access_not_modelled_holds_its_pod(objects: list[Any], why: str) -> None:
    y = snapshot_from_objects(_cluster(objects)).pod_by_key["ml/y"]
    assert y.resource_claims == ("gpus",) and why in y.resource_claims_why[0]


def test_a_pod_asking_all_devices_counts_the_nodes_it_may_go_to() -> None:
    """Most nodes have 4 GPUs, but the pod's nodeSelector admits only the small pool's 2-GPU
    nodes: it asks 2, there."""
    small = dra_pod("small", priority=100)
    small[0]["spec"]["nodeSelector"] = {"pool": "small"}
    small[1]["spec"]["devices"]["requests"][0]["exactly"] = {
        "deviceClassName": "gpu",
        "allocationMode": "All",
    }
    pool = [gpu_node("c", 0, pool="small"), node_slice("c", ["a100"] * 2)]
    snap = snapshot_from_objects(_cluster(small, *pool))
    pod = snap.pod_by_key["ml/small"]
    assert pod.requests[GPU] == 2 and _admitting(snap, pod) == ["c"]
    plan = solve(snap, time_limit=1)
    assert plan.assignments["ml/small"] == "c"
    assert check_plan(snap, plan.to_dict()) == []


def test_devices_allocated_to_claims_not_modelled_or_shared_are_not_offered() -> None:
    held = dra_pod("x", 3, node="a")
    held[1]["spec"]["devices"]["requests"][0]["exactly"]["capacity"] = {"requests": {"m": "1"}}
    snap = snapshot_from_objects(_cluster(held, dra_pod("big", 1)))
    assert snap.node_by_name["a"].allocatable[GPU] == 1
    assert snap.pod_by_key["ml/x"].resource_claims == ("gpus",)
    shared = [shared_claim("shared", 3, node="a"), naming_pod("x", "shared", node="a")]
    snap = snapshot_from_objects(_cluster(*shared, dra_pod("big", 1)))
    assert snap.node_by_name["a"].allocatable[GPU] == 1
    assert snap.pod_by_key["ml/x"].resource_claims == ()  # pinned to a, asking none


def test_tainted_devices_are_not_offered_and_their_pods_not_modelled() -> None:
    tainted = node_slice("b", ["a100"] * 4, taints=[{"key": "k", "effect": "NoSchedule"}])
    objects = _cluster(dra_pod("y", 1, node="b"), dra_pod("big", 1))
    objects[4] = tainted
    snap = snapshot_from_objects(objects)
    assert GPU not in snap.node_by_name["b"].allocatable
    assert snap.pod_by_key["ml/y"].resource_claims_why == (
        "it holds device gpu.example.com/b/gpu-0, which a taint blocks",
    )


@pytest.mark.parametrize(
    ("rule", "offered"),
    [
        (taint_rule("one", pool="a", device="gpu-3"), {"a": 3, "b": 4}),
        (taint_rule("pool", driver="gpu.example.com", pool="b"), {"a": 4, "b": 0}),
        (taint_rule("every", driver="gpu.example.com"), {"a": 0, "b": 0}),
        (taint_rule("by-name", device="gpu-0"), {"a": 3, "b": 3}),  # in every pool
        (taint_rule("other-driver", driver="nic.example.com"), {"a": 4, "b": 4}),
        (taint_rule("executes", "NoExecute", pool="a"), {"a": 0, "b": 4}),
        (taint_rule("informs", "None", pool="a"), {"a": 4, "b": 4}),  # blocks nothing
        (taint_rule("no-selector"), {"a": 4, "b": 4}),  # selects no device
    ],
)
def test_devices_a_device_taint_rule_blocks_are_not_offered(
    rule: dict[str, Any], offered: dict[str, int]
) -> None:
    snap = snapshot_from_objects([*_cluster(dra_pod("big", 4, priority=9)), rule])
    assert {n: snap.node_by_name[n].allocatable.get(GPU, 0) for n in "ab"} == offered
    plan = solve(snap, time_limit=1)
    assert check_plan(snap, plan.to_dict()) == []
    where = plan.assignments["ml/big"]
    assert (where is None) == (max(offered.values()) < 4)


def test_an_empty_device_selector_taints_every_device() -> None:
    rule = taint_rule("all")
    rule["spec"]["deviceSelector"] = {}
    snap = snapshot_from_objects([*_cluster(), rule])
    assert all(not n.allocatable.get(GPU) for n in snap.nodes)


def test_a_request_tolerating_a_taint_is_planned_on_the_devices_no_taint_blocks() -> None:
    """Its tolerations are not read: node b's devices, all tainted, are not counted for it
    (kube-scheduler may still give it one: sound, not optimal). A bound pod holding a device a
    rule tainted since is held where it runs."""
    tolerating = dra_pod("big", 2, priority=9)
    exactly = tolerating[1]["spec"]["devices"]["requests"][0]["exactly"]
    exactly["tolerations"] = [{"key": "example.com/broken", "operator": "Exists"}]
    rule = taint_rule("b", pool="b")
    snap = snapshot_from_objects([*_cluster(tolerating, dra_pod("x", 1, node="b")), rule])
    big = snap.pod_by_key["ml/big"]
    assert big.resource_claims == () and big.requests[GPU] == 2
    assert snap.pod_by_key["ml/x"].resource_claims_why == (
        "it holds device gpu.example.com/b/gpu-0, which a taint blocks",
    )
    plan = solve(snap, time_limit=1)
    assert plan.assignments["ml/big"] == "a" and check_plan(snap, plan.to_dict()) == []


def test_an_incomplete_pool_holds_the_pods_it_may_serve() -> None:
    objects = _cluster(dra_pod("big", 1))
    objects[2]["spec"]["pool"]["resourceSliceCount"] = 2
    snap = snapshot_from_objects(objects)
    assert (
        "pool gpu.example.com/a is incomplete" in snap.pod_by_key["ml/big"].resource_claims_why[0]
    )


WHOLE = 'device.attributes["gpu.example.com"].type == "gpu"'
HALF = 'device.attributes["gpu.example.com"].type == "half"'
_TYPED = '"type" in device.attributes["gpu.example.com"] && '  # a device without a type: no


def _partitioned(*extra: Any) -> list[Any]:
    """Nodes a and b with 2 partitionable GPUs each (partitioned_slices), a class of whole
    GPUs and one of halves."""
    objects: list[Any] = [device_class("gpu", WHOLE), device_class("half", HALF)]
    for name in "ab":
        objects += [gpu_node(name, 0), *partitioned_slices(name, 2)]
    for item in extra:
        objects += item if isinstance(item, list) else [item]
    return objects


def test_whole_partitionable_gpus_are_counted_and_a_partition_in_use_takes_its_gpu() -> None:
    """A whole GPU that MIG could split consumes all of its counters: it is free unless a
    device drawing on them (one of its halves) is allocated."""
    half = dra_pod("half", 1, node="a", allocated=[0], device_class="half")
    half[1]["status"]["allocation"]["devices"]["results"][0]["device"] = "gpu-0-half-1"
    objects = _partitioned(half, dra_pod("x", 1, node="b"), dra_pod("big", 2, priority=100))
    snap = snapshot_from_objects(objects)
    assert snap.node_by_name["a"].allocatable[GPU] == 1  # gpu-0 is split
    assert snap.node_by_name["b"].allocatable[GPU] == 2  # one free, one x's
    assert snap.pod_by_key["ml/big"].requests[GPU] == 2
    # A pod on a half is held with why (its claim's devices are partitions).
    assert snap.pod_by_key["ml/half"].resource_claims_why == (
        "device gpu.example.com/a/gpu-0-half-0 takes part of counter set gpu-0-counters "
        "(a partition)",
    )
    plan = solve(snap, time_limit=2)
    assert plan.assignments["ml/big"] == "b" and [(m.pod, m.target) for m in plan.moves] == [
        ("ml/x", "a")
    ]
    assert check_plan(snap, plan.to_dict()) == []


@pytest.mark.parametrize(
    ("selector", "why"),
    [
        ("true", "takes part of counter set"),  # wholes and halves
        (
            WHOLE + ' || device.attributes["gpu.example.com"].type == "whole-too"',
            "consume the same counters",
        ),
    ],
)
def test_a_class_taking_one_gpu_two_ways_holds_its_pods(selector: str, why: str) -> None:
    objects = _partitioned(dra_pod("big", 1, device_class="any"))
    objects.append(device_class("any", selector))
    if "whole-too" in selector:  # a second whole device on gpu-0's counters
        devices = objects[4]["spec"]["devices"]
        devices.append({**devices[0], "name": "gpu-0-again"})
        devices[-1]["attributes"] = {"type": {"string": "whole-too"}}
    snap = snapshot_from_objects(objects)
    assert why in snap.pod_by_key["ml/big"].resource_claims_why[0]


def test_two_classes_taking_the_same_gpus_two_ways_hold_their_pods() -> None:
    """Two whole devices on gpu-0's counters, each asked through a class of its own: the
    sets differ in devices but not in the GPU they take."""
    again = 'device.attributes["gpu.example.com"].type == "whole-too"'
    objects = _partitioned(dra_pod("w", 1), dra_pod("v", 1, device_class="again"))
    objects.append(device_class("again", again))
    devices = objects[4]["spec"]["devices"]
    devices.append({**devices[0], "name": "gpu-0-again"})
    devices[-1]["attributes"] = {"type": {"string": "whole-too"}}
    snap = snapshot_from_objects(objects)
    for pod in ("ml/w", "ml/v"):
        assert snap.pod_by_key[pod].resource_claims_why == (
            "its devices overlap those another request selects",
        )


def test_quantities_and_versions_in_selectors() -> None:
    big = 'device.capacity["gpu.example.com"].memory.compareTo(quantity("64Gi")) >= 0'
    objects = _cluster(dra_pod("big", 1, selectors=(big,)), models=(["a100"], ["h100", "a100"]))
    snap = snapshot_from_objects(objects)
    (name,) = snap.pod_by_key["ml/big"].requests.keys() - {"cpu", "pods"}
    assert (
        snap.node_by_name["b"].allocatable[name] == 1
        and name not in snap.node_by_name["a"].allocatable
    )
    version = 'semver("1.10.0").isGreaterThan(semver("1.9.3"))'
    snap = snapshot_from_objects(_cluster(dra_pod("v", 1, selectors=(version,))))
    assert snap.pod_by_key["ml/v"].resource_claims == ()


@pytest.mark.parametrize(
    ("mutate", "obj", "field"),
    [
        (
            lambda o: o[2]["spec"].update(devices={}),
            "ResourceSlice a-gpu.example.com",
            "spec.devices",
        ),
        (
            lambda o: o[2]["spec"]["devices"][0]["attributes"].update(model={"int": "1"}),
            "ResourceSlice a-gpu.example.com",
            "spec.devices[0].attributes.model.int",
        ),
        (
            lambda o: o[2]["spec"]["devices"][0]["capacity"].update(memory={"value": "lots"}),
            "ResourceSlice a-gpu.example.com",
            "spec.devices[0].capacity.memory.value",
        ),
        (
            lambda o: o[2]["spec"]["pool"].update(generation="1"),
            "ResourceSlice a-gpu.example.com",
            "spec.pool.generation",
        ),
        (
            lambda o: o[0]["spec"].update(selectors=[{}]),
            "DeviceClass gpu",
            "spec.selectors[0].cel.expression",
        ),
        (
            lambda o: o[-1]["spec"]["devices"]["requests"][0]["exactly"].update(count=-1),
            "ResourceClaim ml/big-gpus",
            "spec.devices.requests[0].exactly.count",
        ),
        (lambda o: o[-2].update(status=True), "Pod ml/big", "status"),  # found by make fuzz
        (
            lambda o: o[-2].update(status={"resourceClaimStatuses": {}}),
            "Pod ml/big",
            "status.resourceClaimStatuses",
        ),
    ],
)
def test_bad_dra_objects_name_the_object_and_field(mutate: Any, obj: str, field: str) -> None:
    objects = _cluster(dra_pod("big", 1))
    mutate(objects)
    with pytest.raises(InputError) as caught:
        snapshot_from_objects(objects)
    assert (caught.value.obj, caught.value.field) == (obj, field)


# Property: whatever the cluster (pods with claims of their own or shared, or asking a class's
# extended resource, or admin access; pending or running; nodes whose GPUs may be split,
# partitions in use), the running pods fit the devices offered, no node offers more devices
# than it has, and a plan over them passes the checker.
_models = st.lists(st.sampled_from(["a100", "h100"]), min_size=0, max_size=4)


@st.composite
def _dra_clusters(draw: st.DrawFn) -> list[Any]:
    models = draw(st.lists(_models, min_size=1, max_size=3))
    objects: list[Any] = [device_class(), device_class("h100", H100)]
    objects += [device_class("whole", _TYPED + WHOLE), device_class("half", _TYPED + HALF)]
    free = {}
    for i, node_models in enumerate(models):
        name = f"n{i}"
        objects.append(gpu_node(name, 0))
        if draw(st.booleans()):  # two GPUs MIG may split: wholes gpu-0 and gpu-1
            objects += partitioned_slices(name, 2)
            free[name] = [0, 1]
            if draw(st.booleans()):  # half of gpu-0 in use
                objects += dra_pod(f"half-{name}", 1, node=name, device_class="half")
                claim = objects[-1]["status"]["allocation"]["devices"]["results"][0]
                claim["device"] = "gpu-0-half-0"
        else:
            objects.append(node_slice(name, node_models))
            free[name] = list(range(len(node_models)))
    for j in range(draw(st.integers(0, 5))):
        cls = draw(st.sampled_from(["gpu", "h100", "whole"]))
        count = draw(st.integers(1, 3))
        node = draw(st.sampled_from([None, *free]))
        allocated = None
        if node is not None:
            if len(free[node]) < count:
                node = None
            else:
                allocated = [free[node].pop(0) for _ in range(count)]
        priority = draw(st.integers(0, 2))
        if draw(st.booleans()):  # asking the class's extended resource
            objects += extended_pod(
                f"p{j}",
                count,
                resource=CLASS_RESOURCE_PREFIX + cls,
                device_class=cls,
                priority=priority,
                node=node,
                allocated=allocated,
            )
            continue
        shared = draw(st.booleans()) and draw(st.booleans())
        pod = dra_pod(
            f"p{j}",
            count,
            priority=priority,
            node=node,
            allocated=allocated,
            device_class=cls,
            own_claim=not shared,
        )
        if draw(st.booleans()) and draw(st.booleans()):  # its request as a first alternative
            pod = _alternatives(pod, {"deviceClassName": cls, "count": count})
            for result in pod[1]["status"]["allocation"]["devices"]["results"] if node else ():
                result["request"] = "gpu/alt-0"  # bound: allocated the first
        elif draw(st.booleans()) and draw(st.booleans()):  # every device of its node
            pod[1]["spec"]["devices"]["requests"][0]["exactly"]["allocationMode"] = "All"
        elif draw(st.booleans()) and draw(st.booleans()):  # admin access (in use or not)
            pod = _admin(pod)
        if draw(st.booleans()):  # its devices all of one model
            pod = _constrained(pod, {"matchAttribute": MODEL})
        objects += pod
        if shared and draw(st.booleans()):  # another pod naming the claim, pending
            objects.append(naming_pod(f"q{j}", f"p{j}-gpus", priority=draw(st.integers(0, 2))))
    for k in range(draw(st.integers(0, 2))):  # an admin's taints, on a pool or one device
        pool = draw(st.sampled_from([None, *free]))
        device = draw(st.sampled_from([None, "gpu-0", "gpu-1"]))
        effect = draw(st.sampled_from(["NoSchedule", "NoExecute", "None"]))
        objects.append(taint_rule(f"rule-{k}", effect, pool=pool, device=device))
    return objects


def _blocked(objects: list[Any], node: str, device: str) -> bool:
    """Whether a DeviceTaintRule of ``objects`` blocks ``node``'s device (its pool is the
    node's name), read from the objects."""
    return any(
        o["kind"] == "DeviceTaintRule"
        and o["spec"]["taint"]["effect"] != "None"
        and o["spec"].get("deviceSelector", {}).get("pool", node) == node
        and o["spec"].get("deviceSelector", {}).get("device", device) == device
        for o in objects
    )


@given(_dra_clusters())
def test_running_pods_fit_the_devices_offered(objects: list[Any]) -> None:
    snap = snapshot_from_objects(objects)
    for node in snap.nodes:
        devices = {r: n for r, n in node.allocatable.items() if class_resource(r)}
        have = sum(
            not _blocked(objects, node.name, d["name"])
            for o in objects
            if o["kind"] == "ResourceSlice" and o["spec"]["nodeName"] == node.name
            for d in o["spec"].get("devices", [])
        )
        assert all(n <= have for n in devices.values())
        for name, n in devices.items():
            used = sum(p.requests.get(name, 0) for p in snap.pods_on(node.name))
            assert used <= n
    plan = solve(snap, time_limit=1)
    assert check_plan(snap, plan.to_dict()) == []
    # A pod whose claim wants one model is planned only where any devices it may get are of
    # one model (read here from the objects), or where it runs.
    selects = {
        "gpu": lambda d: True,
        "h100": lambda d: d["attributes"]["model"]["string"] == "h100",
    }
    selects["whole"] = lambda d: d["attributes"].get("type", {}).get("string") == "gpu"
    for pod, claim in itertools.pairwise(objects):  # (dra_pod's objects: the pod, its claim)
        if claim["kind"] != "ResourceClaim" or not claim["spec"]["devices"].get("constraints"):
            continue
        key = f"ml/{pod['metadata']['name']}"
        node = plan.assignments.get(key)
        if node is None or node == pod["spec"].get("nodeName"):
            continue
        request = claim["spec"]["devices"]["requests"][0]
        cls = (request.get("exactly") or request["firstAvailable"][0])["deviceClassName"]
        models = {
            d["attributes"]["model"]["string"]
            for o in objects
            if o["kind"] == "ResourceSlice" and o["spec"]["nodeName"] == node
            for d in o["spec"].get("devices", [])
            if selects[cls](d)
        }
        assert len(models) == 1, (key, node, models)


def _extended_cluster(*extra: Any, plugin_gpus: int = 0) -> list[Any]:
    objects: list[Any] = [device_class(extended_resource="nvidia.com/gpu")]
    objects += [gpu_node("a", plugin_gpus), node_slice("a", ["a100"] * 4)]
    objects += [gpu_node("b", 0), node_slice("b", ["a100"] * 4)]
    for item in extra:
        objects += item
    return objects


def test_an_extended_resource_dra_serves_is_offered_where_no_device_plugin_is() -> None:
    objects = _extended_cluster(
        extended_pod("x", 2, node="a"),
        extended_pod("y", 2, node="b"),
        extended_pod("big", 4, priority=9),
    )
    snap = snapshot_from_objects(objects)
    assert snap.node_by_name["a"].allocatable["nvidia.com/gpu"] == 4
    assert snap.pod_by_key["ml/x"].requests["nvidia.com/gpu"] == 2
    plan = solve(snap, time_limit=5)
    assert len(plan.moves) == 1 and plan.assignments["ml/big"] in ("a", "b")
    assert check_plan(snap, plan.to_dict()) == []
    # A device plugin's count stays the node's: kube-scheduler does not use DRA there.
    snap = snapshot_from_objects(_extended_cluster(extended_pod("x", 2, node="a"), plugin_gpus=8))
    assert snap.node_by_name["a"].allocatable["nvidia.com/gpu"] == 8


def test_claims_and_extended_resources_share_the_devices_of_a_class() -> None:
    objects = _extended_cluster(
        extended_pod("x", 1, node="a"), dra_pod("y", 2, node="a", allocated=[2, 3])
    )
    snap = snapshot_from_objects(objects)
    assert snap.node_by_name["a"].allocatable["nvidia.com/gpu"] == 4
    assert snap.pod_by_key["ml/y"].requests["nvidia.com/gpu"] == 2  # asked as the class's


def test_a_second_name_for_the_same_devices_holds_its_pod() -> None:
    implicit = extended_pod("x", 1, resource=GPU, node="a")
    snap = snapshot_from_objects(_extended_cluster(implicit, extended_pod("y", 1)))
    x = snap.pod_by_key["ml/x"]
    assert x.resource_claims == (f"for {GPU}",)
    assert x.resource_claims_why == ("the same devices are asked as nvidia.com/gpu",)
    plan = solve(snap, time_limit=1)
    assert plan.assignments["ml/x"] == "a" and not plan.moves  # held where it runs
    assert GPU not in x.requests  # held where it runs, its devices not offered
    assert snap.node_by_name["a"].allocatable["nvidia.com/gpu"] == 3


def test_a_pending_pod_with_claims_triggers_a_plan_when_a_device_class_is_listed() -> None:
    spec = dra_pod("big", 4)[0]["spec"]
    assert _asks_steerable(spec, ("nvidia.com/gpu", GPU))
    assert not _asks_steerable(spec, ("nvidia.com/gpu",))


def test_the_pods_of_a_device_class_listed_are_steerable_narrowed_or_not() -> None:
    for pending in (dra_pod("any", 1), dra_pod("h100", 1, selectors=(H100,))):
        snap = snapshot_from_objects(_cluster(pending, models=(["h100"], ["a100"])))
        assert len(plannable(snap, (GPU,)).pending) == 1
        assert plannable(snap, ("nvidia.com/gpu",)).pending == ()


@settings(deadline=None)
@given(st.data())
def test_any_dra_object_field_replaced_loads_or_names_the_object(data: st.DataObject) -> None:
    objects = _extended_cluster(extended_pod("x", 2, node="a"), dra_pod("y", 1, node="b"))
    objects += dra_pod("z", 1, selectors=(H100,))
    objects += [shared_claim("shared", 1, node="a", allocated=[3], reserved_for=("w",))]
    objects += [naming_pod("w", "shared", node="a"), naming_pod("v", "shared")]
    objects += [taint_rule("broken", pool="a", device="gpu-3")]
    index = data.draw(st.sampled_from([i for i, o in enumerate(objects) if o["kind"] != "Node"]))
    replace_a_field(objects[index], data)
    try:
        snapshot_from_objects(objects)
    except InputError as exc:
        assert exc.obj


def test_a_pod_holding_a_device_no_longer_published_is_held() -> None:
    objects = _cluster(dra_pod("x", 2, node="a", allocated=[3, 9]))
    snap = snapshot_from_objects(objects)
    assert snap.pod_by_key["ml/x"].resource_claims_why == (
        "device gpu.example.com/a/gpu-9 is no longer published",
    )
    assert snap.node_by_name["a"].allocatable[GPU] == 3  # gpu-3 is allocated to x


def test_a_pod_whose_extended_resource_claim_holds_a_device_its_class_does_not_select() -> None:
    """A bound pod asking the h100 class's resource, its claim holding an a100 (the device's
    model changed since, say): held, and the a100 is not offered as an h100, so a pending
    h100 pod is not planned there (found by the random DRA clusters, 2026-12-07)."""
    h100 = CLASS_RESOURCE_PREFIX + "h100"
    held = extended_pod("p", 1, resource=h100, device_class="h100", node="a", allocated=[0])
    pending = extended_pod("q", 1, resource=h100, device_class="h100", priority=100)
    snap = snapshot_from_objects(_cluster(device_class("h100", H100), held, pending))
    assert snap.pod_by_key["ml/p"].resource_claims_why == (
        "its extended resource claim's allocation is not what its request selects now",
    )
    assert not snap.node_by_name["a"].allocatable.get(h100)
    assert solve(snap, time_limit=1).assignments["ml/q"] is None


@pytest.mark.parametrize(("older", "newer"), [("gpu", "h100"), ("h100", "gpu")])
def test_the_newest_class_naming_an_extended_resource_serves_it(older: str, newer: str) -> None:
    classes = [
        device_class("gpu", extended_resource="nvidia.com/gpu"),
        device_class("h100", H100, extended_resource="nvidia.com/gpu"),
    ]
    for c in classes:
        stamp = "2026-12-07T05:00:00Z" if c["metadata"]["name"] == newer else "2026-12-01T05:00:00Z"
        c["metadata"]["creationTimestamp"] = stamp
    objects = [*classes, gpu_node("a", 0), node_slice("a", ["h100", "a100", "a100"])]
    snap = snapshot_from_objects([*objects, *extended_pod("x", 1)])
    assert snap.node_by_name["a"].allocatable["nvidia.com/gpu"] == (1 if newer == "h100" else 3)


def test_a_device_plugins_gpus_are_untouched_by_a_class_serving_the_same_resource() -> None:
    """A class for nvidia.com/gpu whose selector fails: the running pod on a device plugin's
    GPUs is not held, and a pending one is planned on them (not on DRA devices)."""
    broken = device_class(
        "gpu", "device.attributes['x.com'].y == 1", extended_resource="nvidia.com/gpu"
    )
    objects = [broken, gpu_node("a", 4), gpu_node("b", 0), node_slice("b", ["h100"] * 4)]
    objects += extended_pod("x", 2, node="a") + extended_pod("y", 2, priority=5)
    snap = snapshot_from_objects(objects)
    x, y = snap.pod_by_key["ml/x"], snap.pod_by_key["ml/y"]
    assert x.resource_claims == () and x.requests["nvidia.com/gpu"] == 2
    assert y.resource_claims == () and "nvidia.com/gpu" not in snap.node_by_name["b"].allocatable
    plan = solve(snap, time_limit=1)
    assert plan.assignments["ml/y"] == "a" and check_plan(snap, plan.to_dict()) == []


def test_a_node_name_of_another_type_is_read_as_the_loader_reads_it() -> None:
    """Found by make fuzz: a list as spec.nodeName crashed the DRA step with a traceback."""
    objects = _extended_cluster(extended_pod("x", 1, node="a"))
    objects[-2]["spec"]["nodeName"] = [None]
    snap = snapshot_from_objects(objects)
    assert snap.pod_by_key["ml/x"].node_name == "[None]"
