"""The autoscaling loop's decision logic, without a cluster: bounds, decisions, status, events,
problems reported once, and the operator tick's writes against a fake API."""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonpatch
import kopf
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as hs

from dunnage.autoscaling import loop
from dunnage.autoscaling import spec as policy_spec
from dunnage.autoscaling.learned import LearnedModel
from dunnage.autoscaling.loop import LoopState, RoleLimits, RoleState, combined_bounds, step
from dunnage.autoscaling.metrics import (
    URL_FIELD,
    MetricsError,
    RoleMetrics,
    histogram,
    observation,
    parse_vector,
    role_metrics,
)
from dunnage.autoscaling.policy import RoleBounds
from dunnage.autoscaling.spec import parse as parse_policy
from dunnage.autoscaling.types import SLO
from dunnage.operator import autoscaler, handlers
from dunnage.operator.reconcile import ApiError
from dunnage.operator.spec import parse as parse_model_service

REPO = Path(__file__).resolve().parents[1]


def policy_body(
    *,
    kind: str = "static",
    target: float = 10,
    lo: int = 1,
    hi: int = 4,
    generation: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "dunnage.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "metadata": {"name": "pol", "namespace": "ns", "generation": generation},
        "spec": {
            "policy": kind,
            "slo": {"ttftSeconds": 1, "tpotSeconds": 0.1},
            "metrics": {"prometheus": {"url": "http://prom:9090"}, "sampleSeconds": 1},
            "kpa": {"stableWindowSeconds": 10, "panicWindowPercentage": 20, "tickSeconds": 1},
            "roles": {"serve": {"target": target, "minReplicas": lo, "maxReplicas": hi}},
        },
    }
    body["spec"].update(spec)
    return body


def run(
    state: LoopState,
    now: float,
    concurrency: float | None,
    replicas: int,
    ready: int | None = None,
    *,
    policy: Mapping[str, Any] | None = None,
    limits: RoleLimits | None = None,
    metrics: Any = "auto",
) -> loop.Tick:
    if metrics == "auto":
        metrics = {} if concurrency is None else {"serve": RoleMetrics(concurrency=concurrency)}
    return step(
        state,
        now,
        model_service="chat",
        policy_body=policy_body() if policy is None else policy,
        policy_name="pol",
        namespace="ns",
        roles=("serve",),
        limits={"serve": limits or RoleLimits()},
        deployments={"serve": RoleState(replicas, replicas if ready is None else ready)},
        metrics=metrics,
    )


# --- bounds ------------------------------------------------------------------------------------


def test_bounds_are_the_intersection_of_role_and_policy() -> None:
    policy = RoleBounds(min_replicas=2, max_replicas=8)
    assert combined_bounds(policy, RoleLimits()) == policy
    both = combined_bounds(policy, RoleLimits(min_replicas=3, max_replicas=6))
    assert (both.min_replicas, both.max_replicas) == (3, 6)
    looser = combined_bounds(policy, RoleLimits(min_replicas=0, max_replicas=20))
    assert (looser.min_replicas, looser.max_replicas) == (2, 8)
    # Disjoint ranges: the upper bound wins (never more pods than someone allowed).
    disjoint = combined_bounds(policy, RoleLimits(min_replicas=10, max_replicas=12))
    assert (disjoint.min_replicas, disjoint.max_replicas) == (8, 8)
    below = combined_bounds(policy, RoleLimits(max_replicas=1))
    assert (below.min_replicas, below.max_replicas) == (1, 1)


def test_a_role_left_out_of_the_policy_gets_the_bounds_of_a_role_listed_with_none() -> None:
    body = policy_body(kind="kpa", roles={"prefill": {}})
    spec = loop.effective_spec(parse_policy(body), ("prefill", "decode"), {})
    assert spec.roles["decode"].bounds == spec.roles["prefill"].bounds
    assert spec.roles["decode"].bounds.max_replicas == 10000  # was 1000 left out


# --- decisions ---------------------------------------------------------------------------------


def test_load_scales_up_to_ceil_concurrency_over_target() -> None:
    state = LoopState()
    tick = run(state, 100.0, 35.0, replicas=1)
    assert tick.scale == {"serve": 4}  # ceil(35 / 10)
    assert tick.decision is not None and tick.decision.roles["serve"].target == 10
    kinds = [(k, r) for k, r, _ in tick.events]
    assert kinds == [("Normal", "Scaled")]
    message = tick.events[0][2]
    assert message.startswith("serve: 1 -> 4 replicas (concurrency 35, target 10/replica")
    assert tick.status is not None
    assert tick.status["roles"]["serve"]["desiredReplicas"] == 4
    assert tick.status["lastDecisions"][-1] | {"time": "-"} == {
        "time": "-",
        "modelService": "chat",
        "role": "serve",
        "replicas": 1,
        "desiredReplicas": 4,
        "target": 10.0,
        "reason": tick.decision.roles["serve"].reason,
    }


def test_on_the_rps_metric_the_request_rate_drives_the_count() -> None:
    state = LoopState()
    rps = policy_body(target=10, hi=8, kpa={"metric": "rps", "tickSeconds": 1})
    metrics = {"serve": RoleMetrics(concurrency=3.0, request_rate=55.0)}
    tick = run(state, 100.0, None, replicas=1, policy=rps, metrics=metrics)
    assert tick.scale == {"serve": 6}  # ceil(55 requests/s / 10 per replica); 3 in flight
    assert tick.decision is not None
    assert tick.decision.roles["serve"].concurrency_limit == 100  # containerConcurrency
    assert tick.events[0][2].startswith("serve: 1 -> 6 replicas (55 requests/s, target 10/replica")


@pytest.mark.parametrize(
    ("policy_max", "role_max", "expected"), [(4, None, 4), (3, None, 3), (8, 2, 2), (8, 6, 6)]
)
def test_scale_up_stays_within_both_bounds(
    policy_max: int, role_max: int | None, expected: int
) -> None:
    state = LoopState()
    tick = run(
        state,
        0.0,
        500.0,
        replicas=1,
        policy=policy_body(hi=policy_max),
        limits=RoleLimits(max_replicas=role_max),
    )
    assert tick.scale == {"serve": expected}


def test_idle_stays_at_the_minimum_and_writes_nothing() -> None:
    state = LoopState()
    tick = run(state, 0.0, 0.0, replicas=2, policy=policy_body(lo=2))
    assert tick.scale == {}
    assert tick.decision is not None and tick.decision.desired == {"serve": 2}
    assert not tick.events


def test_replicas_below_the_minimum_are_raised() -> None:
    state = LoopState()
    tick = run(state, 0.0, 0.0, replicas=1, policy=policy_body(lo=3))
    assert tick.scale == {"serve": 3}


def test_scale_down_waits_out_panic_then_halves_per_tick() -> None:
    state = LoopState()
    replicas = 1
    history = []
    now = 0.0
    for second in range(60):
        now = float(second)
        load = 40.0 if second < 10 else 0.0
        tick = run(state, now, load, replicas=replicas)
        replicas = tick.scale.get("serve", replicas)
        history.append(replicas)
    assert max(history) == 4 and history[0] == 4
    # Knative: no scale-down in panic, which lasts a stable window after the last overload.
    first_down = next(i for i, n in enumerate(history) if n < 4)
    assert first_down > 10  # panic entered at 0 s, with a 10 s stable window
    # Then at most halving per decision (maxScaleDownRate 2), and never below the minimum.
    for a, b in itertools.pairwise(history):
        assert b >= a // 2
    assert history[-1] == 1 and min(history) == 1


def test_decisions_wait_for_the_tick_and_samples_for_the_sample_period() -> None:
    state = LoopState()
    policy = policy_body(kpa={"tickSeconds": 2, "stableWindowSeconds": 10})
    assert run(state, 10.0, 35.0, replicas=1, policy=policy).decision is not None
    assert state.sample_due(10.5) is False and state.due(10.5) is False
    assert run(state, 11.0, 35.0, replicas=4, policy=policy).decision is None
    assert state.due(12.0)
    assert run(state, 12.0, 35.0, replicas=4, policy=policy).decision is not None


def test_a_changed_policy_rebuilds_the_autoscaler() -> None:
    state = LoopState()
    run(state, 0.0, 35.0, replicas=1)
    first = state.autoscaler
    run(state, 1.0, 35.0, replicas=4)
    assert state.autoscaler is first
    tick = run(state, 2.0, 35.0, replicas=4, policy=policy_body(target=5, hi=10, generation=2))
    assert state.autoscaler is not first
    assert tick.scale == {"serve": 7}  # ceil(35 / 5)


def test_no_series_for_a_role_holds_its_replicas_and_warns_once() -> None:
    state = LoopState()
    first = run(state, 0.0, None, replicas=3)
    assert first.scale == {}
    assert [r for _, r, _ in first.events] == ["NoMetrics"]
    assert "model_service='chat'" in first.events[0][2]
    second = run(state, 1.0, None, replicas=3)
    assert second.scale == {} and second.events == [] and second.warnings
    back = run(state, 2.0, 5.0, replicas=3)
    assert ("Normal", "AutoscalingResumed") in [(k, r) for k, r, _ in back.events]


def test_metrics_errors_are_reported_once_and_nothing_scales() -> None:
    state = LoopState()
    error = MetricsError(
        "Prometheus at http://prom:9090 is unreachable: refused",
        obj="AutoscalingPolicy ns/pol",
        field="spec.metrics.prometheus.url",
    )
    tick = run(state, 0.0, None, replicas=2, metrics=error)
    assert tick.scale == {}
    ((kind, reason, message),) = tick.events
    assert (kind, reason) == ("Warning", "MetricsUnavailable")
    assert message == (
        "ModelService ns/chat: AutoscalingPolicy ns/pol, field spec.metrics.prometheus.url: "
        "Prometheus at http://prom:9090 is unreachable: refused"
    )
    assert run(state, 1.0, None, replicas=2, metrics=error).events == []


@settings(max_examples=60, deadline=None)
@given(
    samples=hs.lists(
        hs.tuples(
            hs.sampled_from(["concurrency", "request_rate", "ttft", "tpot"]),
            hs.sampled_from(["serve", "prefill", ""]),
            hs.sampled_from(["0.1", "1", "+Inf", "x", None]),
            hs.floats(allow_nan=True, allow_infinity=True),
        ),
        max_size=12,
    ),
    ticks=hs.integers(min_value=1, max_value=25),
    learned=hs.booleans(),
)
# An engine gauge at +Inf crashed the tick in the KPA's ceil (before 6ce97b5).
@example(samples=[("concurrency", "serve", None, math.inf)], ticks=1, learned=False)
# Two finite gauges whose sum is not (found by make fuzz on 2026-12-05).
@example(samples=[("concurrency", "serve", None, 9e307)] * 2, ticks=1, learned=False)
# Finite rates and bucket rates whose products are not (found by make fuzz on 2026-12-07).
@example(
    samples=[
        ("concurrency", "serve", "0.1", 0.0),
        ("request_rate", "serve", "0.1", 1.3407807929942597e154),
        ("ttft", "serve", "0.1", 1.0),
        ("tpot", "serve", "0.1", 1.3407807929942597e154),
    ],
    ticks=1,
    learned=False,
)
@example(
    samples=[
        ("concurrency", "serve", "0.1", 0.0),
        ("request_rate", "serve", "0.1", 2.0),
        ("ttft", "serve", "0.1", 8.98846567431158e307),
        ("tpot", "serve", "0.1", 1.0),
    ],
    ticks=1,
    learned=False,
)
def test_any_prometheus_answer_is_a_sample_or_an_error_never_a_crash(
    samples: list[tuple[str, str, str | None, float]], ticks: int, learned: bool
) -> None:
    """Whatever values Prometheus answers (NaN, infinities, huge, negative), a tick either
    reads them or reports a MetricsError; it never raises."""
    answers: dict[str, list[dict[str, Any]]] = {}
    for what, role, le, value in samples:
        labels = {"role": role, **({"le": le} if le is not None else {})}
        answers.setdefault(what, []).append({"metric": labels, "value": [0, str(value)]})
    try:
        parsed = {
            what: parse_vector({"status": "success", "data": {"resultType": "vector",
                                                             "result": series}}, what)
            for what, series in answers.items()
        }  # fmt: skip
        metrics: Any = role_metrics(("serve",), parsed)
    except MetricsError as exc:
        metrics = exc
    state = LoopState()
    policy = learned_policy_body() if learned else policy_body()
    for t in range(ticks):  # the learned policy decides every 10 s
        run(state, float(t), None, replicas=2, metrics=metrics, policy=policy)


def test_failed_metrics_reads_back_off_until_one_succeeds() -> None:
    """After a failure the next read waits sampleSeconds (1 here), then twice as long after each
    further failure, at most METRICS_RETRY_MAX_SECONDS; nothing is due in between (no reads,
    counts held); one good read restores the normal rhythm."""
    state = LoopState()
    error = MetricsError("Prometheus at http://prom:9090 is unreachable: refused")
    now, waits = 0.0, []
    for _ in range(6):
        assert state.due(now) and state.sample_due(now)
        run(state, now, None, replicas=2, metrics=error)
        retry = state.metrics_retry_at
        assert (
            retry is not None and not state.due(retry - 0.5) and not state.sample_due(retry - 0.5)
        )
        waits.append(retry - now)
        now = retry
    assert waits == [1, 2, 4, 8, 16, 30]
    assert run(state, now, 35.0, replicas=2).decision is not None
    assert state.metrics_retry_at is None and state.metrics_failures == 0
    assert not state.due(now + 0.5) and state.due(now + 1)  # sampleSeconds, tickSeconds 1


def test_missing_and_invalid_policies_are_warnings_naming_the_field() -> None:
    state = LoopState()
    tick = step(
        state,
        0.0,
        model_service="chat",
        policy_body=None,
        policy_name="gone",
        namespace="ns",
        roles=("serve",),
        limits={},
        deployments={"serve": RoleState(1, 1)},
        metrics=None,
    )
    assert tick.scale == {} and tick.events[0][1] == "AutoscalingPolicyNotFound"
    assert "spec.autoscaling.policyRef.name" in tick.events[0][2] and "ns/gone" in tick.events[0][2]
    assert tick.status is None and state.ready is not None  # no status; not ready all the same
    assert state.ready[:2] == (False, "AutoscalingPolicyNotFound")
    bad = policy_body()
    bad["spec"]["roles"]["serve"]["minReplicas"] = 9  # > maxReplicas 4
    tick = run(LoopState(), 0.0, 35.0, replicas=1, policy=bad)
    assert tick.scale == {}
    assert tick.events[0][1] == "InvalidAutoscalingPolicy"
    assert "spec.roles.serve.minReplicas" in tick.events[0][2]


def test_status_is_rewritten_only_on_change_or_after_the_refresh_period() -> None:
    state = LoopState()
    assert run(state, 0.0, 5.0, replicas=1).status is not None
    assert run(state, 1.0, 5.0, replicas=1).status is None  # same decision
    assert run(state, 1.0 + loop.STATUS_REFRESH_SECONDS, 5.0, replicas=1).status is not None
    assert run(state, 32.0, 35.0, replicas=1).status is not None  # a new decision


def test_latency_counts_come_from_the_histogram_buckets() -> None:
    ttft = histogram({0.5: 6.0, 1.0: 8.0, 2.0: 10.0, float("inf"): 10.0})
    tpot = histogram({0.05: 10.0, 0.1: 10.0})
    metrics = RoleMetrics(concurrency=4.0, request_rate=10.0, ttft=ttft, tpot=tpot)
    obs = observation(metrics, replicas=2, ready_replicas=2, seconds=2.0, slo=SLO(1.0, 0.1))
    assert obs.completed == 20 and obs.ttft_ok == 16 and obs.tpot_ok == 20
    assert obs.ttft_quantiles[0.5] == pytest.approx(5 / 6 * 0.5)


# --- the operator's tick, against a fake API -------------------------------------------------------


class FakeScaleApi:
    """The loop's API. Its Deployment reads are those of an index (a watch): after a write they
    show the new count unless ``index_lags``, until :meth:`catch_up`."""

    def __init__(self, policy: dict[str, Any] | None, replicas: int) -> None:
        self.policy = policy
        self.replicas = replicas
        self.generation = 1
        self.indexed = (self.generation, replicas)  # what the index shows: (generation, count)
        self.index_lags = False
        self.scaled: list[tuple[str, int]] = []
        self.statuses: list[dict[str, Any]] = []  # merge patches of the policy's status
        self.json_patches: list[list[dict[str, Any]]] = []  # JSON patches of it
        self.config_maps: dict[str, dict[str, Any]] = {}
        self.reads: list[str] = []
        self.save_error: Exception | None = None
        self.autoscalers: dict[str, list[str]] = {}  # Deployment -> HPAs scaling it
        self.policy_index: dict[str, Any] | None = None

    def get_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        # The index (a watch): ``policy_index`` while it lags the policy's writes.
        return copy.deepcopy(self.policy if self.policy_index is None else self.policy_index)

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(name)
        return copy.deepcopy(self.config_maps.get(name))

    def save_config_map(self, config_map: dict[str, Any]) -> None:
        if self.save_error is not None:
            raise self.save_error
        self.config_maps[config_map["metadata"]["name"]] = copy.deepcopy(config_map)

    def update_config_map(self, config_map: dict[str, Any]) -> None:
        if self.save_error is not None:
            raise self.save_error
        name = config_map["metadata"]["name"]
        if name not in self.config_maps:
            raise ApiError(404, f'configmaps "{name}" not found')
        self.config_maps[name]["data"] = copy.deepcopy(config_map["data"])

    def role_deployments(self, ms: Any) -> dict[str, dict[str, Any]]:
        generation, replicas = self.indexed
        return {
            "serve": {
                "metadata": {"generation": generation},
                "spec": {"replicas": replicas},
                "status": {"readyReplicas": replicas},
            }
        }

    def deployment_autoscalers(self, namespace: str, deployment: str) -> list[str]:
        return self.autoscalers.get(deployment, [])

    def scale(self, ms: Any, role: str, replicas: int) -> int:
        self.scaled.append((ms.object_name(role), replicas))
        self.set_replicas(replicas)
        return self.generation

    def set_replicas(self, replicas: int) -> None:
        """A write of the count (the loop's, or anybody's)."""
        self.replicas = replicas
        self.generation += 1
        if not self.index_lags:
            self.catch_up()

    def catch_up(self) -> None:
        self.indexed = (self.generation, self.replicas)

    def read_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"policy {name}")
        return copy.deepcopy(self.policy)

    def patch_policy_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        """A merge patch, refused (409) when ``resource_version`` is not the policy's."""
        if self.policy is None:
            raise ApiError(404, f'autoscalingpolicies "{name}" not found')
        meta = self.policy["metadata"]
        if resource_version is not None and resource_version != meta.get("resourceVersion"):
            raise ApiError(409, "the object has been modified")
        self.statuses.append(status)
        self.policy["status"] = merge_patch(self.policy.get("status"), status)
        self.written()
        return copy.deepcopy(self.policy)

    def json_patch_policy_status(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """A JSON patch, refused (422, as the API server does) when one of its tests fails."""
        if self.policy is None:
            raise ApiError(404, f'autoscalingpolicies "{name}" not found')
        try:
            patched = jsonpatch.apply_patch({"status": self.policy.get("status")}, ops)
        except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPointerException) as exc:
            raise ApiError(422, str(exc)) from exc
        self.json_patches.append(ops)
        self.policy["status"] = patched["status"]
        self.written()
        return copy.deepcopy(self.policy)

    def written(self) -> None:
        meta = (self.policy or {})["metadata"]
        if "resourceVersion" in meta:
            meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)


def model_service_body() -> dict[str, Any]:
    return {
        "apiVersion": "dunnage.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "chat", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {
            "model": {"name": "m", "uri": "hf://org/model"},
            "engine": {"image": "vllm/vllm-openai:v0.11.0"},
            "resources": {"gpus": 1},
            "roles": {"serve": {"replicas": 1, "maxReplicas": 6}},
            "autoscaling": {"policyRef": {"name": "pol"}},
        },
    }


@pytest.fixture
def steady_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every role's engines read 35 requests in flight."""
    monkeypatch.setattr(
        autoscaler, "sample", lambda spec, ms, idle=(): {"serve": RoleMetrics(concurrency=35.0)}
    )


@pytest.fixture
def runtime() -> Any:
    handlers.install(handlers.Runtime(api=None))  # type: ignore[arg-type]  # only its locks
    yield
    handlers._runtime = None


def test_operator_tick_writes_replicas_and_status(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = iter([35.0, 35.0, 500.0])
    monkeypatch.setattr(
        autoscaler,
        "sample",
        lambda policy, ms, idle=(): {"serve": RoleMetrics(concurrency=next(loads))},
    )
    api = FakeScaleApi(policy_body(hi=5), replicas=1)
    state = LoopState()
    tick = autoscaler.run_tick(api, state, model_service_body(), 0.0)
    assert tick is not None and api.scaled == [("chat-serve", 4)]
    assert api.statuses[-1]["lastDecisions"][-1]["desiredReplicas"] == 4
    assert autoscaler.run_tick(api, state, model_service_body(), 0.5) is None  # not due
    autoscaler.run_tick(api, state, model_service_body(), 1.0)
    assert api.scaled == [("chat-serve", 4)]  # unchanged load: no write
    autoscaler.run_tick(api, state, model_service_body(), 2.0)
    assert api.scaled[-1] == ("chat-serve", 5)  # policy max 5 (the role allows 6)
    # History accumulates in the policy's status across ticks.
    assert [d["desiredReplicas"] for d in api.policy["status"]["lastDecisions"]] == [4, 5]  # type: ignore[index]


def test_a_tick_parses_the_policy_once(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from dunnage.autoscaling import spec as policy_spec

    calls: list[str] = []
    parse = policy_spec.parse

    def counting(body: Any) -> Any:
        calls.append(body["metadata"]["name"])
        return parse(body)

    monkeypatch.setattr(autoscaler, "parse_policy", counting)
    monkeypatch.setattr(loop.policy_spec, "parse", counting)
    monkeypatch.setattr(
        autoscaler, "sample", lambda spec, ms, idle=(): {"serve": RoleMetrics(concurrency=35.0)}
    )
    api = FakeScaleApi(policy_body(hi=5), replicas=1)
    state = LoopState()
    for now in (0.0, 1.0, 2.0):
        assert autoscaler.run_tick(api, state, model_service_body(), now) is not None
    assert calls == ["pol"] * 3


def test_an_edit_of_the_policy_ends_the_wait_after_failed_metric_reads(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Prometheus URL corrected in the policy is read at the next tick, not after the
    backoff of the failed reads (up to METRICS_RETRY_MAX_SECONDS); an unchanged policy keeps
    the backoff."""
    read: list[tuple[float, str | None]] = []
    now = [0.0]

    def sample(spec: Any, ms: Any, idle: Any = ()) -> Any:
        read.append((now[0], spec.prometheus_url))
        if spec.prometheus_url == "http://wrong:9090":
            return MetricsError("Prometheus at http://wrong:9090 is unreachable: refused")
        return {"serve": RoleMetrics(concurrency=35.0)}

    monkeypatch.setattr(autoscaler, "sample", sample)
    policy = policy_body(hi=5, metrics={"prometheus": {"url": "http://wrong:9090"}})
    policy["metadata"]["uid"] = "p1"
    api = FakeScaleApi(policy, replicas=1)
    state = LoopState()
    for t in range(8):  # failures at 0, 2, 6 (sampleSeconds 2, then doubling)
        now[0] = float(t)
        autoscaler.run_tick(api, state, model_service_body(), now[0])
    assert read == [
        (0.0, "http://wrong:9090"),
        (2.0, "http://wrong:9090"),
        (6.0, "http://wrong:9090"),
    ]
    assert state.metrics_retry_at == 14.0
    policy["spec"]["metrics"]["prometheus"]["url"] = "http://prom:9090"
    policy["metadata"]["generation"] += 1
    now[0] = 8.0
    tick = autoscaler.run_tick(api, state, model_service_body(), now[0])
    assert read[-1] == (8.0, "http://prom:9090")
    assert tick is not None and state.metrics_retry_at is None and state.metrics_failures == 0
    assert state.ready is not None and state.ready[0]


def test_a_tick_decides_from_its_own_write_while_the_index_has_not_caught_up(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = [35.0]
    monkeypatch.setattr(
        autoscaler,
        "sample",
        lambda policy, ms, idle=(): {"serve": RoleMetrics(concurrency=load[0])},
    )
    api = FakeScaleApi(policy_body(hi=5), replicas=1)
    api.index_lags = True
    state = LoopState()
    first = autoscaler.run_tick(api, state, model_service_body(), 0.0)
    assert first is not None and api.scaled == [("chat-serve", 4)]
    assert api.indexed == (1, 1)  # the index still shows 1 replica
    # The same load a second later: 4 is already written, so nothing is, and no second Event.
    again = autoscaler.run_tick(api, state, model_service_body(), 1.0)
    assert again is not None and again.decision is not None
    assert api.scaled == [("chat-serve", 4)]
    assert [e for e in again.events if e[1] == "Scaled"] == []
    # The index catches up; then somebody else scales to 2 (a newer generation): that count
    # is the one the loop starts from.
    api.catch_up()
    autoscaler.run_tick(api, state, model_service_body(), 2.0)
    assert state.written == {}
    api.index_lags = False
    api.set_replicas(2)
    tick = autoscaler.run_tick(api, state, model_service_body(), 3.0)
    assert tick is not None and api.scaled[-1] == ("chat-serve", 4)
    assert any(m.startswith("serve: 2 -> 4 replicas") for _, r, m in tick.events if r == "Scaled")


def test_only_the_role_another_autoscaler_scales_is_left_to_it() -> None:
    """Prefill and decode, an HPA on decode: prefill is still scaled, decode is neither
    observed nor scaled nor recorded; one Warning names it, and once it is gone decode is the
    policy's again (an Event) and scaled on its load."""
    roles = {
        "prefill": {"target": 10, "maxReplicas": 8},
        "decode": {"target": 10, "maxReplicas": 8},
    }
    body = policy_body(roles=roles)
    state = LoopState()

    def tick(now: float, contested: dict[str, str], replicas: dict[str, int]) -> loop.Tick:
        return step(
            state,
            now,
            model_service="chat",
            policy_body=body,
            policy_name="pol",
            namespace="ns",
            roles=("prefill", "decode"),
            limits={r: RoleLimits() for r in roles},
            deployments={r: RoleState(n, n) for r, n in replicas.items()},
            metrics={r: RoleMetrics(concurrency=35.0) for r in roles},
            contested=contested,
        )

    hpa = {"decode": "HorizontalPodAutoscaler ns/kv scales Deployment ns/chat-decode"}
    first = tick(100.0, hpa, {"prefill": 1, "decode": 2})
    assert first.scale == {"prefill": 4}
    ((kind, reason, message),) = [e for e in first.events if e[1] != "Scaled"]
    assert (kind, reason) == ("Warning", "ConflictingAutoscaler")
    assert "role decode: HorizontalPodAutoscaler ns/kv" in message
    assert "role decode left to it, the others scaled by the policy, until" in message
    assert first.decision is not None and "decode" in first.decision.roles
    assert first.status is not None
    assert {d["role"] for d in first.status["lastDecisions"]} == {"prefill"}
    ready = first.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("True", "Scaling")
    assert "role decode left to another autoscaler" in ready["message"]
    assert state.observed_roles == {"prefill"}

    again = tick(102.0, hpa, {"prefill": 4, "decode": 5})  # the HPA moved decode
    assert again.scale == {} and again.events == []

    back = tick(104.0, {}, {"prefill": 4, "decode": 5})
    resumed = [m for _, r, m in back.events if r == "AutoscalingResumed"]
    assert resumed == [
        "ModelService ns/chat: role decode scaled by the policy again "
        "(its other autoscaler is gone)"
    ]
    assert back.scale == {"decode": 4}  # ceil(35 / 10), from this tick's sample
    assert state.observed_roles == {"prefill", "decode"}
    assert "left to another autoscaler" not in state.ready[2]  # type: ignore[index]


def test_a_role_another_autoscaler_scales_is_left_to_it(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A HorizontalPodAutoscaler on a role Deployment: no metrics read, nothing scaled, one
    Warning and Ready=False naming it; once it is gone the loop scales again."""
    sampled: list[float] = []

    def load(policy: Any, ms: Any, idle: Any = ()) -> dict[str, RoleMetrics]:
        sampled.append(35.0)
        return {"serve": RoleMetrics(concurrency=35.0)}

    monkeypatch.setattr(autoscaler, "sample", load)
    api = FakeScaleApi(policy_body(hi=5), replicas=1)
    api.autoscalers["chat-serve"] = ["keda-hpa-chat"]
    state = LoopState()
    first = autoscaler.run_tick(api, state, model_service_body(), 0.0)
    assert first is not None and api.scaled == [] and sampled == []
    ((kind, reason, message),) = first.events
    assert (kind, reason) == ("Warning", "ConflictingAutoscaler")
    assert "HorizontalPodAutoscaler ns/keda-hpa-chat scales Deployment ns/chat-serve" in message
    assert "role serve" in message and "spec.autoscaling.policyRef" in message
    ready = api.statuses[-1]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "ConflictingAutoscaler")
    again = autoscaler.run_tick(api, state, model_service_body(), 1.0)
    assert again is not None and again.events == [] and api.scaled == []
    del api.autoscalers["chat-serve"]
    back = autoscaler.run_tick(api, state, model_service_body(), 2.0)
    assert back is not None and api.scaled == [("chat-serve", 4)] and sampled == [35.0]
    assert ("Normal", "AutoscalingResumed") in [(k, r) for k, r, _ in back.events]
    assert api.statuses[-1]["conditions"][0]["status"] == "True"


def test_a_count_set_by_another_tool_is_named_once_per_count() -> None:
    """`kubectl scale` or a GitOps tool's apply of spec.replicas on an autoscaled role: one
    Warning naming the tool per count it sets (not one per decision that takes it back)."""

    def tick(state: LoopState, now: float, replicas: int, set_by: str | None) -> loop.Tick:
        return step(
            state,
            now,
            model_service="chat",
            policy_body=policy_body(),
            policy_name="pol",
            namespace="ns",
            roles=("serve",),
            limits={"serve": RoleLimits()},
            deployments={"serve": RoleState(replicas, replicas, set_by=set_by)},
            metrics={"serve": RoleMetrics(concurrency=35.0)},
        )

    def elsewhere(t: loop.Tick) -> list[str]:
        return [m for _, r, m in t.events if r == "ReplicasSetElsewhere"]

    state = LoopState()
    assert elsewhere(tick(state, 0.0, 4, None)) == []
    (message,) = elsewhere(tick(state, 1.0, 9, "kubectl"))
    assert "role serve: kubectl set its Deployment's spec.replicas to 9" in message
    assert "AutoscalingPolicy ns/pol" in message and "spec.autoscaling.policyRef" in message
    assert elsewhere(tick(state, 2.0, 9, "kubectl")) == []  # the same count: said already
    assert len(elsewhere(tick(state, 3.0, 7, "kubectl"))) == 1  # another count
    assert elsewhere(tick(state, 4.0, 4, None)) == []  # the policy's own write again
    assert len(elsewhere(tick(state, 5.0, 9, "kubectl"))) == 1  # set again: said again


def test_who_set_the_replicas_comes_from_the_managed_fields() -> None:
    def deployment(*owners: tuple[str, bool]) -> dict[str, Any]:
        fields = [
            {
                "manager": manager,
                "fieldsV1": {"f:spec": {"f:replicas": {}} if replicas else {"f:template": {}}},
            }
            for manager, replicas in owners
        ]
        return {"metadata": {"managedFields": fields}, "spec": {"replicas": 3}}

    set_by = autoscaler.replicas_set_by
    assert set_by(deployment(("kubectl", True), ("dunnage-operator", False))) == "kubectl"
    assert set_by(deployment(("argocd-controller", True), ("helm", True))) == (
        "argocd-controller, helm"
    )
    for own in autoscaler.OWN_MANAGERS:  # ours alone or shared with another: not elsewhere
        assert set_by(deployment((own, True))) is None
        assert set_by(deployment((own, True), ("kubectl", True))) is None
    assert set_by(deployment(("kubectl", False))) is None  # nobody owns it (a default)
    assert set_by({"metadata": {}}) is None


def test_horizontal_pod_autoscalers_are_indexed_by_the_deployment_they_scale() -> None:
    def hpa(kind: str, api_version: str, name: str | None = "chat-serve") -> Any:
        ref = {"kind": kind, "apiVersion": api_version, **({"name": name} if name else {})}
        return kopf.Body({"spec": {"scaleTargetRef": ref}})

    index = autoscaler.deployment_autoscalers
    assert index(hpa("Deployment", "apps/v1"), "ns", "h") == {("ns", "chat-serve"): "h"}
    # Anything else maps to nothing ({} so that kopf forgets what an older version indexed).
    assert index(hpa("StatefulSet", "apps/v1"), "ns", "h") == {}
    assert index(hpa("Deployment", "example.com/v1"), "ns", "h") == {}
    assert index(hpa("Deployment", "apps/v1", name=None), "ns", "h") == {}
    assert index(kopf.Body({"spec": {}}), "ns", "h") == {}


def test_operator_tick_without_the_policy_writes_nothing(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_sample(policy: Any, ms: Any, idle: Any = ()) -> Any:
        raise AssertionError("no metrics are read without a policy")

    monkeypatch.setattr(autoscaler, "sample", no_sample)
    api = FakeScaleApi(None, replicas=2)
    tick = autoscaler.run_tick(api, LoopState(), model_service_body(), 0.0)
    assert tick is not None and api.scaled == [] and api.statuses == []
    assert tick.events[0][:2] == ("Warning", "AutoscalingPolicyNotFound")


def test_sample_names_the_policy_when_no_url_is_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(autoscaler.PROMETHEUS_URL_ENV, raising=False)
    body = policy_body()
    del body["spec"]["metrics"]["prometheus"]
    ms = parse_model_service(model_service_body())
    error = autoscaler.sample(parse_policy(body), ms)
    assert isinstance(error, MetricsError)
    assert str(error).startswith(
        "AutoscalingPolicy ns/pol, field spec.metrics.prometheus.url: no Prometheus URL"
    )


# --- the policy's Ready condition ----------------------------------------------------------------


def ready_of(tick: loop.Tick) -> dict[str, Any]:
    assert tick.status is not None
    (cond,) = tick.status["conditions"]
    assert cond["type"] == "Ready"
    return dict(cond)


def test_the_decision_history_keeps_this_loops_last_write_when_the_policy_read_lags() -> None:
    body = policy_body(hi=5)
    state = LoopState()
    first = run(state, 0.0, 35.0, replicas=1, policy=body)
    assert first.status is not None
    # The next decision reads the policy as it was before that status write (a lagging watch).
    second = run(state, 2.0, 500.0, replicas=4, policy=body)
    assert second.status is not None
    assert [d["desiredReplicas"] for d in second.status["lastDecisions"]] == [4, 5]
    # Caught up, and written meanwhile by another ModelService sharing the policy: all kept,
    # none twice.
    other = dict(
        first.status["lastDecisions"][0], modelService="other", time="2000-01-01T00:00:00Z"
    )
    body["status"] = {"lastDecisions": [other, *second.status["lastDecisions"]]}
    third = run(state, 4.0, 35.0, replicas=5, policy=body)
    assert third.status is not None
    history = [(d["modelService"], d["desiredReplicas"]) for d in third.status["lastDecisions"]]
    assert history == [("other", 4), ("chat", 4), ("chat", 5)]


def test_ready_follows_metrics_and_keeps_its_transition_time() -> None:
    state = LoopState()
    body = policy_body()
    # No series yet: not ready, and why.
    cond = ready_of(run(state, 0.0, None, replicas=1, policy=body))
    assert (cond["status"], cond["reason"]) == ("False", "NoMetrics")
    assert cond["message"] == "ModelService ns/chat: no engine series for role serve"
    assert cond["observedGeneration"] == 1
    body["status"] = {"conditions": [cond]}
    # Metrics arrive: ready; the condition is written although the decision did not change.
    tick = run(state, 1.0, 5.0, replicas=1, policy=body)
    cond = ready_of(tick)
    assert (cond["status"], cond["reason"]) == ("True", "Scaling")
    body["status"] = tick.status
    assert run(state, 2.0, 5.0, replicas=1, policy=body).status is None  # nothing new
    # Prometheus goes away: not ready, written once, with the error that names the field.
    error = MetricsError("unreachable", obj="AutoscalingPolicy ns/pol", field=URL_FIELD)
    tick = run(state, 3.0, None, replicas=1, policy=body, metrics=error)
    # Its readiness only, not a decision.
    assert tick.status is not None and sorted(tick.status) == ["conditions", "modelServices"]
    cond = ready_of(tick)
    assert (cond["status"], cond["reason"]) == ("False", "MetricsUnavailable")
    assert "field spec.metrics.prometheus.url" in cond["message"]
    assert run(state, 4.0, None, replicas=1, policy=body, metrics=error).status is None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies the loop's status patches."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


SHARED_START = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # wall clock at monotonic 0


def shared_tick(
    state: LoopState, body: dict[str, Any], name: str, t: float, concurrency: float | None
) -> dict[str, Any]:
    """One step at ``t`` of ModelService ``name`` on the shared policy ``body``, its status
    patch merged into ``body``."""
    metrics = {} if concurrency is None else {"serve": RoleMetrics(concurrency=concurrency)}
    out = step(
        state,
        t,
        model_service=name,
        policy_body=body,
        policy_name="pol",
        namespace="ns",
        roles=("serve",),
        limits={"serve": RoleLimits()},
        deployments={"serve": RoleState(1, 1)},
        metrics=metrics,
        wall_clock=SHARED_START + timedelta(seconds=t),
    )
    assert out.status is not None
    body["status"] = merge_patch(body.get("status"), out.status)
    return dict(body["status"])


def test_a_policy_shared_by_two_model_services_is_ready_when_both_are() -> None:
    """Each ModelService keeps its own entry in status.modelServices (merge patches leave the
    other's alone); Ready and the summary are over both; an entry nobody rewrote for
    STALE_ENTRY_SECONDS (its ModelService gone) is dropped by the next write."""
    body = policy_body()
    states = {"chat": LoopState(), "other": LoopState()}

    def tick(name: str, t: float, concurrency: float | None) -> dict[str, Any]:
        return shared_tick(states[name], body, name, t, concurrency)

    status = tick("chat", 0.0, 35.0)
    assert ready_of_status(status)[:2] == ("True", "Scaling")
    assert status["summary"] == "serve=10"  # alone: as before
    status = tick("other", 1.0, None)  # no engine series yet
    assert set(status["modelServices"]) == {"chat", "other"}
    assert status["modelServices"]["chat"]["ready"] == "True"
    assert ready_of_status(status) == (
        "False",
        "NoMetrics",
        "ModelService ns/other: no engine series for role serve",
    )
    assert status["summary"] == "chat: serve=10; other: serve=10"
    status = tick("other", 2.0, 5.0)
    assert ready_of_status(status) == (
        "True",
        "Scaling",
        "every ModelService of the policy is scaling: chat, other",
    )
    # "other" is deleted: nobody rewrites its entry; chat's refreshes drop it once stale.
    t = 2.0
    while "other" in status["modelServices"]:
        t += loop.STATUS_REFRESH_SECONDS
        assert t <= 2.0 + loop.STALE_ENTRY_SECONDS + 2 * loop.STATUS_REFRESH_SECONDS
        status = tick("chat", t, 35.0)
    assert t - 2.0 > loop.STALE_ENTRY_SECONDS
    assert ready_of_status(status)[:2] == ("True", "Scaling") and status["summary"] == "serve=10"


def test_a_model_service_leaving_a_shared_policy_is_taken_out_of_its_status() -> None:
    """released_status: the entry goes, Ready and the summary speak for those left (one alone
    for itself), and with none left the policy is Unused without per-role figures."""
    body = policy_body()
    shared_tick(LoopState(), body, "chat", 0.0, 35.0)
    shared_tick(LoopState(), body, "other", 1.0, None)
    assert ready_of_status(body["status"])[1] == "NoMetrics"  # other's
    now = SHARED_START + timedelta(seconds=5)
    assert loop.released_status(body, {"gone"}, now) is None  # no entry: nothing to patch

    patch = loop.released_status(body, {"other"}, now)
    assert patch is not None
    body["status"] = merge_patch(body["status"], patch)
    assert set(body["status"]["modelServices"]) == {"chat"}
    chat = body["status"]["modelServices"]["chat"]
    assert ready_of_status(body["status"]) == ("True", "Scaling", chat["message"])
    assert body["status"]["summary"] == "serve=10" and "roles" in body["status"]

    patch = loop.released_status(body, {"chat"}, now)
    assert patch is not None
    body["status"] = merge_patch(body["status"], patch)
    assert body["status"]["modelServices"] == {}
    assert ready_of_status(body["status"]) == (
        "False",
        "Unused",
        "no ModelService refers to this policy",
    )
    assert body["status"]["summary"] == "unused" and "roles" not in body["status"]
    assert body["status"]["lastDecisions"]  # the history stays


def test_several_model_services_leave_a_policy_in_one_patch() -> None:
    """released_status with several names (ModelServices deleted while no operator ran): one
    patch takes out each that has an entry, and those left speak for the policy."""
    body = policy_body()
    for offset, name in enumerate(("a", "b", "c")):
        shared_tick(LoopState(), body, name, float(offset), 35.0 if name == "c" else None)
    now = SHARED_START + timedelta(seconds=5)
    patch = loop.released_status(body, {"a", "b", "never-there"}, now)
    assert patch is not None
    assert patch["modelServices"] == {"a": None, "b": None}
    body["status"] = merge_patch(body["status"], patch)
    assert set(body["status"]["modelServices"]) == {"c"}
    assert ready_of_status(body["status"])[:2] == ("True", "Scaling")


def test_a_detached_model_service_is_released_and_a_late_tick_does_not_bring_it_back(
    runtime: Any, steady_load: None
) -> None:
    api = FakeScaleApi(policy_body(hi=5), replicas=1)
    state = LoopState()
    autoscaler.run_tick(api, state, model_service_body(), 0.0)
    assert state.status_policy == "pol" and "chat" in api.policy["status"]["modelServices"]  # type: ignore[index]
    autoscaler.release_policy(api, state, "ns", "chat", "pol")  # unchanged: nothing to do
    assert len(api.statuses) == 1

    autoscaler.release_policy(api, state, "ns", "chat", None)  # policyRef removed
    assert len(api.statuses) == 2
    assert api.statuses[-1]["modelServices"] == {"chat": None}
    assert ready_of_status(api.statuses[-1])[1] == "Unused"
    # A tick already under way with the old body does not write the entry back ...
    autoscaler.run_tick(api, state, model_service_body(), 1.0)
    assert len(api.statuses) == 2
    autoscaler.release_policy(api, state, "ns", "chat", None)  # released once only
    assert len(api.statuses) == 2
    # ... and once the ModelService refers to the policy again, its ticks write there again.
    autoscaler.release_policy(api, state, "ns", "chat", "pol")
    autoscaler.run_tick(api, state, model_service_body(), 2.0)
    assert len(api.statuses) == 3 and "chat" in api.statuses[-1]["modelServices"]


def test_two_loops_writing_a_shared_policy_at_once_keep_both_decisions(
    runtime: Any, steady_load: None
) -> None:
    """Both loops read the policy before either wrote (the watch lags): the second write is
    made from the policy as the first one's left it (the API server's answer to that write),
    so it keeps the first one's decision and entry instead of replacing them, with no 409. A
    write by someone else since is met with a 409, a read and a write again."""
    policy = policy_body(hi=5)
    policy["metadata"]["resourceVersion"] = "7"
    api = FakeScaleApi(policy, replicas=1)
    api.policy_index = copy.deepcopy(policy)  # what both loops read
    other = model_service_body()
    other["metadata"].update(name="other", uid="u2")
    autoscaler.run_tick(api, LoopState(), model_service_body(), 0.0)
    api.set_replicas(1)  # the fake has one Deployment: other's starts where chat's did
    autoscaler.run_tick(api, LoopState(), other, 0.0)
    assert api.scaled == [("chat-serve", 4), ("other-serve", 4)]
    assert api.reads == [] and len(api.statuses) == 2  # no 409, no read
    status = api.policy["status"]  # type: ignore[index]
    assert set(status["modelServices"]) == {"chat", "other"}
    assert [d["modelService"] for d in status["lastDecisions"]] == ["chat", "other"]
    assert status["summary"] == "chat: serve=10; other: serve=10"

    # Someone else writes the status (the loops' index shows it; the writer's answer not).
    api.policy["status"]["lastDecisions"].insert(0, {"time": "2026-01-01T00:00:00Z"})  # type: ignore[index]
    api.written()
    api.policy_index = copy.deepcopy(api.policy)
    third = model_service_body()
    third["metadata"].update(name="third", uid="u3")
    api.set_replicas(1)
    autoscaler.run_tick(api, LoopState(), third, 0.0)
    assert api.reads == ["policy pol"] and len(api.statuses) == 3  # a 409, a read, a write
    status = api.policy["status"]  # type: ignore[index]
    assert set(status["modelServices"]) == {"chat", "other", "third"}
    assert [d.get("modelService") for d in status["lastDecisions"]] == [
        None,
        "chat",
        "other",
        "third",
    ]


def test_loops_sharing_a_policy_write_their_own_figures_without_conflicts(
    runtime: Any, steady_load: None
) -> None:
    """Once a loop's write changes nothing but its own figures (the per-role ones, its entry's
    time), it is a JSON patch that tests that entry, not the whole policy: two loops writing
    from the same lagging read both land, with no 409 and no read again. One whose entry
    changed since it was read is refused by its test and written whole, as before."""
    policy = policy_body(hi=5)
    policy["metadata"]["resourceVersion"] = "7"
    api = FakeScaleApi(policy, replicas=4)
    other = model_service_body()
    other["metadata"].update(name="other", uid="u2")
    states = {"chat": LoopState(), "other": LoopState()}
    bodies = {"chat": model_service_body(), "other": other}

    def tick_both(t: float) -> None:
        for name in bodies:
            autoscaler.run_tick(api, states[name], bodies[name], t)

    tick_both(0.0)  # their first entries: whole merge patches
    assert len(api.statuses) == 2 and api.reads == []
    for second in range(1, 42):  # the KPA leaves panic (at 11 s), 30 s later a refresh
        api.policy_index = copy.deepcopy(api.policy)  # what both loops read this second
        before = copy.deepcopy(api.policy)
        tick_both(float(second))
        status = api.policy["status"]  # type: ignore[index]
        for name in bodies:  # each entry as it was, but its time
            new, old = status["modelServices"][name], before["status"]["modelServices"][name]
            assert {**new, "lastUpdateTime": None} == {**old, "lastUpdateTime": None}
        assert status["conditions"] == before["status"]["conditions"]
        assert status["summary"] == before["status"]["summary"]
    assert len(api.statuses) == 2 and api.reads == []  # no merge patch, no 409, no read
    paths = [ops[0]["path"] for ops in api.json_patches]
    assert [ops[0]["op"] for ops in api.json_patches] == ["test"] * 4
    assert paths == ["/status/modelServices/chat", "/status/modelServices/other"] * 2

    # chat's entry is changed by someone else; its loop still reads the old one.
    api.policy_index = copy.deepcopy(api.policy)
    api.policy["status"]["modelServices"]["chat"]["message"] = "changed"  # type: ignore[index]
    api.written()
    autoscaler.run_tick(api, states["chat"], bodies["chat"], 41.0 + loop.STATUS_REFRESH_SECONDS)
    assert len(api.json_patches) == 4  # refused by its test...
    assert len(api.statuses) == 3  # ... and written whole, after a 409 and a read
    assert api.reads == ["policy pol"]
    assert api.policy["status"]["modelServices"]["chat"]["message"] != "changed"  # type: ignore[index]


def test_an_entry_left_while_no_operator_ran_is_taken_out_at_the_first_event(
    runtime: Any, steady_load: None
) -> None:
    """departed: the entries of a policy's status whose ModelService, as the operator's index
    has it, no longer uses the policy (what the policy's first event at start takes out)."""
    api = FakeScaleApi(policy_body(hi=5), replicas=1)
    autoscaler.run_tick(api, LoopState(), model_service_body(), 0.0)  # a former operator's
    policy = api.policy
    assert policy is not None and set(policy["status"]["modelServices"]) == {"chat"}

    def indexed(body: dict[str, Any]) -> dict[Any, list[dict[str, Any]]]:
        return {("ns", "chat"): [body], ("elsewhere", "chat"): [model_service_body()]}

    assert autoscaler.departed(policy, indexed(model_service_body())) == set()  # still its policy
    moved = model_service_body()
    moved["spec"]["autoscaling"]["policyRef"]["name"] = "newer"
    assert autoscaler.departed(policy, indexed(moved)) == {"chat"}  # it moved on
    detached = model_service_body()
    del detached["spec"]["autoscaling"]
    assert autoscaler.departed(policy, indexed(detached)) == {"chat"}
    deleting = model_service_body()
    deleting["metadata"]["deletionTimestamp"] = "2026-12-06T05:00:00Z"
    assert autoscaler.departed(policy, indexed(deleting)) == {"chat"}
    assert autoscaler.departed(policy, {}) == {"chat"}  # deleted while no operator ran
    patch = loop.released_status(policy, {"chat"}, None)
    assert patch is not None and patch["modelServices"] == {"chat": None}
    assert ready_of_status(patch)[1] == "Unused"


_NAMES = ("a", "b", "c", "d")


@settings(max_examples=80, deadline=None)
@given(
    others=hs.dictionaries(
        hs.sampled_from(_NAMES[1:]),
        hs.tuples(hs.booleans(), hs.integers(min_value=0, max_value=400)),  # ready, age (s)
        max_size=3,
    ),
    ready=hs.booleans(),
    theirs=hs.lists(hs.integers(min_value=0, max_value=59), max_size=25, unique=True),
    mine=hs.lists(hs.integers(min_value=0, max_value=59), max_size=25, unique=True),
    also_leaving=hs.frozensets(hs.sampled_from(_NAMES[1:])),
)
def test_a_shared_policys_status_patches_keep_their_promises(
    others: dict[str, tuple[bool, int]],
    ready: bool,
    theirs: list[int],
    mine: list[int],
    also_leaving: frozenset[str],
) -> None:
    """For any mix of other ModelServices' entries (ready or not, fresh or stale) and of
    decisions on either side: a write keeps "a"'s entry and every fresh one, drops the stale,
    is Ready exactly when every entry left is; rebased on a newer read it keeps the newest
    MAX_DECISIONS of both sides' decisions; a release takes "a" out the same way, with any
    others leaving at once."""
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

    def stamp(seconds_ago: float) -> str:
        return (now - timedelta(seconds=seconds_ago)).strftime(policy_spec.STAMP)

    def decision(minute: int, who: str) -> dict[str, Any]:
        return {"time": stamp(3600 - 60 * minute), "modelService": who}

    body = policy_body()
    body["status"] = {
        "modelServices": {
            name: {"ready": str(ok), "reason": "Scaling" if ok else "NoMetrics",
                   "message": name, "summary": f"serve={i}",
                   "lastUpdateTime": stamp(age)}
            for i, (name, (ok, age)) in enumerate(sorted(others.items()))
        },
        "lastDecisions": [decision(m, "other") for m in sorted(theirs)][-20:],
    }  # fmt: skip
    fresh = {n for n, (_, age) in others.items() if age <= loop.STALE_ENTRY_SECONDS}
    own = {"summary": "serve=9", "lastDecisions": [decision(m, "a") for m in sorted(mine)][-20:]}
    readiness = (ready, "Scaling" if ready else "MetricsUnavailable", "mine")

    written = merge_patch(body["status"], loop.shared_status(own, body, "a", readiness, now))
    assert set(written["modelServices"]) == fresh | {"a"}
    all_ready = ready and all(others[n][0] for n in fresh)
    assert ready_of_status(written)[0] == str(all_ready)

    # "a"'s next write, unchanged but for the time: a JSON patch of its own entry exactly when
    # no other entry went stale meanwhile, with the same result as the merge patch.
    later = now + timedelta(seconds=loop.STATUS_REFRESH_SECONDS)
    after = {**body, "status": written}
    again = loop.shared_status(own, after, "a", readiness, later)
    ops = loop.own_figures_patch(after, "a", again)
    still_fresh = {
        n for n in fresh if others[n][1] + loop.STATUS_REFRESH_SECONDS <= loop.STALE_ENTRY_SECONDS
    }
    assert (ops is not None) == (still_fresh == fresh)
    if ops is not None:
        assert jsonpatch.apply_patch(after, ops)["status"] == merge_patch(written, again)
    changed = loop.shared_status(own, after, "a", (not ready, "Other", "x"), later)
    assert loop.own_figures_patch(after, "a", changed) is None  # readiness is everybody's

    stale_read = policy_body()  # "a" computed its patch before the others wrote anything
    patch = loop.shared_status(own, stale_read, "a", readiness, now)
    rebased = merge_patch(body["status"], loop.rebase_status(patch, body, "a", now))
    assert set(rebased["modelServices"]) == fresh | {"a"}
    both = sorted(
        [decision(m, "other") for m in sorted(theirs)][-20:] + own["lastDecisions"],
        key=lambda d: (d["time"], d["modelService"]),  # the same minute: "a" first
    )
    assert rebased["lastDecisions"] == both[-policy_spec.MAX_DECISIONS :]
    # Written, it stays: "a"'s decisions cut off the full list do not come back in its next
    # write (which would change what every loop compares, and conflict on and on).
    shown = loop.merge_decisions({"status": rebased}, own["lastDecisions"])
    assert shown[-policy_spec.MAX_DECISIONS :] == rebased["lastDecisions"]
    assert ready_of_status(rebased)[0] == str(all_ready)

    released = loop.released_status({**body, "status": written}, {"a"} | also_leaving, now)
    assert released is not None
    left = merge_patch(written, released)
    staying = fresh - also_leaving
    assert set(left["modelServices"]) == staying
    if staying:
        assert ready_of_status(left)[0] == str(all(others[n][0] for n in staying))
    else:
        assert ready_of_status(left)[:2] == ("False", "Unused") and "roles" not in left


def ready_of_status(status: Mapping[str, Any]) -> tuple[str, str, str]:
    (cond,) = status["conditions"]
    return cond["status"], cond["reason"], cond["message"]


def test_an_unchanged_ready_condition_keeps_its_last_transition_time() -> None:
    body = policy_body()
    old = {
        "type": "Ready",
        "status": "True",
        "reason": "Scaling",
        "message": "m",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    body["status"] = {"conditions": [old]}
    cond = ready_of(run(LoopState(), 0.0, 5.0, replicas=1, policy=body))
    assert cond["status"] == "True" and cond["lastTransitionTime"] == "2026-01-01T00:00:00Z"


def test_an_invalid_policy_is_not_ready_and_names_the_field() -> None:
    bad = policy_body()
    bad["spec"]["roles"]["serve"]["minReplicas"] = 9  # > maxReplicas 4
    cond = ready_of(run(LoopState(), 0.0, 35.0, replicas=1, policy=bad))
    assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec")
    assert "AutoscalingPolicy ns/pol" in cond["message"]
    assert "spec.roles.serve.minReplicas" in cond["message"]


def test_operator_tick_reports_a_missing_initial_policy_in_the_status(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(autoscaler, "sample", lambda policy, ms, idle=(): {})
    body = policy_body(kind="learned", learning={"initialPolicy": {"configMapName": "gone"}})
    del body["spec"]["roles"]["serve"]["target"]
    api = FakeScaleApi(body, replicas=2)
    state = LoopState()
    tick = autoscaler.run_tick(api, state, model_service_body(), 0.0)
    assert tick is not None and api.scaled == []
    (status,) = api.statuses
    (cond,) = status["conditions"]
    assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec")
    assert "ConfigMap ns/gone not found" in cond["message"]
    assert "spec.learning.initialPolicy" in cond["message"]
    autoscaler.run_tick(api, state, model_service_body(), 1.0)
    assert len(api.statuses) == 1  # the same problem is not written again
    # Looked for again every INITIAL_POLICY_RETRY_SECONDS, not every tick.
    assert api.reads.count("gone") == 1
    autoscaler.run_tick(api, state, model_service_body(), autoscaler.INITIAL_POLICY_RETRY_SECONDS)
    assert api.reads.count("gone") == 2


def test_a_role_at_zero_replicas_is_not_missing_metrics_and_its_minimum_brings_it_back() -> None:
    body = policy_body(lo=0, kpa={"scaleToZero": True, "tickSeconds": 1})
    state = LoopState()
    tick = run(state, 0.0, None, replicas=0, policy=body)
    assert tick.scale == {} and tick.events == []  # silence from no engines is no problem
    assert ready_of(tick)["status"] == "True"
    raised = policy_body(lo=1, kpa={"scaleToZero": True, "tickSeconds": 1})
    assert run(LoopState(), 0.0, None, replicas=0, policy=raised).scale == {"serve": 1}


def test_demand_brings_a_role_back_from_zero_and_holds_it_while_it_starts() -> None:
    """With an activation query the idle role's samples are the demand: zero demand keeps it at
    zero, demand wakes it, and a role whose replicas are starting is not scaled back to zero
    when the demand is gone before one is ready (Knative's activating revision)."""
    kpa = {"stableWindowSeconds": 10, "panicWindowPercentage": 20, "tickSeconds": 1}
    body = policy_body(lo=0, kpa={**kpa, "scaleToZero": True, "scaleToZeroGracePeriodSeconds": 6})
    state = LoopState()
    for t in range(5):
        assert run(state, float(t), 0.0, replicas=0, policy=body).scale == {}
    woke = run(state, 5.0, 35.0, replicas=0, policy=body)
    assert woke.scale.get("serve", 0) >= 1
    starting = woke.scale["serve"]
    for t in range(6, 20):  # the demand is gone, no replica ready yet
        tick = run(state, float(t), 0.0, replicas=starting, ready=0, policy=body)
        assert tick.scale.get("serve", starting) == starting, t
    # Ready and idle: down to zero once the stable window (10 s) and the grace (6 s) pass.
    replicas = starting
    for t in range(20, 80):
        tick = run(state, float(t), 0.0, replicas=replicas, policy=body)  # all ready
        replicas = tick.scale.get("serve", replicas)
    assert replicas == 0


@pytest.mark.parametrize("timeout", [None, 45])
def test_a_role_that_never_gets_ready_goes_back_to_zero_after_the_activation_timeout(
    timeout: int | None,
) -> None:
    """After spec.kpa.activationTimeoutSeconds (600 s unless set)."""
    kpa = {"stableWindowSeconds": 10, "panicWindowPercentage": 20, "tickSeconds": 1}
    kpa.update({"scaleToZero": True, "scaleToZeroGracePeriodSeconds": 6})
    if timeout is not None:
        kpa["activationTimeoutSeconds"] = timeout
    body = policy_body(lo=0, kpa=kpa)
    state = LoopState()
    replicas = run(state, 0.0, 35.0, replicas=0, policy=body).scale["serve"]
    writes: list[tuple[int, loop.Tick]] = []
    for t in range(1, 700):  # the demand is gone; the pods stay Pending
        tick = run(state, float(t), 0.0, replicas=replicas, ready=0, policy=body)
        if tick.scale:
            writes.append((t, tick))
            replicas = tick.scale["serve"]
    ((t, tick),) = writes  # one write, at the deadline
    assert tick.scale == {"serve": 0}
    assert t == 1 + (timeout or 600)  # counted from the first tick it was waking
    assert [r for _, r, _ in tick.events] == ["ActivationTimeout", "Scaled"]


# --- the learned state across restarts -----------------------------------------------------------


def learned_policy_body(**learning: Any) -> dict[str, Any]:
    """A learned policy without an initial policy: a decision every 10 s, no exploration."""
    body = policy_body(
        kind="learned",
        hi=50,
        learning={"decisionIntervalSeconds": 10, "explorationRate": 0, **learning},
    )
    body["spec"]["roles"]["serve"]["maxTarget"] = 100
    return body


def slow_metrics(monkeypatch: pytest.MonkeyPatch, ttft_ok: bool = True) -> None:
    """Every sample: 35 requests in flight, 10 completing per second, TTFT within or over 1 s."""
    ttft = histogram({0.5: 10.0, float("inf"): 10.0} if ttft_ok else {5.0: 0.0, 10.0: 10.0})
    tpot = histogram({0.05: 10.0, float("inf"): 10.0})
    metrics = RoleMetrics(concurrency=35.0, request_rate=10.0, ttft=ttft, tpot=tpot)
    monkeypatch.setattr(autoscaler, "sample", lambda policy, ms, idle=(): {"serve": metrics})


def play(api: FakeScaleApi, state: LoopState, start: float, seconds: int) -> list[loop.Tick]:
    ticks = []
    for t in range(seconds):
        tick = autoscaler.run_tick(api, state, model_service_body(), start + t)
        if tick is not None:
            ticks.append(tick)
    return ticks


def events(ticks: list[loop.Tick], reason: str) -> list[str]:
    return [m for tick in ticks for _, r, m in tick.events if r == reason]


def test_the_learned_state_is_saved_after_each_learned_move_and_restored_by_a_new_operator(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_metrics(monkeypatch, ttft_ok=False)  # every interval violates: the target falls
    api = FakeScaleApi(learned_policy_body(), replicas=4)
    state = LoopState()
    play(api, state, 0.0, 41)
    name = loop.state_config_map("chat")
    saved = api.config_maps[name]
    assert saved["metadata"]["ownerReferences"][0] | {"uid": "-"} == {
        "apiVersion": "dunnage.io/v1alpha1",
        "kind": "ModelService",
        "name": "chat",
        "uid": "-",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert saved["metadata"]["labels"]["dunnage.io/model-service"] == "chat"
    doc = json.loads(saved["data"]["policy.json"])
    assert doc["online"]["modelService"] == "ns/chat" and doc["online"]["decisions"] == 4
    # The saved file is a policy file too.
    assert LearnedModel.from_dict(doc, "saved").roles == ("serve",)
    running = state.autoscaler
    assert running is not None
    before = running.target("serve")
    assert before < 10  # moved down from its start at 10.1

    # A new operator (empty memory) resumes at the saved target, and says so once.
    restarted = LoopState()
    ticks = play(api, restarted, 100.0, 3)
    assert restarted.autoscaler is not None and restarted.autoscaler.target("serve") == before
    (message,) = events(ticks, "LearnedStateRestored")
    assert message == (
        f"AutoscalingPolicy ns/pol: learned state restored from ConfigMap ns/{name} "
        f"(4 decisions, saved {doc['online']['savedTime']}): serve={before:g}"
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["online"]["savedTime"])
    assert api.reads.count(name) == 2  # read once per operator start, not every tick


def test_a_saved_state_learned_under_another_slo_or_malformed_is_not_taken_over(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_metrics(monkeypatch, ttft_ok=False)
    api = FakeScaleApi(learned_policy_body(), replicas=4)
    play(api, LoopState(), 0.0, 41)
    name = loop.state_config_map("chat")
    saved = copy.deepcopy(api.config_maps[name])

    api.policy["spec"]["slo"]["ttftSeconds"] = 2  # type: ignore[index]
    state = LoopState()
    ticks = play(api, state, 100.0, 1)
    (message,) = events(ticks, "LearnedStateDiscarded")
    assert f"ConfigMap ns/{name} was learned under another initial policy" in message
    assert message.endswith("starting from fresh targets")
    assert state.autoscaler is not None and state.autoscaler.target("serve") == 10.1

    api.policy = learned_policy_body()
    api.config_maps[name] = saved
    api.config_maps[name]["data"]["policy.json"] = '{"online": {"key": "x"'
    ticks = play(api, LoopState(), 200.0, 1)
    ((kind, _, message),) = [e for t in ticks for e in t.events if e[1] == "LearnedStateDiscarded"]
    assert kind == "Warning" and "the learned state is not usable" in message


def test_a_policy_edit_keeps_the_running_learned_state_and_persist_state_false_keeps_nothing(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_metrics(monkeypatch, ttft_ok=False)
    api = FakeScaleApi(learned_policy_body(), replicas=4)
    state = LoopState()
    play(api, state, 0.0, 41)
    assert state.autoscaler is not None
    lowered = state.autoscaler.target("serve")
    api.policy["spec"]["roles"]["serve"]["maxReplicas"] = 40  # type: ignore[index]
    api.policy["metadata"]["generation"] = 2  # type: ignore[index]
    ticks = play(api, state, 41.0, 1)
    assert events(ticks, "LearnedStateKept") == [
        f"AutoscalingPolicy ns/pol: learned targets kept across the policy's edit: "
        f"serve={lowered:g}"
    ]
    assert state.autoscaler.target("serve") == lowered

    off = FakeScaleApi(learned_policy_body(persistState=False), replicas=4)
    off.config_maps = copy.deepcopy(api.config_maps)
    kept = copy.deepcopy(off.config_maps)
    ticks = play(off, LoopState(), 0.0, 41)
    assert off.reads == [] and off.config_maps == kept  # neither read nor written
    assert not events(ticks, "LearnedStateRestored")


def test_deleting_the_saved_state_starts_the_learning_afresh(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state's ConfigMap deleted while the operator runs: the next save does not bring the
    old state back; the policy starts again from its start target, says so once, and saves
    what it learns from then on."""
    slow_metrics(monkeypatch, ttft_ok=False)  # every interval violates: the target falls
    api = FakeScaleApi(learned_policy_body(), replicas=4)
    state = LoopState()
    play(api, state, 0.0, 41)
    name = loop.state_config_map("chat")
    assert state.autoscaler is not None and state.autoscaler.target("serve") < 10
    del api.config_maps[name]  # kubectl delete configmap chat-learned-state
    ticks = play(api, state, 41.0, 10)  # the next decision's save finds it gone
    (message,) = events(ticks, "LearnedStateReset")
    assert message == (
        f"ConfigMap ns/{name} was deleted: the learned targets start afresh from the initial "
        "policy (saved at its next decision)"
    )
    assert name not in api.config_maps
    ticks = play(api, state, 51.0, 1)  # rebuilt: from its start target, not from the ConfigMap
    assert state.autoscaler is not None and state.autoscaler.target("serve") == 10.1
    assert not events(ticks, "LearnedStateRestored")
    play(api, state, 52.0, 12)  # its first decision is saved again
    doc = json.loads(api.config_maps[name]["data"]["policy.json"])
    assert doc["online"]["decisions"] == 1


def test_a_failed_save_is_one_warning_and_scaling_goes_on(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_metrics(monkeypatch, ttft_ok=False)
    api = FakeScaleApi(learned_policy_body(), replicas=4)
    api.save_error = ApiError(403, "configmaps is forbidden")
    ticks = play(api, LoopState(), 0.0, 41)
    (message,) = events(ticks, "LearnedStateNotSaved")
    assert message.startswith(
        f"learned state not saved to ConfigMap {loop.state_config_map('chat')}"
    )
    assert "forbidden" in message
    assert api.scaled  # the role was scaled all the same
    api.save_error = None
    play(api, LoopState(), 100.0, 12)
    assert loop.state_config_map("chat") in api.config_maps


def test_a_learned_policys_initial_policy_is_read_again_only_after_its_recheck_interval(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_metrics(monkeypatch)
    body = learned_policy_body(initialPolicy={"configMapName": "trained"})
    del body["spec"]["roles"]["serve"]["target"]
    api = FakeScaleApi(body, replicas=4)
    text = (REPO / "bench" / "results" / "autoscaling-policy-aggregated.json").read_text()
    api.config_maps["trained"] = {"data": {"policy.json": text}}
    state = LoopState()
    recheck = autoscaler.INITIAL_POLICY_RECHECK_SECONDS
    play(api, state, 0.0, int(recheck))  # a tick a second
    assert api.reads.count("trained") == 1
    model = state.model
    play(api, state, recheck, 1)
    assert api.reads.count("trained") == 2 and state.model is model  # same text: same model
    # The policy names another ConfigMap: read at once.
    api.config_maps["retrained"] = api.config_maps["trained"]
    api.policy["spec"]["learning"]["initialPolicy"]["configMapName"] = "retrained"  # type: ignore[index]
    play(api, state, recheck + 1, 1)
    assert api.reads.count("retrained") == 1


def test_every_event_the_loop_posts_is_in_the_docs_table() -> None:
    """docs/autoscaling.md "Events" lists each reason the loop and the operator's timer post
    on a ModelService, and nothing else."""
    posted = set()
    for path in ("dunnage/autoscaling/loop.py", "dunnage/operator/autoscaler.py"):
        source = (REPO / path).read_text()
        posted |= set(re.findall(r'\(\s*"(?:Warning|Normal)",\s*"([A-Z]\w+)"', source))
        posted |= set(re.findall(r'_warn\(\s*state,\s*tick,\s*"([A-Z]\w+)"', source))
    docs = (REPO / "docs" / "autoscaling.md").read_text()
    table = docs.split("\n### Events\n", 1)[1].split("\n#", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert "Scaled" in posted and "ConflictingAutoscaler" in posted  # the patterns still match
    assert posted == documented


def test_the_readiness_series_follows_the_reason_and_goes_with_the_policy_ref() -> None:
    """dunnage_autoscaler_ready: one series per autoscaled ModelService, replaced when its
    reason changes, dropped when the ModelService is deleted or loses its policyRef."""
    from prometheus_client import generate_latest

    rt = handlers.Runtime(api=None)  # type: ignore[arg-type]  # only its metrics

    def series() -> list[str]:
        text = generate_latest(rt.metrics_registry).decode()
        return [line for line in text.splitlines() if line.startswith("dunnage_autoscaler_ready{")]

    rt.autoscaler_readiness(("ns", "chat"), False, "MetricsUnavailable")
    rt.autoscaler_readiness(("ns", "other"), True, "Scaling")
    assert (
        'dunnage_autoscaler_ready{model_service="chat",namespace="ns",reason="MetricsUnavailable"} 0.0'
        in series()
    )
    rt.autoscaler_readiness(("ns", "chat"), True, "Scaling")
    assert sorted(series()) == [
        'dunnage_autoscaler_ready{model_service="chat",namespace="ns",reason="Scaling"} 1.0',
        'dunnage_autoscaler_ready{model_service="other",namespace="ns",reason="Scaling"} 1.0',
    ]
    handlers.install(rt)
    try:
        unscaled = model_service_body()
        del unscaled["spec"]["autoscaling"]
        handlers.forget_deleted(type="MODIFIED", body=kopf.Body(unscaled))
        assert [s for s in series() if '"chat"' in s] == []
        # A tick in flight when the policyRef went does not bring the series back...
        rt.autoscaler_readiness(("ns", "chat"), False, "MetricsUnavailable")
        assert [s for s in series() if '"chat"' in s] == []
        # ... and once the policyRef is back, the ticks set it again.
        handlers.forget_deleted(type="MODIFIED", body=kopf.Body(model_service_body()))
        rt.autoscaler_readiness(("ns", "chat"), True, "Scaling")
        assert len([s for s in series() if '"chat"' in s]) == 1
        handlers.forget_deleted(type="DELETED", body=kopf.Body(model_service_body()))
        assert len(series()) == 1  # "other" stays
    finally:
        handlers._runtime = None


def _posted_warning_reasons() -> set[str]:
    """The reason of every Warning the loop's source posts: ``("Warning", "Reason", ...)``
    tuples and ``_warn(state, tick, "Reason", ...)`` calls."""
    import ast

    found: set[str] = set()
    for module in (loop, autoscaler):
        tree = ast.parse(Path(module.__file__ or "").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple) and len(node.elts) == 3:
                kind, reason = node.elts[0], node.elts[1]
                if isinstance(kind, ast.Constant) and kind.value == "Warning":
                    if ast.unparse(reason) == "reason":  # _warn's own, its callers are below
                        continue
                    assert isinstance(reason, ast.Constant), ast.unparse(node)
                    found.add(reason.value)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "_warn":
                reason = node.args[2]
                assert isinstance(reason, ast.Constant), ast.unparse(node)
                found.add(reason.value)
    return found


def test_every_warning_reason_is_exported_from_the_start() -> None:
    """The operator's counter of Warnings has a zero for each reason the loop can post (so the
    first one alerts), and the list names no reason the loop never posts."""
    assert _posted_warning_reasons() == set(loop.WARNING_REASONS)
    from prometheus_client import generate_latest

    runtime = handlers.Runtime(api=None)  # type: ignore[arg-type]
    exported = generate_latest(runtime.metrics_registry).decode()
    for reason in loop.WARNING_REASONS:
        assert (
            f'dunnage_autoscaler_events_total{{reason="{reason}",type="Warning"}} 0.0' in exported
        )
    assert 'dunnage_operator_reconciles_total{result="error"} 0.0' in exported
