"""The extender's state: the plans being carried out and what they ask of the scheduler.

The fallback planner publishes a plan's :class:`SteeringOrders` here (``PlanBook`` is its
``SteeringSink``) and retires them when the plan ends; the extender's verbs read it on every
call. Lookups are by pod key (``namespace/name``), by pod UID, and for pods a plan moves, by the
controlling owner (``namespace/Kind/name``): the controller's replacement pod has a new name.

Pure and thread-safe: readers take an immutable view (:meth:`PlanBook.view`), so a call sees one
consistent set of plans, and the lock is held only to swap views.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from dunnage.scheduler_extender.steering import SteeringOrders


@dataclass(frozen=True, slots=True)
class PodRef:
    """What the extender needs to know about the pod being scheduled."""

    namespace: str
    name: str
    uid: str = ""
    owner: str | None = None  # "Kind/name" of the controlling owner
    priority: int = 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def owner_key(self) -> str | None:
        return f"{self.namespace}/{self.owner}" if self.owner else None


@dataclass(frozen=True, slots=True)
class Steer:
    """An active plan's decision for one pod: the nodes it may go to."""

    plan: str
    nodes: tuple[str, ...]  # the planned node (several for a moved pod's owner)
    quota: tuple[tuple[str, int], ...] = ()  # owner steers: (node, the owner's pods there)

    def reason(self) -> str:
        where = " or ".join(self.nodes)
        return f"dunnage plan {self.plan} places this pod on {where}"


@dataclass(frozen=True)
class PlanBookView:
    """An immutable picture of the active plans at one moment."""

    plans: Mapping[str, SteeringOrders] = field(default_factory=dict)
    by_pod: Mapping[str, Steer] = field(default_factory=dict)  # pod key or UID -> steer
    by_owner: Mapping[str, Steer] = field(default_factory=dict)  # "ns/Kind/name" -> steer
    reserved: Mapping[str, str] = field(default_factory=dict)  # node -> plan keeping it
    victims: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    earliest_expiry: float = float("inf")

    @property
    def empty(self) -> bool:
        return not self.plans

    def steer(self, pod: PodRef) -> Steer | None:
        if not self.plans:
            return None
        found = self.by_pod.get(pod.key)
        if found is None and pod.uid:
            found = self.by_pod.get(pod.uid)
        if found is None and pod.owner:
            found = self.by_owner.get(f"{pod.namespace}/{pod.owner}")
        return found

    def victims_on(self, plan: str, node: str) -> tuple[str, ...]:
        """UIDs the plan evicts or moves away from ``node``."""
        return tuple(self.victims.get(plan, {}).get(node, ()))


def _build_view(plans: Mapping[str, SteeringOrders]) -> PlanBookView:
    by_pod: dict[str, Steer] = {}
    by_owner: dict[str, Steer] = {}
    reserved: dict[str, str] = {}
    victims: dict[str, Mapping[str, tuple[str, ...]]] = {}
    for name in sorted(plans):  # deterministic when plans overlap: the later name wins
        orders = plans[name]
        for pod, node in orders.pods.items():
            by_pod[pod] = Steer(name, (node,))
        for owner, nodes in orders.owners.items():
            quota = tuple(sorted(orders.owner_quota.get(owner, {}).items()))
            by_owner[owner] = Steer(name, tuple(dict.fromkeys(nodes)), quota)
        for node in orders.nodes:
            reserved[node] = name
        victims[name] = dict(orders.victims)
    return PlanBookView(
        plans=dict(plans),
        by_pod=by_pod,
        by_owner=by_owner,
        reserved=reserved,
        victims=victims,
        earliest_expiry=min((o.expires_at for o in plans.values()), default=float("inf")),
    )


class PlanBook:
    """Active plans, keyed by PackingPlan name; expired plans drop out on their own."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._plans: dict[str, SteeringOrders] = {}
        self._view = PlanBookView()
        self._on_change = on_change  # called with the number of active plans

    # --- SteeringSink (what the fallback planner calls) -----------------------------------

    def publish(self, orders: SteeringOrders) -> None:
        """Start (or replace) steering for one plan."""
        with self._lock:
            self._plans[orders.plan] = orders
            self._rebuild()

    def retire(self, plan: str) -> None:
        """Stop steering for a plan (it succeeded, failed or expired); unknown names are fine."""
        with self._lock:
            if self._plans.pop(plan, None) is not None:
                self._rebuild()

    # --- readers ---------------------------------------------------------------------------

    def view(self) -> PlanBookView:
        """The active plans now; expired ones are dropped first."""
        view = self._view
        if view.earliest_expiry <= self._clock():
            with self._lock:
                now = self._clock()
                expired = [n for n, o in self._plans.items() if o.expires_at <= now]
                for name in expired:
                    del self._plans[name]
                if expired:
                    self._rebuild()
                view = self._view
        return view

    def steer(self, pod: PodRef) -> Steer | None:
        return self.view().steer(pod)

    def active(self) -> list[str]:
        return sorted(self.view().plans)

    def load(self, orders: Iterable[SteeringOrders]) -> None:
        """Replace every plan at once (e.g. from PackingPlan objects after a restart)."""
        with self._lock:
            self._plans = {o.plan: o for o in orders}
            self._rebuild()

    def _rebuild(self) -> None:
        self._view = _build_view(self._plans)
        if self._on_change is not None:
            self._on_change(len(self._plans))
