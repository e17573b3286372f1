#!/usr/bin/env python3
"""What an operator restart costs the learned policy, with and without its saved state.

    .venv/bin/python bench/autoscaling_restarts.py [--period 600] [--modes ...] [--traces ...]

The benchmark's trained policies (bench/results/autoscaling-policy-{mode}.json) play the
benchmark's traces (bench/autoscaling.py's workloads) three ways:

- ``running``: one learner for the whole trace, as in the benchmark;
- ``forget``: the operator restarts every ``--period`` seconds and the new one starts from the
  policy file (what every restart did before the learned state was kept);
- ``resume``: the same restarts, the new learner taking over the state the old one saved
  (``LearnedTargets.export``/``restore``, as the operator does through its ConfigMap).

A restart rebuilds the whole autoscaler, as a new operator process would: new KPA deciders
(which start in panic with the ready replicas, so they do not scale down for a stable window),
and a decision clock that starts again. Results go to bench/results/autoscaling-restarts.json;
docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RESULTS = ROOT / "bench" / "results" / "autoscaling-restarts.json"
VARIANTS = ("running", "forget", "resume")


class Restarting:
    """The learned policy, rebuilt every ``period`` seconds of simulated time (a restarted
    operator); with ``resume`` the new learner takes over the old one's state."""

    def __init__(self, build: Callable[[], Any], period: float, resume: bool) -> None:
        self.build = build
        self.period = period
        self.resume = resume
        self.inner = build()
        self.next_restart = period
        self.restarts = 0
        self.moves: list[dict[str, Any]] = []

    @property
    def name(self) -> str:
        return str(self.inner.name)

    def initial_replicas(self, role: str, sizing: Callable[[float], int]) -> int:
        return int(self.inner.initial_replicas(role, sizing))

    def concurrency_limit(self, role: str) -> int:
        return int(self.inner.concurrency_limit(role))

    def target(self, role: str) -> float:
        return float(self.inner.target(role))

    def observe(self, now: float, observations: Mapping[str, Any]) -> None:
        if now >= self.next_restart:
            self._restart()
            self.next_restart += self.period
        self.inner.observe(now, observations)

    def decide(self, now: float) -> Any:
        decision = self.inner.decide(now)
        for role, rd in decision.roles.items():
            if rd.learning and rd.learning["action"] != "stay":
                self.moves.append({"time": now, "role": role, "target": rd.learning["target"]})
        return decision

    def _restart(self) -> None:
        new = self.build()
        if self.resume:
            state = self.inner.source.export(None, key="", metric=self.inner.settings.metric)
            new.source.restore(state, "the restarted operator")
        self.inner = new
        self.restarts += 1


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import autoscaling as bench

    from dunnage.autoscaling.learned import LearnedModel, learned_policy
    from dunnage.sim.engine import simulate
    from dunnage.sim.profiles import get_profile

    model = LearnedModel.load(ROOT / "bench" / "results" / f"autoscaling-policy-{job['mode']}.json")
    period = job["period"] if job["variant"] != "running" else float("inf")
    policy = Restarting(lambda: learned_policy(model), period, job["variant"] == "resume")
    t0 = time.perf_counter()
    res = simulate(
        bench.workload(job["trace"]), get_profile(bench.PROFILE), policy, mode=job["mode"]
    )
    out = {k: res.summary[k] for k in ("goodput_per_gpu_hour", "slo_attainment", "gpu_hours")}
    return {
        **job,
        **out,
        "restarts": policy.restarts,
        "target_moves": len(policy.moves),
        "targets_final": {r: policy.target(r) for r in model.roles},
        "sim_wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--period", type=float, default=600.0, help="seconds between restarts")
    ap.add_argument("--modes", nargs="+", default=["aggregated", "disaggregated"])
    ap.add_argument("--traces", nargs="+", default=["azure-eval", "diurnal", "bursty", "bursty3x"])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    jobs = [
        {"mode": m, "trace": t, "variant": v, "period": args.period}
        for m in args.modes
        for t in args.traces
        for v in VARIANTS
    ]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = list(pool.map(run_one, jobs))
    doc = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores (shared), {platform.machine()}, "
        f"Python {platform.python_version()}",
        "command": " ".join(sys.argv),
        "seconds": round(time.perf_counter() - t0),
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    print("| mode | trace | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    for m in args.modes:
        for t in args.traces:
            cells = []
            for v in VARIANTS:
                (r,) = [r for r in rows if (r["mode"], r["trace"], r["variant"]) == (m, t, v)]
                cells.append(
                    f"{r['goodput_per_gpu_hour']:,.0f} ({100 * r['slo_attainment']:.1f}%, "
                    f"{r['target_moves']} moves)"
                )
            print(f"| {m} | {t} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
