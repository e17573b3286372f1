"""The autoscaling loop end to end: a real Prometheus scraping simulated engines, the operator's
timer scaling a ModelService's role Deployment on kwok GPU nodes.

Prometheus is the Debian package, installed by dunnage/devcluster/prometheus.sh when it is not on
PATH (as root; the test fails, never skips, if it cannot get it) and run as a local process with a
generated configuration. The engine endpoints are local processes of
``python -m dunnage.sim.engine_stub`` whose load the test sets over HTTP. Pods of a real cluster
would get their ``namespace``/``model_service``/``role`` labels by kubernetes_sd relabeling; the
kwok pods serve nothing, so the scrape configuration attaches the same labels to static targets.
"""

from __future__ import annotations

import http.server
import json
import math
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from dunnage.devcluster.cluster import DevCluster, NodeSpec, free_port
from dunnage.devcluster.prometheus import (
    http_ok,
    prometheus_api,
    running_prometheus,
    stop_process,
)
from dunnage.operator.autoscaler import FIELD_MANAGER
from dunnage.operator.bench import apiserver_requests
from dunnage.operator.handlers import FINALIZER
from dunnage.operator.handlers import KOPF_DEFAULT_FINALIZER as KOPF_DEFAULT
from e2e.conftest import get_json, render_chart, scrape, wait_for

POOL_LABEL = "dunnage.io/pool"
POOL = "autoscaling-e2e"
MS = "chat"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Stub:
    """One simulated engine (a local process), labelled as a pod of a ModelService role."""

    port: int
    model_service: str
    role: str
    process: subprocess.Popen[bytes]

    def set(self, **load: float) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/load",
            data=json.dumps(load).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer


@pytest.fixture
def engine_roles() -> tuple[str, str]:
    """The roles of chat's two engines (a test of prefill and decode parametrizes it)."""
    return ("serve", "serve")


@pytest.fixture
def engines(tmp_path: Path, namespace: str, engine_roles: tuple[str, str]) -> Iterator[list[Stub]]:
    """Two engines of chat (of ``engine_roles``), and one of another ModelService that must
    not count."""
    stubs = []
    try:
        for model_service, role in zip((MS, MS, "other"), (*engine_roles, "serve"), strict=True):
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "dunnage.sim.engine_stub", f"--port={port}"],
                stdout=(tmp_path / f"stub-{port}.log").open("wb"),
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            stubs.append(Stub(port, model_service, role, process))
        for stub in stubs:
            wait_for(
                lambda s=stub: http_ok(f"http://127.0.0.1:{s.port}/load"),  # type: ignore[misc]
                timeout=20,
                what=f"engine stub on port {stub.port}",
            )
        yield stubs
    finally:
        for stub in stubs:
            stop_process(stub.process)


@pytest.fixture
def prometheus(tmp_path: Path, namespace: str, engines: list[Stub]) -> Iterator[str]:
    """A real Prometheus scraping the engines every second; yields its URL."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "vllm",
                "scrape_interval": "1s",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{s.port}"],
                        "labels": {
                            "namespace": namespace,
                            "model_service": s.model_service,
                            "role": s.role,
                        },
                    }
                    for s in engines
                ],
            }
        ],
    }
    with running_prometheus(config, tmp_path) as url:
        wait_for(
            lambda: len(prometheus_api(url, "query", query="up == 1")["result"]) == len(engines),
            timeout=30,
            what="Prometheus scraping every engine",
        )
        yield url


def replicas(cluster: DevCluster, namespace: str, role: str = "serve", name: str = MS) -> int:
    """The role Deployment's spec.replicas; -1 while the operator has not created it."""
    args = ("get", "deployment", f"{name}-{role}", "-n", namespace, "--ignore-not-found")
    out = cluster.kubectl(*args, "-o", "json").stdout.strip()
    return int(json.loads(out)["spec"]["replicas"]) if out else -1


def running_pods(cluster: DevCluster, namespace: str) -> list[dict[str, Any]]:
    items = get_json(cluster, "pods", "-n", namespace, "-l", f"dunnage.io/model-service={MS}")
    return [
        p
        for p in items["items"]
        if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running"
    ]


def gpu_nodes(cluster: DevCluster, prefix: str, count: int = 2) -> None:
    """kwok nodes of 4 GPUs in the test pool (nodes are cluster-wide: one prefix per test)."""
    cluster.create_nodes(
        [
            NodeSpec(f"{prefix}-{i}", cpu="64", memory="512Gi", gpus=4, labels={POOL_LABEL: POOL})
            for i in range(count)
        ]
    )


def quick_policy(
    name: str, prometheus: str, metric: str = "concurrency", **spec: Any
) -> dict[str, Any]:
    """An AutoscalingPolicy with short windows so that an e2e is quick: a sample a second, a
    4 s rate() over the 1 s scrapes, a 10 s stable and 2 s panic window, a decision a second."""
    return {
        "apiVersion": "dunnage.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "metadata": {"name": name},
        "spec": {
            "slo": {"ttftSeconds": 1, "tpotSeconds": 0.1},
            "metrics": {
                "prometheus": {"url": prometheus, "rateWindowSeconds": 4},
                "sampleSeconds": 1,
            },
            "kpa": {
                "metric": metric,
                "stableWindowSeconds": 10,
                "panicWindowPercentage": 20,
                "tickSeconds": 1,
            },
            **spec,
        },
    }


def static_policy(name: str, prometheus: str, min_replicas: int) -> dict[str, Any]:
    """A quick static policy for the serve role: target 10, replicas min_replicas..4."""
    return quick_policy(
        name,
        prometheus,
        policy="static",
        roles={"serve": {"target": 10, "minReplicas": min_replicas, "maxReplicas": 4}},
    )


def policy_ready(cluster: DevCluster, namespace: str, name: str) -> tuple[str, str, str] | None:
    """The AutoscalingPolicy's Ready condition as (status, reason, message), if it has one."""
    status = get_json(cluster, "autoscalingpolicy", name, "-n", namespace).get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond["status"]), str(cond.get("reason")), str(cond.get("message"))
    return None


def model_service(
    policy: str,
    serve: dict[str, int],
    roles: dict[str, dict[str, int]] | None = None,
    name: str = MS,
) -> dict[str, Any]:
    """The ModelService the tests scale: one ``serve`` role (or ``roles``) on the test's kwok
    GPU nodes."""
    return {
        "apiVersion": "dunnage.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "m", "uri": "hf://org/model"},
            "engine": {"image": "vllm/vllm-openai:v0.11.0"},
            "resources": {"gpus": 1, "cpu": "1", "memory": "4Gi"},
            "roles": roles or {"serve": serve},
            "nodeSelector": {POOL_LABEL: POOL},
            "autoscaling": {"policyRef": {"name": policy}},
        },
    }


def api_reads(cluster: DevCluster) -> dict[str, float]:
    """The kube-apiserver's count of the reads the autoscaling loop could make per tick (no
    other component of the local cluster makes them while this test runs: controllers list
    once and then watch)."""
    counts = apiserver_requests(cluster, ("autoscalingpolicies", "deployments"))
    reads = ("GET autoscalingpolicies", "LIST autoscalingpolicies", "LIST deployments")
    return {k: counts.get(k, 0.0) for k in reads}


def events_counted(cluster: DevCluster, kind: str, reason: str) -> float:
    """The operator's count of the Events the autoscaling loop posted with ``reason`` (its
    /metrics, in all namespaces since the operator started; 0 before the first)."""
    name = f'dunnage_autoscaler_events_total{{reason="{reason}",type="{kind}"}}'
    try:
        return scrape(cluster.ports["operator-metrics"], name)
    except AssertionError:  # not exported until the first such Event
        return 0.0


def readiness(cluster: DevCluster, namespace: str, reason: str) -> float | None:
    """The operator's dunnage_autoscaler_ready for the test's ModelService with that reason
    (None while there is no such series)."""
    labels = f'model_service="{MS}",namespace="{namespace}",reason="{reason}"'
    try:
        return scrape(cluster.ports["operator-metrics"], f"dunnage_autoscaler_ready{{{labels}}}")
    except AssertionError:
        return None


def event_messages(cluster: DevCluster, namespace: str, reason: str) -> list[str]:
    """The messages of the ModelService's Events with ``reason``."""
    events = get_json(
        cluster, "events", "-n", namespace, "--field-selector", f"involvedObject.name={MS}"
    )["items"]
    return [e["message"] for e in events if e["reason"] == reason]


def test_prometheus_load_scales_the_role_deployment_up_and_down(
    cluster: DevCluster, namespace: str, engines: list[Stub], prometheus: str
) -> None:
    gpu_nodes(cluster, "as-node")
    policy = static_policy("chat-static", prometheus, min_replicas=1)
    # The role allows 6; the policy's maxReplicas 4 is the tighter bound.
    serve = {"replicas": 1, "minReplicas": 1, "maxReplicas": 6}
    cluster.apply([policy, model_service("chat-static", serve)], "-n", namespace)
    wait_for(lambda: len(running_pods(cluster, namespace)) == 1, timeout=60, what="one pod")

    # Idle engines: concurrency 0 -> the count stays at the minimum, 1.
    started = time.monotonic()
    for stub in engines:
        stub.set(running=0, waiting=0, rps=2)
    # The other ModelService's engine is busy; its series must not count for chat.
    engines[2].set(running=200, waiting=50)
    time.sleep(4)
    assert replicas(cluster, namespace) == 1

    # Load: 2 x (20 running + 5 waiting) = 50 in flight, target 10 -> 5 wanted, 4 allowed.
    reads_before = api_reads(cluster)
    scaled_before = events_counted(cluster, "Normal", "Scaled")
    ticks_before = scrape(
        cluster.ports["operator-metrics"], "dunnage_autoscaler_tick_seconds_count"
    )
    samples = 'dunnage_autoscaler_samples_total{result="ok"}'
    samples_before = scrape(cluster.ports["operator-metrics"], samples)
    status_writes = 'dunnage_autoscaler_policy_status_writes_total{result="written"}'
    writes_before = scrape(cluster.ports["operator-metrics"], status_writes)
    changes = "dunnage_autoscaler_policy_status_changes_total"
    changes_before = scrape(cluster.ports["operator-metrics"], changes)
    engines[0].set(running=20, waiting=5)
    engines[1].set(running=20, waiting=5)
    wait_for(lambda: replicas(cluster, namespace) == 4, timeout=30, what="scale up to 4 replicas")
    assert readiness(cluster, namespace, "Scaling") == 1
    # The loop ticked and decided on the policy and the Deployment it watches: no API reads.
    reads_after = api_reads(cluster)
    assert reads_after == reads_before, (reads_before, reads_after)
    # The operator's /metrics counts the scale-up's Scaled Events and the ticks that made it.
    assert events_counted(cluster, "Normal", "Scaled") > scaled_before
    assert scrape(cluster.ports["operator-metrics"], "dunnage_autoscaler_tick_seconds_count") > (
        ticks_before
    )
    assert scrape(cluster.ports["operator-metrics"], samples) > samples_before
    # The decision went into the policy's status (the same tick, just after the scale): a
    # write carrying at least that change.
    wait_for(
        lambda: (
            scrape(cluster.ports["operator-metrics"], status_writes) > writes_before
            and scrape(cluster.ports["operator-metrics"], changes) > changes_before
        ),
        timeout=10,
        what="the decision's status write counted",
    )
    wait_for(
        lambda: len(running_pods(cluster, namespace)) == 4,
        timeout=60,
        what="4 pods Running on kwok nodes",
    )
    for pod in running_pods(cluster, namespace):
        assert pod["spec"]["nodeName"].startswith("as-node-")
    time.sleep(3)
    assert replicas(cluster, namespace) == 4  # bounded: never the 5 the load asks for

    deployment = get_json(
        cluster, "deployment", f"{MS}-serve", "-n", namespace, "--show-managed-fields"
    )
    owners = {
        m["manager"]
        for m in deployment["metadata"]["managedFields"]
        if "f:replicas" in (m.get("fieldsV1") or {}).get("f:spec", {})
    }
    assert FIELD_MANAGER in owners and "dunnage-operator" not in owners

    # Somebody scales the role by hand: the loop names who in a Warning and, the load unchanged,
    # takes its count back.
    cluster.kubectl("scale", "deployment", f"{MS}-serve", "--replicas=2", "-n", namespace)
    (elsewhere,) = wait_for(
        lambda: event_messages(cluster, namespace, "ReplicasSetElsewhere"),
        timeout=30,
        what="a ReplicasSetElsewhere event",
    )
    assert "role serve: kubectl" in elsewhere and "spec.replicas to 2" in elsewhere, elsewhere
    assert f"AutoscalingPolicy {namespace}/chat-static" in elsewhere
    wait_for(lambda: replicas(cluster, namespace) == 4, timeout=30, what="the count taken back")
    wait_for(
        lambda: len(running_pods(cluster, namespace)) == 4,
        timeout=60,
        what="4 pods Running again",
    )

    # Load drops to 2 x 6 = 12 -> 2 replicas, once the panic window has passed (Knative's rule).
    engines[0].set(running=6, waiting=0)
    engines[1].set(running=6, waiting=0)
    wait_for(lambda: replicas(cluster, namespace) == 2, timeout=45, what="scale down to 2 replicas")
    # Idle -> down to the minimum, 1, never 0.
    engines[0].set(running=0)
    engines[1].set(running=0)
    wait_for(lambda: replicas(cluster, namespace) == 1, timeout=45, what="scale down to 1 replica")
    wait_for(lambda: len(running_pods(cluster, namespace)) == 1, timeout=60, what="one pod left")

    status = get_json(cluster, "autoscalingpolicy", "chat-static", "-n", namespace)["status"]
    assert status["roles"]["serve"]["target"] == 10
    assert status["roles"]["serve"]["desiredReplicas"] == 1
    moves = [(d["replicas"], d["desiredReplicas"]) for d in status["lastDecisions"]]
    # Up from 1 to 4 (in one or more steps: the two engines are scraped at different moments),
    # then down to 1; every recorded move stays within the policy's bounds.
    assert moves[0][0] == 1 and max(d for _, d in moves) == 4 and moves[-1][1] == 1
    assert all(1 <= d <= 4 for _, d in moves)
    assert all(d["modelService"] == MS and d["role"] == "serve" for d in status["lastDecisions"])

    scaled = event_messages(cluster, namespace, "Scaled")
    assert any(m.startswith("serve: 1 -> ") for m in scaled), scaled
    assert any("-> 4 replicas (concurrency 50, target 10/replica" in m for m in scaled), scaled
    assert time.monotonic() - started < 120


def hpa(role: str) -> dict[str, Any]:
    """A HorizontalPodAutoscaler ``legacy-hpa`` of a role Deployment, on CPU (which no metrics
    server here reports, so it never changes the count itself)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "legacy-hpa"},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": f"{MS}-{role}",
            },
            "minReplicas": 1,
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
        },
    }


def test_a_role_a_horizontal_pod_autoscaler_scales_is_left_to_it(
    cluster: DevCluster, namespace: str, engines: list[Stub], prometheus: str
) -> None:
    """A real HorizontalPodAutoscaler on the role Deployment: the loop scales nothing, says
    why (Event, Ready condition); once the HPA is deleted it scales on the engines' load."""
    gpu_nodes(cluster, "hpa-node")
    policy = static_policy("chat-hpa", prometheus, min_replicas=1)
    serve = {"replicas": 1, "minReplicas": 1, "maxReplicas": 6}
    # 2 x 25 in flight, target 10: the loop would want 4 replicas.
    engines[0].set(running=20, waiting=5)
    engines[1].set(running=20, waiting=5)
    cluster.apply([hpa("serve"), policy, model_service("chat-hpa", serve)], "-n", namespace)

    messages = wait_for(
        lambda: event_messages(cluster, namespace, "ConflictingAutoscaler"),
        timeout=60,
        what="a ConflictingAutoscaler event",
    )
    assert f"HorizontalPodAutoscaler {namespace}/legacy-hpa" in messages[0]
    assert f"Deployment {namespace}/{MS}-serve" in messages[0]
    assert events_counted(cluster, "Warning", "ConflictingAutoscaler") >= 1
    ready = wait_for(lambda: policy_ready(cluster, namespace, "chat-hpa"), timeout=30, what="Ready")
    assert ready[:2] == ("False", "ConflictingAutoscaler")
    time.sleep(5)  # several ticks, with load the policy would answer
    assert replicas(cluster, namespace) == 1
    assert event_messages(cluster, namespace, "Scaled") == []

    assert readiness(cluster, namespace, "ConflictingAutoscaler") == 0
    cluster.kubectl("delete", "hpa", "legacy-hpa", "-n", namespace)
    wait_for(lambda: replicas(cluster, namespace) == 4, timeout=30, what="scale up to 4 replicas")
    # The series of the new reason replaces the old one (set just after the tick's writes).
    wait_for(lambda: readiness(cluster, namespace, "Scaling") == 1, timeout=10, what="Scaling")
    assert readiness(cluster, namespace, "ConflictingAutoscaler") is None
    assert event_messages(cluster, namespace, "AutoscalingResumed")
    wait_for(
        lambda: (policy_ready(cluster, namespace, "chat-hpa") or ("",))[0] == "True",
        timeout=30,
        what="Ready=True",
    )


def test_a_policy_shared_by_two_model_services_keeps_an_entry_for_each(
    cluster: DevCluster, namespace: str, engines: list[Stub], prometheus: str
) -> None:
    """chat and other share one static policy: each is scaled on its own engines' load, the
    policy's status keeps both entries (the API server's merge patches leave the other's
    alone, its schema keeps them), and Ready turns True once both read metrics."""
    gpu_nodes(cluster, "shared-node", count=3)
    policy = static_policy("chat-shared", prometheus, min_replicas=1)
    serve = {"replicas": 1, "minReplicas": 1, "maxReplicas": 4}
    engines[0].set(running=10, waiting=5)  # chat: 2 x 15 in flight, target 10 -> 3
    engines[1].set(running=10, waiting=5)
    engines[2].set(running=20, waiting=0)  # other: 20 in flight -> 2
    cluster.apply(
        [
            policy,
            model_service("chat-shared", serve),
            model_service("chat-shared", serve, name="other"),
        ],
        "-n",
        namespace,
    )
    wait_for(lambda: replicas(cluster, namespace) == 3, timeout=60, what="chat at 3 replicas")
    wait_for(
        lambda: replicas(cluster, namespace, name="other") == 2,
        timeout=30,
        what="other at 2 replicas",
    )

    def both_ready() -> dict[str, Any] | None:
        status = get_json(cluster, "autoscalingpolicy", "chat-shared", "-n", namespace)["status"]
        entries = status.get("modelServices") or {}
        both = set(entries) == {MS, "other"} and all(e["ready"] == "True" for e in entries.values())
        # Two loops writing at the same moment may each miss the other's newest decision (the
        # policy they read lags the other's write); each one's next write (30 s at most)
        # brings its own back.
        decided = {d["modelService"] for d in status.get("lastDecisions") or []}
        return status if both and decided == {MS, "other"} else None

    status = wait_for(
        both_ready, timeout=45, what="an entry and a decision for each ModelService, both Ready"
    )
    assert status["summary"] == f"{MS}: serve=10; other: serve=10"
    ready = policy_ready(cluster, namespace, "chat-shared")
    assert ready == (
        "True",
        "Scaling",
        f"every ModelService of the policy is scaling: {MS}, other",
    )


@pytest.mark.parametrize("engine_roles", [("prefill", "decode")])
def test_a_horizontal_pod_autoscaler_on_decode_leaves_prefill_to_the_policy(
    cluster: DevCluster, namespace: str, engines: list[Stub], prometheus: str
) -> None:
    """Prefill and decode, a real HorizontalPodAutoscaler on decode only: the policy scales
    prefill on its engine's load and leaves decode alone (one Warning naming it, Ready stays
    True); once the HPA is deleted it scales decode too."""
    gpu_nodes(cluster, "pd-hpa-node")
    bounds = {"target": 10, "minReplicas": 1, "maxReplicas": 4}
    policy = quick_policy(
        "chat-pd-hpa", prometheus, policy="static", roles={"prefill": bounds, "decode": bounds}
    )
    one = {"replicas": 1, "minReplicas": 1, "maxReplicas": 4}
    # 25 in flight on each role's engine, target 10: each role would want 3 replicas.
    engines[0].set(running=20, waiting=5)
    engines[1].set(running=20, waiting=5)
    ms = model_service("chat-pd-hpa", {}, roles={"prefill": one, "decode": one})
    cluster.apply([hpa("decode"), policy, ms], "-n", namespace)

    (message,) = wait_for(
        lambda: event_messages(cluster, namespace, "ConflictingAutoscaler"),
        timeout=60,
        what="a ConflictingAutoscaler event",
    )
    assert f"role decode: HorizontalPodAutoscaler {namespace}/legacy-hpa" in message
    assert "role prefill" not in message
    wait_for(
        lambda: replicas(cluster, namespace, "prefill") == 3,
        timeout=30,
        what="prefill scaled to 3 replicas",
    )
    time.sleep(5)  # several decisions, with load the policy would answer on decode too
    assert replicas(cluster, namespace, "decode") == 1
    assert not any(m.startswith("decode:") for m in event_messages(cluster, namespace, "Scaled"))
    ready = wait_for(
        lambda: policy_ready(cluster, namespace, "chat-pd-hpa"), timeout=30, what="Ready"
    )
    assert ready[:2] == ("True", "Scaling") and "role decode left to another" in ready[2]
    status = get_json(cluster, "autoscalingpolicy", "chat-pd-hpa", "-n", namespace)["status"]
    assert {d["role"] for d in status["lastDecisions"]} == {"prefill"}

    cluster.kubectl("delete", "hpa", "legacy-hpa", "-n", namespace)
    wait_for(
        lambda: replicas(cluster, namespace, "decode") == 3,
        timeout=30,
        what="decode scaled to 3 replicas",
    )
    (resumed,) = event_messages(cluster, namespace, "AutoscalingResumed")
    assert "role decode scaled by the policy again" in resumed
    assert replicas(cluster, namespace, "prefill") == 3


def test_an_activation_query_brings_a_role_back_from_zero(
    cluster: DevCluster, namespace: str, engines: list[Stub], prometheus: str
) -> None:
    """Knative's activator, in PromQL: the role scaled to zero comes back when the activation
    query shows requests waiting (here the "other" engine's queue stands for a gateway's), is
    sized by them, and goes back to zero when all is idle."""
    gpu_nodes(cluster, "act-node")
    policy = static_policy("chat-act", prometheus, min_replicas=0)
    policy["spec"]["metrics"]["prometheus"]["activationQuery"] = (
        'sum(vllm:num_requests_waiting{namespace="$namespace",model_service="other"})'
    )
    policy["spec"]["kpa"].update(scaleToZero=True, scaleToZeroGracePeriodSeconds=6)
    for stub in engines:
        stub.set(running=0, waiting=0, rps=0)
    serve = {"replicas": 0, "minReplicas": 0, "maxReplicas": 6}
    cluster.apply([policy, model_service("chat-act", serve)], "-n", namespace)
    ready = wait_for(lambda: policy_ready(cluster, namespace, "chat-act"), timeout=30, what="Ready")
    assert ready[0] == "True", ready
    time.sleep(3)
    assert replicas(cluster, namespace) == 0  # nothing waits: the role stays at zero

    engines[2].set(waiting=15)  # 15 requests wait at the "gateway"
    wait_for(lambda: replicas(cluster, namespace) >= 1, timeout=30, what="scale from zero")
    scaled = event_messages(cluster, namespace, "Scaled")
    assert any(re.match(r"serve: 0 -> \d+ replicas \(concurrency 15,", m) for m in scaled), scaled
    wait_for(lambda: running_pods(cluster, namespace), timeout=60, what="a pod Running")

    # A replica is ready: the gateway hands the 15 requests to the engines, whose series the
    # loop reads again (ceil(15 / 10) = 2 replicas).
    engines[0].set(running=15)
    engines[2].set(waiting=0)
    wait_for(lambda: replicas(cluster, namespace) == 2, timeout=30, what="2 replicas")

    # All idle, nothing waits: back to zero after the stable window (10 s) and the grace
    # period (6 s).
    engines[0].set(running=0)
    wait_for(lambda: replicas(cluster, namespace) == 0, timeout=60, what="scale to zero")


def test_on_the_rps_metric_the_request_rate_scales_the_role(
    cluster: DevCluster, namespace: str, engines: list[Stub], prometheus: str
) -> None:
    """Knative's rps metric: replicas follow the engines' completion rate
    (rate(vllm:request_success_total) over spec.metrics.prometheus.rateWindowSeconds), not
    the requests in flight."""
    gpu_nodes(cluster, "rps-node")
    policy = quick_policy(
        "chat-rps",
        prometheus,
        metric="rps",
        policy="static",
        roles={"serve": {"target": 5, "minReplicas": 1, "maxReplicas": 4}},
    )
    serve = {"replicas": 1, "minReplicas": 1, "maxReplicas": 6}
    cluster.apply([policy, model_service("chat-rps", serve)], "-n", namespace)
    wait_for(lambda: len(running_pods(cluster, namespace)) == 1, timeout=60, what="one pod")

    # Many requests in flight but none finishing: on rps that is no load (on concurrency,
    # 2 x 30 at target 5 would ask for the maximum, 4).
    for stub in engines[:2]:
        stub.set(running=30, waiting=0, rps=0)
    engines[2].set(rps=100)  # another ModelService's: must not count for chat
    time.sleep(6)
    assert replicas(cluster, namespace) == 1

    # 2 x 6.5 = 13 requests/s at 5 per replica -> 3 (2.6 rounded up; the band 10-15 gives 3,
    # wide enough for the jitter of a 4 s rate()).
    for stub in engines[:2]:
        stub.set(rps=6.5)
    wait_for(lambda: replicas(cluster, namespace) == 3, timeout=45, what="scale up to 3 replicas")
    wait_for(lambda: len(running_pods(cluster, namespace)) == 3, timeout=60, what="3 pods Running")
    time.sleep(5)
    assert replicas(cluster, namespace) == 3  # held: neither the in-flight count nor `other`

    # 2 x 2 = 4 requests/s -> 1.
    for stub in engines[:2]:
        stub.set(rps=2)
    wait_for(lambda: replicas(cluster, namespace) == 1, timeout=60, what="scale down to 1 replica")

    status = get_json(cluster, "autoscalingpolicy", "chat-rps", "-n", namespace)["status"]
    assert status["roles"]["serve"]["target"] == 5
    moves = [(d["replicas"], d["desiredReplicas"]) for d in status["lastDecisions"]]
    assert max(d for _, d in moves) == 3 and moves[-1][1] == 1
    scaled = event_messages(cluster, namespace, "Scaled")
    assert any("-> 3 replicas (" in m and "requests/s" in m for m in scaled), scaled
    assert not any("concurrency" in m for m in scaled), scaled


def test_learned_policy_starts_at_its_target_falls_back_online_and_resumes_after_a_restart(
    cluster: DevCluster, namespace: str, engines: list[Stub], prometheus: str
) -> None:
    """The benchmark's trained aggregated policy as a learned AutoscalingPolicy's
    initialPolicy: a missing ConfigMap is reported and scales nothing; once it exists the role
    is sized at the policy's home target per replica; when TTFT keeps missing the SLO the
    online learner moves the target down and the role up; the learned state is saved in a
    ConfigMap the ModelService owns, a restarted operator resumes from it, and deleting it
    starts the learning afresh."""
    gpu_nodes(cluster, "learned-node")
    policy = quick_policy(
        "chat-learned",
        prometheus,
        policy="learned",
        # A decision every 10 s; no exploration, so every move is the learner's answer.
        learning={
            "decisionIntervalSeconds": 10,
            "explorationRate": 0,
            "initialPolicy": {"configMapName": "chat-policy"},
        },
        roles={"serve": {"minReplicas": 1, "maxReplicas": 8}},
    )
    serve = {"replicas": 1, "minReplicas": 1, "maxReplicas": 8}
    cluster.apply([policy, model_service("chat-learned", serve)], "-n", namespace)
    wait_for(lambda: len(running_pods(cluster, namespace)) == 1, timeout=60, what="one pod")
    # 2 x 45 = 90 requests in flight, 5 finishing per second per engine, TTFT 0.1 s.
    in_flight = 90
    for stub in engines[:2]:
        stub.set(running=in_flight // 2, waiting=0, rps=5, ttft=0.1, tpot=0.02)

    messages = wait_for(
        lambda: event_messages(cluster, namespace, "InvalidAutoscalingPolicy"),
        timeout=30,
        what="an InvalidAutoscalingPolicy event",
    )
    assert f"ConfigMap {namespace}/chat-policy not found" in messages[0], messages
    assert "spec.learning.initialPolicy" in messages[0], messages
    assert replicas(cluster, namespace) == 1
    ready = wait_for(
        lambda: policy_ready(cluster, namespace, "chat-learned"), timeout=30, what="Ready"
    )
    assert ready[:2] == ("False", "InvalidSpec") and "chat-policy not found" in ready[2]

    trained = REPO / "bench" / "results" / "autoscaling-policy-aggregated.json"
    home = float(json.loads(trained.read_text())["targets"]["serve"])
    at_home = math.ceil(in_flight / home)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "chat-policy"},
        "data": {"policy.json": trained.read_text()},
    }
    cluster.apply([config_map], "-n", namespace)

    def learned_target() -> float | None:
        status = get_json(cluster, "autoscalingpolicy", "chat-learned", "-n", namespace).get(
            "status"
        )
        target = ((status or {}).get("roles") or {}).get("serve", {}).get("target")
        return None if target is None else float(target)

    wait_for(
        lambda: replicas(cluster, namespace) == at_home,
        timeout=45,
        what=f"scale up to {at_home} replicas",
    )
    assert learned_target() == home
    wait_for(
        lambda: (policy_ready(cluster, namespace, "chat-learned") or ("",))[0] == "True",
        timeout=30,
        what="the policy Ready",
    )
    # kubectl's printer columns: the policy, its learned target and Ready.
    row = cluster.kubectl("get", "aspol", "chat-learned", "-n", namespace).stdout.splitlines()[1]
    assert row.split()[:2] == ["chat-learned", "learned"] and f"serve={home:g}" in row
    assert "True" in row

    # TTFT 5 s against a 1 s SLO in every interval: the violation recurs, so the learner moves
    # the target down (a rung or two, as the trained Q-table says) and the KPA adds replicas.
    for stub in engines[:2]:
        stub.set(ttft=5)
    wait_for(lambda: (learned_target() or home) < home, timeout=60, what="a lower learned target")
    for stub in engines[:2]:
        stub.set(ttft=0.1)

    def sized_for_the_target() -> bool:
        target = learned_target() or home
        return replicas(cluster, namespace) == min(8, math.ceil(in_flight / target))

    wait_for(sized_for_the_target, timeout=45, what="replicas sized for the learned target")
    assert replicas(cluster, namespace) > at_home
    status = get_json(cluster, "autoscalingpolicy", "chat-learned", "-n", namespace)["status"]
    moves = [d for d in status["lastDecisions"] if d.get("action") in ("down", "down2")]
    assert moves and moves[0]["target"] < home, status["lastDecisions"]
    assert status["summary"] == f"serve={status['roles']['serve']['target']:g}"
    scaled = event_messages(cluster, namespace, "Scaled")
    expected = f"-> {at_home} replicas (concurrency {in_flight}, target {home:g}/replica"
    assert any(expected in m for m in scaled), scaled

    # The learned state is saved after each learned decision (the role may not climb back to the
    # rung that tipped it over for 15 decisions, so the lowered target holds meanwhile).
    lowered = learned_target()
    assert lowered is not None
    state_map = f"{MS}-learned-state"

    def saved() -> dict[str, Any]:
        args = ("get", "configmap", state_map, "-n", namespace, "--ignore-not-found", "-o", "json")
        out = cluster.kubectl(*args).stdout.strip()
        return json.loads(out) if out else {}

    def saved_target() -> float | None:
        text = (saved().get("data") or {}).get("policy.json")
        if text is None:
            return None
        doc = json.loads(text)
        return float(doc["roles"]["serve"]["rungs"][doc["online"]["roles"]["serve"]["rung"]])

    wait_for(lambda: saved_target() == lowered, timeout=30, what=f"{lowered:g} saved")
    (owner,) = saved()["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("ModelService", MS)
    # An admin reads it with `kubectl get configmap ... -o json | dunnage policy show -`.
    shown = subprocess.run(
        [sys.executable, "-m", "dunnage.cli", "policy", "show", "-"],
        input=json.dumps(saved()),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # (its home may have moved too: the live intervals join the rung means)
    assert re.search(rf"^serve: home target [\d.]+, now {lowered:g}\b", shown, re.M), shown

    cluster.stop_component("operator")
    restarted_at = time.time()
    cluster.start_operator()
    messages = wait_for(
        lambda: event_messages(cluster, namespace, "LearnedStateRestored"),
        timeout=60,
        what="a LearnedStateRestored event",
    )
    assert f"from ConfigMap {namespace}/{state_map}" in messages[0], messages
    assert messages[0].endswith(f"serve={lowered:g}"), messages

    def status_after_restart() -> dict[str, Any] | None:
        status = get_json(cluster, "autoscalingpolicy", "chat-learned", "-n", namespace)["status"]
        stamp = status["roles"]["serve"]["lastUpdateTime"]  # whole seconds
        written = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        return status if written.timestamp() >= math.ceil(restarted_at) else None

    # The status is rewritten at least every 30 s.
    status = wait_for(status_after_restart, timeout=45, what="a status from the new operator")
    assert status["roles"]["serve"]["target"] == lowered  # not the initial policy's home
    assert replicas(cluster, namespace) == min(8, math.ceil(in_flight / lowered))

    # Deleting the ConfigMap starts the learning afresh: the next save finds it gone (an apply
    # would have written the old state back), and the fresh state is saved from then on.
    def saved_decisions() -> int | None:
        text = (saved().get("data") or {}).get("policy.json")
        return None if text is None else int(json.loads(text)["online"]["decisions"])

    before = saved_decisions()
    assert before is not None and before > 1
    cluster.kubectl("delete", "configmap", state_map, "-n", namespace)
    (reset,) = wait_for(
        lambda: event_messages(cluster, namespace, "LearnedStateReset"),
        timeout=30,
        what="a LearnedStateReset event",
    )
    assert f"ConfigMap {namespace}/{state_map} was deleted" in reset
    fresh = wait_for(saved_decisions, timeout=30, what="the fresh learned state saved")
    assert fresh < before


def kpa_policy(name: str, prometheus: str) -> dict[str, Any]:
    """Knative's defaults, a sample a second from ``prometheus``."""
    return {
        "apiVersion": "dunnage.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "metadata": {"name": name},
        "spec": {
            "policy": "kpa",
            "slo": {"ttftSeconds": 1, "tpotSeconds": 0.1},
            "metrics": {"prometheus": {"url": prometheus}, "sampleSeconds": 1},
        },
    }


def test_unreachable_prometheus_is_reported_and_nothing_scales(
    cluster: DevCluster, namespace: str
) -> None:
    gpu_nodes(cluster, "broken-node", count=1)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    policy = kpa_policy("broken", dead)
    cluster.apply([policy, model_service("broken", {"replicas": 2})], "-n", namespace)

    messages = wait_for(
        lambda: event_messages(cluster, namespace, "MetricsUnavailable"),
        timeout=30,
        what="a MetricsUnavailable event",
    )
    assert f"AutoscalingPolicy {namespace}/broken" in messages[0]
    assert "spec.metrics.prometheus.url" in messages[0] and "unreachable" in messages[0]
    ready = wait_for(lambda: policy_ready(cluster, namespace, "broken"), timeout=30, what="Ready")
    assert ready[:2] == ("False", "MetricsUnavailable") and "unreachable" in ready[2]
    assert replicas(cluster, namespace) == 2
    assert cluster.running().count("operator") == 1  # the operator is still up


def test_a_failing_prometheus_is_asked_again_with_backoff(
    cluster: DevCluster, namespace: str
) -> None:
    """Prometheus answering 503: the loop reads again after 1, 2, 4, 8 ... s (sampleSeconds 1),
    not every second, and keeps the role's replicas. An edit of the policy (another URL) is
    read at once, not after the wait."""

    def failing() -> tuple[http.server.ThreadingHTTPServer, list[float]]:
        asked: list[float] = []

        class Failing(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                asked.append(time.monotonic())
                self.send_error(503, "overloaded")

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, asked

    server, asked = failing()
    other, asked_there = failing()
    try:
        gpu_nodes(cluster, "backoff-node", count=1)
        policy = kpa_policy("failing", f"http://127.0.0.1:{server.server_port}")
        cluster.apply([policy, model_service("failing", {"replicas": 2})], "-n", namespace)
        wait_for(lambda: asked, timeout=30, what="a query from the loop")
        time.sleep(20)
        first = asked[0]
        within = [t - first for t in asked if t - first < 20]
        # Reads at about 0, 1, 3, 7 and 15 s (one query each: the first failure ends a read);
        # asked every second it would be about 20.
        assert 4 <= len(within) <= 7, [round(t, 1) for t in within]
        messages = event_messages(cluster, namespace, "MetricsUnavailable")
        assert messages and "503" in messages[0]
        assert replicas(cluster, namespace) == 2
        # The operator's /metrics says so too, for an alert on a problem that lasts.
        assert readiness(cluster, namespace, "MetricsUnavailable") == 0
        # The next read is due about 31 s after the first; the edited URL is read before.
        policy = kpa_policy("failing", f"http://127.0.0.1:{other.server_port}")
        cluster.apply([policy], "-n", namespace)
        edited = time.monotonic()
        wait_for(lambda: asked_there, timeout=10, what="a query to the edited URL")
        assert asked_there[0] - edited < 5 and asked_there[0] - first < 29, (
            round(asked_there[0] - edited, 1),
            round(asked_there[0] - first, 1),
        )
    finally:
        for s in (server, other):
            s.shutdown()
            s.server_close()


def test_the_charts_alerts_name_the_model_service_that_is_not_ready(
    cluster: DevCluster, namespace: str, tmp_path: Path
) -> None:
    """The chart's alerts on the running operator's /metrics, in a real Prometheus: a
    ModelService whose metrics are unreachable makes DunnageAutoscalingNotReady pending (its
    `for` is 15 minutes) and DunnageAutoscalingWarnings fire, labelled with the ModelService's
    own namespace. Prometheus is configured as the Prometheus Operator configures it from the
    chart's ServiceMonitor: the target carries the operator's namespace (and pod, service,
    endpoint) and the endpoint's ``honorLabels`` decides which `namespace` label wins."""
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    docs = render_chart(
        cluster,
        str(REPO / "helm" / "dunnage"),
        version["gitVersion"],
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
    )
    (monitor,) = (d for d in docs if d["kind"] == "ServiceMonitor")
    (rule,) = (d for d in docs if d["kind"] == "PrometheusRule")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    # The ServiceMonitor's endpoints by port name: the operator's Service and the extender's.
    components = {
        "metrics": ("operator", cluster.ports["operator-metrics"]),
        "http": ("extender", cluster.ports["extender"]),
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": f"t-dunnage-{components[e['port']][0]}",
                "honor_labels": bool(e.get("honorLabels", False)),
                "metrics_path": e["path"],
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{components[e['port']][1]}"],
                        "labels": {
                            "namespace": "dunnage-system",
                            "pod": f"t-dunnage-{components[e['port']][0]}-0",
                            "service": f"t-dunnage-{components[e['port']][0]}",
                            "endpoint": e["port"],
                        },
                    }
                ],
            }
            for e in monitor["spec"]["endpoints"]
        ],
    }
    gpu_nodes(cluster, "alert-node", count=1)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    def alerts(name: str, **labels: str) -> list[dict[str, Any]]:
        return [
            a
            for a in prometheus_api(url, "alerts")["alerts"]
            if a["labels"]["alertname"] == name
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    with running_prometheus(config, tmp_path) as url:
        # Prometheus already follows the operator when the problem starts, as it would in a
        # cluster: the Warning counter's zero is scraped before the first Warning.
        warnings = 'dunnage_autoscaler_events_total{type="Warning",reason="MetricsUnavailable"}'
        wait_for(
            lambda: prometheus_api(url, "query", query=warnings)["result"],
            timeout=30,
            what="the operator's Warning counter scraped",
        )
        cluster.apply(
            [
                kpa_policy("alerted", dead),
                model_service("alerted", {"replicas": 1}, name="alerted"),
            ],
            "-n",
            namespace,
        )
        (not_ready,) = wait_for(
            lambda: alerts("DunnageAutoscalingNotReady", model_service="alerted"),
            timeout=60,
            what="DunnageAutoscalingNotReady for the ModelService alerted",
        )
        assert not_ready["state"] == "pending"  # firing after its `for`, 15 minutes
        assert not_ready["labels"]["namespace"] == namespace, not_ready["labels"]
        assert (
            f"ModelService {namespace}/alerted has not been Ready for 15 minutes "
            "(now MetricsUnavailable)" in not_ready["annotations"]["summary"]
        )
        wait_for(
            lambda: [
                a
                for a in alerts("DunnageAutoscalingWarnings", reason="MetricsUnavailable")
                if a["state"] == "firing"
            ],
            timeout=30,
            what="DunnageAutoscalingWarnings firing for MetricsUnavailable",
        )
        # Both lead (they run without --leader-elect): those alerts stay quiet.
        for component in ("operator", "extender"):
            leading = prometheus_api(url, "query", query=f"dunnage_{component}_leader")["result"]
            assert [float(s["value"][1]) for s in leading] == [1.0], component
        assert alerts("DunnageOperatorNotLeading") == alerts("DunnageExtenderNotLeading") == []
        # Every series an alert watches is one the components export (a renamed metric
        # would leave its alert silent for good).
        watched = {
            name
            for group in rule["spec"]["groups"]
            for r in group["rules"]
            for name in re.findall(r"\bdunnage_[a-z_]+", r["expr"])
        }
        assert len(watched) == 8, watched
        for name in sorted(watched):
            found = prometheus_api(url, "query", query=f'count({{__name__="{name}"}})')
            assert found["result"], f"no series {name} in the operator's or extender's /metrics"


def test_a_model_service_that_leaves_its_policy_is_taken_out_of_its_status(
    cluster: DevCluster, namespace: str
) -> None:
    """Its policyRef removed, the ModelService's entry leaves the policy's status, which says
    Unused (no other ModelService writes it), and stays out; attached again, it is back. The
    same when it is detached while the operator is down (at the next start), deleted, or
    deleted while the operator is down (its finalizer removed by hand; at the next start)."""
    gpu_nodes(cluster, "leave-node", count=1)
    dead = f"http://127.0.0.1:{free_port()}"  # the entry exists whatever the metrics say
    cluster.apply(
        [kpa_policy("left", dead), model_service("left", {"replicas": 1})], "-n", namespace
    )

    def entries() -> dict[str, Any]:
        policy = get_json(cluster, "autoscalingpolicy", "left", "-n", namespace)
        return dict((policy.get("status") or {}).get("modelServices") or {})

    def remove(path: str) -> None:
        patch = json.dumps([{"op": "remove", "path": path}])
        cluster.kubectl("patch", "modelservice", MS, "-n", namespace, "--type=json", "-p", patch)

    def becomes_unused(after: str, timeout: float) -> None:
        wait_for(
            lambda: (policy_ready(cluster, namespace, "left") or ("",))[1] == "Unused",
            timeout=timeout,
            what=f"the policy Unused {after}",
        )
        assert entries() == {}

    wait_for(lambda: MS in entries(), timeout=30, what="the ModelService's entry")
    remove("/spec/autoscaling")
    wait_for(
        lambda: policy_ready(cluster, namespace, "left") == (
            "False", "Unused", "no ModelService refers to this policy"
        ),
        timeout=30,
        what="the policy Unused",
    )  # fmt: skip
    assert entries() == {}
    time.sleep(5)  # a tick under way when the policyRef went must not bring the entry back
    assert entries() == {}
    assert policy_ready(cluster, namespace, "left")[:2] == ("False", "Unused")  # type: ignore[index]
    cluster.apply([model_service("left", {"replicas": 1})], "-n", namespace)
    wait_for(lambda: MS in entries(), timeout=30, what="the entry back")
    wait_for(
        lambda: (policy_ready(cluster, namespace, "left") or ("",))[1] == "MetricsUnavailable",
        timeout=30,
        what="the policy speaking for the ModelService again",
    )
    # Detached while no operator runs: taken out when the next one starts.
    cluster.stop_component("operator")
    try:
        remove("/spec/autoscaling")
        assert MS in entries()
    finally:
        cluster.start_operator()
    becomes_unused("after the operator's start", timeout=60)
    cluster.apply([model_service("left", {"replicas": 1})], "-n", namespace)
    wait_for(lambda: MS in entries(), timeout=30, what="the entry back again")
    # Deleted: out again.
    cluster.kubectl("delete", "modelservice", MS, "-n", namespace)
    becomes_unused("after the ModelService's deletion", timeout=30)
    # Deleted while no operator runs: the timer's finalizer holds it until an admin takes the
    # finalizer off (README, uninstalling); the next operator takes it out of the status.
    cluster.apply([model_service("left", {"replicas": 1})], "-n", namespace)
    wait_for(lambda: MS in entries(), timeout=30, what="the entry back once more")

    def finalizers() -> list[str]:
        meta = get_json(cluster, "modelservice", MS, "-n", namespace)["metadata"]
        return list(meta.get("finalizers") or [])

    assert finalizers() == [FINALIZER]
    # The finalizer of an operator before 2026-12-07 (kopf's default name) is taken off by the
    # next one, which puts its own on instead.
    cluster.stop_component("operator")
    try:
        legacy = [{"op": "replace", "path": "/metadata/finalizers", "value": [KOPF_DEFAULT]}]
        patch = json.dumps(legacy)
        cluster.kubectl("patch", "modelservice", MS, "-n", namespace, "--type=json", "-p", patch)
    finally:
        cluster.start_operator()
    wait_for(lambda: finalizers() == [FINALIZER], timeout=30, what="kopf's former finalizer off")
    cluster.stop_component("operator")
    try:
        cluster.kubectl("delete", "modelservice", MS, "-n", namespace, "--wait=false")
        time.sleep(2)
        held = get_json(cluster, "modelservice", MS, "-n", namespace)["metadata"]
        assert held["deletionTimestamp"] and held["finalizers"] == [FINALIZER]
        remove("/metadata/finalizers")
        wait_for(
            lambda: (
                not cluster.kubectl(
                    "get", "modelservice", "-n", namespace, "-o", "name"
                ).stdout.strip()
            ),
            timeout=30,
            what="the ModelService gone",
        )
        assert MS in entries()
    finally:
        cluster.start_operator()
    becomes_unused("after the operator's start", timeout=60)


def test_a_status_write_from_a_stale_read_of_the_policy_is_refused(
    cluster: DevCluster, namespace: str
) -> None:
    """The API server refuses (409) a status merge patch carrying a resourceVersion the policy
    has moved past: what lets two loops sharing a policy write it without dropping each
    other's decisions. The policy is read again by a list (the operator may not get it). A
    JSON patch of one entry (a loop's own figures) lands whatever else changed, as long as
    its test of that entry holds, and is refused (422) with nothing applied when it fails."""
    from kubernetes import config

    from dunnage.operator.apply import KubeApi
    from dunnage.operator.autoscaler import KubeScaleApi
    from dunnage.operator.reconcile import ApiError

    cluster.apply([kpa_policy("racy", "http://127.0.0.1:1")], "-n", namespace)
    api = KubeScaleApi(KubeApi(config.new_client_from_config(str(cluster.kubeconfig))), {}, {}, {})
    read = api.read_policy(namespace, "racy")
    assert read is not None and read["metadata"]["name"] == "racy"
    assert api.read_policy(namespace, "absent") is None
    stale = read["metadata"]["resourceVersion"]
    # The answer is the policy as written (the combined writer makes its next write from it).
    answer = api.patch_policy_status(namespace, "racy", {"summary": "first"}, stale)
    assert answer["status"]["summary"] == "first" and answer["spec"] == read["spec"]
    assert answer["metadata"]["resourceVersion"] != stale
    with pytest.raises(ApiError) as refused:
        api.patch_policy_status(namespace, "racy", {"summary": "second"}, stale)
    assert refused.value.status == 409
    fresh = api.read_policy(namespace, "racy")
    assert fresh is not None and fresh["status"]["summary"] == "first"
    api.patch_policy_status(
        namespace, "racy", {"summary": "second"}, fresh["metadata"]["resourceVersion"]
    )
    assert (api.read_policy(namespace, "racy") or {})["status"]["summary"] == "second"

    # The operator stays out of this part: it would take the entry of a ModelService that does
    # not exist out of the policy's status at once.
    cluster.stop_component("operator")
    try:
        entry = {
            "ready": "True",
            "reason": "Scaling",
            "message": "m",
            "lastUpdateTime": "2026-12-06T07:00:00Z",
        }
        api.patch_policy_status(namespace, "racy", {"modelServices": {"chat": entry}}, None)
        api.patch_policy_status(namespace, "racy", {"summary": "third"}, None)  # someone else's
        path = "/status/modelServices/chat"
        refreshed = {**entry, "lastUpdateTime": "2026-12-06T07:00:30Z"}
        api.json_patch_policy_status(
            namespace,
            "racy",
            [
                {"op": "test", "path": path, "value": entry},
                {"op": "replace", "path": path, "value": refreshed},
                {"op": "add", "path": "/status/sloAttainment", "value": 0.5},
            ],
        )
        status = (api.read_policy(namespace, "racy") or {})["status"]
        assert status["modelServices"]["chat"] == refreshed and status["summary"] == "third"
        with pytest.raises(ApiError) as refused:
            api.json_patch_policy_status(
                namespace,
                "racy",
                [
                    {"op": "test", "path": path, "value": entry},  # no longer so
                    {
                        "op": "replace",
                        "path": path,
                        "value": {**entry, "lastUpdateTime": "2026-12-06T07:01:00Z"},
                    },
                    {"op": "add", "path": "/status/sloAttainment", "value": 0.9},
                ],
            )
        assert refused.value.status == 422
        assert (api.read_policy(namespace, "racy") or {})["status"] == status  # nothing applied
        combined_writes_land_without_conflicts(api, namespace, "racy")
    finally:
        cluster.start_operator()


def combined_writes_land_without_conflicts(api: Any, namespace: str, name: str) -> None:
    """Six loops decide at once, three times, each from the policy as read before (a lagging
    watch), through one PolicyStatusWriter: the API server refuses none of their writes, and
    every decision and entry is in the policy's status."""
    from dunnage.autoscaling import loop
    from dunnage.autoscaling import spec as policy_spec
    from dunnage.operator.policy_status import PolicyStatusWriter

    refused: list[str] = []  # every request's result but "written" (a 409, a 422, an error)
    read = api.read_policy(namespace, name)
    writer = PolicyStatusWriter(
        observe=lambda result, _: None if result == "written" else refused.append(result)
    )
    names = [f"loop-{i}" for i in range(6)]
    start = threading.Barrier(len(names))
    results: list[bool] = []
    now = datetime.now(UTC)

    def decide(who: str) -> None:
        for second in range(3):
            stamp = now.replace(microsecond=0).timestamp() + second
            decision = {
                "time": datetime.fromtimestamp(stamp, UTC).strftime(policy_spec.STAMP),
                "modelService": who,
                "role": "serve",
            }
            own = {"summary": "serve=1", "lastDecisions": loop.merge_decisions(read, [decision])}
            status = loop.shared_status(own, read, who, (True, "Scaling", "s"), None)

            def make(body: Any, status: Any = status, who: str = who) -> Any:
                return loop.rebase_status(status, body, who, None)

            start.wait(timeout=30)
            results.append(writer.write(api, read, loop.StatusChange(make, who)))

    threads = [threading.Thread(target=decide, args=(who,)) for who in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [True] * 18 and refused == []
    status = (api.read_policy(namespace, name) or {})["status"]
    assert set(names) <= set(status["modelServices"])
    decided = [d["modelService"] for d in status["lastDecisions"] if d.get("modelService")]
    assert sorted(decided) == sorted(names * 3)
