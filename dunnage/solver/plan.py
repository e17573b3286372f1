"""The result of planning: where every pod goes, and what that costs running pods."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dunnage.cluster.model import Snapshot


class PlanStatus(StrEnum):
    IMPROVED = "improved"  # places more pods than the snapshot, lexicographically by priority
    OPTIMAL = "optimal"  # the snapshot's own placement is proven optimal ("certified")
    NO_IMPROVEMENT = "no_improvement"  # neither found within the time limit


@dataclass(frozen=True, slots=True)
class Binding:
    pod: str
    node: str


@dataclass(frozen=True, slots=True)
class Move:
    pod: str
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class Eviction:
    pod: str
    node: str


@dataclass(frozen=True)
class Plan:
    status: PlanStatus
    assignments: Mapping[str, str | None]  # every pod of the snapshot -> node after the plan
    bindings: tuple[Binding, ...]
    moves: tuple[Move, ...]
    evictions: tuple[Eviction, ...]
    placed_before: Mapping[int, int]
    placed_after: Mapping[int, int]
    proven_optimal: bool  # the whole objective: placements, then fewest evictions and moves
    solve_seconds: float
    # No plan places more pods, lexicographically by priority (evictions and moves aside).
    placements_proven_optimal: bool = False
    unplaced_reasons: Mapping[str, str] = field(default_factory=dict)  # pod -> why it fits nowhere
    stats: Mapping[str, Any] = field(default_factory=dict)  # solver diagnostics (phases, sizes)

    @classmethod
    def from_assignments(
        cls,
        snapshot: Snapshot,
        assignments: Mapping[str, str | None],
        *,
        proven_optimal: bool,
        solve_seconds: float,
        placements_proven_optimal: bool = False,
        unplaced_reasons: Mapping[str, str] | None = None,
        stats: Mapping[str, Any] | None = None,
    ) -> Plan:
        """Derive bindings, moves, evictions and the status from a full assignment."""
        full = {p.key: assignments.get(p.key, p.node_name) for p in snapshot.pods}
        bindings, moves, evictions = [], [], []
        for p in snapshot.pods:
            after = full[p.key]
            if p.node_name is None and after is not None:
                bindings.append(Binding(p.key, after))
            elif p.node_name is not None and after is None:
                evictions.append(Eviction(p.key, p.node_name))
            elif p.node_name is not None and after is not None and after != p.node_name:
                moves.append(Move(p.key, p.node_name, after))
        before = snapshot.placed_by_priority()
        after_counts = snapshot.placed_by_priority(full)
        better = lexicographic_key(after_counts) > lexicographic_key(before)
        if not better:  # nothing better: the plan is the snapshot's own placement
            full = {p.key: p.node_name for p in snapshot.pods}
            bindings, moves, evictions = [], [], []
            after_counts = before
            # With the placements proven, the snapshot's own placement, which disrupts nothing,
            # is optimal in the whole objective too.
            proven_optimal = proven_optimal or placements_proven_optimal
        if better:
            status = PlanStatus.IMPROVED
        elif proven_optimal:
            status = PlanStatus.OPTIMAL
        else:
            status = PlanStatus.NO_IMPROVEMENT
        return cls(
            status=status,
            assignments=full,
            bindings=tuple(bindings),
            moves=tuple(moves),
            evictions=tuple(evictions),
            placed_before=before,
            placed_after=after_counts,
            proven_optimal=proven_optimal,
            solve_seconds=solve_seconds,
            placements_proven_optimal=proven_optimal or placements_proven_optimal,
            unplaced_reasons=dict(unplaced_reasons or {}),
            stats=dict(stats or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The `dunnage plan -o json` contract."""
        return {
            "status": self.status.value,
            "assignments": dict(self.assignments),
            "bindings": [{"pod": b.pod, "node": b.node} for b in self.bindings],
            "moves": [{"pod": m.pod, "from": m.source, "to": m.target} for m in self.moves],
            "evictions": [{"pod": e.pod, "node": e.node} for e in self.evictions],
            "placed_by_priority": {
                "before": {str(k): v for k, v in self.placed_before.items()},
                "after": {str(k): v for k, v in self.placed_after.items()},
            },
            "proven_optimal": self.proven_optimal,
            "placements_proven_optimal": self.placements_proven_optimal,
            "solve_seconds": round(self.solve_seconds, 4),
            "unplaced_reasons": dict(self.unplaced_reasons),
            "stats": dict(self.stats),
        }


def proof_note(proven_optimal: bool, placements_proven_optimal: bool) -> str:
    """What a plan's proofs cover, for people: ``" (proven optimal)"`` and the like."""
    if proven_optimal:
        return " (proven optimal)"
    return " (placements proven optimal)" if placements_proven_optimal else ""


def lexicographic_key(placed: Mapping[int, int]) -> tuple[int, ...]:
    """Placed counts, highest priority first, cumulative (pods of priority >= p), comparable."""
    total, key = 0, []
    for prio in sorted(placed, reverse=True):
        total += placed[prio]
        key.append(total)
    return tuple(key)
