"""`dunnage bench paper` and `dunnage bench openb`: the planner against the default scheduler.

``paper``: the "Priority Matters" scenario grid (:mod:`dunnage.solver.scenarios`). For every
scenario the reference default scheduler (with preemption) places the pods as they arrive;
scenarios where it leaves pods pending are planned in each time window and counted as improved,
certified optimal or undecided, next to the paper's figures.

``openb``: slices of the real openb GPU cluster, pods arriving in trace order, the default
scheduler with preemption as the baseline, then one plan per slice. Each slice runs in a fresh
process so its peak RSS is its own.

Every plan is verified by the independent checker (``tests/plan_checker.py``) when the source
tree has it; failures are counted and reported loudly.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dunnage.errors import InputError, require_positive
from dunnage.solver.plan import proof_note
from dunnage.solver.scenarios import (
    EXTENDED_NODES,
    PAPER_PODS_PER_NODE,
    PAPER_PRIORITIES,
    PAPER_UTILISATIONS,
    Category,
    Checker,
    DefaultOutcome,
    PlanOutcome,
    paper_grid,
)

CHECKER_PATH = Path(__file__).resolve().parents[2] / "tests" / "plan_checker.py"

# The paper's figures (4 priority levels, scenarios where the default scheduler fails), in
# percent (improved, certified optimal, undecided), keyed by (window seconds, nodes or "all").
PAPER_FIGURES: dict[tuple[float, int | str], tuple[int, int, int]] = {
    (1.0, "all"): (44, 19, 37),
    (10.0, "all"): (74, 20, 6),
    (1.0, 32): (0, 0, 100),
}
PAPER_PRIORITY_LEVELS = 4  # the paper's headline figures are for 4 priority levels


def load_checker(path: Path = CHECKER_PATH) -> Checker | None:
    """``check_plan`` from the independent checker, imported by path; None when absent."""
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("dunnage_bench_plan_checker", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    check: Checker = module.check_plan
    return check


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def _peak_rss_mb() -> float:
    import resource

    # ru_maxrss is in KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


# --- paper grid -----------------------------------------------------------------------------


def run_paper(
    *,
    time_limits: Sequence[float] = (1.0,),
    seeds: int = 10,
    nodes: Sequence[int] = EXTENDED_NODES,
    pods_per_node: Sequence[int] = PAPER_PODS_PER_NODE,
    priorities: Sequence[int] = PAPER_PRIORITIES,
    utilisations: Sequence[float] = PAPER_UTILISATIONS,
    workers: int | None = None,
    checker: Checker | None = None,
    progress: Callable[[str], None] | None = None,
    on_plan: Callable[[DefaultOutcome, PlanOutcome], None] | None = None,
    dump: Path | None = None,
    techniques: str = "all",
) -> dict[str, Any]:
    """Run the grid; returns the JSON document (config, machine, summary, scenarios).

    ``techniques`` names a planner variant (:func:`technique_variants`) for ablations.

    With ``dump``, the snapshot the default scheduler left is written there as
    ``<scenario>.json`` for every default-failed scenario (input for `dunnage plan`).
    """
    from dunnage.solver.planner import technique_variants
    from dunnage.solver.scenarios import plan_on, run_default_on

    variant = technique_variants()[techniques]

    defaults: list[DefaultOutcome] = []
    plans: list[PlanOutcome] = []
    started = time.perf_counter()
    for spec in paper_grid(
        nodes=nodes,
        pods_per_node=pods_per_node,
        priorities=priorities,
        utilisations=utilisations,
        seeds=range(seeds),
    ):
        default = run_default_on(spec)
        defaults.append(default)
        if not default.failed:
            continue
        if dump is not None:
            _dump(default, dump)
        for window in time_limits:
            outcome = plan_on(
                default, time_limit=window, workers=workers, checker=checker, techniques=variant
            )
            plans.append(outcome)
            if on_plan is not None:
                on_plan(default, outcome)
            if outcome.checker_errors and progress is not None:
                progress(
                    f"CHECKER FAILURE {spec.name} window {window:g}s: "
                    + "; ".join(outcome.checker_errors[:3])
                )
        if progress is not None and spec.seed == seeds - 1:
            cell = [d for d in defaults if d.spec.seed < seeds and _same_cell(d, spec)]
            progress(
                f"{spec.name.rsplit('_seed', 1)[0]}: {len(cell)} scenarios, "
                f"{sum(d.failed for d in cell)} default-failed "
                f"({time.perf_counter() - started:.0f}s elapsed)"
            )
    summary = summarise(defaults, plans, time_limits=time_limits, nodes=nodes)
    return {
        "benchmark": "paper",
        "machine": machine(),
        "config": {
            "time_limits": list(time_limits),
            "seeds": seeds,
            "nodes": list(nodes),
            "pods_per_node": list(pods_per_node),
            "priorities": list(priorities),
            "utilisations": list(utilisations),
            "workers": workers,
            "techniques": techniques,
            "checker": checker is not None,
        },
        "wall_seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
        "checker_failures": sum(1 for p in plans if p.checker_errors),
        "defaults": [
            {
                "scenario": d.spec.name,
                "pods": d.pods,
                "pending": d.pending,
                "preempted": d.preempted,
                "seconds": round(d.seconds, 4),
            }
            for d in defaults
        ],
        "plans": [p.to_dict() for p in plans],
    }


def _dump(default: DefaultOutcome, directory: Path) -> None:
    from dunnage.cluster.loader import snapshot_to_list

    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{default.spec.name}.json"
        path.write_text(json.dumps(snapshot_to_list(default.snapshot)) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror}", obj=str(directory)) from exc


def _same_cell(d: DefaultOutcome, spec: Any) -> bool:
    s = d.spec
    return (s.nodes, s.pods_per_node, s.priorities, s.utilisation) == (
        spec.nodes,
        spec.pods_per_node,
        spec.priorities,
        spec.utilisation,
    )


def summarise(
    defaults: Sequence[DefaultOutcome],
    plans: Sequence[PlanOutcome],
    *,
    time_limits: Sequence[float],
    nodes: Iterable[int],
) -> list[dict[str, Any]]:
    """One row per (window, priority filter, nodes) and an "all" row per window and filter."""
    rows: list[dict[str, Any]] = []
    levels = sorted({d.spec.priorities for d in defaults})
    filters: list[int | str] = ["all"]
    if PAPER_PRIORITY_LEVELS in levels and len(levels) > 1:
        filters.append(PAPER_PRIORITY_LEVELS)
    node_list: list[int | str] = [*nodes, "all"]
    for window in time_limits:
        for prio in filters:
            for n in node_list:

                def keep(spec: Any, n: int | str = n, prio: int | str = prio) -> bool:
                    return (n == "all" or spec.nodes == n) and (
                        prio == "all" or spec.priorities == prio
                    )

                ds = [d for d in defaults if keep(d.spec)]
                ps = [p for p in plans if p.time_limit == window and keep(p.spec)]
                if not ds:
                    continue
                count = _count_categories(ps)
                paper = None
                if prio == PAPER_PRIORITY_LEVELS or levels == [PAPER_PRIORITY_LEVELS]:
                    paper = PAPER_FIGURES.get((float(window), n))
                rows.append(
                    {
                        "window": window,
                        "priorities": prio,
                        "nodes": n,
                        "scenarios": len(ds),
                        "default_failed": sum(1 for d in ds if d.failed),
                        "planned": len(ps),
                        "improved_pct": _pct(count[Category.IMPROVED], len(ps)),
                        "certified_pct": _pct(count[Category.CERTIFIED], len(ps)),
                        "undecided_pct": _pct(count[Category.UNDECIDED], len(ps)),
                        "decided_pct": _pct(
                            count[Category.IMPROVED] + count[Category.CERTIFIED], len(ps)
                        ),
                        "proven_optimal_pct": _pct(sum(p.proven_optimal for p in ps), len(ps)),
                        "placements_proven_pct": _pct(
                            sum(p.placements_proven_optimal for p in ps), len(ps)
                        ),
                        "median_solve_seconds": (
                            round(statistics.median(p.solve_seconds for p in ps), 3) if ps else None
                        ),
                        "max_solve_seconds": (
                            round(max(p.solve_seconds for p in ps), 3) if ps else None
                        ),
                        "checker_failures": sum(1 for p in ps if p.checker_errors),
                        "paper": list(paper) if paper else None,
                    }
                )
    return rows


def _count_categories(plans: Iterable[PlanOutcome]) -> dict[Category, int]:
    counts = dict.fromkeys(Category, 0)
    for p in plans:
        counts[p.category] += 1
    return counts


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def format_paper_table(doc: Mapping[str, Any]) -> str:
    header = (
        f"{'WINDOW':>6} {'PRIO':>4} {'NODES':>5} {'SCEN':>5} {'DEFAULT-FAILED':>14} "
        f"{'IMPROVED%':>9} {'CERTIFIED%':>10} {'UNDECIDED%':>10} {'PROVEN-OPT%':>11} "
        f"{'PLACEMENTS-OPT%':>15} "
        f"{'MEDIAN-S':>8} {'MAX-S':>6} {'CHECK-FAIL':>10}  PAPER (impr/cert/undec %)"
    )
    lines = [header]
    previous: tuple[Any, Any] | None = None
    for row in doc["summary"]:
        group = (row["window"], row["priorities"])
        if previous is not None and group != previous:
            lines.append("")
        previous = group
        paper = "/".join(str(v) for v in row["paper"]) if row["paper"] else ""
        lines.append(
            f"{row['window']:>5g}s {row['priorities']!s:>4} {row['nodes']!s:>5} "
            f"{row['scenarios']:>5} {row['default_failed']:>14} "
            f"{_fmt(row['improved_pct']):>9} {_fmt(row['certified_pct']):>10} "
            f"{_fmt(row['undecided_pct']):>10} {_fmt(row['proven_optimal_pct']):>11} "
            f"{_fmt(row.get('placements_proven_pct')):>15} "
            f"{_fmt(row['median_solve_seconds'], '.2f'):>8} "
            f"{_fmt(row['max_solve_seconds'], '.2f'):>6} {row['checker_failures']:>10}  {paper}"
        )
    lines.append("")
    lines.append(
        "Percentages are of the scenarios where the default scheduler (with preemption) left "
        "pods pending."
    )
    lines.append(
        "Paper: 4 priority levels; 1 s: 44/19/37, 10 s: 74/20/6; 32 nodes at 1 s: 100% undecided."
    )
    lines.append(_checker_line(doc))
    lines.append(f"planner techniques: {doc['config'].get('techniques', 'all')}")
    cfg = doc["machine"]
    lines.append(f"machine: {cfg['cpus']} cpus, {cfg['platform']}; wall {doc['wall_seconds']}s")
    return "\n".join(lines) + "\n"


def _checker_line(doc: Mapping[str, Any]) -> str:
    if not doc["config"]["checker"]:
        return "checker: tests/plan_checker.py not found, plans NOT independently verified"
    failures = doc["checker_failures"]
    if failures:
        return f"checker: *** {failures} PLAN(S) FAILED INDEPENDENT VERIFICATION ***"
    return "checker: every plan passed independent verification"


# --- openb slices ---------------------------------------------------------------------------


def openb_slice(
    nodes: int | None,
    seed: int,
    time_limit: float,
    workers: int | None,
    check: bool,
    techniques: str = "all",
) -> dict[str, Any]:
    """One openb slice: default scheduler over trace arrivals, then the planner. Picklable."""
    from dunnage.solver.planner import solve, technique_variants
    from dunnage.solver.scenarios import category_of, openb_arrivals, run_default

    checker = load_checker() if check else None
    started = time.perf_counter()
    snapshot, order = openb_arrivals(nodes, seed)
    import_seconds = time.perf_counter() - started
    started = time.perf_counter()
    baseline = run_default(snapshot, order)
    default_seconds = time.perf_counter() - started
    after = baseline.snapshot
    started = time.perf_counter()
    plan = solve(
        after,
        time_limit=time_limit,
        workers=workers,
        techniques=technique_variants()[techniques],
    )
    wall = time.perf_counter() - started
    errors: list[str] = []
    if checker is not None:
        try:
            errors = [str(e) for e in checker(after, plan.to_dict())]
        except Exception as exc:
            errors = [f"checker raised {type(exc).__name__}: {exc}"]
    return {
        "nodes": len(snapshot.nodes),
        "seed": seed,
        "pods": len(snapshot.pods),
        "pods_by_priority": {str(k): v for k, v in _count_by_priority(snapshot).items()},
        "import_seconds": round(import_seconds, 3),
        "default": {
            "placed_by_priority": {str(k): v for k, v in after.placed_by_priority().items()},
            "pending": len(after.pending),
            "bound": len(baseline.bound),
            "preempted": len(baseline.preempted),
            "unschedulable": len(baseline.unschedulable),
            "seconds": round(default_seconds, 3),
        },
        "plan": {
            "time_limit": time_limit,
            "status": plan.status.value,
            "category": category_of(plan).value,
            "proven_optimal": plan.proven_optimal,
            "placements_proven_optimal": plan.placements_proven_optimal,
            "placed_before": {str(k): v for k, v in plan.placed_before.items()},
            "placed_after": {str(k): v for k, v in plan.placed_after.items()},
            "bindings": len(plan.bindings),
            "moves": len(plan.moves),
            "evictions": len(plan.evictions),
            "solve_seconds": round(plan.solve_seconds, 3),
            "wall_seconds": round(wall, 3),
        },
        "peak_rss_mb": _peak_rss_mb(),
        "checker": None if checker is None else {"errors": errors},
    }


def _count_by_priority(snapshot: Any) -> dict[int, int]:
    counts: dict[int, int] = {}
    for p in snapshot.pods:
        counts[p.priority] = counts.get(p.priority, 0) + 1
    return dict(sorted(counts.items(), reverse=True))


def run_openb(
    *,
    nodes: Sequence[int] = (100, 400, 1523),
    seed: int = 0,
    time_limit: float = 10.0,
    workers: int | None = None,
    isolate: bool = True,
    progress: Callable[[str], None] | None = None,
    techniques: str = "all",
) -> dict[str, Any]:
    check = CHECKER_PATH.is_file()
    slices: list[dict[str, Any]] = []
    started = time.perf_counter()
    for n in nodes:
        args = (n, seed, time_limit, workers, check, techniques)
        if isolate:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                result = pool.submit(openb_slice, *args).result()
        else:
            result = openb_slice(*args)
        slices.append(result)
        if progress is not None:
            progress(
                f"{result['nodes']} nodes: {result['plan']['status']} "
                f"({time.perf_counter() - started:.0f}s elapsed)"
            )
            if result["checker"] and result["checker"]["errors"]:
                progress(
                    f"CHECKER FAILURE on {n} nodes: " + "; ".join(result["checker"]["errors"][:3])
                )
    failures = sum(1 for s in slices if s["checker"] and s["checker"]["errors"])
    return {
        "benchmark": "openb",
        "machine": machine(),
        "config": {
            "nodes": list(nodes),
            "seed": seed,
            "time_limit": time_limit,
            "workers": workers,
            "isolated_processes": isolate,
            "checker": check,
            "techniques": techniques,
        },
        "wall_seconds": round(time.perf_counter() - started, 1),
        "checker_failures": failures,
        "slices": slices,
    }


def _per_priority(counts: Mapping[str, int], total: Mapping[str, int] | None = None) -> str:
    parts = []
    for prio, n in counts.items():
        parts.append(f"{prio}:{n}" + (f"/{total[prio]}" if total and prio in total else ""))
    return " ".join(parts)


def _openb_block(s: Mapping[str, Any]) -> str:
    d, p = s["default"], s["plan"]
    gained = {
        k: p["placed_after"].get(k, 0) - v for k, v in p["placed_before"].items()
    }  # per priority
    delta = " ".join(f"{k}:{v:+d}" for k, v in gained.items() if v)
    check = (
        "checker n/a"
        if s["checker"] is None
        else ("checker ok" if not s["checker"]["errors"] else "CHECKER FAILED")
    )
    return "\n".join(
        [
            f"{s['nodes']} nodes (seed {s['seed']}): {s['pods']} pods "
            f"[{_per_priority(s['pods_by_priority'])}]",
            f"  default scheduler, preemption: placed {_per_priority(d['placed_by_priority'], s['pods_by_priority'])}; "
            f"pending {d['pending']}, preemptions {d['preempted']}, {d['seconds']:.1f}s",
            f"  planner ({p['time_limit']:g}s window): {p['status']}"
            + proof_note(p["proven_optimal"], p.get("placements_proven_optimal", False))
            + f"; placed {_per_priority(p['placed_after'], s['pods_by_priority'])}"
            + (f" ({delta})" if delta else "")
            + f"; bindings {p['bindings']}, moves {p['moves']}, evictions {p['evictions']}; "
            f"solve {p['solve_seconds']:.2f}s (wall {p['wall_seconds']:.2f}s); "
            f"peak RSS {s['peak_rss_mb']:.0f} MB; {check}",
        ]
    )


def format_openb(doc: Mapping[str, Any]) -> str:
    lines = [_openb_block(s) for s in doc["slices"]]
    if doc["checker_failures"]:
        lines.append(f"*** {doc['checker_failures']} PLAN(S) FAILED INDEPENDENT VERIFICATION ***")
    elif not doc["config"]["checker"]:
        lines.append("checker: tests/plan_checker.py not found, plans NOT independently verified")
    cfg = doc["machine"]
    lines.append(f"machine: {cfg['cpus']} cpus, {cfg['platform']}; wall {doc['wall_seconds']}s")
    return "\n".join(lines) + "\n"


# --- CLI ------------------------------------------------------------------------------------


def add_bench_commands(subparsers: Any) -> None:
    from dunnage.solver.planner import technique_variants

    bench = subparsers.add_parser(
        "bench",
        help="benchmark the planner against the reference default scheduler",
        description="Benchmark the planner against the reference default scheduler.",
    )
    kinds = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)

    paper = kinds.add_parser(
        "paper",
        help='the "Priority Matters" scenario grid',
        description=(
            "Generate the paper's scenario grid, run the default scheduler (with preemption) on "
            "each, and plan the scenarios where it leaves pods pending: improved / certified "
            "optimal / undecided per cluster size and window, next to the paper's figures."
        ),
    )
    paper.add_argument("--time-limit", type=float, nargs="+", default=[1.0], metavar="SECONDS")
    paper.add_argument("--seeds", type=int, default=10, metavar="N", help="seeds per grid cell")
    paper.add_argument("--nodes", type=int, nargs="+", default=list(EXTENDED_NODES))
    paper.add_argument("--pods-per-node", type=int, nargs="+", default=list(PAPER_PODS_PER_NODE))
    paper.add_argument("--priorities", type=int, nargs="+", default=list(PAPER_PRIORITIES))
    paper.add_argument("--utilisation", type=float, nargs="+", default=list(PAPER_UTILISATIONS))
    paper.add_argument("--workers", type=int, default=None, help="CP-SAT workers (default: cores)")
    paper.add_argument("-o", "--output", choices=("table", "json"), default="table")
    paper.add_argument("--save", metavar="FILE", default=None, help="also write the JSON here")
    paper.add_argument(
        "--dump",
        metavar="DIR",
        default=None,
        help="write each default-failed scenario (after the default scheduler) as DIR/<name>.json",
    )
    paper.add_argument("--quiet", action="store_true", help="no progress on stderr")
    paper.add_argument(
        "--techniques",
        default="all",
        choices=sorted(technique_variants()),
        help="planner variant, for ablations: all (default), one technique off, or the "
        "paper's plain boolean model",
    )
    paper.set_defaults(func=run_bench_paper)

    openb = kinds.add_parser(
        "openb",
        help="slices of the real openb GPU cluster",
        description=(
            "For each slice of the openb cluster: pods arrive in trace order, the default "
            "scheduler with preemption places them, then the planner plans what is left."
        ),
    )
    openb.add_argument("--nodes", type=int, nargs="+", default=[100, 400, 1523])
    openb.add_argument("--seed", type=int, default=0)
    openb.add_argument("--time-limit", type=float, default=10.0, metavar="SECONDS")
    openb.add_argument("--workers", type=int, default=None, help="CP-SAT workers (default: cores)")
    openb.add_argument("-o", "--output", choices=("table", "json"), default="table")
    openb.add_argument("--save", metavar="FILE", default=None, help="also write the JSON here")
    openb.add_argument(
        "--no-isolate",
        action="store_true",
        help="run slices in this process (peak RSS is then cumulative)",
    )
    openb.add_argument("--quiet", action="store_true", help="no progress on stderr")
    openb.add_argument(
        "--techniques",
        default="all",
        choices=sorted(technique_variants()),
        help="planner variant, for ablations (as for paper)",
    )
    openb.set_defaults(func=run_bench_openb)


def _check_common(args: argparse.Namespace, windows: Sequence[float]) -> None:
    for window in windows:
        require_positive(window, "--time-limit")
    if args.workers is not None and args.workers < 1:
        raise InputError("must be at least 1", obj="--workers")


def _progress(args: argparse.Namespace) -> Callable[[str], None] | None:
    if args.quiet:
        return None

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    return say


def _emit(doc: Mapping[str, Any], args: argparse.Namespace, table: str) -> None:
    text = json.dumps(doc, indent=1)
    if args.save:
        try:
            Path(args.save).parent.mkdir(parents=True, exist_ok=True)
            Path(args.save).write_text(text + "\n")
        except OSError as exc:
            raise InputError(f"cannot write: {exc.strerror}", obj=args.save) from exc
    sys.stdout.write(text + "\n" if args.output == "json" else table)


def run_bench_paper(args: argparse.Namespace) -> int:
    _check_common(args, args.time_limit)
    if args.seeds < 1:
        raise InputError("must be at least 1", obj="--seeds")
    for flag, values in (
        ("--nodes", args.nodes),
        ("--pods-per-node", args.pods_per_node),
        ("--priorities", args.priorities),
    ):
        if any(v < 1 for v in values):
            raise InputError("must be at least 1", obj=flag)
    for utilisation in args.utilisation:
        require_positive(utilisation, "--utilisation")
    checker = load_checker()
    say = _progress(args)
    if checker is None and say is not None:
        say("checker: tests/plan_checker.py not found, plans will NOT be independently verified")
    doc = run_paper(
        time_limits=args.time_limit,
        seeds=args.seeds,
        nodes=args.nodes,
        pods_per_node=args.pods_per_node,
        priorities=args.priorities,
        utilisations=args.utilisation,
        workers=args.workers,
        checker=checker,
        progress=say,
        dump=Path(args.dump) if args.dump else None,
        techniques=args.techniques,
    )
    _emit(doc, args, format_paper_table(doc))
    return 1 if doc["checker_failures"] else 0


def run_bench_openb(args: argparse.Namespace) -> int:
    _check_common(args, [args.time_limit])
    if any(n < 1 or n > 1523 for n in args.nodes):
        raise InputError("must be between 1 and 1523", obj="--nodes")
    doc = run_openb(
        nodes=args.nodes,
        seed=args.seed,
        time_limit=args.time_limit,
        workers=args.workers,
        isolate=not args.no_isolate,
        progress=_progress(args),
        techniques=args.techniques,
    )
    _emit(doc, args, format_openb(doc))
    return 1 if doc["checker_failures"] else 0
