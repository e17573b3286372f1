"""`dunnage demo`: the main job, end to end, in one command (`make demo`).

Live (the default): a local control plane from real Kubernetes binaries (`dunnage cluster up`)
with kwok GPU nodes, dunnage's extender, fallback planner and operator. A GPU pool is
fragmented by one-GPU pods at the same priority as the model service (so kube-scheduler's own
preemption cannot help); the P/D sample ModelService is applied with dunnage switched off: its
prefill pods run, its 2-GPU decode pods stay Pending. Then dunnage is switched on: the planner
moves a few one-GPU pods to open 2-GPU holes, steers the decode pods there, and the
ModelService becomes Ready. A short report, then the cluster is torn down.

Offline (`--offline`, or when the binaries are not built): a slice of the real openb GPU
cluster (Alibaba cluster-trace-gpu-v2023) arrives in trace order, the reference default
scheduler places what it can, and the CP-SAT planner plans what it left pending.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dunnage.solver.commands import format_table

SAMPLES = Path(__file__).resolve().parents[1] / "manifests" / "samples"
NAMESPACE = "demo"
POOL_NODES, GPUS_PER_NODE, FILLERS_PER_NODE = 8, 4, 3


def add_commands(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo", help="the fallback planner placing a P/D ModelService on a fragmented GPU cluster"
    )
    demo.add_argument(
        "--offline", action="store_true", help="plan an openb slice instead of a live cluster"
    )
    demo.add_argument("--nodes", type=int, default=100, help="offline: openb slice size")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--time-limit", type=float, default=10.0, metavar="SECONDS")
    demo.add_argument("--show", type=int, default=10, help="plan lines to print per kind")
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from dunnage.devcluster.cluster import missing_binaries

    if args.offline:
        return run_offline_demo(args)
    missing = missing_binaries()
    if missing:
        sys.stdout.write(
            f"(local cluster binaries missing: {', '.join(missing)}; `make binaries` builds "
            "them; showing the offline demo)\n\n"
        )
        return run_offline_demo(args)
    return run_live_demo()


def run_offline_demo(args: argparse.Namespace) -> int:
    from dunnage.solver.planner import solve
    from dunnage.solver.scenarios import openb_default

    out = sys.stdout
    out.write(f"== openb slice: {args.nodes} nodes (seed {args.seed}), pods in trace order\n")
    started = time.perf_counter()
    default = openb_default(args.nodes, args.seed)
    snapshot = default.snapshot
    out.write(
        f"   reference default scheduler: {len(default.bound)} bound, "
        f"{len(default.preempted)} preempted, {len(snapshot.pending)} left pending "
        f"({time.perf_counter() - started:.1f}s)\n"
    )
    pending_by_priority: dict[int, int] = {}
    for pod in snapshot.pending:
        pending_by_priority[pod.priority] = pending_by_priority.get(pod.priority, 0) + 1
    for prio, count in sorted(pending_by_priority.items(), reverse=True):
        out.write(f"     priority {prio:>5}: {count} pending\n")
    out.write(f"\n== planning with CP-SAT, {args.time_limit:g}s window\n")
    plan = solve(snapshot, time_limit=args.time_limit)
    out.write(format_table(plan, limit=args.show))
    return 0


# --- live --------------------------------------------------------------------------------


def _filler_deployment() -> dict[str, Any]:
    """One-GPU embedding servers at the model service's priority: not preemptable by it."""
    labels = {"app": "embeddings"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "embeddings", "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": POOL_NODES * FILLERS_PER_NODE,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": "llm-high",
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "server",
                            "image": "registry.k8s.io/pause:3.10",
                            "resources": {
                                "requests": {"cpu": "1", "memory": "4Gi"},
                                "limits": {"nvidia.com/gpu": 1},
                            },
                        }
                    ],
                },
            },
        },
    }


def _pods(cluster: Any) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def _gpu_map(cluster: Any) -> str:
    """One line per node: a cell per GPU, E = embeddings, P = prefill, D = decode, . = free."""
    used: dict[str, list[str]] = {}
    for pod in _pods(cluster):
        node = pod["spec"].get("nodeName")
        if not node or pod["status"].get("phase") != "Running":
            continue
        role = pod["metadata"].get("labels", {}).get("dunnage.io/role", "embeddings")
        gpus = sum(
            int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
            for c in pod["spec"]["containers"]
        )
        used.setdefault(node, []).extend([role[0].upper()] * gpus)
    lines = []
    for i in range(POOL_NODES):
        name = f"gpu-node-{i}"
        cells = used.get(name, [])
        lines.append(f"     {name}  [{''.join(cells).ljust(GPUS_PER_NODE, '.')}]")
    return "\n".join(lines)


def _roles(cluster: Any) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = {}
    for pod in _pods(cluster):
        role = pod["metadata"].get("labels", {}).get("dunnage.io/role")
        if role:
            c = counts.setdefault(role, [0, 0])
            c[1] += 1
            c[0] += pod["status"].get("phase") == "Running"
    return {r: (c[0], c[1]) for r, c in sorted(counts.items())}


def run_live_demo() -> int:
    from dunnage.devcluster.cluster import DevCluster, NodeSpec, wait_for

    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="dunnage-demo-") as tmp:
        cluster = DevCluster(Path(tmp) / "cluster")
        started = time.monotonic()
        cluster.up(nodes=0)
        try:
            version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
            out.write(
                f"== local cluster up in {time.monotonic() - started:.1f}s: Kubernetes "
                f"{version['serverVersion']['gitVersion']} (kube-apiserver, kube-scheduler, "
                "controller-manager, etcd), kwok nodes, dunnage extender + planner + operator\n"
            )
            cluster.kubectl("create", "namespace", NAMESPACE)
            cluster.kubectl("apply", "-f", str(SAMPLES / "priorityclass-llm.yaml"))
            cluster.stop_component("extender")  # dunnage off: kube-scheduler alone
            cluster.create_nodes(
                [NodeSpec(f"gpu-node-{i}", gpus=GPUS_PER_NODE) for i in range(POOL_NODES)]
            )
            cluster.apply([_filler_deployment()])
            fillers = POOL_NODES * FILLERS_PER_NODE
            wait_for(
                lambda: (
                    sum(p["status"].get("phase") == "Running" for p in _pods(cluster)) == fillers
                ),
                120,
                "the embeddings pods",
            )
            out.write(
                f"\n== {POOL_NODES} nodes x {GPUS_PER_NODE} GPUs; {fillers} one-GPU embedding "
                "servers at priority llm-high, spread by kube-scheduler (LeastAllocated):\n"
                f"{_gpu_map(cluster)}\n"
            )
            cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(SAMPLES / "modelservice-pd.yaml"))
            out.write(
                "\n== kubectl apply ModelService llama-8b (prefill 2 x 1 GPU, decode 3 x 2 GPUs, "
                "llm-high), dunnage's extender and planner off\n"
            )
            wait_for(lambda: _roles(cluster).get("prefill", (0, 0))[0] == 2, 120, "prefill pods")
            time.sleep(5)  # kube-scheduler retries, with its own preemption: nothing changes
            roles = _roles(cluster)
            out.write(
                f"   after kube-scheduler alone: prefill {roles['prefill'][0]}/2 Running, "
                f"decode {roles.get('decode', (0, 0))[0]}/3 Running (the rest Pending: no node "
                "has 2 free GPUs, and equal-priority pods are not preempted)\n"
                f"{_gpu_map(cluster)}\n"
            )
            out.write("\n== dunnage on: extender + fallback planner\n")
            switched_on = time.monotonic()
            cluster.start_extender()
            wait_for(lambda: _roles(cluster).get("decode", (0, 0))[0] == 3, 120, "decode pods")
            placed_in = time.monotonic() - switched_on
            plans = json.loads(cluster.kubectl("get", "packingplans", "-o", "json").stdout)
            for plan in plans["items"]:
                spec = plan["spec"]
                out.write(
                    f"   {plan['metadata']['name']}: {spec['outcome']} in "
                    f"{spec['solveSeconds']:.2f}s; {len(spec['bindings'])} bindings, "
                    f"{len(spec['moves'])} moves, {len(spec['evictions'])} evictions\n"
                )
                for move in spec["moves"]:
                    out.write(f"     move {move['pod']}: {move['from']} -> {move['to']}\n")
            out.write(f"   decode 3/3 Running {placed_in:.1f}s after switching dunnage on\n")
            out.write(f"{_gpu_map(cluster)}\n")
            wait_for(
                lambda: (
                    "True"
                    in cluster.kubectl(
                        "get",
                        "ms",
                        "llama-8b",
                        "-n",
                        NAMESPACE,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                    ).stdout
                ),
                120,
                "ModelService Ready",
            )
            out.write("\n== kubectl get ms\n")
            out.write(cluster.kubectl("get", "ms", "-n", NAMESPACE).stdout)
        finally:
            cluster.down()
            out.write("\n== cluster torn down\n")
    return 0
