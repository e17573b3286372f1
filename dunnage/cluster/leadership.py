"""Leader election over a ``coordination.k8s.io`` Lease, for components that run as several
replicas of which one acts: the extender's fallback planner (every replica answers
kube-scheduler; a standby steers by the leader's recorded plans, see
:class:`~dunnage.scheduler_extender.live.PlanMirror`) and the operator (a standby runs no
handlers until it leads).

The election itself is the Kubernetes client's (:mod:`kubernetes.leaderelection`, the client-go
algorithm). Two things are added around it:

- A leader that cannot renew within the renew deadline stops (the command exits with status 1,
  as kube-scheduler does): it cannot know whether another replica already leads, and its restart
  joins as a standby. The deadline is shorter than the lease, so it stops before anyone else
  may take the Lease.
- On a graceful stop the leader releases the Lease (empty holder), so a standby takes over at
  its next retry instead of waiting out the lease duration.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from dunnage.cluster.events import post_event
from dunnage.errors import InputError

log = logging.getLogger(__name__)

# kube-scheduler's defaults (--leader-elect-lease-duration, -renew-deadline, -retry-period).
LEASE_DURATION = 15
RENEW_DEADLINE = 10
RETRY_PERIOD = 2
# The client's election config refuses a renew deadline within this factor of the retry period.
_JITTER = 1.2


@dataclass(frozen=True)
class ElectionSettings:
    """Where the Lease is and how it is held; times in whole seconds (the Lease stores them so)."""

    namespace: str
    lease_name: str
    identity: str
    lease_duration: int = LEASE_DURATION
    renew_deadline: int = RENEW_DEADLINE
    retry_period: int = RETRY_PERIOD

    def __post_init__(self) -> None:
        if not self.namespace:
            raise InputError("must not be empty", obj="--leader-elect-namespace")
        if not self.lease_name:
            raise InputError("must not be empty", obj="--leader-elect-lease")
        if self.retry_period < 1:
            raise InputError("must be at least 1 second", obj="--leader-elect-retry-period")
        if self.renew_deadline <= _JITTER * self.retry_period:
            raise InputError(
                f"must be more than {_JITTER} x --leader-elect-retry-period "
                f"({self.retry_period} s)",
                obj="--leader-elect-renew-deadline",
            )
        if self.lease_duration <= self.renew_deadline:
            raise InputError(
                f"must be more than --leader-elect-renew-deadline ({self.renew_deadline} s): "
                "a leader must give up before anyone else may take the Lease",
                obj="--leader-elect-lease-duration",
            )


def add_election_arguments(parser: argparse.ArgumentParser, *, lease: str, acts: str) -> None:
    """The ``--leader-elect*`` flags, as kube-scheduler names them; ``acts`` says what only the
    leader does."""
    group = parser.add_argument_group(
        "leader election",
        f"With --leader-elect only the holder of a coordination.k8s.io Lease {acts}.",
    )
    group.add_argument(
        "--leader-elect", action="store_true", help="campaign for the Lease (needs a cluster)"
    )
    group.add_argument(
        "--leader-elect-lease",
        default=lease,
        metavar="NAME",
        help=f"the Lease's name (default {lease})",
    )
    group.add_argument(
        "--leader-elect-namespace",
        default=None,
        metavar="NS",
        help="the Lease's namespace (default: $POD_NAMESPACE, else default)",
    )
    group.add_argument(
        "--leader-elect-identity",
        default=None,
        metavar="ID",
        help="this candidate's name on the Lease (default: $POD_NAME or the host name, and a "
        "random suffix)",
    )
    for flag, default, what in (
        ("lease-duration", LEASE_DURATION, "how long a standby waits after the last renewal"),
        ("renew-deadline", RENEW_DEADLINE, "how long the leader retries renewing, then exits"),
        ("retry-period", RETRY_PERIOD, "how often candidates try to acquire or renew"),
    ):
        group.add_argument(
            f"--leader-elect-{flag}",
            type=int,
            default=default,
            metavar="SECONDS",
            help=f"{what} (default {default})",
        )


def election_settings(args: argparse.Namespace) -> ElectionSettings | None:
    """The Lease to campaign for, from the ``--leader-elect*`` flags; None without
    ``--leader-elect``."""
    if not args.leader_elect:
        return None
    return ElectionSettings(
        namespace=args.leader_elect_namespace or os.environ.get("POD_NAMESPACE") or "default",
        lease_name=args.leader_elect_lease,
        identity=args.leader_elect_identity or default_identity(),
        lease_duration=args.leader_elect_lease_duration,
        renew_deadline=args.leader_elect_renew_deadline,
        retry_period=args.leader_elect_retry_period,
    )


def default_identity() -> str:
    """The pod's name (else the host's) and a random suffix, as client-go makes it: a restarted
    container is a new candidate, not the old leader resumed."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class _Lock:
    """The client's Lease lock, on a given API client (it would use the default one), that
    stops writing once released and reports errors an admin must see."""

    def __init__(self, api_client: client.ApiClient, settings: ElectionSettings) -> None:
        self.name = settings.lease_name
        self.namespace = settings.namespace
        self.identity = settings.identity
        self.api = client.CoordinationV1Api(api_client)
        self.released = threading.Event()
        self._lease = LeaseLock(self.name, self.namespace, self.identity)
        self._lease.api_instance = self.api
        self._last_error: str | None = None

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        found, record = self._lease.get(name, namespace)
        # A missing Lease (404) is created next; anything else (RBAC above all) would leave the
        # replica a silent standby forever: say so, once per distinct error.
        error = None if found or getattr(record, "status", None) == 404 else _describe(record)
        if error and error != self._last_error:
            log.warning("cannot read the Lease %s/%s: %s", namespace, name, error)
        self._last_error = error
        return bool(found), record

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        if self.released.is_set():
            return False
        return bool(self._lease.create(name, namespace, election_record))

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        if self.released.is_set():
            return False
        return bool(self._lease.update(name, namespace, updated_record))


def _describe(error: Any) -> str:
    """An API error as one line: its code, reason and the API server's message."""
    try:
        message = json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError, AttributeError):
        message = ""
    head = f"{getattr(error, 'status', '')} {getattr(error, 'reason', error)}".strip()
    return f"{head}: {message}" if message else head


class Leadership:
    """Campaigns for the Lease in a thread; ``on_started`` runs once this replica leads,
    ``on_lost`` if it stops leading (it will not lead again: the caller exits)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        settings: ElectionSettings,
        *,
        component: str,
        on_started: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.component = component  # the Events' source
        self.leading = threading.Event()
        self._on_started = on_started
        self._on_lost = on_lost
        self._lock = _Lock(api_client, settings)
        self._core = client.CoreV1Api(api_client)
        self._election = leaderelection.LeaderElection(
            electionconfig.Config(
                self._lock,
                lease_duration=settings.lease_duration,
                renew_deadline=settings.renew_deadline,
                retry_period=settings.retry_period,
                onstarted_leading=self._started,
                onstopped_leading=self._stopped,
            )
        )
        # The client logs every retry at INFO ("lease held by ..."); transitions are logged here.
        logging.getLogger("leaderelection").setLevel(logging.WARNING)

    @property
    def where(self) -> str:
        return f"{self.settings.namespace}/{self.settings.lease_name}"

    def start(self) -> None:
        log.info(
            "candidate %s for the Lease %s; standing by until it is ours",
            self.settings.identity,
            self.where,
        )
        threading.Thread(target=self._election.run, name="leader-election", daemon=True).start()

    def release(self) -> None:
        """Stop renewing and, if this replica holds the Lease, give it up."""
        self._lock.released.set()
        if not self.leading.is_set():
            return
        self.leading.clear()
        api = self._lock.api
        try:
            lease = api.read_namespaced_lease(self.settings.lease_name, self.settings.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.settings.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            # resourceVersion is kept: a conflict means someone else wrote it, and it is theirs.
            api.replace_namespaced_lease(self.settings.lease_name, self.settings.namespace, lease)
            log.info("released the Lease %s", self.where)
        except ApiException as exc:
            log.warning("could not release the Lease %s: %s", self.where, exc.reason)

    def _started(self) -> None:
        log.info("%s leads: holds the Lease %s", self.settings.identity, self.where)
        self.leading.set()
        self._event(f"{self.settings.identity} became leader")
        self._on_started()

    def _stopped(self) -> None:
        self.leading.clear()
        if self._lock.released.is_set():
            return
        log.error(
            "lost the Lease %s (not renewed within %d s)", self.where, self.settings.renew_deadline
        )
        self._event(f"{self.settings.identity} stopped leading")
        self._on_lost()

    def _event(self, message: str) -> None:
        """An Event on the Lease, as kube-scheduler's election records one."""
        lease = client.V1ObjectReference(
            kind="Lease",
            api_version="coordination.k8s.io/v1",
            name=self.settings.lease_name,
            namespace=self.settings.namespace,
        )
        post_event(self._core, lease, "LeaderElection", message, component=self.component)
