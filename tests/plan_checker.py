"""An independent checker for `dunnage plan -o json` output.

It imports only the snapshot's data types, never the solver or dunnage.cluster.predicates, and
re-implements every rule from the Kubernetes semantics, so a bug in the planner's predicates
is not repeated here. `check_plan` returns human-readable violations; empty means valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dunnage.cluster.model import Node, Pod, Snapshot


def _label_ok(op: str, key: str, values: tuple[str, ...], labels: Mapping[str, str]) -> bool:
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt"):
        try:
            have, bound = int(labels[key]), int(values[0])
        except (KeyError, IndexError, ValueError):
            return False
        return have > bound if op == "Gt" else have < bound
    raise AssertionError(f"unknown operator {op}")


def _terms_match(terms: Any, node: Node) -> bool:
    """A NodeSelector: some non-empty term whose expressions and fields all hold."""
    matched = False
    for term in terms:
        if not term.expressions and not term.fields:
            continue
        ok = all(
            _label_ok(r.operator.value, r.key, r.values, node.labels) for r in term.expressions
        ) and all(
            _label_ok(r.operator.value, r.key, r.values, {"metadata.name": node.name})
            for r in term.fields
        )
        matched = matched or ok
    return matched


def _node_problem(pod: Pod, node: Node) -> str | None:
    """Why the scheduler's filters would reject ``pod`` on ``node`` (capacity aside)."""
    # NodeUnschedulable: unless the pod tolerates node.kubernetes.io/unschedulable.
    if node.unschedulable and not _tolerates(
        pod, "node.kubernetes.io/unschedulable", "", "NoSchedule"
    ):
        return "node unschedulable"
    for key, value in pod.node_selector.items():
        if node.labels.get(key) != value:
            return f"nodeSelector {key}={value}"
    if pod.affinity_terms is not None and not _terms_match(pod.affinity_terms, node):
        return "node affinity"
    for terms in pod.volume_affinity:  # VolumeBinding, VolumeZone: each bound volume's
        if not _terms_match(terms, node):
            return "a volume's node affinity or zone"
    for terms in pod.claim_affinity:  # DynamicResources: an allocated claim's node selector
        if not _terms_match(terms, node):
            return "an allocated resource claim's node selector"
    return _untolerated(pod, node)


def _untolerated(pod: Pod, node: Node) -> str | None:
    """A NoSchedule or NoExecute taint of ``node`` the pod does not tolerate."""
    for taint in node.taints:
        if taint.effect.value not in ("NoSchedule", "NoExecute"):
            continue
        if not _tolerates(pod, taint.key, taint.value, taint.effect.value):
            return f"taint {taint.key}"
    return None


def _tolerates(pod: Pod, key: str, value: str, effect: str) -> bool:
    for t in pod.tolerations:
        effect_ok = t.effect is None or t.effect.value == effect
        key_ok = not t.key or t.key == key
        value_ok = t.operator == "Exists" or t.value == value
        if effect_ok and key_ok and value_ok:
            return True
    return False


def _selected(selector: Any, labels: Mapping[str, str]) -> bool:
    """A label selector over pod labels; None (no selector) selects nothing."""
    if selector is None:
        return False
    return all(labels.get(k) == v for k, v in selector.match_labels.items()) and all(
        _label_ok(r.operator.value, r.key, r.values, labels) for r in selector.match_expressions
    )


def _term_selects(term: Any, owner: Pod, other: Pod, *, surely: bool = False) -> bool:
    """Whether ``owner``'s term selects ``other``. A namespace selector (namespaces' labels
    are not in a snapshot) counts as every namespace, or, ``surely``, as its ``namespaces``
    only unless it is empty (every namespace)."""
    if term.namespace_selector is None:
        scope = term.namespaces or (owner.namespace,)
        if other.namespace not in scope:
            return False
    elif surely:
        every = not term.namespace_selector.match_labels and not (
            term.namespace_selector.match_expressions
        )
        if not every and other.namespace not in term.namespaces:
            return False
    return _selected(term.selector, other.labels)


def _rules_between_pods(
    snapshot: Snapshot, placed: list[tuple[Pod, Node]], pod: Pod, node: Node
) -> list[str]:
    """Why kube-scheduler's InterPodAffinity, PodTopologySpread and NodePorts filters would
    refuse ``pod`` on ``node``, given where every pod ends up (``placed``)."""
    others = [(o, n) for o, n in placed if o is not pod]

    def same_domain(topology_key: str, other_node: Node) -> bool:
        value = node.labels.get(topology_key)
        return value is not None and other_node.labels.get(topology_key) == value

    problems = []
    for term in pod.pod_anti_affinity:
        if any(
            same_domain(term.topology_key, n) and _term_selects(term, pod, o) for o, n in others
        ):
            problems.append(f"its pod anti-affinity ({term.topology_key})")

    # Pod affinity counts the pods that match every term, each term in its own domain.
    def matches_all(o: Pod) -> bool:
        return all(_term_selects(t, pod, o, surely=True) for t in pod.pod_affinity)

    missing = [t.topology_key for t in pod.pod_affinity if t.topology_key not in node.labels]
    if missing:
        problems.append(f"its pod affinity: node has no {missing[0]}")
    elif pod.pod_affinity:
        beside = all(
            any(same_domain(t.topology_key, n) and matches_all(o) for o, n in others)
            for t in pod.pod_affinity
        )
        # The first pod of a group may land anywhere if it matches its own terms.
        first = matches_all(pod) and not any(matches_all(o) for o, _ in others)
        if not beside and not first:
            problems.append("its pod affinity")
    for other, other_node in others:
        for term in other.pod_anti_affinity:
            if same_domain(term.topology_key, other_node) and _term_selects(term, other, pod):
                problems.append(f"the pod anti-affinity of {other.key}")
    # Spreads: only nodes with every spread's key take the pod, and each spread counts the
    # pods (not being deleted) on those of them its nodeInclusionPolicies admit: the pod's
    # node selector and affinity (nodeAffinityPolicy Honor, the default), its tolerations
    # (nodeTaintsPolicy Honor). Below minDomains counted domains the smallest count is 0.
    keys = {c.topology_key for c in pod.spread_constraints}
    for c in pod.spread_constraints:
        if not keys <= node.labels.keys():
            problems.append(f"its topology spread: node has no {c.topology_key}")
            continue
        counted = {
            n.name
            for n in snapshot.nodes
            if keys <= n.labels.keys()
            and (
                c.node_affinity_policy != "Honor"
                or (
                    all(n.labels.get(k) == v for k, v in pod.node_selector.items())
                    and (pod.affinity_terms is None or _terms_match(pod.affinity_terms, n))
                )
            )
            and (c.node_taints_policy != "Honor" or _untolerated(pod, n) is None)
        }
        counts = {n.labels[c.topology_key]: 0 for n in snapshot.nodes if n.name in counted}
        for o, n in others:
            if (
                n.name in counted
                and not o.terminating
                and o.namespace == pod.namespace
                and _selected(c.selector, o.labels)
            ):
                counts[n.labels[c.topology_key]] += 1
        own = 1 if _selected(c.selector, pod.labels) else 0
        mine = counts.get(node.labels[c.topology_key], 0) + own
        smallest = min(counts.values(), default=0)
        if c.min_domains is not None and len(counts) < c.min_domains:
            smallest = 0
        if mine - smallest > c.max_skew:
            problems.append(f"its topology spread ({c.topology_key}, maxSkew {c.max_skew})")
    for port in pod.host_ports:
        for other, other_node in others:
            if other_node is not node:
                continue
            for theirs in other.host_ports:
                ips = {port.host_ip or "0.0.0.0", theirs.host_ip or "0.0.0.0"}
                if (port.port, port.protocol) == (theirs.port, theirs.protocol) and (
                    len(ips) == 1 or "0.0.0.0" in ips
                ):
                    problems.append(f"host port {port.port}/{port.protocol} of {other.key}")
    return problems


def _cumulative(counts: Mapping[int, int]) -> list[int]:
    out, total = [], 0
    for prio in sorted(counts, reverse=True):
        total += counts[prio]
        out.append(total)
    return out


def check_plan(snapshot: Snapshot, plan: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    pods = {f"{p.namespace}/{p.name}": p for p in snapshot.pods}
    nodes = {n.name: n for n in snapshot.nodes}
    assignments: Mapping[str, str | None] = plan["assignments"]

    if set(assignments) != set(pods):
        errors.append(f"assignments cover {len(assignments)} pods, snapshot has {len(pods)}")
        return errors
    for key, node in assignments.items():
        if node is not None and node not in nodes:
            errors.append(f"{key} assigned to unknown node {node}")
    if errors:
        return errors

    # Capacity, every resource, every node.
    used: dict[str, dict[str, int]] = {name: {} for name in nodes}
    for key, node in assignments.items():
        if node is None:
            continue
        for resource, amount in pods[key].requests.items():
            used[node][resource] = used[node].get(resource, 0) + amount
    for name, amounts in used.items():
        for resource, amount in amounts.items():
            if amount > nodes[name].allocatable.get(resource, 0):
                errors.append(
                    f"node {name}: {resource} {amount} > allocatable "
                    f"{nodes[name].allocatable.get(resource, 0)}"
                )

    # Predicates for every pod that is newly placed or moved.
    placed = [(pods[k], nodes[n]) for k, n in assignments.items() if n is not None]
    for key, node in assignments.items():
        pod = pods[key]
        if node is not None and node != pod.node_name:
            why = _node_problem(pod, nodes[node])
            if why:
                errors.append(f"{key} placed on {node} against {why}")
            for why in _rules_between_pods(snapshot, placed, pod, nodes[node]):
                errors.append(f"{key} placed on {node} against {why}")

    # VolumeRestrictions: a pod placed anew (or a moved pod's replacement) is refused while
    # another pod using one of its ReadWriteOncePod claims runs anywhere.
    users: dict[tuple[str, str], list[str]] = {}
    for key, pod in pods.items():
        for claim in pod.exclusive_claims:
            users.setdefault((pod.namespace, claim), []).append(key)
    for key, node in assignments.items():
        pod = pods[key]
        if node is None or node == pod.node_name:
            continue
        for claim in pod.exclusive_claims:
            for okey in users[(pod.namespace, claim)]:
                if okey != key and assignments[okey] is not None:
                    errors.append(
                        f"{key} placed on {node} against ReadWriteOncePod claim {claim} of {okey}"
                    )

    # NodeVolumeLimits: a pod placed anew (or moved) that brings a node a CSI volume of a
    # driver with a count there finds, in the end, no more of the driver's volumes on the node
    # than the count: its pods' (each volume once) and those attached by VolumeAttachments
    # but no pod that ran there (a leaving pod's volume is detached in time).
    for key, node in assignments.items():
        pod = pods[key]
        if node is None or node == pod.node_name or not pod.csi_volumes:
            continue
        others = {
            v for k, o in pods.items() if k != key and assignments[k] == node for v in o.csi_volumes
        }
        before = {v for o in snapshot.pods if o.node_name == node for v in o.csi_volumes}
        attached = others | set(pod.csi_volumes) | (nodes[node].attached_volumes - before)
        for driver, count in nodes[node].volume_limits.items():
            if not any(v.split("/")[0] == driver and v not in others for v in pod.csi_volumes):
                continue
            mine = sum(1 for v in attached if v.split("/")[0] == driver)
            if mine > count:
                errors.append(
                    f"{key} placed on {node}: {mine} volumes of {driver} > its count {count}"
                )

    # A running pod loses its place only to a pending pod of strictly higher priority that may
    # preempt and now runs on the node the evicted pod ran on.
    for key, pod in pods.items():
        if pod.node_name is None or assignments[key] is not None:
            continue
        justified = any(
            other.node_name is None
            and assignments[okey] == pod.node_name
            and other.priority > pod.priority
            and other.preemption_policy.value != "Never"
            for okey, other in pods.items()
        )
        if not justified:
            errors.append(f"{key} evicted from {pod.node_name} without a higher-priority newcomer")

    # A static pod's mirror (owned by its Node) stays: the kubelet runs the pod whatever
    # happens to the mirror, and nothing would run it anywhere else. So does a DaemonSet's
    # pod: evicted, it would come back to the same node (the descheduler evicts neither).
    for key, pod in pods.items():
        owner_kind = (pod.owner or "").split("/")[0]
        if pod.node_name is None or assignments[key] == pod.node_name:
            continue
        if owner_kind == "Node":
            errors.append(f"{key} is a static pod's mirror and was disrupted")
        elif owner_kind == "DaemonSet":
            errors.append(f"{key} is a DaemonSet's pod and was disrupted")

    # PodDisruptionBudgets: evictions plus moves of covered pods.
    for budget in snapshot.budgets:
        disrupted = 0
        for key, pod in pods.items():
            if pod.namespace != budget.namespace or pod.node_name is None:
                continue
            labels = pod.labels
            selected = all(
                labels.get(k) == v for k, v in budget.selector.match_labels.items()
            ) and all(
                _label_ok(r.operator.value, r.key, r.values, labels)
                for r in budget.selector.match_expressions
            )
            if selected and assignments[key] != pod.node_name:
                disrupted += 1
        if disrupted > budget.disruptions_allowed:
            errors.append(
                f"PodDisruptionBudget {budget.namespace}/{budget.name}: {disrupted} disrupted > "
                f"{budget.disruptions_allowed} allowed"
            )

    # Bindings, moves and evictions agree with the assignments.
    bindings = {(b["pod"], b["node"]) for b in plan["bindings"]}
    moves = {(m["pod"], m["from"], m["to"]) for m in plan["moves"]}
    evictions = {(e["pod"], e["node"]) for e in plan["evictions"]}
    want_b = {(k, n) for k, n in assignments.items() if pods[k].node_name is None and n is not None}
    want_m = {
        (k, pods[k].node_name, n)
        for k, n in assignments.items()
        if pods[k].node_name is not None and n is not None and n != pods[k].node_name
    }
    want_e = {
        (k, pods[k].node_name) for k, n in assignments.items() if pods[k].node_name and n is None
    }
    if bindings != want_b or moves != want_m or evictions != want_e:
        errors.append("bindings/moves/evictions disagree with assignments")

    # Placed counts: reported correctly and lexicographically no worse.
    before: dict[int, int] = {}
    after: dict[int, int] = {}
    for key, pod in pods.items():
        before.setdefault(pod.priority, 0)
        after.setdefault(pod.priority, 0)
        before[pod.priority] += pod.node_name is not None
        after[pod.priority] += assignments[key] is not None
    reported = plan["placed_by_priority"]
    if {int(k): v for k, v in reported["after"].items()} != after:
        errors.append(f"placed_by_priority.after {reported['after']} != {after}")
    if {int(k): v for k, v in reported["before"].items()} != before:
        errors.append(f"placed_by_priority.before {reported['before']} != {before}")
    if _cumulative(after) < _cumulative(before):
        errors.append("placement is lexicographically worse than the snapshot's")
    return errors
