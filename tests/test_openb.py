"""The openb importer: valid snapshots, the documented mapping, seeded slices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dunnage.cli import main
from dunnage.cluster import load_snapshot, snapshot_from_list
from dunnage.cluster.model import Operator
from dunnage.cluster.openb import (
    GPU_MILLI,
    GPU_PRODUCT_LABEL,
    QOS_PRIORITY_CLASSES,
    TraceNode,
    TracePod,
    import_openb,
    node_from_trace,
    pod_from_trace,
    read_nodes,
    read_pods,
    select_pods,
    snapshot_to_kubernetes_list,
    trace_summary,
)
from dunnage.cluster.quantity import CPU, GPU, MEMORY, PODS


def _pod(**overrides: object) -> TracePod:
    fields: dict[str, object] = {
        "name": "p",
        "cpu_milli": 1000,
        "memory_mib": 2048,
        "num_gpu": 1,
        "gpu_milli": 1000,
        "gpu_spec": (),
        "qos": "LS",
        "phase": "Running",
        "creation_time": 0,
        "deletion_time": 10,
        "scheduled_time": 0,
    }
    fields.update(overrides)
    return TracePod(**fields)  # type: ignore[arg-type]


def test_trace_files_are_packaged_with_attribution() -> None:
    assert len(read_nodes()) == 1523
    assert len(read_pods()) == 8152
    readme = (Path(__file__).parent.parent / "dunnage/data/openb/README.md").read_text()
    assert "alibaba/clusterdata" in readme and "Beware of Fragmentation" in readme


def test_node_mapping() -> None:
    node = node_from_trace(TraceNode("n", 96000, 786432, 8, "V100M32"))
    assert node.allocatable[CPU] == 96000
    assert node.allocatable[MEMORY] == 786432 * 1024 * 1024
    assert node.allocatable[GPU] == 8
    assert node.allocatable[GPU_MILLI] == 8000
    assert node.allocatable[PODS] == 110
    assert node.labels[GPU_PRODUCT_LABEL] == "V100M32"
    cpu_only = node_from_trace(TraceNode("c", 32000, 262144, 0, ""))
    assert GPU_PRODUCT_LABEL not in cpu_only.labels
    assert cpu_only.allocatable[GPU] == 0


def test_pod_mapping_whole_and_shared_gpus_and_affinity() -> None:
    whole = pod_from_trace(_pod(num_gpu=2, gpu_milli=1000))
    assert whole.requests[GPU] == 2 and whole.requests[GPU_MILLI] == 2000
    shared = pod_from_trace(_pod(num_gpu=1, gpu_milli=460, qos="BE"))
    assert shared.requests[GPU] == 0 and shared.requests[GPU_MILLI] == 460
    assert shared.priority == QOS_PRIORITY_CLASSES["BE"][1]
    cpu = pod_from_trace(_pod(num_gpu=0, gpu_milli=0))
    assert cpu.requests[GPU] == 0 and cpu.requests[GPU_MILLI] == 0
    assert cpu.affinity_terms is None
    pinned = pod_from_trace(_pod(gpu_spec=("V100M16", "V100M32")))
    assert pinned.affinity_terms is not None
    (term,) = pinned.affinity_terms
    (req,) = term.expressions
    assert (req.key, req.operator, req.values) == (
        GPU_PRODUCT_LABEL,
        Operator.IN,
        ("V100M16", "V100M32"),
    )
    v100 = node_from_trace(TraceNode("v", 1, 1, 1, "V100M32"))
    t4 = node_from_trace(TraceNode("t", 1, 1, 1, "T4"))
    assert term.matches(v100) and not term.matches(t4)


def test_priorities_follow_qos_order() -> None:
    values = [value for _, value in QOS_PRIORITY_CLASSES.values()]
    assert values == sorted(values, reverse=True)
    assert list(QOS_PRIORITY_CLASSES) == ["Guaranteed", "LS", "Burstable", "BE"]


def test_slice_round_trips_through_the_loader() -> None:
    snapshot = import_openb(30, seed=7)
    doc = snapshot_to_kubernetes_list(snapshot)
    kinds = [item["kind"] for item in doc["items"]]
    assert kinds.count("Node") == 30
    assert kinds.count("Pod") == len(snapshot.pods) > 0
    assert "PriorityClass" in kinds
    for item in doc["items"]:
        if item["kind"] == "Pod":
            assert "nodeName" not in item["spec"]
            assert item["spec"]["priorityClassName"].startswith("openb-")
    # Class names alone resolve to the same priorities.
    for item in doc["items"]:
        if item["kind"] == "Pod":
            del item["spec"]["priority"]
    assert snapshot_from_list(json.loads(json.dumps(doc))) == snapshot


def test_pods_are_pending_in_trace_order() -> None:
    snapshot = import_openb(50, seed=1)
    assert all(p.node_name is None for p in snapshot.pods)
    names = [p.name for p in snapshot.pods]
    assert names == sorted(names)
    nodes = [n.name for n in snapshot.nodes]
    assert nodes == sorted(nodes) and len(set(nodes)) == 50


def test_slices_are_deterministic_by_seed() -> None:
    a, b, c = import_openb(40, seed=3), import_openb(40, seed=3), import_openb(40, seed=4)
    assert a == b
    assert a != c


def test_slice_is_loaded_like_the_full_cluster() -> None:
    full = trace_summary(import_openb(None, seed=0))
    assert full["pods"] == 8152 and full["nodes"] == 1523
    part = trace_summary(import_openb(200, seed=5))
    assert abs(part["load"][GPU_MILLI] - full["load"][GPU_MILLI]) < 0.02
    assert part["load"][GPU_MILLI] <= full["load"][GPU_MILLI] + 1e-9
    heavier = trace_summary(import_openb(200, seed=5, load=1.05))
    assert heavier["pods"] > part["pods"]


def test_exact_pod_count_and_time_filter() -> None:
    nodes = read_nodes()
    pods = [_pod(name=f"p{i}", creation_time=i, deletion_time=i + 5) for i in range(20)]
    chosen = select_pods(pods, slice_nodes=nodes, all_nodes=nodes, seed=0, count=7)
    assert len(chosen) == 7 and chosen == sorted(chosen, key=lambda p: p.creation_time)
    alive = select_pods(pods, slice_nodes=nodes, all_nodes=nodes, seed=0, time=10)
    assert [p.name for p in alive] == ["p6", "p7", "p8", "p9", "p10"]


def test_cli_writes_yaml_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_yaml, out_json = tmp_path / "s.yaml", tmp_path / "s.json"
    assert main(["import", "openb", "--nodes", "8", "--seed", "2", "-o", str(out_yaml)]) == 0
    assert main(["import", "openb", "--nodes", "8", "--seed", "2", "-o", str(out_json)]) == 0
    assert yaml.safe_load(out_yaml.read_text())["kind"] == "List"
    assert json.loads(out_json.read_text())["kind"] == "List"
    assert load_snapshot(out_yaml) == load_snapshot(out_json) == import_openb(8, seed=2)
    capsys.readouterr()


@pytest.mark.parametrize(
    "argv",
    [
        ["--nodes", "0"],
        ["--nodes", "5000"],
        ["--nodes", "4", "--pods", "100000"],
        ["--nodes", "4", "--load", "0"],
    ],
)
def test_cli_rejects_bad_slices(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "openb", *argv]) == 2
    assert "dunnage: error:" in capsys.readouterr().err
