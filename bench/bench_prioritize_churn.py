#!/usr/bin/env python3
"""The extender's prioritize under a stream of bindings, in process (no HTTP).

    .venv/bin/python bench/bench_prioritize_churn.py [--nodes 1000] [--names 420] [--calls 2000]

What kube-scheduler does to the extender while it binds GPU pods: between two prioritize calls
one pod is bound (a watch event that changes one node's free GPUs). Each call asks for a
1-GPU pod's scores on `--names` of the nodes (kube-scheduler sends about 420 of 1,000). Prints
the median and p99 of a call (ExtenderCore.prioritize: parse, score, encode) with churn and
without it (no event between calls), with the GPUs a device plugin's (node allocatable) or a
DRA driver's (8 devices in each node's ResourceSlice, a DeviceClass serving them as
nvidia.com/gpu; a binding is then a ResourceClaim allocated a device), and the median time of
rebuilding the node state from full lists (the extender's resync, once a minute) for
bench_problem_build's 1,500 GPU nodes either way, and the mean time of a DRA object's watch
event there.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_extender import GPU, _pct
from bench_problem_build import gpu_objects

from dunnage.scheduler_extender.devicegpus import KINDS as DEVICE_KINDS
from dunnage.scheduler_extender.nodestate import NodeState
from dunnage.scheduler_extender.planbook import PlanBook
from dunnage.scheduler_extender.protocol import ExtenderCore

DRIVER = "gpu.example.com"
DEVICE_CLASS = {
    "kind": "DeviceClass",
    "metadata": {"name": "gpu"},
    "spec": {
        "selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}],
        "extendedResourceName": GPU,
    },
}


def node(name: str, dra: bool = False) -> dict[str, object]:
    return {"metadata": {"name": name}, "status": {"allocatable": {} if dra else {GPU: "8"}}}


def node_slice(name: str) -> dict[str, object]:
    devices = [{"name": f"gpu-{k}", "attributes": {"index": {"int": k}}} for k in range(8)]
    pool = {"name": name, "generation": 1, "resourceSliceCount": 1}
    spec = {"driver": DRIVER, "nodeName": name, "pool": pool, "devices": devices}
    return {"kind": "ResourceSlice", "metadata": {"name": name}, "spec": spec}


def allocated_claim(i: int, where: str, device: int) -> dict[str, object]:
    result = {"request": "r", "driver": DRIVER, "pool": where, "device": f"gpu-{device}"}
    request = {"name": "r", "exactly": {"deviceClassName": "gpu", "count": 1}}
    return {
        "kind": "ResourceClaim",
        "metadata": {"name": f"c{i}", "namespace": "bench"},
        "spec": {"devices": {"requests": [request]}},
        "status": {"allocation": {"devices": {"results": [result]}}},
    }


def gpu_pod(i: int, where: str | None) -> dict[str, object]:
    spec: dict[str, object] = {"containers": [{"name": "c", "resources": {"limits": {GPU: "1"}}}]}
    if where:
        spec["nodeName"] = where
    return {"metadata": {"name": f"p{i}", "namespace": "bench", "uid": f"u{i}"}, "spec": spec}


def run(nodes: int, names: int, calls: int, churn: bool, dra: bool) -> list[float]:
    rng = random.Random(0)
    all_nodes = [f"n{i:05d}" for i in range(nodes)]
    state = NodeState()
    devices = {"DeviceClass": [DEVICE_CLASS], "ResourceSlice": [node_slice(n) for n in all_nodes]}
    state.reset([node(n, dra) for n in all_nodes], [], devices if dra else None)
    core = ExtenderCore(PlanBook(), state)
    times = []
    for i in range(calls + 100):
        if churn and dra:
            claim = allocated_claim(i, rng.choice(all_nodes), rng.randrange(8))
            state.apply("MODIFIED", "ResourceClaim", claim)
        elif churn:
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
    for dra in (False, True):
        for churn in (True, False):
            times = run(args.nodes, args.names, args.calls, churn, dra)
            label = ("DRA, " if dra else "") + (
                "one binding between calls" if churn else "no change between calls"
            )
            print(f"{label:33} p50 {_pct(times, 0.5):.3f} ms  p99 {_pct(times, 0.99):.3f} ms")
    for dra in (False, True):
        by_kind: dict[str, list[dict[str, object]]] = {}
        for obj in gpu_objects(dra):
            by_kind.setdefault(str(obj["kind"]), []).append(obj)
        resyncs = []
        for _ in range(5):
            started = time.perf_counter()
            NodeState().reset(
                by_kind["Node"], by_kind["Pod"], {k: by_kind.get(k, []) for k in DEVICE_KINDS}
            )
            resyncs.append(time.perf_counter() - started)
        label = f"resync, 1500 nodes, {'DRA' if dra else 'device plugin'}"
        print(f"{label:33} median {statistics.median(resyncs) * 1000:.0f} ms")
    state = NodeState()
    state.reset(by_kind["Node"], by_kind["Pod"], {k: by_kind.get(k, []) for k in DEVICE_KINDS})
    for kind in ("ResourceClaim", "ResourceSlice"):  # one event each, as the watch brings them
        events = by_kind[kind][:1000]
        started = time.perf_counter()
        for obj in events:
            state.apply("MODIFIED", kind, obj)
        per_event = (time.perf_counter() - started) / len(events)
        print(f"{kind + ' event, 1500 nodes':33} mean {per_event * 1000:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
