"""Crash recovery: the planner process dies right after an eviction call, before recording it
in the PackingPlan's status (the worst moment); a restarted planner resumes the plan from the
PackingPlan object, never evicts a pod twice, and completes it. And a PodDisruptionBudget
created while it was down holds the rest of the plan back until it allows the eviction."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest

from dunnage.devcluster.cluster import DevCluster
from dunnage.scheduler_extender.fallback import CRASH_AFTER_EVICTIONS_ENV
from e2e.conftest import get_json, pods_by_name, wait_for
from e2e.gpu_pool import deployment, place, priority_classes, running_on, unschedulable


def uids(cluster: DevCluster, namespace: str) -> dict[str, str]:
    return {
        pod["metadata"]["uid"]: name
        for name, pod in pods_by_name(cluster, namespace).items()
        if not pod["metadata"].get("deletionTimestamp")
    }


def metric(cluster: DevCluster, name: str) -> float:
    url = f"http://127.0.0.1:{cluster.ports['extender']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def crash_mid_plan(
    cluster: DevCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, Any], set[str], dict[str, str]]:
    """A plan with one eviction and one move, its planner killed right after the eviction
    call: (the plan's name, its spec, its victims' UIDs, the namespace's pods before)."""
    cluster.apply(priority_classes())
    cluster.stop_component("extender")
    a, b, c = (f"{namespace}-{x}" for x in "abc")
    # The low pods are bare: evicted, nothing recreates them, so while the planner is down
    # nothing can take the room the plan is making.
    place(cluster, namespace, a, [("low-a", 2, "frag-low"), ("high-a", 2, "frag-high")], ("low-a",))
    place(cluster, namespace, b, [("low-b", 2, "frag-low"), ("high-b", 2, "frag-high")], ("low-b",))
    place(cluster, namespace, c, [("high-c", 2, "frag-high")])
    cluster.apply([deployment("big", 4, "frag-mid", namespace)], "-n", namespace)
    wait_for(lambda: unschedulable(cluster, namespace, "big"), what="the 4-GPU pod Unschedulable")
    before = uids(cluster, namespace)

    monkeypatch.setenv(CRASH_AFTER_EVICTIONS_ENV, "1")
    cluster.start_extender()
    wait_for(lambda: "extender" not in cluster.running(), timeout=60, what="the planner to crash")
    (plan,) = [
        p
        for p in get_json(cluster, "packingplans")["items"]
        if any(bd["pod"].startswith(f"{namespace}/big") for bd in p["spec"]["bindings"])
    ]
    name, spec = plan["metadata"]["name"], plan["spec"]
    victims = {e["uid"] for e in spec["evictions"]} | {m["uid"] for m in spec["moves"]}
    assert len(victims) == 2, spec  # one eviction (a bare low pod), one move (a high pod)
    assert plan["status"]["phase"] == "Executing"
    assert not plan["status"].get("evicted")  # it died before recording its eviction
    gone = set(before) - set(uids(cluster, namespace))
    assert len(gone) == 1 and gone <= victims
    monkeypatch.delenv(CRASH_AFTER_EVICTIONS_ENV)
    return name, spec, victims, before


def test_planner_killed_mid_plan_resumes_without_evicting_twice(
    cluster: DevCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _, victims, before = crash_mid_plan(cluster, namespace, monkeypatch)
    cluster.start_extender()
    wait_for(
        lambda: get_json(cluster, "packingplan", name)["status"].get("phase") == "Succeeded",
        timeout=60,
        what="the resumed plan Succeeded",
    )
    assert running_on(cluster, namespace).get("big")
    # Exactly the plan's victims are gone, each once: the restarted planner saw the first one
    # gone and made only the remaining call (the move).
    assert set(before) - set(uids(cluster, namespace)) == victims
    assert metric(cluster, "dunnage_evictions_total") == 0
    assert metric(cluster, "dunnage_moves_total") == 1
    assert metric(cluster, 'dunnage_plans_finished_total{phase="Succeeded"}') == 1
    assert metric(cluster, 'dunnage_plans_finished_total{phase="Expired"}') == 0
    assert sorted(get_json(cluster, "packingplan", name)["status"]["evicted"]) == sorted(victims)


def test_a_budget_holds_the_resumed_plan_until_it_allows_the_move(
    cluster: DevCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, spec, victims, _ = crash_mid_plan(cluster, namespace, monkeypatch)
    (move,) = spec["moves"]
    app = next(
        pod["metadata"]["labels"]["app"]
        for pod in pods_by_name(cluster, namespace).values()
        if pod["metadata"]["uid"] == move["uid"]
    )
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{app}-budget"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": app}}},
    }
    cluster.apply([budget], "-n", namespace)
    log = cluster.logs / "extender.log"
    refused = f"eviction of {move['pod']} refused by a PodDisruptionBudget"
    already = log.read_text(errors="replace").count(refused)

    cluster.start_extender()
    wait_for(
        lambda: log.read_text(errors="replace").count(refused) > already,
        timeout=60,
        what="the resumed plan's move refused by the budget",
    )
    time.sleep(2)  # eight more ticks, each retrying the eviction
    plan = get_json(cluster, "packingplan", name)
    assert plan["status"]["phase"] == "Executing"
    assert sorted(plan["status"]["evicted"]) == sorted(victims - {move["uid"]})
    assert move["uid"] in uids(cluster, namespace)  # the budget held
    assert log.read_text(errors="replace").count(refused) == already + 1  # said once

    cluster.kubectl("delete", "pdb", budget["metadata"]["name"], "-n", namespace)
    wait_for(
        lambda: get_json(cluster, "packingplan", name)["status"].get("phase") == "Succeeded",
        timeout=60,
        what="the plan Succeeded once the budget was gone",
    )
    assert move["uid"] not in uids(cluster, namespace)
    assert running_on(cluster, namespace).get("big")
