"""Problem.build: node shapes and static eligibility."""

from __future__ import annotations

from typing import Any

import pytest

from dunnage.cluster import snapshot_from_objects
from dunnage.solver.problem import Problem


def node(name: str, **labels: str) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
    }


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "t"},
        "spec": {"containers": [{"name": "c"}], **spec},
    }


def required(**term: Any) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


def build(*pods: dict[str, Any]) -> tuple[Problem, dict[str, tuple[str, ...]]]:
    nodes = [node("a", gpu="A100"), node("b", gpu="H100"), node("c", gpu="H100")]
    snap = snapshot_from_objects([*nodes, *pods])
    problem = Problem.build(snap)
    eligible = {
        p.name: tuple(snap.nodes[i].name for i in problem.eligible[pi])
        for pi, p in enumerate(snap.pods)
    }
    return problem, eligible


def test_nodes_alike_but_for_labels_no_pod_selects_share_a_shape() -> None:
    problem, eligible = build(pod("any"))
    assert len(set(problem.node_shape_id)) == 1  # hostname and gpu labels differ; nobody asks
    assert eligible["any"] == ("a", "b", "c")


@pytest.mark.parametrize(
    ("spec", "expected", "shapes"),
    [
        ({"nodeSelector": {"kubernetes.io/hostname": "c"}}, ("c",), 3),
        (
            {
                "affinity": required(
                    matchFields=[{"key": "metadata.name", "operator": "In", "values": ["c"]}]
                )
            },
            ("c",),
            3,
        ),
        (
            {
                "affinity": required(
                    matchExpressions=[{"key": "gpu", "operator": "NotIn", "values": ["H100"]}]
                )
            },
            ("a",),
            2,
        ),
    ],
    ids=["hostname-selector", "match-fields", "affinity-key"],
)
def test_a_pod_selecting_what_tells_nodes_apart_splits_their_shape(
    spec: dict[str, Any], expected: tuple[str, ...], shapes: int
) -> None:
    problem, eligible = build(pod("picky", **spec), pod("any"))
    assert len(set(problem.node_shape_id)) == shapes
    assert eligible["picky"] == expected
    assert eligible["any"] == ("a", "b", "c")
