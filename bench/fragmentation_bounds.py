"""Two stronger upper bounds on the pods a plan can place, tried against the volume bound.

An experiment, not part of the planner: on the paper grid's 32-node single-priority scenarios
whose 10 s plans miss the volume bound (``bench/results/paper_grid.json``), it asks whether a
bound that sees how pods pack on a node would prove those plans optimal:

- **dual feasible functions** (Fekete-Schepers u^k, Martello-Toth U^eps, per resource, in the
  best convex combination found by a linear program): no plan places ``placed + 1`` pods if
  the combination's ``placed + 1`` smallest values sum to more than the node count;
- **the configuration LP** (one column per way to fill a node, by column generation, each
  column priced by CP-SAT as a two-resource knapsack): a Lagrangian bound at every round.

Prints one row per scenario: the plan's pods, the volume bound, the best dual-feasible
margin (positive would prove the plan optimal) and the configuration LP's bound.

    .venv/bin/python bench/fragmentation_bounds.py [--nodes 32] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from ortools.linear_solver import pywraplp
from ortools.sat.python import cp_model

from dunnage.solver.bounds import level_upper_bounds
from dunnage.solver.problem import Problem
from dunnage.solver.scenarios import ScenarioSpec, run_default_on

RESULTS = Path(__file__).parent / "results" / "paper_grid.json"
Size = tuple[int, ...]


def dual_feasible_functions(capacity: int) -> list[Callable[[int], float]]:
    """Maps of a request to [0, 1] under which a node's pods still sum to at most 1."""
    fns: list[Callable[[int], float]] = [lambda s: s / capacity]
    for k in range(1, 12):
        fns.append(
            lambda s, k=k: (
                s / capacity if ((k + 1) * s) % capacity == 0 else ((k + 1) * s // capacity) / k
            )
        )
    for step in range(1, 10):
        eps = step / 20
        fns.append(
            lambda s, eps=eps: (
                1.0 if s > (1 - eps) * capacity else (0.0 if s < eps * capacity else s / capacity)
            )
        )
    return fns


def dual_feasible_margin(sizes: Sequence[Size], capacity: Size, nodes: int, count: int) -> float:
    """Max over convex combinations of the functions of (sum of the ``count`` smallest
    values) - nodes: positive proves no plan places ``count`` pods."""
    columns = [
        [f(s[r]) for s in sizes] for r, c in enumerate(capacity) for f in dual_feasible_functions(c)
    ]
    lp = pywraplp.Solver.CreateSolver("GLOP")
    weight = [lp.NumVar(0, 1, "") for _ in columns]
    threshold = lp.NumVar(-lp.infinity(), lp.infinity(), "")
    excess = [lp.NumVar(0, lp.infinity(), "") for _ in sizes]
    lp.Add(sum(weight) == 1)
    for i, e in enumerate(excess):  # sum of the count smallest = max_u count*u - sum (u - v_i)+
        lp.Add(
            e
            >= threshold - sum(w * col[i] for w, col in zip(weight, columns, strict=True) if col[i])
        )
    lp.Maximize(count * threshold - sum(excess))
    lp.Solve()
    return float(lp.Objective().Value()) - nodes


def _price(kinds: Sequence[Size], counts: Sequence[int], duals: Sequence[float], capacity: Size):
    model = cp_model.CpModel()
    take = [model.NewIntVar(0, n, "") for n in counts]
    for r, c in enumerate(capacity):
        model.Add(sum(t * k[r] for t, k in zip(take, kinds, strict=True)) <= c)
    scale = 10**6
    model.Maximize(sum(round(d * scale) * t for d, t in zip(duals, take, strict=True) if d > 1e-9))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = 1.0
    solver.parameters.num_workers = 1
    solver.Solve(model)
    return [solver.Value(t) for t in take], solver.BestObjectiveBound() / scale


def configuration_bound(sizes: Sequence[Size], capacity: Size, nodes: int, seconds: float):
    """(LP value of the last round, best Lagrangian upper bound, rounds)."""
    counted = Counter(sizes)
    kinds, counts = list(counted), list(counted.values())
    columns = []
    for t, kind in enumerate(kinds):  # start: each kind alone, as many as fit
        fit = min(c // kind[r] if kind[r] else counts[t] for r, c in enumerate(capacity))
        columns.append([min(counts[t], fit) if u == t else 0 for u in range(len(kinds))])
    best, value, rounds = float("inf"), 0.0, 0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        rounds += 1
        lp = pywraplp.Solver.CreateSolver("GLOP")
        use = [lp.NumVar(0, lp.infinity(), "") for _ in columns]
        placed = [lp.NumVar(0, n, "") for n in counts]
        node_row = lp.Add(sum(use) <= nodes)
        rows = [
            lp.Add(
                placed[t] - sum(col[t] * u for col, u in zip(columns, use, strict=True) if col[t])
                <= 0
            )
            for t in range(len(kinds))
        ]
        lp.Maximize(sum(placed))
        lp.Solve()
        value = lp.Objective().Value()
        duals = [row.dual_value() for row in rows]
        column, top = _price(kinds, counts, duals, capacity)
        best = min(
            best, nodes * top + sum(n * max(0.0, 1 - d) for n, d in zip(counts, duals, strict=True))
        )
        if top <= node_row.dual_value() + 1e-6:
            break
        columns.append(column)
    return value, best, rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    plans = json.loads(RESULTS.read_text())["plans"]
    print("scenario                                   plan  volume  dff-margin  config-lp  bound")
    for p in plans:
        if (p["time_limit"], p["nodes"], p["priorities"]) != (10.0, args.nodes, 1) or p[
            "placements_proven_optimal"
        ]:
            continue
        spec = ScenarioSpec(
            nodes=p["nodes"],
            pods_per_node=p["pods_per_node"],
            priorities=1,
            utilisation=p["utilisation"],
            seed=p["seed"],
        )
        problem = Problem.build(run_default_on(spec).snapshot)
        capacity = problem.capacity[0]
        assert all(c == capacity for c in problem.capacity), "the paper grid's nodes are alike"
        placed = p["placed_after"]["1"]
        volume = level_upper_bounds(problem)[1]
        margin = dual_feasible_margin(problem.demand, capacity, problem.num_nodes, placed + 1)
        value, bound, _ = configuration_bound(
            problem.demand, capacity, problem.num_nodes, args.seconds
        )
        print(
            f"{p['scenario']:<42} {placed:>4} {volume:>7} {margin:>11.2f} "
            f"{value:>10.1f} {bound:>6.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
