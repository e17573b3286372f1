#!/usr/bin/env python3
"""What one read of Prometheus costs the operator's autoscaling loop.

A real Prometheus scrapes one idle simulated engine as one target per ModelService (as
``bench_autoscaler_api.py`` sets it up: about 55 series each). A read is what one loop asks per
sample (``PrometheusSource.sample``: four queries over the namespace, answers parsed), without
the shared cache, so that every read goes to Prometheus. The benchmark times ``--reads`` reads
one after the other and then the same number from ``--threads`` threads at once (many loops
sampling together), and reports the wall time per read (median and p95 for the sequential ones,
the mean for the threaded) and the process's CPU per read, once with one ModelService in the
namespace (small answers: the connection's cost shows) and once with ``--fleet``; with
``--tls`` Prometheus serves HTTPS (a self-signed certificate this process trusts).

    .venv/bin/python bench/bench_prometheus_reads.py [--reads 400] [--threads 8] [--fleet 200]
        [--tls]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_autoscaler_api import idle_fleet_prometheus, names  # noqa: E402

from dunnage.autoscaling.metrics import PrometheusSource  # noqa: E402
from dunnage.devcluster.cluster import wait_for  # noqa: E402
from dunnage.devcluster.prometheus import prometheus_api  # noqa: E402

NAMESPACE = "bench"


def measure(url: str, model_services: list[str], reads: int, threads: int) -> dict[str, Any]:
    source = PrometheusSource(url, obj="AutoscalingPolicy bench/bench")
    first = model_services[0]
    assert source.sample(NAMESPACE, first, ("serve",))["serve"].concurrency == 0.0
    walls = []
    cpu = time.process_time()
    for _ in range(reads):
        start = time.perf_counter()
        source.sample(NAMESPACE, first, ("serve",))
        walls.append(time.perf_counter() - start)
    sequential_cpu = time.process_time() - cpu

    def loop(count: int) -> None:
        for _ in range(count):
            source.sample(NAMESPACE, first, ("serve",))

    workers = [threading.Thread(target=loop, args=(reads // threads,)) for _ in range(threads)]
    cpu, start = time.process_time(), time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done = reads // threads * threads
    threaded_wall, threaded_cpu = time.perf_counter() - start, time.process_time() - cpu
    ms = 1000.0
    return {
        "url": url.split(":")[0],
        "model_services": len(model_services),
        "sequential_ms_median": round(statistics.median(walls) * ms, 3),
        "sequential_ms_p95": round(statistics.quantiles(walls, n=20)[-1] * ms, 3),
        "sequential_cpu_ms_per_read": round(sequential_cpu / reads * ms, 3),
        "threaded_ms_per_read": round(threaded_wall / done * ms, 3),
        "threaded_cpu_ms_per_read": round(threaded_cpu / done * ms, 3),
    }


def run(services: list[str], reads: int, threads: int, tls: bool) -> dict[str, Any]:
    with idle_fleet_prometheus(services, NAMESPACE, "1s", tls=tls) as url:
        query = 'up{job="engines"} == 1'
        wait_for(
            lambda: len(prometheus_api(url, "query", query=query)["result"]) == len(services),
            timeout=60,
            what="every target scraped",
        )
        return measure(url, services, reads, threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=400)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--fleet", type=int, default=200)
    parser.add_argument("--tls", action="store_true", help="Prometheus serves HTTPS")
    args = parser.parse_args(argv)
    for count in (1, args.fleet):
        print(json.dumps(run(names(count), args.reads, args.threads, args.tls)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
