"""The fallback planner on the real scheduler: a fragmented GPU pool where kube-scheduler, with
its own preemption, leaves a multi-GPU pod Pending; dunnage plans, evicts only what the plan
says (lower priority only), moves one pod, and the pod runs."""

from __future__ import annotations

import json
import time

from dunnage.devcluster.cluster import DevCluster
from e2e.conftest import get_json, wait_for
from e2e.gpu_pool import deployment, place, priority_classes, running_on, unschedulable


def test_fragmented_gpus_planned_and_executed(cluster: DevCluster, namespace: str) -> None:
    cluster.apply(priority_classes())
    # With the extender (and its planner) down, kube-scheduler keeps scheduling: it is ignorable.
    cluster.stop_component("extender")
    a, b, c = (f"{namespace}-{x}" for x in "abc")
    place(cluster, namespace, a, [("low-a", 2, "frag-low"), ("high-a", 2, "frag-high")])
    place(cluster, namespace, b, [("low-b", 2, "frag-low"), ("high-b", 2, "frag-high")])
    place(cluster, namespace, c, [("high-c", 2, "frag-high")])
    before = running_on(cluster, namespace)

    # 4 GPUs at mid priority: no node frees 4 GPUs by preempting lower pods alone.
    cluster.apply([deployment("big", 4, "frag-mid", namespace)], "-n", namespace)

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
    print(f"planned and placed in {elapsed:.1f}s: {spec['evictions']} {spec['moves']}")
