"""The paper-grid generator follows DESIGN.md's distribution rules, deterministically by seed."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from dunnage.cli import main
from dunnage.cluster import load_snapshot, snapshot_from_list, snapshot_to_list
from dunnage.cluster.model import Snapshot
from dunnage.cluster.quantity import CPU, MEMORY
from dunnage.solver import bench, scenarios
from dunnage.solver.scenarios import (
    MB,
    ScenarioSpec,
    arrival_order,
    generate_replicasets,
    generate_scenario,
    node_capacity,
    paper_grid,
)

SPECS = [
    ScenarioSpec(nodes, ppn, prio, util, seed)
    for nodes, ppn, prio, util, seed in [
        (4, 4, 1, 0.90, 0),
        (8, 8, 2, 0.95, 1),
        (16, 4, 4, 1.00, 2),
        (32, 8, 4, 1.05, 3),
        (256, 8, 4, 1.05, 0),
    ]
]


def test_grid_is_the_papers() -> None:
    grid = list(paper_grid(seeds=range(2)))
    assert len(grid) == 4 * 2 * 3 * 4 * 2
    assert {s.nodes for s in grid} == {4, 8, 16, 32}
    assert {s.pods_per_node for s in grid} == {4, 8}
    assert {s.priorities for s in grid} == {1, 2, 4}
    assert {s.utilisation for s in grid} == {0.90, 0.95, 1.00, 1.05}
    assert len(set(grid)) == len(grid)


def test_names_follow_the_papers_jobs() -> None:
    assert ScenarioSpec(4, 4, 4, 0.95, 7).name == "nodes4_pods16_prio4_util095_seed7"
    assert ScenarioSpec(32, 8, 1, 1.05, 0).name == "nodes32_pods256_prio1_util105_seed0"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_replicasets_follow_the_distribution_rules(spec: ScenarioSpec) -> None:
    replicasets = generate_replicasets(spec)
    assert sum(rs.replicas for rs in replicasets) == spec.pods
    for rs in replicasets:
        assert 1 <= rs.replicas <= 4
        assert 100 <= rs.cpu_milli <= 1000
        assert 100 <= rs.memory_mb <= 1000
        assert 1 <= rs.priority <= spec.priorities


def test_draws_cover_their_ranges() -> None:
    replicasets = [
        rs for seed in range(20) for rs in generate_replicasets(ScenarioSpec(32, 8, 4, 1.0, seed))
    ]
    assert Counter(rs.replicas for rs in replicasets).keys() == {1, 2, 3, 4}
    assert Counter(rs.priority for rs in replicasets).keys() == {1, 2, 3, 4}
    assert min(rs.cpu_milli for rs in replicasets) < 150
    assert max(rs.cpu_milli for rs in replicasets) > 950
    assert min(rs.memory_mb for rs in replicasets) < 150
    assert max(rs.memory_mb for rs in replicasets) > 950


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_snapshot_matches_the_capacity_formula(spec: ScenarioSpec) -> None:
    snapshot = generate_scenario(spec)
    assert len(snapshot.nodes) == spec.nodes
    assert len(snapshot.pods) == spec.pods
    assert all(p.node_name is None for p in snapshot.pods)
    capacities = {n.allocatable for n in snapshot.nodes}
    assert len(capacities) == 1  # identical nodes
    (capacity,) = capacities
    for resource in (CPU, MEMORY):
        total = sum(p.requests[resource] for p in snapshot.pods)
        largest = max(p.requests[resource] for p in snapshot.pods)
        expected = max(largest, math.ceil(total / spec.utilisation / spec.nodes - 1e-9))
        assert capacity[resource] == expected
    for p in snapshot.pods:
        assert p.requests[MEMORY] % MB == 0
        assert p.owner is not None and p.owner.startswith("ReplicaSet/")
    # Replicas of one set share requests and priority.
    by_owner: dict[str | None, set[tuple[object, int]]] = {}
    for p in snapshot.pods:
        by_owner.setdefault(p.owner, set()).add((p.requests, p.priority))
    assert all(len(shapes) == 1 for shapes in by_owner.values())


def test_capacity_is_exact_for_exact_utilisations() -> None:
    replicasets = generate_replicasets(ScenarioSpec(4, 4, 1, 0.95, 0))
    cpu, mem = node_capacity(replicasets, 4, 0.95)
    total_cpu = sum(rs.cpu_milli * rs.replicas for rs in replicasets)
    assert cpu == max(max(rs.cpu_milli for rs in replicasets), -(-total_cpu * 100 // (95 * 4)))
    assert mem >= max(rs.memory_mb for rs in replicasets) * MB


def test_largest_pod_always_fits_an_empty_node() -> None:
    # Tiny totals at a high utilisation: the max(largest pod, ...) term wins.
    spec = ScenarioSpec(32, 4, 1, 1.05, 0)
    replicasets = generate_replicasets(spec)
    cpu, mem = node_capacity(replicasets, 1000, 1.05)
    assert cpu == max(rs.cpu_milli for rs in replicasets)
    assert mem == max(rs.memory_mb for rs in replicasets) * MB


def test_determinism_by_seed() -> None:
    spec = ScenarioSpec(8, 4, 4, 1.0, 5)
    assert generate_scenario(spec) == generate_scenario(spec)
    assert generate_scenario(spec) != generate_scenario(ScenarioSpec(8, 4, 4, 1.0, 6))


def test_arrival_order_is_creation_order_and_round_trips() -> None:
    snapshot = generate_scenario(ScenarioSpec(4, 8, 2, 1.0, 1))
    order = arrival_order(snapshot)
    assert order == tuple(p.key for p in snapshot.pods)
    assert snapshot_from_list(snapshot_to_list(snapshot)) == snapshot


# --- the scenario flow and the bench, with a stand-in default scheduler -----------------------


@dataclass(frozen=True)
class _FirstFit:
    snapshot: Snapshot
    bound: tuple[str, ...]
    preempted: tuple[str, ...]
    unschedulable: tuple[str, ...]


def _first_fit(snapshot: Snapshot, order: Sequence[str] | None = None) -> _FirstFit:
    """First fit in arrival order, no preemption: a stand-in for the reference scheduler."""
    free = {n.name: snapshot.free_on(n.name) for n in snapshot.nodes}
    assignments: dict[str, str | None] = {}
    unschedulable = []
    for key in order or [p.key for p in snapshot.pending]:
        pod = snapshot.pod_by_key[key]
        for node in snapshot.nodes:
            if pod.requests.fits_in(free[node.name]):
                free[node.name] = free[node.name] - pod.requests
                assignments[key] = node.name
                break
        else:
            unschedulable.append(key)
    return _FirstFit(
        snapshot.with_assignments(assignments), tuple(assignments), (), tuple(unschedulable)
    )


@pytest.fixture
def first_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scenarios, "run_default", _first_fit)


@pytest.mark.usefixtures("first_fit")
def test_flow_plans_only_where_the_default_leaves_pods_pending() -> None:
    spec = ScenarioSpec(4, 4, 2, 1.05, 0)
    default = scenarios.run_default_on(spec)
    assert default.failed and default.pending == len(default.snapshot.pending) > 0
    assert sum(default.placed_by_priority.values()) == spec.pods - default.pending
    outcome = scenarios.plan_on(default, time_limit=0.5, workers=1, checker=lambda s, p: [])
    assert outcome.category in set(scenarios.Category)
    assert outcome.checker_errors == ()
    failing = scenarios.plan_on(default, time_limit=0.5, workers=1, checker=lambda s, p: ["bad"])
    assert failing.checker_errors == ("bad",)


@pytest.mark.usefixtures("first_fit")
def test_bench_paper_cli_reports_categories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "paper.json"
    argv = ["bench", "paper", "--nodes", "4", "--seeds", "2", "--priorities", "1", "4"]
    argv += ["--pods-per-node", "4", "--utilisation", "1.05", "--time-limit", "0.3"]
    argv += ["--workers", "1", "--quiet", "--save", str(saved), "--dump", str(tmp_path / "d")]
    code = main(argv)
    table = capsys.readouterr().out
    assert code in (0, 1)  # 1 only when the independent checker rejects a plan
    doc = json.loads(saved.read_text())
    assert doc["checker_failures"] == (1 if code else 0)
    assert len(doc["defaults"]) == 4
    failed = sum(1 for d in doc["defaults"] if d["pending"])
    assert len(doc["plans"]) == failed
    overall = next(r for r in doc["summary"] if r["nodes"] == "all" and r["priorities"] == "all")
    assert overall["default_failed"] == failed
    assert overall["improved_pct"] + overall["certified_pct"] + overall["undecided_pct"] == (
        pytest.approx(100.0, abs=0.2)
    )
    four = next(r for r in doc["summary"] if r["nodes"] == "all" and r["priorities"] == 4)
    assert four["paper"] is None  # the paper's figures are for the 1 s and 10 s windows
    assert "IMPROVED%" in table and "checker" in table
    dumped = sorted((tmp_path / "d").glob("*.json"))
    assert len(dumped) == failed
    assert len(load_snapshot(dumped[0]).pending) > 0


def test_paper_figures_are_shown_for_matching_rows() -> None:
    assert bench.PAPER_FIGURES[(1.0, "all")] == (44, 19, 37)
    assert bench.PAPER_FIGURES[(10.0, "all")] == (74, 20, 6)
    assert bench.PAPER_FIGURES[(1.0, 32)] == (0, 0, 100)


def test_real_default_scheduler_flow() -> None:
    spec = ScenarioSpec(4, 8, 4, 1.05, 0)
    default = scenarios.run_default_on(spec)
    assert default.pods == spec.pods
    assert default.pending == len(default.snapshot.pending)
    for node in default.snapshot.nodes:
        free = default.snapshot.free_on(node.name)
        assert all(v >= 0 for v in free.values())


@pytest.mark.usefixtures("first_fit")
def test_bench_openb_slice_in_process() -> None:
    doc = bench.run_openb(nodes=[8], seed=1, time_limit=0.3, workers=1, isolate=False)
    (result,) = doc["slices"]
    assert result["nodes"] == 8 and result["pods"] > 0
    assert (
        sum(result["default"]["placed_by_priority"].values()) + result["default"]["pending"]
        == (result["pods"])
    )
    assert result["plan"]["status"] in ("improved", "optimal", "no_improvement")
    assert result["peak_rss_mb"] > 0
    assert "nodes (seed 1)" in bench.format_openb(doc)
