"""Prometheus metrics of the extender and the fallback planner.

One :class:`DunnageMetrics` per process (``METRICS``, on prometheus-client's default registry, is
what ``/metrics`` serves); tests make their own on a fresh ``CollectorRegistry``. The planner
calls :meth:`DunnageMetrics.observe_plan` and :meth:`DunnageMetrics.count`; the HTTP server calls
:meth:`DunnageMetrics.observe_request`.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from dunnage.solver.plan import Plan

# Extender calls are meant to take well under 5 ms; solves take up to the policy's budget.
REQUEST_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
SOLVE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
VERBS = ("filter", "prioritize", "preempt")

# How an executed plan can end (dunnage_plans_finished_total's phase label).
FINISHED_PHASES = ("Succeeded", "Expired")
# What FallbackPlanner.count() may be asked to count -> counter attribute.
_COUNTED = {
    "evictions": "evictions",
    "moves": "moves",
    "placed": "placed",
}


class DunnageMetrics:
    """The metrics, registered on ``registry`` (prometheus-client's default one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        r = self.registry
        self.request_seconds = Histogram(
            "dunnage_extender_request_seconds",
            "Time to answer one kube-scheduler extender call, by verb.",
            ["verb"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "dunnage_extender_requests",
            "Extender calls by verb and HTTP status code.",
            ["verb", "code"],
            registry=r,
        )
        self.steered = Counter(
            "dunnage_extender_steered_pods",
            "Extender calls answered from an active plan (the pod was steered), by verb.",
            ["verb"],
            registry=r,
        )
        self.plans = Counter(
            "dunnage_plans",
            "Plans computed by the fallback planner, by outcome (improved, optimal, "
            "no_improvement).",
            ["outcome"],
            registry=r,
        )
        self.solve_seconds = Histogram(
            "dunnage_plan_solve_seconds",
            "Wall-clock seconds the solver took for one plan.",
            buckets=SOLVE_BUCKETS,
            registry=r,
        )
        self.evictions = Counter(
            "dunnage_evictions", "Pods evicted to carry out plans.", registry=r
        )
        self.moves = Counter(
            "dunnage_moves", "Pods moved (evicted and steered elsewhere) by plans.", registry=r
        )
        self.placed = Counter(
            "dunnage_pods_placed_by_fallback",
            "Pending pods placed by plans of the fallback planner.",
            registry=r,
        )
        self.active_plans = Gauge(
            "dunnage_active_plans", "Plans the extender is steering pods for.", registry=r
        )
        self.leader = Gauge(
            "dunnage_extender_leader",
            "1 while this replica leads (holds the Lease, or runs without --leader-elect), "
            "else 0: a standby.",
            registry=r,
        )
        self.plans_finished = Counter(
            "dunnage_plans_finished",
            "Executed plans by how they ended (Succeeded, Expired: the TTL ran out first).",
            ["phase"],
            registry=r,
        )
        for verb in VERBS:  # export zeroes from the start, so rates work at once
            self.request_seconds.labels(verb)
            self.steered.labels(verb)
        for outcome in ("improved", "optimal", "no_improvement"):
            self.plans.labels(outcome)
        for phase in FINISHED_PHASES:
            self.plans_finished.labels(phase)

    def observe_request(self, verb: str, seconds: float, code: int = 200) -> None:
        self.request_seconds.labels(verb).observe(seconds)
        self.requests.labels(verb, str(code)).inc()

    def observe_plan(self, plan: Plan) -> None:
        self.plans.labels(plan.status.value).inc()
        self.solve_seconds.observe(plan.solve_seconds)

    def finish_plan(self, phase: str) -> None:
        """Count an executed plan's end (one of ``FINISHED_PHASES``)."""
        if phase not in FINISHED_PHASES:
            raise ValueError(f"unknown phase {phase!r}; expected one of {FINISHED_PHASES}")
        self.plans_finished.labels(phase).inc()

    def count(self, what: str, n: int = 1) -> None:
        """Count ``n`` evictions, moves or placed pods (what: evictions | moves | placed)."""
        attr = _COUNTED.get(what)
        if attr is None:
            raise ValueError(f"unknown metric {what!r}; expected one of {sorted(_COUNTED)}")
        if n:
            getattr(self, attr).inc(n)


_default: DunnageMetrics | None = None


def default_metrics() -> DunnageMetrics:
    """The process-wide metrics on the default registry (created on first use)."""
    global _default
    if _default is None:
        _default = DunnageMetrics()
    return _default
