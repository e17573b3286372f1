"""`dunnage plan` (and the solver's other commands)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from dunnage.cluster.loader import load_snapshot
from dunnage.errors import InputError, require_positive
from dunnage.solver.plan import Plan, proof_note
from dunnage.solver.problem import LEFT_TO_KUBE_SCHEDULER


def add_commands(subparsers: Any) -> None:
    plan = subparsers.add_parser(
        "plan",
        help="plan the best packing of a cluster snapshot",
        description=(
            "Read a snapshot (a Kubernetes List, as `kubectl get nodes,pods,pvc,pv,pdb,"
            "priorityclasses,namespaces,csinodes,volumeattachments,storageclasses,csidrivers,"
            "csistoragecapacities,deviceclasses,resourceslices,resourceclaims -A -o yaml` prints) "
            "and "
            "plan the placement that places the most pods, lexicographically by priority, with the "
            "fewest evictions and moves."
        ),
    )
    plan.add_argument("snapshot", help="snapshot file (YAML or JSON List)")
    plan.add_argument("--time-limit", type=float, default=1.0, metavar="SECONDS")
    plan.add_argument("--workers", type=int, default=None, help="CP-SAT workers (default: cores)")
    plan.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    plan.set_defaults(func=run_plan)

    from dunnage.solver.bench import add_bench_commands

    add_bench_commands(subparsers)


def run_plan(args: argparse.Namespace) -> int:
    from dunnage.solver.planner import solve

    require_positive(args.time_limit, "--time-limit")
    if args.workers is not None and args.workers < 1:
        raise InputError("must be at least 1", obj="--workers")
    snapshot = load_snapshot(args.snapshot)
    plan = solve(snapshot, time_limit=args.time_limit, workers=args.workers)
    if args.output == "json":
        json.dump(plan.to_dict(), sys.stdout)
        sys.stdout.write("\n")
    elif args.output == "yaml":
        yaml.safe_dump(plan.to_dict(), sys.stdout, sort_keys=False)
    else:
        sys.stdout.write(format_table(plan))
    return 0


def _listing(lines: list[str], limit: int | None) -> list[str]:
    if limit is None or len(lines) <= limit:
        return lines
    return [*lines[:limit], f"  ... and {len(lines) - limit} more"]


def format_table(plan: Plan, limit: int | None = None) -> str:
    """The plan for people; ``limit`` shortens each list (bindings, moves, ...)."""
    lines = [
        f"status: {plan.status.value}"
        + proof_note(plan.proven_optimal, plan.placements_proven_optimal)
        + f"   solve: {plan.solve_seconds:.2f}s",
        "",
        f"{'PRIORITY':>10}  {'PLACED BEFORE':>13}  {'PLACED AFTER':>12}",
    ]
    for prio in sorted(plan.placed_before, reverse=True):
        before, after = plan.placed_before[prio], plan.placed_after.get(prio, 0)
        mark = (
            "  +" + str(after - before)
            if after > before
            else ("  " + str(after - before) if after < before else "")
        )
        lines.append(f"{prio:>10}  {before:>13}  {after:>12}{mark}")
    lines.append("")
    lines.append(
        f"bindings: {len(plan.bindings)}   moves: {len(plan.moves)}   evictions: {len(plan.evictions)}"
    )
    lines += _listing([f"  bind   {b.pod} -> {b.node}" for b in plan.bindings], limit)
    lines += _listing([f"  move   {m.pod}: {m.source} -> {m.target}" for m in plan.moves], limit)
    lines += _listing([f"  evict  {e.pod} from {e.node}" for e in plan.evictions], limit)
    left = {
        p: why for p, why in plan.unplaced_reasons.items() if why.startswith(LEFT_TO_KUBE_SCHEDULER)
    }
    # Pods the plan leaves pending that fit some node: the room went to others.
    evicted = {e.pod for e in plan.evictions}
    waiting = (
        "no plan places more pods (placements proven optimal)"
        if plan.placements_proven_optimal
        else "not placed by this plan (that no plan could is not proven)"
    )
    still = {
        pod: waiting
        for pod, node in plan.assignments.items()
        if node is None and pod not in plan.unplaced_reasons and pod not in evicted
    }
    for title, reasons in (
        ("fit nowhere:", {p: why for p, why in plan.unplaced_reasons.items() if p not in left}),
        ("not planned:", left),
        ("still pending:", still),
    ):
        if reasons:
            lines += ["", title]
            lines += _listing([f"  {pod}: {why}" for pod, why in sorted(reasons.items())], limit)
    return "\n".join(lines) + "\n"
