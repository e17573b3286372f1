"""What the operator's autoscaling loop asks of the API server, per autoscaled ModelService.

Brings up a local cluster (real kube-apiserver and controllers, the dunnage operator as a
process) in a temporary directory, or uses a running one with --kubeconfig, and serves a
Prometheus query API from this process that answers every query with no series (an idle fleet:
the loop samples, decides and holds). It creates N aggregated ModelServices at zero replicas
(no pods), half under a static AutoscalingPolicy and half under a learned one whose
initialPolicy is the benchmark's trained policy file in a ConfigMap, all with the policies'
default cadence (a sample and a decision every 2 s). After they settle it reads the
kube-apiserver's ``apiserver_request_total`` twice, ``--seconds`` apart, and reports the
requests per second per ModelService by verb and resource, for the resources the loop reads or
writes (nothing else of the local cluster touches them at a steady rate while it runs).

    .venv/bin/python bench/bench_autoscaler_api.py [--count 20] [--seconds 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import http.server
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dunnage.devcluster.cluster import DevCluster
from dunnage.operator.bench import apiserver_requests, machine, model_service, on_cluster

REPO = Path(__file__).resolve().parent.parent
POLICY_FILE = REPO / "bench" / "results" / "autoscaling-policy-aggregated.json"
WATCHED = ("autoscalingpolicies", "deployments", "configmaps", "modelservices")


class EmptyPrometheus(http.server.BaseHTTPRequestHandler):
    """``/api/v1/query``: success, no series."""

    queries = 0

    def do_GET(self) -> None:
        EmptyPrometheus.queries += 1
        body = json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": []}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def policies(url: str) -> list[dict[str, Any]]:
    common = {
        "slo": {"ttftSeconds": 2, "tpotSeconds": 0.1},
        "metrics": {"prometheus": {"url": url}},
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


def run(cluster: DevCluster, count: int, seconds: float, namespace: str) -> dict[str, Any]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EmptyPrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    cluster.kubectl("create", "namespace", namespace)
    try:
        trained = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "bench-trained"},
            "data": {"policy.json": POLICY_FILE.read_text()},
        }
        services = []
        for i in range(count):
            ms = model_service(f"as-{i:03d}", "none", disaggregated=False, replicas=0)
            ms["spec"]["roles"]["serve"]["minReplicas"] = 0
            kind = "static" if i % 2 == 0 else "learned"
            ms["spec"]["autoscaling"] = {"policyRef": {"name": f"bench-{kind}"}}
            services.append(ms)
        cluster.apply([trained, *policies(url), *services], "-n", namespace)
        settle = time.monotonic() + 120
        while EmptyPrometheus.queries < 2 * count and time.monotonic() < settle:
            time.sleep(1)  # every ModelService sampled at least once (one query per sample)
        time.sleep(10)
        before, t0, q0 = (
            apiserver_requests(cluster, WATCHED),
            time.monotonic(),
            EmptyPrometheus.queries,
        )
        time.sleep(seconds)
        after, t1, q1 = (
            apiserver_requests(cluster, WATCHED),
            time.monotonic(),
            EmptyPrometheus.queries,
        )
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        server.shutdown()
    elapsed = t1 - t0
    rates = {
        k: round((after.get(k, 0.0) - before.get(k, 0.0)) / elapsed / count, 4)
        for k in sorted(after)
        if after.get(k, 0.0) - before.get(k, 0.0) > 0
    }
    return {
        "model_services": count,
        "seconds": round(elapsed, 1),
        "requests_per_second_per_model_service": rates,
        "total_per_second_per_model_service": round(sum(rates.values()), 4),
        "prometheus_queries_per_second_per_model_service": round((q1 - q0) / elapsed / count, 3),
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
    args = parser.parse_args()
    result = on_cluster(args.kubeconfig, lambda c: run(c, args.count, args.seconds, args.namespace))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
