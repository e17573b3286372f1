#!/usr/bin/env python3
"""How long the planner takes to index a snapshot (``Problem.build``), before any CP-SAT call.

    .venv/bin/python bench/bench_problem_build.py [--repeat 5]

Cases: paper-grid scenarios after the default scheduler (4 priorities, utilisation 1.0, seed 0)
and openb slices (seed 0). Prints the median build time and the number of node shapes; the
build's share of a 1 s window is time the search does not get.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dunnage.cluster.model import Snapshot
from dunnage.solver.problem import Problem
from dunnage.solver.scenarios import (
    ScenarioSpec,
    generate_scenario,
    openb_arrivals,
    run_default,
)


def median_build(snapshot: Snapshot, repeat: int) -> tuple[float, int]:
    times, shapes = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        problem = Problem.build(snapshot)
        times.append(time.perf_counter() - started)
        shapes = len(set(problem.node_shape_id))
    return statistics.median(times), shapes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    cases: list[tuple[str, Snapshot]] = []
    for nodes, per_node in ((64, 8), (256, 4), (256, 8)):
        spec = ScenarioSpec(
            nodes=nodes, pods_per_node=per_node, priorities=4, utilisation=1.0, seed=0
        )
        cases.append(
            (
                f"paper {nodes} nodes x {per_node} pods",
                run_default(generate_scenario(spec)).snapshot,
            )
        )
    for nodes in (400, 1523):
        cases.append((f"openb {nodes} nodes", openb_arrivals(nodes, 0)[0]))
    for name, snapshot in cases:
        seconds, shapes = median_build(snapshot, args.repeat)
        print(f"{name:28} build median {seconds * 1000:6.0f} ms  node shapes {shapes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
