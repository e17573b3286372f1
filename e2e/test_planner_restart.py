"""Crash recovery and fail-over. The planner process dies right after an eviction call, before
recording it in the PackingPlan's status (the worst moment); a restarted planner, or a standby
replica that takes over the Lease, resumes the plan from the PackingPlan object, never evicts a
pod twice, and completes it. A PodDisruptionBudget created while it was down holds the rest of
the plan back until it allows the eviction. Under leader election one replica leads, the other
stands by; a leader hands the Lease over when stopped and exits when it loses it."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dunnage.devcluster.cluster import DevCluster, free_port
from dunnage.scheduler_extender.fallback import CRASH_AFTER_EVICTIONS_ENV
from e2e.conftest import get_json, lease_holder, pods_by_name, scrape, wait_for
from e2e.gpu_pool import deployment, place, priority_classes, running_on, unschedulable
from e2e.service import ReadyEndpoints


def uids(cluster: DevCluster, namespace: str) -> dict[str, str]:
    return {
        pod["metadata"]["uid"]: name
        for name, pod in pods_by_name(cluster, namespace).items()
        if not pod["metadata"].get("deletionTimestamp")
    }


def metric(cluster: DevCluster, name: str, port: int | None = None) -> float:
    return scrape(port or cluster.ports["extender"], name)


def pending_big_pod(cluster: DevCluster, namespace: str) -> dict[str, str]:
    """With the extender stopped, a pool where a 4-GPU pod waits Unschedulable and only a plan
    with one eviction and one move makes room: the namespace's pods (uid -> name) before."""
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
    return uids(cluster, namespace)


def big_pod_plan(cluster: DevCluster, namespace: str) -> tuple[dict[str, Any], set[str]]:
    """The one PackingPlan that places the namespace's "big" pod, and its victims' UIDs."""
    (plan,) = [
        p
        for p in get_json(cluster, "packingplans")["items"]
        if any(bd["pod"].startswith(f"{namespace}/big") for bd in p["spec"]["bindings"])
    ]
    spec = plan["spec"]
    return plan, {e["uid"] for e in spec["evictions"]} | {m["uid"] for m in spec["moves"]}


def the_crashed_plan(
    cluster: DevCluster, namespace: str, before: dict[str, str]
) -> tuple[str, dict[str, Any], set[str]]:
    """The plan whose planner died right after its first eviction call: (its name, its spec,
    its victims' UIDs)."""
    plan, victims = big_pod_plan(cluster, namespace)
    name, spec = plan["metadata"]["name"], plan["spec"]
    assert len(victims) == 2, spec  # one eviction (a bare low pod), one move (a high pod)
    assert plan["status"]["phase"] == "Executing"
    assert not plan["status"].get("evicted")  # it died before recording its eviction
    gone = set(before) - set(uids(cluster, namespace))
    assert len(gone) == 1 and gone <= victims
    return name, spec, victims


def crash_mid_plan(
    cluster: DevCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, Any], set[str], dict[str, str]]:
    """A plan with one eviction and one move, its planner killed right after the eviction
    call: (the plan's name, its spec, its victims' UIDs, the namespace's pods before)."""
    before = pending_big_pod(cluster, namespace)
    monkeypatch.setenv(CRASH_AFTER_EVICTIONS_ENV, "1")
    cluster.start_extender()
    wait_for(lambda: "extender" not in cluster.running(), timeout=60, what="the planner to crash")
    monkeypatch.delenv(CRASH_AFTER_EVICTIONS_ENV)
    return (*the_crashed_plan(cluster, namespace, before), before)


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


# --- leader election: two replicas behind a Service --------------------------------------

LEASE = "dunnage-extender"
# Short times so that a take-over after a crash comes within seconds (the defaults are 15/10/2).
LEASE_TIMES = (
    "--leader-elect-lease-duration=4",
    "--leader-elect-renew-deadline=3",
    "--leader-elect-retry-period=1",
)


@dataclass
class Replica:
    identity: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def readyz(self) -> tuple[int, str]:
        try:
            url = f"http://127.0.0.1:{self.port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc)  # not listening (yet, or any more)


class Replicas:
    """Extender replicas with --leader-elect (the Lease in the test's namespace) behind a
    stand-in for their Service on the address kube-scheduler calls."""

    def __init__(self, cluster: DevCluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.ports = [free_port(), free_port()]
        self.started: list[Replica] = []
        cluster.stop_component("extender")
        self.service = ReadyEndpoints(cluster.ports["extender"], self.ports)

    def start(self, identity: str, env: dict[str, str] | None = None) -> Replica:
        port = self.ports[len(self.started)]
        log = self.cluster.logs / f"extender-{self.namespace}-{identity}.log"
        argv = [sys.executable, "-m", "dunnage.cli", "extender", "serve", f"--port={port}"]
        argv += [f"--kubeconfig={self.cluster.kubeconfig}", "--leader-elect", *LEASE_TIMES]
        argv += [f"--leader-elect-namespace={self.namespace}"]
        argv += [f"--leader-elect-identity={identity}"]
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**self.cluster.env(), **(env or {})},
                cwd=self.cluster.dir,
            )
        replica = Replica(identity, port, process, log)
        self.started.append(replica)
        wait_for(
            lambda: replica.process.poll() is not None or replica.readyz()[0] in (200, 503),
            timeout=60,
            what=f"replica {identity} serving",
        )
        return replica

    def holder(self) -> str:
        return lease_holder(self.cluster, self.namespace, LEASE)

    def close(self) -> None:
        for replica in self.started:
            if replica.process.poll() is None:
                replica.process.kill()
                replica.process.wait(timeout=10)
        self.service.close()
        self.cluster.start_extender()


@pytest.fixture
def replicas(cluster: DevCluster, namespace: str) -> Iterator[Replicas]:
    group = Replicas(cluster, namespace)
    try:
        yield group
    finally:
        group.close()


def filtered(replica: Replica, pod: str, namespace: str, nodes: list[str]) -> list[str]:
    """The nodes ``replica`` lets ``namespace/pod`` (no GPUs) go to, of ``nodes``."""
    body = {
        "Pod": {
            "metadata": {"name": pod, "namespace": namespace, "uid": f"uid-{pod}"},
            "spec": {"containers": [{"name": "c", "image": "pause"}]},
        },
        "NodeNames": nodes,
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{replica.port}/filter", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return list(json.loads(response.read())["NodeNames"])


def test_one_leads_one_stands_by_steering_by_its_plans_and_the_lease_changes_hands(
    cluster: DevCluster, namespace: str, replicas: Replicas
) -> None:
    a = replicas.start("a")
    wait_for(lambda: replicas.holder() == "a", timeout=30, what="replica a leading")
    b = replicas.start("b")
    wait_for(lambda: b.readyz()[0] == 200, timeout=30, what="replica b ready")
    assert a.readyz()[0] == 200  # both answer kube-scheduler; one plans
    assert metric(cluster, "dunnage_extender_leader", a.port) == 1
    assert metric(cluster, "dunnage_extender_leader", b.port) == 0
    assert "b leads" not in b.log.read_text()

    # A plan the leader records (made by hand here): the standby steers by it while it
    # executes, and lets go once it has finished.
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    plan = {
        "apiVersion": "dunnage.io/v1alpha1",
        "kind": "PackingPlan",
        "metadata": {"name": f"{namespace}-plan"},
        "spec": {
            "policy": "default",
            "outcome": "improved",
            "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bindings": [{"pod": f"{namespace}/x", "node": "n2"}],
        },
    }
    cluster.apply([plan])
    assert filtered(b, "x", namespace, ["n1", "n2"]) == ["n1", "n2"]  # not executing yet

    def phase(value: str) -> None:
        cluster.kubectl(
            "patch",
            "packingplan",
            f"{namespace}-plan",
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"phase": value}}),
        )

    phase("Executing")
    wait_for(
        lambda: filtered(b, "x", namespace, ["n1", "n2"]) == ["n2"],
        timeout=10,
        what="the standby steering by the executing plan",
    )
    assert filtered(b, "y", namespace, ["n1", "n2"]) == ["n1"]  # the plan keeps n2 for x
    assert metric(cluster, "dunnage_active_plans", b.port) == 1
    phase("Succeeded")
    wait_for(
        lambda: filtered(b, "x", namespace, ["n1", "n2"]) == ["n1", "n2"],
        timeout=10,
        what="the standby letting go of the finished plan",
    )
    cluster.kubectl("delete", "packingplan", f"{namespace}-plan")

    a.process.terminate()  # what a pod's deletion sends
    assert a.process.wait(timeout=30) == 0
    assert "released the Lease" in a.log.read_text()
    wait_for(lambda: replicas.holder() == "b", timeout=30, what="replica b taking the Lease")
    wait_for(
        lambda: metric(cluster, "dunnage_extender_leader", b.port) == 1,
        timeout=10,
        what="replica b leading",
    )

    # Someone else holds the Lease now (as after a renewal b could not make in time): b stops.
    cluster.kubectl(
        "patch",
        "lease",
        LEASE,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 60}}',
    )
    assert b.process.wait(timeout=30) == 1
    assert f"lost the Lease {namespace}/{LEASE}" in b.log.read_text()
    assert replicas.holder() == "intruder"  # a replica that lost the Lease leaves it alone
    # Each change of leader is an Event on the Lease, as kube-scheduler records them.
    events = get_json(cluster, "events", "-n", namespace)["items"]
    on_lease = [
        (e["reason"], e["message"], e["source"]["component"])
        for e in events
        if e["involvedObject"]["kind"] == "Lease" and e["involvedObject"]["name"] == LEASE
    ]
    assert sorted(on_lease) == [
        ("LeaderElection", "a became leader", "dunnage-extender"),
        ("LeaderElection", "b became leader", "dunnage-extender"),
        ("LeaderElection", "b stopped leading", "dunnage-extender"),
    ]


def test_a_standby_takes_over_the_plan_its_leader_left_half_done(
    cluster: DevCluster, namespace: str, replicas: Replicas
) -> None:
    before = pending_big_pod(cluster, namespace)
    a = replicas.start("a", {CRASH_AFTER_EVICTIONS_ENV: "1"})
    wait_for(lambda: replicas.holder() == "a", timeout=30, what="replica a holding the Lease")
    b = replicas.start("b")
    assert a.process.wait(timeout=60) == 137  # died right after its first eviction call
    wait_for(lambda: replicas.holder() == "b", timeout=30, what="replica b taking over")
    plan, victims = big_pod_plan(cluster, namespace)
    name = plan["metadata"]["name"]
    wait_for(
        lambda: get_json(cluster, "packingplan", name)["status"].get("phase") == "Succeeded",
        timeout=60,
        what="the plan Succeeded under the new leader",
    )
    assert running_on(cluster, namespace).get("big")
    assert set(before) - set(uids(cluster, namespace)) == victims  # each victim once
    assert metric(cluster, "dunnage_evictions_total", b.port) == 0
    assert metric(cluster, "dunnage_moves_total", b.port) == 1
    assert metric(cluster, 'dunnage_plans_finished_total{phase="Succeeded"}', b.port) == 1
    assert replicas.holder() == "b"
    assert replicas.service.forwarded[b.port] > 0  # kube-scheduler's calls reached b
