"""Side experiments behind claims in docs/benchmarks.md (autoscaling); aggregated mode unless said.

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
5. ``learned-rps``: the learned policy over rps targets (the same Q-learning, 100 episodes on the
   training half, ladder 4-64 requests/s per replica, limit 256), then evaluated on the six
   traces of the benchmark.
6. ``learned-rps-fine``: the same with a ladder twice as fine (ratio 2^(1/6), about +12% a rung,
   25 rungs over 4-64): the coarse learner settles at 12.7 while 14 and 15 hold on every
   Azure-mix trace and the next coarse rung, 16, is at the cliff.
7. ``rps-metric-train-half``: static rps targets on the training half (where the learners
   learn): is the cliff where it is on the evaluation half?
8. ``rps-metric-pd``: static rps targets per role in P/D mode (every request passes both pools,
   so both see the same rate) on the evaluation half and the diurnal trace (does the rps
   metric beat the best P/D concurrency targets there?) and, lower ones, on ``bursty``.
9. ``learned-rps-pd``: the learned policy over rps targets in P/D mode (ladders 4-64 requests/s
   per replica for both roles, 100 episodes per role), evaluated on the six traces.
10. ``kpa-no-hard-limit``: Knative's default as it ships: ``containerConcurrency`` 0 (no hard
   limit in the queue-proxy; the engine batches up to its own 256) with the soft target 70
   (70% of ``container-concurrency-target-default`` 100). The benchmark's KPA default has a
   hard limit of 100 (as with ``containerConcurrency: 100``). Both modes, the six traces.
11. ``online-seeds``: the benchmark's learned policy files (both modes) played on the four
   Azure-mix traces with online exploration seeds 0-4 (the tables use 0, which must reproduce
   them): how much of a learned row is the luck of its online probes?

    .venv/bin/python bench/autoscaling_side_runs.py      # ~1.5 h on 2 cores
    .venv/bin/python bench/autoscaling_side_runs.py --only rps-metric learned-rps
    .venv/bin/python bench/autoscaling_side_runs.py --only learned-rps-fine     # ~15 min
    .venv/bin/python bench/autoscaling_side_runs.py --only rps-metric-train-half rps-metric-pd
    .venv/bin/python bench/autoscaling_side_runs.py --only learned-rps-pd           # ~30 min
    .venv/bin/python bench/autoscaling_side_runs.py --only kpa-no-hard-limit        # ~3 min
    .venv/bin/python bench/autoscaling_side_runs.py --only online-seeds             # ~6 min
    -> bench/results/autoscaling-side-runs.json (rows of the experiments run replace theirs)
       and a table on stdout; the learned-* runs also write their policy files
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from autoscaling import KEYS, PROFILE, locked_results, workload  # noqa: E402

from dunnage.autoscaling.kpa import KPASettings  # noqa: E402
from dunnage.autoscaling.learned import (  # noqa: E402
    DEFAULT_TARGET_RANGE,
    LADDER_RATIO,
    LearningSettings,
    ladder,
)
from dunnage.autoscaling.policy import (  # noqa: E402
    Autoscaler,
    RoleBounds,
    StaticTargets,
    static_policy,
)
from dunnage.autoscaling.types import (  # noqa: E402
    DECODE,
    PD_ROLES,
    PREFILL,
    SERVE,
    Decision,
    roles_for,
)

OUT = ROOT / "bench" / "results" / "autoscaling-side-runs.json"
RUNGS = ladder(*DEFAULT_TARGET_RANGE[SERVE])
RPS_TARGETS = (10.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0)  # requests/s per replica
RPS_LIMIT = 256  # vLLM's default max_num_seqs
RPS_POLICY = ROOT / "bench" / "results" / "autoscaling-policy-aggregated-rps.json"
RPS_FINE_POLICY = ROOT / "bench" / "results" / "autoscaling-policy-aggregated-rps-fine.json"
RPS_PD_POLICY = ROOT / "bench" / "results" / "autoscaling-policy-disaggregated-rps.json"
# kind -> (policy file, ladder ratio, mode)
LEARNED = {
    "learned-rps": (RPS_POLICY, LADDER_RATIO, "aggregated"),
    "learned-rps-fine": (RPS_FINE_POLICY, 2 ** (1 / 6), "aggregated"),
    "learned-rps-pd": (RPS_PD_POLICY, LADDER_RATIO, "disaggregated"),
}
TRACES = ("azure-eval", "azure-x40", "azure-x60", "diurnal", "bursty", "bursty3x")
KINDS = (
    "panic-dip",
    "low-rungs-on-bursts",
    "gentle-scale-down",
    "rps-metric",
    "learned-rps",
    "learned-rps-fine",
    "rps-metric-train-half",
    "rps-metric-pd",
    "learned-rps-pd",
    "kpa-no-hard-limit",
    "online-seeds",
)
# The limit of kpa-no-hard-limit: the profiles' batch size (vLLM's default max_num_seqs).
ENGINE_LIMIT = 256


def rps_settings() -> KPASettings:
    return KPASettings(metric="rps", container_concurrency=RPS_LIMIT)


def rps_bounds(mode: str = "aggregated") -> dict[str, RoleBounds]:
    return dict.fromkeys(roles_for(mode), RoleBounds(min_target=4.0, max_target=64.0))


def train_rps(kind: str) -> None:
    """The learned policy over rps targets, trained as the benchmark trains its policies."""
    from dunnage.autoscaling.learned import EPISODES_PER_ROLE, train
    from dunnage.autoscaling.types import SLO
    from dunnage.sim.profiles import get_profile

    path, ratio, mode = LEARNED[kind]
    profile = get_profile(PROFILE)
    model = train(
        workload("azure-train"),
        profile,
        mode=mode,
        slo=SLO(profile.slo_ttft, profile.slo_tpot, 0.9),
        episodes=EPISODES_PER_ROLE * len(rps_bounds(mode)),
        settings=LearningSettings(ladder_ratio=ratio),
        kpa=rps_settings(),
        bounds=rps_bounds(mode),
        seed=0,
    )
    # The file says its targets are requests/s (model.metric); the limit is recorded here.
    model.training.update({"container_concurrency": RPS_LIMIT, "range": "0:0.5"})
    model.save(path)


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
    mode = "aggregated"
    pol: Autoscaler
    if job["kind"] == "online-seeds":
        from dunnage.autoscaling.learned import LearnedModel, learned_policy

        mode = job["mode"]
        model = LearnedModel.load(ROOT / "bench" / "results" / f"autoscaling-policy-{mode}.json")
        roles = model.roles
        pol = learned_policy(model, seed=job["seed"])
    elif job["kind"] == "kpa-no-hard-limit":
        roles, mode = roles_for(job["mode"]), job["mode"]
        kpa = KPASettings(fixed_limit=True, container_concurrency=job["limit"])
        pol = static_policy(roles, dict.fromkeys(roles, KPASettings().default_target), kpa)
    elif job["kind"] == "rps-metric-pd":
        roles, mode = PD_ROLES, "disaggregated"
        targets = {PREFILL: job["prefill"], DECODE: job["decode"]}
        pol = static_policy(roles, targets, rps_settings())
    elif job["kind"] == "panic-dip":
        pol = PanicDip(roles, job["top"], job["low"], job["climb"])
    elif job["kind"] in ("rps-metric", "rps-metric-train-half"):
        pol = static_policy(roles, {SERVE: job["target"]}, rps_settings())
    elif job["kind"] in LEARNED:
        from dunnage.autoscaling.learned import LearnedModel, learned_policy

        path, _, mode = LEARNED[job["kind"]]
        roles = tuple(rps_bounds(mode))
        model = LearnedModel.load(path)
        pol = learned_policy(model, kpa=rps_settings(), bounds=rps_bounds(mode))
    else:
        settings = KPASettings(max_scale_down_rate=job.get("max_scale_down_rate", 2.0))
        pol = static_policy(roles, {SERVE: job["target"]}, settings)
    res = simulate(workload(job["trace"]), get_profile(PROFILE), pol, mode=mode)
    row = {**job, **{k: res.summary[k] for k in KEYS}}
    if job["kind"] in LEARNED or job["kind"] == "online-seeds":
        targets = {role: pol.target(role) for role in roles}
        row["final_target"] = targets if len(roles) > 1 else targets[SERVE]
    return row


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
        {"kind": "rps-metric", "trace": trace, "target": target, "limit": RPS_LIMIT}
        for trace in TRACES
        for target in RPS_TARGETS
    ]
    out += [
        {"kind": kind, "trace": trace, "limit": RPS_LIMIT} for kind in LEARNED for trace in TRACES
    ]
    out += [
        {"kind": "rps-metric-train-half", "trace": "azure-train", "target": t, "limit": RPS_LIMIT}
        for t in (12.0, 13.0, 14.0, 15.0, 16.0)
    ]
    out += [
        {"kind": "rps-metric-pd", "trace": trace, "prefill": p, "decode": d, "limit": RPS_LIMIT}
        for trace in ("azure-eval", "diurnal")
        for p in (20.0, 22.0, 23.0)
        for d in (24.0, 32.0, 36.0)
    ]
    # Bursts need lower targets (the learned P/D policy falls back to 12.7/25.4 there).
    out += [
        {"kind": "rps-metric-pd", "trace": "bursty", "prefill": p, "decode": d, "limit": RPS_LIMIT}
        for p in (10.1, 12.7, 16.0, 20.2)
        for d in (16.0, 20.2, 25.4, 32.0)
    ]
    out += [
        {"kind": "kpa-no-hard-limit", "mode": mode, "trace": trace, "limit": ENGINE_LIMIT}
        for mode in ("aggregated", "disaggregated")
        for trace in TRACES
    ]
    out += [
        {"kind": "online-seeds", "mode": mode, "trace": trace, "seed": seed}
        for mode in ("aggregated", "disaggregated")
        for trace in TRACES[:4]
        for seed in (0, 1, 2, 3, 4)
    ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=KINDS, default=list(KINDS))
    ap.add_argument(
        "--reuse-policies",
        action="store_true",
        help="evaluate the learned side runs' saved policy files instead of training them again",
    )
    args = ap.parse_args()
    for kind in LEARNED:
        if kind in args.only and not args.reuse_policies:
            train_rps(kind)
    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(run, [j for j in jobs() if j["kind"] in args.only]))
    with locked_results(OUT) as doc:
        kept = [r for r in doc.get("rows", []) if r["kind"] not in args.only]
        rows = sorted(kept + rows, key=lambda r: KINDS.index(r["kind"]))
        doc.update(date=datetime.now(UTC).strftime("%Y-%m-%d"), profile=PROFILE, rows=rows)
    print("| experiment | trace | setting | goodput per GPU-hour | attainment | replicas max |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "panic-dip":
            setting = f"top {r['top']:g}, low {r['low']:g}"
        elif r["kind"] in ("rps-metric", "rps-metric-train-half"):
            setting = f"static {r['target']:g} requests/s, limit {r['limit']}"
        elif r["kind"] == "online-seeds":
            setting = f"{r['mode']}: learned, online seed {r['seed']}, ends at {r['final_target']}"
        elif r["kind"] == "kpa-no-hard-limit":
            setting = f"{r['mode']}: KPA target 70, limit {r['limit']}"
        elif r["kind"] == "rps-metric-pd":
            setting = f"static prefill {r['prefill']:g}, decode {r['decode']:g} requests/s"
        elif r["kind"] in LEARNED:
            ends = r["final_target"]
            ends = (
                ", ".join(f"{k} {v:g}" for k, v in ends.items())
                if isinstance(ends, dict)
                else f"{ends:g}"
            )
            setting = f"learned, ends at {ends} requests/s, limit {r['limit']}"
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
