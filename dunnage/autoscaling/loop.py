"""One ModelService's autoscaling loop, as pure steps (the operator does the I/O around them).

Every tick the operator calls :func:`step` with what it read: the AutoscalingPolicy, the
ModelService, its role Deployments (replicas and ready replicas) and the role metrics (or the
error reading them). A step feeds a sample to the policy when ``spec.metrics.sampleSeconds`` have
passed, asks it for a decision when ``spec.kpa.tickSeconds`` have passed, and returns what to
write: replicas per role, the AutoscalingPolicy status, and Events. A step never raises on bad
input; problems come back as warnings naming the object and field.

Bounds: a role's replicas stay within both the ModelService role's ``minReplicas``/``maxReplicas``
and the policy role's; when the two ranges do not overlap the upper bound wins (never more pods
than someone allowed). A role without metrics gets no sample: the KPA decider holds its count
("no data") rather than reading silence as zero load. A role with no ready replica has no engines
to read: with the policy's ``activationQuery`` the operator gives its decider the demand that
query shows (what Knative's activator reports), so a role at zero comes back when requests
wait; without one it stays at zero until its minimum rises or someone scales it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jsonpointer

from dunnage.autoscaling import spec as policy_spec
from dunnage.autoscaling.learned import LearnedModel, LearnedTargets
from dunnage.autoscaling.metrics import MetricsError, RoleMetrics, observation
from dunnage.autoscaling.policy import Autoscaler, RoleBounds
from dunnage.autoscaling.types import Decision, RoleObservation, role_slo
from dunnage.errors import InputError
from dunnage.operator.status import condition

STATUS_REFRESH_SECONDS = 30.0  # rewrite an unchanged status this often (fresh lastUpdateTime)
# A ModelService's entry in a policy's status.modelServices that no loop has rewritten for this
# long is dropped by the next loop that writes: its ModelService was deleted or detached. A
# live loop steps at least every 60 s (sampleSeconds and tickSeconds are at most 60) and then
# rewrites an entry older than STATUS_REFRESH_SECONDS: three times that step is a safe margin.
STALE_ENTRY_SECONDS = 180.0
# After a failed metrics read the next waits sampleSeconds, then twice as long after each
# further failure, up to this: an unreachable Prometheus is not asked every second by every
# ModelService, and is read again within this long of coming back.
METRICS_RETRY_MAX_SECONDS = 30.0
STATE_KEY = "policy.json"  # the saved learned state's key in its ConfigMap

Event = tuple[str, str, str]  # (type, reason, message)
# Every reason of a Warning the autoscaling loop posts (here and at its I/O edge,
# dunnage.operator.autoscaler). The operator exports a zero for each from the start: a counter
# series first scraped at 1 shows Prometheus no increase, and the first Warning would not alert.
WARNING_REASONS = (
    "ActivationTimeout",
    "AutoscalersNotChecked",
    "AutoscalingPolicyNotFound",
    "ConflictingAutoscaler",
    "InvalidAutoscalingPolicy",
    "LearnedStateDiscarded",
    "LearnedStateNotSaved",
    "MetricsUnavailable",
    "NoMetrics",
    "ReplicasSetElsewhere",
    "ScaleFailed",
)


@dataclass(frozen=True)
class RoleState:
    """A role Deployment as read now."""

    replicas: int
    ready_replicas: int
    # Who last set spec.replicas when it was not the operator (a field manager: `kubectl scale`,
    # a GitOps tool's apply); None when it was, or nobody can tell.
    set_by: str | None = None


@dataclass(frozen=True)
class RoleLimits:
    """The ModelService role's own bounds (``None``: not set)."""

    min_replicas: int | None = None
    max_replicas: int | None = None


def combined_bounds(policy: RoleBounds, role: RoleLimits) -> RoleBounds:
    """Both ranges at once; the upper bound wins when they do not overlap."""
    lo = (
        policy.min_replicas
        if role.min_replicas is None
        else max(policy.min_replicas, role.min_replicas)
    )
    hi = (
        policy.max_replicas
        if role.max_replicas is None
        else min(policy.max_replicas, role.max_replicas)
    )
    return dataclasses.replace(policy, min_replicas=min(lo, hi), max_replicas=hi)


def effective_spec(
    spec: policy_spec.PolicySpec, roles: Sequence[str], limits: Mapping[str, RoleLimits]
) -> policy_spec.PolicySpec:
    """The policy spec with each role's bounds narrowed by the ModelService's."""
    out = dict(spec.roles)
    for role in roles:
        current = spec.roles.get(role, policy_spec.RoleSpec(bounds=policy_spec.DEFAULT_BOUNDS))
        out[role] = dataclasses.replace(
            current, bounds=combined_bounds(current.bounds, limits.get(role, RoleLimits()))
        )
    return dataclasses.replace(spec, roles=out)


def generation(body: Mapping[str, Any]) -> int:
    """An object's ``metadata.generation`` (0 when absent)."""
    return int((body.get("metadata") or {}).get("generation") or 0)


@dataclass
class LoopState:
    """What one ModelService's loop keeps between ticks (in operator memory)."""

    key: tuple[Any, ...] | None = None  # what the autoscaler was built from
    autoscaler: Autoscaler | None = None
    spec: policy_spec.PolicySpec | None = None
    last_sample: float | None = None
    last_decision: float | None = None
    last_status_write: float | None = None
    last_status: dict[str, Any] | None = None
    problem: str | None = None  # the last warning posted, so it is posted once
    model: tuple[str, LearnedModel] | None = None  # (policy file text, parsed) of learned
    # The initialPolicy ConfigMap last read: ((name, key), when); its last failure, with why.
    model_read: tuple[tuple[str, str], float] | None = None
    model_failed: tuple[tuple[str, str], float, InputError] | None = None
    # role -> (Deployment generation, replicas) of the loop's last write of that role's count.
    written: dict[str, tuple[int, int]] = field(default_factory=dict)
    activating_since: dict[str, float] = field(default_factory=dict)  # role -> replicas, none ready
    observed_roles: set[str] = field(default_factory=set)  # roles this autoscaler has data of
    ready: tuple[bool, str, str] | None = None  # this ModelService's readiness last written
    ready_written: datetime | None = None  # when (wall clock), to refresh its entry
    missing: tuple[str, ...] = ()  # roles without engine series in the last sample
    # What the learned autoscaler's state was learned under (spec.learning_key); None when the
    # autoscaler is not learned or does not keep its state.
    learning_key: str | None = None
    save_error: str | None = None  # the last failure to save that state, posted once
    metrics_failures: int = 0  # failed metrics reads in a row
    metrics_retry_at: float | None = None  # when to read again after the last failure
    set_elsewhere: dict[str, tuple[str, int]] = field(default_factory=dict)  # role -> posted
    contested: dict[str, str] = field(default_factory=dict)  # role -> its other autoscaler, posted
    # Whether the learned state's ConfigMap exists (read or written by this loop), and whether
    # it was deleted since: then the learned policy is rebuilt from its initial policy.
    state_saved: bool = False
    learning_reset: bool = False
    # The policy whose status carries this ModelService's entry (its loop wrote there), and
    # the one it was last taken out of: a tick still under way with the old policyRef must
    # not put the entry back.
    status_policy: str | None = None
    released_policy: str | None = None
    # The policy (uid, generation) the loop last read, so that an edit is acted on at once.
    policy_version: tuple[str, int] | None = None

    def restart_learning(self) -> None:
        """Drop the autoscaler (the next tick builds it afresh) and what it learned."""
        self.autoscaler = self.key = self.learning_key = None
        self.state_saved, self.learning_reset = False, True

    def read_policy(self, policy: Mapping[str, Any] | None) -> None:
        """Note the policy the loop reads this tick. An edit ends the wait after failed metric
        reads: the edit may be what fixes them (a corrected Prometheus URL), and it is tried
        at this tick, not after up to :data:`METRICS_RETRY_MAX_SECONDS`."""
        uid = ((policy or {}).get("metadata") or {}).get("uid")
        version = None if policy is None else (str(uid), generation(policy))
        if version != self.policy_version:
            self.policy_version = version
            self.metrics_failures, self.metrics_retry_at = 0, None

    def sample_due(self, now: float) -> bool:
        if self.metrics_retry_at is not None:
            return now >= self.metrics_retry_at - 1e-6
        return (
            self.spec is None
            or self.last_sample is None
            or now - self.last_sample >= self.spec.sample_seconds - 1e-6
        )

    def due(self, now: float) -> bool:
        """Whether a tick at ``now`` has anything to do (cheap: no API reads when not): a sample,
        or a decision. While metrics cannot be read, nothing is until the next retry (counts
        are held meanwhile)."""
        sample = self.sample_due(now)
        if sample or self.metrics_retry_at is not None:
            return sample
        return (
            self.spec is None  # (sample_due says True then; for the type checker)
            or self.last_decision is None
            or now - self.last_decision >= self.spec.kpa.tick - 1e-6
        )


@dataclass
class Tick:
    scale: dict[str, int] = field(default_factory=dict)  # role -> replicas to write
    decision: Decision | None = None
    observed: dict[str, RoleObservation] = field(default_factory=dict)
    status: dict[str, Any] | None = None  # AutoscalingPolicy status to write, when due
    events: list[Event] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The learned state to save (a policy file with its online section), after a learned decision.
    save_state: dict[str, Any] | None = None


def state_config_map(model_service: str) -> str:
    """The ConfigMap that keeps a ModelService's learned autoscaling state."""
    return f"{model_service}-learned-state"


def shared_status(
    status: Mapping[str, Any],
    policy_body: Mapping[str, Any],
    model_service: str,
    ready: tuple[bool, str, str],
    wall_clock: datetime | None,
) -> dict[str, Any]:
    """The status patch with this ModelService's entry in ``status.modelServices``, and the
    Ready condition and summary over every ModelService's entry: a policy several ModelServices
    share is Ready when each of them is, and its summary shows each one's targets. Entries no
    loop rewrote for :data:`STALE_ENTRY_SECONDS` are removed (set to null in the merge patch).
    The other entries are those of the policy as read, which can lag a write by a moment; each
    loop rewrites its own at least every :data:`STATUS_REFRESH_SECONDS`."""
    now = wall_clock or datetime.now(UTC)
    seen = dict(((policy_body.get("status") or {}).get("modelServices")) or {})
    entry: dict[str, Any] = {
        "ready": "True" if ready[0] else "False",
        "reason": ready[1],
        "message": ready[2][:1024],
        "lastUpdateTime": now.strftime(policy_spec.STAMP),
    }
    summary = status.get("summary", (seen.get(model_service) or {}).get("summary"))
    if summary is not None:
        entry["summary"] = summary
    entries, patch = _other_entries(policy_body, {model_service}, now)
    entries[model_service] = patch[model_service] = entry
    out = dict(status)
    out["modelServices"] = patch
    if len(entries) > 1:
        out["summary"], ready = _aggregate(entries)
    out["conditions"] = [_ready_condition(policy_body, ready, now)]
    return out


def released_status(
    policy_body: Mapping[str, Any], model_services: AbstractSet[str], wall_clock: datetime | None
) -> dict[str, Any] | None:
    """The status patch that takes ``model_services`` (deleted, or now referring to another
    policy or none) out of the policy: their entries removed, the Ready condition and summary
    over the others' entries, or, with none left, ``Unused`` (and no per-role figures, which
    were of ModelServices it no longer scales). None when the policy has no entry of them."""
    status = policy_body.get("status") or {}
    leaving = model_services & set(status.get("modelServices") or {})
    if not leaving:
        return None
    now = wall_clock or datetime.now(UTC)
    entries, patch = _other_entries(policy_body, leaving, now)
    patch.update(dict.fromkeys(leaving))
    out: dict[str, Any] = {"modelServices": patch}
    if entries:
        out["summary"], ready = _aggregate(entries)
    else:
        out["summary"], out["roles"] = "unused", None
        ready = (False, "Unused", "no ModelService refers to this policy")
    out["conditions"] = [_ready_condition(policy_body, ready, now)]
    return out


def own_figures_patch(
    policy_body: Mapping[str, Any], model_service: str, patch: Mapping[str, Any]
) -> list[dict[str, Any]] | None:
    """``patch`` (a :func:`shared_status` merge patch made from ``policy_body``) as a JSON
    patch of this ModelService's own figures, when those are all it changes: its entry's
    ``lastUpdateTime`` (the refresh every :data:`STATUS_REFRESH_SECONDS`), the per-role figures
    (the latest decision's, whichever ModelService wrote it) and the SLO attainment. Its first
    operation tests that the entry is still as read, so the write needs no precondition on the
    whole policy and refreshes of ModelServices sharing it never conflict. None when the patch
    changes anything else (a decision, readiness, the summary, a stale entry to remove): that
    takes the whole-policy precondition."""
    status = policy_body.get("status") or {}
    seen = (status.get("modelServices") or {}).get(model_service)
    entry = (patch.get("modelServices") or {}).get(model_service)
    if not isinstance(seen, dict) or set(patch.get("modelServices") or {}) != {model_service}:
        return None
    if entry is None or _timeless(entry) != _timeless(seen):
        return None
    own = {"modelServices", "roles", "sloAttainment"}
    if any(value != status.get(key) for key, value in patch.items() if key not in own):
        return None
    roles = patch.get("roles") or {}
    if roles and not isinstance(status.get("roles"), dict):
        return None  # nothing to add the roles to: a merge patch creates the map
    path = f"/status/modelServices/{jsonpointer.escape(model_service)}"
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": path, "value": seen},
        {"op": "replace", "path": path, "value": entry},
    ]
    ops += [
        {"op": "add", "path": f"/status/roles/{jsonpointer.escape(role)}", "value": figures}
        for role, figures in roles.items()
    ]
    if "sloAttainment" in patch:
        ops.append({"op": "add", "path": "/status/sloAttainment", "value": patch["sloAttainment"]})
    return ops


@dataclass(frozen=True)
class StatusChange:
    """One writer's change to a policy's status, made from the policy as it is when written:
    ``make`` returns a merge patch of the status, or None when there is nothing to change.
    ``model_service`` names the ModelService whose loop made it, when the change may go out as
    that ModelService's own figures (:func:`own_figures_patch`)."""

    make: Callable[[Mapping[str, Any]], dict[str, Any] | None]
    model_service: str | None = None


@dataclass(frozen=True)
class CombinedWrite:
    """Several :class:`StatusChange` as one write of the policy's status: ``merge_patch``
    (to send with the policy's resourceVersion) and, when every change is only its
    ModelService's own figures, ``json_patch`` too (their operations in turn, sent without a
    precondition; the merge patch is the fallback when its tests fail). ``made`` says which
    changes had something to write."""

    merge_patch: dict[str, Any]
    json_patch: list[dict[str, Any]] | None
    made: tuple[bool, ...]


def combine_status_changes(
    policy_body: Mapping[str, Any], changes: Sequence[StatusChange]
) -> CombinedWrite | None:
    """``changes`` made in turn, each from the policy as the ones before it leave it, as one
    write; None when none has anything to write."""
    status: Any = policy_body.get("status") or {}
    current: Mapping[str, Any] = policy_body
    ops: list[dict[str, Any]] | None = []
    made: list[bool] = []
    for change in changes:
        patch = change.make(current)
        made.append(patch is not None)
        if patch is None:
            continue
        figures = (
            None
            if change.model_service is None or ops is None
            else own_figures_patch(current, change.model_service, patch)
        )
        ops = None if figures is None or ops is None else ops + figures
        current = {**current, "status": apply_merge_patch(current.get("status") or {}, patch)}
    if not any(made):
        return None
    return CombinedWrite(merge_patch_between(status, current["status"]), ops, tuple(made))


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with the JSON merge patch ``patch`` applied (RFC 7386), as the API server
    applies it; neither argument is changed."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out


def merge_patch_between(old: Any, new: Any) -> Any:
    """The JSON merge patch that turns ``old`` into ``new`` (RFC 7386: maps are patched key
    by key, a removed key is null, anything else is replaced whole). ``new`` holds no nulls,
    which a merge patch cannot write."""
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return new
    patch: dict[str, Any] = dict.fromkeys(old.keys() - new.keys())
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch_between(old[key], value)
    return patch


def _timeless(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "lastUpdateTime"}


def _other_entries(
    policy_body: Mapping[str, Any], excluded: AbstractSet[str], now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The policy's ``status.modelServices`` entries other than those of ``excluded`` that
    are fresh, and a merge patch removing the stale ones."""
    seen = dict(((policy_body.get("status") or {}).get("modelServices")) or {})
    entries: dict[str, Any] = {}
    patch: dict[str, Any] = {}
    for name, other in seen.items():
        if name in excluded:
            continue
        try:
            written = datetime.strptime(str(other["lastUpdateTime"]), policy_spec.STAMP).replace(
                tzinfo=UTC
            )
        except (KeyError, TypeError, ValueError):
            written = None
        if written is None or (now - written).total_seconds() > STALE_ENTRY_SECONDS:
            patch[name] = None
        else:
            entries[name] = other
    return entries, patch


def _aggregate(entries: Mapping[str, Any]) -> tuple[str | None, tuple[bool, str, str]]:
    """(summary, readiness) over ModelService entries: one alone speaks for itself; several
    are Ready when each is, and the summary names each one's targets."""
    if len(entries) == 1:
        ((_, only),) = entries.items()
        return only.get("summary"), (
            only.get("ready") == "True",
            str(only.get("reason")),
            str(only.get("message")),
        )
    summary = "; ".join(
        f"{name}: {e['summary']}" for name, e in sorted(entries.items()) if e.get("summary")
    )
    waiting = sorted(n for n, e in entries.items() if e.get("ready") != "True")
    if waiting:
        first = entries[waiting[0]]
        message = "; ".join(str(entries[n].get("message")) for n in waiting)
        return summary, (False, str(first.get("reason")), message)
    return summary, (
        True,
        "Scaling",
        f"every ModelService of the policy is scaling: {', '.join(sorted(entries))}",
    )


def _ready_condition(
    policy_body: Mapping[str, Any], ready: tuple[bool, str, str], now: datetime
) -> dict[str, Any]:
    previous = (policy_body.get("status") or {}).get("conditions") or []
    generation = int((policy_body.get("metadata") or {}).get("generation") or 0)
    return condition("Ready", *ready, generation, previous, now.strftime(policy_spec.STAMP))


def _not_ready(
    state: LoopState,
    tick: Tick,
    policy_body: Mapping[str, Any],
    model_service: str,
    reason: str,
    message: str,
    wall_clock: datetime | None,
) -> None:
    """Report this ModelService not ready in the policy status, once per distinct problem
    and then every STATUS_REFRESH_SECONDS (an entry not rewritten would be taken as gone)."""
    ready = (False, reason, message)
    now = wall_clock or datetime.now(UTC)
    written = state.ready_written
    if (
        state.ready != ready
        or written is None
        or (now - written).total_seconds() >= STATUS_REFRESH_SECONDS
    ):
        state.ready, state.ready_written = ready, now
        tick.status = shared_status({}, policy_body, model_service, ready, now)


def invalid_policy(
    state: LoopState,
    policy_body: Mapping[str, Any],
    model_service: str,
    where: str,
    error: Exception,
    wall_clock: datetime | None = None,
) -> Tick:
    """The tick of a policy that cannot be used (its spec, or its initialPolicy ConfigMap):
    a Warning once, Ready=False in its status, no scaling."""
    tick = Tick()
    _warn(state, tick, "InvalidAutoscalingPolicy", f"{where}: {error}")
    _not_ready(state, tick, policy_body, model_service, "InvalidSpec", str(error), wall_clock)
    return tick


def _warn(state: LoopState, tick: Tick, reason: str, message: str) -> None:
    tick.warnings.append(message)
    if state.problem != message:  # post each distinct problem once, not every tick
        state.problem = message
        tick.events.append(("Warning", reason, message))


def step(
    state: LoopState,
    now: float,
    *,
    model_service: str,
    policy_body: Mapping[str, Any] | None,
    policy_name: str,
    parsed: policy_spec.PolicySpec | None = None,
    namespace: str,
    roles: Sequence[str],
    limits: Mapping[str, RoleLimits],
    deployments: Mapping[str, RoleState],
    metrics: Mapping[str, RoleMetrics] | MetricsError | None,
    contested: Mapping[str, str] | None = None,
    model: LearnedModel | None = None,
    model_text: str | None = None,
    saved_state: Callable[[], str | None] | None = None,
    wall_clock: datetime | None = None,
) -> Tick:
    """One tick of the loop (see the module docstring). ``metrics`` is None when no sample was
    taken this tick (not due), and a :class:`MetricsError` when reading failed. ``contested``
    names, per role, another autoscaler of its Deployment (a HorizontalPodAutoscaler): while
    there is one, that role is left to it (neither observed nor scaled). ``model`` is a
    learned policy's initial policy and ``model_text`` its file's text; ``saved_state`` reads
    the text of the state a learned autoscaler saved (:func:`state_config_map`; None: there is
    none), called only when a learned autoscaler is built with nothing in memory to resume.
    ``parsed`` is ``policy_body`` parsed already (:func:`dunnage.autoscaling.spec.parse`)."""
    tick = Tick()
    where = f"ModelService {namespace}/{model_service}"
    if policy_body is None:
        message = (
            f"{where}, field spec.autoscaling.policyRef.name: AutoscalingPolicy "
            f"{namespace}/{policy_name} not found; replicas left as they are"
        )
        _warn(state, tick, "AutoscalingPolicyNotFound", message)
        state.ready = (False, "AutoscalingPolicyNotFound", message)  # no status to write it to
        return tick
    try:
        if parsed is None:
            parsed = policy_spec.parse(policy_body)
        spec = effective_spec(parsed, roles, limits)
        key = (
            parsed.generation,
            tuple(roles),
            tuple(sorted((r, spec.roles[r].bounds) for r in roles)),
            id(model),
        )
        if state.autoscaler is None or state.key != key:
            built = policy_spec.build_policy(spec, roles, model=model)
            learning_key = None
            if isinstance(built.source, LearnedTargets) and spec.persist_state:
                learning_key = policy_spec.learning_key(spec, model_text)
                saved = f"ConfigMap {namespace}/{state_config_map(model_service)}"
                _resume(state, built.source, spec, learning_key, model, saved, saved_state, tick)
            state.autoscaler = built
            state.learning_key = learning_key
            state.key = key
            state.last_sample = state.last_decision = None
            state.observed_roles = set()
        state.spec = spec
    except ValueError as exc:  # InputError: the message names the policy and field
        return invalid_policy(state, policy_body, model_service, where, exc, wall_clock)
    scaler = state.autoscaler

    contested = dict(contested or {})
    # Two controllers writing one Deployment's replicas would undo each other every tick: a
    # role another autoscaler scales is left to it, and the other roles are scaled as before.
    for role in contested:
        state.observed_roles.discard(role)  # its count is not the policy's while held
    deployments = {r: d for r, d in deployments.items() if r not in contested}
    others = "; ".join(f"role {r}: {who}" for r, who in sorted(contested.items()))
    held = (
        "nothing scaled"
        if not deployments
        else f"role {', '.join(sorted(contested))} left to it, the others scaled by the policy,"
    )
    message = (
        f"{where}: another autoscaler ({others}); {held} until it is removed "
        "or the ModelService's spec.autoscaling.policyRef is"
    )
    if contested != state.contested:
        if contested:
            tick.warnings.append(message)
            tick.events.append(("Warning", "ConflictingAutoscaler", message))
        if regained := sorted(set(state.contested) - set(contested)):
            tick.events.append(
                (
                    "Normal",
                    "AutoscalingResumed",
                    f"{where}: role {', '.join(regained)} scaled by the policy again "
                    "(its other autoscaler is gone)",
                )
            )
        state.contested = contested
    if contested and not deployments:
        _not_ready(
            state, tick, policy_body, model_service, "ConflictingAutoscaler", message, wall_clock
        )
        return tick
    for role, current in deployments.items():
        if current.set_by is None:
            state.set_elsewhere.pop(role, None)
        elif state.set_elsewhere.get(role) != (current.set_by, current.replicas):
            # Posted once per count: each of the policy's writes takes the field back, and
            # a tool that keeps applying its own count would fight it at every decision.
            state.set_elsewhere[role] = (current.set_by, current.replicas)
            message = (
                f"{where}: role {role}: {current.set_by} set its Deployment's spec.replicas to "
                f"{current.replicas}; AutoscalingPolicy {namespace}/{policy_name} decides that "
                "count and overwrites it whenever its decision differs (leave spec.replicas out "
                "of what that tool applies, or remove spec.autoscaling.policyRef)"
            )
            tick.warnings.append(message)
            tick.events.append(("Warning", "ReplicasSetElsewhere", message))
    if isinstance(metrics, MetricsError):
        state.metrics_failures += 1
        backoff = spec.sample_seconds * 2 ** min(state.metrics_failures - 1, 16)
        state.metrics_retry_at = now + min(
            backoff, max(METRICS_RETRY_MAX_SECONDS, spec.sample_seconds)
        )
        _warn(state, tick, "MetricsUnavailable", f"{where}: {metrics}")
        _not_ready(
            state, tick, policy_body, model_service, "MetricsUnavailable", str(metrics), wall_clock
        )
        return tick  # hold every count until metrics can be read again
    elif metrics is not None:
        state.metrics_failures, state.metrics_retry_at = 0, None
        seconds = spec.sample_seconds if state.last_sample is None else now - state.last_sample
        state.last_sample = now
        for role in roles:
            dep = deployments.get(role)
            if dep is None or role not in metrics:
                continue
            tick.observed[role] = observation(
                metrics[role],
                replicas=dep.replicas,
                ready_replicas=dep.ready_replicas,
                seconds=seconds,
                slo=role_slo(spec.slo, role),
            )
        if tick.observed:
            scaler.observe(now, tick.observed)
            state.observed_roles.update(tick.observed)
        # A role at zero replicas has no engines to scrape: silence is expected there.
        missing = [
            r for r in roles if r in deployments and deployments[r].replicas and r not in metrics
        ]
        state.missing = tuple(missing)
        if not missing and state.problem is not None:
            state.problem = None
            tick.events.append(
                ("Normal", "AutoscalingResumed", f"{where}: policy and metrics read")
            )
        if missing:
            _warn(
                state,
                tick,
                "NoMetrics",
                f"{where}: Prometheus has no engine series for role {', '.join(missing)} "
                f"(labels namespace={namespace!r}, model_service={model_service!r}, role); "
                "holding its replicas",
            )

    if state.last_decision is not None and now - state.last_decision < spec.kpa.tick - 1e-6:
        return tick
    state.last_decision = now
    decision = scaler.decide(now)
    tick.decision = decision
    for role, rd in decision.roles.items():
        dep = deployments.get(role)
        if dep is None:
            continue
        bounds = spec.roles[role].bounds
        # Without data the decider knows nothing about load: hold the count (within bounds)
        # instead of reading silence as zero load.
        no_data = role not in state.observed_roles or rd.reason == "no data"
        desired = bounds.clamp_replicas(dep.replicas if no_data else rd.desired)
        if dep.replicas and not dep.ready_replicas:
            since = state.activating_since.setdefault(role, now)
        else:
            since = None
            state.activating_since.pop(role, None)
        if desired == 0 and since is not None:
            # Waking up (replicas, none ready yet): Knative leaves an activating revision be
            # rather than scale it to zero before a pod could serve, up to a deadline.
            # After spec.kpa.activationTimeoutSeconds (Knative's progress deadline) it goes
            # back to zero: pods Pending for GPUs would otherwise wait, and press on the
            # cluster, for demand that has gone.
            if now - since < spec.activation_timeout_seconds:
                desired = dep.replicas
            else:
                tick.events.append(
                    (
                        "Warning",
                        "ActivationTimeout",
                        f"{role}: no replica ready {now - since:.0f} s after it was scaled "
                        "up, and no demand: back to zero",
                    )
                )
        if desired != dep.replicas:
            tick.scale[role] = desired
            obs = tick.observed.get(role)
            load = ""
            if obs is not None and spec.kpa.metric == "rps":
                load = f"{obs.request_rate:g} requests/s, "
            elif obs is not None:
                load = f"concurrency {obs.concurrency:g}, "
            tick.events.append(
                (
                    "Normal",
                    "Scaled",
                    f"{role}: {dep.replicas} -> {desired} replicas ({load}target "
                    f"{rd.target:g}/replica, {rd.reason}; policy {policy_name} {spec.policy}, "
                    f"bounds {bounds.min_replicas}..{bounds.max_replicas})",
                )
            )
    # The decision record uses the counts the Deployments had when it was made.
    record = Decision(
        time=decision.time,
        policy=decision.policy,
        roles={
            r: dataclasses.replace(
                rd,
                replicas=deployments[r].replicas if r in deployments else rd.replicas,
                desired=tick.scale.get(r, deployments[r].replicas if r in deployments else 0),
            )
            for r, rd in decision.roles.items()
            if r not in contested
        },
    )
    if (
        state.learning_key is not None
        and isinstance(scaler.source, LearnedTargets)
        and any(rd.learning for rd in decision.roles.values())
    ):
        doc = scaler.source.export(model, key=state.learning_key, metric=spec.kpa.metric)
        doc["online"].update(
            modelService=f"{namespace}/{model_service}",
            autoscalingPolicy=policy_name,
            savedTime=(wall_clock or datetime.now(UTC)).strftime(policy_spec.STAMP),
        )
        tick.save_state = doc
    status, _ = policy_spec.status_patch(
        spec, record, _history(state, policy_body), model_service=model_service, now=wall_clock
    )
    unseen = [
        r
        for r in roles
        if r in deployments
        and deployments[r].replicas
        and (r in state.missing or r not in state.observed_roles)
    ]
    left = "".join(f"; role {r} left to another autoscaler" for r in sorted(contested))
    ready = (
        (False, "NoMetrics", f"{where}: no engine series for role {', '.join(unseen)}")
        if unseen
        else (
            True,
            "Scaling",
            f"{where}: metrics read, replicas decided by the {spec.policy} policy{left}",
        )
    )
    if status_due(state, status, now) or state.ready != ready:
        tick.status = shared_status(status, policy_body, model_service, ready, wall_clock)
        state.last_status = status
        state.last_status_write = now
        state.ready, state.ready_written = ready, wall_clock or datetime.now(UTC)
    return tick


def _history(state: LoopState, policy_body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The decisions the policy's status records, with those of this loop's last status write
    that the policy as read does not show yet: the operator reads policies from a watch, which
    can lag that write by a moment (a status shared by several ModelServices keeps all of
    theirs, in time order)."""
    mine = ((state.last_status or {}).get("lastDecisions")) or []
    return merge_decisions(policy_body, mine)


def merge_decisions(
    policy_body: Mapping[str, Any], mine: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The policy's ``lastDecisions`` with those of ``mine`` it does not show, in time order."""
    seen = [dict(d) for d in ((policy_body.get("status") or {}).get("lastDecisions")) or []]
    merged = seen + [dict(d) for d in mine if d not in seen]
    return sorted(merged, key=policy_spec.decision_order)


def rebase_status(
    status: Mapping[str, Any],
    policy_body: Mapping[str, Any],
    model_service: str,
    wall_clock: datetime | None,
) -> dict[str, Any]:
    """``status`` (a patch :func:`shared_status` made from an older read of the policy) made
    again from ``policy_body`` as it is now: the decisions another ModelService's loop wrote
    meanwhile kept beside this one's, Ready and the summary over the entries now there."""
    entry = (status.get("modelServices") or {}).get(model_service) or {}
    ready = (entry.get("ready") == "True", str(entry.get("reason")), str(entry.get("message")))
    own = {k: v for k, v in status.items() if k not in ("modelServices", "conditions", "summary")}
    if "summary" in entry:
        own["summary"] = entry["summary"]
    if "lastDecisions" in status:
        own["lastDecisions"] = merge_decisions(policy_body, status["lastDecisions"])[
            -policy_spec.MAX_DECISIONS :
        ]
    return shared_status(own, policy_body, model_service, ready, wall_clock)


def _resume(
    state: LoopState,
    source: LearnedTargets,
    spec: policy_spec.PolicySpec,
    key: str,
    model: LearnedModel | None,
    saved: str,
    saved_state: Callable[[], str | None] | None,
    tick: Tick,
) -> None:
    """Give a newly built learned autoscaler the state learned so far: the running one's, when
    a policy edit keeps the learning key, else (after a restart) the one saved in ``saved``
    when it was learned under the same key. Every outcome but "nothing saved" is an Event."""
    where = f"AutoscalingPolicy {spec.namespace}/{spec.name}"
    start = "the initial policy" if model is not None else "fresh targets"
    old = state.autoscaler
    if old is not None and state.learning_key == key and isinstance(old.source, LearnedTargets):
        doc = old.source.export(model, key=key, metric=spec.kpa.metric)
        kept = source.restore(doc, "the running policy")
        message = f"{where}: learned targets kept across the policy's edit: {_targets(kept)}"
        tick.events.append(("Normal", "LearnedStateKept", message))
        return
    text = saved_state() if saved_state is not None else None
    if text is None:
        return
    try:
        raw = json.loads(text)
        online = raw.get("online") if isinstance(raw, dict) else None
        if isinstance(online, dict) and online.get("key") != key:
            message = (
                f"{where}: the learned state in {saved} was learned under another initial "
                f"policy, metric, SLO or SLO penalty; starting from {start}"
            )
            tick.events.append(("Normal", "LearnedStateDiscarded", message))
            return
        restored = source.restore(raw, f"{saved} key {STATE_KEY}")
    except ValueError as exc:  # bad JSON, or an InputError naming the part
        message = f"{where}: the learned state is not usable ({exc}); starting from {start}"
        tick.events.append(("Warning", "LearnedStateDiscarded", message))
        return
    if not restored:
        message = (
            f"{where}: no role's target ladder in {saved} matches the policy's; "
            f"starting from {start}"
        )
        tick.events.append(("Normal", "LearnedStateDiscarded", message))
        return
    # When it was saved: a ModelService reattached to its policy resumes however old it is
    # (delete the ConfigMap to start afresh).
    when = f", saved {raw['online']['savedTime']}" if raw["online"].get("savedTime") else ""
    message = (
        f"{where}: learned state restored from {saved} "
        f"({raw['online'].get('decisions', 0)} decisions{when}): {_targets(restored)}"
    )
    tick.events.append(("Normal", "LearnedStateRestored", message))


def _targets(targets: Mapping[str, float]) -> str:
    return " ".join(f"{role}={target:g}" for role, target in targets.items()) or "no role"


def _material(status: Mapping[str, Any]) -> Any:
    """A status without what changes every tick (timestamps, averaged concurrency)."""
    roles = {
        role: {k: v for k, v in r.items() if k not in ("lastUpdateTime", "stableConcurrency")}
        for role, r in (status.get("roles") or {}).items()
    }
    return (
        status.get("observedGeneration"),
        status.get("summary"),
        roles,
        len(status.get("lastDecisions") or []),
        [d.get("time") for d in status.get("lastDecisions") or []][-1:],
    )


def status_due(state: LoopState, status: Mapping[str, Any], now: float) -> bool:
    """Write when something a reader cares about changed, else every STATUS_REFRESH_SECONDS."""
    if state.last_status is None or state.last_status_write is None:
        return True
    if _material(state.last_status) != _material(status):
        return True
    return now - state.last_status_write >= STATUS_REFRESH_SECONDS
