"""Extender latency: p50/p99 of filter and prioritize with 1,000 and 5,000 node names.

kube-scheduler with ``nodeCacheCapable: true`` sends ``NodeNames``; this benchmark does the
same, over one keep-alive HTTP/1.1 connection on loopback, against the real server running in a
separate process (so client and server do not share a GIL). Two cases per size: a pod no plan
covers (pass-through filter, GPU best-fit scores from the node-state cache) and a pod an active
plan steers (one planned node; others reported failed).

    .venv/bin/python bench/bench_extender.py [--calls 2000] [--sizes 1000 5000] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import platform
import statistics
import time
from typing import Any

GPU = "nvidia.com/gpu"


def _serve(port_queue: Any, sizes: list[int]) -> None:
    from prometheus_client import CollectorRegistry

    from dunnage.scheduler_extender.metrics import DunnageMetrics
    from dunnage.scheduler_extender.nodestate import NodeState
    from dunnage.scheduler_extender.planbook import PlanBook
    from dunnage.scheduler_extender.protocol import ExtenderCore
    from dunnage.scheduler_extender.server import make_server
    from dunnage.scheduler_extender.steering import SteeringOrders

    biggest = max(sizes)
    state = NodeState()
    nodes = [
        {"metadata": {"name": f"node-{i:05d}"}, "status": {"allocatable": {GPU: "8"}}}
        for i in range(biggest)
    ]
    pods = [
        {
            "metadata": {"name": f"p{i}", "uid": f"u{i}"},
            "spec": {
                "nodeName": f"node-{i:05d}",
                "containers": [{"resources": {"limits": {GPU: str(i % 8)}}}],
            },
        }
        for i in range(biggest)
    ]
    state.reset(nodes, pods)
    book = PlanBook()
    book.publish(
        SteeringOrders(
            plan="plan-bench",
            expires_at=time.time() + 86400,
            pods={"bench/steered": "node-00007"},
            victims={"node-00007": ("u7",)},
            nodes=frozenset({"node-00007"}),
        )
    )
    server = make_server(
        "127.0.0.1", 0, ExtenderCore(book, state), DunnageMetrics(CollectorRegistry())
    )
    port_queue.put(server.port)
    server.serve_forever()


def _body(pod_name: str, size: int) -> bytes:
    pod = {
        "metadata": {"name": pod_name, "namespace": "bench", "uid": f"uid-{pod_name}"},
        "spec": {
            "priority": 1000,
            "containers": [{"name": "c", "resources": {"limits": {GPU: "2", "cpu": "4"}}}],
        },
    }
    return json.dumps({"Pod": pod, "NodeNames": [f"node-{i:05d}" for i in range(size)]}).encode()


def _measure(port: int, verb: str, body: bytes, calls: int, warmup: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    out: list[float] = []
    for i in range(warmup + calls):
        started = time.perf_counter()
        conn.request("POST", f"/{verb}", body, headers)
        response = conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{verb}: HTTP {response.status}: {payload[:200]!r}")
        if i >= warmup:
            out.append(elapsed)
    conn.close()
    return out


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="measured calls per case")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(queue, args.sizes), daemon=True)
    proc.start()
    try:
        port = queue.get(timeout=120)
        rows = []
        for size in args.sizes:
            for pod_name, case in (("free", "unplanned"), ("steered", "planned")):
                body = _body(pod_name, size)
                for verb in ("filter", "prioritize"):
                    samples = _measure(port, verb, body, args.calls, args.warmup)
                    row = {
                        "verb": verb,
                        "nodes": size,
                        "pod": case,
                        "calls": len(samples),
                        "request_kib": round(len(body) / 1024, 1),
                        "p50_ms": round(_pct(samples, 0.50), 3),
                        "p99_ms": round(_pct(samples, 0.99), 3),
                        "mean_ms": round(statistics.fmean(samples) * 1000, 3),
                    }
                    rows.append(row)
                    print(
                        f"{verb:<10} {size:>5} nodes  {case:<9}  p50 {row['p50_ms']:6.2f} ms"
                        f"  p99 {row['p99_ms']:6.2f} ms  mean {row['mean_ms']:6.2f} ms",
                        flush=True,
                    )
    finally:
        proc.terminate()
        proc.join(5)
    if args.json:
        meta = {"python": platform.python_version(), "machine": platform.machine()}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
