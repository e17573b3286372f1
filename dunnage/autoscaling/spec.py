"""The AutoscalingPolicy custom resource: parse it, build the policy, render its status.

Pure functions for an operator loop (dunnage.operator owns the loop and the I/O):

    spec = parse(body)                                   # InputError names the field
    policy = build_policy(spec, ("prefill", "decode"), model=LearnedModel.from_dict(...))
    policy.initial_replicas(role, lambda target: current_replicas[role])
    ... every sample:  policy.observe(now, {role: RoleObservation(...)})
    ... every tick:    decision = policy.decide(now)    # decision.desired, decision.to_dict()
    patch = status_patch(spec, decision, history)        # for the status subresource
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dunnage.autoscaling.kpa import METRICS, KPASettings
from dunnage.autoscaling.learned import (
    LearnedModel,
    LearnedTargets,
    LearningSettings,
    LimitMismatch,
    QAgent,
    fresh_agents,
)
from dunnage.autoscaling.policy import (
    Autoscaler,
    RoleBounds,
    StaticTargets,
    kpa_policy,
)
from dunnage.autoscaling.types import ROLES, SLO, Decision
from dunnage.errors import InputError

POLICIES = ("kpa", "static", "learned")
# The spec.kpa field of each KPASettings field an error can name.
CAMEL = {"container_concurrency": "containerConcurrency", "fixed_limit": "fixedLimit"}
MAX_DECISIONS = 20


@dataclass(frozen=True)
class RoleSpec:
    target: float | None = None
    bounds: RoleBounds = field(default_factory=RoleBounds)


STAMP = "%Y-%m-%dT%H:%M:%SZ"  # the timestamps of the status (RFC 3339, whole seconds, UTC)
# What a role gets for each bound it leaves out, and a role left out of spec.roles for all.
DEFAULT_BOUNDS = RoleBounds(min_replicas=1, max_replicas=10000, min_target=0.01, max_target=10000)


@dataclass(frozen=True)
class PolicySpec:
    name: str
    namespace: str
    generation: int
    policy: str
    slo: SLO
    kpa: KPASettings
    roles: Mapping[str, RoleSpec]
    learning: LearningSettings
    online: bool = True
    # Keep what online learning adds in a ConfigMap per ModelService (see learning_key).
    persist_state: bool = True
    initial_policy: tuple[str, str] | None = None  # (ConfigMap name, key)
    prometheus_url: str | None = None
    pod_selector: str = ""
    activation_query: str | None = None
    # How long a role waking from zero is held without demand (spec.kpa.activationTimeoutSeconds).
    activation_timeout_seconds: float = 600.0
    rate_window_seconds: int = 60
    sample_seconds: float = 2.0


def _num(
    raw: Any, obj: str, path: str, lo: float, hi: float, default: float | None = None
) -> float:
    if raw is None:
        if default is None:
            raise InputError("is required", obj=obj, field=path)
        return default
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise InputError(f"must be a number, got {raw!r}", obj=obj, field=path)
    if not lo <= raw <= hi:
        raise InputError(f"must be between {lo:g} and {hi:g}, got {raw:g}", obj=obj, field=path)
    return float(raw)


def _flag(raw: Any, obj: str, path: str, default: bool) -> bool:
    if raw is None:
        return default
    if not isinstance(raw, bool):
        raise InputError(f"must be true or false, got {raw!r}", obj=obj, field=path)
    return raw


def _map(raw: Any, obj: str, path: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InputError("must be an object", obj=obj, field=path)
    return raw


def parse(body: Mapping[str, Any]) -> PolicySpec:
    """An AutoscalingPolicy object (as the API returns it) -> :class:`PolicySpec`.

    Applies the CRD's defaults and checks its rules again, so objects that skipped the API
    server's validation (tests, files) fail the same way."""
    meta = _map(body.get("metadata"), "AutoscalingPolicy", "metadata")
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "default")
    obj = f"AutoscalingPolicy {namespace}/{name}"
    spec = _map(body.get("spec"), obj, "spec")
    policy = spec.get("policy")
    if policy not in POLICIES:
        raise InputError(f"must be one of {', '.join(POLICIES)}", obj=obj, field="spec.policy")
    slo_raw = _map(spec.get("slo"), obj, "spec.slo")
    slo = SLO(
        ttft=_num(slo_raw.get("ttftSeconds"), obj, "spec.slo.ttftSeconds", 1e-6, 600),
        tpot=_num(slo_raw.get("tpotSeconds"), obj, "spec.slo.tpotSeconds", 1e-6, 10),
        attainment=_num(slo_raw.get("attainment"), obj, "spec.slo.attainment", 0.5, 1, 0.9),
    )
    k = _map(spec.get("kpa"), obj, "spec.kpa")
    p = "spec.kpa."
    cc = _num(k.get("containerConcurrency"), obj, p + "containerConcurrency", 1, 10000, 100)
    stable = _num(k.get("stableWindowSeconds"), obj, p + "stableWindowSeconds", 6, 3600, 60)
    panic_pct = _num(k.get("panicWindowPercentage"), obj, p + "panicWindowPercentage", 1, 100, 10)
    if stable * panic_pct / 100 < 1:
        raise InputError(
            "the panic window must be at least 1 second", obj=obj, field=p + "panicWindowPercentage"
        )
    tick = _num(k.get("tickSeconds"), obj, p + "tickSeconds", 1, 60, 2)
    if tick > stable:
        raise InputError("must not exceed stableWindowSeconds", obj=obj, field=p + "tickSeconds")
    up = _num(k.get("maxScaleUpRate"), obj, p + "maxScaleUpRate", 1, 1e5, 1000)
    down = _num(k.get("maxScaleDownRate"), obj, p + "maxScaleDownRate", 1, 1e5, 2)
    for value, key in ((up, "maxScaleUpRate"), (down, "maxScaleDownRate")):
        if value <= 1:
            raise InputError("must be greater than 1", obj=obj, field=p + key)
    metric = k.get("metric", "concurrency")
    if metric not in METRICS:
        raise InputError(f"must be one of {', '.join(METRICS)}", obj=obj, field=p + "metric")
    kpa = KPASettings(
        metric=metric,
        stable_window=stable,
        panic_window_percentage=panic_pct,
        panic_threshold=_num(
            k.get("panicThresholdPercentage"), obj, p + "panicThresholdPercentage", 110, 1000, 200
        )
        / 100,
        max_scale_up_rate=up,
        max_scale_down_rate=down,
        tick=tick,
        scale_to_zero_grace=_num(
            k.get("scaleToZeroGracePeriodSeconds"),
            obj,
            p + "scaleToZeroGracePeriodSeconds",
            6,
            3600,
            30,
        ),
        enable_scale_to_zero=_flag(k.get("scaleToZero"), obj, p + "scaleToZero", False),
        container_concurrency=int(cc),
        fixed_limit=_flag(k.get("fixedLimit"), obj, p + "fixedLimit", False),
        target_utilization=_num(
            k.get("targetUtilizationPercentage"), obj, p + "targetUtilizationPercentage", 1, 100, 70
        )
        / 100,
    )
    roles_raw = _map(spec.get("roles"), obj, "spec.roles")
    unknown = sorted(set(roles_raw) - set(ROLES))
    if unknown:
        raise InputError(
            f"unknown role {unknown[0]!r} (roles: serve, prefill, decode)",
            obj=obj,
            field="spec.roles",
        )
    if "serve" in roles_raw and ({"prefill", "decode"} & set(roles_raw)):
        raise InputError(
            "roles must be {serve} or a subset of {prefill, decode}, not both kinds",
            obj=obj,
            field="spec.roles",
        )
    roles: dict[str, RoleSpec] = {}
    for role, raw in roles_raw.items():
        r = _map(raw, obj, f"spec.roles.{role}")
        where = f"spec.roles.{role}."
        target = r.get("target")
        target = None if target is None else _num(target, obj, where + "target", 0.01, 10000)
        d = DEFAULT_BOUNDS
        lo_t = _num(r.get("minTarget"), obj, where + "minTarget", 0.01, 10000, d.min_target)
        hi_t = _num(r.get("maxTarget"), obj, where + "maxTarget", 0.01, 10000, d.max_target)
        lo_r = int(_num(r.get("minReplicas"), obj, where + "minReplicas", 0, 10000, d.min_replicas))
        hi_r = int(_num(r.get("maxReplicas"), obj, where + "maxReplicas", 1, 10000, d.max_replicas))
        if lo_r > hi_r:
            raise InputError(
                "minReplicas must be <= maxReplicas", obj=obj, field=where + "minReplicas"
            )
        if lo_t > hi_t:
            raise InputError("minTarget must be <= maxTarget", obj=obj, field=where + "minTarget")
        if target is not None and not lo_t <= target <= hi_t:
            raise InputError(
                "must be within [minTarget, maxTarget]", obj=obj, field=where + "target"
            )
        roles[role] = RoleSpec(target, RoleBounds(lo_r, hi_r, lo_t, hi_t))
    if policy == "static":
        if not roles:
            raise InputError("policy static needs roles with a target", obj=obj, field="spec.roles")
        for role, rs in roles.items():
            if rs.target is None:
                raise InputError(
                    "policy static needs a target", obj=obj, field=f"spec.roles.{role}.target"
                )
    lr = _map(spec.get("learning"), obj, "spec.learning")
    q = "spec.learning."
    trained = LearningSettings()  # the defaults training uses; the CRD's must be the same
    learning = LearningSettings(
        decision_interval=_num(
            lr.get("decisionIntervalSeconds"),
            obj,
            q + "decisionIntervalSeconds",
            10,
            3600,
            trained.decision_interval,
        ),
        exploration_rate=_num(
            lr.get("explorationRate"), obj, q + "explorationRate", 0, 0.5, trained.exploration_rate
        ),
        learning_rate=_num(
            lr.get("learningRate"), obj, q + "learningRate", 0, 1, trained.learning_rate
        ),
        discount=_num(lr.get("discount"), obj, q + "discount", 0, 0.99, trained.discount),
        slo_penalty=_num(lr.get("sloPenalty"), obj, q + "sloPenalty", 0, 1000, trained.slo_penalty),
    )
    initial = None
    init_raw = lr.get("initialPolicy")
    if init_raw is not None:
        if policy != "learned":
            raise InputError("only applies to policy learned", obj=obj, field=q + "initialPolicy")
        ir = _map(init_raw, obj, q + "initialPolicy")
        cm = ir.get("configMapName")
        if not isinstance(cm, str) or not cm:
            raise InputError("is required", obj=obj, field=q + "initialPolicy.configMapName")
        initial = (cm, str(ir.get("key") or "policy.json"))
    metrics = _map(spec.get("metrics"), obj, "spec.metrics")
    source = metrics.get("source", "prometheus")
    if source != "prometheus":
        raise InputError("must be prometheus", obj=obj, field="spec.metrics.source")
    prom = _map(metrics.get("prometheus"), obj, "spec.metrics.prometheus")
    window_field = "spec.metrics.prometheus.rateWindowSeconds"
    rate_window = _num(prom.get("rateWindowSeconds"), obj, window_field, 2, 3600, 60)
    if rate_window != int(rate_window):
        raise InputError(f"must be whole seconds, got {rate_window:g}", obj=obj, field=window_field)
    return PolicySpec(
        name=name,
        namespace=namespace,
        generation=int(meta.get("generation") or 0),
        policy=str(policy),
        slo=slo,
        kpa=kpa,
        roles=roles,
        learning=learning,
        online=_flag(lr.get("online"), obj, q + "online", True),
        persist_state=_flag(lr.get("persistState"), obj, q + "persistState", True),
        initial_policy=initial,
        prometheus_url=prom.get("url"),
        pod_selector=str(prom.get("podSelector") or ""),
        activation_query=_activation_query(prom.get("activationQuery"), obj),
        activation_timeout_seconds=_num(
            k.get("activationTimeoutSeconds"), obj, p + "activationTimeoutSeconds", 1, 86400, 600
        ),
        rate_window_seconds=int(rate_window),
        sample_seconds=_num(
            metrics.get("sampleSeconds"), obj, "spec.metrics.sampleSeconds", 1, 60, 2
        ),
    )


def _activation_query(raw: Any, obj: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise InputError(
            "must be a PromQL expression", obj=obj, field="spec.metrics.prometheus.activationQuery"
        )
    return raw


def build_policy(
    spec: PolicySpec, roles: Sequence[str], model: LearnedModel | None = None, seed: int = 0
) -> Autoscaler:
    """The policy object for a ModelService with ``roles`` under ``spec``.

    ``model`` is the parsed initial policy file (learned only); roles it has no agent for start
    fresh, at their ``target`` when given."""
    bounds = {r: spec.roles[r].bounds for r in roles if r in spec.roles}
    if spec.policy == "kpa":
        return kpa_policy(roles, spec.kpa, bounds)
    if spec.policy == "static":
        missing = [r for r in roles if r not in spec.roles or spec.roles[r].target is None]
        if missing:
            raise InputError(
                f"no static target for role {', '.join(missing)}",
                obj=f"AutoscalingPolicy {spec.namespace}/{spec.name}",
                field="spec.roles",
            )
        targets = {r: float(spec.roles[r].target or 0) for r in roles}
        return Autoscaler(roles, StaticTargets(targets), spec.kpa, bounds, "static")
    if model is not None and model.metric != spec.kpa.metric:
        raise InputError(
            f"the policy file's targets are on the {model.metric} metric; this policy scales on "
            f"{spec.kpa.metric}",
            obj=f"AutoscalingPolicy {spec.namespace}/{spec.name}",
            field="spec.learning.initialPolicy",
        )
    kpa = spec.kpa
    if model is not None:
        try:
            kpa = model.played_under(kpa)
        except LimitMismatch as exc:
            raise InputError(
                f"the policy file: {exc}",
                obj=f"AutoscalingPolicy {spec.namespace}/{spec.name}",
                field="spec.kpa." + CAMEL[exc.setting],
            ) from None
    agents: dict[str, QAgent] = {}
    for role in roles:
        if model is not None and role in model.agents:
            agent = QAgent.from_dict(model.agents[role].to_dict(), role)
            agent.index = model.agents[role].home()
        else:
            rs = spec.roles.get(role)
            start = rs.target if rs else None
            agent = fresh_agents([role], bounds, start=start, metric=spec.kpa.metric)[role]
        agents[role] = agent
    source = LearnedTargets(
        agents, spec.slo, spec.learning, learn=spec.online, online=True, seed=seed
    )
    return Autoscaler(roles, source, kpa, bounds, "learned")


def learning_key(spec: PolicySpec, initial_policy: str | None) -> str:
    """What a saved learned state must have been learned under for a restart to take it over:
    the initial policy file (its text), the metric its targets are in, a fixed per-replica
    limit (under which each target serves differently) and what the reward means (the SLOs and
    the SLO penalty). Edits of anything else (replica bounds, windows,
    exploration) keep the state; a role whose ladder changed (target bounds, without an
    initial policy) starts afresh on its own (:meth:`LearnedTargets.restore`)."""
    digest = None
    if initial_policy is not None:
        digest = hashlib.sha256(initial_policy.encode()).hexdigest()
    doc = {
        "initialPolicy": digest,
        "metric": spec.kpa.metric,
        "slo": spec.slo.to_dict(),
        "sloPenalty": spec.learning.slo_penalty,
    }
    if spec.kpa.fixed_concurrency_limit is not None:
        # Only when fixed, so the keys of states saved before the field existed still match.
        doc["fixedLimit"] = spec.kpa.fixed_concurrency_limit
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def decision_order(decision: Mapping[str, Any]) -> tuple[str, str, str]:
    """The order of a status's ``lastDecisions``: by time, then ModelService and role. Total
    (stamps are to the second; the ModelServices sharing a policy decide in the same ones), so
    every loop cuts a full list at the same place and none brings back one cut off before."""
    return (
        str(decision.get("time", "")),
        str(decision.get("modelService", "")),
        str(decision.get("role", "")),
    )


def status_patch(
    spec: PolicySpec,
    decision: Decision,
    history: Sequence[Mapping[str, Any]] = (),
    *,
    model_service: str = "",
    now: datetime | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(status patch, new history): the decision rendered for the status subresource; the
    history keeps the last :data:`MAX_DECISIONS` changes of desired replicas or learned moves."""
    stamp = (now or datetime.now(UTC)).strftime(STAMP)
    roles: dict[str, Any] = {}
    new = [dict(h) for h in history]
    attainment = None
    for role, rd in decision.roles.items():
        roles[role] = {
            "target": rd.target,
            "concurrencyLimit": rd.concurrency_limit,
            "desiredReplicas": rd.desired,
            "readyReplicas": rd.ready_replicas,
            "stableConcurrency": round(rd.stable_concurrency, 3),
            "panicking": rd.panicking,
            "lastUpdateTime": stamp,
        }
        learning = rd.learning or {}
        if "jointAttainment" in learning:
            attainment = float(learning["jointAttainment"])
        if rd.desired != rd.replicas or learning:
            entry: dict[str, Any] = {
                "time": stamp,
                "modelService": model_service,
                "role": role,
                "replicas": rd.replicas,
                "desiredReplicas": rd.desired,
                "target": rd.target,
                "reason": rd.reason[:1024],
            }
            if learning:
                entry["action"] = str(learning.get("action"))
                entry["reward"] = float(learning.get("reward", 0.0))
                if learning.get("explored"):
                    entry["exploration"] = "probe"
                elif learning.get("probeUndone"):
                    entry["exploration"] = "undone"
            new.append(entry)
    new = sorted(new, key=decision_order)[-MAX_DECISIONS:]
    status: dict[str, Any] = {
        "observedGeneration": spec.generation,
        "summary": " ".join(f"{r}={roles[r]['target']:g}" for r in roles),
        "roles": roles,
        "lastDecisions": new,
    }
    if attainment is not None:
        status["sloAttainment"] = attainment
    return status, new
