"""The packing planner: snapshot in, lexicographically best plan out, within a time window.

Phases, each given what is left of the window:
1. Bounds: when nothing pending can be placed, or the snapshot already meets the per-level
   volume bounds, the snapshot is certified optimal without CP-SAT.
2. Whole-cluster model, when small enough to prove things in the window.
3. Large-neighbourhood search around the pending pods: for each pending pod (highest priority
   first) a few nodes where it could go (counting pods it may preempt) and a few nodes with the
   most free room to take pods moved out of the way; CP-SAT solves that neighbourhood exactly.
   Neighbourhoods grow when they fail. Every accepted step is improving, so any stop is safe.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dunnage.cluster.model import Snapshot
from dunnage.solver.bounds import cumulative, level_upper_bounds
from dunnage.solver.model import NeighbourhoodModel
from dunnage.solver.plan import Plan
from dunnage.solver.problem import Problem

# Pods x eligible nodes up to which the whole cluster is one model.
FULL_MODEL_LIMIT = 12_000
# Neighbourhood sizes tried in turn for a pending pod: (target nodes, receiver nodes).
NEIGHBOURHOOD_SIZES = ((1, 3), (2, 6), (4, 12), (8, 24))
EXTRA_PENDING = 12  # other pending pods offered to each neighbourhood
_SAFETY = 0.05  # seconds kept for extraction and output


@dataclass
class _Search:
    """Mutable state of the local search: one full assignment and what it implies."""

    problem: Problem
    assignment: list[int | None]
    used: list[list[int]] = field(init=False)
    on_node: list[set[int]] = field(init=False)

    def __post_init__(self) -> None:
        self.used = self.problem.usage(self.assignment)
        self.on_node = [set() for _ in range(self.problem.num_nodes)]
        for pi, ni in enumerate(self.assignment):
            if ni is not None:
                self.on_node[ni].add(pi)

    def apply(self, new: Sequence[int | None]) -> None:
        demand = self.problem.demand
        for pi, (old, now) in enumerate(zip(self.assignment, new, strict=True)):
            if old == now:
                continue
            if old is not None:
                self.on_node[old].discard(pi)
                row = self.used[old]
                for r, v in enumerate(demand[pi]):
                    row[r] -= v
            if now is not None:
                self.on_node[now].add(pi)
                row = self.used[now]
                for r, v in enumerate(demand[pi]):
                    row[r] += v
            self.assignment[pi] = now

    def budget_left(self, free: set[int]) -> list[int]:
        p = self.problem
        left = list(p.budget_allowed)
        for pi, budgets in enumerate(p.budgets_of_pod):
            disrupted = p.origin[pi] is not None and self.assignment[pi] != p.origin[pi]
            if budgets and disrupted and pi not in free:
                for b in budgets:
                    left[b] -= 1
        return [max(0, v) for v in left]

    def unplaced(self) -> list[int]:
        p = self.problem
        out = [
            pi
            for pi, ni in enumerate(self.assignment)
            if ni is None and (p.eligible[pi] or p.origin[pi] is not None)
        ]
        out.sort(key=lambda pi: (-p.priority[pi], sum(p.demand[pi])))
        return out


def solve(
    snapshot: Snapshot,
    *,
    time_limit: float = 1.0,
    workers: int | None = None,
    seed: int = 0,
    full_model_limit: int = FULL_MODEL_LIMIT,
    use_lns: bool = True,
) -> Plan:
    """Plan within ``time_limit`` seconds (wall clock, including model building)."""
    started = time.perf_counter()
    deadline = started + max(0.05, time_limit - _SAFETY)
    workers = workers or min(8, os.cpu_count() or 1)
    problem = Problem.build(snapshot)
    reasons = {snapshot.pods[pi].key: why for pi, why in problem.unplaceable.items()}
    stats: dict[str, Any] = {"pods": problem.num_pods, "nodes": problem.num_nodes}

    def finish(assignment: Sequence[int | None], proven: bool, phase: str) -> Plan:
        stats["decided_by"] = phase
        return Plan.from_assignments(
            snapshot,
            problem.to_names(assignment),
            proven_optimal=proven,
            solve_seconds=time.perf_counter() - started,
            unplaced_reasons=reasons,
            stats=stats,
        )

    current = problem.initial_assignment()
    pending = [pi for pi in range(problem.num_pods) if current[pi] is None and problem.eligible[pi]]
    if not pending:
        return finish(current, True, "nothing_placeable_pending")
    bounds = level_upper_bounds(problem)
    if cumulative(problem.placed_by_priority(current)) == bounds:
        return finish(current, True, "volume_bound")

    size = sum(len(problem.eligible[pi]) for pi in range(problem.num_pods))
    stats["model_size"] = size
    search = _Search(problem, current)
    if size <= full_model_limit or not use_lns:
        share = 1.0 if not use_lns else 0.6
        budget = (deadline - time.perf_counter()) * share
        model = NeighbourhoodModel(
            problem,
            current,
            range(problem.num_nodes),
            range(problem.num_pods),
            problem.budget_allowed,
        )
        result = model.solve(
            deadline - time.perf_counter() if share == 1.0 else budget, workers, seed
        )
        stats["full_model"] = {"status": result.status, "seconds": round(result.wall_seconds, 3)}
        if result.assignment is not None and result.status == "OPTIMAL":
            return finish(result.assignment, True, "full_model")
        if result.improves and result.assignment is not None:
            search.apply(result.assignment)
    if use_lns and time.perf_counter() < deadline:
        _large_neighbourhood_search(search, deadline, seed, stats)
    placed_after = cumulative(problem.placed_by_priority(search.assignment))
    stats["placement_proven_optimal"] = placed_after == bounds
    return finish(search.assignment, False, "neighbourhood_search")


def _choose_nodes(
    search: _Search, pod: int, targets: int, receivers: int, rng: random.Random
) -> list[int]:
    p = search.problem
    demand, prio = p.demand[pod], p.priority[pod]
    may_preempt = p.may_preempt[pod]
    scored = []
    for n in p.eligible[pod]:
        room = [c - u for c, u in zip(p.capacity[n], search.used[n], strict=True)]
        if may_preempt:
            for other in search.on_node[n]:
                if p.priority[other] < prio:
                    for r, v in enumerate(p.demand[other]):
                        room[r] += v
        shortfall = sum(max(0, d - f) / d for d, f in zip(demand, room, strict=True) if d)
        scored.append((shortfall, rng.random(), n))
    scored.sort()
    chosen = [n for _, _, n in scored[:targets]]
    taken = set(chosen)
    slack = []
    for n in range(p.num_nodes):
        if n in taken:
            continue
        cap, used = p.capacity[n], search.used[n]
        share = sum(
            min(1.0, (c - u) / c) for c, u, d in zip(cap, used, demand, strict=True) if c and d
        )
        if share > 0:
            slack.append((-share, rng.random(), n))
    slack.sort()
    chosen += [n for _, _, n in slack[:receivers]]
    return chosen


def _large_neighbourhood_search(
    search: _Search, deadline: float, seed: int, stats: dict[str, Any]
) -> None:
    p = search.problem
    rng = random.Random(seed)
    attempts: dict[int, int] = {}
    steps = solves = 0
    while time.perf_counter() < deadline:
        progressed = False
        queue = [pi for pi in search.unplaced() if attempts.get(pi, 0) < len(NEIGHBOURHOOD_SIZES)]
        if not queue:
            break
        for pod in queue:
            remaining = deadline - time.perf_counter()
            if remaining <= 0.01:
                break
            if search.assignment[pod] is not None:
                continue
            level = attempts.get(pod, 0)
            targets, receivers = NEIGHBOURHOOD_SIZES[level]
            nodes = _choose_nodes(search, pod, targets, receivers, rng)
            in_s = set(nodes)
            free = {pi for n in nodes for pi in search.on_node[n]}
            free |= {pi for pi in search.unplaced() if p.origin[pi] in in_s}
            free.add(pod)
            extra = [
                pi
                for pi in search.unplaced()
                if pi not in free and any(n in in_s for n in p.eligible[pi])
            ][:EXTRA_PENDING]
            free.update(extra)
            model = NeighbourhoodModel(
                p, search.assignment, nodes, sorted(free), search.budget_left(free)
            )
            result = model.solve(min(remaining, max(0.05, remaining / 4)), 1, seed + solves)
            solves += 1
            if result.improves and result.assignment is not None:
                search.apply(result.assignment)
                steps += 1
                progressed = True
            else:
                attempts[pod] = level + 1
        if not progressed and all(
            attempts.get(pi, 0) >= len(NEIGHBOURHOOD_SIZES) for pi in search.unplaced()
        ):
            break
    stats["lns"] = {"solves": solves, "improving_steps": steps}
