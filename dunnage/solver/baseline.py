"""The reference default scheduler: kube-scheduler's default profile, emulated on a snapshot.

It is the baseline of every benchmark, so it follows kube-scheduler's code paths for the
predicates dunnage models (pkg/scheduler in Kubernetes v1.37):

- queue (PrioritySort): higher priority first, then earlier arrival. A pod that fits nowhere
  waits in the unschedulable set until a pod deletion (a preemption) moves it back;
- filter: NodeUnschedulable, NodeAffinity/nodeSelector, TaintToleration (static, via
  :func:`dunnage.cluster.predicates.static_reason`) and NodeResourcesFit against free capacity;
  like the real scheduler it stops after finding ``numFeasibleNodesToFind`` feasible nodes
  (adaptive percentageOfNodesToScore), starting where the previous cycle stopped;
- score: NodeResourcesFit LeastAllocated (cpu, memory; weight 1; non-zero requests 100m and
  200Mi for pods that request nothing) + NodeResourcesBalancedAllocation (weight 1) +
  TaintToleration on PreferNoSchedule taints (weight 3); ties broken at random (seeded);
- DefaultPreemption: for a pod that fits nowhere and may preempt, on nodes where only resources
  are missing, remove every lower-priority pod, reprieve victims most-important first (PDB
  violators first), and pick the node by kube-scheduler's rules (fewest PDB violations, lowest
  highest victim priority, smallest priority sum, fewest victims). Victims are deleted and, as
  ReplicaSet pods are, recreated: they re-enter the queue as new arrivals.

Rules between pods: the per-node groups the planner models (dunnage.solver.rules: pod
anti-affinity and topology spread on hostnames among a workload's own pods, host ports) hold
here too; the other rules (which the planner holds; the benchmarks' scenarios have none) are
not modelled. Nor are image locality, preferred node affinity, and of the volume filters all
but a bound volume's node affinity (a static filter). The preemptor is bound at once to its
nominated node (the real one binds it on its next cycle, with the victims gone).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dunnage.cluster.model import Snapshot, TaintEffect
from dunnage.cluster.quantity import CPU, MEMORY
from dunnage.solver.problem import Problem

MAX_NODE_SCORE = 100
# kube-scheduler's defaults (pkg/scheduler/framework/plugins/noderesources, util/non_zero.go).
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
FIT_WEIGHT, BALANCED_WEIGHT, TAINT_WEIGHT = 1, 1, 3
# percentageOfNodesToScore (adaptive) and preemption's candidate sampling.
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE = 5
MIN_CANDIDATE_NODES_PERCENTAGE = 10
MIN_CANDIDATE_NODES_ABSOLUTE = 100


@dataclass(frozen=True)
class BaselineResult:
    """What the default scheduler did: the resulting cluster and the pods it touched."""

    snapshot: Snapshot  # bound pods where the scheduler put them, the rest pending
    bound: tuple[str, ...]  # pods this run bound (pod keys, in binding order)
    preempted: tuple[str, ...]  # one entry per preemption victim (a pod may recur)
    unschedulable: tuple[str, ...]  # pods left pending, in queue order


def num_feasible_nodes_to_find(num_nodes: int) -> int:
    """kube-scheduler's adaptive percentageOfNodesToScore (schedule_one.go)."""
    if num_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_nodes
    percentage = max(MIN_FEASIBLE_NODES_PERCENTAGE, 50 - num_nodes // 125)
    return max(MIN_FEASIBLE_NODES_TO_FIND, num_nodes * percentage // 100)


def num_preemption_candidates(num_nodes: int) -> int:
    """DefaultPreemption's calculateNumCandidates."""
    n = num_nodes * MIN_CANDIDATE_NODES_PERCENTAGE // 100
    return min(num_nodes, max(n, MIN_CANDIDATE_NODES_ABSOLUTE))


class _Scheduler:
    def __init__(self, snapshot: Snapshot, *, preemption: bool, seed: int) -> None:
        self.problem = p = Problem.build(snapshot, hold=False)
        self.preemption = preemption
        self.rng = random.Random(seed)
        width = len(p.resources)
        self.capacity = np.array(p.capacity, dtype=np.int64).reshape(p.num_nodes, width)
        self.demand = np.array(p.demand, dtype=np.int64).reshape(p.num_pods, width)
        self.assignment: list[int | None] = p.initial_assignment()
        self.used = np.array(p.usage(self.assignment), dtype=np.int64).reshape(p.num_nodes, width)
        self.on_node: list[set[int]] = [set() for _ in range(p.num_nodes)]
        # Scoring resources (cpu, memory): requested as LeastAllocated counts them (non-zero
        # defaults for pods that request nothing) and as BalancedAllocation does (actual).
        cpu = p.resources.index(CPU) if CPU in p.resources else None
        memory = p.resources.index(MEMORY) if MEMORY in p.resources else None
        zeros = np.zeros(p.num_nodes, dtype=np.int64)
        self.score_capacity = np.stack(
            [self.capacity[:, i] if i is not None else zeros for i in (cpu, memory)], axis=1
        )
        self.score_columns = [i for i in (cpu, memory) if i is not None]
        pod_zeros = np.zeros(p.num_pods, dtype=np.int64)
        actual = [self.demand[:, i] if i is not None else pod_zeros for i in (cpu, memory)]
        self.non_zero = np.stack(
            [
                np.where(actual[0] > 0, actual[0], DEFAULT_MILLI_CPU_REQUEST),
                np.where(actual[1] > 0, actual[1], DEFAULT_MEMORY_REQUEST),
            ],
            axis=1,
        )
        self.non_zero_used = np.zeros((p.num_nodes, 2), dtype=np.int64)
        for pi, ni in enumerate(self.assignment):
            if ni is not None:
                self.on_node[ni].add(pi)
                self.non_zero_used[ni] += self.non_zero[pi]
        self.eligible_masks: dict[int, np.ndarray] = {}
        self.budget_left = list(p.budget_allowed)
        self.arrival = [0] * p.num_pods  # later arrivals (recreated victims) sort after
        self.next_start = 0
        self.prefer_no_schedule = [
            [t for t in n.taints if t.effect is TaintEffect.PREFER_NO_SCHEDULE]
            for n in snapshot.nodes
        ]
        self.any_prefer_no_schedule = any(self.prefer_no_schedule)

    # --- filter and score ----------------------------------------------------------------

    def _eligible_mask(self, pi: int) -> np.ndarray:
        eligible = self.problem.eligible[pi]  # shared per constraint shape, so keyed by id
        mask = self.eligible_masks.get(id(eligible))
        if mask is None:
            mask = np.zeros(self.problem.num_nodes, dtype=bool)
            mask[list(eligible)] = True
            self.eligible_masks[id(eligible)] = mask
        return mask

    def _fits(self, pi: int, ni: int) -> bool:
        return bool(np.all(self.used[ni] + self.demand[pi] <= self.capacity[ni]))

    def _feasible(self, pi: int) -> np.ndarray:
        """Feasible nodes, searched round-robin from where the last cycle stopped."""
        num = self.problem.num_nodes
        if not self.problem.eligible[pi]:
            return np.empty(0, dtype=np.int64)
        ok = self._eligible_mask(pi) & np.all(self.used + self.demand[pi] <= self.capacity, axis=1)
        order = (np.arange(num) + self.next_start) % num
        hits = np.flatnonzero(ok[order])
        wanted = num_feasible_nodes_to_find(num)
        if len(hits) >= wanted:
            hits = hits[:wanted]
            processed = int(hits[-1]) + 1
        else:
            processed = num
        self.next_start = (self.next_start + processed) % num
        return order[hits]

    def _scores(self, pi: int, nodes: np.ndarray) -> np.ndarray:
        capacity = self.score_capacity[nodes]
        # NodeResourcesFit, LeastAllocated, on non-zero requests (integer maths, as in Go).
        requested = self.non_zero_used[nodes] + self.non_zero[pi]
        room = np.where(
            (capacity > 0) & (requested <= capacity),
            (capacity - requested) * MAX_NODE_SCORE // np.maximum(capacity, 1),
            0,
        )
        fit = room.sum(axis=1) // 2
        # NodeResourcesBalancedAllocation, on actual requests.
        if len(self.score_columns) == 2:
            cols = np.array(self.score_columns)
            actual = self.used[np.ix_(nodes, cols)] + self.demand[pi, cols]
            fraction = np.minimum(1.0, actual / np.maximum(capacity, 1))
            std = np.abs(fraction[:, 0] - fraction[:, 1]) / 2
            balanced = ((1 - std) * MAX_NODE_SCORE).astype(np.int64)
        else:
            balanced = np.full(len(nodes), MAX_NODE_SCORE, dtype=np.int64)
        # TaintToleration: fewer untolerated PreferNoSchedule taints is better (normalised).
        taint = np.full(len(nodes), MAX_NODE_SCORE, dtype=np.int64)
        if self.any_prefer_no_schedule:
            intolerable = np.array([self._intolerable(pi, int(ni)) for ni in nodes])
            worst = int(intolerable.max(initial=0))
            if worst:
                taint -= intolerable * MAX_NODE_SCORE // worst
        total = FIT_WEIGHT * fit + BALANCED_WEIGHT * balanced + TAINT_WEIGHT * taint
        return np.asarray(total, dtype=np.int64)

    def _select_host(self, pi: int, feasible: np.ndarray) -> int:
        scores = self._scores(pi, feasible)
        best = np.flatnonzero(scores == scores.max())
        return int(feasible[best[self.rng.randrange(len(best))]])  # random among the best

    def _intolerable(self, pi: int, ni: int) -> int:
        taints = self.prefer_no_schedule[ni]
        if not taints:
            return 0
        tolerations = self.problem.snapshot.pods[pi].tolerations
        return sum(1 for t in taints if not any(tol.tolerates(t) for tol in tolerations))

    # --- binding and preemption ----------------------------------------------------------

    def _bind(self, pi: int, ni: int) -> None:
        self.assignment[pi] = ni
        self.on_node[ni].add(pi)
        self.non_zero_used[ni] += self.non_zero[pi]
        self.used[ni] += self.demand[pi]

    def _unbind(self, pi: int) -> None:
        ni = self.assignment[pi]
        assert ni is not None
        self.assignment[pi] = None
        self.on_node[ni].discard(pi)
        self.non_zero_used[ni] -= self.non_zero[pi]
        self.used[ni] -= self.demand[pi]

    def _violates_budget(self, pi: int) -> bool:
        return any(self.budget_left[b] <= 0 for b in self.problem.budgets_of_pod[pi])

    def _victims_on(self, pi: int, ni: int) -> tuple[list[int], int] | None:
        """selectVictimsOnNode: the fewest lower-priority pods whose removal lets ``pi`` fit."""
        p = self.problem
        lower = [pj for pj in self.on_node[ni] if p.priority[pj] < p.priority[pi]]
        if not lower:
            return None
        capacity, demand = p.capacity[ni], p.demand[pi]
        used = [int(v) for v in self.used[ni]]
        for pj in lower:
            for r, v in enumerate(p.demand[pj]):
                used[r] -= v
        if not all(u + d <= c for u, d, c in zip(used, demand, capacity, strict=True)):
            return None
        # Most important first: higher priority, then (our stand-in for start time) arrival.
        lower.sort(key=lambda pj: (-p.priority[pj], self.arrival[pj], pj))
        violating = [pj for pj in lower if self._violates_budget(pj)]
        non_violating = [pj for pj in lower if not self._violates_budget(pj)]
        victims: list[int] = []
        violations = 0
        for group, counts in ((violating, True), (non_violating, False)):
            for pj in group:
                trial = [u + v for u, v in zip(used, p.demand[pj], strict=True)]
                if all(u + d <= c for u, d, c in zip(trial, demand, capacity, strict=True)):
                    used = trial  # reprieved
                else:
                    victims.append(pj)
                    violations += counts
        return victims, violations

    def _preempt(self, pi: int) -> tuple[int, list[int]] | None:
        """DefaultPreemption: evict the chosen node's victims; (node, victims) or None."""
        p = self.problem
        potential = [ni for ni in p.eligible[pi] if not self._fits(pi, ni)]
        if not potential:
            return None
        wanted = num_preemption_candidates(p.num_nodes)
        offset = self.rng.randrange(len(potential))
        candidates: list[tuple[int, list[int], int]] = []
        for step in range(len(potential)):
            ni = potential[(offset + step) % len(potential)]
            found = self._victims_on(pi, ni)
            if found is not None:
                candidates.append((ni, *found))
                if len(candidates) >= wanted:
                    break
        if not candidates:
            return None

        def rank(candidate: tuple[int, list[int], int]) -> tuple[int, int, int, int]:
            _, victims, violations = candidate
            priorities = [p.priority[pj] for pj in victims]
            # kube-scheduler offsets each priority by MaxInt32+1 so the sum orders correctly.
            offset_sum = sum(pr + 2**31 for pr in priorities)
            return violations, max(priorities, default=-(2**31)), offset_sum, len(victims)

        ni, victims, _ = min(candidates, key=rank)
        for pj in victims:
            self._unbind(pj)
            for b in p.budgets_of_pod[pj]:
                self.budget_left[b] -= 1
        return ni, victims

    # --- the queue -----------------------------------------------------------------------

    def run(self, order: Sequence[int]) -> BaselineResult:
        p = self.problem
        clock = 0
        queue: list[tuple[int, int, int]] = []

        def push(pi: int) -> None:
            heapq.heappush(queue, (-p.priority[pi], self.arrival[pi], pi))

        for pi in order:
            self.arrival[pi] = clock = clock + 1
            push(pi)
        unschedulable: list[int] = []
        bound: list[int] = []
        preempted: list[int] = []
        while queue:
            _, _, pi = heapq.heappop(queue)
            feasible = self._feasible(pi)
            if len(feasible):
                ni = self._select_host(pi, feasible)
                self._bind(pi, ni)
                bound.append(pi)
                continue
            if self.preemption and p.may_preempt[pi]:
                preemption = self._preempt(pi)
                if preemption is not None:
                    target, victims = preemption
                    self._bind(pi, target)
                    bound.append(pi)
                    for pj in victims:  # deleted, recreated by their controller
                        preempted.append(pj)
                        self.arrival[pj] = clock = clock + 1
                        push(pj)
                    for pj in unschedulable:  # a pod deletion moves them back to the queue
                        push(pj)
                    unschedulable.clear()
                    continue
            unschedulable.append(pi)

        pods = p.snapshot.pods
        nodes = p.snapshot.nodes
        assignments = {
            pods[pi].key: (nodes[ni].name if ni is not None else None)
            for pi, ni in enumerate(self.assignment)
        }
        final_bound = [pi for pi in bound if self.assignment[pi] is not None]
        # A pod bound, preempted and bound again appears once, at its last binding.
        last: dict[int, int] = {pi: i for i, pi in enumerate(final_bound)}
        return BaselineResult(
            snapshot=p.snapshot.with_assignments(assignments),
            bound=tuple(pods[pi].key for pi, i in sorted(last.items(), key=lambda kv: kv[1])),
            preempted=tuple(pods[pi].key for pi in preempted),
            unschedulable=tuple(pods[pi].key for pi in sorted(unschedulable, key=self._queue_key)),
        )

    def _queue_key(self, pi: int) -> tuple[int, int]:
        return -self.problem.priority[pi], self.arrival[pi]


def default_schedule(
    snapshot: Snapshot,
    *,
    preemption: bool = True,
    order: Sequence[str] | None = None,
    seed: int = 0,
) -> BaselineResult:
    """Schedule ``snapshot``'s pending pods as kube-scheduler's default profile would.

    Bound pods stay where they are (and may become preemption victims). ``order`` is the
    arrival order of the pending pods (default: snapshot order); pods missing from it arrive
    after the listed ones. ``seed`` drives the random tie-breaks, as the real scheduler's are.
    """
    scheduler = _Scheduler(snapshot, preemption=preemption, seed=seed)
    index = {pod.key: pi for pi, pod in enumerate(snapshot.pods)}
    pending = [pi for pi, ni in enumerate(scheduler.assignment) if ni is None]
    listed = [index[key] for key in (order or ()) if key in index]
    listed = [pi for pi in listed if scheduler.assignment[pi] is None]
    seen = set(listed)
    arrivals = listed + [pi for pi in pending if pi not in seen]
    return scheduler.run(arrivals)
