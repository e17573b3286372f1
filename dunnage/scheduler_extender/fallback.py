"""The fallback planner: when pods stay unschedulable, plan, record and carry the plan out.

Loop (one thread, a tick every quarter second):
1. An executing plan is followed until its pods are placed (Succeeded) or it expires (Expired);
   evictions that did not go through yet are retried.
2. Otherwise, pods that kube-scheduler marked unschedulable (PodScheduled=False, reason
   Unschedulable) are batched over the policy's window; then the cluster is snapshotted from the
   watch cache and the solver gets the policy's time budget.
3. An improving plan is recorded as a PackingPlan, its steering orders are handed to the
   extender, and its victims (evictions and moved pods) are evicted through the Eviction API, so
   PodDisruptionBudgets hold: up to the policy's maxConcurrentEvictions calls at once, each
   round then written to the plan's status. A restarted planner resumes from the PackingPlan
   objects and never evicts twice: a victim already gone or terminating gets no second call, and
   each call carries the victim's UID as a precondition.
4. A certified-optimal result is recorded as such, with an Event on each pending pod saying why
   it waits; the same pending set is not planned again until the cluster changes.

When a plan ends, the nodes it kept for its pods get the annotation
``dunnage.io/released-by-plan: <plan>``: a node's annotations changing is a cluster event, so
kube-scheduler retries at once the pods the extender kept off those nodes. The plan's end
alone is none: they would wait for its 5-minute flush of unschedulable pods. A planner that
starts marks the nodes of the plan that ended last, if that was within those 5 minutes: the
process that ended it may have died before marking them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from dunnage.cluster.connect import MERGE_PATCH
from dunnage.cluster.devices import class_resource
from dunnage.cluster.events import post_event
from dunnage.cluster.model import DisruptionBudget, LabelSelector, Pod, Snapshot
from dunnage.scheduler_extender.cache import ClusterCache
from dunnage.scheduler_extender.nodestate import pod_gpus
from dunnage.scheduler_extender.steering import SteeringOrders
from dunnage.solver.plan import Plan, PlanStatus
from dunnage.solver.problem import LEFT_TO_KUBE_SCHEDULER

log = logging.getLogger(__name__)

# Fault injection for crash-recovery tests: the process dies (as if SIGKILLed) right after its
# Nth eviction call, before the eviction is written to the plan's status: the worst moment.
CRASH_AFTER_EVICTIONS_ENV = "DUNNAGE_FAULT_CRASH_AFTER_EVICTIONS"
# ...or right after writing that a plan ended, before marking its nodes released.
CRASH_BEFORE_MARKS_ENV = "DUNNAGE_FAULT_CRASH_BEFORE_MARKS"

GROUP, VERSION, PLURAL = "dunnage.io", "v1alpha1", "packingplans"
POLICY_LABEL = "dunnage.io/policy"  # on each PackingPlan: the policy it was made under
# Eviction calls in flight at once while a plan is carried out, unless the policy says
# otherwise. Each call waits on the apiserver, not on this process, so a plan's victims go out
# together rather than one by one.
DEFAULT_EVICTION_CONCURRENCY = 8
# Finished PackingPlans kept per policy unless the policy says otherwise: a pending set that
# stays pending while the cluster changes is re-decided every 30 s, and each decision is a plan.
DEFAULT_PLAN_HISTORY_LIMIT = 100
# After its window a batch stays open while pods keep becoming pending, until none has for this
# long (for at most another window): kube-scheduler marks a burst of pods Unschedulable one
# scheduling cycle at a time, and a plan that covers them all saves a second plan after it.
DEFAULT_BATCH_QUIET_SECONDS = 0.5
# Phases after which a plan is only a record.
FINISHED_PHASES = frozenset(
    {"Succeeded", "Expired", "Failed", "Certified", "NoImprovement", "DryRun"}
)
COMPONENT = "dunnage-planner"
# On each node a plan kept for its pods, once it ends: the plan's name (see the module's doc).
RELEASED_ANNOTATION = "dunnage.io/released-by-plan"
# The phases a plan that executed ends in (it kept nodes for its pods until then).
ENDED_PHASES = frozenset({"Succeeded", "Expired", "Failed"})
# kube-scheduler retries every unschedulable pod after this long anyway (its
# podMaxInUnschedulablePodsDuration): marks later than that would requeue nothing.
UNSCHEDULABLE_FLUSH_SECONDS = 300.0
# The kube-scheduler profiles that call the extender (the chart's and the local cluster's).
DEFAULT_SCHEDULER_NAMES = frozenset({"dunnage-scheduler", "default-scheduler"})


@dataclass(frozen=True)
class PlannerSettings:
    """The parts of a PackingPolicy the planner acts on."""

    policy: str = "default"
    time_budget_seconds: float = 1.0
    max_evictions: int | None = None
    max_moves: int | None = None
    namespaces: frozenset[str] = frozenset()  # empty: every namespace
    min_trigger_priority: int | None = None
    dry_run: bool = False
    batch_window_seconds: float = 1.0
    batch_quiet_seconds: float = DEFAULT_BATCH_QUIET_SECONDS
    plan_ttl_seconds: float = 60.0
    eviction_concurrency: int = DEFAULT_EVICTION_CONCURRENCY
    plan_history_limit: int = DEFAULT_PLAN_HISTORY_LIMIT
    scheduler_names: frozenset[str] = DEFAULT_SCHEDULER_NAMES
    # kube-scheduler consults the extender only for pods requesting one of its managedResources
    # (the policy's GPU resource names): only those pods can be steered.
    steerable_resources: tuple[str, ...] = ("nvidia.com/gpu",)


class SteeringSink(Protocol):
    """Where steering orders go: the extender's plan book."""

    def publish(self, orders: SteeringOrders) -> None: ...

    def retire(self, plan: str) -> None: ...


SolveFn = Callable[[Snapshot, PlannerSettings], Plan]


def solve_in_process(snapshot: Snapshot, settings: PlannerSettings) -> Plan:
    from dunnage.solver.planner import solve

    return solve(
        snapshot,
        time_limit=settings.time_budget_seconds,
        max_evictions=settings.max_evictions,
        max_moves=settings.max_moves,
        pin_bare_pods=True,
    )


FROZEN_LABEL = "dunnage.io/frozen"


def terminating_namespaces(namespaces: Iterable[dict[str, Any]]) -> set[str]:
    """Namespaces being deleted: no pod can be bound there, no replacement pod created."""
    return {
        ns["metadata"]["name"]
        for ns in namespaces
        if ns["metadata"].get("deletionTimestamp")
        or (ns.get("status") or {}).get("phase") == "Terminating"
    }


def leaving_pods(pods: Iterable[dict[str, Any]], namespaces: Iterable[dict[str, Any]]) -> set[str]:
    """Keys of the pods on their way out: being deleted, or in a namespace being deleted."""
    terminating = terminating_namespaces(namespaces)
    return {
        f"{meta['namespace']}/{meta['name']}"
        for meta in (pod["metadata"] for pod in pods)
        if meta.get("deletionTimestamp") or meta.get("namespace") in terminating
    }


def _asks_steerable(spec: Mapping[str, Any], resources: tuple[str, ...]) -> bool:
    """Whether a pod asks for one of ``resources``: in its containers, or, for a DeviceClass's
    resource, perhaps by its claims (the snapshot tells: plannable)."""
    if pod_gpus(spec, resources):
        return True
    return bool(spec.get("resourceClaims")) and any(class_resource(r) for r in resources)


def plannable(
    snapshot: Snapshot,
    resources: tuple[str, ...],
    leaving: Collection[str] = (),
    schedulers: Collection[str] = DEFAULT_SCHEDULER_NAMES,
) -> Snapshot:
    """The snapshot as a plan may change it. Pods requesting none of ``resources``, or placed
    by a scheduler not in ``schedulers`` (one that does not call this extender), are never
    seen by the extender, so their replacements cannot be steered and nothing keeps them off
    the room a plan makes; pods in ``leaving`` (keys) are going away. Running ones still hold
    their room and are frozen (a zero disruption budget: neither moved nor evicted); pending
    ones are left out of the plan."""

    # A pod pinned by a shared ResourceClaim, or following the pod planned with one, asks its
    # devices of no resource (the claim has them): counted as asking a DeviceClass's, as
    # _asks_steerable counts its claims.
    by_claims = any(class_resource(r) for r in resources)

    def steerable(pod: Pod) -> bool:
        # A DeviceClass's resource covers the requests that narrow the class (devices.py).
        return pod.scheduler_name in schedulers and (
            any(
                n > 0 and (r in resources or class_resource(r) in resources)
                for r, n in pod.requests.items()
            )
            or (by_claims and bool(pod.claim_affinity or pod.follows))
        )

    pods: list[Pod] = []
    frozen_namespaces: set[str] = set()
    for pod in snapshot.pods:
        if steerable(pod) and pod.key not in leaving:
            pods.append(pod)
        elif pod.bound:
            pods.append(replace(pod, labels={**pod.labels, FROZEN_LABEL: "true"}))
            frozen_namespaces.add(pod.namespace)
    budgets = snapshot.budgets + tuple(
        DisruptionBudget(
            namespace=ns,
            name="dunnage-frozen",
            selector=LabelSelector(match_labels={FROZEN_LABEL: "true"}),
            disruptions_allowed=0,
        )
        for ns in sorted(frozen_namespaces)
    )
    return Snapshot(snapshot.nodes, tuple(pods), budgets)


# A decision that executed nothing (certified, no improvement, dry run) stands for the same
# pending pods under the same policy until the cluster has changed and this long has passed:
# the pods' own status updates and unrelated churn change the cluster all the time.
REDECIDE_AFTER_SECONDS = 30.0


@dataclass(frozen=True)
class Decision:
    pending: frozenset[str]
    settings: PlannerSettings
    generation: int  # of the watch cache
    at: float  # monotonic


def already_decided(
    last: Decision | None,
    pending: frozenset[str],
    settings: PlannerSettings,
    generation: int,
    now: float,
) -> bool:
    """Whether ``last`` still stands for these pending pods: the same pods, the same policy
    (an edited PackingPolicy is acted on at once), and the cluster unchanged or decided on less
    than :data:`REDECIDE_AFTER_SECONDS` ago (pure; tested without a cluster)."""
    if last is None or last.pending != pending or last.settings != settings:
        return False
    return generation == last.generation or now - last.at < REDECIDE_AFTER_SECONDS


def _crash_after_evictions() -> int | None:
    value = os.environ.get(CRASH_AFTER_EVICTIONS_ENV)
    return int(value) if value else None


def is_unschedulable(pod: dict[str, Any]) -> bool:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if spec.get("nodeName") or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "PodScheduled"
        and c.get("status") == "False"
        and c.get("reason") == "Unschedulable"
        for c in status.get("conditions") or []
    )


def now_rfc3339(offset: float = 0.0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(value: str) -> float:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


@dataclass
class _Executing:
    name: str
    orders: SteeringOrders
    victims: list[dict[str, str]]  # {"pod", "uid", "node"}: evictions, then moves
    evicted: set[str] = field(default_factory=set)  # UIDs already evicted
    refused: set[str] = field(default_factory=set)  # UIDs a PodDisruptionBudget held back
    bindings: dict[str, str] = field(default_factory=dict)
    moves: list[dict[str, str]] = field(default_factory=list)


def plan_object(
    name: str, plan: Plan, snapshot: Snapshot, settings: PlannerSettings
) -> dict[str, Any]:
    """The PackingPlan recording a planner decision (pure; tested without a cluster)."""
    pods = snapshot.pod_by_key
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PackingPlan",
        "metadata": {"name": name, "labels": {POLICY_LABEL: settings.policy}},
        "spec": {
            "policy": settings.policy,
            "outcome": plan.status.value,
            "dryRun": settings.dry_run,
            "expiresAt": now_rfc3339(settings.plan_ttl_seconds),
            "provenOptimal": plan.proven_optimal,
            "placementsProvenOptimal": plan.placements_proven_optimal,
            "solveSeconds": round(plan.solve_seconds, 3),
            "bindings": [{"pod": b.pod, "node": b.node} for b in plan.bindings],
            "followers": followers(plan, snapshot),
            "moves": [
                {
                    "pod": m.pod,
                    "uid": pods[m.pod].uid,
                    "owner": pods[m.pod].owner or "",
                    "from": m.source,
                    "to": m.target,
                }
                for m in plan.moves
            ],
            "evictions": [
                {"pod": e.pod, "uid": pods[e.pod].uid, "node": e.node} for e in plan.evictions
            ],
            "ownerQuotas": owner_quotas(plan, snapshot),
            "placedByPriority": {
                "before": {str(k): v for k, v in plan.placed_before.items()},
                "after": {str(k): v for k, v in plan.placed_after.items()},
            },
        },
    }


def plans_to_prune(plans: Iterable[dict[str, Any]], keep: int) -> list[str]:
    """The finished plans beyond the ``keep`` newest, oldest first (pure; the caller lists one
    policy's plans). Plans still executing, or not yet given a phase, are never among them."""
    finished = sorted(
        (p for p in plans if (p.get("status") or {}).get("phase") in FINISHED_PHASES),
        key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]),
    )
    return [p["metadata"]["name"] for p in finished[: max(0, len(finished) - keep)]]


def owner_quotas(plan: Plan, snapshot: Snapshot) -> list[dict[str, Any]]:
    """For each owner a move targets: how many of its pods each target node has after the
    plan (what the extender lets the owner's interchangeable replacements fill)."""
    pods = snapshot.pod_by_key
    targets = {
        (f"{pods[m.pod].namespace}/{pods[m.pod].owner}", m.target)
        for m in plan.moves
        if pods[m.pod].owner
    }
    counts: dict[tuple[str, str], int] = dict.fromkeys(targets, 0)
    for pod in snapshot.pods:
        node = plan.assignments.get(pod.key)
        key = (f"{pod.namespace}/{pod.owner}", node or "")
        if pod.owner and key in counts:
            counts[key] += 1
    return [{"owner": o, "node": n, "pods": k} for (o, n), k in sorted(counts.items())]


def plan_name(snapshot_pending: list[str]) -> str:
    digest = hashlib.sha1("\n".join(sorted(snapshot_pending)).encode()).hexdigest()[:6]
    return f"plan-{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}-{digest}"


def followers(plan: Plan, snapshot: Snapshot) -> list[dict[str, str]]:
    """The pending pods that follow a pod the plan binds (Pod.follows: they name the claim
    planned as its, not allocated yet), each with that pod's node."""
    bound = {b.pod: b.node for b in plan.bindings}
    return [
        {"pod": pod.key, "node": bound[pod.follows]}
        for pod in snapshot.pods
        if not pod.bound and pod.follows in bound
    ]


def executing_from(obj: dict[str, Any]) -> _Executing:
    """The executor's state for a PackingPlan object (pure: a plan resumes from its object).
    Its followers are steered with its bindings (not kept off the nodes the plan reserves,
    where their claim will be) but not waited for."""
    spec, status = obj["spec"], obj.get("status") or {}
    bound = {b["pod"]: b["node"] for b in spec.get("bindings", [])}
    pods = {**{f["pod"]: f["node"] for f in spec.get("followers", [])}, **bound}
    owners: dict[str, list[str]] = {}
    for m in spec.get("moves", []):
        if m.get("owner"):
            ns = m["pod"].split("/", 1)[0]
            owners.setdefault(f"{ns}/{m['owner']}", []).append(m["to"])
    quotas: dict[str, dict[str, int]] = {}
    for q in spec.get("ownerQuotas", []):
        quotas.setdefault(q["owner"], {})[q["node"]] = int(q["pods"])
    victims_by_node: dict[str, list[str]] = {}
    for e in spec.get("evictions", []):
        victims_by_node.setdefault(e["node"], []).append(e["uid"])
    orders = SteeringOrders(
        plan=obj["metadata"]["name"],
        expires_at=_parse_rfc3339(spec["expiresAt"]),
        pods=pods,
        owners={k: tuple(v) for k, v in owners.items()},
        victims={k: tuple(v) for k, v in victims_by_node.items()},
        nodes=frozenset(pods.values()) | {m["to"] for m in spec.get("moves", [])},
        owner_quota=quotas,
    )
    victims = [
        {"pod": e["pod"], "uid": e["uid"], "node": e["node"]} for e in spec.get("evictions", [])
    ]
    victims += [
        {"pod": m["pod"], "uid": m["uid"], "node": m["from"]} for m in spec.get("moves", [])
    ]
    return _Executing(
        name=obj["metadata"]["name"],
        orders=orders,
        victims=victims,
        evicted=set(status.get("evicted") or []),
        bindings=bound,
        moves=list(spec.get("moves", [])),
    )


def batch_closed(first_seen: Collection[float], now: float, settings: PlannerSettings) -> bool:
    """Whether the pending pods, first seen at these times, are planned now: once the window
    has passed since the first, and no pod has come for ``batch_quiet_seconds`` or the window
    has passed a second time (pure)."""
    if not first_seen:
        return False
    window, quiet = settings.batch_window_seconds, settings.batch_quiet_seconds
    since_first, since_last = now - min(first_seen), now - max(first_seen)
    return since_first >= window and (since_last >= quiet or since_first >= 2 * window)


def executing_orders(plans: Iterable[dict[str, Any]], now: float) -> list[SteeringOrders]:
    """The steering orders of the PackingPlan objects being carried out (phase Executing, not
    yet expired): what a standby replica steers by, as the leader does (pure)."""
    return [
        executing_from(obj).orders
        for obj in plans
        if (obj.get("status") or {}).get("phase") == "Executing"
        and _parse_rfc3339(obj["spec"]["expiresAt"]) > now
    ]


def last_ended_plan(plans: Iterable[dict[str, Any]], now: float) -> dict[str, Any] | None:
    """The PackingPlan that ended last of those that executed, if it ended within
    kube-scheduler's flush of unschedulable pods and none is executing now: the one whose
    nodes a planner dying at its end may have left unmarked (pure)."""
    ended: list[tuple[float, dict[str, Any]]] = []
    for obj in plans:
        status = obj.get("status") or {}
        if status.get("phase") == "Executing":
            return None
        conditions = status.get("conditions") or [{}]
        when = conditions[0].get("lastTransitionTime")
        if status.get("phase") in ENDED_PHASES and when:
            ended.append((_parse_rfc3339(when), obj))
    if not ended:
        return None
    when, obj = max(ended, key=lambda e: (e[0], e[1]["metadata"]["name"]))
    return obj if now - when <= UNSCHEDULABLE_FLUSH_SECONDS else None


def unmet_orders(ex: _Executing, pods: Iterable[dict[str, Any]]) -> list[str]:
    """What an executing plan still waits for, given the cluster's pods: victims not yet
    evicted, planned pods bound elsewhere or not yet, moved pods' owners short of replacements
    on the target nodes. Empty when the plan is done (pure; tested without a cluster)."""
    unmet = [f"{v['pod']} not yet evicted" for v in ex.victims if v["uid"] not in ex.evicted]
    # The owner's pods a target node has after the plan (what the extender steers to), at
    # least one per move there: pods it already had there do not stand in for a replacement.
    wanted = {
        (owner, node): max(nodes.count(node), ex.orders.owner_quota.get(owner, {}).get(node, 0))
        for owner, nodes in ex.orders.owners.items()
        for node in nodes
    }
    bound_to: dict[str, str | None] = {}
    have: dict[tuple[str, str], int] = {}
    for pod in pods:
        meta = pod["metadata"]
        bound = (pod.get("spec") or {}).get("nodeName")
        key = f"{meta['namespace']}/{meta['name']}"
        if key in ex.bindings:
            bound_to[key] = bound
        for ref in meta.get("ownerReferences") or []:
            if ref.get("controller") and bound:
                k = (f"{meta['namespace']}/{ref['kind']}/{ref['name']}", bound)
                have[k] = have.get(k, 0) + 1
    # A planned pod that is gone (deleted meanwhile) no longer holds the plan up.
    unmet += [
        f"{key} on {bound_to[key] or 'no node'}, planned for {node}"
        for key, node in ex.bindings.items()
        if key in bound_to and bound_to[key] != node
    ]
    unmet += [
        f"{owner} has {have.get((owner, node), 0)} of {n} pods on {node}"
        for (owner, node), n in sorted(wanted.items())
        if have.get((owner, node), 0) < n
    ]
    return unmet


class FallbackPlanner:
    def __init__(
        self,
        api_client: client.ApiClient,
        cache: ClusterCache,
        steering: SteeringSink,
        settings: PlannerSettings | Callable[[], PlannerSettings],
        solve_fn: SolveFn = solve_in_process,
        metrics: Any = None,
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.cache = cache
        self.steering = steering
        self._settings = settings
        self.solve_fn = solve_fn
        self.metrics = metrics
        self.executing: _Executing | None = None
        self._first_seen: dict[str, float] = {}
        self._settled: Decision | None = None  # the last decision (reset when a plan ends)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._evictions_made = 0

    @property
    def settings(self) -> PlannerSettings:
        return self._settings() if callable(self._settings) else self._settings

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.resume()
        self._thread = threading.Thread(target=self._loop, name="fallback-planner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.tick()
            except Exception:  # keep planning; one bad tick must not stop the loop
                log.exception("planner tick failed")

    def resume(self) -> None:
        """Pick up a plan a previous planner process left executing."""
        try:
            listed = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            items = cast(dict[str, Any], listed)["items"]
        except ApiException as exc:
            log.warning("cannot list PackingPlans: %s", exc.reason)
            return
        last_ended = last_ended_plan(items, time.time())
        for obj in sorted(items, key=lambda o: o["metadata"]["name"]):
            phase = (obj.get("status") or {}).get("phase")
            if phase != "Executing":
                continue
            spec = obj["spec"]
            expires = _parse_rfc3339(spec["expiresAt"])
            name = obj["metadata"]["name"]
            if expires <= time.time():
                self._set_phase(
                    name, "Expired", "TTLElapsed", "the plan expired while no planner ran"
                )
                self._count_finished("Expired")
                self._mark_released(executing_from(obj).orders.nodes, name)
                continue
            self.executing = executing_from(obj)
            self.steering.publish(self.executing.orders)
            log.info(
                "resumed plan %s (%d of %d victims evicted)",
                name,
                len(self.executing.evicted),
                len(self.executing.victims),
            )
        if last_ended is not None:
            # Its nodes again (a node marked already is not changed: no event).
            name = last_ended["metadata"]["name"]
            log.info("marking the nodes of plan %s, which ended last, released", name)
            self._mark_released(executing_from(last_ended).orders.nodes, name)
        self._prune(self.settings)

    # --- one tick ------------------------------------------------------------------------

    def tick(self) -> None:
        if not self.cache.synced:
            return
        if self.executing is not None:
            self._follow(self.executing)
            return
        settings = self.settings
        pending = self._unschedulable(settings)
        now = time.monotonic()
        for key in list(self._first_seen):
            if key not in pending:
                del self._first_seen[key]
        for key in pending:
            self._first_seen.setdefault(key, now)
        if not pending or not batch_closed(self._first_seen.values(), now, settings):
            return
        generation = self.cache.generation
        if already_decided(self._settled, frozenset(pending), settings, generation, now):
            return
        self._plan(pending, settings)
        self._settled = Decision(frozenset(pending), settings, generation, now)

    def _unschedulable(self, settings: PlannerSettings) -> dict[str, dict[str, Any]]:
        out = {}
        terminating = terminating_namespaces(self.cache.objects("Namespace"))
        for pod in self.cache.objects("Pod"):
            if not is_unschedulable(pod):
                continue
            meta, spec = pod["metadata"], pod.get("spec") or {}
            if settings.namespaces and meta.get("namespace") not in settings.namespaces:
                continue
            if meta.get("namespace") in terminating:
                continue  # it can never be bound
            if spec.get("schedulerName", "default-scheduler") not in settings.scheduler_names:
                continue
            prio = spec.get("priority") or 0
            if settings.min_trigger_priority is not None and prio < settings.min_trigger_priority:
                continue
            if not _asks_steerable(spec, settings.steerable_resources):
                continue  # the extender never sees it, so no plan could steer it
            out[f"{meta['namespace']}/{meta['name']}"] = pod
        return out

    def _plan(self, pending: dict[str, dict[str, Any]], settings: PlannerSettings) -> None:
        leaving = leaving_pods(self.cache.objects("Pod"), self.cache.objects("Namespace"))
        snapshot = plannable(
            self.cache.snapshot(), settings.steerable_resources, leaving, settings.scheduler_names
        )
        plan = self.solve_fn(snapshot, settings)
        self._observe("plan", plan)
        name = plan_name(list(pending))
        log.info(
            "plan %s: %s in %.2fs (%d bindings, %d moves, %d evictions; %d pending)",
            name,
            plan.status.value,
            plan.solve_seconds,
            len(plan.bindings),
            len(plan.moves),
            len(plan.evictions),
            len(pending),
        )
        log.debug("plan %s: solver stats %s", name, plan.stats)
        if plan.status is not PlanStatus.IMPROVED:
            self._record_decision(name, plan, snapshot, settings, pending)
            return
        obj = plan_object(name, plan, snapshot, settings)
        phase = "DryRun" if settings.dry_run else "Executing"
        self.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, obj)
        self._note_plan(settings, name)
        self._set_phase(name, phase, "Planned", self._summary(plan), evicted=[])
        following = {f["pod"]: f["node"] for f in obj["spec"]["followers"]}
        for key, pod in pending.items():
            node = plan.assignments.get(key)
            if node:
                self._event(pod, "Planned", f"dunnage plan {name} places this pod on {node}")
            elif key in following:
                leader = snapshot.pod_by_key[key].follows
                message = (
                    f"dunnage plan {name} places {leader}, planned with the ResourceClaim this "
                    f"pod names too, on {following[key]}: this pod follows it there"
                )
                self._event(pod, "Planned", message)
            else:  # placed pods' plan, not this one's: say why it waits
                why = plan.unplaced_reasons.get(key) or (
                    f"no room found for it too within {settings.time_budget_seconds:g}s"
                )
                self._event(pod, "NotPlaced", f"dunnage plan {name} leaves this pod pending: {why}")
        if settings.dry_run:
            self._prune(settings)
            return
        obj["status"] = {"evicted": []}
        self.executing = executing_from(obj)
        self.steering.publish(self.executing.orders)
        self._follow(self.executing)

    def _summary(self, plan: Plan) -> str:
        return (
            f"{plan.status.value}: placed {dict(plan.placed_before)} -> {dict(plan.placed_after)}; "
            f"{len(plan.bindings)} bindings, {len(plan.moves)} moves, {len(plan.evictions)} evictions"
        )

    def _record_decision(
        self,
        name: str,
        plan: Plan,
        snapshot: Snapshot,
        settings: PlannerSettings,
        pending: dict[str, dict[str, Any]],
    ) -> None:
        if plan.status is PlanStatus.OPTIMAL:
            phase, reason = "Certified", "CertifiedOptimal"
            message = (
                f"dunnage plan {name}: the current placement is proven optimal; no plan can place "
                "this pod without evicting pods of equal or higher priority or breaking a "
                "PodDisruptionBudget"
            )
        else:
            phase, reason = "NoImprovement", "NoImprovement"
            message = (
                f"dunnage plan {name}: no better placement found within "
                f"{settings.time_budget_seconds:g}s"
            )
        obj = plan_object(name, plan, snapshot, settings)
        self.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, obj)
        self._note_plan(settings, name)
        self._set_phase(name, phase, reason, self._summary(plan))
        self._prune(settings)
        for key, pod in pending.items():
            why = plan.unplaced_reasons.get(key)
            if why and why.startswith(LEFT_TO_KUBE_SCHEDULER):  # not searched for: say so
                self._event(pod, reason, f"dunnage plan {name}: {why}")
            else:
                self._event(pod, reason, message + (f" ({why})" if why else ""))

    # --- carrying a plan out -------------------------------------------------------------

    def _follow(self, ex: _Executing) -> None:
        if time.time() >= ex.orders.expires_at and (unmet := self._unmet(ex)):
            self._finish(
                ex,
                "Expired",
                "TTLElapsed",
                "the plan expired before all its pods were placed: "
                + "; ".join(unmet[:5])
                + (f"; and {len(unmet) - 5} more" if len(unmet) > 5 else ""),
            )
            return
        outstanding = [v for v in ex.victims if v["uid"] not in ex.evicted]
        if outstanding:
            # The crash-injection hook counts calls, which only means something one at a time.
            workers = 1 if _crash_after_evictions() else self.settings.eviction_concurrency
            with ThreadPoolExecutor(workers, thread_name_prefix="evict") as pool:
                done = list(pool.map(lambda v: self._evict(ex, v), outstanding))
            evicted = {v["uid"] for v, ok in zip(outstanding, done, strict=True) if ok}
            if evicted:
                ex.evicted |= evicted
                self._patch_status(ex.name, {"evicted": sorted(ex.evicted)})
            for victim, ok in zip(outstanding, done, strict=True):
                if not ok and victim["uid"] not in ex.refused:  # say so once, retry every tick
                    ex.refused.add(victim["uid"])
                    log.info(
                        "eviction of %s refused by a PodDisruptionBudget; retrying", victim["pod"]
                    )
        if not self._unmet(ex):
            self._finish(ex, "Succeeded", "Placed", "every planned pod runs on its planned node")

    def _evict(self, ex: _Executing, victim: dict[str, str]) -> bool:
        """Evict one victim unless it is gone or leaving; False if a PodDisruptionBudget
        refuses (runs on the eviction pool's threads: records nothing in ``ex``)."""
        namespace, name = victim["pod"].split("/", 1)
        live = self.cache.get("Pod", namespace, name)
        gone = live is None or live["metadata"].get("uid") != victim["uid"]
        terminating = live is not None and live["metadata"].get("deletionTimestamp")
        if not gone and not terminating:
            body = client.V1Eviction(
                metadata=client.V1ObjectMeta(name=name, namespace=namespace),
                delete_options=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(uid=victim["uid"])
                ),
            )
            try:
                self.core.create_namespaced_pod_eviction(name, namespace, body)
            except ApiException as exc:
                if exc.status == 429:  # a PodDisruptionBudget says not now
                    log.debug("eviction of %s refused by a PodDisruptionBudget", victim["pod"])
                    return False
                if exc.status not in (404, 409):
                    raise
            moved = any(m.get("uid") == victim["uid"] for m in ex.moves)
            self._count("moves" if moved else "evictions")
            self._evictions_made += 1
            if self._evictions_made == _crash_after_evictions():
                log.error("fault injection: exiting after %d eviction(s)", self._evictions_made)
                os._exit(137)
        return True

    def _unmet(self, ex: _Executing) -> list[str]:
        return unmet_orders(ex, self.cache.objects("Pod"))

    def _finish(self, ex: _Executing, phase: str, reason: str, message: str) -> None:
        self.steering.retire(ex.name)
        self.executing = None
        self._settled = None
        self._set_phase(ex.name, phase, reason, message)
        if os.environ.get(CRASH_BEFORE_MARKS_ENV):
            log.error("fault injection: exiting before marking plan %s's nodes", ex.name)
            os._exit(137)
        self._mark_released(ex.orders.nodes, ex.name)
        if phase == "Succeeded":
            self._count("placed", len(ex.bindings))
        self._count_finished(phase)
        log.info("plan %s %s: %s", ex.name, phase.lower(), message)
        self._prune(self.settings)

    # --- API helpers ---------------------------------------------------------------------

    def _mark_released(self, nodes: Iterable[str], plan: str) -> None:
        """Annotate ``nodes`` as released by the ``plan`` that ended (see the module's doc);
        all at once, as evictions go. A node deleted meanwhile is skipped."""
        names = sorted(nodes)
        if not names:
            return
        body = {"metadata": {"annotations": {RELEASED_ANNOTATION: plan}}}

        def mark(node: str) -> None:
            try:
                self.core.patch_node(node, body, _content_type=MERGE_PATCH)
            except ApiException as exc:
                if exc.status != 404:
                    log.warning(
                        "cannot mark node %s released by plan %s: %s", node, plan, exc.reason
                    )

        workers = min(len(names), self.settings.eviction_concurrency)
        with ThreadPoolExecutor(workers, thread_name_prefix="mark") as pool:
            list(pool.map(mark, names))

    def _set_phase(self, name: str, phase: str, reason: str, message: str, **extra: Any) -> None:
        condition = {
            "type": "Complete"
            if phase in ("Succeeded", "Certified", "NoImprovement")
            else "Active",
            "status": "True" if phase not in ("Expired", "Failed") else "False",
            "reason": reason,
            "message": message,
            "lastTransitionTime": now_rfc3339(),
        }
        self._patch_status(name, {"phase": phase, "conditions": [condition], **extra})

    def _patch_status(self, name: str, status: dict[str, Any]) -> None:
        try:
            self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, PLURAL, name, {"status": status}
            )
        except ApiException as exc:
            log.warning("cannot update PackingPlan %s status: %s", name, exc.reason)

    def _note_plan(self, settings: PlannerSettings, name: str) -> None:
        """Point the policy's status at its latest plan (a policy that is not an object, the
        defaults, has no status to write)."""
        from dunnage.scheduler_extender.policy import PLURAL as POLICIES  # it imports this module

        status = {"lastPlan": name, "lastPlanTime": now_rfc3339()}
        try:
            self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, POLICIES, settings.policy, {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning(
                    "cannot update PackingPolicy %s status: %s", settings.policy, exc.reason
                )

    def _prune(self, settings: PlannerSettings) -> None:
        """Delete this policy's finished plans beyond its ``planHistoryLimit``."""
        selector = f"{POLICY_LABEL}={settings.policy}"
        try:
            listed = self.custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, label_selector=selector
            )
        except ApiException as exc:
            log.warning("cannot list PackingPlans: %s", exc.reason)
            return
        names = plans_to_prune(cast(dict[str, Any], listed)["items"], settings.plan_history_limit)
        for name in names:
            try:
                self.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("cannot delete PackingPlan %s: %s", name, exc.reason)
                    return
        if names:
            log.info(
                "deleted %d finished PackingPlan(s) beyond policy %s's planHistoryLimit (%d)",
                len(names),
                settings.policy,
                settings.plan_history_limit,
            )

    def _event(self, pod: dict[str, Any], reason: str, message: str) -> None:
        meta = pod["metadata"]
        involved = client.V1ObjectReference(
            kind="Pod",
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid"),
            api_version="v1",
        )
        post_event(self.core, involved, reason, message, component=COMPONENT)

    def _observe(self, what: str, plan: Plan) -> None:
        if self.metrics is not None:
            self.metrics.observe_plan(plan)

    def _count(self, what: str, n: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.count(what, n)

    def _count_finished(self, phase: str) -> None:
        if self.metrics is not None:
            self.metrics.finish_plan(phase)
