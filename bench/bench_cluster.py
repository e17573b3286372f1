#!/usr/bin/env python3
"""Local control plane at scale, and kube-scheduler throughput with and without the extender.

    .venv/bin/python bench/bench_cluster.py [--nodes 1000] [--pods 1000] [--rounds 3] [--save FILE]

1. `DevCluster.up(nodes=N)`: the whole control plane plus N kwok nodes, readiness checked.
2. A Deployment of N pods (cpu only): time from `kubectl apply` until every pod is Running.
3. Scheduler throughput on the same N nodes: N single-GPU bare pods are created while
   kube-scheduler is stopped, then the scheduler starts and a poll (every 0.2 s) records when
   each pod is first seen with its node. Throughput = (pods - 1) / (last binding - first
   binding); packing = nodes the pods landed on. Five set-ups, interleaved, `--rounds` times:
   the extender as the local cluster registers it (filter and preempt, GPU packing in-tree:
   one call per GPU pod), the extender also answering prioritize (GPU best fit from its watch
   cache: two calls per GPU pod, the set-up before in-tree packing), the extender running but
   not registered with kube-scheduler (what its watches cost the machine, without calls), the
   extender's process stopped (its entry is ignorable, so kube-scheduler schedules without
   it), and stopped with kube-scheduler's default scoring (no GPU packing). Each set-up's
   throughput over the same round's no-extender run is its cost.

Results go to bench/results/cluster.json; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dunnage.devcluster.cluster import COMPONENTS, DevCluster  # noqa: E402
from dunnage.operator.bench import cpu_seconds  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "cluster.json"
PAUSE = "registry.k8s.io/pause:3.10"


def pod_spec(gpus: int) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "64Mi"}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": gpus}
    return {
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "c", "image": PAUSE, "resources": resources}],
    }


def count_pods(cluster: DevCluster, namespace: str, *, running: bool) -> int:
    listing = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
    return sum(
        1
        for p in listing["items"]
        if (p["status"].get("phase") == "Running" if running else p["spec"].get("nodeName"))
    )


def deployment_to_running(cluster: DevCluster, pods: int) -> float:
    cluster.kubectl("create", "namespace", "bench-deploy")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "pause", "namespace": "bench-deploy"},
        "spec": {
            "replicas": pods,
            "selector": {"matchLabels": {"app": "pause"}},
            "template": {"metadata": {"labels": {"app": "pause"}}, "spec": pod_spec(0)},
        },
    }
    started = time.monotonic()
    cluster.apply([deployment])
    while count_pods(cluster, "bench-deploy", running=True) < pods:
        if time.monotonic() - started > 900:
            raise RuntimeError("the Deployment did not become Running in 15 minutes")
        time.sleep(1)
    elapsed = time.monotonic() - started
    cluster.kubectl("delete", "namespace", "bench-deploy", "--wait=true", timeout=600)
    return elapsed


class BindingClock:
    """Polls the namespace's pods (raw JSON, a few times a second) and records when each is
    first seen with a node. A watch with the Python client falls behind under 1,000 pods'
    worth of events on 2 cores; a list every 0.2 s does not."""

    def __init__(self, cluster: DevCluster, namespace: str) -> None:
        from kubernetes import client

        self.api = client.CoreV1Api(cluster.api_client())
        self.namespace = namespace
        self.bound: dict[str, float] = {}
        self.node_of: dict[str, str] = {}

    def poll(self) -> None:
        response = self.api.list_namespaced_pod(self.namespace, _preload_content=False)
        now = time.monotonic()
        for pod in json.loads(response.data)["items"]:
            name = pod["metadata"]["name"]
            node = pod["spec"].get("nodeName")
            if node and name not in self.bound:
                self.bound[name] = now
                self.node_of[name] = node


def extender_seconds(cluster: DevCluster) -> dict[str, float]:
    """The extender's own time answering calls, summed per verb (its request histogram)."""
    with urllib.request.urlopen(f"{cluster.extender_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.labels["verb"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "dunnage_extender_request_seconds"
        for sample in family.samples
        if sample.name.endswith("_sum")
    }


# The scheduler set-ups compared: the extender as DevCluster registers it (filter and preempt;
# GPU packing in-tree), the extender also answering prioritize (GPU best fit from its watch
# cache; the set-up before in-tree packing), the extender's process running but not registered
# (its watches and planner loop load the machine, kube-scheduler never calls it), no extender
# (its process stopped), and no extender with kube-scheduler's default scoring (no GPU packing:
# what packing costs kube-scheduler itself).
SETUPS = ("extender", "extender-prioritize", "unregistered", "no-extender", "no-extender-spread")


def write_scheduler_config(cluster: DevCluster, setup: str) -> None:
    """DevCluster's scheduler configuration (kept aside on first use), changed for the set-up:
    kube-scheduler's default scoring for ``extender-prioritize`` (which also registers the
    extender's prioritize verb, weight 1) and ``no-extender-spread``; no extender entry for
    ``unregistered``."""
    path = cluster.dir / "scheduler.yaml"
    saved = cluster.dir / "scheduler.devcluster.yaml"
    if not saved.exists():
        saved.write_text(path.read_text())
    config = yaml.safe_load(saved.read_text())
    if setup in ("extender-prioritize", "no-extender-spread"):
        config["profiles"] = [{"schedulerName": p["schedulerName"]} for p in config["profiles"]]
    if setup == "extender-prioritize":
        config["extenders"][0].update(prioritizeVerb="prioritize", weight=1)
    elif setup == "unregistered":
        del config["extenders"]
    path.write_text(yaml.safe_dump(config))


def scheduler_throughput(cluster: DevCluster, pods: int, setup: str, run: int) -> dict[str, Any]:
    with_extender = not setup.startswith("no-extender")  # its process running
    namespace = f"bench-{setup}-{run}"
    if with_extender and "extender" not in cluster.running():
        cluster.start_extender()
    if not with_extender:
        cluster.stop_component("extender")
    cluster.stop_component("kube-scheduler")
    write_scheduler_config(cluster, setup)
    cluster.kubectl("create", "namespace", namespace)
    objects = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"p{i:05d}", "namespace": namespace},
            "spec": pod_spec(1),
        }
        for i in range(pods)
    ]
    cluster.kubectl("create", "-f", "-", input=yaml.safe_dump_all(objects), timeout=600)
    clock = BindingClock(cluster, namespace)
    served_before = extender_seconds(cluster) if with_extender else {}
    started = time.monotonic()
    cluster.start_scheduler()
    cpu_before = cpu_seconds(cluster, COMPONENTS)
    while len(clock.bound) < pods:
        if time.monotonic() - started > 900:
            raise RuntimeError(f"only {len(clock.bound)} of {pods} pods bound in 15 minutes")
        clock.poll()
        time.sleep(0.2)
    cpu_after = cpu_seconds(cluster, COMPONENTS)
    served_after = extender_seconds(cluster) if with_extender else {}
    times = sorted(clock.bound.values())
    span = times[-1] - times[0]
    cluster.kubectl("delete", "namespace", namespace, "--wait=true", timeout=600)
    return {
        "setup": setup,
        "run": run,
        "pods": pods,
        # Packing: 8-GPU nodes holding the single-GPU pods (pods / 8 at best).
        "nodes_used": len(set(clock.node_of.values())),
        "first_to_last_binding_s": round(span, 2),
        # Bindings are seen a poll (0.2 s) late: the span needs many polls to mean anything.
        "pods_per_second": round((pods - 1) / span, 1) if span >= 2 else None,
        "start_to_last_binding_s": round(times[-1] - started, 2),
        # From the scheduler's start to the last binding seen (kube-scheduler's from its start).
        "cpu_seconds": {
            name: round(cpu_after[name] - cpu_before.get(name, 0.0), 2) for name in cpu_after
        },
        # The extender's own time answering calls (its request histogram), per verb.
        "extender_served_seconds": {
            verb: round(total - served_before.get(verb, 0.0), 3)
            for verb, total in served_after.items()
        },
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per set-up: median pods/s and nodes used; per round: each other set-up's throughput
    as a fraction of the no-extender run of the same round (and their median)."""
    out: dict[str, Any] = {}
    for setup in SETUPS:
        mine = [r for r in runs if r["setup"] == setup]
        rates = [r["pods_per_second"] for r in mine if r["pods_per_second"]]
        out[setup] = {
            "median_pods_per_second": statistics.median(rates) if rates else None,
            "median_nodes_used": statistics.median(r["nodes_used"] for r in mine),
        }
        if setup != "no-extender":  # each against the same round's no-extender run
            ratios = []
            for r in mine:
                (base,) = (b for b in runs if b["setup"] == "no-extender" and b["run"] == r["run"])
                if r["pods_per_second"] and base["pods_per_second"]:
                    ratios.append(round(r["pods_per_second"] / base["pods_per_second"], 2))
            out[setup]["ratio_to_no_extender"] = ratios
            out[setup]["median_ratio"] = statistics.median(ratios) if ratios else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each scheduler set-up")
    parser.add_argument("--save", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import urllib3

    urllib3.disable_warnings()  # the local API server's self-signed certificate
    doc: dict[str, Any] = {
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
        "nodes": args.nodes,
    }
    with tempfile.TemporaryDirectory(prefix="dunnage-bench-") as tmp:
        cluster = DevCluster(Path(tmp) / "cluster")
        started = time.monotonic()
        cluster.up(nodes=args.nodes)
        doc["cluster_up_seconds"] = round(time.monotonic() - started, 1)
        print(f"cluster up with {args.nodes} kwok nodes: {doc['cluster_up_seconds']}s", flush=True)
        try:
            doc["deployment_running_seconds"] = round(deployment_to_running(cluster, args.pods), 1)
            print(
                f"{args.pods}-pod Deployment Running: {doc['deployment_running_seconds']}s",
                flush=True,
            )
            runs = []
            for run in range(1, args.rounds + 1):
                for setup in SETUPS:  # interleaved, so load on the machine hits each alike
                    runs.append(scheduler_throughput(cluster, args.pods, setup, run))
                    print(json.dumps(runs[-1]), flush=True)
            doc["scheduler_throughput"] = runs
            doc["summary"] = summarize(runs)
            print(json.dumps(doc["summary"], indent=2))
        finally:
            cluster.down()
    args.save.parent.mkdir(parents=True, exist_ok=True)
    args.save.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
