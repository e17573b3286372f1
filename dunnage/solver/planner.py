"""The packing planner: snapshot in, lexicographically best plan out, within a time window.

Phases, each given what is left of the window:
1. Bounds: when nothing pending can be placed, or the snapshot already meets the per-level
   volume bounds, the snapshot is certified optimal without CP-SAT.
2. Search. First ejections, without CP-SAT: each pending pod (highest priority first) goes
   where it fits, or where moving one pod to another node's free room makes it fit; on big
   clusters this places in milliseconds what a neighbourhood solve per pod places in tenths
   of a second. Then large-neighbourhood search around the pods still pending: for each
   (highest priority first) a few nodes where it could go (counting pods it may preempt) and a
   few nodes with the most free room to take pods moved out of the way; CP-SAT solves that
   neighbourhood as a feasibility question ("place one more at this level"). Neighbourhoods
   grow when they fail. Every accepted step is improving, so any stop is safe. Then disrupted
   pods whose own node still has room go back to it, and a repair step per disrupted pod asks
   for less disruption. On a small cluster this phase gets a share of the window and the rest
   goes to phases 3 and 4.
3. Placement proof (whole cluster, when small enough): level by level, highest first, a
   feasibility model asks for one more pod at that level without losing any above; a solution
   is applied and the level asked again, INFEASIBLE proves the level. All levels proven and
   nothing changed: the current placement is certified optimal.
4. Whole-cluster optimisation: placements (fixed at their optimum when phase 3 proved it), then
   fewest evictions, then fewest moves. OPTIMAL proves the plan; otherwise disrupted pods go
   back to their own nodes once more where those have room.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from dunnage.cluster.model import Snapshot
from dunnage.solver.bounds import cumulative, level_upper_bounds
from dunnage.solver.model import Limits, NeighbourhoodModel
from dunnage.solver.plan import Plan
from dunnage.solver.problem import Problem

# Pods x eligible nodes up to which the whole cluster is one model.
FULL_MODEL_LIMIT = 12_000
# Neighbourhood sizes tried in turn for a pending pod: (target nodes, receiver nodes).
# Each miss doubles the neighbourhood and its time (LNS_STEP_SECONDS at the smallest).
NEIGHBOURHOOD_SIZES = ((1, 3), (2, 6), (4, 12), (8, 24), (16, 48), (32, 96), (64, 192))
EXTRA_PENDING = 12  # other pending pods offered to each neighbourhood
LNS_STEP_SECONDS = 0.1  # per neighbourhood; a miss grows the neighbourhood
REPAIR_SHARE = 0.2  # of the search's time, kept for cutting moves and evictions
EJECTION_SHARE = 0.5  # of the placing time, at most, for ejections before the neighbourhoods
LNS_SHARE_BEFORE_FULL_MODEL = 0.3  # of the window, when the whole cluster is modelled too
_SAFETY = 0.08  # seconds kept for extraction and output
# CP-SAT workers for whole-cluster proofs, whatever the cores: its portfolio (with and without
# LP, probing, restarts) proves packing infeasibility far sooner than any two of its members.
PROOF_WORKERS = 8
MIN_SOLVE_SECONDS = 0.02  # below this, starting CP-SAT costs more than it can find
# Clearing a node for a pod (ejection): only for a pod asking for more than this share of the
# node in some resource (room for it means emptying most of the node: several moves at once,
# which one neighbourhood rarely finds; smaller pods get room from one or two moves, which the
# other ejections and the neighbourhoods find, and clearing for them only spends their time),
# with at most this many of the node's pods moved aside.
CLEARING_SHARE = 0.5
MAX_CLEARING_MOVES = 10


@dataclass(frozen=True)
class Techniques:
    """Switches for each technique, so benchmarks can measure what each one buys."""

    bounds: bool = True  # certify by volume bounds without CP-SAT
    aggregate: bool = True  # identical pods share one integer variable per node
    symmetry_breaking: bool = True  # order interchangeable empty nodes
    neighbourhoods: bool = True  # large-neighbourhood search around the pending pods
    ejection: bool = True  # before the neighbourhoods: place pods by moving one pod aside
    ejection_evicts: bool = True  # ... and by evicting lower-priority pods (with one move)
    ejection_clears: bool = True  # ... and by moving several pods aside (whole-node pods)
    make_way_home: bool = True  # repair: pods moved in make way for a disrupted pod's return
    full_model_limit: int = FULL_MODEL_LIMIT  # pods x eligible nodes for the whole-cluster model
    placement_proof: bool = True  # prove placement optimal level by level, as feasibility models


def technique_variants() -> dict[str, Techniques]:
    """Named variants for ablation benchmarks: everything, each technique off, the paper's."""
    full = Techniques()
    variants = {"all": full, "paper-model": PAPER_MODEL}
    for name in (
        "bounds",
        "aggregate",
        "symmetry_breaking",
        "neighbourhoods",
        "ejection",
        "ejection_evicts",
        "ejection_clears",
        "make_way_home",
        "placement_proof",
    ):
        variants["no-" + name.replace("_", "-")] = replace(full, **{name: False})
    return variants


PAPER_MODEL = Techniques(
    bounds=False,
    aggregate=False,
    symmetry_breaking=False,
    neighbourhoods=False,
    ejection=False,
    full_model_limit=10**12,
    placement_proof=False,
)  # one boolean per (pod, node), whole cluster, as in "Priority Matters"


class Ejected(NamedTuple):
    """What :meth:`_Search.place_by_ejection` did."""

    placed: int
    moved: int
    evicted: int


class _Receivers(NamedTuple):
    nodes: list[tuple[list[int], int]]  # (room, node), most room in the first resource first
    most: list[int]  # the most room of any of them, per resource


class _Rooms:
    """Every node's free room as arrays, for many receiver look-ups in a row (where
    :meth:`_Search._receiver_for` scans the nodes in Python); :meth:`refresh` the nodes a
    relocation touched."""

    def __init__(self, search: _Search) -> None:
        self.search = search
        self.capacity = search.capacity_array
        self.room = self.capacity - search.used_array
        self.inverse = search.inverse_capacity
        self.share = (self.room * self.inverse).sum(axis=1)  # room as a sum of capacity shares
        self.masks: dict[int, np.ndarray] = {}

    def refresh(self, *nodes: int | None) -> None:
        for n in nodes:
            if n is not None:
                self.room[n] = self.search.room(n)
                self.share[n] = float((self.room[n] * self.inverse[n]).sum())

    def receiver_for(self, pod: int, node: int) -> int | None:
        """The node ``pod`` (moved off ``node``) goes to: home if it has room, else the one
        with room it fills best (the least room left, as :meth:`_Search._slack` counts it)."""
        p = self.search.problem
        eligible = p.eligible[pod]
        mask = self.masks.get(id(eligible))
        if mask is None:
            mask = self.masks[id(eligible)] = np.zeros(len(self.capacity), dtype=bool)
            mask[list(eligible)] = True
        fits = mask & np.all(self.room >= np.array(p.demand[pod], dtype=np.int64), axis=1)
        fits[node] = False
        home = p.origin[pod]
        if home is not None and fits[home]:
            return home
        hits = np.flatnonzero(fits)
        return int(hits[np.argmin(self.share[hits])]) if hits.size else None


@dataclass
class _Search:
    """Mutable state of the local search: one full assignment and what it implies."""

    problem: Problem
    assignment: list[int | None]
    max_evictions: int | None = None
    max_moves: int | None = None
    techniques: Techniques = field(default_factory=Techniques)
    workers: int = 1
    used: list[list[int]] = field(init=False)
    on_node: list[set[int]] = field(init=False)
    # The pods that ran on each node in the snapshot (whatever the assignment says now).
    natives: list[list[int]] = field(init=False)
    # After an ejection pass: the priority of the pending pod that held back clearing a node
    # for a lower one (None: nothing held back). Once no pod that high waits, clearing may go on.
    clearing_deferred: int | None = field(init=False, default=None)
    # ``used`` as an array (kept in step by _relocate), capacities, demands and 1/capacity
    # per resource (0 for the per-node groups, as _share counts): for scans of every node.
    used_array: np.ndarray = field(init=False)
    capacity_array: np.ndarray = field(init=False)
    demand_array: np.ndarray = field(init=False)
    inverse_capacity: np.ndarray = field(init=False)
    _eligible_arrays: dict[int, np.ndarray] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.used = self.problem.usage(self.assignment)
        p, width = self.problem, len(self.problem.resources)
        self.used_array = np.array(self.used, dtype=np.int64).reshape(p.num_nodes, width)
        self.capacity_array = np.array(p.capacity, dtype=np.int64).reshape(p.num_nodes, width)
        self.demand_array = np.array(p.demand, dtype=np.int64).reshape(p.num_pods, width)
        capacity = np.maximum(self.capacity_array, 1)
        self.inverse_capacity = np.where(self.capacity_array > 0, 1.0 / capacity, 0.0)
        self.inverse_capacity[:, self.problem.real_resources :] = 0.0
        self.on_node = [set() for _ in range(self.problem.num_nodes)]
        for pi, ni in enumerate(self.assignment):
            if ni is not None:
                self.on_node[ni].add(pi)
        self.natives = [[] for _ in range(self.problem.num_nodes)]
        for pi, origin in enumerate(self.problem.origin):
            if origin is not None:
                self.natives[origin].append(pi)

    def apply(self, new: Sequence[int | None]) -> None:
        for pi, (old, now) in enumerate(zip(self.assignment, new, strict=True)):
            if old != now:
                self._relocate(pi, now)

    def _relocate(self, pi: int, now: int | None) -> None:
        demand, old = self.problem.demand[pi], self.assignment[pi]
        if old is not None:
            self.on_node[old].discard(pi)
            row = self.used[old]
            for r, v in enumerate(demand):
                row[r] -= v
            self.used_array[old] -= self.demand_array[pi]
        if now is not None:
            self.on_node[now].add(pi)
            row = self.used[now]
            for r, v in enumerate(demand):
                row[r] += v
            self.used_array[now] += self.demand_array[pi]
        self.assignment[pi] = now

    def best_fit(self, pod: int) -> int | None:
        """The node ``pod`` may use with room for it that it fills best (the least room
        left, as :meth:`_slack` counts it; the first in node order of equals), or None: one
        array scan, where a scan of every node's room in Python took milliseconds a pod on
        clusters of a thousand nodes."""
        eligible = self.problem.eligible[pod]
        if not eligible:
            return None
        nodes = self._eligible_arrays.get(id(eligible))
        if nodes is None:
            nodes = self._eligible_arrays[id(eligible)] = np.array(eligible, dtype=np.int64)
        left = self.capacity_array[nodes] - self.used_array[nodes] - self.demand_array[pod]
        fits = np.all(left >= 0, axis=1)
        if not fits.any():
            return None
        candidates = nodes[fits]
        slack = (left[fits] * self.inverse_capacity[candidates]).sum(axis=1)
        return int(candidates[np.argmin(slack)])

    def revert_disruption(self) -> int:
        """Send evicted and moved pods back to their own nodes wherever those still have room,
        until none fits: fewer evictions and moves for the same placements or more, and no
        solver call (a neighbourhood answer often moves pods it did not need to). A pod may
        always run where it runs, and budgets and limits only gain. Then each pod still
        evicted that fits on another node it may use goes there, within the move limit: a move
        keeps its place, which outranks any number of moves. Returns the pods sent back or
        placed."""
        p = self.problem
        reverted = 0
        while True:
            # Evictions first (they weigh more), higher priorities first.
            todo = sorted(
                self.disrupted(), key=lambda pi: (self.assignment[pi] is not None, -p.priority[pi])
            )
            back = next((pi for pi in todo if self.has_room(pi, p.origin[pi])), None)
            if back is None:
                break
            self._relocate(back, p.origin[back])
            reverted += 1
        moves_left = self.limits(set()).moves_left
        evicted = [pi for pi in self.disrupted() if self.assignment[pi] is None]
        receivers = self._receivers() if evicted else None
        eligible_sets: dict[int, frozenset[int]] = {}
        for pi in sorted(evicted, key=lambda pi: -p.priority[pi]):
            if moves_left is not None and moves_left <= 0:
                break
            origin = p.origin[pi]
            assert receivers is not None and origin is not None
            # Budgets need no check: a pod moved disrupts them as much as one evicted.
            target = self._receiver_for(pi, origin, receivers, eligible_sets)
            if target is not None:
                self._relocate(pi, target)
                reverted += 1
                if moves_left is not None:
                    moves_left -= 1
        return reverted

    def make_way_home(self, deadline: float) -> int:
        """Send disrupted pods home where pods moved in from elsewhere (guests) took their
        room, by moving those guests on to other nodes with room: the pod home is one move or
        eviction fewer, a guest moved on is still one move (none if it goes home too). A pod
        newly placed there stays (it may be what an eviction was for). No solver call; stops
        at ``deadline``. Returns the pods sent home."""
        p = self.problem
        rooms = _Rooms(self)
        brought = 0
        progress = True
        while progress and time.perf_counter() < deadline:
            progress = False
            # Evictions first (they weigh more), higher priorities first.
            todo = sorted(
                self.disrupted(), key=lambda pi: (self.assignment[pi] is not None, -p.priority[pi])
            )
            for pi in todo:
                if time.perf_counter() > deadline:
                    break
                home, now = p.origin[pi], self.assignment[pi]
                assert home is not None
                guests = sorted(
                    (g for g in self.on_node[home] if p.origin[g] not in (None, home)),
                    key=lambda g: self._share(home, p.demand[g]),
                    reverse=True,
                )
                made: list[tuple[int, int]] = []  # (guest, where it went)
                for guest in guests:
                    if self.has_room(pi, home):
                        break
                    target = rooms.receiver_for(guest, home)
                    if target is not None:
                        made.append((guest, target))
                        self._relocate(guest, target)
                        rooms.refresh(home, target)
                if made and self.has_room(pi, home):
                    self._relocate(pi, home)
                    rooms.refresh(home, now)
                    brought += 1
                    progress = True
                else:
                    for guest, target in made:
                        self._relocate(guest, home)
                        rooms.refresh(home, target)
        return brought

    def place_by_ejection(self, deadline: float) -> Ejected:
        """Place pending pods without a solver, highest priority first: each on the node with
        room it fills best, else on a node where moving one of its pods to another node's free
        room makes room, else (a pod that may preempt) on the node where evicting the fewest
        and lowest of its lower-priority pods, with at most one pod moved aside, makes room:
        what the model allows, a pod losing its place only to a higher-priority pod placed on
        its node. The pod moved aside is preferably one already off its own node (or new), then
        the smallest; it goes home if it can, else where it fits best. Moves and evictions
        spend the limits and budgets. A pod asking for most of a node may instead have one
        cleared (:meth:`_clearing_for`), unless a higher-priority pod this pass could not place
        still waits. Never drops a placement for a pod of equal or higher priority, so the
        assignment only improves; what this cannot place is left to the neighbourhood search."""
        p = self.problem
        placed = moved = evicted = 0
        failed: set[tuple[object, ...]] = set()  # shapes that found no place: their twins won't
        # Eligible nodes as sets, per shared eligibility tuple (by identity: hashing a tuple of
        # every node costs as much as scanning it).
        eligible_sets: dict[int, frozenset[int]] = {}
        # Only a pod above the lowest running priority can evict anything.
        lowest = min(
            (
                p.priority[pi]
                for pi, ni in enumerate(self.assignment)
                if ni is not None and ni == p.origin[pi]
            ),
            default=None,
        )
        # The highest priority of a pending pod this pass left unplaced (pods come highest
        # first, so the first such pod's): clearing a node for a lower one would spend room
        # (receivers) that pod might still get from the search.
        waiting: int | None = None
        self.clearing_deferred = None
        for pod in self.unplaced():
            if time.perf_counter() > deadline:
                break
            # Twins fail alike; for pods that may preempt, only twins of the same priority.
            shape = (p.demand[pod], p.eligible[pod], p.may_preempt[pod] and p.priority[pod])
            if p.origin[pod] is not None:
                continue  # an evicted pod placed elsewhere would be a move, not a binding
            if shape in failed:
                waiting = p.priority[pod] if waiting is None else waiting
                continue
            best = self.best_fit(pod)
            if best is not None:
                self._relocate(pod, best)
                placed += 1
                continue
            free = {n: self.room(n) for n in p.eligible[pod]}
            ejection = self._ejection_for(pod, free, eligible_sets, deadline)
            victims: tuple[int, ...] = ()
            if ejection is None:
                preemption = (
                    self._preemption_for(pod, free, eligible_sets, deadline)
                    if self.techniques.ejection_evicts
                    and lowest is not None
                    and p.priority[pod] > lowest
                    else None
                )
                if preemption is not None:
                    node, victims, aside_move = preemption
                elif (
                    self.techniques.ejection_clears
                    and (waiting is None or p.priority[pod] >= waiting)
                    and (clearing := self._clearing_for(pod, free, lowest, eligible_sets, deadline))
                ):
                    node, victims, cleared = clearing  # its pods moved aside already
                    victims, rehomed = self._rehome(victims, node, eligible_sets)
                    for victim in victims:
                        self._relocate(victim, None)
                    self._relocate(pod, node)
                    placed += 1
                    moved += cleared + rehomed
                    evicted += len(victims)
                    continue
                else:
                    if waiting is not None and p.priority[pod] < waiting and self._asks_most(pod):
                        self.clearing_deferred = waiting
                    failed.add(shape)
                    waiting = p.priority[pod] if waiting is None else waiting
                    continue
            else:
                node, aside, receiver = ejection
                aside_move = (aside, receiver)
            if aside_move is not None:  # first: its receiver was chosen before any victim moves
                self._relocate(*aside_move)
                moved += 1
            victims, rehomed = self._rehome(victims, node, eligible_sets)
            for victim in victims:
                self._relocate(victim, None)
            self._relocate(pod, node)
            placed += 1
            moved += rehomed
            evicted += len(victims)
        return Ejected(placed, moved, evicted)

    def _rehome(
        self, victims: tuple[int, ...], node: int, eligible_sets: dict[int, frozenset[int]]
    ) -> tuple[tuple[int, ...], int]:
        """Of ``victims`` (pods to evict from ``node`` for a pending pod), move each that fits
        on another node now there instead, within the move limit and budgets: it keeps its
        place, which the objective ranks above any number of moves. Returns the pods still to
        evict and how many moved."""
        if not victims:
            return victims, 0
        p = self.problem
        limits = self.limits(set())
        moves_left, budget_left = limits.moves_left, list(limits.budget_left)
        receivers = self._receivers()
        evict: list[int] = []
        for victim in victims:
            target = (
                self._receiver_for(victim, node, receivers, eligible_sets)
                if self._may_move(victim, node, Limits(budget_left, None, moves_left))
                else None
            )
            if target is None:
                evict.append(victim)
                continue
            if moves_left is not None:  # a victim runs on its own node: moving it is a move
                moves_left -= 1
            for b in p.budgets_of_pod[victim]:
                budget_left[b] -= 1
            self._relocate(victim, target)
        return tuple(evict), len(victims) - len(evict)

    def _receivers(self) -> _Receivers:
        """Nodes that could take some pod, most room in the first resource first (a pod moved
        aside needs at least its request there: scans stop early), and the most room of any
        of them per resource (a pod needing more goes nowhere: no scan)."""
        rooms = ((self.room(n), n) for n in range(self.problem.num_nodes))
        nodes = sorted(
            ((room, n) for room, n in rooms if all(r >= 0 for r in room) and any(room)),
            key=lambda x: -x[0][0],
        )
        most = [max(col) for col in zip(*(room for room, _ in nodes), strict=True)]
        return _Receivers(nodes, most or [0] * len(self.problem.resources))

    def _receiver_for(
        self,
        other: int,
        node: int,
        receivers: _Receivers,
        eligible_sets: dict[int, frozenset[int]],
    ) -> int | None:
        """The node ``other`` (moved off ``node``) goes to: home if it can, else the one it
        fits best; None if none has room."""
        p = self.problem
        wanted = p.demand[other]
        if not _covers(receivers.most, wanted):
            return None
        allowed = eligible_sets.get(id(p.eligible[other]))
        if allowed is None:
            allowed = eligible_sets[id(p.eligible[other])] = frozenset(p.eligible[other])
        home = p.origin[other]
        best: tuple[float, int] | None = None
        # A pod allowed on few nodes (a bare pod pinned to its own) looks only at those.
        few = len(allowed) * 4 < len(receivers.nodes)
        # ``receivers`` gives the order (rooms as they were: pods moved aside since only shrank
        # them, so the early stop holds); whether a pod fits is checked on the room now.
        for room, n in ((self.room(n), n) for n in allowed) if few else receivers.nodes:
            if room[0] < wanted[0] and not few:
                break
            if n == node or n not in allowed or not _covers(self.room(n), wanted):
                continue
            score = -1.0 if n == home else self._slack(n, wanted)
            if best is None or score < best[0]:
                best = (score, n)
        return None if best is None else best[1]

    def _may_move(self, other: int, node: int, limits: Limits) -> bool:
        """Whether moving ``other`` off ``node`` stays within the move limit and its budgets
        (a pod already off its own node moves for free), and leaves every pod evicted from
        ``node`` the higher-priority newcomer there that it lost its place to."""
        if self._sole_justifier(other, node):
            return False
        if self.problem.origin[other] != node:
            return True
        if limits.moves_left is not None and limits.moves_left <= 0:
            return False
        return all(limits.budget_left[b] > 0 for b in self.problem.budgets_of_pod[other])

    def _sole_justifier(self, pod: int, node: int) -> bool:
        """Whether ``pod``, placed on ``node``, is the only newly placed pod there of higher
        priority (that may preempt) than some pod evicted from ``node``: the model lets a
        running pod lose its place only to such a pod on its node, so ``pod`` must stay."""
        p = self.problem
        if p.origin[pod] is not None or not p.may_preempt[pod]:
            return False
        highest_evicted = max(
            (
                p.priority[v]
                for v in self.natives[node]
                if self.assignment[v] is None and p.priority[v] < p.priority[pod]
            ),
            default=None,
        )
        if highest_evicted is None:
            return False
        # Another newcomer there justifies every eviction below its own priority.
        strongest_other = max(
            (
                p.priority[q]
                for q in self.on_node[node]
                if q != pod and p.origin[q] is None and p.may_preempt[q]
            ),
            default=None,
        )
        return strongest_other is None or strongest_other <= highest_evicted

    def _ejection_for(
        self,
        pod: int,
        free: dict[int, list[int]],
        eligible_sets: dict[int, frozenset[int]],
        deadline: float,
    ) -> tuple[int, int, int] | None:
        """(node for ``pod``, a pod there to move aside, the node it goes to), or None."""
        p = self.problem
        demand = p.demand[pod]
        limits = self.limits(set())
        receivers = self._receivers()
        # Nodes for the pod, by how much of its request they lack (relative), least first.
        lacking = {
            n: [max(0, d - f) for d, f in zip(demand, room, strict=True)]
            for n, room in free.items()
        }
        order = sorted(
            lacking, key=lambda n: sum(m / d for m, d in zip(lacking[n], demand, strict=True) if d)
        )
        for node in order:
            if time.perf_counter() > deadline:
                return None
            need = lacking[node]
            candidates = sorted(
                (p.origin[other] == node, self._share(node, p.demand[other]), other)
                for other in self.on_node[node]
                if _covers(p.demand[other], need) and self._may_move(other, node, limits)
            )
            for _, _, other in candidates:
                receiver = self._receiver_for(other, node, receivers, eligible_sets)
                if receiver is not None:
                    return node, other, receiver
        return None

    def _preemption_for(
        self,
        pod: int,
        free: dict[int, list[int]],
        eligible_sets: dict[int, frozenset[int]],
        deadline: float,
    ) -> tuple[int, tuple[int, ...], tuple[int, int] | None] | None:
        """(node for ``pod``, its pods to evict, (a pod to move aside, where) or None): over
        the nodes where evicting pods ``pod`` may preempt, with at most one pod moved aside,
        makes room, the one losing the least (the highest priority evicted, then how many, then
        whether a pod moves); None when there is none."""
        p = self.problem
        if not p.may_preempt[pod]:
            return None
        demand, priority = p.demand[pod], p.priority[pod]
        limits = self.limits(set())
        if limits.evictions_left is not None and limits.evictions_left <= 0:
            return None
        receivers: _Receivers | None = None

        def cost(victims: tuple[int, ...], moves: bool) -> tuple[int, int, bool]:
            return max(p.priority[v] for v in victims), len(victims), moves

        best: tuple[tuple[int, int, bool], int, tuple[int, ...], tuple[int, int] | None] | None = (
            None
        )
        for node, room in free.items():
            if time.perf_counter() > deadline:
                break
            lower = [
                v for v in self.on_node[node] if p.origin[v] == node and p.priority[v] < priority
            ]
            if not lower:
                continue
            # Room with every victim gone and the biggest other pod (per resource) moved aside:
            # short of the request, this node cannot do (the common case: skip it cheaply).
            most = list(room)
            for v in lower:
                most = [m + d for m, d in zip(most, p.demand[v], strict=True)]
            others = [p.demand[o] for o in self.on_node[node] if o not in lower]
            if others:
                most = [
                    m + max(col) for m, col in zip(most, zip(*others, strict=True), strict=True)
                ]
            if not _covers(most, demand):
                continue
            # Lowest priority first, then the biggest.
            victims = sorted(lower, key=lambda v: (p.priority[v], -self._share(node, p.demand[v])))
            chosen = self._evictions_making_room(room, demand, victims, limits)
            aside_move: tuple[int, int] | None = None
            if chosen is None:
                if receivers is None:
                    receivers = self._receivers()
                for other in sorted(
                    self.on_node[node], key=lambda o: self._share(node, p.demand[o])
                ):
                    if not self._may_move(other, node, limits):
                        continue
                    with_aside = [r + d for r, d in zip(room, p.demand[other], strict=True)]
                    rest = [v for v in victims if v != other]
                    chosen = self._evictions_making_room(with_aside, demand, rest, limits, other)
                    if chosen is None or (best is not None and best[0] <= cost(chosen, True)):
                        chosen = None
                        continue  # no room, or no better than the best node so far
                    receiver = self._receiver_for(other, node, receivers, eligible_sets)
                    if receiver is not None:
                        aside_move = (other, receiver)
                        break
                    chosen = None
            if chosen is None:
                continue
            key = cost(chosen, aside_move is not None)
            if best is None or key < best[0]:
                best = (key, node, chosen, aside_move)
        return None if best is None else (best[1], best[2], best[3])

    def _asks_most(self, pod: int, node: int | None = None) -> bool:
        """Whether ``pod`` asks for more than :data:`CLEARING_SHARE` of ``node`` (by default:
        of some node it may use) in some resource: the pods :meth:`_clearing_for` is for."""
        p = self.problem
        real = p.real_resources  # a per-node group is no size
        demand = p.demand[pod][:real]
        return any(
            any(d > CLEARING_SHARE * c for d, c in zip(demand, p.capacity[n][:real], strict=True))
            for n in (p.eligible[pod] if node is None else (node,))
        )

    def _clearing_for(
        self,
        pod: int,
        free: dict[int, list[int]],
        lowest: int | None,
        eligible_sets: dict[int, frozenset[int]],
        deadline: float,
    ) -> tuple[int, tuple[int, ...], int] | None:
        """Make room for ``pod`` (asking for more than :data:`CLEARING_SHARE` of a node) on one
        node by moving up to :data:`MAX_CLEARING_MOVES` of its pods aside (biggest first, each
        where :meth:`_receiver_for` sends it) and, if ``pod`` may preempt, evicting the fewest
        and lowest of its lower-priority pods: what a pod asking for a whole node needs when no
        single move makes room. Nodes needing the fewest moves are tried first, until one can
        be cleared or the deadline. Returns (node, pods to evict, pods moved aside) with the
        moves made, or None with nothing changed."""
        p = self.problem
        demand, priority = p.demand[pod], p.priority[pod]
        preempts = (
            self.techniques.ejection_evicts
            and p.may_preempt[pod]
            and lowest is not None
            and priority > lowest
        )
        plans: list[tuple[int, float, int, list[int], list[int]]] = []
        for node, room in free.items():
            if not self._asks_most(pod, node):
                continue
            lower = (
                [v for v in self.on_node[node] if p.origin[v] == node and p.priority[v] < priority]
                if preempts
                else []
            )
            have = list(room)
            for v in lower:
                have = [h + d for h, d in zip(have, p.demand[v], strict=True)]
            # Biggest first: the fewest moves that, with every lower pod gone, make room.
            movable = sorted(
                (o for o in self.on_node[node] if o not in lower),
                key=lambda o: -self._share(node, p.demand[o]),
            )
            aside: list[int] = []
            for other in movable:
                if _covers(have, demand) or len(aside) >= MAX_CLEARING_MOVES:
                    break
                aside.append(other)
                have = [h + d for h, d in zip(have, p.demand[other], strict=True)]
            if aside and _covers(have, demand):
                size = sum(self._share(node, p.demand[o]) for o in aside)
                plans.append((len(aside), size, node, aside, lower))
        # The fewest moves, then the smallest pods to move: they find a receiver most easily.
        plans.sort(key=lambda plan: plan[:3])
        receivers: _Receivers | None = None
        # Pods (by shape) that found no receiver as the first of their try: every try starts
        # from the same rooms (a failed one is undone), so on no other node will they.
        stuck: set[tuple[tuple[int, ...], int]] = set()
        for _, _, node, aside, lower in plans:
            if time.perf_counter() > deadline:
                return None
            if any((p.demand[o], id(p.eligible[o])) in stuck for o in aside):
                continue
            if receivers is None:
                receivers = self._receivers()
            limits = self.limits(set())
            moves_left, budget_left = limits.moves_left, list(limits.budget_left)
            made: list[int] = []
            for other in aside:
                if not self._may_move(other, node, Limits(budget_left, None, moves_left)):
                    break
                if p.origin[other] == node:  # it spends a move and its budgets
                    if moves_left is not None:
                        moves_left -= 1
                    for b in p.budgets_of_pod[other]:
                        budget_left[b] -= 1
                target = self._receiver_for(other, node, receivers, eligible_sets)
                if target is None:
                    if not made:
                        stuck.add((p.demand[other], id(p.eligible[other])))
                    break
                made.append(other)
                self._relocate(other, target)
            else:
                room = self.room(node)
                if _covers(room, demand):
                    return node, (), len(made)
                victims = sorted(
                    lower, key=lambda v: (p.priority[v], -self._share(node, p.demand[v]))
                )
                left = Limits(budget_left, limits.evictions_left, moves_left)
                chosen = self._evictions_making_room(room, demand, victims, left)
                if chosen is not None:
                    return node, chosen, len(made)
            for other in made:  # this node cannot be cleared: put its pods back
                self._relocate(other, node)
        return None

    def _evictions_making_room(
        self,
        room: Sequence[int],
        demand: Sequence[int],
        victims: Sequence[int],
        limits: Limits,
        moving: int | None = None,
    ) -> tuple[int, ...] | None:
        """The fewest of ``victims`` (taken in order, then the needless ones dropped, highest
        priority first) whose eviction gives ``room`` for ``demand`` within the eviction limit
        and the budgets (``moving``, moved aside, spends its budgets too); None if they cannot,
        or if no eviction is needed."""
        p = self.problem
        budgets = list(limits.budget_left)
        if moving is not None and p.origin[moving] is not None:
            for b in p.budgets_of_pod[moving]:
                budgets[b] -= 1
        have = list(room)
        chosen: list[int] = []
        for v in victims:
            if _covers(have, demand):
                break
            if limits.evictions_left is not None and len(chosen) >= limits.evictions_left:
                return None
            if any(budgets[b] <= 0 for b in p.budgets_of_pod[v]):
                continue
            for b in p.budgets_of_pod[v]:
                budgets[b] -= 1
            chosen.append(v)
            have = [h + d for h, d in zip(have, p.demand[v], strict=True)]
        if not _covers(have, demand):
            return None
        for v in sorted(chosen, key=lambda v: -p.priority[v]):
            without = [h - d for h, d in zip(have, p.demand[v], strict=True)]
            if _covers(without, demand):
                chosen.remove(v)
                have = without
        return tuple(chosen) if chosen else None

    def room(self, node: int) -> list[int]:
        return [c - u for c, u in zip(self.problem.capacity[node], self.used[node], strict=True)]

    def _share(self, node: int, demand: Sequence[int]) -> float:
        """``demand`` as a sum of shares of ``node``'s capacity (resources in one unit; the
        per-node groups are no size)."""
        real = self.problem.real_resources
        capacity = self.problem.capacity[node][:real]
        return sum(d / c for d, c in zip(demand[:real], capacity, strict=True) if c)

    def _slack(self, node: int, demand: Sequence[int]) -> float:
        """What ``node`` would have left after ``demand``, as a sum of capacity shares."""
        return self._share(node, self.room(node)) - self._share(node, demand)

    def has_room(self, pi: int, node: int | None) -> bool:
        return node is not None and _covers(self.room(node), self.problem.demand[pi])

    def limits(self, free: set[int]) -> Limits:
        """Disruption still allowed to the free pods, given what the others already use."""
        p = self.problem
        budget_left = list(p.budget_allowed)
        evictions = moves = 0
        for pi, origin in enumerate(p.origin):
            if origin is None or pi in free or self.assignment[pi] == origin:
                continue
            if self.assignment[pi] is None:
                evictions += 1
            else:
                moves += 1
            for b in p.budgets_of_pod[pi]:
                budget_left[b] -= 1
        return Limits(
            budget_left=[max(0, v) for v in budget_left],
            evictions_left=None if self.max_evictions is None else self.max_evictions - evictions,
            moves_left=None if self.max_moves is None else self.max_moves - moves,
        )

    def disrupted(self) -> list[int]:
        p = self.problem
        return [
            pi
            for pi, origin in enumerate(p.origin)
            if origin is not None and self.assignment[pi] != origin
        ]

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
    max_evictions: int | None = None,
    max_moves: int | None = None,
    pin_bare_pods: bool = False,
    techniques: Techniques = Techniques(),
) -> Plan:
    """Plan within ``time_limit`` seconds (wall clock, including model building).

    ``max_evictions`` / ``max_moves`` cap the plan's disruption (a PackingPolicy's limits).
    ``pin_bare_pods`` keeps running pods that no controller would recreate off the move list.
    """
    started = time.perf_counter()
    workers = workers or min(8, os.cpu_count() or 1)
    problem = Problem.build(snapshot, pin_bare_pods=pin_bare_pods)
    # Keep time for the last model's clean-up and for writing the plan: more on big clusters
    # (0.01 ms a pod: on the whole openb cluster, 8,152 pods, the plan came 0.02-0.03 s after
    # the deadline).
    safety = _SAFETY + problem.num_pods / 100_000
    deadline = started + max(0.05, time_limit - safety)
    reasons = {snapshot.pods[pi].key: why for pi, why in problem.unplaceable.items()}
    stats: dict[str, Any] = {"pods": problem.num_pods, "nodes": problem.num_nodes}

    if problem.held:
        stats["held_pods"] = len(problem.held)

    def finish(
        assignment: Sequence[int | None], proven: bool, phase: str, placements_proven: bool = False
    ) -> Plan:
        stats["decided_by"] = phase
        # A proof covers the plans that leave the held pods as they are, not every plan.
        return Plan.from_assignments(
            snapshot,
            problem.to_names(assignment),
            proven_optimal=proven and not problem.held,
            placements_proven_optimal=placements_proven and not problem.held,
            solve_seconds=time.perf_counter() - started,
            unplaced_reasons=reasons,
            stats=stats,
        )

    current = problem.initial_assignment()
    pending = [pi for pi in range(problem.num_pods) if current[pi] is None and problem.eligible[pi]]
    if not pending:
        return finish(current, True, "nothing_placeable_pending")
    bounds = level_upper_bounds(problem)
    if techniques.bounds and cumulative(problem.placed_by_priority(current)) == bounds:
        return finish(current, True, "volume_bound")

    size = sum(len(problem.eligible[pi]) for pi in range(problem.num_pods))
    stats["model_size"] = size
    search = _Search(problem, list(current), max_evictions, max_moves, techniques, workers)
    use_lns = techniques.neighbourhoods
    whole_cluster = size <= techniques.full_model_limit or not use_lns
    if use_lns:
        # Quick improvements first; on a small cluster leave most of the window for the proof.
        share = LNS_SHARE_BEFORE_FULL_MODEL if whole_cluster else 1.0
        lns_deadline = time.perf_counter() + (deadline - time.perf_counter()) * share
        _large_neighbourhood_search(search, lns_deadline, seed, stats)
    placement_proven = False
    if whole_cluster and techniques.placement_proof:
        placement_proven = _prove_placement(search, deadline, seed, stats, bounds)
        if placement_proven and search.assignment == current:
            return finish(current, True, "placement_proof")  # nothing better, nothing to undo
    if whole_cluster and time.perf_counter() < deadline:
        model = NeighbourhoodModel(
            problem,
            search.assignment,
            range(problem.num_nodes),
            range(problem.num_pods),
            search.limits(set(range(problem.num_pods))),
            symmetry_breaking=techniques.symmetry_breaking,
            aggregate=techniques.aggregate,
            level_caps=bounds if techniques.bounds else None,
        )
        if placement_proven:
            model.require_more_at(None)  # placements are optimal: only disruption is left
        whole_workers = max(workers, PROOF_WORKERS) if techniques.placement_proof else workers
        left = deadline - time.perf_counter()  # building a big model takes time too
        if left >= MIN_SOLVE_SECONDS:
            result = model.solve(left, whole_workers, seed)
            stats["full_model"] = {
                "status": result.status,
                "seconds": round(result.wall_seconds, 3),
            }
            if result.assignment is not None and result.status == "OPTIMAL":
                return finish(result.assignment, True, "full_model")
            if result.improves and result.assignment is not None:
                search.apply(result.assignment)
    stats["reverted_at_end"] = search.revert_disruption()
    # The volume bounds prove the placements of a plan that meets them, at any size.
    placed_after = cumulative(problem.placed_by_priority(search.assignment))
    placements_proven = placement_proven or placed_after == bounds
    return finish(search.assignment, False, "neighbourhood_search", placements_proven)


def _prove_placement(
    search: _Search, deadline: float, seed: int, stats: dict[str, Any], bounds: dict[int, int]
) -> bool:
    """Level by level, highest priority first, ask the whole cluster for a plan that places
    more pods at that level without losing any above it: apply it and ask again, or prove
    there is none. True when every level is proven, i.e. the placements are optimal."""
    p = search.problem
    everyone = set(range(p.num_pods))
    levels = sorted(set(p.priority), reverse=True)
    found = 0
    started = time.perf_counter()
    try:
        index = 0
        while index < len(levels):
            level = levels[index]
            if not any(p.priority[pi] == level for pi in search.unplaced()):
                index += 1  # every pod of this level is placed: nothing to prove
                continue
            if deadline - time.perf_counter() < MIN_SOLVE_SECONDS:
                return False
            model = NeighbourhoodModel(
                p,
                search.assignment,
                range(p.num_nodes),
                range(p.num_pods),
                search.limits(everyone),
                symmetry_breaking=search.techniques.symmetry_breaking,
                aggregate=search.techniques.aggregate,
                level_caps=bounds if search.techniques.bounds else None,
            )
            workers = max(search.workers, PROOF_WORKERS)
            left = deadline - time.perf_counter()  # after building: that takes time too
            if left < MIN_SOLVE_SECONDS:
                return False
            result = model.solve(left, workers, seed + found, more_at=level)
            if result.improves:
                # Polished (fewest evictions and moves) for up to half of what is left: a
                # feasibility answer alone may reshuffle the whole cluster.
                half = (deadline - time.perf_counter()) / 2
                result = model.polish(result, half, workers, seed + found)
            if result.status == "INFEASIBLE":
                index += 1
            elif result.improves and result.assignment is not None:
                search.apply(result.assignment)
                found += 1
            else:
                return False  # out of time
        return True
    finally:
        stats["placement_proof"] = {
            "improving_steps": found,
            "seconds": round(time.perf_counter() - started, 3),
        }


def _covers(room: Sequence[int], demand: Sequence[int]) -> bool:
    return all(r >= d for r, d in zip(room, demand, strict=True))


def _choose_nodes(
    search: _Search, pod: int, targets: int, receivers: int, rng: random.Random
) -> list[int]:
    """Nodes where ``pod`` could go (counting what it may preempt), then nodes with room."""
    p = search.problem
    demand, prio = p.demand[pod], p.priority[pod]
    may_preempt = p.may_preempt[pod] and p.origin[pod] is None
    scored = []
    for n in p.eligible[pod]:
        room = search.room(n)
        if may_preempt:
            for other in search.on_node[n]:
                if p.priority[other] < prio:
                    for r, v in enumerate(p.demand[other]):
                        room[r] += v
        shortfall = sum(max(0, d - f) / d for d, f in zip(demand, room, strict=True) if d)
        scored.append((shortfall, rng.random(), n))
    scored.sort()
    chosen = [n for _, _, n in scored[:targets]]
    return chosen + _roomiest(search, demand, receivers, set(chosen), rng)


def _roomiest(
    search: _Search, demand: Sequence[int], count: int, exclude: set[int], rng: random.Random
) -> list[int]:
    """Nodes whose free room covers most of ``demand`` (per resource, capped at all of it):
    the places that can take the pods moved out of a pending pod's way."""
    p = search.problem
    slack = []
    for n in range(p.num_nodes):
        if n in exclude:
            continue
        share = sum(min(1.0, f / d) for f, d in zip(search.room(n), demand, strict=True) if d)
        if share > 0:
            slack.append((-share, rng.random(), n))
    slack.sort()
    return [n for _, _, n in slack[:count]]


def _solve_neighbourhood(
    search: _Search,
    nodes: list[int],
    extra: Sequence[int],
    deadline: float,
    seed: int,
    step_seconds: float = LNS_STEP_SECONDS,
    more_at: int | None = None,
) -> bool:
    """Free everything on ``nodes`` (plus ``extra`` unplaced pods); apply any improvement."""
    p = search.problem
    in_s = set(nodes)
    free = {pi for n in nodes for pi in search.on_node[n]}
    unplaced = search.unplaced()
    free |= {pi for pi in unplaced if p.origin[pi] in in_s}
    free.update(extra)
    offered = [pi for pi in unplaced if pi not in free and any(n in in_s for n in p.eligible[pi])][
        :EXTRA_PENDING
    ]
    free.update(offered)
    model = NeighbourhoodModel(
        p,
        search.assignment,
        nodes,
        sorted(free),
        search.limits(free),
        symmetry_breaking=search.techniques.symmetry_breaking,
        aggregate=search.techniques.aggregate,
    )
    # Small neighbourhoods solve fastest alone; large ones get every worker.
    workers = search.workers if len(nodes) > 12 else 1
    step = min(deadline - time.perf_counter(), step_seconds)
    result = model.solve(step, workers, seed, first_improvement=True, more_at=more_at)
    if more_at is not None and result.improves:
        # A found placement gets as long again to shed the disruption it came with.
        polish = min(step_seconds, deadline - time.perf_counter())
        result = model.polish(result, polish, workers, seed)
    if result.improves and result.assignment is not None:
        search.apply(result.assignment)
        return True
    return False


def _large_neighbourhood_search(
    search: _Search, deadline: float, seed: int, stats: dict[str, Any]
) -> None:
    """Place pending pods (highest priority first), then undo disruption that is not needed."""
    p = search.problem
    rng = random.Random(seed)
    steps = solves = 0
    # Identical pending pods (a ReplicaSet) fail alike: count failures per shape, not per pod.
    attempts: dict[tuple[object, ...], int] = {}

    def shape(pi: int) -> tuple[object, ...]:
        return (p.demand[pi], p.priority[pi], p.may_preempt[pi], p.eligible[pi], p.origin[pi])

    # Placing comes first, but some of the window is kept for repair: each move is a restart.
    started = time.perf_counter()
    placing_deadline = started + (deadline - started) * (1 - REPAIR_SHARE)

    def eject(until: float) -> int:
        """An ejection pass, counted in the stats; returns the pods it placed."""
        done = search.place_by_ejection(until)
        counts = stats.setdefault("ejection", {"placed": 0, "moved_aside": 0, "evicted": 0})
        counts["placed"] += done.placed
        counts["moved_aside"] += done.moved
        counts["evicted"] += done.evicted
        return done.placed

    if search.techniques.ejection:
        eject(started + (placing_deadline - started) * EJECTION_SHARE)
        stats["ejection"]["seconds"] = round(time.perf_counter() - started, 3)
    while time.perf_counter() < placing_deadline:
        # Clearing held back for pods below a waiting one goes on once the search placed it.
        held = search.clearing_deferred
        if held is not None and all(p.priority[pi] < held for pi in search.unplaced()):
            resumed = eject(placing_deadline)
            counts = stats["ejection"]
            counts["resumed_after_search"] = counts.get("resumed_after_search", 0) + resumed
        queue = [
            pi for pi in search.unplaced() if attempts.get(shape(pi), 0) < len(NEIGHBOURHOOD_SIZES)
        ]
        if not queue:
            break
        tried_this_round: set[tuple[object, ...]] = set()
        solves_before = solves
        for pod in queue:
            key = shape(pod)
            if search.assignment[pod] is not None or key in tried_this_round:
                continue
            tried_this_round.add(key)
            level = attempts.get(key, 0)
            if level >= len(NEIGHBOURHOOD_SIZES):
                continue
            step = LNS_STEP_SECONDS * 2**level
            if placing_deadline - time.perf_counter() <= max(0.01, step / 8):
                continue  # too little time left for a neighbourhood this large
            targets, receivers = NEIGHBOURHOOD_SIZES[level]
            nodes = _choose_nodes(search, pod, targets, receivers, rng)
            solves += 1
            placed = _solve_neighbourhood(
                search, nodes, [pod], placing_deadline, seed + solves, step, p.priority[pod]
            )
            if placed:
                steps += 1
            else:
                attempts[key] = level + 1
        if solves == solves_before:
            break  # nothing fits in the time left
    # Ejections cut short by their share of the time go on with the placing time the
    # neighbourhoods left (they stop early once every pending shape has failed there).
    if search.techniques.ejection and time.perf_counter() < placing_deadline:
        eject(placing_deadline)
    # Repair: first send back every pod whose own node still has room, then a neighbourhood
    # around each disrupted pod left (its old node, where it is now, and roomy nodes) may keep
    # the placements with fewer moves or evictions.
    reverted = search.revert_disruption()
    repairs = 0
    revisited: set[int] = set()
    # Evicted pods first (an eviction weighs more than any number of moves); before the
    # first moved pod's neighbourhood, moved pods go home where guests can make way (no
    # solve: on the whole openb cluster 30-40 pods sent home in 0.03 s, where a repair solve
    # takes about 0.1 s and rarely improves).
    made_way = not search.techniques.make_way_home
    while time.perf_counter() < deadline:
        todo = sorted(
            (pi for pi in search.disrupted() if pi not in revisited),
            key=lambda pi: search.assignment[pi] is not None,
        )
        if not made_way and (not todo or search.assignment[todo[0]] is not None):
            made_way = True
            reverted += search.make_way_home(deadline)
            continue
        if not todo:
            break
        pod = todo[0]
        revisited.add(pod)
        origin, now = p.origin[pod], search.assignment[pod]
        nodes = [n for n in (origin, now) if n is not None]
        nodes += _roomiest(search, p.demand[pod], 4, set(nodes), rng)
        solves += 1
        if _solve_neighbourhood(search, nodes, [], deadline, seed + solves):
            repairs += 1
    stats["lns"] = {
        "solves": solves,
        "improving_steps": steps,
        "reverted": reverted,
        "repairs": repairs,
    }
