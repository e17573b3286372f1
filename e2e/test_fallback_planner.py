"""The fallback planner on the real scheduler: a fragmented GPU pool where kube-scheduler, with
its own preemption, leaves a multi-GPU pod Pending; dunnage plans, evicts only what the plan
says (lower priority only), moves one pod, and the pod runs (and finished plans beyond the
policy's history limit are deleted); the pod keeps one replica per node, a rule the planner
models. Replicas kept one per node by a spread or by anti-affinity, placed where the real
kube-scheduler accepts them. A pool where only PodDisruptionBudgets stand in the way: dunnage
proves the current placement optimal and touches nothing. A plan that expires: a pod the
extender kept off its nodes meanwhile is retried as soon as the planner marks them released.
One where the pod asks for a zone beside another pod while no node has a zone: it leaves the
pod to kube-scheduler and says so, as it does when
a pod shares a ReadWriteOncePod claim with a running one (while none runs, the higher of two
pods naming it is planned). Replicas kept one per zone, spread over zones (counting only the
zones its nodeTaintsPolicy admits), or kept together in a zone: the pending one is planned in
the zone kube-scheduler takes it in (and nowhere when a spread under nodeAffinityPolicy Ignore
counts an empty zone outside the pool: no zone takes it); kept in the zone of another
workload's pod: the plan keeps that pod where it runs. And one where a pod's data is on a
local volume, or on a volume labelled with its node's zone: the planner moves the other pod;
and one where no move leaves the pods' CSI disks within the nodes' attach counts: the planner
proves the placement optimal; and one whose claim is provisioned where it goes: planned."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dunnage.devcluster.cluster import DevCluster, NodeSpec
from dunnage.scheduler_extender.fallback import CRASH_BEFORE_MARKS_ENV, RELEASED_ANNOTATION
from e2e.conftest import get_json, pods_by_name, wait_for
from e2e.gpu_pool import (
    POOL,
    bare_pod,
    deployment,
    place,
    priority_classes,
    running_on,
    unschedulable,
)


def finished_plan(name: str) -> dict[str, Any]:
    """A PackingPlan as an earlier decision of the default policy left it (phase set after)."""
    return {
        "apiVersion": "dunnage.io/v1alpha1",
        "kind": "PackingPlan",
        "metadata": {"name": name, "labels": {"dunnage.io/policy": "default"}},
        "spec": {
            "policy": "default",
            "outcome": "no_improvement",
            "expiresAt": "2026-01-01T00:00:00Z",
        },
    }


def default_policy(cluster: DevCluster, spec: dict[str, Any]) -> Iterator[None]:
    """A default PackingPolicy of ``spec`` while the test runs (a fixture's body)."""
    policy = {
        "apiVersion": "dunnage.io/v1alpha1",
        "kind": "PackingPolicy",
        "metadata": {"name": "default"},
        "spec": spec,
    }
    cluster.apply([policy])
    yield
    cluster.kubectl("delete", "packingpolicy", "default", "--ignore-not-found")


@pytest.fixture
def keep_one_plan(cluster: DevCluster) -> Iterator[None]:
    """A default policy that keeps one finished plan on record."""
    yield from default_policy(cluster, {"planHistoryLimit": 1})


@pytest.mark.usefixtures("keep_one_plan")
def test_fragmented_gpus_planned_and_executed(cluster: DevCluster, namespace: str) -> None:
    cluster.apply(priority_classes())
    # With the extender (and its planner) down, kube-scheduler keeps scheduling: it is ignorable.
    cluster.stop_component("extender")
    # Two earlier decisions on record; the policy keeps one finished plan.
    old = [f"{namespace}-old-{i}" for i in range(2)]
    cluster.apply([finished_plan(name) for name in old])
    for name in old:
        cluster.kubectl(
            "patch",
            "packingplan",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status": {"phase": "NoImprovement"}}',
        )
    a, b, c = (f"{namespace}-{x}" for x in "abc")
    place(cluster, namespace, a, [("low-a", 2, "frag-low"), ("high-a", 2, "frag-high")])
    place(cluster, namespace, b, [("low-b", 2, "frag-low"), ("high-b", 2, "frag-high")])
    place(cluster, namespace, c, [("high-c", 2, "frag-high")])
    before = running_on(cluster, namespace)

    # 4 GPUs at mid priority: no node frees 4 GPUs by preempting lower pods alone. One
    # replica per node, a rule the planner models: it plans the pod as any other.
    big = deployment("big", 4, "frag-mid", namespace)
    big["spec"]["template"]["spec"]["affinity"] = anti_affinity("big", "kubernetes.io/hostname")
    cluster.apply([big], "-n", namespace)

    wait_for(lambda: unschedulable(cluster, namespace, "big"), what="the 4-GPU pod Unschedulable")
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
        if any(b["pod"].startswith(f"{namespace}/big") for b in p["spec"].get("bindings", []))
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
    # Both proof flags survive the CRD's schema; a proven plan has its placements proven too.
    assert isinstance(spec["provenOptimal"], bool)
    assert spec["placementsProvenOptimal"] or not spec["provenOptimal"]
    wait_for(
        lambda: (
            get_json(cluster, "packingplan", plans[0]["metadata"]["name"])["status"].get("phase")
            == "Succeeded"
        ),
        timeout=30,
        what="PackingPlan Succeeded",
    )

    # The policy's record: only the newest finished plan, this one, is kept.
    def kept() -> list[str]:
        listed = get_json(cluster, "packingplans", "-l", "dunnage.io/policy=default")
        return [p["metadata"]["name"] for p in listed["items"]]

    wait_for(
        lambda: kept() == [plans[0]["metadata"]["name"]],
        timeout=30,
        what="only the newest finished plan kept",
    )
    print(f"planned and placed in {elapsed:.1f}s: {spec['evictions']} {spec['moves']}")


ZONE = "topology.kubernetes.io/zone"


def anti_affinity(app: str, topology_key: str) -> dict[str, Any]:
    """Required pod anti-affinity against the pods of ``app`` in the same ``topology_key``."""
    term = {"topologyKey": topology_key, "labelSelector": {"matchLabels": {"app": app}}}
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}


def budget(app: str) -> dict[str, Any]:
    """A PodDisruptionBudget that lets no pod of ``app`` (one replica) go."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": app},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
    }


def two_high_pods(
    cluster: DevCluster, namespace: str, high_b: dict[str, Any] | None = None
) -> tuple[str, str]:
    """Pool nodes a and b with a 2-GPU high pod each (``high_b``: its Deployment, if not the
    plain one) and 2 GPUs free on each: moving either high pod would make room for a 4-GPU
    pod (as in the first test). A filler keeps high-b off a while it is placed, then leaves."""
    cluster.apply(priority_classes())
    cluster.stop_component("extender")
    a, b = (f"{namespace}-{x}" for x in "ab")
    place(
        cluster, namespace, a, [("high-a", 2, "frag-high"), ("filler", 2, "frag-high")], ("filler",)
    )
    if high_b is None:
        place(cluster, namespace, b, [("high-b", 2, "frag-high")])
    else:
        cluster.create_nodes([NodeSpec(b, gpus=4, labels={POOL: namespace})])
        cluster.apply([high_b], "-n", namespace)
        wait_for(lambda: running_on(cluster, namespace).get("high-b") == b, what="high-b on b")
    cluster.kubectl("delete", "pod", "filler", "-n", namespace, "--wait=true")
    return a, b


def uids(cluster: DevCluster, namespace: str) -> dict[str, str]:
    return {n: p["metadata"]["uid"] for n, p in pods_by_name(cluster, namespace).items()}


def decided(cluster: DevCluster, namespace: str, reason: str, app: str = "big") -> dict[str, Any]:
    """Start the extender and return the first Event of ``reason`` on the pod of ``app`` (by
    default the 4-GPU pod) once the planner posts it."""
    cluster.start_extender()
    return wait_for(
        lambda: event_on(cluster, namespace, reason, app),
        timeout=60,
        what=f"a {reason} Event on the pod of {app}",
    )


def event_on(
    cluster: DevCluster, namespace: str, reason: str, app: str = "big"
) -> dict[str, Any] | None:
    """The first Event of ``reason`` on the pod of ``app`` (by default the 4-GPU pod), if any
    yet."""
    events = get_json(cluster, "events", "-n", namespace)["items"]
    return next(
        (
            e
            for e in events
            if e["reason"] == reason and e["involvedObject"]["name"].startswith(f"{app}-")
        ),
        None,
    )


def test_placement_blocked_only_by_budgets_is_certified_optimal(
    cluster: DevCluster, namespace: str
) -> None:
    # Moving either high pod would make room for the 4-GPU pod, but their budgets allow no
    # disruption.
    a, b = two_high_pods(cluster, namespace)
    cluster.apply([budget("high-a"), budget("high-b")], "-n", namespace)

    def budgets_computed() -> bool:
        items = get_json(cluster, "pdb", "-n", namespace)["items"]
        return len(items) == 2 and all(
            pdb.get("status", {}).get("currentHealthy") == 1
            and pdb["status"].get("disruptionsAllowed") == 0
            for pdb in items
        )

    wait_for(budgets_computed, what="the disruption controller to compute both budgets")
    cluster.apply([deployment("big", 4, "frag-mid", namespace)], "-n", namespace)
    wait_for(lambda: unschedulable(cluster, namespace, "big"), what="the 4-GPU pod Unschedulable")
    before = uids(cluster, namespace)

    event = decided(cluster, namespace, "CertifiedOptimal")
    assert "PodDisruptionBudget" in event["message"]
    name = event["message"].split()[2].rstrip(":")
    plan = get_json(cluster, "packingplan", name)
    spec = plan["spec"]
    assert plan["status"]["phase"] == "Certified", plan["status"]
    assert spec["outcome"] == "optimal" and spec["provenOptimal"] is True
    assert spec["bindings"] == [] and spec["moves"] == [] and spec["evictions"] == []
    # Nothing was touched: the same pods (by uid) run where they ran, and the big one waits.
    time.sleep(3)
    assert uids(cluster, namespace) == before
    assert running_on(cluster, namespace) == {"high-a": a, "high-b": b}

    # The budgets go: the cluster changed, so the same pending pod is decided again (after the
    # planner's pause) and now placed by moving a high pod.
    cluster.kubectl("delete", "pdb", "high-a", "high-b", "-n", namespace)
    started = time.monotonic()
    node = wait_for(
        lambda: running_on(cluster, namespace).get("big"), timeout=120, what="the 4-GPU pod Running"
    )
    print(f"re-decided and placed {time.monotonic() - started:.1f}s after the budgets went")
    assert node in (a, b)
    assert set(running_on(cluster, namespace)) == {"high-a", "high-b", "big"}


@pytest.fixture
def short_plans(cluster: DevCluster) -> Iterator[None]:
    """A default policy whose plans expire 20 s after they are made."""
    yield from default_policy(cluster, {"planTTLSeconds": 20})


@pytest.mark.usefixtures("short_plans")
@pytest.mark.parametrize("planner_dies_before_marking", [False, True], ids=["", "planner-dies"])
def test_pods_kept_off_a_plans_nodes_are_retried_when_it_ends(
    cluster: DevCluster,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    planner_dies_before_marking: bool,
) -> None:
    """...also when the planner dies between writing that the plan ended and marking its
    nodes: the planner that starts next marks them."""
    if planner_dies_before_marking:
        cluster.stop_component("extender")
        monkeypatch.setenv(CRASH_BEFORE_MARKS_ENV, "1")
        cluster.start_extender()
    # A 3-GPU pod fits once a high pod moves. With kube-controller-manager down the moved
    # pod's replacement never comes, so the plan keeps the move's target until it expires.
    a, b = two_high_pods(cluster, namespace)
    cluster.apply([deployment("big", 3, "frag-mid", namespace)], "-n", namespace)
    wait_for(lambda: unschedulable(cluster, namespace, "big"), what="the 3-GPU pod waiting")
    cluster.stop_component("kube-controller-manager")
    try:
        name = decided(cluster, namespace, "Planned")["message"].split()[2]
        spec = get_json(cluster, "packingplan", name)["spec"]
        assert len(spec["bindings"]) == len(spec["moves"]) == 1, spec
        kept = {spec["bindings"][0]["node"], spec["moves"][0]["to"]}
        assert kept == {a, b}

        def marks() -> dict[str, str | None]:
            nodes = {n: get_json(cluster, "node", n)["metadata"] for n in (a, b)}
            return {
                n: (m.get("annotations") or {}).get(RELEASED_ANNOTATION) for n, m in nodes.items()
            }

        wait_for(
            lambda: running_on(cluster, namespace).get("big") in kept, what="the 3-GPU pod placed"
        )

        # A 1-GPU pod arriving meanwhile fits only on the nodes the plan keeps (beside the
        # 3-GPU pod, or where the replacement is awaited): the extender keeps it off.
        cluster.apply([bare_pod("late", 1, "frag-low", namespace)], "-n", namespace)

        def turned_away() -> dict[str, Any] | None:
            events = get_json(cluster, "events", "-n", namespace)["items"]
            return next(
                (
                    e
                    for e in events
                    if e["reason"] == "FailedScheduling"
                    and e["involvedObject"]["name"] == "late"
                    and f"reserved by dunnage plan {name}" in e["message"]
                ),
                None,
            )

        print(wait_for(turned_away, what="the 1-GPU pod kept off the plan's nodes")["message"])
        wait_for(
            lambda: get_json(cluster, "packingplan", name)["status"]["phase"] == "Expired",
            timeout=40,
            what=f"plan {name} Expired",
        )
        ended = time.monotonic()
        if planner_dies_before_marking:
            wait_for(
                lambda: "extender" not in cluster.running(), timeout=10, what="the planner dead"
            )
            assert name not in marks().values()
            time.sleep(5)  # the pod's back-off over: no event moves it
            assert "late" not in running_on(cluster, namespace)
            monkeypatch.delenv(CRASH_BEFORE_MARKS_ENV)
            cluster.start_extender()
        wait_for(
            lambda: marks() == {a: name, b: name},
            timeout=30 if planner_dies_before_marking else 5,  # (a new process syncs first)
            what="the nodes marked released",
        )
        # The marks are a cluster event: kube-scheduler retries the pod after its back-off (at
        # most 10 s), not at its 5-minute flush.
        wait_for(
            lambda: running_on(cluster, namespace).get("late") in kept,
            timeout=30,
            what="the 1-GPU pod Running once the plan ended",
        )
        print(f"the pod kept off ran {time.monotonic() - ended:.1f}s after the plan ended")
    finally:
        cluster.start_controller_manager()
        if "extender" not in cluster.running():
            monkeypatch.delenv(CRASH_BEFORE_MARKS_ENV, raising=False)
            cluster.start_extender()


def test_a_pod_under_zone_pod_affinity_is_left_to_kube_scheduler(
    cluster: DevCluster, namespace: str
) -> None:
    """The pool above, with the 4-GPU pod asking to run in a zone where high-a runs, while
    no node has a zone: kube-scheduler could take it nowhere, so the planner leaves the pod
    to kube-scheduler, says so, and touches nothing."""
    a, b = two_high_pods(cluster, namespace)
    big = deployment("big", 4, "frag-mid", namespace)
    term = {"topologyKey": ZONE, "labelSelector": {"matchLabels": {"app": "high-a"}}}
    big["spec"]["template"]["spec"]["affinity"] = {
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
    }
    cluster.apply([big], "-n", namespace)
    wait_for(lambda: unschedulable(cluster, namespace, "big"), what="the 4-GPU pod Unschedulable")
    before = uids(cluster, namespace)

    event = decided(cluster, namespace, "NoImprovement")
    assert "left to kube-scheduler: required pod affinity" in event["message"], event
    spec = get_json(cluster, "packingplan", event["message"].split()[2].rstrip(":"))["spec"]
    assert spec["outcome"] == "no_improvement" and spec["provenOptimal"] is False
    assert spec["bindings"] == [] and spec["moves"] == [] and spec["evictions"] == []
    time.sleep(3)
    assert uids(cluster, namespace) == before
    assert running_on(cluster, namespace) == {"high-a": a, "high-b": b}


def test_a_pod_under_pod_affinity_to_another_workload_goes_beside_its_pod_kept_there(
    cluster: DevCluster, namespace: str
) -> None:
    """The 4-GPU pod asks to run in the zone of a cache pod (another Deployment, 2 GPUs) on c
    in zb, beside 2 free GPUs; a (za) has 2 free beside high-a, b (zb) 1 beside high-b1 (1 GPU)
    and high-b2 (2). Moving the cache to a would be the cheapest plan, but kube-scheduler
    would then refuse the pod on c; the planner keeps the cache where it runs and moves
    high-b1 and high-b2 off b instead, and the pod runs on b."""
    cluster.apply(priority_classes())
    cluster.stop_component("extender")
    a, b, c = (f"{namespace}-{x}" for x in "abc")
    # Each node is the pool's only one with room while its pods are placed (fillers leave).
    for node, zone, pods in (
        (c, "zb", [("cache", 2), ("c-filler", 2)]),
        (a, "za", [("high-a", 2), ("filler", 2)]),
        (b, "zb", [("high-b1", 1), ("high-b2", 2)]),
    ):
        names = [(name, gpus, "frag-high") for name, gpus in pods]
        place(cluster, namespace, node, names, ("filler", "c-filler"), {ZONE: zone})
    cluster.kubectl("delete", "pod", "filler", "c-filler", "-n", namespace, "--wait=true")
    cache = {n for n in pods_by_name(cluster, namespace) if n.startswith("cache-")}
    big = deployment("big", 4, "frag-mid", namespace)
    term = {"topologyKey": ZONE, "labelSelector": {"matchLabels": {"app": "cache"}}}
    big["spec"]["template"]["spec"]["affinity"] = {
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
    }
    cluster.apply([big], "-n", namespace)
    wait_for(lambda: unschedulable(cluster, namespace, "big"), what="the 4-GPU pod Unschedulable")

    cluster.start_extender()
    wait_for(
        lambda: running_on(cluster, namespace).get("big"), timeout=60, what="the 4-GPU pod Running"
    )
    running = running_on(cluster, namespace)
    assert running["big"] == b and running["cache"] == c and running["high-a"] == a, running
    assert {running["high-b1"], running["high-b2"]} == {a, c}, running
    assert {n for n in pods_by_name(cluster, namespace) if n.startswith("cache-")} == cache


def zoned_high_pods(cluster: DevCluster, namespace: str, a: str, b: str) -> None:
    """Pool nodes a in zone za, 2 GPUs free beside high-a (a filler keeps the room while
    high-a is placed, then leaves), and b in zb, 2 GPUs free beside high-b1 and high-b2."""
    place(
        cluster,
        namespace,
        a,
        [("high-a", 2, "frag-high"), ("filler", 2, "frag-high")],
        ("filler",),
        labels={ZONE: "za"},
    )
    place(
        cluster,
        namespace,
        b,
        [("high-b1", 1, "frag-high"), ("high-b2", 1, "frag-high")],
        labels={ZONE: "zb"},
    )
    cluster.kubectl("delete", "pod", "filler", "-n", namespace, "--wait=true")


def replica_waiting(
    cluster: DevCluster, namespace: str, replicas: int
) -> Callable[[], dict[str, Any]]:
    """Scale big to ``replicas`` and wait until the new replica is Unschedulable; return a
    reader of the replica as it is now."""
    before = {n for n in pods_by_name(cluster, namespace) if n.startswith("big-")}
    cluster.kubectl("scale", "deployment", "big", f"--replicas={replicas}", "-n", namespace)

    def new() -> dict[str, Any]:
        pods = pods_by_name(cluster, namespace)
        return next((p for n, p in pods.items() if n.startswith("big-") and n not in before), {})

    def waiting() -> bool:
        conditions = new().get("status", {}).get("conditions", [])
        return any(c.get("reason") == "Unschedulable" for c in conditions)

    wait_for(waiting, what="big's new replica Unschedulable")
    return new


def replica_planned(cluster: DevCluster, namespace: str, replicas: int) -> dict[str, Any]:
    """Scale big to ``replicas``; once the new replica is Unschedulable, start the extender
    and return the replica when it runs."""
    new = replica_waiting(cluster, namespace, replicas)
    cluster.start_extender()
    wait_for(
        lambda: new().get("status", {}).get("phase") == "Running",
        timeout=60,
        what="big's new replica Running",
    )
    return new()


@pytest.mark.parametrize(
    "rule", ["anti-affinity", "spread", "affinity", "affinity-in-labelled-namespaces"]
)
def test_a_replica_kept_apart_by_zone_is_planned_where_kube_scheduler_takes_it(
    cluster: DevCluster, namespace: str, rule: str
) -> None:
    """Replicas of big kept one per zone (anti-affinity), or spread over zones with maxSkew 1:
    the first runs on c in zone za. The second (4 GPUs) fits no node: a (za) has 2 GPUs free
    beside high-a (one move would make room), b (zb) 2 beside high-b1 and high-b2 (two
    moves). kube-scheduler takes the replica only in zb (za already has one; a spread's skew
    would be 2 over zb's none), so the planner moves both pods from b to a and the replica
    runs on b (on a, the cheaper plan, kube-scheduler would refuse it). Replicas kept
    together in a zone (pod affinity to themselves), with c in zb: kube-scheduler takes the
    second only in zb, beside the first, and the plan is the same; also when the term selects
    its pods in the namespaces labelled team=ml (this one is), which the planner reads from the
    Namespaces (without them it could not count on the first replica)."""
    cluster.apply(priority_classes())
    cluster.stop_component("extender")
    a, b, c = (f"{namespace}-{x}" for x in "abc")
    big = deployment("big", 4, "frag-mid", namespace)
    template = big["spec"]["template"]["spec"]
    if rule == "anti-affinity":
        template["affinity"] = anti_affinity("big", ZONE)
    elif rule.startswith("affinity"):
        term: dict[str, Any] = {
            "topologyKey": ZONE,
            "labelSelector": {"matchLabels": {"app": "big"}},
        }
        if rule == "affinity-in-labelled-namespaces":
            cluster.kubectl("label", "namespace", namespace, "team=ml")
            term["namespaceSelector"] = {"matchLabels": {"team": "ml"}}
        template["affinity"] = {
            "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
        }
    else:
        template["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": ZONE,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "big"}},
            }
        ]
    first_zone = "zb" if rule.startswith("affinity") else "za"
    cluster.create_nodes([NodeSpec(c, gpus=4, labels={POOL: namespace, ZONE: first_zone})])
    cluster.apply([big], "-n", namespace)
    wait_for(lambda: running_on(cluster, namespace).get("big") == c, what="big's first on c")
    zoned_high_pods(cluster, namespace, a, b)
    pod = replica_planned(cluster, namespace, 2)
    assert pod["spec"]["nodeName"] == b, pod
    running = running_on(cluster, namespace)
    assert {k: running[k] for k in ("high-a", "high-b1", "high-b2")} == dict.fromkeys(
        ("high-a", "high-b1", "high-b2"), a
    )


def test_a_spread_counts_only_the_zones_its_taints_policy_admits(
    cluster: DevCluster, namespace: str
) -> None:
    """Replicas of big spread over zones with maxSkew 1 and nodeTaintsPolicy Honor: one runs
    in za (on c), one in zb (on e); d, alone in zc, is tainted against them, so zc is not
    counted and a third replica may go to za or zb (were zc counted with none, both would be 2
    over it, and no zone would take it). It fits no node: a (za) and b (zb) have 2 GPUs free
    beside high pods. The planner moves high pods to make room in za or zb, and the replica
    runs there."""
    a, b, c, d, e = spread_over_zones(cluster, namespace, nodeTaintsPolicy="Honor")
    cluster.create_nodes([NodeSpec(d, gpus=4, labels={POOL: namespace, ZONE: "zc"})])
    cluster.kubectl("taint", "node", d, "reserved=true:NoSchedule")
    zoned_high_pods(cluster, namespace, a, b)
    pod = replica_planned(cluster, namespace, 3)
    assert pod["spec"]["nodeName"] in (a, b), pod
    assert big_nodes(cluster, namespace) == {c, e, pod["spec"]["nodeName"]}


def spread_over_zones(
    cluster: DevCluster, namespace: str, **policies: str
) -> tuple[str, str, str, str, str]:
    """Two replicas of big spread over zones with maxSkew 1 (and the nodeInclusionPolicies
    given), on c in za and e in zb; the names of the nodes a to e."""
    cluster.apply(priority_classes())
    cluster.stop_component("extender")
    a, b, c, d, e = (f"{namespace}-{x}" for x in "abcde")
    big = deployment("big", 4, "frag-mid", namespace, replicas=2)
    big["spec"]["template"]["spec"]["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": ZONE,
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "big"}},
            **policies,
        }
    ]
    cluster.create_nodes(
        [
            NodeSpec(c, gpus=4, labels={POOL: namespace, ZONE: "za"}),
            NodeSpec(e, gpus=4, labels={POOL: namespace, ZONE: "zb"}),
        ]
    )
    cluster.apply([big], "-n", namespace)
    wait_for(lambda: big_nodes(cluster, namespace) == {c, e}, what="big's two replicas on c and e")
    return a, b, c, d, e


def big_nodes(cluster: DevCluster, namespace: str) -> set[str]:
    """The nodes big's replicas run on."""
    pods = pods_by_name(cluster, namespace).items()
    return {
        p["spec"].get("nodeName", "")
        for n, p in pods
        if n.startswith("big-") and p.get("status", {}).get("phase") == "Running"
    }


def test_a_spread_ignoring_node_affinity_counts_a_zone_outside_the_pool(
    cluster: DevCluster, namespace: str
) -> None:
    """Replicas of big spread over zones with maxSkew 1 and nodeAffinityPolicy Ignore: one
    runs in za (on c), one in zb (on e). d, in zc, is outside the pool big's nodeSelector
    keeps it to, but counted all the same, with none, so a third replica would be 2 over it
    in za or zb: kube-scheduler takes it nowhere. a (za) and b (zb) have 2 GPUs free beside
    high pods; were zc left out (as under Honor), moving them would make room for it. The
    planner moves nothing and says no node takes the replica."""
    a, b, _, d, _ = spread_over_zones(cluster, namespace, nodeAffinityPolicy="Ignore")
    cluster.create_nodes([NodeSpec(d, gpus=4, labels={ZONE: "zc"})])
    zoned_high_pods(cluster, namespace, a, b)
    replica_waiting(cluster, namespace, 3)
    before = uids(cluster, namespace)

    event = decided(cluster, namespace, "NoImprovement")
    assert "no node takes it now" in event["message"], event
    time.sleep(3)
    assert uids(cluster, namespace) == before


def bound_volume(
    namespace: str,
    claim: str,
    *,
    node: str | None = None,
    zone: str | None = None,
    mode: str = "ReadWriteOnce",
    csi: bool = False,
) -> list[dict[str, Any]]:
    """A PersistentVolume and ``claim`` bound to it: on ``node`` only (a local disk) if given,
    else a host path any node can use, labelled with ``zone`` if given (a zonal disk, as
    older in-tree volumes say where they are); or, with ``csi``, a disk of CSI_DRIVER."""
    source: dict[str, Any] = {"hostPath": {"path": f"/mnt/{claim}"}}
    if csi:
        source = {"csi": {"driver": CSI_DRIVER, "volumeHandle": f"{namespace}-{claim}"}}
    if node is not None:
        here = {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
        source = {
            "local": {"path": f"/mnt/{claim}"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [here]}]}},
        }
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": f"{namespace}-{claim}",
                **({"labels": {ZONE: zone}} if zone is not None else {}),
            },
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": [mode],
                "storageClassName": "",
                **source,
                "claimRef": {"namespace": namespace, "name": claim},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": [mode],
                "storageClassName": "",
                "volumeName": f"{namespace}-{claim}",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]


def wait_bound(cluster: DevCluster, namespace: str, claim: str) -> None:
    def bound() -> bool:
        status = get_json(cluster, "pvc", claim, "-n", namespace).get("status", {})
        return status.get("phase") == "Bound"

    wait_for(bound, what=f"the claim {claim} bound to its volume")


def with_claim(workload: dict[str, Any], claim: str) -> dict[str, Any]:
    workload["spec"]["template"]["spec"]["volumes"] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": claim}}
    ]
    return workload


@pytest.mark.parametrize("volume", ["local", "zonal"])
def test_a_pod_on_a_local_volume_stays_and_the_other_pod_moves(
    cluster: DevCluster, namespace: str, volume: str
) -> None:
    """The budgets' pool with high-b's data on a local volume of its node, or on a volume
    labelled with the zone of its node (zb; a in za; kube-scheduler's VolumeZone): of the two
    moves that would place the 4-GPU pod, only high-a's leaves every pod where kube-scheduler
    accepts it (high-b's replacement could run on its volume's node only). Without the
    volume the planner moves high-b (seen in this pool, with the volume's filter disabled)."""
    if volume == "local":
        cluster.apply(bound_volume(namespace, "cache", node=f"{namespace}-b"))
    else:
        cluster.apply(bound_volume(namespace, "cache", zone="zb"))
    wait_bound(cluster, namespace, "cache")
    high_b = with_claim(deployment("high-b", 2, "frag-high", namespace), "cache")
    a, b = two_high_pods(cluster, namespace, high_b)
    if volume == "zonal":  # labelled now: kube-scheduler placed high-b before (a was full)
        cluster.kubectl("label", "node", a, f"{ZONE}=za")
        cluster.kubectl("label", "node", b, f"{ZONE}=zb")
    cluster.apply([deployment("big", 4, "frag-mid", namespace)], "-n", namespace)
    wait_for(lambda: unschedulable(cluster, namespace, "big"), what="the 4-GPU pod Unschedulable")
    uids_b = {n: u for n, u in uids(cluster, namespace).items() if n.startswith("high-b-")}

    cluster.start_extender()
    wait_for(
        lambda: running_on(cluster, namespace).get("big"), timeout=60, what="the 4-GPU pod Running"
    )
    running = running_on(cluster, namespace)
    assert running == {"high-a": b, "high-b": b, "big": a}, running
    assert {n: u for n, u in uids(cluster, namespace).items() if n.startswith("high-b-")} == uids_b


CSI_DRIVER = "disk.csi.dunnage.test"


def test_a_pod_whose_disk_no_node_may_attach_is_not_planned(
    cluster: DevCluster, namespace: str
) -> None:
    """a and b may each attach one disk of a CSI driver (their CSINodes' count), and each has
    one: high-a's and high-b's, 2 GPUs each, beside 2 free. The 4-GPU pod has a disk too.
    Moving either high pod would make room for its GPUs, but its replacement would take the
    other node past its count (kube-scheduler's NodeVolumeLimits refuses it): the planner
    proves the placement optimal and moves nothing."""
    cluster.apply(priority_classes())
    cluster.stop_component("extender")
    a, b = (f"{namespace}-{x}" for x in "ab")
    for node, app in ((a, "high-a"), (b, "high-b")):
        cluster.create_nodes([NodeSpec(node, gpus=4, labels={POOL: namespace})])
        driver = {"name": CSI_DRIVER, "nodeID": node, "allocatable": {"count": 1}}
        csi_node = {"metadata": {"name": node}, "spec": {"drivers": [driver]}}
        cluster.apply([{"apiVersion": "storage.k8s.io/v1", "kind": "CSINode", **csi_node}])
        cluster.apply(bound_volume(namespace, f"{app}-disk", csi=True))
        wait_bound(cluster, namespace, f"{app}-disk")
        workload = with_claim(deployment(app, 2, "frag-high", namespace), f"{app}-disk")
        cluster.apply([workload], "-n", namespace)  # b: a has GPUs but no disk to spare
        wait_for(
            lambda app=app, node=node: running_on(cluster, namespace).get(app) == node,
            what=f"{app} on {node}",
        )
    cluster.apply(bound_volume(namespace, "big-disk", csi=True))
    wait_bound(cluster, namespace, "big-disk")
    big = with_claim(deployment("big", 4, "frag-mid", namespace), "big-disk")
    cluster.apply([big], "-n", namespace)
    wait_for(lambda: unschedulable(cluster, namespace, "big"), what="the 4-GPU pod Unschedulable")
    before = uids(cluster, namespace)

    event = decided(cluster, namespace, "CertifiedOptimal")
    assert "the current placement is proven optimal" in event["message"], event
    time.sleep(3)
    assert uids(cluster, namespace) == before


@pytest.mark.parametrize("capacity", ["untracked", "on-a", "on-b"])
def test_a_pod_whose_claim_is_provisioned_where_it_goes_is_planned(
    cluster: DevCluster, namespace: str, capacity: str
) -> None:
    """The 4-GPU pod's claim is not bound yet: its class provisions on the first consumer's
    node (WaitForFirstConsumer, a CSI driver). The planner plans it like a pod without a
    claim (before: left to kube-scheduler), kube-scheduler selects the planned node for the
    claim, and once a volume is there (this test stands in for the driver's provisioner) the
    pod runs on it. When the driver tracks storage capacity and only a's (or b's)
    CSIStorageCapacity is large enough, the pod is planned there."""
    a, b = two_high_pods(cluster, namespace)
    storage_class = f"{namespace}-fast"
    driver = CSI_DRIVER if capacity == "untracked" else f"tracked.{CSI_DRIVER}"
    cluster.apply(
        [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "CSIDriver",
                "metadata": {"name": driver},
                "spec": {"storageCapacity": capacity != "untracked", "attachRequired": False},
            },
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": storage_class},
                "provisioner": driver,
                "volumeBindingMode": "WaitForFirstConsumer",
            },
        ]
    )
    if capacity != "untracked":
        sizes = [
            (a, "10Gi" if capacity == "on-a" else "512Mi"),
            (b, "10Gi" if capacity == "on-b" else "512Mi"),
        ]
        cluster.apply(
            [
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "CSIStorageCapacity",
                    "metadata": {"name": f"capacity-{i}"},
                    "storageClassName": storage_class,
                    "nodeTopology": {"matchLabels": {"kubernetes.io/hostname": node}},
                    "capacity": size,
                }
                for i, (node, size) in enumerate(sizes)
            ],
            "-n",
            namespace,
        )
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "scratch", "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    big = with_claim(deployment("big", 4, "frag-mid", namespace), "scratch")
    cluster.apply([claim, big], "-n", namespace)
    wait_for(lambda: unschedulable(cluster, namespace, "big"), what="the 4-GPU pod Unschedulable")

    cluster.start_extender()

    def selected() -> str | None:
        meta = get_json(cluster, "pvc", "scratch", "-n", namespace)["metadata"]
        return (meta.get("annotations") or {}).get("volume.kubernetes.io/selected-node")

    node = wait_for(selected, timeout=60, what="a node selected for the claim")
    assert node == {"on-a": a, "on-b": b}.get(capacity, node) and node in (a, b)
    provisioned = bound_volume(namespace, "scratch", csi=True)[0]
    provisioned["spec"]["storageClassName"] = storage_class
    cluster.apply([provisioned])
    wait_for(
        lambda: running_on(cluster, namespace).get("big") == node,
        timeout=60,
        what="the 4-GPU pod Running on the node selected for its claim",
    )
    assert set(running_on(cluster, namespace)) == {"high-a", "high-b", "big"}


def test_a_pod_sharing_a_read_write_once_pod_claim_is_left_to_kube_scheduler(
    cluster: DevCluster, namespace: str
) -> None:
    """The pool above, with high-b and a 2-GPU newcomer naming one ReadWriteOncePod claim:
    the newcomer fits either node, but kube-scheduler runs one pod of the claim at a time (it
    says so), so the planner leaves it to kube-scheduler, says why, and touches nothing."""
    cluster.apply(bound_volume(namespace, "journal", mode="ReadWriteOncePod"))
    wait_bound(cluster, namespace, "journal")
    high_b = with_claim(deployment("high-b", 2, "frag-high", namespace), "journal")
    a, b = two_high_pods(cluster, namespace, high_b)
    reader = with_claim(deployment("reader", 2, "frag-mid", namespace), "journal")
    cluster.apply([reader], "-n", namespace)
    wait_for(lambda: unschedulable(cluster, namespace, "reader"), what="the newcomer Unschedulable")
    pods = pods_by_name(cluster, namespace)
    (pod,) = [p for name, p in pods.items() if name.startswith("reader-")]
    (condition,) = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert "ReadWriteOncePod" in condition["message"], condition
    before = uids(cluster, namespace)

    event = decided(cluster, namespace, "NoImprovement", "reader")
    holder = next(name for name in pods if name.startswith("high-b-"))
    held = (
        f"left to kube-scheduler: volume claim journal (ReadWriteOncePod) shared with pod {holder}"
    )
    assert held in event["message"], event
    spec = get_json(cluster, "packingplan", event["message"].split()[2].rstrip(":"))["spec"]
    assert spec["bindings"] == [] and spec["moves"] == [] and spec["evictions"] == []
    time.sleep(3)
    assert uids(cluster, namespace) == before
    assert running_on(cluster, namespace) == {"high-a": a, "high-b": b}


def test_one_pod_of_a_read_write_once_pod_claim_none_uses_is_planned(
    cluster: DevCluster, namespace: str
) -> None:
    """The pool above, with two 4-GPU newcomers naming one ReadWriteOncePod claim no running
    pod uses: kube-scheduler would take either (it counts only scheduled users), so the
    planner places the higher one, big (moving a high pod), and says the other waits for it."""
    cluster.apply(bound_volume(namespace, "journal", mode="ReadWriteOncePod"))
    wait_bound(cluster, namespace, "journal")
    a, b = two_high_pods(cluster, namespace)
    big = with_claim(deployment("big", 4, "frag-mid", namespace), "journal")
    later = with_claim(deployment("later", 4, "frag-low", namespace), "journal")
    cluster.apply([big, later], "-n", namespace)
    for app in ("big", "later"):
        wait_for(
            lambda app=app: unschedulable(cluster, namespace, app), what=f"{app} Unschedulable"
        )

    cluster.start_extender()
    wait_for(
        lambda: running_on(cluster, namespace).get("big"), timeout=60, what="the 4-GPU pod Running"
    )
    event = wait_for(
        lambda: event_on(cluster, namespace, "NotPlaced", "later"),
        timeout=30,
        what="a NotPlaced Event on the other newcomer",
    )
    first = next(name for name in pods_by_name(cluster, namespace) if name.startswith("big-"))
    waits = f"volume claim journal (ReadWriteOncePod) one pod at a time: {first} first"
    assert waits in event["message"], event
    running = running_on(cluster, namespace)
    assert running["big"] in (a, b) and set(running) == {"high-a", "high-b", "big"}, running


def test_replicas_spread_over_nodes(cluster: DevCluster, namespace: str) -> None:
    replicas_kept_apart(cluster, namespace, "spread")


def test_replicas_kept_one_per_node(cluster: DevCluster, namespace: str) -> None:
    replicas_kept_apart(cluster, namespace, "anti-affinity")


def replicas_kept_apart(cluster: DevCluster, namespace: str, rule: str) -> None:
    """Replicas r1 (on a) and r2 (on b) kept one per node: by a spread over hostnames with
    maxSkew 1 (node d, too small for any, keeps none, so kube-scheduler's skew minimum is 0)
    or by hostname anti-affinity. b has room but holds r2; c has none. The planner moves f2
    or f3 from c to b and r3 goes to c, and kube-scheduler accepts both (r3 on b it would
    refuse)."""
    cluster.apply(priority_classes())
    cluster.stop_component("extender")
    a, b, c, d = (f"{namespace}-{x}" for x in "abcd")
    spread = {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"replicas": "r"}},
    }
    apart = {"matchLabels": {"replicas": "r"}}

    def replica(name: str) -> dict[str, Any]:
        obj = deployment(name, 2, "frag-high", namespace)
        template = obj["spec"]["template"]
        template["metadata"]["labels"]["replicas"] = "r"
        if rule == "spread":
            template["spec"]["topologySpreadConstraints"] = [spread]
        else:
            term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": apart}
            template["spec"]["affinity"] = {
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
            }
        return obj

    def run_on(node: str, objects: list[dict[str, Any]], gpus: int = 4) -> None:
        cluster.create_nodes([NodeSpec(node, gpus=gpus, labels={POOL: namespace})])
        cluster.apply(objects, "-n", namespace)
        names = [o["metadata"]["name"] for o in objects]
        wait_for(
            lambda: all(running_on(cluster, namespace).get(n) == node for n in names),
            what=f"{names} on {node}",
        )

    run_on(a, [replica("r1"), deployment("f1", 2, "frag-high", namespace)])
    run_on(b, [replica("r2"), bare_pod("filler", 2, "frag-high", namespace)])
    run_on(c, [deployment(f, 2, "frag-high", namespace) for f in ("f2", "f3")])
    cluster.kubectl("delete", "pod", "filler", "-n", namespace, "--wait=true")
    cluster.create_nodes([NodeSpec(d, gpus=1, labels={POOL: namespace})])
    cluster.apply([replica("r3")], "-n", namespace)
    wait_for(lambda: unschedulable(cluster, namespace, "r3"), what="r3 Unschedulable")

    cluster.start_extender()
    wait_for(lambda: running_on(cluster, namespace).get("r3"), timeout=60, what="r3 Running")
    running = running_on(cluster, namespace)
    # One of f2 and f3 (alike) moved to b.
    assert sorted((running.pop("f2"), running.pop("f3"))) == [b, c], running
    assert running == {"r1": a, "f1": a, "r2": b, "r3": c}, running
