"""Operator throughput: N ModelServices applied at once -> Deployments created -> Ready.

Brings up a local cluster (real kube-apiserver, controller-manager, kube-scheduler, kwok; the
dunnage extender and operator as processes) in a temporary directory, adds kwok GPU nodes for
the benchmark's pool, creates N prefill/decode ModelServices (1 + 1 replicas, 1 GPU each) as fast
as the API server takes them and reports p50/p90/p99 of apply -> all Deployments created and
apply -> Ready (see dunnage/operator/bench.py). With --kubeconfig it uses a running cluster
(whose operator must be running) instead.

    .venv/bin/python bench/bench_operator.py [--count 100] [--kubeconfig K] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dunnage.devcluster.cluster import DevCluster, NodeSpec
from dunnage.operator.bench import POOL_LABEL, measure, on_cluster

POOL = "operator-bench"


def nodes_for(count: int, gpus_per_node: int = 8) -> list[NodeSpec]:
    # 2 GPUs per P/D ModelService, and a quarter more: pods without a node selector (other
    # workloads of a shared cluster) may land on these nodes too.
    needed = -(-2 * count * 5 // (4 * gpus_per_node))
    return [
        NodeSpec(
            f"bench-node-{i:03d}",
            cpu="128",
            memory="2Ti",
            gpus=gpus_per_node,
            pods=250,
            labels={POOL_LABEL: POOL},
        )
        for i in range(needed)
    ]


def run(cluster: DevCluster, count: int, namespace: str, replicas: int = 1) -> dict[str, object]:
    wanted = nodes_for(count)
    existing = set(cluster.kubectl("get", "nodes", "-o", "name").stdout.split())
    missing = [n for n in wanted if f"node/{n.name}" not in existing]
    if missing:
        cluster.create_nodes(missing, timeout=300)
    cluster.wait_nodes_ready([n.name for n in wanted], timeout=300)
    cluster.kubectl("create", "namespace", namespace)
    try:
        return measure(
            cluster.api_client(), namespace, count, pool=POOL, replicas=replicas, timeout=900
        )
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--kubeconfig", default=None, help="use this running cluster")
    parser.add_argument("--namespace", default=f"bench-ms-{int(time.time())}")
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="replicas per role (0: the operator and API server alone, no pods)",
    )
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    result = on_cluster(
        args.kubeconfig, lambda c: run(c, args.count, args.namespace, args.replicas)
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if result["all_ready"] == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
