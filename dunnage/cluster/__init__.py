"""Typed, immutable cluster snapshot built from ordinary Kubernetes objects."""

from dunnage.cluster.loader import (
    load_snapshot,
    snapshot_from_list,
    snapshot_from_objects,
    snapshot_to_list,
)
from dunnage.cluster.model import (
    DisruptionBudget,
    LabelSelector,
    Node,
    Operator,
    Pod,
    PreemptionPolicy,
    Requirement,
    SelectorTerm,
    Snapshot,
    Taint,
    TaintEffect,
    Toleration,
)
from dunnage.cluster.predicates import eligible_nodes, fits, static_reason, unplaceable_reason
from dunnage.cluster.quantity import CPU, GPU, MEMORY, PODS, Resources, to_units

__all__ = [
    "CPU",
    "GPU",
    "MEMORY",
    "PODS",
    "DisruptionBudget",
    "LabelSelector",
    "Node",
    "Operator",
    "Pod",
    "PreemptionPolicy",
    "Requirement",
    "Resources",
    "SelectorTerm",
    "Snapshot",
    "Taint",
    "TaintEffect",
    "Toleration",
    "eligible_nodes",
    "fits",
    "load_snapshot",
    "snapshot_from_list",
    "snapshot_from_objects",
    "snapshot_to_list",
    "static_reason",
    "to_units",
    "unplaceable_reason",
]
