"""Filter predicates, as kube-scheduler's default plugins apply them.

``static_reason`` covers everything that does not depend on what else runs on the node
(NodeUnschedulable, NodeName, NodeAffinity incl. nodeSelector, TaintToleration, the node
affinity of bound volumes, and resources the node does not have at all); ``fits`` is
NodeResourcesFit against the free capacity.
"""

from __future__ import annotations

from collections.abc import Mapping

from dunnage.cluster.model import Node, Pod, Taint, TaintEffect
from dunnage.cluster.quantity import Resources

_FILTERING_EFFECTS = (TaintEffect.NO_SCHEDULE, TaintEffect.NO_EXECUTE)
# NodeUnschedulable: a pod tolerating this taint (DaemonSets' do) may go to a cordoned node.
_UNSCHEDULABLE = Taint("node.kubernetes.io/unschedulable", TaintEffect.NO_SCHEDULE)


def static_reason(pod: Pod, node: Node) -> str | None:
    """Why ``pod`` can never run on ``node`` whatever else runs there; None when it can."""
    reason = admission_reason(pod, node)
    if reason is not None:
        return reason
    missing = pod.requests.shortfall(node.allocatable)
    if missing:
        return "insufficient allocatable " + ", ".join(missing)
    return None


def admission_key(pod: Pod) -> tuple[object, ...]:
    """Everything :func:`admission_reason` reads from a pod: pods with equal keys are admitted
    by the same nodes."""
    return (
        tuple(sorted(pod.node_selector.items())),
        pod.affinity_terms,
        pod.volume_affinity,
        pod.claim_affinity,
        pod.tolerations,
    )


def admission_reason(pod: Pod, node: Node) -> str | None:
    """:func:`static_reason` but for the node's size: whether the node admits the pod at all."""
    if node.unschedulable and not any(t.tolerates(_UNSCHEDULABLE) for t in pod.tolerations):
        return "node is unschedulable"
    reason = node_affinity_reason(pod, node)
    if reason is not None:
        return reason
    for terms in pod.volume_affinity:
        if not any(t.matches(node) for t in terms):
            return "a bound volume's node affinity or zone does not match"
    for terms in pod.claim_affinity:
        if not any(t.matches(node) for t in terms):
            return "an allocated resource claim's devices are not on it"
    return taint_reason(pod, node)


def taint_reason(pod: Pod, node: Node) -> str | None:
    """TaintToleration: a NoSchedule or NoExecute taint of ``node`` that ``pod`` does not
    tolerate (what a topology spread's ``nodeTaintsPolicy: Honor`` reads); None if none."""
    for taint in node.taints:
        if taint.effect in _FILTERING_EFFECTS and not any(
            t.tolerates(taint) for t in pod.tolerations
        ):
            return f"untolerated taint {taint.key}:{taint.effect.value}"
    return None


def node_affinity_reason(pod: Pod, node: Node) -> str | None:
    """Why the pod's nodeSelector or required node affinity rules ``node`` out (what a
    topology spread's ``nodeAffinityPolicy: Honor`` reads); None when they admit it."""
    for key, value in pod.node_selector.items():
        if node.labels.get(key) != value:
            return f"nodeSelector {key}={value} does not match"
    if pod.affinity_terms is not None and not any(t.matches(node) for t in pod.affinity_terms):
        return "required node affinity does not match"
    return None


def fits(pod: Pod, free: Mapping[str, int]) -> bool:
    """NodeResourcesFit: every request within the node's free capacity."""
    return pod.requests.fits_in(free)


def eligible_nodes(pod: Pod, nodes: tuple[Node, ...]) -> list[Node]:
    return [n for n in nodes if static_reason(pod, n) is None]


def unplaceable_reason(pod: Pod, nodes: tuple[Node, ...]) -> str | None:
    """A summary of why ``pod`` fits no node even when empty; None when some node could take it."""
    reasons: dict[str, int] = {}
    for n in nodes:
        reason = static_reason(pod, n)
        if reason is None:
            return None
        reasons[reason] = reasons.get(reason, 0) + 1
    if not nodes:
        return "no nodes"
    return "; ".join(f"{count} node(s): {r}" for r, count in sorted(reasons.items()))


def capacity_left(node: Node, pods: tuple[Pod, ...]) -> Resources:
    used = Resources()
    for p in pods:
        used = used + p.requests
    return node.allocatable - used
