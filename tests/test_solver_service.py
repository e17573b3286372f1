"""The solver over gRPC: a real server on a free port, the real planner, health checking."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dunnage.cluster import snapshot_from_objects
from dunnage.solver.plan import PlanStatus
from dunnage.solver.planner import solve
from dunnage.solver.proto_gen import solver_pb2, solver_pb2_grpc
from dunnage.solver.service import (
    SERVICE_NAME,
    SolverClient,
    make_server,
    plan_from_proto,
    plan_to_proto,
)


def node(name: str) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "allocatable": {"cpu": "8", "memory": "8Gi", "pods": "10", "nvidia.com/gpu": "4"}
        },
    }


def pod(name: str, gpus: int, prio: int, node_name: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "priority": prio,
        "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}],
    }
    if node_name:
        spec["nodeName"] = node_name
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"uid-{name}",
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"rs-{name}", "controller": True}],
        },
        "spec": spec,
    }


def fragmented() -> Any:
    """2 + 2 + 2 GPUs of low-priority pods fragment two 4-GPU nodes; a 4-GPU pod waits."""
    return snapshot_from_objects(
        [
            node("a"),
            node("b"),
            pod("x", 2, 0, "a"),
            pod("y", 2, 0, "b"),
            pod("z", 2, 0, "b"),
            pod("big", 4, 10),
        ]
    )


@pytest.fixture(scope="module")
def snapshot() -> Any:
    return fragmented()


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    server, port = make_server("127.0.0.1:0", max_concurrent=1)
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_plan_over_grpc_matches_the_planner(snapshot: Any, address: str) -> None:
    with SolverClient(address) as client:
        assert client.healthy()
        plan = client.plan(snapshot, 2.0, workers=1)
    assert plan.status is PlanStatus.IMPROVED
    assert plan.assignments["ml/big"] in ("a", "b")
    assert [b.pod for b in plan.bindings] == ["ml/big"]
    assert plan.placed_after[10] == 1 and plan.placed_before[10] == 0
    assert plan.solve_seconds > 0
    local = solve(snapshot, time_limit=2.0, workers=1)
    assert plan.placed_after == local.placed_after


def test_health_service_reports_serving(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_bad_requests_are_invalid_argument(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = solver_pb2_grpc.SolverStub(channel)
        for request in (
            solver_pb2.PlanRequest(snapshot_json=b"{nope", time_limit_seconds=1),
            solver_pb2.PlanRequest(snapshot_json=b'{"kind": "Pod"}', time_limit_seconds=1),
            solver_pb2.PlanRequest(
                snapshot_json=b'{"kind":"List","items":[]}', time_limit_seconds=-1
            ),
        ):
            with pytest.raises(grpc.RpcError) as err:
                stub.Plan(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_plan_survives_the_proto_round_trip(snapshot: Any) -> None:
    plan = solve(snapshot, time_limit=1.0, workers=1)
    only_placements = replace(plan, proven_optimal=False, placements_proven_optimal=True)
    for sent in (plan, only_placements):
        back = plan_from_proto(
            solver_pb2.PlanResponse.FromString(plan_to_proto(sent).SerializeToString())
        )
        assert back.to_dict() == sent.to_dict()
