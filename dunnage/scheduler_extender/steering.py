"""What an executing plan asks of the scheduler: the steering orders the extender enforces.

A plan becomes, per pod it places, an order: the pending pod (by namespace/name) goes to its
planned node; a moved pod is evicted and its controller makes a new pod with a new name, so a
move becomes an order for "the next pending pod of this owner" instead. Victims are listed per
node so the extender's preempt verb can answer with exactly the plan's victims.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SteeringOrders:
    plan: str  # PackingPlan name
    expires_at: float  # unix time
    pods: dict[str, str] = field(default_factory=dict)  # "ns/name" -> node
    owners: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "ns/Kind/name" -> nodes
    victims: dict[str, tuple[str, ...]] = field(default_factory=dict)  # node -> pod UIDs
    nodes: frozenset[str] = frozenset()  # nodes whose freed room is kept for the plan
    # "ns/Kind/name" -> node -> pods of that owner the plan has on the node in the end: an
    # owner's replacements are interchangeable, so without a count two could take one target.
    owner_quota: dict[str, dict[str, int]] = field(default_factory=dict)
