"""The extender's live side, when it has a cluster: watch cache, node state, policy, planner.

One :class:`ClusterCache` feeds both the node state (GPU-aware prioritize) and the fallback
planner; the planner publishes its steering orders into the extender's :class:`PlanBook`, in the
same process, so a plan is enforced on the very next filter call. Under leader election a
standby runs no planner and fills its book from the leader's PackingPlans (:class:`PlanMirror`).
The PackingPolicy is re-read every few seconds (an edit takes effect on the next plan); the
solver runs in process or, with a solver address, in the gRPC solver service.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from dunnage.errors import InputError
from dunnage.scheduler_extender.cache import ClusterCache
from dunnage.scheduler_extender.devicegpus import KINDS as DEVICE_KINDS
from dunnage.scheduler_extender.fallback import (
    GROUP,
    PLURAL,
    VERSION,
    PlannerSettings,
    executing_orders,
)
from dunnage.scheduler_extender.metrics import DunnageMetrics
from dunnage.scheduler_extender.nodestate import NodeState
from dunnage.scheduler_extender.planbook import PlanBook
from dunnage.scheduler_extender.policy import DEFAULT_NAME, PackingPolicy

log = logging.getLogger(__name__)

NODE_STATE_RESYNC_SECONDS = 60.0
POLICY_REFRESH_SECONDS = 5.0
PLAN_MIRROR_REFRESH_SECONDS = 5.0


class PolicySource:
    """The current PackingPolicy, fetched at most every ``refresh_seconds``.

    A fetch that fails (API error, invalid policy) keeps the last good policy and logs why.
    """

    def __init__(
        self,
        fetch: Callable[[], PackingPolicy],
        *,
        refresh_seconds: float = POLICY_REFRESH_SECONDS,
        initial: PackingPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._refresh = refresh_seconds
        self._clock = clock
        self._policy = initial or PackingPolicy()
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def current(self) -> PackingPolicy:
        with self._lock:
            if self._clock() - self._fetched_at >= self._refresh:
                self._fetched_at = self._clock()
                try:
                    policy = self._fetch()
                except InputError as exc:
                    log.warning(
                        "ignoring invalid PackingPolicy (keeping the last good one): %s", exc
                    )
                except Exception as exc:
                    log.warning("cannot read PackingPolicy (keeping the last one): %s", exc)
                else:
                    if policy != self._policy:
                        log.info("PackingPolicy %s: %s", policy.name, policy)
                    self._policy = policy
            return self._policy

    def settings(self) -> PlannerSettings:
        return self.current().to_settings()


class PlanMirror:
    """A standby's copy of the leader's plans: the steering orders of every executing
    PackingPlan, watched and loaded into the standby's PlanBook, so that it answers
    kube-scheduler's calls as the leader would (the Service sends them to every ready replica).

    The leader records a plan before its first eviction, so the calls a plan's steering is
    for (its pending pods and the victims' replacements) come after the watch delivered it.
    """

    def __init__(self, api_client: Any, book: PlanBook) -> None:
        custom = client.CustomObjectsApi(api_client)
        list_plans = functools.partial(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        self._cache = ClusterCache(api_client, {"PackingPlan": list_plans})
        self._book = book
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._cache.on_change(lambda *_: self._load())

    @property
    def synced(self) -> bool:
        return bool(self._cache.synced)

    def start(self) -> None:
        self._cache.start()

        def refresh() -> None:  # re-lists do not call listeners; expiries need no event
            while not self._stopped.is_set():
                if self._cache.wait_synced(timeout=5.0):
                    self._load()
                    self._stopped.wait(PLAN_MIRROR_REFRESH_SECONDS)

        threading.Thread(target=refresh, name="plan-mirror", daemon=True).start()

    def stop(self) -> None:
        """Stop mirroring; once this returns the book is not written again from here."""
        with self._lock:
            self._stopped.set()
        self._cache.stop()

    def _load(self) -> None:
        with self._lock:
            if not self._stopped.is_set():
                self._book.load(executing_orders(self._cache.objects("PackingPlan"), time.time()))


def resync_node_state(
    state: NodeState, cache: Any, gpu_resources: tuple[str, ...], resynced_at: float, now: float
) -> float:
    """Rebuild ``state`` from ``cache``'s lists when ``NODE_STATE_RESYNC_SECONDS`` have passed
    since ``resynced_at`` (re-lists do not call listeners) or when the GPU resources to score
    changed (an edit of the PackingPolicy's ``gpuResourceNames``); when it last was."""
    changed = gpu_resources != state.gpu_resources
    if not changed and now - resynced_at < NODE_STATE_RESYNC_SECONDS:
        return resynced_at
    if changed:
        log.info("GPU scoring counts %s now", ", ".join(gpu_resources))
    state.reset(
        cache.objects("Node"),
        cache.objects("Pod"),
        {kind: cache.objects(kind) for kind in DEVICE_KINDS},
        gpu_resources=gpu_resources,
    )
    return now


@dataclass
class LiveParts:
    api_client: Any  # kubernetes.client.ApiClient
    cache: Any  # ClusterCache
    state: NodeState
    policy: PolicySource
    planner: Any | None  # FallbackPlanner


def start_live(
    configuration: Any,
    book: PlanBook,
    metrics: DunnageMetrics,
    stop: threading.Event,
    *,
    policy_name: str = DEFAULT_NAME,
    gpu_resources: tuple[str, ...] | None = None,
    planner: bool = True,
    solver_address: str | None = None,
    start_planner: bool = True,
) -> LiveParts:
    """Connect with ``configuration`` (a ``kubernetes.client.Configuration``), start watching,
    and (unless ``planner`` is False) make the fallback planner, started now unless
    ``start_planner`` is False (under leader election: once this replica leads)."""
    from dunnage.scheduler_extender.fallback import FallbackPlanner, SolveFn, solve_in_process
    from dunnage.scheduler_extender.policy import load_policy

    api_client = client.ApiClient(configuration)
    policy = PolicySource(lambda: load_policy(api_client, policy_name))
    first = policy.current()
    state = NodeState(gpu_resources or first.gpu_resource_names)
    cache = ClusterCache(api_client)
    cache.on_change(state.apply)
    cache.start()

    def resync() -> None:
        resynced_at = float("-inf")
        while not stop.is_set():
            if cache.wait_synced(timeout=5.0):
                names = gpu_resources or policy.current().gpu_resource_names
                resynced_at = resync_node_state(state, cache, names, resynced_at, time.monotonic())
                stop.wait(POLICY_REFRESH_SECONDS)

    threading.Thread(target=resync, name="node-state-resync", daemon=True).start()

    fallback = None
    if planner:
        solve_fn: SolveFn = solve_in_process
        if solver_address:
            from dunnage.solver.service import SolverClient, remote_solve_fn

            solve_fn = remote_solve_fn(SolverClient(solver_address))
        fallback = FallbackPlanner(
            api_client, cache, book, policy.settings, solve_fn=solve_fn, metrics=metrics
        )
        if start_planner:
            fallback.start()

    def stop_watching() -> None:
        stop.wait()
        if fallback is not None:
            fallback.stop()
        cache.stop()

    threading.Thread(target=stop_watching, name="live-stop", daemon=True).start()
    log.info(
        "watching the cluster; policy %s; planner %s",
        policy_name,
        ("via solver " + solver_address if solver_address else "in process") if planner else "off",
    )
    return LiveParts(
        api_client=api_client, cache=cache, state=state, policy=policy, planner=fallback
    )
