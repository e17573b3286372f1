#!/usr/bin/env python3
"""The extender's prioritize under a stream of bindings, in process (no HTTP).

    .venv/bin/python bench/bench_prioritize_churn.py [--nodes 1000] [--names 420] [--calls 2000]

What kube-scheduler does to the extender while it binds GPU pods: between two prioritize calls
one pod is bound (a watch event that changes one node's free GPUs). Each call asks for a
1-GPU pod's scores on `--names` of the nodes (kube-scheduler sends about 420 of 1,000). Prints
the median and p99 of a call (ExtenderCore.prioritize: parse, score, encode) with churn and
without it (no event between calls).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_extender import GPU, _pct

from dunnage.scheduler_extender.nodestate import NodeState
from dunnage.scheduler_extender.planbook import PlanBook
from dunnage.scheduler_extender.protocol import ExtenderCore


def node(name: str) -> dict[str, object]:
    return {"metadata": {"name": name}, "status": {"allocatable": {GPU: "8"}}}


def gpu_pod(i: int, where: str | None) -> dict[str, object]:
    spec: dict[str, object] = {"containers": [{"name": "c", "resources": {"limits": {GPU: "1"}}}]}
    if where:
        spec["nodeName"] = where
    return {"metadata": {"name": f"p{i}", "namespace": "bench", "uid": f"u{i}"}, "spec": spec}


def run(nodes: int, names: int, calls: int, churn: bool) -> list[float]:
    rng = random.Random(0)
    all_nodes = [f"n{i:05d}" for i in range(nodes)]
    state = NodeState()
    state.reset([node(n) for n in all_nodes], [])
    core = ExtenderCore(PlanBook(), state)
    times = []
    for i in range(calls + 100):
        if churn:
            state.apply("MODIFIED", "Pod", gpu_pod(i, rng.choice(all_nodes)))
        body = json.dumps(
            {"Pod": gpu_pod(10**6 + i, None), "NodeNames": rng.sample(all_nodes, names)}
        )
        started = time.perf_counter()
        core.prioritize(body.encode())
        if i >= 100:  # warm-up
            times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--names", type=int, default=420)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    for churn in (True, False):
        times = run(args.nodes, args.names, args.calls, churn)
        label = "one binding between calls" if churn else "no change between calls"
        print(f"{label:28} p50 {_pct(times, 0.5):.3f} ms  p99 {_pct(times, 0.99):.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
