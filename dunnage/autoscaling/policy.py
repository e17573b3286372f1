"""Scaling policies: per-role KPA deciders driven by a concurrency target per role (or, with
``KPASettings(metric="rps")``, a requests-per-second target).

- ``kpa``: Knative's defaults, target 70 (70% of container concurrency 100) for every role, with
  the hard limit of ``containerConcurrency: 100`` (Knative ships 0, no hard limit: that is
  ``KPASettings(fixed_limit=True)`` with the engine's own batch size as the limit).
- ``static``: the same KPA with a fixed target per role.
- ``learned``: the same KPA with targets a reinforcement-learning agent picks per role
  (:mod:`dunnage.autoscaling.learned`).

The policy is a plain object with no I/O, so the simulator and an operator loop drive it the same
way: ``observe(now, {role: RoleObservation})`` for each metrics sample (every second or so), and
``decide(now)`` each tick (2 s in Knative) for the desired replicas per role and a decision record.
The hard per-replica limit that goes with a target (``concurrency_limit``) is what a router or
Knative's queue-proxy enforces: ``ceil(target / target_utilization)``, i.e. 100 for target 70.
When a target falls, its lower limit waits until the replicas it asks for are ready (make
before break, as a new Knative revision takes over only once its pods are ready).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dunnage.autoscaling.kpa import KPAScaler, KPASettings
from dunnage.autoscaling.types import (
    SLO,
    Decision,
    RoleDecision,
    RoleObservation,
)
from dunnage.errors import InputError


@dataclass(frozen=True)
class RoleBounds:
    min_replicas: int = 1
    max_replicas: int = 1000
    min_target: float = 0.01  # Knative accepts targets down to 0.01
    max_target: float = 1024.0

    def clamp_replicas(self, n: int) -> int:
        return min(max(n, self.min_replicas), self.max_replicas)

    def clamp_target(self, t: float) -> float:
        return min(max(t, self.min_target), self.max_target)


class TargetSource(Protocol):
    """Where a policy's per-role concurrency targets come from."""

    kind: str

    def target(self, role: str) -> float: ...

    def observe(self, now: float, observations: Mapping[str, RoleObservation]) -> None: ...

    def update(self, now: float) -> Mapping[str, Mapping[str, Any]]: ...


@dataclass
class StaticTargets:
    targets: Mapping[str, float]
    kind: str = "static"

    def target(self, role: str) -> float:
        return float(self.targets[role])

    def observe(self, now: float, observations: Mapping[str, RoleObservation]) -> None:
        pass

    def update(self, now: float) -> Mapping[str, Mapping[str, Any]]:
        return {}


@dataclass
class Autoscaler:
    """Per-role KPA deciders whose targets come from a :class:`TargetSource`."""

    roles: Sequence[str]
    source: TargetSource
    settings: KPASettings = field(default_factory=KPASettings)
    bounds: Mapping[str, RoleBounds] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        self._scalers: dict[str, KPAScaler] = {}
        self._replicas: dict[str, int] = {}
        self._ready: dict[str, int] = {}
        self._limits: dict[str, int] = {}
        self._pending_learning: dict[str, Mapping[str, Any]] = {}

    @property
    def name(self) -> str:
        return self.label or self.source.kind

    def _bounds(self, role: str) -> RoleBounds:
        return self.bounds.get(role, RoleBounds())

    def target(self, role: str) -> float:
        return self._bounds(role).clamp_target(self.source.target(role))

    def concurrency_limit(self, role: str) -> int:
        return self.settings.limit_for(self.target(role))

    def initial_replicas(self, role: str, sizing: Callable[[float], int]) -> int:
        """Replicas to start with: ``sizing(target)`` (the steady state the caller estimates for
        this role's target), within the role's bounds."""
        n = self._bounds(role).clamp_replicas(sizing(self.target(role)))
        self._scaler(role, initial_ready=n, now=0.0)
        self._replicas[role] = self._ready[role] = n
        return n

    def _scaler(self, role: str, *, initial_ready: int = 0, now: float = 0.0) -> KPAScaler:
        scaler = self._scalers.get(role)
        if scaler is None:
            b = self._bounds(role)
            scaler = KPAScaler(
                self.settings,
                self.target(role),
                min_scale=b.min_replicas,
                max_scale=b.max_replicas,
                initial_ready=initial_ready,
                now=now,
            )
            self._scalers[role] = scaler
        return scaler

    def observe(self, now: float, observations: Mapping[str, RoleObservation]) -> None:
        for role, obs in observations.items():
            if role not in self.roles:
                continue
            value = obs.request_rate if self.settings.metric == "rps" else obs.concurrency
            self._scaler(role, initial_ready=obs.ready_replicas, now=now).record(now, value)
            self._replicas[role] = obs.replicas
            self._ready[role] = obs.ready_replicas
        self.source.observe(now, observations)

    def decide(self, now: float) -> Decision:
        learning = self.source.update(now)
        out: dict[str, RoleDecision] = {}
        for role in self.roles:
            scaler = self._scaler(role, now=now)
            target = self.target(role)
            scaler.target = target
            ready = self._ready.get(role, 0)
            res = scaler.scale(now, ready)
            limit = self.settings.limit_for(target)
            held = self._limits.get(role)
            if held is not None and limit < held and ready < res.desired:
                # Make before break: a lower target's lower limit waits for the replicas it
                # asks for, so lowering the target never cuts the capacity being served.
                limit = held
            self._limits[role] = limit
            out[role] = RoleDecision(
                role=role,
                replicas=self._replicas.get(role, 0),
                ready_replicas=ready,
                desired=res.desired,
                target=target,
                concurrency_limit=limit,
                stable_concurrency=res.stable,
                panic_concurrency=res.panic,
                panicking=res.panicking,
                reason=res.reason,
                learning=learning.get(role),
            )
        return Decision(time=now, policy=self.name, roles=out)


def kpa_policy(
    roles: Sequence[str],
    settings: KPASettings | None = None,
    bounds: Mapping[str, RoleBounds] | None = None,
) -> Autoscaler:
    settings = settings or KPASettings()
    return Autoscaler(
        roles,
        StaticTargets(dict.fromkeys(roles, settings.default_target), kind="kpa"),
        settings,
        dict(bounds or {}),
        label="kpa",
    )


def static_policy(
    roles: Sequence[str],
    targets: Mapping[str, float],
    settings: KPASettings | None = None,
    bounds: Mapping[str, RoleBounds] | None = None,
) -> Autoscaler:
    label = "static:" + ",".join(f"{r}={targets[r]:g}" for r in roles)
    return Autoscaler(
        roles, StaticTargets(dict(targets)), settings or KPASettings(), dict(bounds or {}), label
    )


def parse_static(spec: str, roles: Sequence[str]) -> dict[str, float]:
    """``N`` (every role) or ``role=N,role=N`` -> targets per role."""
    where = "--policy"
    body = spec.strip()

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise InputError(
                f"static:{spec}: {text.strip()!r} is not a number", obj=where
            ) from None
        if not (value > 0 and math.isfinite(value)):
            raise InputError(f"static:{spec}: targets must be positive", obj=where)
        return value

    if "=" not in body:
        return dict.fromkeys(roles, number(body))
    targets: dict[str, float] = {}
    for part in body.split(","):
        role, _, value = part.partition("=")
        role = role.strip()
        if role not in roles:
            raise InputError(
                f"static:{spec}: unknown role {role!r} for this mode (roles: {', '.join(roles)})",
                obj=where,
            )
        targets[role] = number(value)
    missing = [r for r in roles if r not in targets]
    if missing:
        raise InputError(f"static:{spec}: no target for role {', '.join(missing)}", obj=where)
    return targets


def default_slo(ttft: float, tpot: float, attainment: float = 0.9) -> SLO:
    return SLO(ttft=ttft, tpot=tpot, attainment=attainment)
