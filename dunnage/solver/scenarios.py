"""Benchmark scenarios: the "Priority Matters" paper grid, and openb arrivals.

The paper grid (Christensen, Giallorenzo, Mauro, arXiv 2511.08373) as DESIGN.md describes it:

- N identical nodes, N in {4, 8, 16, 32} (extended here to 64, 128, 256);
- N x P pods, P ("pods per node") in {4, 8};
- pods come in ReplicaSets of 1-4 replicas (uniform; the last one is cut to the pods left); all
  replicas of a set share its requests, drawn uniformly: cpu 100-1000m, memory 100-1000 MB
  (decimal megabytes, 10^6 bytes, as the paper's ``100MB`` quantities), and its priority,
  uniform in 1..k for k in {1, 2, 4} priority levels;
- node capacity per resource = max(largest pod request, ceil(sum of requests / util / N)) for
  target utilisation util in {0.90, 0.95, 1.00, 1.05}; nodes allow 110 pods.

Every scenario is a pure function of its :class:`ScenarioSpec` (the seed included), so runs
repeat exactly. The flow of one scenario: all pods arrive pending, in ReplicaSet creation order;
the reference default scheduler (with preemption) places them in that order; scenarios where it
leaves pods pending are the ones that count; the planner then solves the resulting snapshot and
the outcome is *improved*, *certified* (the default's placement proven optimal) or *undecided*.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from dunnage.cluster.model import Node, Pod, Snapshot
from dunnage.cluster.quantity import CPU, MEMORY, PODS, Resources

if TYPE_CHECKING:
    from dunnage.solver.baseline import BaselineResult
    from dunnage.solver.plan import Plan
    from dunnage.solver.planner import Techniques

PAPER_NODES = (4, 8, 16, 32)
EXTENDED_NODES = (4, 8, 16, 32, 64, 128, 256)
PAPER_PODS_PER_NODE = (4, 8)
PAPER_PRIORITIES = (1, 2, 4)
PAPER_UTILISATIONS = (0.90, 0.95, 1.00, 1.05)
CPU_MILLI_RANGE = (100, 1000)
MEMORY_MB_RANGE = (100, 1000)
REPLICAS_RANGE = (1, 4)
MB = 10**6
MAX_PODS_PER_NODE = 110
NAMESPACE = "paper"

# A checker: (snapshot, plan.to_dict()) -> list of violations (empty when the plan is valid).
Checker = Callable[[Snapshot, Mapping[str, Any]], list[str]]


@dataclass(frozen=True, slots=True, order=True)
class ScenarioSpec:
    nodes: int
    pods_per_node: int
    priorities: int
    utilisation: float
    seed: int

    @property
    def pods(self) -> int:
        return self.nodes * self.pods_per_node

    @property
    def name(self) -> str:
        """The paper's job naming, plus the seed: ``nodes4_pods16_prio4_util095_seed3``."""
        util = round(self.utilisation * 100)
        return (
            f"nodes{self.nodes}_pods{self.pods}_prio{self.priorities}_util{util:03d}"
            f"_seed{self.seed}"
        )


@dataclass(frozen=True, slots=True)
class ReplicaSetSpec:
    name: str
    replicas: int
    cpu_milli: int
    memory_mb: int
    priority: int


def paper_grid(
    *,
    nodes: Iterable[int] = PAPER_NODES,
    pods_per_node: Iterable[int] = PAPER_PODS_PER_NODE,
    priorities: Iterable[int] = PAPER_PRIORITIES,
    utilisations: Iterable[float] = PAPER_UTILISATIONS,
    seeds: Iterable[int] = range(10),
) -> Iterator[ScenarioSpec]:
    """Every combination, seeds innermost."""
    seed_list = list(seeds)
    for n in nodes:
        for ppn in pods_per_node:
            for k in priorities:
                for util in utilisations:
                    for seed in seed_list:
                        yield ScenarioSpec(n, ppn, k, util, seed)


def generate_replicasets(spec: ScenarioSpec) -> list[ReplicaSetSpec]:
    """ReplicaSets of 1-4 replicas until the scenario has exactly ``spec.pods`` pods."""
    if spec.nodes < 1 or spec.pods_per_node < 1 or spec.priorities < 1:
        raise ValueError(f"invalid scenario {spec}")
    if spec.utilisation <= 0:
        raise ValueError(f"utilisation must be positive: {spec}")
    rng = random.Random(spec.name)  # str seeds are hashed with SHA-512: stable across runs
    out: list[ReplicaSetSpec] = []
    remaining = spec.pods
    while remaining > 0:
        replicas = rng.randint(REPLICAS_RANGE[0], min(REPLICAS_RANGE[1], remaining))
        out.append(
            ReplicaSetSpec(
                name=f"rs-{len(out):04d}",
                replicas=replicas,
                cpu_milli=rng.randint(*CPU_MILLI_RANGE),
                memory_mb=rng.randint(*MEMORY_MB_RANGE),
                priority=rng.randint(1, spec.priorities),
            )
        )
        remaining -= replicas
    return out


def node_capacity(
    replicasets: Sequence[ReplicaSetSpec], nodes: int, utilisation: float
) -> tuple[int, int]:
    """(cpu millicores, memory bytes) per node: max(largest pod, ceil(sum / util / N))."""
    util = Fraction(str(utilisation))
    total_cpu = sum(rs.cpu_milli * rs.replicas for rs in replicasets)
    total_mem = sum(rs.memory_mb * MB * rs.replicas for rs in replicasets)
    cpu = max(max(rs.cpu_milli for rs in replicasets), math.ceil(total_cpu / util / nodes))
    mem = max(max(rs.memory_mb * MB for rs in replicasets), math.ceil(total_mem / util / nodes))
    return cpu, mem


def generate_scenario(spec: ScenarioSpec) -> Snapshot:
    """N identical empty nodes and every pod pending, in ReplicaSet creation order."""
    replicasets = generate_replicasets(spec)
    cpu, mem = node_capacity(replicasets, spec.nodes, spec.utilisation)
    allocatable = Resources({CPU: cpu, MEMORY: mem, PODS: MAX_PODS_PER_NODE})
    width = len(str(spec.nodes - 1))
    nodes = tuple(
        Node(
            name=f"node-{i:0{width}d}",
            allocatable=allocatable,
            labels={"kubernetes.io/hostname": f"node-{i:0{width}d}"},
        )
        for i in range(spec.nodes)
    )
    pods = tuple(
        Pod(
            namespace=NAMESPACE,
            name=f"{rs.name}-{j}",
            uid=f"{spec.name}-{rs.name}-{j}",
            requests=Resources({CPU: rs.cpu_milli, MEMORY: rs.memory_mb * MB, PODS: 1}),
            priority=rs.priority,
            labels={"app": rs.name},
            owner=f"ReplicaSet/{rs.name}",
        )
        for rs in replicasets
        for j in range(rs.replicas)
    )
    return Snapshot(nodes=nodes, pods=pods)


def arrival_order(snapshot: Snapshot) -> tuple[str, ...]:
    """Pending pods in the order they were created (the snapshot's order)."""
    return tuple(p.key for p in snapshot.pending)


def run_default(snapshot: Snapshot, order: Sequence[str] | None = None) -> BaselineResult:
    """The reference default scheduler, with preemption, over pods arriving in ``order``."""
    from dunnage.solver.baseline import default_schedule

    return default_schedule(
        snapshot, preemption=True, order=tuple(order) if order is not None else None
    )


# --- outcomes -------------------------------------------------------------------------------


class Category(StrEnum):
    IMPROVED = "improved"  # the planner places more, lexicographically by priority
    CERTIFIED = "certified"  # the default's placement is proven optimal
    UNDECIDED = "undecided"  # neither within the window


def category_of(plan: Plan) -> Category:
    from dunnage.solver.plan import PlanStatus

    if plan.status is PlanStatus.IMPROVED:
        return Category.IMPROVED
    if plan.status is PlanStatus.OPTIMAL:
        return Category.CERTIFIED
    return Category.UNDECIDED


@dataclass(frozen=True)
class DefaultOutcome:
    """What the default scheduler did with a scenario's arrivals."""

    spec: ScenarioSpec
    snapshot: Snapshot  # after the default scheduler: its placements bound, the rest pending
    pods: int
    pending: int
    preempted: int
    placed_by_priority: Mapping[int, int]
    seconds: float

    @property
    def failed(self) -> bool:
        """The default scheduler left pods pending: the scenarios the paper counts."""
        return self.pending > 0


@dataclass(frozen=True)
class PlanOutcome:
    """The planner's answer on a scenario where the default left pods pending."""

    spec: ScenarioSpec
    time_limit: float
    category: Category
    proven_optimal: bool
    placements_proven_optimal: bool
    solve_seconds: float
    placed_before: Mapping[int, int]
    placed_after: Mapping[int, int]
    moves: int
    evictions: int
    bindings: int
    checker_errors: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.spec.name,
            "nodes": self.spec.nodes,
            "pods_per_node": self.spec.pods_per_node,
            "priorities": self.spec.priorities,
            "utilisation": self.spec.utilisation,
            "seed": self.spec.seed,
            "time_limit": self.time_limit,
            "category": self.category.value,
            "proven_optimal": self.proven_optimal,
            "placements_proven_optimal": self.placements_proven_optimal,
            "solve_seconds": round(self.solve_seconds, 4),
            "placed_before": {str(k): v for k, v in self.placed_before.items()},
            "placed_after": {str(k): v for k, v in self.placed_after.items()},
            "moves": self.moves,
            "evictions": self.evictions,
            "bindings": self.bindings,
            "checker_errors": list(self.checker_errors),
        }


def run_default_on(spec: ScenarioSpec) -> DefaultOutcome:
    import time

    snapshot = generate_scenario(spec)
    started = time.perf_counter()
    result = run_default(snapshot, arrival_order(snapshot))
    seconds = time.perf_counter() - started
    after: Snapshot = result.snapshot
    return DefaultOutcome(
        spec=spec,
        snapshot=after,
        pods=len(snapshot.pods),
        pending=len(after.pending),
        preempted=len(result.preempted),
        placed_by_priority=after.placed_by_priority(),
        seconds=seconds,
    )


def plan_on(
    default: DefaultOutcome,
    *,
    time_limit: float,
    workers: int | None = None,
    checker: Checker | None = None,
    techniques: Techniques | None = None,
) -> PlanOutcome:
    """Solve the snapshot the default scheduler left, and check the plan when a checker is given."""
    from dunnage.solver.planner import Techniques, solve

    plan = solve(
        default.snapshot,
        time_limit=time_limit,
        workers=workers,
        techniques=techniques or Techniques(),
    )
    errors: tuple[str, ...] = ()
    if checker is not None:
        try:
            errors = tuple(str(e) for e in checker(default.snapshot, plan.to_dict()))
        except Exception as exc:  # a crashing checker is a failure, not a crash of the bench
            errors = (f"checker raised {type(exc).__name__}: {exc}",)
    return PlanOutcome(
        spec=default.spec,
        time_limit=time_limit,
        category=category_of(plan),
        proven_optimal=plan.proven_optimal,
        placements_proven_optimal=plan.placements_proven_optimal,
        solve_seconds=plan.solve_seconds,
        placed_before=dict(plan.placed_before),
        placed_after=dict(plan.placed_after),
        moves=len(plan.moves),
        evictions=len(plan.evictions),
        bindings=len(plan.bindings),
        checker_errors=errors,
    )


# --- openb ----------------------------------------------------------------------------------


def openb_arrivals(
    nodes: int | None, seed: int, **selection: Any
) -> tuple[Snapshot, tuple[str, ...]]:
    """An openb slice, all pods pending, and their arrival order (trace order)."""
    from dunnage.cluster.openb import import_openb

    snapshot = import_openb(nodes, seed, **selection)
    return snapshot, arrival_order(snapshot)


def openb_default(nodes: int | None, seed: int, **selection: Any) -> BaselineResult:
    """The benchmark state for an openb slice: arrivals in trace order, each scheduled by the
    reference default scheduler with preemption. ``.snapshot`` is what the planner gets."""
    snapshot, order = openb_arrivals(nodes, seed, **selection)
    return run_default(snapshot, order)
