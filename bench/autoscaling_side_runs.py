"""Side experiments behind claims in docs/benchmarks.md (autoscaling), aggregated mode.

1. ``panic-dip``: can a target rule leave the KPA limit cycle? The target drops to a low rung
   whenever a panic ends (so the drained, over-provisioned fleet is not halved below what the
   load needs) and climbs one rung a minute back to its top; evaluation half of the Azure trace.
2. ``low-rungs-on-bursts``: the learner's rungs below the static sweep (4 to 6.35) on the
   bursty traces: does any reach 90% attainment?
3. ``gentle-scale-down``: the collapsing static targets with Knative's max scale-down rate
   at 1.1 instead of 2.
4. ``rps-metric``: Knative's other metric, requests per second per replica, as static targets
   on the Azure-mix and bursty traces, with a per-replica concurrency limit of 256 (vLLM's
   default ``max_num_seqs``): the request rate does not fall when a fleet runs small batches,
   so is the limit cycle of the concurrency metric gone?

    .venv/bin/python bench/autoscaling_side_runs.py      # ~25 min on 2 cores
    -> bench/results/autoscaling-side-runs.json and a table on stdout
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from autoscaling import KEYS, PROFILE, workload  # noqa: E402

from dunnage.autoscaling.kpa import KPASettings  # noqa: E402
from dunnage.autoscaling.learned import DEFAULT_TARGET_RANGE, ladder  # noqa: E402
from dunnage.autoscaling.policy import Autoscaler, StaticTargets, static_policy  # noqa: E402
from dunnage.autoscaling.types import SERVE, Decision  # noqa: E402

OUT = ROOT / "bench" / "results" / "autoscaling-side-runs.json"
RUNGS = ladder(*DEFAULT_TARGET_RANGE[SERVE])
RPS_TRACES = ("azure-eval", "azure-x40", "azure-x60", "diurnal", "bursty", "bursty3x")
RPS_TARGETS = (10.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0)  # requests/s per replica


class PanicDip(Autoscaler):
    """KPA with target ``top``, lowered to ``low`` when a panic ends and raised one rung per
    ``climb`` seconds back to ``top``."""

    def __init__(self, roles: Sequence[str], top: float, low: float, climb: float) -> None:
        self.targets: dict[str, float] = dict.fromkeys(roles, top)
        super().__init__(roles, StaticTargets(self.targets), label=f"dip:{top:g}/{low:g}")
        self.top, self.low, self.climb = top, low, climb
        self.moved_at: dict[str, float] = {}
        self.panicked: dict[str, bool] = {}

    def decide(self, now: float) -> Decision:
        decision = super().decide(now)
        for role, rd in decision.roles.items():
            target = self.targets[role]
            was = self.panicked.get(role, False)
            self.panicked[role] = rd.panicking
            if rd.panicking:
                self.moved_at[role] = now
            elif was:
                self.targets[role], self.moved_at[role] = min(target, self.low), now
            elif target < self.top and now - self.moved_at.get(role, 0.0) >= self.climb:
                higher = [r for r in RUNGS if r > target] + [self.top]
                self.targets[role], self.moved_at[role] = min(self.top, higher[0]), now
        return decision


def run(job: Mapping[str, Any]) -> dict[str, Any]:
    from dunnage.sim.engine import simulate
    from dunnage.sim.profiles import get_profile

    roles = (SERVE,)
    pol: Autoscaler
    if job["kind"] == "panic-dip":
        pol = PanicDip(roles, job["top"], job["low"], job["climb"])
    elif job["kind"] == "rps-metric":
        settings = KPASettings(metric="rps", container_concurrency=job["limit"])
        pol = static_policy(roles, {SERVE: job["target"]}, settings)
    else:
        settings = KPASettings(max_scale_down_rate=job.get("max_scale_down_rate", 2.0))
        pol = static_policy(roles, {SERVE: job["target"]}, settings)
    res = simulate(workload(job["trace"]), get_profile(PROFILE), pol, mode="aggregated")
    return {**job, **{k: res.summary[k] for k in KEYS}}


def jobs() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"kind": "panic-dip", "trace": "azure-eval", "top": top, "low": 25.4, "climb": 60.0}
        for top in (50.8, 70.0, 102.0, 128.0)
    ]
    out += [
        {"kind": "low-rungs-on-bursts", "trace": trace, "target": target}
        for trace in ("bursty", "bursty3x")
        for target in (4.0, 5.04, 6.35)
    ]
    out += [
        {
            "kind": "gentle-scale-down",
            "trace": "azure-eval",
            "target": target,
            "max_scale_down_rate": 1.1,
        }
        for target in (102.0, 128.0, 161.0)
    ]
    out += [
        {"kind": "rps-metric", "trace": trace, "target": target, "limit": 256}
        for trace in RPS_TRACES
        for target in RPS_TARGETS
    ]
    return out


def main() -> int:
    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(run, jobs()))
    OUT.write_text(
        json.dumps(
            {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "profile": PROFILE, "rows": rows},
            indent=1,
        )
        + "\n"
    )
    print("| experiment | trace | setting | goodput per GPU-hour | attainment | replicas max |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "panic-dip":
            setting = f"top {r['top']:g}, low {r['low']:g}"
        elif r["kind"] == "rps-metric":
            setting = f"static {r['target']:g} requests/s, limit {r['limit']}"
        else:
            setting = f"static {r['target']:g}"
            if "max_scale_down_rate" in r:
                setting += f", max scale-down {r['max_scale_down_rate']:g}"
        print(
            f"| {r['kind']} | {r['trace']} | {setting} | {r['goodput_per_gpu_hour']:,.0f} "
            f"| {100 * r['slo_attainment']:.1f}% | {r['replicas_max']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
