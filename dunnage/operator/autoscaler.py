"""The autoscaling loop in the operator: a kopf timer per ModelService with a policyRef.

Each tick (:data:`TICK_SECONDS`) it reads the AutoscalingPolicy and the role Deployments, samples
the role metrics from Prometheus when ``spec.metrics.sampleSeconds`` have passed, and lets
:func:`dunnage.autoscaling.loop.step` decide. The policy and the Deployments come from kopf
indexes (watches), not from API reads per tick; a learned policy's ``initialPolicy`` ConfigMap is
read again at most every :data:`INITIAL_POLICY_RECHECK_SECONDS` (the operator does not watch
every ConfigMap of the cluster for it). It then writes

- ``spec.replicas`` of each role Deployment whose count changes, by server-side apply of that one
  field with its own field manager (:data:`FIELD_MANAGER`, forced: it takes the field over from
  ``dunnage-replicas-handover``); the operator's own apply never sets replicas of an autoscaled
  role, so the two never fight;
- the AutoscalingPolicy status (target, desired and ready replicas per role, last decisions),
  when something changed (or every 30 s), through the process's
  :class:`~dunnage.operator.policy_status.PolicyStatusWriter`: the changes of the loops
  sharing a policy go out together, as a merge patch of the status subresource with the
  policy's resourceVersion, or, when they change only their ModelServices' own figures (an
  entry's time, the per-role figures), as a JSON patch that tests those entries instead;
- Events on the ModelService (``Scaled``, and each distinct problem once);
- a learned policy's state, after each learned decision, to the ConfigMap
  ``<modelservice>-learned-state`` (:func:`learned_state_config_map`).

Nothing here raises into kopf: an unreachable Prometheus, a missing or invalid policy, or a
refused write is logged and posted as a Warning event, and the next tick tries again. The policy
state (KPA windows, learned targets) lives in the timer's per-object memo, so it survives between
ticks; across operator restarts only the learned state does, from its ConfigMap (a new KPA
decider starts in panic mode with the ready pods, as Knative's does, so a restart never scales
down before it has a window of data).

The Prometheus URL comes from ``spec.metrics.prometheus.url`` or, when the policy has none, from
the operator's environment variable ``DUNNAGE_PROMETHEUS_URL``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, cast

import kopf

from dunnage.autoscaling.learned import LearnedModel
from dunnage.autoscaling.loop import (
    STATE_KEY,
    LoopState,
    RoleLimits,
    RoleState,
    StatusChange,
    Tick,
    generation,
    invalid_policy,
    rebase_status,
    released_status,
    state_config_map,
    step,
)
from dunnage.autoscaling.metrics import (
    MetricsError,
    PrometheusSource,
    RoleMetrics,
    SampleCache,
    with_demand,
)
from dunnage.autoscaling.spec import PolicySpec
from dunnage.autoscaling.spec import parse as parse_policy
from dunnage.cluster.connect import JSON_PATCH, MERGE_PATCH
from dunnage.errors import InputError
from dunnage.operator import handlers
from dunnage.operator.apply import APPLY, KubeApi
from dunnage.operator.handlers import Key
from dunnage.operator.policy_status import PolicyStatusApi
from dunnage.operator.reconcile import ApiError, replicas_owners
from dunnage.operator.render import FIELD_MANAGER as OPERATOR_MANAGER
from dunnage.operator.render import HANDOVER_MANAGER, labels, owner_reference
from dunnage.operator.spec import (
    GROUP,
    PLURAL,
    ROLE_LABEL,
    VERSION,
    ModelService,
    parse,
    policy_ref,
)

log = logging.getLogger(__name__)

FIELD_MANAGER = "dunnage-autoscaler"
TICK_SECONDS = float(os.environ.get("DUNNAGE_AUTOSCALER_TICK", "1"))
PROMETHEUS_URL_ENV = "DUNNAGE_PROMETHEUS_URL"
POLICY_PLURAL = "autoscalingpolicies"
# The field managers of the operator's own writes of a role's spec.replicas.
OWN_MANAGERS = frozenset({FIELD_MANAGER, HANDOVER_MANAGER, OPERATOR_MANAGER})
# How stale a learned policy's initialPolicy text may get before the loop reads its ConfigMap
# again (an edit of the policy itself takes effect at once: it comes from a watch).
INITIAL_POLICY_RECHECK_SECONDS = 30.0
# While it is missing or unusable, how often the loop looks again (not every tick).
INITIAL_POLICY_RETRY_SECONDS = 5.0


class ScaleApi(PolicyStatusApi, Protocol):
    """The loop's reads and writes (a fake in the unit tests)."""

    def get_policy(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def role_deployments(self, ms: ModelService) -> dict[str, dict[str, Any]]: ...

    def deployment_autoscalers(self, namespace: str, deployment: str) -> list[str]:
        """The names of the HorizontalPodAutoscalers whose scale target is that Deployment."""
        ...

    def scale(self, ms: ModelService, role: str, replicas: int) -> int:
        """Write the role's replicas; returns the Deployment's ``metadata.generation`` after."""
        ...

    def save_config_map(self, config_map: dict[str, Any]) -> None:
        """Create the ConfigMap or take it over (server-side apply)."""
        ...

    def update_config_map(self, config_map: dict[str, Any]) -> None:
        """Write the ConfigMap's data if it still exists; ApiError 404 if it does not."""
        ...


def indexed_policy(
    policies: Mapping[Key, Iterable[dict[str, Any]]], namespace: str, name: str
) -> dict[str, Any] | None:
    """The AutoscalingPolicy in kopf's ``autoscaling_policies`` index, None if it has none."""
    # list(): one snapshot of kopf's store, which its watch thread may be updating.
    found = list(policies.get((namespace, name), ()))
    return found[0] if found else None


class KubeScaleApi:
    """:class:`ScaleApi` over the operator's ``kubernetes`` client for writes and ConfigMaps,
    and over kopf's indexes (``autoscaling_policies``, ``role_deployments``,
    ``deployment_autoscalers``) for the objects the loop reads every tick."""

    def __init__(
        self,
        kube: KubeApi,
        policies: Mapping[Key, Iterable[dict[str, Any]]],
        deployments: Mapping[Key, Iterable[dict[str, Any]]],
        autoscalers: Mapping[Key, Iterable[str]],
    ) -> None:
        self.kube = kube
        self.policies = policies
        self.deployments = deployments
        self.autoscalers = autoscalers

    def get_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        return indexed_policy(self.policies, namespace, name)

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.kube._call(
                self.kube.core.read_namespaced_config_map, name, namespace
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def save_config_map(self, config_map: dict[str, Any]) -> None:
        meta = config_map["metadata"]
        self.kube._call(
            self.kube.core.patch_namespaced_config_map,
            meta["name"],
            meta["namespace"],
            config_map,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
        )

    def update_config_map(self, config_map: dict[str, Any]) -> None:
        meta = config_map["metadata"]
        self.kube._call(
            self.kube.core.patch_namespaced_config_map,
            meta["name"],
            meta["namespace"],
            {"data": config_map["data"]},
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,  # unlike an apply, it never creates the object
        )

    def role_deployments(self, ms: ModelService) -> dict[str, dict[str, Any]]:
        """The ModelService's own role Deployments (controller reference to it), by role."""
        out = {}
        owner = {"metadata": {"uid": ms.uid}}
        for obj in list(self.deployments.get((ms.namespace, ms.name), ())):
            if handlers.owned_by(obj, owner):
                role = ((obj.get("metadata") or {}).get("labels") or {}).get(ROLE_LABEL)
                if role:
                    out[str(role)] = obj
        return out

    def deployment_autoscalers(self, namespace: str, deployment: str) -> list[str]:
        return sorted(self.autoscalers.get((namespace, deployment), ()))

    def scale(self, ms: ModelService, role: str, replicas: int) -> int:
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": ms.object_name(role), "namespace": ms.namespace},
            "spec": {"replicas": replicas},
        }
        written = self.kube._call(
            self.kube.apps.patch_namespaced_deployment,
            ms.object_name(role),
            ms.namespace,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
        )
        return int(((written or {}).get("metadata") or {}).get("generation") or 0)

    def read_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        # A list by name: the operator may list policies (its watch), not get them.
        found = self.kube._call(
            self.kube.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            POLICY_PLURAL,
            field_selector=f"metadata.name={name}",
        )
        items: list[dict[str, Any]] = found.get("items") or []
        return items[0] if items else None

    def patch_policy_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        patch: dict[str, Any] = {"status": status}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        return self._patch_status(namespace, name, patch, MERGE_PATCH)

    def json_patch_policy_status(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return self._patch_status(namespace, name, ops, JSON_PATCH)

    def _patch_status(
        self, namespace: str, name: str, body: Any, content_type: str
    ) -> dict[str, Any]:
        written: dict[str, Any] = self.kube._call(
            self.kube.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            POLICY_PLURAL,
            name,
            body,
            field_manager=FIELD_MANAGER,
            _content_type=content_type,
        )
        return written


def _api(
    policies: Mapping[Key, Iterable[dict[str, Any]]],
    deployments: Mapping[Key, Iterable[dict[str, Any]]],
    autoscalers: Mapping[Key, Iterable[str]],
) -> ScaleApi:
    api = handlers.runtime().api
    if not isinstance(api, KubeApi):
        raise RuntimeError("the autoscaling loop needs the operator's KubeApi")
    return KubeScaleApi(api, policies, deployments, autoscalers)


def _learned_model(
    api: ScaleApi, state: LoopState, spec: PolicySpec, namespace: str, now: float
) -> LearnedModel | None:
    """The learned policy's initial model from its ConfigMap (the same object while the
    ConfigMap's text is unchanged, so the autoscaler is not rebuilt every tick). The ConfigMap
    is read again after :data:`INITIAL_POLICY_RECHECK_SECONDS`, or at once when the policy
    names another one; while it is missing or unusable, every
    :data:`INITIAL_POLICY_RETRY_SECONDS` (the same error in between)."""
    if spec.initial_policy is None:
        return None
    if (
        state.model is not None
        and state.model_read is not None
        and state.model_read[0] == spec.initial_policy
        and now - state.model_read[1] < INITIAL_POLICY_RECHECK_SECONDS
    ):
        return state.model[1]
    failed = state.model_failed
    if (
        failed is not None
        and failed[0] == spec.initial_policy
        and now - failed[1] < INITIAL_POLICY_RETRY_SECONDS
    ):
        raise failed[2]
    try:
        model = _read_initial_policy(api, state, namespace, spec.name, spec.initial_policy)
    except InputError as exc:
        state.model_failed = (spec.initial_policy, now, exc)
        raise
    state.model_failed = None
    state.model_read = (spec.initial_policy, now)
    return model


def _read_initial_policy(
    api: ScaleApi, state: LoopState, namespace: str, policy: str, ref: tuple[str, str]
) -> LearnedModel:
    name, key = ref
    obj = f"AutoscalingPolicy {namespace}/{policy}"
    where = "spec.learning.initialPolicy"
    cm = api.get_config_map(namespace, name)
    if cm is None:
        raise InputError(f"ConfigMap {namespace}/{name} not found", obj=obj, field=where)
    raw = (cm.get("data") or {}).get(key)
    if raw is None:
        raise InputError(f"ConfigMap {namespace}/{name} has no key {key!r}", obj=obj, field=where)
    if state.model is None or state.model[0] != raw:
        try:
            model = LearnedModel.from_dict(json.loads(raw), f"ConfigMap {namespace}/{name} {key}")
        except ValueError as exc:
            raise InputError(str(exc), obj=obj, field=where) from None
        state.model = (raw, model)
    return state.model[1]


def replicas_set_by(deployment: Mapping[str, Any]) -> str | None:
    """The field managers that own the Deployment's ``spec.replicas`` when none of them is the
    operator's (:data:`OWN_MANAGERS`), joined by ", "; None otherwise."""
    owners = sorted(str(entry.get("manager") or "?") for entry in replicas_owners(deployment))
    if not owners or OWN_MANAGERS & set(owners):
        return None
    return ", ".join(owners)


def _role_states(api: ScaleApi, state: LoopState, ms: ModelService) -> dict[str, RoleState]:
    """The role Deployments' replicas as the index has them, or as this loop last wrote them
    while the index has not caught up with that write yet (an older generation): deciding from
    a stale count would write the same change twice and post its Event twice."""
    out = {}
    for role, d in api.role_deployments(ms).items():
        replicas = int((d.get("spec") or {}).get("replicas", 1))
        generation = int((d.get("metadata") or {}).get("generation") or 0)
        written = state.written.get(role)
        set_by = None
        if written is not None and generation < written[0]:
            replicas = written[1]
        else:
            state.written.pop(role, None)
            set_by = replicas_set_by(d)
        out[role] = RoleState(
            replicas=replicas,
            ready_replicas=int((d.get("status") or {}).get("readyReplicas") or 0),
            set_by=set_by,
        )
    return out


# The namespace-wide answers of each policy's Prometheus queries, shared by its ModelServices'
# loops for half its sampleSeconds: one set of queries per policy, not per ModelService.
SAMPLES = SampleCache()


def sample(
    spec: PolicySpec, ms: ModelService, idle_roles: Sequence[str] = ()
) -> dict[str, RoleMetrics] | MetricsError:
    """Role metrics from the policy's Prometheus, or the error that names what is wrong. Roles
    in ``idle_roles`` (no ready replica) get the policy's activation demand when it has an
    ``activationQuery`` (:func:`~dunnage.autoscaling.metrics.with_demand`)."""
    obj = f"AutoscalingPolicy {spec.namespace}/{spec.name}"
    url = spec.prometheus_url or os.environ.get(PROMETHEUS_URL_ENV, "")
    if not url:
        return MetricsError(
            f"no Prometheus URL (set it, or {PROMETHEUS_URL_ENV} for the operator)",
            obj=obj,
            field="spec.metrics.prometheus.url",
        )
    try:
        source = PrometheusSource(
            url,
            selector=spec.pod_selector,
            rate_window=f"{spec.rate_window_seconds}s",
            obj=obj,
        )
        metrics = source.sample(
            ms.namespace, ms.name, ms.role_names, SAMPLES, spec.sample_seconds / 2
        )
        if spec.activation_query is None or not idle_roles:
            return metrics
        demand = source.demand(spec.activation_query, ms.namespace, ms.name)
        return with_demand(metrics, idle_roles, demand, spec.kpa.metric)
    except MetricsError as exc:
        return exc
    except Exception as exc:  # never let a metrics surprise stop the loop
        return MetricsError(f"reading Prometheus failed: {exc!r}", obj=obj)


def _namespace(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("namespace") or "default")  # as parse() reads it


def run_tick(
    api: ScaleApi,
    state: LoopState,
    body: Mapping[str, Any],
    now: float,
) -> Tick | None:
    """One tick for one ModelService: reads, :func:`step`, writes. None when nothing was due."""
    policy_name = policy_ref(body) or ""
    policy = api.get_policy(_namespace(body), policy_name)
    state.read_policy(policy)
    if not state.due(now):
        return None
    ms = parse(body)
    model = spec = None
    if policy is not None:
        try:
            # Parsed once a tick, here; step() is handed the result.
            spec = parse_policy(policy)
            model = _learned_model(api, state, spec, ms.namespace, now)
        except InputError as exc:
            where = f"ModelService {ms.namespace}/{ms.name}"
            tick = invalid_policy(state, policy, ms.name, where, exc)
            _write_status(api, state, ms, policy, tick)
            return tick
    deployments = _role_states(api, state, ms)
    contested = {
        role: "HorizontalPodAutoscaler "
        + ", ".join(f"{ms.namespace}/{h}" for h in hpas)
        + f" scales Deployment {ms.namespace}/{ms.object_name(role)}"
        for role in deployments
        if (hpas := api.deployment_autoscalers(ms.namespace, ms.object_name(role)))
    }
    # Metrics are read while some role is the policy's to scale.
    due = bool(set(deployments) - set(contested)) and state.sample_due(now)
    idle = [role for role, d in deployments.items() if d.ready_replicas == 0]
    metrics = sample(spec, ms, idle) if spec is not None and due else None

    def saved_state() -> str | None:
        cm = api.get_config_map(ms.namespace, state_config_map(ms.name))
        state.state_saved = cm is not None
        text = ((cm or {}).get("data") or {}).get(STATE_KEY)
        return None if text is None else str(text)

    tick = step(
        state,
        now,
        model_service=ms.name,
        policy_body=policy,
        parsed=spec,
        policy_name=policy_name,
        namespace=ms.namespace,
        roles=ms.role_names,
        limits={r.name: RoleLimits(r.min_replicas, r.max_replicas) for r in ms.roles},
        deployments=deployments,
        metrics=metrics,
        contested=contested,
        model=model,
        model_text=state.model[0] if state.model is not None and model is not None else None,
        # After the state's ConfigMap was deleted the policy starts afresh, not from it.
        saved_state=None if state.learning_reset else saved_state,
    )
    if state.autoscaler is not None:
        state.learning_reset = False
    rt = handlers.runtime()
    if metrics is not None:
        rt.autoscaler_samples.labels(
            result="error" if isinstance(metrics, MetricsError) else "ok"
        ).inc()
    # Under the ModelService's lock: a reconcile handing replicas over must not interleave.
    with rt.lock((ms.namespace, ms.name)):
        for role, replicas in tick.scale.items():
            try:
                state.written[role] = (api.scale(ms, role, replicas), replicas)
            except ApiError as exc:
                tick.warnings.append(f"scaling {ms.object_name(role)} failed: {exc}")
                tick.events.append(
                    ("Warning", "ScaleFailed", f"{role}: {replicas} replicas not written: {exc}")
                )
    if tick.save_state is not None:
        _save_state(api, state, ms, tick)
    if policy is not None:
        _write_status(api, state, ms, policy, tick)
    return tick


def learned_state_config_map(ms: ModelService, doc: dict[str, Any]) -> dict[str, Any]:
    """The ConfigMap that keeps the ModelService's learned autoscaling state (owned by it, so
    it goes with it). Its ``policy.json`` is a policy file: it can seed another policy."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": state_config_map(ms.name),
            "namespace": ms.namespace,
            # The labels of the ModelService's other objects; it belongs to no role.
            "labels": {k: v for k, v in labels(ms, "learned-state").items() if k != ROLE_LABEL},
            "ownerReferences": [owner_reference(ms)],
        },
        "data": {STATE_KEY: json.dumps(doc, indent=1) + "\n"},
    }


def _save_state(api: ScaleApi, state: LoopState, ms: ModelService, tick: Tick) -> None:
    """Save the learned state; a failure is a Warning (once per distinct error), and scaling
    goes on: a restart then resumes from the last state saved."""
    assert tick.save_state is not None
    config_map = learned_state_config_map(ms, tick.save_state)
    try:
        if state.state_saved:
            api.update_config_map(config_map)
        else:
            api.save_config_map(config_map)
            state.state_saved = True
    except ApiError as exc:
        if exc.status == 404 and state.state_saved:
            # Deleted since the last save: somebody wants the learning to start afresh (an
            # apply would have brought the old state back).
            state.restart_learning()
            message = (
                f"ConfigMap {ms.namespace}/{state_config_map(ms.name)} was deleted: the "
                "learned targets start afresh from the initial policy (saved at its next "
                "decision)"
            )
            tick.events.append(("Normal", "LearnedStateReset", message))
            return
        message = f"learned state not saved to ConfigMap {state_config_map(ms.name)}: {exc}"
        tick.warnings.append(message)
        if state.save_error != message:
            tick.events.append(("Warning", "LearnedStateNotSaved", message))
        state.save_error = message
        return
    state.save_error = None


def _write_status(
    api: ScaleApi, state: LoopState, ms: ModelService, policy: dict[str, Any], tick: Tick
) -> None:
    status = tick.status
    if status is None:
        return
    policy_name = str(policy["metadata"]["name"])
    if policy_name == state.released_policy:  # a tick begun before the ModelService left it
        state.last_status = None  # so, attached again, the next tick writes its entry at once
        return

    def make(body: Mapping[str, Any]) -> dict[str, Any]:
        """The tick's status, made again from ``body`` unless that is the policy as read."""
        if body.get("status") == policy.get("status") and generation(body) == generation(policy):
            return status
        return rebase_status(status, body, ms.name, None)

    change = StatusChange(make, model_service=ms.name)
    if handlers.runtime().policy_status.write(api, policy, change):
        state.status_policy = policy_name


def release_policy(
    api: ScaleApi, state: LoopState, namespace: str, model_service: str, policy_ref: str | None
) -> None:
    """Take the ModelService out of the status of the policy its loop wrote to, once it refers
    to another one or none (``policy_ref``; None also when it is deleted): that policy's Ready
    condition and summary then speak for the ModelServices still using it, or say it is
    ``Unused``, instead of keeping this one's last word."""
    if policy_ref is not None and policy_ref == state.released_policy:
        state.released_policy = None  # attached again: its ticks write there again
    old = state.status_policy
    if old is None or old == policy_ref:
        return
    state.status_policy, state.released_policy = None, old
    state.last_status = None  # attached again, the next tick writes its entry at once
    policy = api.get_policy(namespace, old)
    if policy is not None:
        release = StatusChange(lambda body: released_status(body, {model_service}, None))
        handlers.runtime().policy_status.write(api, policy, release)


@kopf.index(GROUP, VERSION, POLICY_PLURAL, registry=handlers.REGISTRY)
def autoscaling_policies(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[Key, Any]:
    return {(str(namespace), name): handlers.plain(body)}


def deployment_autoscalers(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[Key, Any]:
    """HorizontalPodAutoscalers by the Deployment they scale (KEDA's ScaledObjects make them
    too): a role Deployment that one scales is left to it, not fought over. ({} rather than
    None for any other target: kopf then drops what an earlier version of the object indexed.)"""
    target = (body.get("spec") or {}).get("scaleTargetRef") or {}
    group = str(target.get("apiVersion") or "").split("/")[0]
    if target.get("kind") != "Deployment" or group != "apps" or not target.get("name"):
        return {}
    return {(str(namespace), str(target["name"])): name}


def watch_autoscalers() -> None:
    """Index HorizontalPodAutoscalers (:func:`deployment_autoscalers`). ``operator run`` calls
    this when its RBAC lets it list and watch them (:mod:`dunnage.cluster.access`): kopf runs
    no handler until every index it has is filled, so a forbidden watch would stop them all."""
    kopf.index("autoscaling", "v2", "horizontalpodautoscalers", registry=handlers.REGISTRY)(
        deployment_autoscalers
    )


AUTOSCALERS_UNCHECKED = (
    "HorizontalPodAutoscalers are not checked: the operator may not list and watch "
    "horizontalpodautoscalers.autoscaling, so a role Deployment an HPA also scales would be "
    "fought over (grant those verbs, as the chart's ClusterRole does, and restart the operator)"
)


@kopf.on.event(GROUP, VERSION, PLURAL, registry=handlers.REGISTRY)
def release_on_detach(type: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A ModelService deleted, or whose policyRef changed or went: out of the old policy's
    status (:func:`release_policy`). The timer's state lives in the same per-object memo."""
    state = memo.get("autoscaling")
    if not isinstance(state, LoopState):
        return  # its loop never wrote a status in this process (release_departed covers it)
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    gone = type == "DELETED" or meta.get("deletionTimestamp")
    try:
        api = _api(kwargs["autoscaling_policies"], kwargs["role_deployments"], {})
        release_policy(api, state, namespace, name, None if gone else policy_ref(body))
    except Exception:  # a bug must not stop the other handlers of the event
        log.exception("%s/%s: policy status not released", namespace, name)


def departed(
    policy_body: Mapping[str, Any], model_services: Mapping[Key, Iterable[Mapping[str, Any]]]
) -> set[str]:
    """The ModelServices with an entry in the policy's status that no longer use the policy:
    gone (not in the operator's index of ModelServices), being deleted, or whose policyRef
    names another policy or none."""
    meta = policy_body.get("metadata") or {}
    namespace, policy = str(meta.get("namespace")), str(meta.get("name"))

    def uses_policy(body: Mapping[str, Any]) -> bool:
        deleting = (body.get("metadata") or {}).get("deletionTimestamp")
        return not deleting and policy_ref(body) == policy

    entries = ((policy_body.get("status") or {}).get("modelServices")) or {}
    return {
        name
        for name in entries
        if not any(uses_policy(body) for body in model_services.get((namespace, name), ()))
    }


@kopf.on.event(GROUP, VERSION, POLICY_PLURAL, registry=handlers.REGISTRY)
def release_departed(type: str, body: kopf.Body, **kwargs: Any) -> None:
    """A policy's status without the entries of ModelServices that no longer use it
    (:func:`departed`). Those the operator saw leave are taken out at once
    (:func:`release_on_detach`); this takes out those that left while no operator ran (a
    policyRef changed, or a finalizer removed by hand and the ModelService deleted), as the
    next operator starts and lists the policies. kopf runs no handler before its indexes have
    listed, and a ModelService is indexed with its policyRef before its first tick writes an
    entry, so an entry the index does not back is stale."""
    meta = body.get("metadata") or {}
    if type == "DELETED":
        handlers.runtime().policy_status.forget(handlers.plain(body))
    if type == "DELETED" or meta.get("deletionTimestamp"):
        return
    gone = departed(body, kwargs["model_services"])
    if not gone:
        return
    namespace, name = meta.get("namespace"), meta.get("name")
    log.info(
        "AutoscalingPolicy %s/%s: taking out of its status ModelServices that no longer use it: %s",
        namespace,
        name,
        ", ".join(sorted(gone)),
    )
    try:
        api = _api(kwargs["autoscaling_policies"], kwargs["role_deployments"], {})
        release = StatusChange(lambda read: released_status(read, gone, None))
        handlers.runtime().policy_status.write(api, handlers.plain(body), release)
    except Exception:  # a bug must not stop the other handlers of the event
        log.exception("%s/%s: policy status not released", namespace, name)


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=TICK_SECONDS,
    field="spec.autoscaling.policyRef",
    value=kopf.PRESENT,
    registry=handlers.REGISTRY,
)
async def autoscale(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A tick with nothing due (most are: a tick a second, a sample every ``sampleSeconds``)
    returns here, in kopf's event loop; the others run in kopf's thread pool, as a
    synchronous handler would, since they read and write through blocking clients."""
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    state = memo.get("autoscaling")
    if not isinstance(state, LoopState):
        state = LoopState()
        memo["autoscaling"] = state
    policy = indexed_policy(
        kwargs["autoscaling_policies"], _namespace(body), policy_ref(body) or ""
    )
    state.read_policy(policy)
    if not state.due(time.monotonic()):
        return
    await handlers.runtime().in_thread(tick_in_thread, body, state, memo, kwargs)


def tick_in_thread(
    body: kopf.Body, state: LoopState, memo: kopf.Memo, kwargs: Mapping[str, Any]
) -> None:
    meta = body.get("metadata") or {}
    where = f"{meta.get('namespace')}/{meta.get('name')}"
    try:
        autoscalers = kwargs.get("deployment_autoscalers")  # not indexed: watch_autoscalers
        api = _api(kwargs["autoscaling_policies"], kwargs["role_deployments"], autoscalers or {})
        started = time.monotonic()
        tick = run_tick(api, state, handlers.plain(body), started)
        if tick is not None:
            handlers.runtime().autoscaler_ticks.observe(time.monotonic() - started)
            if autoscalers is None and not memo.get("autoscalers_unchecked"):
                memo["autoscalers_unchecked"] = True
                tick.events.append(("Warning", "AutoscalersNotChecked", AUTOSCALERS_UNCHECKED))
        if state.ready is not None:
            key = (str(meta.get("namespace")), str(meta.get("name")))
            handlers.runtime().autoscaler_readiness(key, state.ready[0], state.ready[1])
    except (ApiError, InputError) as exc:
        log.warning("%s: autoscaling tick skipped: %s", where, exc)
        return
    except Exception:  # a bug must not stop the timer (kopf would back off and retry anyway)
        log.exception("%s: autoscaling tick failed", where)
        return
    if tick is None:
        return
    for message in tick.warnings:
        log.warning("%s: %s", where, message)
    events = handlers.runtime().autoscaler_events
    for kind, reason, message in tick.events:
        events.labels(type=kind, reason=reason).inc()
        log.info("%s: %s %s: %s", where, kind, reason, message)
        kopf.event(
            kopf.Body(cast(Any, dict(body))), type=kind, reason=reason, message=message[:1024]
        )
