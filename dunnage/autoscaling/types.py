"""What a scaling policy sees (per-role observations) and what it returns (a decision).

Roles: ``serve`` for one aggregated pool, or ``prefill`` and ``decode`` for a disaggregated
(P/D) deployment, as in the ModelService custom resource.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SERVE = "serve"
PREFILL = "prefill"
DECODE = "decode"
AGGREGATED_ROLES = (SERVE,)
PD_ROLES = (PREFILL, DECODE)
ROLES = (SERVE, PREFILL, DECODE)


def roles_for(mode: str) -> tuple[str, ...]:
    return PD_ROLES if mode == "disaggregated" else AGGREGATED_ROLES


@dataclass(frozen=True)
class SLO:
    """Per-request latency objectives and the share of requests that must meet both."""

    ttft: float  # seconds to the first token
    tpot: float  # mean seconds per output token after the first
    attainment: float = 0.9

    def to_dict(self) -> dict[str, float]:
        return {"ttft": self.ttft, "tpot": self.tpot, "attainment": self.attainment}


# The share of the TTFT objective a P/D decode pool may spend between receiving a request's KV
# cache and emitting its first token; the prefill pool has the rest (the KV transfer itself takes
# milliseconds). NVIDIA Dynamo's planner splits the same way: prefill scales on TTFT, decode on
# inter-token latency.
DECODE_TTFT_SHARE = 0.25


def role_slo(slo: SLO, role: str) -> SLO:
    """The objectives one role's *own* metrics are held to, so that a role is judged on the
    latency it adds and not on its peer's: in P/D the prefill pool on the time from a request's
    arrival to the end of its prompt, within ``1 - DECODE_TTFT_SHARE`` of the TTFT objective (no
    TPOT: it emits no tokens after the first); the decode pool on the time from the KV cache's
    arrival to the first token, within ``DECODE_TTFT_SHARE`` of it, and on TPOT. These are what
    each role's pods measure in their own TTFT and TPOT histograms. ``serve`` keeps the SLO."""
    if role == PREFILL:
        return SLO(slo.ttft * (1 - DECODE_TTFT_SHARE), math.inf, slo.attainment)
    if role == DECODE:
        return SLO(slo.ttft * DECODE_TTFT_SHARE, slo.tpot, slo.attainment)
    return slo


@dataclass(frozen=True)
class RoleObservation:
    """One sample of one role's metrics, as a metrics source reports it.

    ``concurrency`` is the role's in-flight requests (running, waiting in the engines, and queued
    in front of the pool) averaged over the sample period: Knative's queue-proxy figure, or
    ``vllm:num_requests_running + vllm:num_requests_waiting`` summed over the role's pods.
    Latency comes as counters of requests completed in the period and how many met each SLO
    (a Prometheus histogram's buckets at the SLO bounds) and/or as quantiles
    (``{0.5: s, 0.9: s, 0.99: s}``); the counters win when both are present.
    """

    concurrency: float
    ready_replicas: int
    replicas: int
    request_rate: float = 0.0
    completed: int = 0
    ttft_ok: int | None = None
    tpot_ok: int | None = None
    ttft_quantiles: Mapping[float, float] = field(default_factory=dict)
    tpot_quantiles: Mapping[float, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RoleDecision:
    role: str
    replicas: int  # current (spec) replicas
    ready_replicas: int
    desired: int
    target: float  # concurrency target per replica the decision used
    concurrency_limit: int  # hard per-replica limit (Knative's containerConcurrency)
    stable_concurrency: float
    panic_concurrency: float
    panicking: bool
    reason: str
    learning: Mapping[str, Any] | None = None  # the learned policy's step, when it took one

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "role": self.role,
            "replicas": self.replicas,
            "readyReplicas": self.ready_replicas,
            "desiredReplicas": self.desired,
            "target": round(self.target, 3),
            "concurrencyLimit": self.concurrency_limit,
            "stableConcurrency": round(self.stable_concurrency, 3),
            "panicConcurrency": round(self.panic_concurrency, 3),
            "panicking": self.panicking,
            "reason": self.reason,
        }
        if self.learning is not None:
            out["learning"] = dict(self.learning)
        return out


@dataclass(frozen=True)
class Decision:
    time: float
    policy: str
    roles: Mapping[str, RoleDecision]

    @property
    def desired(self) -> dict[str, int]:
        return {role: d.desired for role, d in self.roles.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "policy": self.policy,
            "roles": {role: d.to_dict() for role, d in self.roles.items()},
        }


def attainment_from_quantiles(quantiles: Mapping[float, float], bound: float) -> float | None:
    """The share of requests at or under ``bound``, interpolated linearly between the known
    quantiles (with the 0-quantile taken as 0 s). At or above the highest known value the share
    is that quantile's level: the tail beyond it is unknown, so it is not counted as met."""
    points = [(0.0, 0.0), *sorted((float(q), float(v)) for q, v in quantiles.items())]
    if len(points) == 1:
        return None
    for (q0, v0), (q1, v1) in itertools.pairwise(points):
        if bound < v1:
            return q0 + (q1 - q0) * ((bound - v0) / (v1 - v0) if v1 > v0 else 0.0)
    return points[-1][0]
