"""The typed, immutable cluster snapshot: what the solver reads.

Built from ordinary Kubernetes objects by :mod:`dunnage.cluster.loader`. Everything here is a
frozen dataclass of tuples and :class:`Resources`, so a snapshot can be shared and hashed freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from dunnage.cluster.quantity import Resources


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    GT = "Gt"
    LT = "Lt"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One node selector requirement (``matchExpressions`` or ``matchFields`` item)."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.operator:
            case Operator.IN:
                return present and value in self.values
            case Operator.NOT_IN:
                return not present or value not in self.values
            case Operator.EXISTS:
                return present
            case Operator.DOES_NOT_EXIST:
                return not present
            case Operator.GT | Operator.LT:
                if not present or len(self.values) != 1:
                    return False
                try:
                    have, bound = int(str(value)), int(self.values[0])
                except ValueError:
                    return False
                return have > bound if self.operator is Operator.GT else have < bound


@dataclass(frozen=True, slots=True)
class SelectorTerm:
    """A ``nodeSelectorTerm``: all expressions (on labels) and fields (on metadata.name) hold."""

    expressions: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    def matches(self, node: Node) -> bool:
        if not self.expressions and not self.fields:
            return False  # an empty term matches nothing, as in kube-scheduler
        return all(r.matches(node.labels) for r in self.expressions) and all(
            r.matches({"metadata.name": node.name}) for r in self.fields
        )


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    effect: TaintEffect
    value: str = ""


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""  # empty with operator Exists tolerates every taint
    operator: str = "Equal"  # Equal | Exists
    value: str = ""
    effect: TaintEffect | None = None  # None tolerates every effect

    def tolerates(self, taint: Taint) -> bool:
        if self.effect is not None and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return self.value == taint.value


def csi_driver(volume: str) -> str:
    """The driver of a CSI volume's unique name ("driver/volumeHandle")."""
    return volume.partition("/")[0]


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    allocatable: Resources
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=True)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False
    # kube-scheduler's NodeVolumeLimits: the most CSI volumes each driver may attach here
    # (its CSINode's allocatable count), and the volumes VolumeAttachments attach here, by
    # unique name ("driver/volumeHandle").
    volume_limits: Mapping[str, int] = field(default_factory=dict, hash=False, compare=True)
    attached_volumes: frozenset[str] = frozenset()

    def __hash__(self) -> int:
        return hash(self.name)


@dataclass(frozen=True, slots=True)
class PodAffinityTerm:
    """A required inter-pod (anti-)affinity term: which pods it selects, in which domain.

    The loader resolves a ``namespace_selector`` into ``namespaces`` when the snapshot has
    every pod's Namespace (the live planner's does). Otherwise it is kept, not evaluated: a term
    with one selects pods of every namespace in :meth:`selects`, which over-approximates it
    (what anti-affinity may keep out), and of its ``namespaces`` only (or of every one, for an
    empty selector) in :meth:`surely_selects`, which under-approximates it (what affinity may
    count on). The loader merged its ``matchLabelKeys`` and ``mismatchLabelKeys`` into
    ``selector``, as kube-apiserver does."""

    topology_key: str
    selector: LabelSelector | None = None  # None selects no pod, as in Kubernetes
    namespaces: tuple[str, ...] = ()  # with no namespace selector, () is the pod's own
    namespace_selector: LabelSelector | None = None

    def selects(self, owner: Pod, other: Pod) -> bool:
        """Whether this term of ``owner`` selects ``other`` (by labels and namespace)."""
        if self.selector is None:
            return False
        in_scope = self.namespace_selector is not None or other.namespace in (
            self.namespaces or (owner.namespace,)
        )
        return in_scope and self.selector.matches(other.labels)

    def surely_selects(self, owner: Pod, other: Pod) -> bool:
        """Whether this term of ``owner`` selects ``other`` whatever its namespace selector
        selects."""
        if self.selector is None:
            return False
        if self.namespace_selector is None:
            in_scope = other.namespace in (self.namespaces or (owner.namespace,))
        else:
            every = not self.namespace_selector.match_labels and not (
                self.namespace_selector.match_expressions
            )
            in_scope = every or other.namespace in self.namespaces
        return in_scope and self.selector.matches(other.labels)


@dataclass(frozen=True, slots=True)
class SpreadConstraint:
    """A ``topologySpreadConstraints`` entry with ``whenUnsatisfiable: DoNotSchedule`` (the
    ``ScheduleAnyway`` ones only score)."""

    max_skew: int
    topology_key: str
    selector: LabelSelector | None = None  # with matchLabelKeys' requirements merged in
    min_domains: int | None = None
    # nodeInclusionPolicies: which nodes' domains count (kube-scheduler's defaults: a node
    # the pod's node affinity rules out does not, a node it does not tolerate does).
    node_affinity_policy: str = "Honor"
    node_taints_policy: str = "Ignore"


@dataclass(frozen=True, slots=True)
class HostPort:
    port: int
    protocol: str = "TCP"
    host_ip: str = ""


class PreemptionPolicy(StrEnum):
    PREEMPT_LOWER_PRIORITY = "PreemptLowerPriority"
    NEVER = "Never"


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    requests: Resources  # effective requests, including one unit of `pods`
    priority: int = 0
    uid: str = ""
    preemption_policy: PreemptionPolicy = PreemptionPolicy.PREEMPT_LOWER_PRIORITY
    node_selector: Mapping[str, str] = field(default_factory=dict, hash=False)
    # Required node affinity: OR of terms; None means no requirement.
    affinity_terms: tuple[SelectorTerm, ...] | None = None
    tolerations: tuple[Toleration, ...] = ()
    node_name: str | None = None  # bound node; None means pending
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    owner: str | None = None  # "Kind/name" of the controlling owner, e.g. ReplicaSet/web-5d9
    scheduler_name: str = "default-scheduler"
    # Rules between pods (kube-scheduler's InterPodAffinity, PodTopologySpread and NodePorts),
    # required terms only: the planner models the "one per node" ones and holds the pods of
    # the others where they are (dunnage.solver.rules).
    pod_affinity: tuple[PodAffinityTerm, ...] = ()
    pod_anti_affinity: tuple[PodAffinityTerm, ...] = ()
    spread_constraints: tuple[SpreadConstraint, ...] = ()
    host_ports: tuple[HostPort, ...] = ()
    # Volumes (kube-scheduler's VolumeBinding and VolumeZone): the required node affinity and
    # the zone labels, as node selectors, of each bound PersistentVolume the pod's claims name
    # (each an OR of terms; all must hold), and the claims the snapshot does not resolve to a
    # bound volume.
    volume_affinity: tuple[tuple[SelectorTerm, ...], ...] = ()
    unresolved_claims: tuple[str, ...] = ()
    # Its bound claims with the ReadWriteOncePod access mode (VolumeRestrictions: no other
    # pod may use one while this one does), by name in the pod's namespace.
    exclusive_claims: tuple[str, ...] = ()
    # Its bound claims' CSI volumes, by unique name ("driver/volumeHandle"), each once: what
    # NodeVolumeLimits counts against a node's limits (Node.volume_limits).
    csi_volumes: tuple[str, ...] = ()
    # Its claims not bound yet that kube-scheduler would have provisioned on the node it goes
    # to (their class's allowed topologies are in volume_affinity, their volume in
    # csi_volumes), by name in the pod's namespace.
    provisioned_claims: tuple[str, ...] = ()
    # Dynamic resource allocation: the devices of the claims the planner models are in
    # requests (dunnage.cluster.devices); the others (spec.resourceClaims entries, by name)
    # are here, with why each is not modelled when the loader knows.
    resource_claims: tuple[str, ...] = ()
    resource_claims_why: tuple[str, ...] = ()
    # The node selector of each allocated ResourceClaim the pod shares with others by name
    # (``resourceClaimName``): the pod goes where its devices are (each an OR of terms; all
    # must hold). Its devices are taken already; the pod asks none.
    claim_affinity: tuple[tuple[SelectorTerm, ...], ...] = ()
    # A pod held because the ResourceClaim it names is not allocated yet and is planned as
    # another pod's (the first of the pods naming it): that pod's key. kube-scheduler
    # allocates the claim where that one goes, and this one follows it there; that one's
    # requests include its followers' (snapshot_to_list writes the follower held, not whom it
    # follows, and the requests as they are).
    follows: str = ""
    # Scheduling gates (a gated pod is not scheduled until they are removed).
    scheduling_gates: tuple[str, ...] = ()
    terminating: bool = False  # being deleted (metadata.deletionTimestamp)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def bound(self) -> bool:
        return self.node_name is not None

    @property
    def tied_to_node(self) -> bool:
        """A static pod's mirror or a DaemonSet's pod: it runs on its node or nowhere.
        Evicting a mirror frees nothing (the kubelet runs the static pod regardless); a
        DaemonSet's evicted pod comes back to the same node and waits there. The descheduler
        evicts neither."""
        return self.owner is not None and self.owner.partition("/")[0] in ("Node", "DaemonSet")

    @property
    def may_preempt(self) -> bool:
        return self.preemption_policy is PreemptionPolicy.PREEMPT_LOWER_PRIORITY

    def __hash__(self) -> int:
        return hash(self.key)


@dataclass(frozen=True, slots=True)
class LabelSelector:
    match_labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.match_expressions
        )

    def __hash__(self) -> int:
        # With the labels: the selectors of workloads told apart by matchLabels alone must
        # not share one hash (rules between pods key dicts by terms holding them).
        return hash((frozenset(self.match_labels.items()), self.match_expressions))


@dataclass(frozen=True, slots=True)
class DisruptionBudget:
    """A PodDisruptionBudget, reduced to how many of its pods may still be disrupted."""

    namespace: str
    name: str
    selector: LabelSelector
    disruptions_allowed: int

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def covers(self, pod: Pod) -> bool:
        return pod.namespace == self.namespace and self.selector.matches(pod.labels)


@dataclass(frozen=True)
class Snapshot:
    """Nodes, pods (bound ones run where they are, unbound ones are pending) and PDBs."""

    nodes: tuple[Node, ...]
    pods: tuple[Pod, ...]
    budgets: tuple[DisruptionBudget, ...] = ()

    @cached_property
    def node_by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def pod_by_key(self) -> dict[str, Pod]:
        return {p.key: p for p in self.pods}

    @cached_property
    def pending(self) -> tuple[Pod, ...]:
        return tuple(p for p in self.pods if p.node_name is None)

    @cached_property
    def running(self) -> tuple[Pod, ...]:
        return tuple(p for p in self.pods if p.node_name is not None)

    def pods_on(self, node_name: str) -> tuple[Pod, ...]:
        return self._pods_by_node.get(node_name, ())

    @cached_property
    def _pods_by_node(self) -> dict[str, tuple[Pod, ...]]:
        grouped: dict[str, list[Pod]] = {}
        for p in self.running:
            grouped.setdefault(p.node_name or "", []).append(p)
        return {k: tuple(v) for k, v in grouped.items()}

    def used_on(self, node_name: str) -> Resources:
        total = Resources()
        for p in self.pods_on(node_name):
            total = total + p.requests
        return total

    def free_on(self, node_name: str) -> Resources:
        return self.node_by_name[node_name].allocatable - self.used_on(node_name)

    def placed_by_priority(
        self, assignments: Mapping[str, str | None] | None = None
    ) -> dict[int, int]:
        """Placed pods per priority, for the snapshot or for a full assignment of its pods."""
        counts: dict[int, int] = {p.priority: 0 for p in self.pods}
        for p in self.pods:
            node = p.node_name if assignments is None else assignments.get(p.key)
            if node is not None:
                counts[p.priority] += 1
        return dict(sorted(counts.items(), reverse=True))

    def with_assignments(self, assignments: Mapping[str, str | None]) -> Snapshot:
        """The same cluster with pods placed as ``assignments`` says (others unchanged)."""
        from dataclasses import replace

        pods = tuple(
            replace(p, node_name=assignments[p.key]) if p.key in assignments else p
            for p in self.pods
        )
        return Snapshot(self.nodes, pods, self.budgets)
