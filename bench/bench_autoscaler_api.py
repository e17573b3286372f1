"""What the operator's autoscaling loop asks of the API server, per autoscaled ModelService.

Brings up a local cluster (real kube-apiserver and controllers, the dunnage operator as a
process) in a temporary directory, or uses a running one with --kubeconfig, and a real
Prometheus scraping, every 15 s, one idle simulated engine (``dunnage.sim.engine_stub``) as
one target per ModelService, labelled with its namespace, name and role as the chart's
PodMonitor labels engines: every ModelService has its vLLM series (about 55, all idle), so
the loop parses what a fleet's Prometheus answers, samples, decides and holds. It creates N
aggregated ModelServices at zero replicas (no pods), half under a static AutoscalingPolicy and
half under a learned one whose initialPolicy is the benchmark's trained policy file in a
ConfigMap, all with the policies' default cadence (a sample and a decision every 2 s). After
they settle it reads the kube-apiserver's ``apiserver_request_total`` twice, ``--seconds``
apart, and reports the requests per second per ModelService by verb and resource, for the
resources the loop reads or writes (nothing else of the local cluster touches them at a steady
rate while it runs), and whether the loop keeps its cadence: samples (the operator's
``dunnage_autoscaler_samples_total``; 0.5 per second kept), Prometheus queries and ticks per
ModelService per second, the mean tick, and the operator's CPU and resident memory. With
``--burst`` both policies raise the role's minimum to one replica as the window starts, so
every ModelService decides at once and writes its decision into its policy's status: the
contention of many loops for one policy's status (it also reports how long until every
Deployment asked for its replica, and how many entries each policy's status holds at the end).

    .venv/bin/python bench/bench_autoscaler_api.py [--count 20] [--seconds 60] [--burst]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dunnage.devcluster.cluster import DevCluster, wait_for
from dunnage.devcluster.prometheus import prometheus_api, running_prometheus
from dunnage.operator.bench import (
    apiserver_requests,
    cpu_seconds,
    machine,
    model_service,
    on_cluster,
    resident_mb,
)
from dunnage.sim.engine_stub import EngineStub

REPO = Path(__file__).resolve().parent.parent
POLICY_FILE = REPO / "bench" / "results" / "autoscaling-policy-aggregated.json"
WATCHED = ("autoscalingpolicies", "deployments", "configmaps", "modelservices")


def operator_totals(cluster: DevCluster, names: tuple[str, ...]) -> tuple[float, ...]:
    """The operator's ``/metrics`` samples of these names so far, each summed over labels."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{cluster.ports['operator-metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    totals = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return tuple(totals[name] for name in names)


TICKS = ("dunnage_autoscaler_tick_seconds_count", "dunnage_autoscaler_tick_seconds_sum")
SAMPLES = ("dunnage_autoscaler_samples_total",)
# Status requests of any result, and the loops' changes the written ones carried.
STATUS_WRITES = (
    "dunnage_autoscaler_policy_status_writes_total",
    "dunnage_autoscaler_policy_status_changes_total",
)
# Writes of the ModelServices' own objects and status: the creation burst is over once these
# stop (the window then holds the autoscaling loop alone).
RECONCILES = ("dunnage_operator_reconciles_total", "dunnage_operator_status_updates_total")


def prometheus_queries(url: str) -> float:
    """How many instant queries the Prometheus at ``url`` has answered."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "prometheus_http_requests_total"
        and sample.labels.get("handler") == "/api/v1/query"
    )


def policies(url: str) -> list[dict[str, Any]]:
    common = {
        "slo": {"ttftSeconds": 2, "tpotSeconds": 0.1},
        "metrics": {"prometheus": {"url": url}},
        # Idle engines at zero replicas stay there: a steady fleet, no decisions to record.
        "kpa": {"scaleToZero": True},
    }
    static = {
        **common,
        "policy": "static",
        "roles": {"serve": {"target": 32, "minReplicas": 0, "maxReplicas": 4}},
    }
    learned = {
        **common,
        "policy": "learned",
        "roles": {"serve": {"minReplicas": 0, "maxReplicas": 4}},
        "learning": {"initialPolicy": {"configMapName": "bench-trained"}},
    }
    return [
        {
            "apiVersion": "dunnage.io/v1alpha1",
            "kind": "AutoscalingPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }
        for name, spec in (("bench-static", static), ("bench-learned", learned))
    ]


@contextlib.contextmanager
def idle_fleet_prometheus(
    model_services: Sequence[str], namespace: str, scrape_interval: str = "15s", tls: bool = False
) -> Iterator[str]:
    """A real Prometheus scraping one idle simulated engine as one target per ModelService
    (labelled as the chart's PodMonitor labels engines); yields its URL. With ``tls`` it
    serves HTTPS, and this process trusts its certificate (``SSL_CERT_FILE``)."""
    engine = EngineStub()  # idle: no requests running, waiting or completing
    # Its labelled series from the start, as vLLM exports them (the stub adds a counter's or a
    # histogram's series at its first request): every bucket of both latency histograms.
    engine.success.labels(engine.model_name, "stop")
    engine.ttft.labels(engine.model_name)
    engine.itl.labels(engine.model_name)
    server = engine.serve()
    address = f"127.0.0.1:{server.server_address[1]}"
    targets = [
        {
            "targets": [address],
            "labels": {"namespace": namespace, "model_service": name, "role": "serve"},
        }
        for name in model_services
    ]
    config = {
        "global": {"scrape_interval": scrape_interval},
        "scrape_configs": [{"job_name": "engines", "static_configs": targets}],
    }
    try:
        with tempfile.TemporaryDirectory(prefix="bench-prometheus-") as directory:
            if tls:
                os.environ["SSL_CERT_FILE"] = str(Path(directory) / "tls.crt")
            with running_prometheus(config, Path(directory), tls=tls) as url:
                yield url
    finally:
        engine.stop()
        server.shutdown()
        server.server_close()


def run(
    cluster: DevCluster, count: int, seconds: float, namespace: str, burst: bool
) -> dict[str, Any]:
    with idle_fleet_prometheus(names(count), namespace) as url:
        return measure(cluster, count, seconds, namespace, url, burst)


# --burst: both policies raise the role's minimum to 1 at the start of the window.
BURST_PATCH = {"spec": {"roles": {"serve": {"minReplicas": 1}}}}


def scaled(cluster: DevCluster, namespace: str) -> int:
    """How many of the namespace's Deployments ask for one replica or more."""
    out = cluster.kubectl(
        "get", "deployments", "-n", namespace, "-o", "jsonpath={.items[*].spec.replicas}"
    ).stdout
    return sum(1 for n in out.split() if int(n) >= 1)


def names(count: int) -> list[str]:
    return [f"as-{i:03d}" for i in range(count)]


def measure(
    cluster: DevCluster, count: int, seconds: float, namespace: str, url: str, burst: bool
) -> dict[str, Any]:
    cluster.kubectl("create", "namespace", namespace)
    try:
        trained = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "bench-trained"},
            "data": {"policy.json": POLICY_FILE.read_text()},
        }
        services = []
        for i, name in enumerate(names(count)):
            ms = model_service(name, "none", disaggregated=False, replicas=0)
            ms["spec"]["roles"]["serve"]["minReplicas"] = 0
            kind = "static" if i % 2 == 0 else "learned"
            ms["spec"]["autoscaling"] = {"policyRef": {"name": f"bench-{kind}"}}
            services.append(ms)
        cluster.apply([trained, *policies(url), *services], "-n", namespace)
        settle = time.monotonic() + 120
        while operator_totals(cluster, SAMPLES)[0] < count and time.monotonic() < settle:
            time.sleep(1)  # every ModelService sampled (about) once
        engines = f'count(vllm:num_requests_running{{namespace="{namespace}"}}) == {count}'
        wait_for(  # each target's first scrape comes at its own offset in the 15 s
            lambda: prometheus_api(url, "query", query=engines)["result"],
            timeout=60,
            what=f"the engine series of all {count} ModelServices in Prometheus",
        )
        per_engine = f'count({{namespace="{namespace}",model_service="{names(count)[0]}"}})'
        (found,) = prometheus_api(url, "query", query=per_engine)["result"]
        quiet_since, last = time.monotonic(), operator_totals(cluster, RECONCILES)
        while time.monotonic() - quiet_since < 15 and time.monotonic() < settle + 600:
            time.sleep(1)
            now = operator_totals(cluster, RECONCILES)
            if now != last:
                quiet_since, last = time.monotonic(), now
        before, t0, q0 = (
            apiserver_requests(cluster, WATCHED),
            time.monotonic(),
            prometheus_queries(url),
        )
        cpu0, ticks0 = cpu_seconds(cluster, ["operator"]), operator_totals(cluster, TICKS)
        samples0 = operator_totals(cluster, SAMPLES)[0]
        writes0 = operator_totals(cluster, STATUS_WRITES)
        scaled_after = None
        if burst:
            # Every ModelService of both policies decides at its next decision (within 2 s).
            for policy in policies(url):
                cluster.kubectl(
                    "patch", "autoscalingpolicy", policy["metadata"]["name"], "-n", namespace,
                    "--type=merge", "-p", json.dumps(BURST_PATCH),
                )  # fmt: skip
            while time.monotonic() - t0 < seconds:
                if scaled_after is None and scaled(cluster, namespace) == count:
                    scaled_after = round(time.monotonic() - t0, 1)
                time.sleep(1)
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        after, t1, q1 = (
            apiserver_requests(cluster, WATCHED),
            time.monotonic(),
            prometheus_queries(url),
        )
        cpu1, ticks1 = cpu_seconds(cluster, ["operator"]), operator_totals(cluster, TICKS)
        samples1 = operator_totals(cluster, SAMPLES)[0]
        writes1 = operator_totals(cluster, STATUS_WRITES)
        rss = resident_mb(cluster, "operator")
        entries = {
            p["metadata"]["name"]: len(
                (
                    json.loads(
                        cluster.kubectl(
                            "get", "autoscalingpolicy", p["metadata"]["name"], "-n", namespace,
                            "-o", "json",
                        ).stdout
                    ).get("status") or {}
                ).get("modelServices") or {}
            )
            for p in policies(url)
        }  # fmt: skip
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    elapsed = t1 - t0
    rates = {
        k: round((after.get(k, 0.0) - before.get(k, 0.0)) / elapsed / count, 4)
        for k in sorted(after)
        if after.get(k, 0.0) - before.get(k, 0.0) > 0
    }
    ticks = ticks1[0] - ticks0[0]
    return {
        "model_services": count,
        "series_per_model_service": int(found["value"][1]),
        "seconds": round(elapsed, 1),
        "requests_per_second_per_model_service": rates,
        "total_per_second_per_model_service": round(sum(rates.values()), 4),
        # Each ModelService is due a sample every 2 s: fewer than 0.5 a second mean the operator
        # no longer keeps the cadence.
        "samples_per_second_per_model_service": round((samples1 - samples0) / elapsed / count, 3),
        "prometheus_queries_per_second_per_model_service": round((q1 - q0) / elapsed / count, 3),
        "ticks_per_second_per_model_service": round(ticks / elapsed / count, 3),
        "tick_seconds_mean": round((ticks1[1] - ticks0[1]) / ticks, 4) if ticks else None,
        # How many loops' changes one status request carried (the writes combined per policy).
        "status_changes_per_request": round(
            (writes1[1] - writes0[1]) / max(1.0, writes1[0] - writes0[0]), 2
        ),
        "operator_cpu_fraction": round((cpu1["operator"] - cpu0["operator"]) / elapsed, 3),
        "operator_rss_mb": rss,
        "burst": burst,
        # With --burst: seconds from the policies' edit until every role Deployment had 1.
        "all_scaled_after_seconds": scaled_after,
        "status_entries_per_policy": entries,
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kubeconfig", default=None, help="use this running cluster")
    parser.add_argument("--namespace", default=f"bench-as-{int(time.time())}")
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument(
        "--burst",
        action="store_true",
        help="at the window's start raise both policies' minReplicas to 1: every ModelService "
        "decides at once",
    )
    args = parser.parse_args()
    result = on_cluster(
        args.kubeconfig,
        lambda c: run(c, args.count, args.seconds, args.namespace, args.burst),
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
