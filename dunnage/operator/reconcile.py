"""One reconcile of a ModelService: check, dry-run, apply, hand over replicas, report status.

The order is what keeps the promises of the design:

1. Parse the spec; check what the schema cannot (the PriorityClass exists).
2. Server-side apply every desired object with ``dryRun=All``: if the API server refuses any of
   them (a name taken by someone else's object, an admission webhook, ...) nothing is written.
3. Apply them for real (field manager ``dunnage-operator``, forced), Deployments first.
4. When ``spec.autoscaling.policyRef`` is set the operator must not own ``spec.replicas`` of the
   role Deployments: it sets the count only when it creates a Deployment, then hands the field to
   ``dunnage-replicas-handover`` and stops applying it (dropping a field one solely owns would
   reset it to 1). Without a policy it applies replicas, forced: a manual ``kubectl scale`` is
   reconciled back.
5. Derive the status from the live Deployments and apply it to the status subresource.

Every step is idempotent, so a reconcile killed half-way and run again converges, and running it
on an unchanged object changes nothing (server-side apply of the same configuration is a no-op).
The I/O goes through :class:`Api`, so all of this is tested without a cluster.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dunnage.errors import InputError
from dunnage.operator import render
from dunnage.operator import status as st
from dunnage.operator.spec import ROLE_LABEL, ModelService, parse

Object = dict[str, Any]


class ApiError(Exception):
    """The API server refused a request; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Api(Protocol):
    def apply(
        self, obj: Object, *, field_manager: str = render.FIELD_MANAGER, dry_run: bool = False
    ) -> Object:
        """Server-side apply (forced); returns the object as stored (or as it would be)."""
        ...

    def get(self, kind: str, namespace: str, name: str) -> Object | None: ...

    def get_model_service(self, namespace: str, name: str) -> Object | None: ...

    def priority_class_exists(self, name: str) -> bool: ...

    def apply_status(self, ms: ModelService, status: Object) -> None: ...

    def list_owned(self, kind: str, namespace: str, model_service: str) -> list[Object]:
        """Objects of ``kind`` labelled as belonging to the ModelService."""
        ...

    def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete if still that object (precondition on uid); gone already is fine."""
        ...

    def remove_finalizer(
        self, namespace: str, name: str, finalizers: list[str], finalizer: str
    ) -> None:
        """Take ``finalizer`` off the ModelService if its finalizers are still ``finalizers``
        (a 422 otherwise); gone already is fine."""
        ...


@dataclass
class Outcome:
    status: Object
    problem: st.Problem | None = None
    applied: list[tuple[str, str, str]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def retry(self) -> bool:
        """Worth retrying later without a spec change (everything but an invalid spec)."""
        return self.problem is not None and self.problem.reason != st.INVALID_SPEC


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def replicas_owners(live: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The managedFields entries of a live Deployment that own its spec.replicas."""
    return [
        entry
        for entry in (live.get("metadata") or {}).get("managedFields") or []
        if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})
    ]


def owns_replicas(live: Mapping[str, Any], manager: str = render.FIELD_MANAGER) -> bool:
    """Whether ``manager`` owns spec.replicas of a live Deployment through an apply."""
    return any(
        entry.get("manager") == manager and entry.get("operation") == "Apply"
        for entry in replicas_owners(live)
    )


def reconcile(api: Api, body: Mapping[str, Any], *, clock: Any = now) -> Outcome:
    previous = body.get("status") or None
    try:
        ms = parse(body)
    except InputError as exc:
        problem = st.Problem(st.INVALID_SPEC, str(exc))
        return _finish_invalid(api, body, problem, previous, clock())
    blocked = preflight(api, ms)
    if blocked:
        return _finish(api, ms, {}, ms.generation, blocked, previous, clock(), [])

    with_replicas: dict[str, bool] = {}
    handover: dict[str, int] = {}  # existing Deployments whose replicas the operator still owns
    for role in ms.role_names:
        if not ms.autoscaled:
            with_replicas[role] = True
            continue
        # Only a Deployment that does not exist yet gets its count from the ModelService.
        current = api.get("Deployment", ms.namespace, ms.object_name(role))
        with_replicas[role] = current is None
        if current is not None and owns_replicas(current):
            handover[role] = int((current.get("spec") or {}).get("replicas", 1))
    desired = render.render(ms, with_replicas=with_replicas)

    if _first_apply(ms, previous):
        try:
            for obj in desired:
                api.apply(obj, dry_run=True)
        except ApiError as exc:
            problem = st.Problem(st.REJECTED, f"{exc}; nothing was created or changed")
            return _finish(api, ms, {}, ms.generation, problem, previous, clock(), [])

    live: dict[str, Object | None] = {}
    applied: list[tuple[str, str, str]] = []
    try:
        # The hand-over manager must co-own replicas before the operator stops applying them.
        for role, replicas in handover.items():
            api.apply(
                render.replicas_handover(ms, role, replicas),
                field_manager=render.HANDOVER_MANAGER,
            )
        for obj in desired:
            stored = api.apply(obj)
            applied.append(render.key(obj))
            if obj["kind"] == "Deployment":
                live[stored["metadata"]["labels"][ROLE_LABEL]] = stored
        if ms.autoscaled:
            for role in ms.role_names:
                created = live.get(role)
                if created is not None and owns_replicas(created):
                    live[role] = _hand_over(api, ms, role, created)
        if _may_have_leftovers(ms, previous):
            prune(api, ms, {render.key(obj) for obj in desired})
    except ApiError as exc:
        problem = st.Problem(st.APPLY_FAILED, str(exc))
        return _finish(api, ms, live, ms.generation, problem, previous, clock(), applied)
    return _finish(api, ms, live, ms.generation, None, previous, clock(), applied)


def preflight(api: Api, ms: ModelService) -> st.Problem | None:
    """What the schema cannot check; a problem here means nothing gets written."""
    named = {"spec.priorityClassName": ms.priority_class}
    named |= {f"spec.roles.{r.name}.priorityClassName": r.priority_class for r in ms.roles}
    checked: set[str] = set()
    for where, name in named.items():
        if not name or name in checked:
            continue
        checked.add(name)
        if not api.priority_class_exists(name):
            return st.Problem(
                st.PRIORITY_CLASS_NOT_FOUND,
                f"PriorityClass {name!r} ({where}) does not exist; nothing was created "
                "(create it, the operator retries)",
            )
    return None


def _first_apply(ms: ModelService, previous: Mapping[str, Any] | None) -> bool:
    """This generation has not been applied yet (or the last attempt was refused): the dry run
    makes it all or nothing. Later reconciles re-apply objects the API server already took."""
    return _observed(previous) < ms.generation or st.blocking_problem(previous) is not None


def _may_have_leftovers(ms: ModelService, previous: Mapping[str, Any] | None) -> bool:
    """Objects of a role the spec no longer has can only exist after a spec change."""
    if ms.generation <= 1:
        return False  # the first spec: every object ever created is still wanted
    if _first_apply(ms, previous):  # new, or blocked before it was applied
        return True
    return set((previous or {}).get("roles") or {}) != set(ms.role_names)


PRUNED_KINDS = ("Deployment", "Service", "PodDisruptionBudget")


def prune(api: Api, ms: ModelService, desired: set[tuple[str, str, str]]) -> list[str]:
    """Delete what this ModelService owns but no longer wants (a role gone after a mode switch)."""
    deleted = []
    for kind in PRUNED_KINDS:
        for obj in api.list_owned(kind, ms.namespace, ms.name):
            meta = obj.get("metadata") or {}
            owned = any(
                ref.get("uid") == ms.uid and ref.get("controller")
                for ref in meta.get("ownerReferences") or []
            )
            if owned and render.key({**obj, "kind": kind}) not in desired:
                api.delete(kind, ms.namespace, meta["name"], meta.get("uid", ""))
                deleted.append(f"{kind} {meta['name']}")
    return deleted


def _hand_over(api: Api, ms: ModelService, role: str, live: Object) -> Object:
    replicas = int((live.get("spec") or {}).get("replicas", ms.role(role).replicas))
    api.apply(render.replicas_handover(ms, role, replicas), field_manager=render.HANDOVER_MANAGER)
    return api.apply(render.deployment(ms, ms.role(role), with_replicas=False))


def status_only(
    body: Mapping[str, Any], live: Mapping[str, Mapping[str, Any] | None], *, clock: Any = now
) -> Object | None:
    """The status after a Deployment changed (no apply); None if the spec does not parse."""
    try:
        ms = parse(body)
    except InputError:
        return None
    previous = body.get("status") or None
    return st.derive(
        ms,
        live,
        observed_generation=int(_observed(previous)),
        problem=st.blocking_problem(previous),
        previous=previous,
        now=clock(),
    )


def _observed(previous: Mapping[str, Any] | None) -> int:
    return int((previous or {}).get("observedGeneration") or 0)


def _finish(
    api: Api,
    ms: ModelService,
    live: Mapping[str, Object | None],
    observed: int,
    problem: st.Problem | None,
    previous: Mapping[str, Any] | None,
    time: str,
    applied: list[tuple[str, str, str]],
) -> Outcome:
    status = st.derive(
        ms, live, observed_generation=observed, problem=problem, previous=previous, now=time
    )
    events = st.transitions(previous, status)
    if problem is None and previous is not None and _observed(previous) < ms.generation:
        events.insert(0, ("Normal", "Applied", f"generation {ms.generation} applied"))
    if not _same(previous, status):
        api.apply_status(ms, status)
    return Outcome(status, problem, applied, events)


def _finish_invalid(
    api: Api,
    body: Mapping[str, Any],
    problem: st.Problem,
    previous: Mapping[str, Any] | None,
    time: str,
) -> Outcome:
    meta = body.get("metadata") or {}
    status = st.invalid(int(meta.get("generation") or 0), problem, previous, time)
    if not _same(previous, status):
        stub = ModelService(
            name=str(meta.get("name")),
            namespace=str(meta.get("namespace") or "default"),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            model_name="",
            model_uri="",
            image="",
            roles=(),
        )
        api.apply_status(stub, status)
    return Outcome(status, problem, [], st.transitions(previous, status))


def _same(previous: Mapping[str, Any] | None, status: Mapping[str, Any]) -> bool:
    # Only the fields the operator writes count (others may share the status).
    return previous is not None and all(previous.get(k) == v for k, v in status.items())
