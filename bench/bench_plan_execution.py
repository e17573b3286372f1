#!/usr/bin/env python3
"""How long the fallback planner takes to carry a plan out on the local cluster.

    .venv/bin/python bench/bench_plan_execution.py [--pairs 4 16 64] [--rounds 3]
        [--concurrency 1 8] [--quiet 0 0.5] [--save FILE]

For each size K, in a fresh namespace of one local cluster (real kube-apiserver,
kube-controller-manager, kube-scheduler with the extender, kwok), a fragmented GPU pool where
kube-scheduler cannot place K pending pods and its own preemption cannot help, but K evictions
and K moves can:

- K "A" nodes with 4 GPUs, each running a low-priority 2-GPU pod (bare, bound to the node:
  it can only be evicted) and one replica of a high-priority 2-GPU Deployment (its 20-CPU
  request keeps it to one per 32-CPU node);
- K "C" nodes with 4 GPUs, each running one high-priority 2-GPU bare pod, so 2 GPUs are free
  on every C node;
- then a Deployment of K mid-priority 4-GPU pods: no node has 4 free GPUs, and preempting a
  lower-priority pod frees at most 2 on an A node.

The planner's plan, with the default policy (a 1 s solve, no caps): move the A nodes'
Deployment pods to the C nodes' free GPUs, evict the A nodes' low pods (a pod loses its place
only to a higher-priority pending pod placed on its node: docs/solver.md) and place the K
pending pods there. A plan covers the pods kube-scheduler has marked Unschedulable when the
planner's batch window (1 s) closes; the others get the next plan, once this one is done.

With ``--concurrency`` and ``--quiet``, every size runs once per round at each combination of
the PackingPolicy's ``maxConcurrentEvictions`` and ``batchQuietSeconds`` values given
(interleaved, so they share the machine's moods).

The client's clock (a poll of the namespace's pods and the PackingPlans every 0.2 s) times
each phase from the moment the pending Deployment is applied: the first PackingPlan appears
(batch window, snapshot and solve; the plan's own solveSeconds is recorded too), every victim
of that plan has left, every pod it moved runs again on its planned node, it is Succeeded,
and every pending pod runs (after as many plans as it took).

Results go to bench/results/plan_execution.json; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dunnage.devcluster.cluster import DevCluster, NodeSpec, wait_for  # noqa: E402
from dunnage.scheduler_extender.live import POLICY_REFRESH_SECONDS  # noqa: E402
from e2e.gpu_pool import POOL, deployment, priority_classes  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "plan_execution.json"
POLL = 0.2


def bare_pod(name: str, node: str, priority_class: str, pool: str) -> dict[str, Any]:
    """A 2-GPU pod bound to ``node`` (no controller: it can be evicted, not moved)."""
    spec = deployment(name, 2, priority_class, pool, cpu="1")["spec"]["template"]["spec"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": spec | {"nodeName": node},
    }


class Poller:
    """The namespace's pods and the cluster's PackingPlans, through the Python client."""

    def __init__(self, cluster: DevCluster, namespace: str) -> None:
        from kubernetes import client

        api = cluster.api_client()
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def pods(self) -> list[dict[str, Any]]:
        listing: Any = self.core.list_namespaced_pod(self.namespace, _preload_content=False)
        return list(json.loads(listing.data)["items"])

    def plans(self) -> list[dict[str, Any]]:
        listing: Any = self.custom.list_cluster_custom_object(
            "dunnage.io", "v1alpha1", "packingplans"
        )
        return list(listing["items"])


def running_on(pods: list[dict[str, Any]], app: str) -> dict[str, str]:
    """Pod name -> node, for the app's Running pods that are not being deleted."""
    return {
        p["metadata"]["name"]: p["spec"]["nodeName"]
        for p in pods
        if p["metadata"].get("labels", {}).get("app") == app
        and p["status"].get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
    }


def fragment(cluster: DevCluster, poller: Poller, namespace: str, pairs: int) -> None:
    a_nodes = [f"{namespace}-a{i:03d}" for i in range(pairs)]
    c_nodes = [f"{namespace}-c{i:03d}" for i in range(pairs)]
    labels = {POOL: namespace}
    cluster.create_nodes([NodeSpec(n, cpu="32", gpus=4, labels=labels) for n in a_nodes])
    low = [bare_pod(f"low-{i:03d}", n, "frag-low", namespace) for i, n in enumerate(a_nodes)]
    cluster.apply(low, "-n", namespace)
    cluster.apply(
        [deployment("high-a", 2, "frag-high", namespace, replicas=pairs, cpu="20")],
        "-n",
        namespace,
    )
    placed = wait_for(
        lambda: len(on := running_on(poller.pods(), "high-a")) == pairs and on,
        180,
        "high-a Running on the A nodes",
    )
    assert sorted(placed.values()) == a_nodes, placed
    cluster.create_nodes([NodeSpec(n, cpu="32", gpus=4, labels=labels) for n in c_nodes])
    high = [bare_pod(f"high-c-{i:03d}", n, "frag-high", namespace) for i, n in enumerate(c_nodes)]
    cluster.apply(high, "-n", namespace)
    wait_for(
        lambda: sum(p["status"].get("phase") == "Running" for p in poller.pods()) == 3 * pairs,
        180,
        "every pod of the pool Running",
    )


def set_policy(cluster: DevCluster, concurrency: int, quiet: float) -> None:
    policy = {
        "apiVersion": "dunnage.io/v1alpha1",
        "kind": "PackingPolicy",
        "metadata": {"name": "default"},
        "spec": {"maxConcurrentEvictions": concurrency, "batchQuietSeconds": quiet},
    }
    cluster.apply([policy])


def variant(concurrency: int, quiet: float) -> str:
    return f"c{concurrency} q{quiet:g}"


def run(
    cluster: DevCluster, pairs: int, round_: int, concurrency: int, quiet: float
) -> dict[str, Any]:
    namespace = f"pe-{pairs}-{round_}-c{concurrency}-q{int(quiet * 1000)}"
    set_policy(cluster, concurrency, quiet)
    policy_set = time.monotonic()
    cluster.kubectl("create", "namespace", namespace)
    poller = Poller(cluster, namespace)
    try:
        fragment(cluster, poller, namespace, pairs)
        # the planner re-reads its policy every 5 s
        time.sleep(max(0.0, POLICY_REFRESH_SECONDS + 1 - (time.monotonic() - policy_set)))
        earlier = {p["metadata"]["name"] for p in poller.plans()}
        times: dict[str, float] = {}
        started = time.monotonic()
        cluster.apply(
            [deployment("big", 4, "frag-mid", namespace, replicas=pairs, cpu="1")], "-n", namespace
        )

        def mark(name: str) -> None:
            times.setdefault(name, round(time.monotonic() - started, 2))

        plan: dict[str, Any] | None = None  # the first plan
        plans_here: list[dict[str, Any]] = []
        deadline = started + 600
        while time.monotonic() < deadline:
            new = [p for p in poller.plans() if p["metadata"]["name"] not in earlier]
            mine = [
                p
                for p in new
                if any(b["pod"].startswith(f"{namespace}/") for b in p["spec"]["bindings"])
            ]
            if mine:
                plan = min(mine, key=lambda p: str(p["metadata"]["name"]))
                plans_here = mine
                mark("plan_created")
            elif declined := [p for p in new if p["spec"]["outcome"] != "improved"]:
                raise RuntimeError(f"K={pairs}: the planner found no plan: {declined[0]['status']}")
            pods = poller.pods()
            if plan is not None:
                spec = plan["spec"]
                live = {
                    p["metadata"]["uid"] for p in pods if not p["metadata"].get("deletionTimestamp")
                }
                victims = [v["uid"] for v in spec["evictions"] + spec["moves"]]
                if victims and not any(v in live for v in victims):
                    mark("victims_gone")
                moved_to = sorted(m["to"] for m in spec["moves"])
                if (
                    moved_to
                    and sorted(n for n in running_on(pods, "high-a").values() if n in set(moved_to))
                    == moved_to
                ):
                    mark("moved_running")
                if len(running_on(pods, "big")) == pairs:
                    mark("pending_running")
                if (plan.get("status") or {}).get("phase") == "Succeeded":
                    mark("plan_succeeded")
                if (plan.get("status") or {}).get("phase") in ("Expired", "Failed"):
                    raise RuntimeError(f"plan {plan['metadata']['name']}: {plan['status']}")
            if "plan_succeeded" in times and "pending_running" in times:
                break
            time.sleep(POLL)
        else:
            raise TimeoutError(f"K={pairs}: not done after 600 s: {times}")
        assert plan is not None
        spec = plan["spec"]
        # The plan's placements, checked against the cluster: every pending pod on its node.
        planned = {b["pod"].split("/", 1)[1]: b["node"] for b in spec["bindings"]}
        bound = running_on(poller.pods(), "big")
        assert all(bound.get(pod) == node for pod, node in planned.items()), (planned, bound)
        return {
            "pairs": pairs,
            "nodes": 2 * pairs,
            "round": round_,
            "concurrency": concurrency,
            "quiet": quiet,
            "plan": plan["metadata"]["name"],
            "evictions": len(spec["evictions"]),
            "moves": len(spec["moves"]),
            "bindings": len(spec["bindings"]),
            "solve_seconds": spec["solveSeconds"],
            "proven_optimal": spec["provenOptimal"],
            "plans": len(plans_here),
            "seconds": times,
        }
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "nodes", "-l", f"{POOL}={namespace}", check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8])
    parser.add_argument("--quiet", type=float, nargs="+", default=[0.5])
    parser.add_argument("--save", type=Path, default=RESULTS)
    args = parser.parse_args()
    import urllib3

    urllib3.disable_warnings()  # the local API server's self-signed certificate
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dunnage-bench-") as tmp:
        cluster = DevCluster(Path(tmp))
        cluster.up(nodes=0)
        try:
            cluster.apply(priority_classes())
            for round_ in range(args.rounds):
                for pairs in args.pairs:
                    for concurrency in args.concurrency:
                        for quiet in args.quiet:
                            row = run(cluster, pairs, round_, concurrency, quiet)
                            print(json.dumps(row), flush=True)
                            results.append(row)
        finally:
            cluster.down()
    phases = sorted({k for r in results for k in r["seconds"]})
    summary = {
        f"{k} {variant(c, q)}": {
            phase: statistics.median(r["seconds"][phase] for r in rows if phase in r["seconds"])
            for phase in phases
        }
        | {"solve_seconds": statistics.median(r["solve_seconds"] for r in rows)}
        for k in args.pairs
        for c in args.concurrency
        for q in args.quiet
        if (
            rows := [
                r for r in results if r["pairs"] == k and r["concurrency"] == c and r["quiet"] == q
            ]
        )
    }
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "command": " ".join(sys.argv),
        "runs": results,
        "median_seconds": summary,
    }
    args.save.parent.mkdir(parents=True, exist_ok=True)
    args.save.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
