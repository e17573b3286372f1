"""CP-SAT model of one neighbourhood: build, solve, extract — kept apart as OR-Tools advises.

A neighbourhood is a set of nodes S and a set of free pods F (everything that runs on S, pods
evicted from S, and some pending pods). Pods outside F stay where they are. Identical free pods
(same demand, priority, preemption policy, origin node, allowed nodes and budgets) form one
group with an integer count per node, so a ReplicaSet of 50 replicas is one variable per node,
not 50. The whole cluster is the neighbourhood with S = all nodes, F = all pods.

Objective, one weighted sum that is lexicographic by construction: placed pods per priority
level (highest first), then fewest evictions, then fewest moves. Weights are exact integers.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ortools.sat.python import cp_model

from dunnage.solver.problem import Problem

# CP-SAT works in int64; keep the objective well inside it.
_MAX_OBJECTIVE = 2**60


@dataclass(frozen=True)
class Group:
    members: tuple[int, ...]  # pod indexes
    demand: tuple[int, ...]
    priority: int
    may_preempt: bool
    origin: int | None  # snapshot node, None for pods that were pending
    allowed: tuple[int, ...]  # nodes of S this group may use
    budgets: tuple[int, ...]
    must_stay_placed: bool  # moved in from outside S: can only move again, never be dropped


@dataclass(frozen=True)
class Limits:
    """What the free pods of a neighbourhood may still disrupt."""

    budget_left: Sequence[int]  # per PodDisruptionBudget of the snapshot
    evictions_left: int | None = None  # None: unlimited
    moves_left: int | None = None


@dataclass
class NeighbourhoodResult:
    status: str  # OPTIMAL, FEASIBLE, INFEASIBLE, UNKNOWN, MODEL_INVALID
    assignment: list[int | None] | None  # full assignment after the neighbourhood's change
    objective: int | None
    current_objective: int
    wall_seconds: float

    @property
    def improves(self) -> bool:
        """Strictly better than where the neighbourhood started."""
        return self.objective is not None and self.objective > self.current_objective


def group_pods(
    problem: Problem,
    assignment: Sequence[int | None],
    nodes: Sequence[int],
    free: Sequence[int],
    *,
    aggregate: bool = True,
) -> list[Group]:
    """Free pods in groups of interchangeable pods (one pod per group without ``aggregate``)."""
    in_s = set(nodes)
    buckets: dict[tuple[object, ...], list[int]] = {}
    for pi in free:
        origin = problem.origin[pi]
        allowed = tuple(n for n in problem.eligible[pi] if n in in_s)
        if origin is not None and origin in in_s and origin not in allowed:
            allowed = tuple(sorted((*allowed, origin)))  # may keep running where it is
        current = assignment[pi]
        must_stay = origin is not None and origin not in in_s and current is not None
        key = (
            problem.demand[pi],
            problem.priority[pi],
            problem.may_preempt[pi],
            origin,
            allowed,
            problem.budgets_of_pod[pi],
            must_stay,
            None if aggregate else pi,
        )
        buckets.setdefault(key, []).append(pi)
    return [
        Group(
            members=tuple(members),
            demand=key[0],  # type: ignore[arg-type]
            priority=key[1],  # type: ignore[arg-type]
            may_preempt=key[2],  # type: ignore[arg-type]
            origin=key[3],  # type: ignore[arg-type]
            allowed=key[4],  # type: ignore[arg-type]
            budgets=key[5],  # type: ignore[arg-type]
            must_stay_placed=key[6],  # type: ignore[arg-type]
        )
        for key, members in buckets.items()
    ]


def objective_weights(groups: Sequence[Group]) -> tuple[dict[int, int], int, int]:
    """(weight per priority level, weight of one eviction, weight of one move)."""
    running = sum(len(g.members) for g in groups if g.origin is not None)
    move_w = 1
    evict_w = running + 1
    below = evict_w * running + move_w * running  # largest disruption penalty
    per_level: dict[int, int] = {}
    for g in groups:
        per_level[g.priority] = per_level.get(g.priority, 0) + len(g.members)
    weights: dict[int, int] = {}
    for prio in sorted(per_level):  # lowest first
        weights[prio] = below + 1
        below += weights[prio] * per_level[prio]
    if below >= _MAX_OBJECTIVE:  # drop disruption terms rather than overflow
        return objective_weights_without_disruption(per_level), 0, 0
    return weights, evict_w, move_w


def objective_weights_without_disruption(per_level: dict[int, int]) -> dict[int, int]:
    weights, below = {}, 0
    for prio in sorted(per_level):
        weights[prio] = below + 1
        below += weights[prio] * per_level[prio]
    if below >= _MAX_OBJECTIVE:
        raise OverflowError("too many priority levels and pods for one weighted objective")
    return weights


def _weighted(terms: Sequence[tuple[int, cp_model.IntVar]]) -> cp_model.LinearExpr:
    return cp_model.LinearExpr.weighted_sum([v for _, v in terms], [c for c, _ in terms])


def _total(exprs: Sequence[cp_model.LinearExprT]) -> cp_model.LinearExpr:
    return cp_model.LinearExpr.sum(list(exprs))


def _solver(time_limit: float, workers: int, seed: int) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, time_limit)
    # CP-SAT's symmetry detection in presolve does not watch the wall clock: on a neighbourhood
    # of 3,700 variables its default budget (1 deterministic second) took 2 s of a 0.6 s
    # limit. A tenth of the limit (the default from a 10 s window up) keeps solves in time.
    solver.parameters.symmetry_detection_deterministic_time_limit = min(1.0, 0.1 * time_limit)
    solver.parameters.num_workers = max(1, workers)
    solver.parameters.random_seed = seed
    return solver


class NeighbourhoodModel:
    """Build the CP-SAT model of one neighbourhood."""

    def __init__(
        self,
        problem: Problem,
        assignment: Sequence[int | None],
        nodes: Sequence[int],
        free: Sequence[int],
        limits: Limits,
        *,
        symmetry_breaking: bool = True,
        aggregate: bool = True,
        level_caps: Mapping[int, int] | None = None,
    ) -> None:
        self.problem = problem
        self.assignment = assignment
        self.nodes = list(nodes)
        self.groups = group_pods(problem, assignment, nodes, free, aggregate=aggregate)
        self.model = cp_model.CpModel()
        self.count: list[dict[int, cp_model.IntVar]] = []
        # Whether each group loses pods to eviction: hinted along with the counts, because
        # CP-SAT takes a hint as a starting solution only when it covers every variable.
        self.evicts: dict[int, cp_model.IntVar] = {}
        self._found: dict[cp_model.IntVar, int] | None = None  # the last solve's values
        self.level_weight, self.evict_weight, self.move_weight = objective_weights(self.groups)
        self._build(limits, symmetry_breaking, level_caps or {})

    def _build(
        self, limits: Limits, symmetry_breaking: bool, level_caps: Mapping[int, int]
    ) -> None:
        m, problem = self.model, self.problem
        nres = len(problem.resources)
        for gi, g in enumerate(self.groups):
            size = len(g.members)
            self.count.append({n: m.new_int_var(0, size, f"y{gi}_{n}") for n in g.allowed})
            placed = _total(list(self.count[gi].values()))
            if g.must_stay_placed:
                m.add(placed == size)
            else:
                m.add(placed <= size)

        # Capacity on every node of S, per resource.
        by_node: dict[int, list[int]] = {n: [] for n in self.nodes}
        for gi, g in enumerate(self.groups):
            for n in g.allowed:
                by_node[n].append(gi)
        for n, gis in by_node.items():
            cap = problem.capacity[n]
            for r in range(nres):
                terms = [(self.groups[gi].demand[r], gi) for gi in gis if self.groups[gi].demand[r]]
                if sum(d * len(self.groups[gi].members) for d, gi in terms) > cap[r]:
                    m.add(_weighted([(d, self.count[gi][n]) for d, gi in terms]) <= cap[r])

        # A running pod loses its place only to a newly placed, strictly higher-priority pod
        # that may preempt, on the node it ran on.
        self.evicted: list[tuple[int, cp_model.LinearExprT]] = []
        for gi, g in enumerate(self.groups):
            if g.origin is None or g.must_stay_placed:
                continue
            size = len(g.members)
            evicted = size - _total(list(self.count[gi].values()))
            self.evicted.append((gi, evicted))
            if g.origin not in by_node:
                continue  # evicted earlier from a node outside S, and justified there
            justifiers = [
                self.count[qi][g.origin]
                for qi, q in enumerate(self.groups)
                if q.origin is None
                and q.may_preempt
                and q.priority > g.priority
                and g.origin in self.count[qi]
            ]
            if not justifiers:
                m.add(evicted == 0)
                continue
            some = self.evicts[gi] = m.new_bool_var(f"evicts{gi}")
            m.add(evicted <= size * some)
            m.add(_total(justifiers) >= 1).only_enforce_if(some)

        # Disruption budgets (PDBs): evictions plus moves of covered pods.
        self.moves: list[tuple[int, cp_model.LinearExprT]] = []
        disrupted_by_budget: dict[int, list[cp_model.LinearExprT]] = {}
        for gi, g in enumerate(self.groups):
            if g.origin is None:
                continue
            size = len(g.members)
            if g.must_stay_placed:
                disrupted: cp_model.LinearExprT = size  # already moved off its node
                moved: cp_model.LinearExprT = size
            else:
                stay = self.count[gi].get(g.origin, 0)
                disrupted = size - stay
                moved = _total([v for n, v in self.count[gi].items() if n != g.origin])
            self.moves.append((gi, moved))
            for b in g.budgets:
                disrupted_by_budget.setdefault(b, []).append(disrupted)
        for b, disrupted_terms in disrupted_by_budget.items():
            m.add(_total(disrupted_terms) <= limits.budget_left[b])
        if limits.evictions_left is not None:
            m.add(_total([e for _, e in self.evicted]) <= limits.evictions_left)
        if limits.moves_left is not None:
            m.add(_total([mv for _, mv in self.moves]) <= limits.moves_left)

        if symmetry_breaking:
            self._break_node_symmetry(by_node)
        if level_caps:
            self._cap_levels(level_caps)

        placed_terms = [
            self.level_weight[g.priority] * v
            for gi, g in enumerate(self.groups)
            for v in self.count[gi].values()
        ]
        penalty = [self.evict_weight * e for _, e in self.evicted] + [
            self.move_weight * mv for _, mv in self.moves
        ]
        self.objective = _total(placed_terms) - _total(penalty)
        m.maximize(self.objective)

    def _cap_levels(self, level_caps: Mapping[int, int]) -> None:
        """Valid cuts: pods of priority >= p placed never exceed the volume bound for p.

        The free pods' share of each bound is what is left after the fixed pods."""
        for prio, cap in level_caps.items():
            terms = [
                v
                for gi, g in enumerate(self.groups)
                if g.priority >= prio
                for v in self.count[gi].values()
            ]
            if terms:
                self.model.add(_total(terms) <= cap)

    def _break_node_symmetry(self, by_node: dict[int, list[int]]) -> None:
        """Empty nodes of one shape are interchangeable: order them by load. The order follows
        the current assignment's loads, so the hint (that assignment) stays a solution."""
        origins = {g.origin for g in self.groups}
        load_now: dict[int, int] = {}
        for g in self.groups:
            for p in g.members:
                n = self.assignment[p]
                if n is not None:
                    load_now[n] = load_now.get(n, 0) + g.demand[0]
        classes: dict[int, list[int]] = {}
        for n in self.nodes:
            if n not in origins:
                classes.setdefault(self.problem.node_shape_id[n], []).append(n)
        for members in classes.values():
            members.sort(key=lambda n: -load_now.get(n, 0))
            for a, b in itertools.pairwise(members):
                if by_node[a] != by_node[b]:
                    continue
                load_a = _weighted(
                    [(self.groups[gi].demand[0], self.count[gi][a]) for gi in by_node[a]]
                )
                load_b = _weighted(
                    [(self.groups[gi].demand[0], self.count[gi][b]) for gi in by_node[b]]
                )
                self.model.add(load_a >= load_b)

    def objective_of(self, assignment: Sequence[int | None]) -> int:
        """Exact objective of a full assignment (CP-SAT reports it as a float)."""
        value = 0
        for g in self.groups:
            placed = sum(1 for p in g.members if assignment[p] is not None)
            value += self.level_weight[g.priority] * placed
            if g.origin is not None:
                if g.must_stay_placed:
                    value -= self.move_weight * len(g.members)
                else:
                    evicted = sum(1 for p in g.members if assignment[p] is None)
                    moved = sum(1 for p in g.members if assignment[p] not in (None, g.origin))
                    value -= self.evict_weight * evicted + self.move_weight * moved
        return value

    def _decisions(self) -> list[cp_model.IntVar]:
        return [v for counts in self.count for v in counts.values()] + list(self.evicts.values())

    def add_hint(self) -> None:
        """Hint the current assignment, every variable of it (see ``evicts``)."""
        for gi, g in enumerate(self.groups):
            here: dict[int, int] = {}
            for p in g.members:
                n = self.assignment[p]
                if n is not None:
                    here[n] = here.get(n, 0) + 1
            for n, v in self.count[gi].items():
                self.model.add_hint(v, here.get(n, 0))
            if gi in self.evicts:
                self.model.add_hint(self.evicts[gi], int(len(g.members) > sum(here.values())))

    def require_more_at(self, priority: int | None) -> None:
        """Only plans placing more pods of ``priority`` or higher, and no fewer at any higher
        level: cardinality constraints CP-SAT propagates far better than a weighted bound.
        With ``None``, only plans placing no fewer at any level."""
        floor = min((g.priority for g in self.groups), default=0) if priority is None else priority
        for level in sorted({g.priority for g in self.groups if g.priority >= floor}):
            terms = [
                v
                for gi, g in enumerate(self.groups)
                if g.priority >= level
                for v in self.count[gi].values()
            ]
            now = sum(
                1
                for g in self.groups
                if g.priority >= level
                for p in g.members
                if self.assignment[p] is not None
            )
            self.model.add(_total(terms) >= now + (1 if level == priority else 0))

    def without_objective(self) -> None:
        """Make this a feasibility model: CP-SAT proves infeasibility far faster (often 100x
        on packing) without an objective steering its search."""
        self.model.clear_objective()  # type: ignore[no-untyped-call]

    def solve(
        self,
        time_limit: float,
        workers: int,
        seed: int = 0,
        *,
        first_improvement: bool = False,
        more_at: int | None = None,
    ) -> NeighbourhoodResult:
        """Solve for the best plan of the neighbourhood. With ``first_improvement``, only strictly
        better ones count; with ``more_at``, stop at the first plan that places more pods of
        that priority or higher (see :meth:`require_more_at`), as a feasibility question.
        INFEASIBLE then proves that the neighbourhood cannot improve that way."""
        self.add_hint()
        current = self.objective_of(self.assignment)
        solver = _solver(time_limit, workers, seed)
        if more_at is not None:
            self.require_more_at(more_at)
            self.without_objective()
        elif first_improvement:
            # Small neighbourhoods (repairs): optimise, so a step never trades one disruption
            # for a pile of arbitrary ones.
            self.model.add(self.objective >= current + 1)
        code = solver.solve(self.model)
        status = solver.status_name(code)
        if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            self._found = None
            return NeighbourhoodResult(status, None, None, current, solver.wall_time)
        self._found = {v: solver.value(v) for v in self._decisions()}
        assignment = self._extract(solver)
        return NeighbourhoodResult(
            status=status,
            assignment=assignment,
            objective=self.objective_of(assignment),
            current_objective=current,
            wall_seconds=solver.wall_time,
        )

    def polish(
        self, result: NeighbourhoodResult, time_limit: float, workers: int, seed: int = 0
    ) -> NeighbourhoodResult:
        """The same placements as ``result`` (this model's last solution), now with the fewest
        evictions and moves CP-SAT finds in ``time_limit``: a feasibility answer takes whatever
        disruption came first. The constraints of the last solve stay, so placements do too."""
        if self._found is None or result.objective is None or time_limit < 0.01:
            return result
        self.model.clear_hints()  # type: ignore[no-untyped-call]
        for var, value in self._found.items():
            self.model.add_hint(var, value)
        self.model.maximize(self.objective)
        solver = _solver(time_limit, workers, seed)
        if solver.solve(self.model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return result
        polished = self._extract(solver)
        objective = self.objective_of(polished)
        if objective <= result.objective:
            return result
        return replace(
            result,
            assignment=polished,
            objective=objective,
            wall_seconds=result.wall_seconds + solver.wall_time,
        )

    def _extract(self, solver: cp_model.CpSolver) -> list[int | None]:
        """Counts per node back to pods, keeping pods where they are whenever counts allow."""
        result = list(self.assignment)
        for gi, g in enumerate(self.groups):
            slots = {n: solver.value(v) for n, v in self.count[gi].items()}
            unassigned = []
            for p in g.members:
                n = self.assignment[p]
                if n is not None and slots.get(n, 0) > 0:
                    slots[n] -= 1
                else:
                    unassigned.append(p)
            # Prefer giving free slots to pods that ran before (a move beats an eviction).
            unassigned.sort(key=lambda p: self.assignment[p] is None)
            open_slots = [n for n, k in slots.items() for _ in range(k)]
            for p in unassigned:
                result[p] = open_slots.pop() if open_slots else None
        return result
