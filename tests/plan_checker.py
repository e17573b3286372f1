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


def _node_problem(pod: Pod, node: Node) -> str | None:
    """Why the scheduler's filters would reject ``pod`` on ``node`` (capacity aside)."""
    if node.unschedulable:
        return "node unschedulable"
    for key, value in pod.node_selector.items():
        if node.labels.get(key) != value:
            return f"nodeSelector {key}={value}"
    if pod.affinity_terms is not None:
        matched = False
        for term in pod.affinity_terms:
            if not term.expressions and not term.fields:
                continue
            ok = all(
                _label_ok(r.operator.value, r.key, r.values, node.labels) for r in term.expressions
            ) and all(
                _label_ok(r.operator.value, r.key, r.values, {"metadata.name": node.name})
                for r in term.fields
            )
            matched = matched or ok
        if not matched:
            return "node affinity"
    for taint in node.taints:
        if taint.effect.value not in ("NoSchedule", "NoExecute"):
            continue
        tolerated = False
        for t in pod.tolerations:
            effect_ok = t.effect is None or t.effect == taint.effect
            key_ok = not t.key or t.key == taint.key
            value_ok = t.operator == "Exists" or t.value == taint.value
            tolerated = tolerated or (effect_ok and key_ok and value_ok)
        if not tolerated:
            return f"taint {taint.key}"
    return None


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
    for key, node in assignments.items():
        pod = pods[key]
        if node is not None and node != pod.node_name:
            why = _node_problem(pod, nodes[node])
            if why:
                errors.append(f"{key} placed on {node} against {why}")

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
