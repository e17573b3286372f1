"""A Knative Pod Autoscaler (KPA) decider, one per role, following knative.dev/serving.

What it reproduces (``pkg/autoscaler/scaling/autoscaler.go``, ``pkg/autoscaler/metrics``,
``pkg/reconciler/autoscaling/kpa/scaler.go``, defaults from ``config-autoscaler``):

- Concurrency samples go into 1-second buckets; the stable (60 s) and panic (6 s = 10% of
  stable) values are the average over the buckets of each window, counted from the first sample
  when the window is not full yet (``TimedFloat64Buckets.WindowAverage``).
- ``dspc = ceil(stable / target)``, ``dppc = ceil(panic / target)``; both are clamped to
  ``[floor(ready / maxScaleDownRate), ceil(maxScaleUpRate * ready)]`` with ``ready = max(1,
  ready pods)``.
- Panic starts when ``dppc / ready >= panicThreshold`` (200%), is extended while that holds, and
  ends once it has not held for a whole stable window. In panic the desired count is the larger of
  the stable and panic counts and never decreases (``maxPanicPods``).
- A decider created with more than one ready pod starts in panic with ``maxPanicPods`` = ready
  pods, so a restarted autoscaler does not scale down before it has a window of data.
- Bounds: min/max scale are applied after the decider (``applyBounds``; max 0 = unbounded).
- Scale to zero (when enabled and min scale is 0): a desired count of 0 keeps one replica until
  the decider has said 0 for the scale-to-zero grace period (30 s); with no ready pod (the
  PodAutoscaler inactive) it stays 0. Knative expresses this with
  the PodAutoscaler's Active/Inactive conditions and the activator; the effect on the pod count
  is the same: idle for a stable window (so the average is 0), then the grace period.

- The metric (``autoscaling.knative.dev/metric``): ``concurrency`` (the default), or ``rps``,
  requests per second per replica; the decider is the same, fed with the request rate and
  compared with an rps target. The per-replica concurrency limit is then
  ``containerConcurrency`` itself, not derived from the target.

Not modelled: the activator's burst capacity (``targetBurstCapacity``), ``activationScale``
and ``scaleDownDelay``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any

METRICS = ("concurrency", "rps")


@dataclass(frozen=True)
class KPASettings:
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold: float = 2.0  # 200%
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    tick: float = 2.0
    scale_to_zero_grace: float = 30.0
    enable_scale_to_zero: bool = True
    container_concurrency: int = 100
    target_utilization: float = 0.7
    bucket_seconds: float = 1.0
    metric: str = "concurrency"  # or "rps"
    rps_target_default: float = 200.0  # Knative's requests-per-second-target-default
    # Each replica's limit on requests in flight is container_concurrency whatever the target
    # (engines that batch up to their own limit behind a plain Service), not Knative's
    # containerConcurrency that goes with a concurrency target (target / utilization).
    fixed_limit: bool = False

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")

    @property
    def panic_window(self) -> float:
        return self.stable_window * self.panic_window_percentage / 100.0

    @property
    def default_target(self) -> float:
        """Knative's effective default target: 70% of a container concurrency of 100 (or, on
        the rps metric, of 200 requests per second)."""
        base = self.rps_target_default if self.metric == "rps" else self.container_concurrency
        return base * self.target_utilization

    def limit_for(self, target: float) -> int:
        """The hard per-replica concurrency limit that goes with a target at this utilisation
        (on the rps metric, ``container_concurrency``: an rps target says nothing of it; with
        ``fixed_limit`` too)."""
        if self.metric == "rps" or self.fixed_limit:
            return self.container_concurrency
        return max(1, math.ceil(target / self.target_utilization - 1e-9))

    @property
    def fixed_concurrency_limit(self) -> int | None:
        """The per-replica limit when ``fixed_limit`` makes it one on the concurrency metric
        (None: it follows the target, or the metric is rps, where it is always fixed)."""
        if self.fixed_limit and self.metric == "concurrency":
            return self.container_concurrency
        return None

    def with_(self, **changes: Any) -> KPASettings:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class KPAResult:
    desired: int
    stable: float
    panic: float
    dspc: float
    dppc: float
    panicking: bool
    valid: bool
    reason: str


class _Buckets:
    """Knative's TimedFloat64Buckets: values summed per bucket, averaged over a window."""

    def __init__(self, window: float, granularity: float) -> None:
        self.granularity = granularity
        self.size = max(1, round(window / granularity))
        self.values: deque[tuple[int, float]] = deque()  # (bucket index, sum), oldest first
        self.first: int | None = None

    def record(self, now: float, value: float) -> None:
        idx = math.floor(now / self.granularity + 1e-9)
        if self.first is None:
            self.first = idx
        if self.values and self.values[-1][0] == idx:
            self.values[-1] = (idx, self.values[-1][1] + value)
        else:
            self.values.append((idx, value))
        self._trim(idx)

    def _trim(self, now_idx: int) -> None:
        while self.values and self.values[0][0] <= now_idx - self.size:
            self.values.popleft()

    def empty(self, now: float) -> bool:
        self._trim(math.floor(now / self.granularity + 1e-9))
        return not self.values

    def average(self, now: float) -> float:
        now_idx = math.floor(now / self.granularity + 1e-9)
        self._trim(now_idx)
        if not self.values or self.first is None:
            return 0.0
        last = max(now_idx, self.values[-1][0])
        valid = min(last - self.first + 1, self.size)
        return sum(v for _, v in self.values) / valid


class KPAScaler:
    """One role's decider. ``record`` concurrency samples, then ``scale`` every tick."""

    def __init__(
        self,
        settings: KPASettings,
        target: float,
        *,
        min_scale: int = 0,
        max_scale: int = 0,
        initial_ready: int = 0,
        now: float = 0.0,
    ) -> None:
        if target <= 0:
            raise ValueError("target must be positive")
        self.settings = settings
        self.target = float(target)
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.stable = _Buckets(settings.stable_window, settings.bucket_seconds)
        self.panic = _Buckets(settings.panic_window, settings.bucket_seconds)
        # Knative starts a new decider in panic when it finds more than one pod.
        self.panic_time: float | None = now if initial_ready > 1 else None
        self.max_panic_pods = initial_ready
        self.zero_since: float | None = None

    def record(self, now: float, concurrency: float) -> None:
        self.stable.record(now, concurrency)
        self.panic.record(now, concurrency)

    def scale(self, now: float, ready_pods: int) -> KPAResult:
        s = self.settings
        if self.stable.empty(now):
            return KPAResult(
                max(ready_pods, self.min_scale), 0.0, 0.0, 0.0, 0.0, False, False, "no data"
            )
        stable = self.stable.average(now)
        panic = self.panic.average(now)
        ready = max(1.0, float(ready_pods))
        max_up = math.ceil(s.max_scale_up_rate * ready)
        max_down = math.floor(ready / s.max_scale_down_rate)
        # Capped where the cap changes no decision (desired pods never exceed max_up, panic is
        # entered at panic_threshold * ready), so that no finite reading overflows ceil().
        cap = max(max_up, s.panic_threshold * ready)
        dspc = math.ceil(min(stable / self.target, cap) - 1e-9)
        dppc = math.ceil(min(panic / self.target, cap) - 1e-9)
        desired_stable = int(min(max(dspc, max_down), max_up))
        desired_panic = int(min(max(dppc, max_down), max_up))
        over = dppc / ready >= s.panic_threshold
        if over:
            self.panic_time = now  # start, or extend
        elif self.panic_time is not None and self.panic_time + s.stable_window < now:
            self.panic_time = None
            self.max_panic_pods = 0
        desired = desired_stable
        reason = "stable"
        if self.panic_time is not None:
            desired = max(desired, desired_panic)
            if desired > self.max_panic_pods:
                self.max_panic_pods = desired
            desired = self.max_panic_pods
            reason = "panic"
        bounded = max(desired, self.min_scale)
        if self.max_scale:
            bounded = min(bounded, self.max_scale)
        if bounded != desired:
            reason += f", bounded to [{self.min_scale}, {self.max_scale or 'inf'}]"
        desired = bounded
        if desired == 0:
            if not s.enable_scale_to_zero:
                desired = 1
                reason += ", scale to zero disabled"
            else:
                if self.zero_since is None:
                    self.zero_since = now
                if ready_pods == 0:
                    # Already inactive (Knative's PA): the grace keeps a pod that serves, it
                    # does not bring one back.
                    reason += ", idle: at zero"
                elif now - self.zero_since < s.scale_to_zero_grace:
                    desired = 1
                    reason += ", idle: scale-to-zero grace"
                else:
                    reason += ", idle: scaled to zero"
        else:
            self.zero_since = None
        return KPAResult(
            desired, stable, panic, dspc, dppc, self.panic_time is not None, True, reason
        )
