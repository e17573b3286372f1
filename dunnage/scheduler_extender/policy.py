"""PackingPolicy objects (dunnage.io/v1alpha1, cluster-scoped) -> a frozen :class:`PackingPolicy`.

The checks repeat the CRD's schema and CEL rules (manifests/crds/packingpolicy.yaml), so a
policy read from a file, or from an API server without the CRD's validation, fails the same way:
with an :class:`InputError` naming the object and the field.

The planner reports on each policy it reads: ``status.conditions`` Ready (``Accepted``, or
``InvalidSpec`` with the field at fault) for ``status.observedGeneration``, and the latest
PackingPlan made under it (``status.lastPlan``, ``lastPlanTime``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from dunnage.errors import InputError
from dunnage.operator.status import condition
from dunnage.scheduler_extender.fallback import (
    DEFAULT_BATCH_QUIET_SECONDS,
    DEFAULT_EVICTION_CONCURRENCY,
    DEFAULT_PLAN_HISTORY_LIMIT,
    PlannerSettings,
    now_rfc3339,
)

GROUP, VERSION, KIND, PLURAL = "dunnage.io", "v1alpha1", "PackingPolicy", "packingpolicies"
DEFAULT_NAME = "default"
ACCEPTED, INVALID_SPEC = "Accepted", "InvalidSpec"

log = logging.getLogger(__name__)

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_RESOURCE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_INT32_MIN = -(2**31)
_MAX_TRIGGER_PRIORITY = 1_000_000_000
_MAX_LIMIT = 10_000


@dataclass(frozen=True)
class PackingPolicy:
    name: str = DEFAULT_NAME
    time_budget_seconds: float = 1.0
    max_evictions_per_plan: int | None = None  # None: no limit
    max_moves_per_plan: int | None = None
    namespaces: frozenset[str] = frozenset()  # empty: every namespace
    min_trigger_priority: int | None = None
    dry_run: bool = False
    gpu_resource_names: tuple[str, ...] = ("nvidia.com/gpu",)
    batch_window_seconds: float = 1.0
    batch_quiet_seconds: float = DEFAULT_BATCH_QUIET_SECONDS
    plan_ttl_seconds: float = 60.0
    max_concurrent_evictions: int = DEFAULT_EVICTION_CONCURRENCY
    plan_history_limit: int = DEFAULT_PLAN_HISTORY_LIMIT

    def to_settings(self) -> PlannerSettings:
        """What the fallback planner acts on."""
        return PlannerSettings(
            policy=self.name,
            time_budget_seconds=self.time_budget_seconds,
            max_evictions=self.max_evictions_per_plan,
            max_moves=self.max_moves_per_plan,
            namespaces=self.namespaces,
            min_trigger_priority=self.min_trigger_priority,
            dry_run=self.dry_run,
            batch_window_seconds=self.batch_window_seconds,
            batch_quiet_seconds=self.batch_quiet_seconds,
            plan_ttl_seconds=self.plan_ttl_seconds,
            eviction_concurrency=self.max_concurrent_evictions,
            plan_history_limit=self.plan_history_limit,
            steerable_resources=self.gpu_resource_names,
        )


def _number(
    spec: Mapping[str, Any], key: str, default: float, lo: float, hi: float, *, where: str
) -> float:
    value = spec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"expected a number, got {value!r}", obj=where, field=f"spec.{key}")
    if not lo <= value <= hi:
        raise InputError(
            f"must be between {lo:g} and {hi:g}, got {value:g}", obj=where, field=f"spec.{key}"
        )
    return float(value)


def _integer(spec: Mapping[str, Any], key: str, lo: int, hi: int, *, where: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"expected an integer, got {value!r}", obj=where, field=f"spec.{key}")
    if not lo <= value <= hi:
        raise InputError(
            f"must be between {lo} and {hi}, got {value}", obj=where, field=f"spec.{key}"
        )
    return value


def _strings(
    spec: Mapping[str, Any], key: str, pattern: re.Pattern[str], what: str, *, where: str
) -> list[str] | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise InputError("expected a list of strings", obj=where, field=f"spec.{key}")
    seen: set[str] = set()
    for index, item in enumerate(value):
        field = f"spec.{key}[{index}]"
        if not isinstance(item, str) or not pattern.match(item):
            raise InputError(f"{item!r} is not a valid {what}", obj=where, field=field)
        if item in seen:
            raise InputError(f"duplicate {item!r}", obj=where, field=field)
        seen.add(item)
    return list(value)


def policy_from_object(obj: Any) -> PackingPolicy:
    """Parse a PackingPolicy (API JSON shape); raises InputError naming object and field."""
    if not isinstance(obj, Mapping):
        raise InputError("expected a PackingPolicy object", obj=KIND)
    kind = obj.get("kind")
    if kind is not None and kind != KIND:
        raise InputError(f"expected kind {KIND}, got {kind!r}", obj=KIND, field="kind")
    api_version = obj.get("apiVersion")
    if api_version is not None and api_version != f"{GROUP}/{VERSION}":
        raise InputError(
            f"expected apiVersion {GROUP}/{VERSION}, got {api_version!r}",
            obj=KIND,
            field="apiVersion",
        )
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        raise InputError("missing name", obj=KIND, field="metadata.name")
    where = f"{KIND} {name}"
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise InputError("expected an object", obj=where, field="spec")

    budget = _number(spec, "timeBudgetSeconds", 1.0, 0.1, 60.0, where=where)
    window = _number(spec, "batchWindowSeconds", 1.0, 0.0, 60.0, where=where)
    quiet = _number(spec, "batchQuietSeconds", DEFAULT_BATCH_QUIET_SECONDS, 0.0, 60.0, where=where)
    ttl = _number(spec, "planTTLSeconds", 60.0, 1.0, 3600.0, where=where)
    max_evictions = _integer(spec, "maxEvictionsPerPlan", 0, _MAX_LIMIT, where=where)
    max_moves = _integer(spec, "maxMovesPerPlan", 0, _MAX_LIMIT, where=where)
    concurrency = _integer(spec, "maxConcurrentEvictions", 1, 100, where=where)
    history = _integer(spec, "planHistoryLimit", 0, _MAX_LIMIT, where=where)
    min_priority = _integer(
        spec, "minTriggerPriority", _INT32_MIN, _MAX_TRIGGER_PRIORITY, where=where
    )
    dry_run = spec.get("dryRun", False)
    if dry_run is None:
        dry_run = False
    if not isinstance(dry_run, bool):
        raise InputError(f"expected true or false, got {dry_run!r}", obj=where, field="spec.dryRun")
    namespaces = _strings(spec, "namespaces", _NAMESPACE, "namespace name", where=where) or []
    gpus = _strings(spec, "gpuResourceNames", _RESOURCE, "resource name", where=where)
    if gpus is not None:
        if not gpus:
            raise InputError(
                "must name at least one resource", obj=where, field="spec.gpuResourceNames"
            )
        for index, resource in enumerate(gpus):
            if "/" not in resource or resource.startswith(("kubernetes.io/", "requests.")):
                raise InputError(
                    f"{resource!r} is not an extended resource with a domain prefix, such as "
                    "nvidia.com/gpu",
                    obj=where,
                    field=f"spec.gpuResourceNames[{index}]",
                )
    # the CRD's CEL rules
    if ttl <= budget:
        raise InputError(
            f"planTTLSeconds ({ttl:g}) must be greater than timeBudgetSeconds ({budget:g}): a plan "
            "has to outlive its own solve",
            obj=where,
            field="spec.planTTLSeconds",
        )
    if window >= ttl:
        raise InputError(
            f"batchWindowSeconds ({window:g}) must be less than planTTLSeconds ({ttl:g})",
            obj=where,
            field="spec.batchWindowSeconds",
        )
    return PackingPolicy(
        name=name,
        time_budget_seconds=budget,
        max_evictions_per_plan=max_evictions,
        max_moves_per_plan=max_moves,
        namespaces=frozenset(namespaces),
        min_trigger_priority=min_priority,
        dry_run=dry_run,
        gpu_resource_names=tuple(gpus) if gpus else ("nvidia.com/gpu",),
        batch_window_seconds=window,
        batch_quiet_seconds=quiet,
        plan_ttl_seconds=ttl,
        max_concurrent_evictions=DEFAULT_EVICTION_CONCURRENCY
        if concurrency is None
        else concurrency,
        plan_history_limit=DEFAULT_PLAN_HISTORY_LIMIT if history is None else history,
    )


def policy_status(obj: Mapping[str, Any], problem: InputError | None, now: str) -> dict[str, Any]:
    """The status the planner reports on a PackingPolicy it has read (pure): Ready for the
    generation read, or not, naming the field at fault. Re-deriving an unchanged status yields
    the same object (the transition time moves only when Ready flips)."""
    meta = obj.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    previous = (obj.get("status") or {}).get("conditions") or []
    if problem is None:
        ready = condition(
            "Ready",
            True,
            ACCEPTED,
            "the fallback planner follows this policy",
            generation,
            previous,
            now,
        )
    else:
        message = f"{problem} (the planner keeps the last valid version, or the defaults)"
        ready = condition("Ready", False, INVALID_SPEC, message, generation, previous, now)
    return {"observedGeneration": generation, "conditions": [ready]}


def _report(custom: Any, obj: Mapping[str, Any], problem: InputError | None) -> None:
    """Write :func:`policy_status` unless the object already shows it; a failure is logged (the
    policy is still followed)."""
    from kubernetes.client.exceptions import ApiException

    status = policy_status(obj, problem, now_rfc3339())
    current = obj.get("status") or {}
    if all(current.get(key) == value for key, value in status.items()):
        return
    name = obj["metadata"]["name"]
    try:
        custom.patch_cluster_custom_object_status(GROUP, VERSION, PLURAL, name, {"status": status})
    except ApiException as exc:
        log.warning("cannot update %s %s status: %s", KIND, name, exc.reason)


def load_policy(api_client: Any, name: str = DEFAULT_NAME) -> PackingPolicy:
    """The named PackingPolicy from the cluster (its status updated to say whether it is
    followed); the defaults when it does not exist."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(api_client)
    try:
        obj = cast(dict[str, Any], custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name))
    except ApiException as exc:
        if exc.status == 404:
            return PackingPolicy(name=name)
        raise
    try:
        policy = policy_from_object(obj)
    except InputError as exc:
        _report(custom, obj, exc)
        raise
    _report(custom, obj, None)
    return policy
