"""ModelService status: a pure function of the spec, the live Deployments and what went wrong.

Conditions (each with ``reason`` and ``message``; ``lastTransitionTime`` only moves when the
status flips, so re-deriving an unchanged status yields the same object):

- ``Ready``: every role's Deployment has rolled out its current template and has as many ready
  replicas as it wants, for the latest generation, and nothing is degraded.
- ``Progressing``: a rollout or scale is under way (``RollingOut``), or not (``Complete``), or
  it cannot start (``Blocked``, when Degraded by a reason that stopped the reconcile).
- ``Degraded``: something the schema cannot catch. Reasons that stop the reconcile before any
  object is written (:data:`BLOCKING_REASONS`): ``InvalidSpec``, ``PriorityClassNotFound``,
  ``Rejected`` (the API server refused an object in the dry run) and ``ApplyFailed``; reasons
  read from the Deployments: ``RolloutStuck`` (progress deadline exceeded) and
  ``ReplicaFailure`` (pods cannot be created, e.g. quota).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dunnage.operator.spec import ModelService

INVALID_SPEC = "InvalidSpec"
PRIORITY_CLASS_NOT_FOUND = "PriorityClassNotFound"
REJECTED = "Rejected"
APPLY_FAILED = "ApplyFailed"
ROLLOUT_STUCK = "RolloutStuck"
REPLICA_FAILURE = "ReplicaFailure"
BLOCKING_REASONS = frozenset({INVALID_SPEC, PRIORITY_CLASS_NOT_FOUND, REJECTED, APPLY_FAILED})

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"

OWNER_MODEL_SERVICE = "ModelService"
OWNER_POLICY = "AutoscalingPolicy"


@dataclass(frozen=True)
class Problem:
    """Why the ModelService is Degraded."""

    reason: str
    message: str


@dataclass(frozen=True)
class RoleState:
    name: str
    deployment: str
    exists: bool
    desired: int
    ready: int
    updated: int
    available: int
    total: int
    rolled_out: bool
    problem: Problem | None

    @property
    def is_ready(self) -> bool:
        return self.exists and self.rolled_out and self.ready >= self.desired

    def summary(self) -> str:
        ready = str(self.ready) if self.exists else "-"
        return f"{self.name} {ready}/{self.desired}"


def role_state(ms: ModelService, role: str, live: Mapping[str, Any] | None) -> RoleState:
    name = ms.object_name(role)
    if live is None:
        return RoleState(role, name, False, ms.role(role).replicas, 0, 0, 0, 0, False, None)
    spec = live.get("spec") or {}
    status = live.get("status") or {}
    meta = live.get("metadata") or {}
    desired = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    seen = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    # Old pods still terminating count in status.replicas: the rollout is done when they are gone.
    rolled_out = seen and updated >= desired and total <= desired and available >= desired
    problem = None
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "Progressing"
            and cond.get("status") == "False"
            and cond.get("reason") == "ProgressDeadlineExceeded"
        ):
            problem = Problem(ROLLOUT_STUCK, f"{name}: {cond.get('message', '')}".strip())
        elif cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            problem = Problem(REPLICA_FAILURE, f"{name}: {cond.get('message', '')}".strip())
    return RoleState(
        role, name, True, desired, ready, updated, available, total, rolled_out, problem
    )


def condition(
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    previous: Sequence[Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    value = "True" if status else "False"
    old = next((c for c in previous if c.get("type") == kind), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == value else None
    return {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or now,
        "observedGeneration": generation,
    }


def derive(
    ms: ModelService,
    live: Mapping[str, Mapping[str, Any] | None],
    *,
    observed_generation: int,
    problem: Problem | None,
    previous: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """The full status of ``ms`` given its live Deployments by role name."""
    states = [role_state(ms, r, live.get(r)) for r in ms.role_names]
    old_conditions = (previous or {}).get("conditions") or []
    blocking = problem is not None and problem.reason in BLOCKING_REASONS
    degraded = problem or next((s.problem for s in states if s.problem), None)
    current = observed_generation >= ms.generation
    not_ready = [s for s in states if not s.is_ready]
    summary = ", ".join(s.summary() for s in states)

    if degraded:
        ready = (False, degraded.reason, degraded.message)
    elif not current:
        ready = (False, "Reconciling", f"generation {ms.generation} not applied yet")
    elif not_ready:
        ready = (False, "RolesNotReady", "not ready: " + ", ".join(s.summary() for s in not_ready))
    else:
        ready = (True, "AllRolesReady", summary)

    rolling = [s for s in states if not (s.exists and s.rolled_out)]
    if blocking:
        progressing = (False, "Blocked", degraded.message if degraded else "")
    elif not current or rolling:
        names = ", ".join(s.deployment for s in rolling) or "the latest generation"
        progressing = (True, "RollingOut", f"rolling out {names}")
    else:
        progressing = (False, "Complete", "every role runs its latest template")

    degraded_cond = (
        (True, degraded.reason, degraded.message) if degraded else (False, "AsExpected", "")
    )
    conds = [
        condition(kind, *values, observed_generation, old_conditions, now)
        for kind, values in (
            (READY, ready),
            (PROGRESSING, progressing),
            (DEGRADED, degraded_cond),
        )
    ]
    owner = OWNER_POLICY if ms.autoscaled else OWNER_MODEL_SERVICE
    return {
        "observedGeneration": observed_generation,
        "mode": "PrefillDecode" if ms.disaggregated else "Serve",
        "summary": summary,
        "roles": {
            s.name: {
                "deployment": s.deployment,
                "replicas": s.desired,
                "readyReplicas": s.ready,
                "updatedReplicas": s.updated,
                "availableReplicas": s.available,
                "replicasOwner": owner,
            }
            for s in states
        },
        "conditions": conds,
    }


def invalid(
    generation: int, problem: Problem, previous: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    """Status of a ModelService whose spec cannot be parsed: conditions only."""
    old = (previous or {}).get("conditions") or []
    return {
        "observedGeneration": generation,
        "summary": "",
        "conditions": [
            condition(READY, False, problem.reason, problem.message, generation, old, now),
            condition(PROGRESSING, False, "Blocked", problem.message, generation, old, now),
            condition(DEGRADED, True, problem.reason, problem.message, generation, old, now),
        ],
    }


def blocking_problem(previous: Mapping[str, Any] | None) -> Problem | None:
    """The Degraded reason recorded by the last full reconcile, if it stopped it."""
    for cond in (previous or {}).get("conditions") or []:
        if (
            cond.get("type") == DEGRADED
            and cond.get("status") == "True"
            and cond.get("reason") in BLOCKING_REASONS
        ):
            return Problem(str(cond["reason"]), str(cond.get("message", "")))
    return None


def transitions(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> list[tuple[str, str, str]]:
    """Events worth posting, as (type, reason, message): Ready or Degraded changing."""
    old = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    events = []
    for cond in current.get("conditions") or []:
        before = old.get(cond["type"])
        changed = before is None or (before.get("status"), before.get("reason")) != (
            cond["status"],
            cond["reason"],
        )
        if not changed:
            continue
        if cond["type"] == READY and cond["status"] == "True":
            events.append(("Normal", READY, cond["message"]))
        elif cond["type"] == DEGRADED and cond["status"] == "True":
            events.append(("Warning", cond["reason"], cond["message"]))
        elif cond["type"] == DEGRADED and before is not None and before.get("status") == "True":
            events.append(("Normal", "Recovered", f"no longer {before.get('reason')}"))
    return events
