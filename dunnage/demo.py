"""`dunnage demo`: the main job, end to end, in one command (`make demo`).

A slice of the real openb GPU cluster (Alibaba cluster-trace-gpu-v2023) arrives in trace order;
the reference default scheduler (kube-scheduler's default profile, with preemption) places what
it can; the CP-SAT planner then plans what the default left pending: placed pods per priority
before and after, and the moves and evictions that buys.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from dunnage.solver.commands import format_table


def add_commands(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="plan what the default scheduler leaves pending")
    demo.add_argument("--nodes", type=int, default=100, help="openb slice size (default 100)")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--time-limit", type=float, default=10.0, metavar="SECONDS")
    demo.add_argument("--show", type=int, default=10, help="plan lines to print per kind")
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from dunnage.solver.planner import solve
    from dunnage.solver.scenarios import openb_default

    out = sys.stdout
    out.write(f"== openb slice: {args.nodes} nodes (seed {args.seed}), pods in trace order\n")
    started = time.perf_counter()
    default = openb_default(args.nodes, args.seed)
    snapshot = default.snapshot
    out.write(
        f"   reference default scheduler: {len(default.bound)} bound, "
        f"{len(default.preempted)} preempted, {len(snapshot.pending)} left pending "
        f"({time.perf_counter() - started:.1f}s)\n"
    )
    pending_by_priority: dict[int, int] = {}
    for pod in snapshot.pending:
        pending_by_priority[pod.priority] = pending_by_priority.get(pod.priority, 0) + 1
    for prio, count in sorted(pending_by_priority.items(), reverse=True):
        out.write(f"     priority {prio:>5}: {count} pending\n")
    out.write(f"\n== planning with CP-SAT, {args.time_limit:g}s window\n")
    plan = solve(snapshot, time_limit=args.time_limit)
    out.write(format_table(plan, limit=args.show))
    return 0
