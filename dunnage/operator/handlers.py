"""kopf handlers: when to reconcile a ModelService, and when only its status.

- ModelService resumed (operator start), created, or its spec changed: full reconcile
  (:func:`dunnage.operator.reconcile.reconcile`). A problem the user can fix without editing the
  ModelService (a missing PriorityClass, a refused object) is retried by kopf with a delay; an
  invalid spec waits for the next edit.
- An owned Deployment, Service or PodDisruptionBudget deleted, or drifted from what the
  ModelService wants (``kubectl scale`` of a role without an autoscaling policy, ``kubectl
  edit``): full reconcile of its owner, which puts it back.
- An owned Deployment changed otherwise (pods becoming ready, a rollout advancing): the owner's
  status is re-derived from the in-memory index of Deployments; no API read.

Reconciles of one ModelService never overlap (a lock per object: the ModelService handler and
the Deployment handlers run in different kopf workers). None of these needs a finalizer
(children go with their owner through garbage collection); only the autoscaling timer
(:mod:`dunnage.operator.autoscaler`) does, as every kopf timer does, so deleting a ModelService
waits for the operator only while it has a policyRef. kopf keeps its own progress in
``operator.dunnage.io/`` annotations.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dunnage.autoscaling.loop import WARNING_REASONS
from dunnage.errors import InputError
from dunnage.operator import render
from dunnage.operator import status as st
from dunnage.operator.policy_status import PolicyStatusWriter
from dunnage.operator.reconcile import Api, ApiError, Outcome, reconcile, status_only
from dunnage.operator.spec import (
    GROUP,
    MODEL_SERVICE_LABEL,
    PLURAL,
    ROLE_LABEL,
    VERSION,
    ModelService,
    parse,
    policy_ref,
)

log = logging.getLogger(__name__)

REGISTRY = kopf.OperatorRegistry()
ANNOTATION_PREFIX = "operator.dunnage.io"
# kopf's finalizer (on the ModelServices the autoscaling timer runs for), named as ours. Before
# 2026-12-07 it had kopf's default name, which kopf would no longer take off: this process does.
FINALIZER = f"{ANNOTATION_PREFIX}/autoscaling"
KOPF_DEFAULT_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
# Retry delays (seconds) for problems that resolve without a spec change.
RETRY_DELAY = {st.PRIORITY_CLASS_NOT_FOUND: 5.0, st.REJECTED: 15.0, st.APPLY_FAILED: 5.0}
DEFAULT_RETRY_DELAY = 10.0

Key = tuple[str, str]


@dataclass
class Runtime:
    """What the handlers share in one operator process."""

    api: Api
    metrics_registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # The status this process last wrote, by (namespace, name, uid): fresher than the watch.
    last_status: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    # The autoscaling loops' writes of AutoscalingPolicy status, combined per policy.
    policy_status: PolicyStatusWriter = field(default_factory=PolicyStatusWriter)
    _locks: dict[Key, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _ready_labels: dict[Key, tuple[str, str, str]] = field(default_factory=dict)
    # ModelServices whose policyRef was removed: a tick already in flight must not bring their
    # readiness series back (it would stay, and alert, with no timer left to update it).
    _unscaled: set[Key] = field(default_factory=set)
    # kopf's thread pool (its settings.execution.executor), for the async handlers' blocking
    # parts; None: asyncio's default pool (unit tests).
    executor: Executor | None = None

    def __post_init__(self) -> None:
        r = self.metrics_registry
        self.reconciles = Counter(
            "dunnage_operator_reconciles_total",
            "Full ModelService reconciles, by result (ok, or the Degraded reason).",
            ["result"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "dunnage_operator_reconcile_seconds",
            "Wall time of one full ModelService reconcile.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.status_writes = Counter(
            "dunnage_operator_status_updates_total",
            "ModelService status updates from Deployment changes alone.",
            registry=r,
        )
        self.autoscaler_ticks = Histogram(
            "dunnage_autoscaler_tick_seconds",
            "Wall time of one autoscaling tick that had work to do (index reads, Prometheus "
            "queries, writes).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.autoscaler_samples = Counter(
            "dunnage_autoscaler_samples_total",
            "Metric samples the autoscaling loops took (one per ModelService every "
            "sampleSeconds while it keeps its cadence), by result (ok, error).",
            ["result"],
            registry=r,
        )
        for result in ("ok", "error"):
            self.autoscaler_samples.labels(result=result)
        self.policy_status_writes = Counter(
            "dunnage_autoscaler_policy_status_writes_total",
            "Requests writing AutoscalingPolicy status (the autoscaling loops' changes, "
            "combined per policy), by result: written; conflict (409: someone else wrote the "
            "policy since, read again and written once more); refused (422: a JSON patch's "
            "test failed, the whole status written instead); error (anything else).",
            ["result"],
            registry=r,
        )
        for result in ("written", "conflict", "refused", "error"):
            self.policy_status_writes.labels(result=result)
        self.policy_status_changes = Counter(
            "dunnage_autoscaler_policy_status_changes_total",
            "Changes of the autoscaling loops (a ModelService's entry, decisions, a release) "
            "carried by the AutoscalingPolicy status writes that landed; divided by those "
            "writes, how many loops one write served.",
            registry=r,
        )
        self.policy_status.observe = self._observe_policy_status
        self.autoscaler_events = Counter(
            "dunnage_autoscaler_events_total",
            "Events the autoscaling loop posted on ModelServices, by type and reason (Scaled, "
            "MetricsUnavailable, ConflictingAutoscaler, ...).",
            ["type", "reason"],
            registry=r,
        )
        for reason in WARNING_REASONS:  # zeroes from the start, so the first Warning alerts
            self.autoscaler_events.labels(type="Warning", reason=reason)
        for result in ("ok", "error"):
            self.reconciles.labels(result=result)
        self.autoscaler_ready = Gauge(
            "dunnage_autoscaler_ready",
            "1 while a ModelService's autoscaling loop is Ready (metrics read, replicas "
            "decided), else 0; one series per autoscaled ModelService, labelled with the "
            "reason (Scaling, MetricsUnavailable, NoMetrics, ConflictingAutoscaler, ...).",
            ["namespace", "model_service", "reason"],
            registry=r,
        )
        self.leader = Gauge(
            "dunnage_operator_leader",
            "1 while this replica runs the handlers (holds the Lease, or runs without "
            "--leader-elect), else 0: a standby.",
            registry=r,
        )

    def autoscaler_readiness(self, key: Key, ready: bool, reason: str) -> None:
        """Set the ModelService's ``dunnage_autoscaler_ready`` series (the one of its current
        reason: a changed reason replaces the old series)."""
        labels = (*key, reason)
        with self._guard:  # one lock with forget_autoscaler: a series is set or gone, not both
            if key in self._unscaled:
                return
            old = self._ready_labels.get(key)
            if old is not None and old != labels:
                self.autoscaler_ready.remove(*old)
            self._ready_labels[key] = labels
            self.autoscaler_ready.labels(*labels).set(1 if ready else 0)

    def autoscaled(self, key: Key) -> None:
        """The ModelService has a policyRef (again): its timer's ticks set its series."""
        with self._guard:
            self._unscaled.discard(key)

    def forget_autoscaler(self, key: Key, *, deleted: bool = False) -> None:
        """Drop the ModelService's series: it was deleted, or lost its policyRef (then no tick
        sets it until :meth:`autoscaled`)."""
        with self._guard:
            old = self._ready_labels.pop(key, None)
            if deleted:
                self._unscaled.discard(key)
            else:
                self._unscaled.add(key)
            if old is not None:
                self.autoscaler_ready.remove(*old)

    def _observe_policy_status(self, result: str, changes: int) -> None:
        self.policy_status_writes.labels(result=result).inc()
        self.policy_status_changes.inc(changes)

    async def in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in :attr:`executor`, as kopf runs a synchronous handler: in a copy of
        the handler's context (``kopf.event`` and kopf's per-object logging read it), and a
        cancelled handler waits for its thread to end (a tick is never left half-written
        behind a cancelled timer)."""
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        future = asyncio.get_running_loop().run_in_executor(self.executor, call)
        cancelled: asyncio.CancelledError | None = None
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError as exc:
                cancelled = exc
        if cancelled is not None:
            raise cancelled
        return future.result()

    def lock(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


_runtime: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _runtime
    _runtime = runtime


def runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("dunnage.operator.handlers.install() was not called")
    return _runtime


# --- helpers -----------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A kopf body (read-only mapping views) as plain dicts and lists, safe to keep."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _status_key(body: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid")))


def _with_latest_status(rt: Runtime, body: Mapping[str, Any]) -> dict[str, Any]:
    copy = plain(body)
    written = rt.last_status.get(_status_key(body))
    if written is not None:
        copy["status"] = {**(copy.get("status") or {}), **written}
    return dict(copy)


def _post(body: Mapping[str, Any], events: Iterable[tuple[str, str, str]]) -> None:
    for kind, reason, message in events:
        kopf.event(
            kopf.Body(cast(Any, dict(body))), type=kind, reason=reason, message=message[:1024]
        )


def run_reconcile(rt: Runtime, body: Mapping[str, Any]) -> Outcome:
    """One full reconcile under the object's lock; records status, metrics and events."""
    meta = body.get("metadata") or {}
    key = (str(meta.get("namespace")), str(meta.get("name")))
    with rt.lock(key):
        current = _with_latest_status(rt, body)
        started = time.monotonic()
        try:
            outcome = reconcile(rt.api, current)
        except ApiError as exc:  # reading (GET/LIST) or writing the status failed
            rt.reconciles.labels(result="error").inc()
            raise kopf.TemporaryError(str(exc), delay=DEFAULT_RETRY_DELAY) from exc
        rt.reconcile_seconds.observe(time.monotonic() - started)
        rt.reconciles.labels(result=outcome.problem.reason if outcome.problem else "ok").inc()
        rt.last_status[_status_key(body)] = outcome.status
    where = f"{key[0]}/{key[1]}"
    if outcome.problem:
        log.warning("%s: %s: %s", where, outcome.problem.reason, outcome.problem.message)
    for kind, reason, message in outcome.events:
        log.info("%s: %s %s: %s", where, kind, reason, message)
    _post(body, outcome.events)
    return outcome


def _owner(
    namespace: str, labels: Mapping[str, str], ms_index: Mapping[Any, Any]
) -> dict[str, Any] | None:
    name = labels.get(MODEL_SERVICE_LABEL)
    if not name:
        return None
    store = ms_index.get((namespace, name))
    return next(iter(store), None) if store is not None else None


def owned_by(child: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = (owner.get("metadata") or {}).get("uid")
    refs = (child.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def desired_for(ms: ModelService, kind: str, name: str) -> dict[str, Any] | None:
    """What the operator wants for one child, as drift is judged (no replicas when autoscaled)."""
    for obj in render.render(ms, with_replicas=not ms.autoscaled):
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    return None


def needs_reconcile(
    owner: Mapping[str, Any], kind: str, event_type: str | None, child: Any
) -> bool:
    """A child was deleted, is no longer wanted, or drifted from the ModelService's wish."""
    if event_type == "DELETED":
        return True
    try:
        ms = parse(owner)
    except InputError:
        return False
    name = str((child.get("metadata") or {}).get("name"))
    desired = desired_for(ms, kind, name)
    return desired is None or render.drifted(desired, child)


def _fresh_owner(rt: Runtime, owner: Mapping[str, Any]) -> dict[str, Any] | None:
    """The owner as the API server has it now; None if gone or going (no point re-creating)."""
    meta = owner.get("metadata") or {}
    try:
        fresh = rt.api.get_model_service(str(meta.get("namespace")), str(meta.get("name")))
    except ApiError as exc:
        log.warning(
            "cannot read ModelService %s/%s: %s", meta.get("namespace"), meta.get("name"), exc
        )
        return None
    if fresh is None or (fresh.get("metadata") or {}).get("deletionTimestamp"):
        return None
    if (fresh.get("metadata") or {}).get("uid") != meta.get("uid"):
        return None
    return fresh


def _still_drifted(rt: Runtime, owner: Mapping[str, Any], kind: str, child: Any) -> bool:
    meta = child.get("metadata") or {}
    try:
        current = rt.api.get(kind, str(meta.get("namespace")), str(meta.get("name")))
    except ApiError:
        return True
    return current is None or needs_reconcile(owner, kind, None, current)


# --- handlers ----------------------------------------------------------------------------------
# Signatures follow kopf's callback protocols; the indexes arrive as keyword arguments named after
# the index functions.


@kopf.index(GROUP, VERSION, PLURAL, registry=REGISTRY)
def model_services(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Key, Any]:
    return {(str(namespace), name): plain(body)}


@kopf.index(
    "apps", "v1", "deployments", labels={MODEL_SERVICE_LABEL: kopf.PRESENT}, registry=REGISTRY
)
def role_deployments(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[Key, Any]:
    return {(str(namespace), labels[MODEL_SERVICE_LABEL]): plain(body)}


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=REGISTRY)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=REGISTRY)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=REGISTRY)
def reconcile_model_service(body: kopf.Body, **_: Any) -> None:
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    outcome = run_reconcile(runtime(), body)
    if outcome.problem is None:
        return
    message = f"{outcome.problem.reason}: {outcome.problem.message}"
    if outcome.retry:
        raise kopf.TemporaryError(
            message, delay=RETRY_DELAY.get(outcome.problem.reason, DEFAULT_RETRY_DELAY)
        )
    raise kopf.PermanentError(message)


def _child_event(
    kind: str,
    event_type: str | None,
    body: kopf.Body,
    namespace: str,
    labels: kopf.Labels,
    model_services: Mapping[Any, Any],
) -> dict[str, Any] | None:
    """Full reconcile of the owner if the child needs it; returns the owner if it did not."""
    owner = _owner(namespace, labels, model_services)
    if owner is None or owner.get("metadata", {}).get("deletionTimestamp"):
        return None
    child = plain(body)
    if not owned_by(child, owner):
        return None
    if needs_reconcile(owner, kind, event_type, child):
        rt = runtime()
        if event_type != "DELETED" and not _still_drifted(rt, owner, kind, child):
            return None  # a stale event: the object has been put back already
        fresh = _fresh_owner(rt, owner)
        if fresh is not None:
            what = "deleted" if event_type == "DELETED" else "drifted"
            log.info(
                "%s %s/%s %s: reconciling its owner",
                kind,
                namespace,
                child["metadata"]["name"],
                what,
            )
            try:
                run_reconcile(rt, fresh)
            except kopf.TemporaryError as exc:
                log.warning(
                    "reconcile of %s/%s failed: %s", namespace, owner["metadata"]["name"], exc
                )
        return None
    return owner


@kopf.on.event(
    "apps", "v1", "deployments", labels={MODEL_SERVICE_LABEL: kopf.PRESENT}, registry=REGISTRY
)
def deployment_event(
    type: str, body: kopf.Body, namespace: str | None, labels: kopf.Labels, **kwargs: Any
) -> None:
    ns = str(namespace)
    owner = _child_event("Deployment", type, body, ns, labels, kwargs["model_services"])
    if owner is None:
        return
    rt = runtime()
    key = (ns, str(labels[MODEL_SERVICE_LABEL]))
    with rt.lock(key):
        current = _with_latest_status(rt, owner)
        live = {
            str(d["metadata"]["labels"].get(ROLE_LABEL)): d
            for d in kwargs["role_deployments"].get(key, [])
            if owned_by(d, owner)
        }
        status = status_only(current, live)
        previous = current.get("status") or {}
        if status is None or all(previous.get(k) == v for k, v in status.items()):
            return
        ms = parse(current)
        try:
            rt.api.apply_status(ms, status)
        except ApiError as exc:
            log.warning("status of %s/%s not written: %s", ns, ms.name, exc)
            return
        rt.status_writes.inc()
        rt.last_status[_status_key(owner)] = status
    events = st.transitions(previous, status)
    for kind, reason, message in events:
        log.info("%s/%s: %s %s: %s", key[0], key[1], kind, reason, message)
    _post(owner, events)


@kopf.on.event("", "v1", "services", labels={MODEL_SERVICE_LABEL: kopf.PRESENT}, registry=REGISTRY)
def service_event(
    type: str, body: kopf.Body, namespace: str | None, labels: kopf.Labels, **kwargs: Any
) -> None:
    _child_event("Service", type, body, str(namespace), labels, kwargs["model_services"])


@kopf.on.event(
    "policy",
    "v1",
    "poddisruptionbudgets",
    labels={MODEL_SERVICE_LABEL: kopf.PRESENT},
    registry=REGISTRY,
)
def budget_event(
    type: str, body: kopf.Body, namespace: str | None, labels: kopf.Labels, **kwargs: Any
) -> None:
    _child_event(
        "PodDisruptionBudget", type, body, str(namespace), labels, kwargs["model_services"]
    )


@kopf.on.event(GROUP, VERSION, PLURAL, registry=REGISTRY)
def forget_deleted(type: str, body: kopf.Body, **_: Any) -> None:
    if _runtime is None:
        return
    if type == "DELETED":
        _runtime.last_status.pop(_status_key(body), None)
    meta = body.get("metadata") or {}
    key = (str(meta.get("namespace")), str(meta.get("name")))
    if type == "DELETED" or policy_ref(body) is None:
        # The autoscaling timer stops with the policyRef: its readiness series goes with it.
        _runtime.forget_autoscaler(key, deleted=type == "DELETED")
    else:
        _runtime.autoscaled(key)


@kopf.on.event(GROUP, VERSION, PLURAL, registry=REGISTRY)
def drop_kopf_default_finalizer(body: kopf.Body, **_: Any) -> None:
    """Take off the finalizer an operator before 2026-12-07 put on (kopf's default name): kopf
    keeps :data:`FINALIZER` now and would leave that one, holding a deleted ModelService."""
    meta = body.get("metadata") or {}
    finalizers = [str(f) for f in meta.get("finalizers") or ()]
    if _runtime is None or KOPF_DEFAULT_FINALIZER not in finalizers:
        return
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    try:
        _runtime.api.remove_finalizer(namespace, name, finalizers, KOPF_DEFAULT_FINALIZER)
    except ApiError as exc:  # (422: the finalizers changed meanwhile; the next event retries)
        log.warning("%s/%s: kopf's former finalizer not taken off: %s", namespace, name, exc)
        return
    log.info("%s/%s: kopf's former finalizer %s taken off", namespace, name, KOPF_DEFAULT_FINALIZER)


# The autoscaling loop's timer registers itself on REGISTRY (imported last: it uses this module).
from dunnage.operator import autoscaler as _autoscaler  # noqa: E402, F401
