"""The snapshot in the solver's terms: integer resource vectors, eligibility, levels, groups.

Built once per solve. Eligibility is computed per distinct pod constraint shape and node shape
(ReplicaSets and homogeneous node pools make both few), so a 1,500-node, 8,000-pod cluster costs
shapes x node-shapes predicate checks, not pods x nodes.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dunnage.cluster.model import Node, Pod, Snapshot
from dunnage.cluster.predicates import admission_key, static_reason, unplaceable_reason
from dunnage.solver.attach_limits import attach_limits
from dunnage.solver.rules import evictable, rules_between_pods, top_preemptor

LEFT_TO_KUBE_SCHEDULER = "left to kube-scheduler"
KEPT_OUT = "kept out of the domains of the anti-affinity of"
ANCHORS = "kept where it runs, neither moved nor evicted, for the pod affinity of"
PLANNED_ALONE = (
    "planned alone of its group, on the nodes kube-scheduler takes it on whatever the plan evicts"
)


def _selected_keys(pods: Sequence[Pod]) -> tuple[frozenset[str], bool]:
    """Node label keys some pod's nodeSelector or required affinity looks at, and whether some
    pod's affinity looks at node names (``matchFields``)."""
    keys: set[str] = set()
    by_name = False
    for pod in pods:
        keys.update(pod.node_selector)
        required = (*pod.volume_affinity, *pod.claim_affinity)
        for term in (*(pod.affinity_terms or ()), *(t for ts in required for t in ts)):
            keys.update(r.key for r in term.expressions)
            by_name = by_name or bool(term.fields)
    return frozenset(keys), by_name


def _node_shape(
    node: Node, keys: frozenset[str], by_name: bool, limits: tuple[object, ...]
) -> tuple[object, ...]:
    """Everything static eligibility reads from a node, and the per-node groups' limits on it
    (rules.py) and its attach limits (attach_limits.py). Labels no pod selects on are left
    out: every real node has its own ``kubernetes.io/hostname``, and with it every node would
    be a shape of its own (no interchangeable nodes, and a predicate check per pod shape and
    node)."""
    return (
        limits,
        tuple(sorted(node.allocatable.items())),
        tuple(sorted((k, v) for k, v in node.labels.items() if k in keys)),
        node.taints,
        node.unschedulable,
        node.name if by_name else None,
    )


def _pod_constraints(pod: Pod) -> tuple[object, ...]:
    """What decides static eligibility besides the node. Request amounts count: a request
    larger than a node's allocatable rules the node out (ReplicaSets share them anyway)."""
    return (tuple(sorted(pod.requests.items())), *admission_key(pod))


def _some(names: Sequence[str], shown: int) -> str:
    """The first ``shown`` of ``names``, and how many more."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _sharing_exclusive_claims(pods: Sequence[Pod]) -> dict[int, list[str]]:
    """The pods naming a ReadWriteOncePod claim that another pod names too, with the
    reasons. kube-scheduler runs one of them at a time (VolumeRestrictions), and which one
    is its choice: a plan that moved the one running could see a waiting one take the
    claim first, and one that placed a waiting one would be refused. While none of them is
    bound, though, the highest-priority one may be planned (kube-scheduler refuses it only
    beside another user) if it comes first on each claim it shares; the others wait for it."""
    users: dict[tuple[str, str], list[int]] = {}
    for pi, pod in enumerate(pods):
        for claim in pod.exclusive_claims:
            users.setdefault((pod.namespace, claim), []).append(pi)
    shared = {key: group for key, group in users.items() if len(group) > 1}
    first = {
        key: min(group, key=lambda pi: (-pods[pi].priority, pi))
        for key, group in shared.items()
        if all(pods[pi].node_name is None for pi in group)
    }
    planned = {
        pi
        for pi in first.values()
        if all(
            first.get((pods[pi].namespace, c)) == pi
            for c in pods[pi].exclusive_claims
            if (pods[pi].namespace, c) in shared
        )
    }
    out: dict[int, list[str]] = {}
    for key, group in shared.items():
        claim = key[1]
        for pi in group:
            if pi in planned:
                continue
            if key in first and first[key] in planned:
                why = f"one pod at a time: {pods[first[key]].name} first"
            else:
                why = "shared with pod " + _some([pods[o].name for o in group if o != pi], 3)
            out.setdefault(pi, []).append(f"volume claim {claim} (ReadWriteOncePod) {why}")
    return out


def _held(
    pods: Sequence[Pod],
    by_rules: dict[int, str],
    sharing_csi: dict[int, list[tuple[str, tuple[str, ...]]]],
) -> dict[int, str]:
    """Pods the planner holds (keeps where they run, or leaves pending), with the reasons:
    rules between pods it does not model (rules.py); claims the snapshot does not resolve to
    a bound volume or one to provision (where the volume lets the pod run is unknown);
    ReadWriteOncePod claims several pods name (all but one while none of them is bound); CSI
    volumes shared under an attach limit (attach_limits.py); claims to provision several pods
    name; dynamic resource claims outside what dunnage.cluster.devices models; scheduling
    gates (kube-scheduler does not take a gated pod, so a plan's room for it would wait in
    vain)."""
    held = dict(by_rules)
    sharing = _sharing_exclusive_claims(pods)
    # A claim to provision that several pods name is provisioned where the first of them
    # goes, and the others must follow it there: kube-scheduler's order, not a plan's.
    provisioning: dict[tuple[str, str], list[int]] = {}
    for pi, pod in enumerate(pods):
        for claim in pod.provisioned_claims:
            provisioning.setdefault((pod.namespace, claim), []).append(pi)
    for pi, pod in enumerate(pods):
        reasons = [held[pi]] if pi in held else []
        reasons += sharing.get(pi, [])
        reasons += [
            f"CSI volume {volume} (its driver's attach limit counts it once per node) shared "
            f"with pod {_some(others, 3)}"
            for volume, others in sharing_csi.get(pi, [])
        ]
        for claim in pod.provisioned_claims:
            others = [pods[o].name for o in provisioning[(pod.namespace, claim)] if o != pi]
            if others:
                reasons.append(
                    f"volume claim {claim} (not bound yet: provisioned where the first of its "
                    f"pods goes) shared with pod {_some(others, 3)}"
                )
        if pod.unresolved_claims:
            reasons.append(
                f"volume claim {', '.join(pod.unresolved_claims)} not bound to a "
                "PersistentVolume in the snapshot, nor sure to be provisioned where the pod goes"
            )
        for claim, why in itertools.zip_longest(pod.resource_claims, pod.resource_claims_why):
            reasons.append(
                f"resource claim {claim} ({why or 'dynamic resource allocation not modelled'})"
            )
        if pod.scheduling_gates and pod.node_name is None:
            reasons.append(f"scheduling gate {', '.join(pod.scheduling_gates)}")
        if reasons:
            held[pi] = "; ".join(reasons)
    return held


@dataclass
class Problem:
    """Index-based view of a snapshot. Pods and nodes are referred to by position."""

    snapshot: Snapshot
    resources: tuple[str, ...]  # resource names any pod requests, then per-node groups
    capacity: list[tuple[int, ...]]  # per node
    demand: list[tuple[int, ...]]  # per pod
    origin: list[int | None]  # per pod: node index it runs on, None when pending
    priority: list[int]
    may_preempt: list[bool]
    eligible: list[tuple[int, ...]]  # per pod: node indexes that pass the static filters
    node_shape_id: list[int]  # nodes with equal ids are interchangeable when empty
    budgets_of_pod: list[tuple[int, ...]]  # per pod: indexes into snapshot.budgets (and one
    # more, allowing none, over static pods' mirrors)
    budget_allowed: list[int]
    unplaceable: dict[int, str] = field(default_factory=dict)  # pending pod -> reason
    # Pods kept where they are (or left pending) that kube-scheduler might place elsewhere:
    # plans are optimal only among those that leave them so (dunnage.solver.rules).
    held: dict[int, str] = field(default_factory=dict)
    # The resources after the first real_resources are per-node groups (rules.py) and
    # attach limits (attach_limits.py): not sizes, so the heuristics that weigh a pod by its
    # share of a node leave them out.
    real_resources: int = 0

    @classmethod
    def build(
        cls, snapshot: Snapshot, *, pin_bare_pods: bool = False, hold: bool = True
    ) -> Problem:
        """Index ``snapshot``. With ``pin_bare_pods``, running pods without a controlling owner
        may stay or be evicted but not move: nothing would recreate them elsewhere. With
        ``hold`` (the planner; not the emulated default scheduler), pods under rules between
        pods the model does not encode stay where they are or pending (rules.py)."""
        nodes, pods = snapshot.nodes, snapshot.pods
        real = tuple(sorted({r for p in pods for r in p.requests}))
        node_index = {n.name: i for i, n in enumerate(nodes)}
        # Bound to a node not in the snapshot: treated as pending.
        origin = [node_index.get(p.node_name) if p.node_name else None for p in pods]
        rules = rules_between_pods(pods, nodes)
        attach = attach_limits(pods, nodes, origin)
        groups = sorted(rules.per_node)
        resources = real + tuple(groups) + attach.resources
        held = _held(pods, rules.held, attach.shared) if hold else {}
        if hold:  # held where they run; not evictable either (rules.py: by their priority)
            for qi, counting in rules.pinned.items():
                anchors = f"{ANCHORS} {_some(counting, 2)}"
                held[qi] = f"{held[qi]}; {anchors}" if qi in held else anchors
        chosen = [rules.per_node[g] for g in groups]
        # Per node: each group's limit, then each attach-limited driver's room (the shapes
        # also tell apart the nodes full already for a driver).
        limits = [
            tuple(g.limit_on(n) for g in chosen) + (attach.capacity[ni] if attach.drivers else ())
            for ni, n in enumerate(nodes)
        ]
        capacity = [
            tuple(n.allocatable[r] for r in real) + limit
            for n, limit in zip(nodes, limits, strict=True)
        ]
        node_shapes: dict[tuple[object, ...], int] = {}
        keys, by_name = _selected_keys(pods)
        node_shape_id = [
            node_shapes.setdefault(
                _node_shape(n, keys, by_name, (*limit, attach.full.get(ni))), len(node_shapes)
            )
            for ni, (n, limit) in enumerate(zip(nodes, limits, strict=True))
        ]
        representatives: dict[int, int] = {}
        for i, sid in enumerate(node_shape_id):
            representatives.setdefault(sid, i)

        top = top_preemptor(pods)

        restricted: dict[int, str] = {}
        outside: dict[tuple[object, ...], tuple[int, ...]] = {}  # eligible nodes, narrowed
        eligible_by_shape: dict[tuple[object, ...], tuple[int, ...]] = {}
        eligible: list[tuple[int, ...]] = []
        unplaceable: dict[int, str] = {}
        for pi, pod in enumerate(pods):
            key = _pod_constraints(pod)
            if key not in eligible_by_shape:
                ok_shapes = {
                    sid
                    for sid, ni in representatives.items()
                    if static_reason(pod, nodes[ni]) is None
                }
                eligible_by_shape[key] = tuple(
                    i for i, sid in enumerate(node_shape_id) if sid in ok_shapes
                )
            eligible.append(eligible_by_shape[key])
            where = origin[pi]
            if attach.full and any(attach.demand[pi]):
                drivers = tuple(d for d, units in enumerate(attach.demand[pi]) if units)
                full = (id(eligible[-1]), drivers)
                if full not in outside:  # pods alike share one filtered tuple (bounds.py)
                    outside[full] = tuple(n for n in eligible[-1] if not attach.refuses(pi, n))
                if where in eligible[-1] and where not in outside[full]:  # it may stay
                    eligible[-1] = tuple(sorted((*outside[full], where)))
                else:
                    eligible[-1] = outside[full]
            if where is not None and (
                (pin_bare_pods and pod.owner is None) or (hold and pod.tied_to_node)
            ):
                eligible[-1] = (where,)
            kept_out = rules.kept_out.get(pi) if hold and pi not in held else None
            if kept_out is not None and pi not in rules.one_at_a_time:  # (alone: in its nodes)
                cut = (id(eligible[-1]), id(kept_out.nodes))
                if cut not in outside:  # pods selected alike share both: one filter
                    outside[cut] = tuple(n for n in eligible[-1] if n not in kept_out.nodes)
                narrowed = outside[cut]
                if where in kept_out.nodes and where in eligible[-1]:  # it may stay
                    narrowed = tuple(sorted((*narrowed, where)))
                if narrowed != eligible[-1]:
                    by = _some([pods[q].key for q in kept_out.by], 1)
                    if any(evictable(pods[q], top) for q in kept_out.by):
                        restricted[pi] = f"{KEPT_OUT} {by}"
                    if where is None and not narrowed:
                        unplaceable[pi] = f"the required pod anti-affinity of {by} keeps it out"
                    eligible[-1] = narrowed
            alone = rules.one_at_a_time.get(pi) if hold and pi not in held else None
            if alone is not None:
                narrowed = tuple(filter(alone.nodes.__contains__, eligible[-1]))
                restricted[pi] = f"{alone.rules}: {PLANNED_ALONE}"
                if eligible[-1] and not narrowed:
                    unplaceable[pi] = f"{alone.rules}: no node takes it now"
                eligible[-1] = narrowed
            if pi in held and eligible[-1] not in ((), (where,)):
                restricted[pi] = held[pi]
                if where is not None:
                    eligible[-1] = (where,)
                else:
                    eligible[-1] = ()
                    unplaceable[pi] = f"{LEFT_TO_KUBE_SCHEDULER}: {held[pi]}"
            if where is None and not eligible[-1] and pi not in unplaceable:
                unplaceable[pi] = unplaceable_reason(pod, nodes) or "fits no node"

        demand = [tuple(p.requests[r] for r in real) for p in pods]
        if groups:  # one unit of each group its pods are in
            members = [g.pods for g in chosen]
            demand = [d + tuple(int(pi in m) for m in members) for pi, d in enumerate(demand)]
        if attach.drivers:
            demand = [d + a for d, a in zip(demand, attach.demand, strict=True)]
        budgets = snapshot.budgets
        budgets_of_pod = [tuple(bi for bi, b in enumerate(budgets) if b.covers(p)) for p in pods]
        budget_allowed = [b.disruptions_allowed for b in budgets]
        if hold and any(p.tied_to_node and p.bound for p in pods):
            # Mirrors and DaemonSets' pods stay (Pod.tied_to_node). A budget that allows no
            # disruption says so to every step (budgets_of_pod's last index is no
            # PodDisruptionBudget of the snapshot).
            budgets_of_pod = [
                (*b, len(budgets)) if p.tied_to_node else b
                for p, b in zip(pods, budgets_of_pod, strict=True)
            ]
            budget_allowed.append(0)
        return cls(
            snapshot=snapshot,
            resources=resources,
            capacity=capacity,
            demand=demand,
            origin=origin,
            priority=[p.priority for p in pods],
            may_preempt=[p.may_preempt for p in pods],
            eligible=eligible,
            node_shape_id=node_shape_id,
            budgets_of_pod=budgets_of_pod,
            budget_allowed=budget_allowed,
            unplaceable=unplaceable,
            held=restricted,
            real_resources=len(real),
        )

    @property
    def num_pods(self) -> int:
        return len(self.demand)

    @property
    def num_nodes(self) -> int:
        return len(self.capacity)

    def initial_assignment(self) -> list[int | None]:
        return list(self.origin)

    def usage(self, assignment: Sequence[int | None]) -> list[list[int]]:
        used = [[0] * len(self.resources) for _ in range(self.num_nodes)]
        for pi, ni in enumerate(assignment):
            if ni is not None:
                row, d = used[ni], self.demand[pi]
                for r, v in enumerate(d):
                    row[r] += v
        return used

    def placed_by_priority(self, assignment: Sequence[int | None]) -> dict[int, int]:
        counts: dict[int, int] = dict.fromkeys(self.priority, 0)
        for pi, ni in enumerate(assignment):
            if ni is not None:
                counts[self.priority[pi]] += 1
        return counts

    def to_names(self, assignment: Sequence[int | None]) -> Mapping[str, str | None]:
        nodes, pods = self.snapshot.nodes, self.snapshot.pods
        return {
            pods[pi].key: (nodes[ni].name if ni is not None else None)
            for pi, ni in enumerate(assignment)
        }
