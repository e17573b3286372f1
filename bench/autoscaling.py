#!/usr/bin/env python3
"""Autoscaling benchmark: learned vs Knative's KPA default vs every static target.

    .venv/bin/python bench/autoscaling.py                      # everything (about 30-40 min, 2 cores)
    .venv/bin/python bench/autoscaling.py --modes aggregated   # one mode
    .venv/bin/python bench/autoscaling.py --plot-only          # redraw from the saved JSON
    .venv/bin/python bench/autoscaling.py --learned-only       # re-run the learned rows only

Per mode (aggregated, disaggregated), on the Azure conversation trace with --profile
llama3-8b-h100 --load-scale 50:

1. train the learned policy on the first half of the trace (`dunnage policy train --range 0:0.5`);
2. evaluate on the second half: the KPA default, the learned policy (starting from its file,
   refining online) and a sweep of static targets (the learner's ladder; a grid of prefill x
   decode targets for P/D); the best static target is chosen in hindsight on that same half;
3. the same on traces the policy was not trained on: synthetic bursty traces with the Azure
   lengths and mean load (bursts of 2x for ~30 s, or 3x for ~45 s, every ~5 min; a diurnal
   swing of +-40% over 30 minutes), and the Azure trace's second half at load scales 40 and 60.

Results go to bench/results/autoscaling.json, plots to docs/img/autoscaling_*.png. With
``--fixed-limit N`` every static and learned run has each replica's limit on requests in flight
fixed at N instead of Knative's target / 0.7 (the KPA default stays as in the main tables:
target 70, limit 100); results, policy files and plots then carry ``-limitN`` in their names.
Each mode's rows are written when it is done, under a lock, so modes run in separate
processes at once keep each other's rows (they share the cores, though: run times grow).
Every number comes from the simulator (dunnage.sim); nothing is fixed by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "autoscaling.json"
POLICIES = ROOT / "bench" / "results"
IMG = ROOT / "docs" / "img"
PROFILE = "llama3-8b-h100"
SCALE = 50.0
KEYS = (
    "goodput_rps",
    "slo_attainment",
    "gpu_hours",
    "goodput_per_gpu_hour",
    "ttft_p50",
    "ttft_p99",
    "tpot_p50",
    "tpot_p99",
    "replicas_max",
    "replicas_mean",
    "sim_wall_s",
)
AGG_TARGETS = [8, 10.1, 12.7, 16, 20.2, 25.4, 32, 40.3, 50.8, 64, 80.6, 102, 128, 161, 203, 256]
PD_PREFILL = [0.252, 0.4, 0.504, 0.635, 0.8, 1.01, 1.27, 1.6, 2.02]
PD_DECODE = [25.4, 32, 40.3, 50.8, 64, 80.6, 102, 128, 161, 203, 256]


def suffix(limit: int | None) -> str:
    return "" if limit is None else f"-limit{limit}"


def results_path(limit: int | None) -> Path:
    return RESULTS if limit is None else RESULTS.with_name(f"autoscaling{suffix(limit)}.json")


def policy_path(mode: str, limit: int | None) -> Path:
    return POLICIES / f"autoscaling-policy-{mode}{suffix(limit)}.json"


def kpa_for(limit: int | None) -> Any:
    """The KPA settings of static and learned runs: Knative's, or a fixed per-replica limit."""
    from dunnage.autoscaling.kpa import KPASettings

    if limit is None:
        return KPASettings()
    return KPASettings(fixed_limit=True, container_concurrency=limit)


def workload(name: str) -> Any:
    from dunnage.sim.trace import load_csv, synthetic

    azure = load_csv("builtin:azure-conv")
    if name == "azure-eval":
        return azure.scaled(SCALE).fraction(0.5, 1.0)
    if name == "azure-train":
        return azure.scaled(SCALE).fraction(0.0, 0.5)
    if name.startswith("azure-x"):
        return azure.scaled(float(name.removeprefix("azure-x"))).fraction(0.5, 1.0)
    if name.startswith("bursty"):
        # The Azure mean load and lengths, with bursts of 2x (bursty) or 3x (bursty3x) the base
        # rate lasting 30 s (45 s) on average, every 5 minutes on average.
        harsh = name == "bursty3x"
        return synthetic(
            "bursty",
            rate=azure.rate * SCALE,
            duration=1800.0,
            seed=7,
            lengths=azure,
            burst_factor=3.0 if harsh else 2.0,
            burst_seconds=45.0 if harsh else 30.0,
            burst_every=300.0,
        )
    if name == "diurnal":
        # The Azure mean load and lengths, the rate swinging +-40% over a 30-minute period.
        return synthetic(
            "diurnal",
            rate=azure.rate * SCALE,
            duration=3600.0,
            seed=8,
            lengths=azure,
            period=1800.0,
            amplitude=0.4,
        )
    raise ValueError(name)


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One simulation (in a worker process)."""
    from dunnage.autoscaling.learned import LearnedModel, learned_policy
    from dunnage.autoscaling.policy import kpa_policy, static_policy
    from dunnage.autoscaling.types import roles_for
    from dunnage.sim.engine import simulate
    from dunnage.sim.profiles import get_profile

    mode = job["mode"]
    roles = roles_for(mode)
    trace = workload(job["trace"])
    if job["policy"] == "kpa":
        pol = kpa_policy(roles)
    elif job["policy"] == "learned":
        pol = learned_policy(LearnedModel.load(job["file"]))  # the limit it was trained under
    else:
        targets = dict(zip(roles, job["targets"], strict=True))
        pol = static_policy(roles, targets, kpa_for(job.get("limit")))
    res = simulate(
        trace, get_profile(PROFILE), pol, mode=mode, keep_timeline=job.get("timeline", False)
    )
    out = {k: res.summary[k] for k in KEYS}
    out.update({k: job[k] for k in ("mode", "trace", "policy") if k in job})
    if "targets" in job:
        out["targets"] = job["targets"]
    if job["policy"] == "learned":
        out["targets_final"] = {r: pol.target(r) for r in roles}
        out["target_moves"] = [
            {k: h[k] for k in ("time", "role", "action", "target", "attainment")}
            for h in pol.source.history  # type: ignore[attr-defined]
            if h["action"] != "stay"
        ]
    if job.get("timeline"):
        out["timeline"] = {
            k: v[:: max(1, len(res.timeline["t"]) // 900)] for k, v in res.timeline.items()
        }
    return out


def train_policy(
    mode: str, episodes: int, seed: int, *, verbose: bool = False, limit: int | None = None
) -> Any:
    """The benchmark's training: the first half of the Azure trace at load scale 50."""
    from dunnage.autoscaling.learned import train
    from dunnage.autoscaling.types import SLO
    from dunnage.sim.profiles import get_profile

    profile = get_profile(PROFILE)
    model = train(
        workload("azure-train"),
        profile,
        mode=mode,
        slo=SLO(profile.slo_ttft, profile.slo_tpot, 0.9),
        episodes=episodes,
        kpa=kpa_for(limit),
        seed=seed,
        progress=(
            (lambda ep, e: print(f"  [{mode}] episode {ep + 1}/{episodes}: {e}", flush=True))
            if verbose
            else None
        ),
    )
    model.training.update(
        {"load_scale": SCALE, "range": "0:0.5", "trace_arg": "builtin:azure-conv"}
    )
    return model


def train_mode(mode: str, episodes: int, seed: int, limit: int | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = train_policy(mode, episodes, seed, verbose=True, limit=limit)
    path = policy_path(mode, limit)
    model.save(path)
    return {
        "file": str(path.relative_to(ROOT)),
        "targets": model.home_targets(),
        "episodes": episodes,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def jobs_for(
    mode: str, trace: str, file: str, full_sweep: bool, limit: int | None = None
) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = [
        {"mode": mode, "trace": trace, "policy": "kpa", "timeline": trace == "azure-eval"},
        {
            "mode": mode,
            "trace": trace,
            "policy": "learned",
            "file": file,
            "timeline": trace == "azure-eval",
        },
    ]
    if mode == "aggregated":
        grid = [[t] for t in AGG_TARGETS]
    else:
        grid = [[p, d] for p in PD_PREFILL for d in PD_DECODE]
        if not full_sweep:
            # The neighbourhood of the targets that do well on the evaluation half, every rung.
            grid = [[p, d] for p in PD_PREFILL[1:-2] for d in PD_DECODE[2:-1]]
    for targets in grid:
        jobs.append(
            {"mode": mode, "trace": trace, "policy": "static", "targets": targets, "limit": limit}
        )
    return jobs


def learned_and_checks(
    jobs: list[dict[str, Any]], runs: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The learned jobs, plus the KPA and best static jobs of each trace, re-run to check that
    the saved rows still hold."""
    best = {trace: summarize(rows)["best_static_targets"] for trace, rows in runs.items()}
    return [
        j
        for j in jobs
        if j["policy"] in ("learned", "kpa")
        or (j["policy"] == "static" and best.get(j["trace"]) == j["targets"])
    ]


def merge_learned(
    runs: dict[str, list[dict[str, Any]]], rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The saved rows with the new learned ones, once the re-run checks reproduce theirs."""
    key = ("goodput_per_gpu_hour", "slo_attainment", "gpu_hours", "replicas_max")
    out: list[dict[str, Any]] = []
    for trace in {r["trace"] for r in rows}:
        saved = runs.get(trace)
        if not saved:
            raise SystemExit(f"--learned-only: no saved rows for {trace}; run the full sweep")
        new = [r for r in rows if r["trace"] == trace]
        for check in (r for r in new if r["policy"] != "learned"):
            old = next(
                r
                for r in saved
                if r["policy"] == check["policy"] and r.get("targets") == check.get("targets")
            )
            if any(old[k] != check[k] for k in key):
                raise SystemExit(
                    f"--learned-only: {trace} {check['policy']} {check.get('targets', '')} no "
                    f"longer reproduces the saved row; run the full sweep"
                )
            print(f"  {trace}: {check['policy']} {check.get('targets', '')} reproduced", flush=True)
        out += [r for r in saved if r["policy"] != "learned"]
        out += [r for r in new if r["policy"] == "learned"]
    return out


def summarize(rows: list[dict[str, Any]], goal: float = 0.9) -> dict[str, Any]:
    kpa = next(r for r in rows if r["policy"] == "kpa")
    learned = next(r for r in rows if r["policy"] == "learned")
    # The KPA default is the static target 70 (limit 100): it counts as a static candidate.
    statics = [r for r in rows if r["policy"] == "static"] + [{**kpa, "targets": ["kpa"]}]
    feasible = [r for r in statics if r["slo_attainment"] >= goal]
    best = max(feasible or statics, key=lambda r: r["goodput_per_gpu_hour"])
    best_any = max(statics, key=lambda r: r["goodput_per_gpu_hour"])
    g = learned["goodput_per_gpu_hour"]
    return {
        "kpa": kpa["goodput_per_gpu_hour"],
        "kpa_attainment": kpa["slo_attainment"],
        "learned": g,
        "learned_attainment": learned["slo_attainment"],
        "learned_targets_final": learned.get("targets_final"),
        "best_static": best["goodput_per_gpu_hour"],
        "best_static_targets": best["targets"],
        "best_static_attainment": best["slo_attainment"],
        "best_static_any_attainment": best_any["goodput_per_gpu_hour"],
        "learned_vs_kpa": round(g / kpa["goodput_per_gpu_hour"], 3)
        if kpa["goodput_per_gpu_hour"]
        else None,
        "learned_vs_best_static": round(g / best["goodput_per_gpu_hour"], 3),
        "statics_feasible": f"{len(feasible)}/{len(statics)}",
        "target_met": bool(
            kpa["goodput_per_gpu_hour"] > 0
            and g >= 1.3 * kpa["goodput_per_gpu_hour"]
            and g >= 0.95 * best["goodput_per_gpu_hour"]
            and learned["slo_attainment"] >= goal
        ),
    }


def plot(doc: dict[str, Any], limit: int | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    for mode in doc["modes"]:
        runs = doc["runs"][mode]
        traces = list(runs)
        if mode == "aggregated":
            cols = min(3, len(traces))
            nrows = -(-len(traces) // cols)
            fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 4 * nrows), squeeze=False)
            for ax in axes.flat[len(traces) :]:
                ax.set_visible(False)
            for ax, trace in zip(axes.flat, traces, strict=False):
                rows = runs[trace]
                st = sorted(
                    (r for r in rows if r["policy"] == "static"), key=lambda r: r["targets"][0]
                )
                xs = [r["targets"][0] for r in st]
                ys = [r["goodput_per_gpu_hour"] / 1000 for r in st]
                ax.plot(xs, ys, "o-", color="grey", label="static target")
                bad = [
                    (x, y) for x, y, r in zip(xs, ys, st, strict=True) if r["slo_attainment"] < 0.9
                ]
                if bad:
                    ax.plot(
                        *zip(*bad, strict=True),
                        "x",
                        color="red",
                        ms=9,
                        label="static, attainment < 90%",
                    )
                kpa = next(r for r in rows if r["policy"] == "kpa")
                learned = next(r for r in rows if r["policy"] == "learned")
                ax.axhline(
                    kpa["goodput_per_gpu_hour"] / 1000,
                    color="tab:orange",
                    ls="--",
                    label="KPA default (70)",
                )
                ax.axhline(
                    learned["goodput_per_gpu_hour"] / 1000, color="tab:blue", label="learned"
                )
                ax.set_xscale("log")
                ax.set_xlabel("concurrency target per replica")
                ax.set_ylabel("goodput per GPU-hour (thousand requests)")
                ax.set_title(f"aggregated, {trace}")
                ax.legend(fontsize=7)
            fig.tight_layout()
            fig.savefig(IMG / f"autoscaling_aggregated{suffix(limit)}.png", dpi=110)
            plt.close(fig)
        else:
            cols = min(3, len(traces))
            nrows = -(-len(traces) // cols)
            fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, 4.4 * nrows), squeeze=False)
            for ax in axes.flat[len(traces) :]:
                ax.set_visible(False)
            for ax, trace in zip(axes.flat, traces, strict=False):
                rows = [r for r in runs[trace] if r["policy"] == "static"]
                ps = sorted({r["targets"][0] for r in rows})
                ds = sorted({r["targets"][1] for r in rows})
                grid = [[float("nan")] * len(ds) for _ in ps]
                for r in rows:
                    grid[ps.index(r["targets"][0])][ds.index(r["targets"][1])] = (
                        r["goodput_per_gpu_hour"] / 1000 if r["slo_attainment"] >= 0.9 else 0.0
                    )
                im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
                ax.set_xticks(range(len(ds)), [f"{d:g}" for d in ds], fontsize=7, rotation=45)
                ax.set_yticks(range(len(ps)), [f"{p:g}" for p in ps], fontsize=7)
                ax.set_xlabel("decode target")
                ax.set_ylabel("prefill target")
                learned = next(r for r in runs[trace] if r["policy"] == "learned")
                kpa = next(r for r in runs[trace] if r["policy"] == "kpa")
                ax.set_title(
                    f"P/D, {trace}: static goodput/GPU-h (k; 0 = attainment < 90%)\n"
                    f"learned {learned['goodput_per_gpu_hour'] / 1000:.1f}k "
                    f"({learned['slo_attainment']:.0%}), KPA {kpa['goodput_per_gpu_hour'] / 1000:.1f}k "
                    f"({kpa['slo_attainment']:.0%})",
                    fontsize=8,
                )
                fig.colorbar(im, ax=ax)
            fig.tight_layout()
            fig.savefig(IMG / f"autoscaling_disaggregated{suffix(limit)}.png", dpi=110)
            plt.close(fig)
    # Replicas over time on the evaluation half: KPA default vs learned.
    modes = [m for m in doc["modes"] if "azure-eval" in doc["runs"][m]]
    if modes:
        fig, axes = plt.subplots(len(modes), 1, figsize=(10, 3.2 * len(modes)), squeeze=False)
        for ax, mode in zip(axes[:, 0], modes, strict=True):
            for r in doc["runs"][mode]["azure-eval"]:
                if r["policy"] not in ("kpa", "learned") or "timeline" not in r:
                    continue
                tl = r["timeline"]
                total = [
                    sum(vals)
                    for vals in zip(*(tl[k] for k in tl if k.endswith("_replicas")), strict=True)
                ]
                ax.plot(
                    tl["t"],
                    total,
                    label=f"{r['policy']} (goodput/GPU-h {r['goodput_per_gpu_hour']:.0f})",
                )
            ax.set_yscale("log")
            ax.set_ylabel("replicas (all roles)")
            ax.set_title(f"{mode}: Azure conversation x{SCALE:g}, second half")
            ax.legend(fontsize=8)
        axes[-1, 0].set_xlabel("seconds")
        fig.tight_layout()
        fig.savefig(IMG / f"autoscaling_timeline{suffix(limit)}.png", dpi=110)
        plt.close(fig)


def report(doc: dict[str, Any]) -> str:
    """Markdown tables of the saved results (for docs/benchmarks.md)."""
    lines = []
    for mode in doc["modes"]:
        lines += [
            f"**{mode}** (goodput per GPU-hour; SLO attainment in brackets)",
            "",
            "| trace | KPA default | learned (final targets) | best static, attainment >= 90% | learned / KPA | learned / best static | target met |",
            "|---|---|---|---|---|---|---|",
        ]
        for trace, s in doc["summary"][mode].items():
            final = ", ".join(f"{r} {t:g}" for r, t in (s["learned_targets_final"] or {}).items())
            best_t = "/".join(
                f"{t:g}" if isinstance(t, int | float) else "70 = KPA"
                for t in s["best_static_targets"]
            )
            lines.append(
                f"| {trace} | {s['kpa']:,.0f} ({s['kpa_attainment']:.1%}) "
                f"| {s['learned']:,.0f} ({s['learned_attainment']:.1%}; {final}) "
                f"| {s['best_static']:,.0f} ({best_t}; {s['best_static_attainment']:.1%}; "
                f"{s['statics_feasible']} feasible) "
                f"| {s['learned_vs_kpa']}x | {s['learned_vs_best_static']}x "
                f"| {'yes' if s['target_met'] else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    from dunnage.autoscaling.learned import EPISODES_PER_ROLE

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--modes", nargs="+", default=["aggregated", "disaggregated"])
    ap.add_argument("--episodes-per-role", type=int, default=EPISODES_PER_ROLE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--traces",
        nargs="+",
        default=["azure-eval", "bursty", "bursty3x", "diurnal", "azure-x40", "azure-x60"],
    )
    ap.add_argument(
        "--reuse-policies", action="store_true", help="do not retrain when a policy file exists"
    )
    ap.add_argument(
        "--learned-only",
        action="store_true",
        help="re-run only the learned policy and keep the saved KPA and static rows, after "
        "checking that the KPA default and each trace's best static target reproduce them",
    )
    ap.add_argument(
        "--fixed-limit",
        type=int,
        default=None,
        metavar="N",
        help="static and learned runs with each replica's limit fixed at N (not target / 0.7)",
    )
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--report", action="store_true", help="print markdown tables of the results")
    args = ap.parse_args()
    limit = args.fixed_limit
    results = results_path(limit)
    if args.report:
        with locked_results(results) as doc:
            for mode in doc["modes"]:  # summaries follow the current rules
                doc["summary"][mode] = {t: summarize(rs) for t, rs in doc["runs"][mode].items()}
        print(report(doc))
        return 0
    if args.plot_only:
        plot(json.loads(results.read_text()), limit)
        return 0
    for mode in args.modes:
        path = policy_path(mode, limit)
        training = None
        if args.reuse_policies and path.exists():
            print(f"[{mode}] reusing {path}", flush=True)
        else:
            from dunnage.autoscaling.types import roles_for

            episodes = args.episodes_per_role * len(roles_for(mode))
            print(f"[{mode}] training ({episodes} episodes)", flush=True)
            training = train_mode(mode, episodes, args.seed, limit)
        jobs = []
        for trace in args.traces:
            jobs += jobs_for(mode, trace, str(path), trace == "azure-eval", limit)
        if args.learned_only:
            saved = json.loads(results.read_text()) if results.exists() else {}
            jobs = learned_and_checks(jobs, saved.get("runs", {}).get(mode, {}))
        print(f"[{mode}] {len(jobs)} simulations", flush=True)
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            rows = list(pool.map(run_one, jobs))
        print(f"[{mode}] done in {time.perf_counter() - t0:.0f} s", flush=True)
        with locked_results(results) as doc:
            doc.update(
                {
                    "date": datetime.now(UTC).strftime("%Y-%m-%d"),
                    "machine": f"{os.cpu_count()} cores (shared), {platform.processor() or platform.machine()}, Python {platform.python_version()}",
                    "profile": PROFILE,
                    "load_scale": SCALE,
                    "command": " ".join(sys.argv),
                    "fixed_limit": limit,
                }
            )
            if training is not None:
                doc.setdefault("training", {})[mode] = training
            runs = doc.setdefault("runs", {}).setdefault(mode, {})
            if args.learned_only:
                rows = merge_learned(runs, rows)
            runs.update({t: [r for r in rows if r["trace"] == t] for t in args.traces})
            doc.setdefault("summary", {})[mode] = {t: summarize(rs) for t, rs in runs.items()}
            if mode not in doc.setdefault("modes", []):
                doc["modes"].append(mode)
        print(json.dumps(doc["summary"][mode], indent=1), flush=True)
    plot(doc, limit)
    return 0


@contextlib.contextmanager
def locked_results(results: Path) -> Iterator[dict[str, Any]]:
    """The results as saved now, to update and write back under a lock, so that runs of other
    modes in other processes (each writing when its mode is done) keep each other's rows."""
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results.with_name(f".{results.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc: dict[str, Any] = json.loads(results.read_text()) if results.exists() else {}
        yield doc
        partial = results.with_name(f".{results.name}.partial")
        partial.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(partial, results)


if __name__ == "__main__":
    sys.exit(main())
