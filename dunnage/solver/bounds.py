"""Cheap upper bounds on how many pods any plan can place, per priority level.

When the snapshot already places as many pods as these bounds allow at every level, it is
certified optimal without running CP-SAT at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from dunnage.solver.problem import Problem


def cardinality_bound(demands: Sequence[tuple[int, ...]], totals: Sequence[int]) -> int:
    """Most pods that fit by volume alone: per resource, smallest requests first."""
    best = len(demands)
    for r, total in enumerate(totals):
        used = count = 0
        for d in sorted(dem[r] for dem in demands):
            if used + d > total:
                break
            used += d
            count += 1
        best = min(best, count)
    return best


def level_upper_bounds(problem: Problem) -> dict[int, int]:
    """Priority -> upper bound on pods of that priority or higher placed by any plan."""
    placeable = [
        pi
        for pi in range(problem.num_pods)
        if problem.origin[pi] is not None or problem.eligible[pi]
    ]
    levels = sorted(set(problem.priority), reverse=True)
    nres = len(problem.resources)
    bounds: dict[int, int] = {}
    for prio in levels:
        pods = [pi for pi in placeable if problem.priority[pi] >= prio]
        # Only nodes some of these pods can use contribute capacity. Pods of one shape share
        # one eligibility tuple: take each once (by identity: hashing a tuple of every node
        # costs as much as reading it), or a big cluster spends most of a 1 s window here.
        shared = {id(t): t for t in (problem.eligible[pi] for pi in pods)}
        usable = {n for nodes in shared.values() for n in nodes} | {
            problem.origin[pi] for pi in pods if problem.origin[pi] is not None
        }
        totals = [sum(problem.capacity[n][r] for n in usable if n is not None) for r in range(nres)]
        bounds[prio] = cardinality_bound([problem.demand[pi] for pi in pods], totals)
    return bounds


def cumulative(placed: dict[int, int]) -> dict[int, int]:
    """Per level, pods of that priority or higher."""
    out, total = {}, 0
    for prio in sorted(placed, reverse=True):
        total += placed[prio]
        out[prio] = total
    return out
