"""Pure parts of the fallback planner: which pods trigger it and what a PackingPlan records."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dunnage.cluster import snapshot_from_objects
from dunnage.cluster.devices import CLASS_RESOURCE_PREFIX
from dunnage.scheduler_extender.fallback import (
    FINISHED_PHASES,
    REDECIDE_AFTER_SECONDS,
    UNSCHEDULABLE_FLUSH_SECONDS,
    Decision,
    PlannerSettings,
    already_decided,
    batch_closed,
    executing_from,
    executing_orders,
    is_unschedulable,
    last_ended_plan,
    leaving_pods,
    plan_object,
    plannable,
    plans_to_prune,
    unmet_orders,
)
from dunnage.solver.planner import solve
from tests.dra_objects import dra_pod, naming_pod, shared_claim
from tests.test_devices import _cluster as dra_cluster


def pending(reason: str = "Unschedulable", **spec: object) -> dict:
    return {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": dict(spec),
        "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": reason}]},
    }


def node(name: str) -> dict:
    alloc = {"cpu": "8", "memory": "8Gi", "pods": "110", "nvidia.com/gpu": "4"}
    return {"kind": "Node", "metadata": {"name": name}, "status": {"allocatable": alloc}}


def pod(
    name: str,
    gpus: int,
    prio: int,
    on: str | None = None,
    *,
    cpu: str | None = None,
    namespace: str = "ml",
    owner: str | None = None,
) -> dict:
    """A pod of a ReplicaSet (``owner``, by default one of its own) asking for ``gpus``."""
    resources: dict = {"limits": {"nvidia.com/gpu": gpus} if gpus else {}}
    if cpu:
        resources["requests"] = {"cpu": cpu}
    spec: dict = {"priority": prio, "containers": [{"name": "c", "resources": resources}]}
    if on:
        spec["nodeName"] = on
    ref = {"kind": "ReplicaSet", "name": owner or f"rs-{name}", "controller": True}
    meta = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "ownerReferences": [ref]}
    return {"kind": "Pod", "metadata": meta, "spec": spec}


def test_only_unschedulable_unbound_pods_trigger() -> None:
    assert is_unschedulable(pending())
    assert not is_unschedulable(pending(reason="SchedulerError"))
    assert not is_unschedulable(pending(nodeName="n1"))
    assert not is_unschedulable({"metadata": {}, "spec": {}, "status": {}})


def test_packing_plan_records_everything_needed_to_resume() -> None:
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
    # cpu-low runs on a and is in the way of gpu-high (it needs 2 cpu); it requests no GPU,
    # so the extender would never see its replacement: the plan may not evict or move it.
    snap = snapshot_from_objects(
        [
            node("a"),
            pod("cpu-low", 0, 1, on="a", cpu="4"),
            pod("cpu-low-2", 0, 1, on="a", cpu="4"),
            pod("gpu-high", 1, 10, cpu="4"),
            pod("cpu-pending", 0, 10, cpu="4"),
        ]
    )
    narrowed = plannable(snap, ("nvidia.com/gpu",))
    assert {p.name for p in narrowed.pending} == {"gpu-high"}
    plan = solve(narrowed, time_limit=2)
    assert plan.moves == () and plan.evictions == () and plan.bindings == ()
    # Without the narrowing the planner would evict a cpu-only pod for gpu-high.
    assert solve(snap, time_limit=2).evictions


def test_pods_another_scheduler_places_are_frozen_and_not_planned() -> None:
    # x (low) is in big's way on a; it belongs to another scheduler, which does not call the
    # extender: its replacement could not be steered, so the plan may not move or evict it.
    x, later = pod("x", 2, 0, "a"), pod("later", 2, 20)
    for other in (x, later):
        other["spec"]["schedulerName"] = "volcano"
    snap = snapshot_from_objects([node("a"), x, pod("y", 2, 0, "a"), pod("big", 4, 10), later])
    narrowed = plannable(snap, ("nvidia.com/gpu",))
    assert {p.name for p in narrowed.pending} == {"big"}
    plan = solve(narrowed, time_limit=2)
    assert plan.moves == () and plan.evictions == () and plan.bindings == ()
    assert {e.pod for e in solve(snap, time_limit=2).evictions} >= {"ml/x"}  # unfiltered


def test_pods_on_their_way_out_are_frozen_or_left_out() -> None:
    # Namespace "gone" is being deleted: its pending pod can never be bound there, and its
    # running pod, moved, would get no replacement. A pod being deleted is leaving too.
    namespaces = [
        {"kind": "Namespace", "metadata": {"name": "ml"}, "status": {"phase": "Active"}},
        {"kind": "Namespace", "metadata": {"name": "gone"}, "status": {"phase": "Terminating"}},
    ]
    bye = pod("bye", 1, 5)
    bye["metadata"]["deletionTimestamp"] = "2026-12-04T12:00:00Z"
    pods = [
        pod("old", 2, 0, "a", namespace="gone"),
        pod("late", 1, 5, namespace="gone"),
        pod("y", 3, 20, "b"),
        pod("big", 4, 10),
        bye,
    ]
    leaving = leaving_pods(pods, namespaces)
    assert leaving == {"gone/old", "gone/late", "ml/bye"}
    snap = snapshot_from_objects([node("a"), node("b"), *pods])
    planned = plannable(snap, ("nvidia.com/gpu",), leaving)
    assert {p.key for p in planned.pending} == {"ml/big"}
    # Only evicting "old" would make room for "big" ("y" outranks it): frozen, it stays.
    plan = solve(planned, time_limit=2)
    assert plan.moves == () and plan.evictions == () and plan.bindings == ()
    unfiltered = solve(snap, time_limit=2)
    assert [e.pod for e in unfiltered.evictions] == ["gone/old"]
    assert {b.pod for b in unfiltered.bindings} & {"gone/late", "ml/bye"}


def test_an_executing_plan_says_what_it_still_waits_for() -> None:
    # Two half-used 4-GPU nodes and a pending 4-GPU pod: one move (x or y) makes room.
    before = [pod("x", 2, 0, "a"), pod("y", 2, 0, "b"), pod("big", 4, 10)]
    snap = snapshot_from_objects([node("a"), node("b"), *before])
    plan = solve(snap, time_limit=2, workers=1)
    (move,) = plan.moves
    ex = executing_from(plan_object("plan-1", plan, snap, PlannerSettings()))
    target, owner = plan.assignments["ml/big"], f"ml/ReplicaSet/rs-{move.pod[3:]}"
    assert unmet_orders(ex, before) == [
        f"{move.pod} not yet evicted",
        f"ml/big on no node, planned for {target}",
        f"{owner} has 0 of 1 pods on {move.target}",
    ]
    ex.evicted.add(f"uid-{move.pod[3:]}")
    others = [p for p in before if f"ml/{p['metadata']['name']}" not in (move.pod, "ml/big")]
    replacement = pod("r", 2, 0, move.target, owner=owner.rsplit("/", 1)[1])
    wrong = "a" if target == "b" else "b"
    assert unmet_orders(ex, [*others, pod("big", 4, 10, wrong), replacement]) == [
        f"ml/big on {wrong}, planned for {target}"
    ]
    done = [*others, pod("big", 4, 10, target), replacement]
    assert unmet_orders(ex, done) == []
    # Until the replacement lands, the move is not done; a planned pod deleted meanwhile is.
    assert unmet_orders(ex, others) == [f"{owner} has 0 of 1 pods on {move.target}"]


def test_a_pod_following_a_planned_one_by_their_claim_is_steered_but_not_waited_for() -> None:
    """Two pending pods name one ResourceClaim of 4 GPUs, not allocated yet: p (the first by
    name) is planned with its devices, one move making room; q follows it. The plan records
    q with p's node: the extender steers q there (not keeping it off the plan's node), and
    the plan is done once p runs there, wherever q is."""
    objects = dra_cluster(
        dra_pod("x", 2, node="a"),
        dra_pod("y", 2, node="b"),
        shared_claim("both", 4),
        naming_pod("p", "both", priority=100),
        naming_pod("q", "both", priority=100),
    )
    snap = snapshot_from_objects(objects)
    assert snap.pod_by_key["ml/q"].follows == "ml/p"
    planned = plannable(snap, (CLASS_RESOURCE_PREFIX + "gpu",))
    assert {p.key for p in planned.pending} == {"ml/p", "ml/q"}
    plan = solve(planned, time_limit=2, workers=1)
    target = plan.assignments["ml/p"]
    assert plan.assignments["ml/q"] is None
    obj = plan_object("plan-1", plan, planned, PlannerSettings())
    assert obj["spec"]["followers"] == [{"pod": "ml/q", "node": target}]
    ex = executing_from(obj)
    assert ex.orders.pods == {"ml/p": target, "ml/q": target} and target in ex.orders.nodes
    assert ex.bindings == {"ml/p": target}
    ex.evicted.update(f"uid-{m.pod[3:]}" for m in plan.moves)
    (move,) = plan.moves
    stays, moved = (o for o in objects if o["kind"] == "Pod" and o["spec"].get("nodeName"))
    if f"ml/{stays['metadata']['name']}" == move.pod:
        stays, moved = moved, stays
    replacement = {**moved, "spec": {**moved["spec"], "nodeName": move.target}}
    running = [naming_pod("p", "both", node=target), stays, replacement]
    assert unmet_orders(ex, running) == []  # q pending


def test_a_batch_stays_open_while_a_burst_keeps_coming() -> None:
    settings = PlannerSettings(batch_window_seconds=1.0, batch_quiet_seconds=0.5)
    assert not batch_closed([], 10.0, settings)
    assert not batch_closed([0.0, 0.1], 0.9, settings)  # the window has not passed
    assert batch_closed([0.0, 0.1], 1.0, settings)  # quiet since 0.1
    assert not batch_closed([0.0, 0.7], 1.0, settings)  # the last came 0.3 s ago
    assert batch_closed([0.0, 0.7], 1.2, settings)
    assert batch_closed([0.0, 1.9], 2.0, settings)  # twice the window: closed however busy
    no_wait = PlannerSettings(batch_window_seconds=0.0, batch_quiet_seconds=0.5)
    assert batch_closed([5.0], 5.0, no_wait)  # no window, no extension
    no_quiet = PlannerSettings(batch_window_seconds=1.0, batch_quiet_seconds=0.0)
    assert batch_closed([0.0, 0.99], 1.0, no_quiet)  # the window alone, as before


@given(
    times=st.lists(st.floats(0, 10), min_size=1, max_size=8),
    now=st.floats(0, 30),
    window=st.floats(0, 5),
    quiet=st.floats(0, 5),
)
def test_a_batch_closes_after_its_window_and_by_twice_it(
    times: list[float], now: float, window: float, quiet: float
) -> None:
    settings = PlannerSettings(batch_window_seconds=window, batch_quiet_seconds=quiet)
    since_first = now - min(times)
    closed = batch_closed(times, now, settings)
    if since_first < window:
        assert not closed
    elif since_first >= 2 * window:
        assert closed
    else:
        assert closed == (now - max(times) >= quiet)


def test_a_standby_steers_by_the_executing_unexpired_plans_only() -> None:
    before = [pod("x", 2, 0, "a"), pod("y", 2, 0, "b"), pod("big", 4, 10)]
    snap = snapshot_from_objects([node("a"), node("b"), *before])
    plan = solve(snap, time_limit=2, workers=1)
    recorded = plan_object("plan-1", plan, snap, PlannerSettings())
    expires = executing_from(recorded).orders.expires_at

    def with_phase(name: str, phase: str | None) -> dict:
        obj = {**recorded, "metadata": {**recorded["metadata"], "name": name}}
        return {**obj, "status": {"phase": phase}} if phase else obj

    plans = [
        with_phase("recorded", None),  # not yet given a phase
        with_phase("running", "Executing"),
        *(with_phase(p.lower(), p) for p in ("Succeeded", "Expired", "DryRun", "Certified")),
    ]
    (orders,) = executing_orders(plans, now=expires - 1)
    assert orders == executing_from(plans[1]).orders
    assert orders.pods == {"ml/big": plan.assignments["ml/big"]}
    assert executing_orders(plans, now=expires) == []  # its TTL has run out


def test_a_move_to_a_node_with_a_sibling_waits_for_the_replacement() -> None:
    # "s" (same ReplicaSet as "x") already runs on b; the plan moves x to b to free a.
    before = [
        pod("x", 2, 0, "a", owner="rs"),
        pod("s", 1, 0, "b", owner="rs"),
        pod("y", 1, 0, "b"),
        pod("big", 4, 10),
    ]
    snap = snapshot_from_objects([node("a"), node("b"), *before])
    plan = solve(snap, time_limit=2, workers=1)
    assert [(m.pod, m.target) for m in plan.moves] == [("ml/x", "b")]
    ex = executing_from(plan_object("plan-1", plan, snap, PlannerSettings()))
    ex.evicted.add("uid-x")
    placed = [before[1], before[2], pod("big", 4, 10, "a")]
    # The sibling alone is not the replacement: rs needs 2 pods on b.
    assert unmet_orders(ex, placed) == ["ml/ReplicaSet/rs has 1 of 2 pods on b"]
    assert unmet_orders(ex, [*placed, pod("x2", 2, 0, "b", owner="rs")]) == []


def test_a_decision_stands_until_the_pods_the_policy_or_the_cluster_change() -> None:
    pods, policy = frozenset({"ns/a", "ns/b"}), PlannerSettings(max_evictions=0)
    last = Decision(pods, policy, generation=7, at=100.0)
    assert not already_decided(None, pods, policy, 7, 100.0)
    assert already_decided(last, pods, policy, 7, 100.0 + 10 * REDECIDE_AFTER_SECONDS)
    # Other pending pods, or an edited policy: decide again at once.
    assert not already_decided(last, frozenset({"ns/a"}), policy, 7, 101.0)
    assert not already_decided(last, pods, PlannerSettings(max_evictions=2), 7, 101.0)
    # The cluster changed: decide again, but not before the pause (churn never stops).
    assert already_decided(last, pods, policy, 8, 100.0 + REDECIDE_AFTER_SECONDS / 2)
    assert not already_decided(last, pods, policy, 8, 100.0 + REDECIDE_AFTER_SECONDS)


def recorded(name: str, created: str, phase: str | None) -> dict:
    status = {"phase": phase} if phase else {}
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": status}


def test_plans_beyond_the_history_limit_are_the_oldest_finished_ones() -> None:
    plans = [
        recorded("plan-c", "2026-12-04T10:00:02Z", "Succeeded"),
        recorded("plan-a", "2026-12-04T10:00:00Z", "Executing"),  # oldest, but still running
        recorded("plan-b", "2026-12-04T10:00:01Z", "Certified"),
        recorded("plan-d", "2026-12-04T10:00:03Z", "NoImprovement"),
        recorded("plan-e", "2026-12-04T10:00:04Z", None),  # just created: no phase yet
        recorded("plan-f", "2026-12-04T10:00:04Z", "Expired"),
    ]
    assert plans_to_prune(plans, 2) == ["plan-b", "plan-c"]
    assert plans_to_prune(plans, 0) == ["plan-b", "plan-c", "plan-d", "plan-f"]
    assert plans_to_prune(plans, 4) == plans_to_prune(plans, 100) == []


phases = st.sampled_from([*sorted(FINISHED_PHASES), "Executing", "Pending", None])


@given(
    st.lists(st.tuples(st.integers(0, 59), phases), max_size=30, unique_by=lambda t: t[0]),
    st.integers(0, 40),
)
def test_pruning_keeps_the_newest_finished_and_every_unfinished_plan(
    made: list[tuple[int, str | None]], keep: int
) -> None:
    plans = [recorded(f"plan-{i:02d}", f"2026-12-04T10:00:{i:02d}Z", ph) for i, ph in made]
    pruned = plans_to_prune(plans, keep)
    finished = sorted(f"plan-{i:02d}" for i, ph in made if ph in FINISHED_PHASES)
    assert len(pruned) == max(0, len(finished) - keep)
    assert pruned == finished[: len(pruned)]  # the oldest finished ones, oldest first


def test_every_event_the_planner_posts_is_in_the_docs_table() -> None:
    """docs/extender.md "Events" lists each reason the planner and the leader election post."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    posted = set()
    for path in ("dunnage/scheduler_extender/fallback.py", "dunnage/cluster/leadership.py"):
        source = (repo / path).read_text()
        posted |= set(re.findall(r'_event\(\s*\w+,\s*"([A-Z]\w+)"', source))
        posted |= set(re.findall(r'phase, reason = "\w+", "([A-Z]\w+)"', source))
        posted |= set(re.findall(r'post_event\([^)]*?"([A-Z]\w+)"', source))
    docs = (repo / "docs" / "extender.md").read_text()
    table = docs.split("\n## Events\n", 1)[1].split("\n#", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert {"Planned", "LeaderElection"} <= posted  # the patterns still match
    assert posted == documented


def ended(name: str, phase: str, at: str | None) -> dict:
    conditions = [{"type": "Complete", "lastTransitionTime": at}] if at else []
    return {"metadata": {"name": name}, "status": {"phase": phase, "conditions": conditions}}


def test_a_starting_planner_marks_the_nodes_of_the_plan_that_ended_last() -> None:
    # 2026-12-04T10:05:00Z
    now = 1796378700.0
    plans = [
        ended("plan-a", "Succeeded", "2026-12-04T10:01:00Z"),
        ended("plan-b", "Expired", "2026-12-04T10:04:00Z"),  # the last to end
        ended("plan-c", "Certified", "2026-12-04T10:04:30Z"),  # never executed: kept nothing
        ended("plan-d", "NoImprovement", None),
    ]
    assert last_ended_plan(plans, now) is plans[1]
    # Past kube-scheduler's flush its pods were retried anyway.
    assert last_ended_plan(plans, now + UNSCHEDULABLE_FLUSH_SECONDS) is None
    # A plan executing now was started after the last one ended, by a planner that marked it.
    assert last_ended_plan([*plans, ended("plan-e", "Executing", None)], now) is None
    assert last_ended_plan([], now) is None
