"""The solver service under arbitrary requests over real gRPC: a plan or INVALID_ARGUMENT with a
message, never an unhandled error (which gRPC reports as UNKNOWN)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dunnage.solver.proto_gen import solver_pb2, solver_pb2_grpc
from dunnage.solver.service import make_server

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children)
    ),
    max_leaves=12,
)
quantities = st.sampled_from(["1", "2", "500m", "4Gi", "0", "-1", "x", "1e3", ""]) | scalars
resources = st.dictionaries(
    st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "pods"]), quantities
)
names = st.sampled_from(["a", "b", "c"])
# Mostly well-formed objects with one odd field here and there, so that many snapshots parse
# and reach the planner while each parser branch still meets bad values.
good_metadata = st.fixed_dictionaries(
    {"name": names},
    optional={
        "namespace": st.sampled_from(["ml", "default"]),
        "uid": names,
        "labels": st.dictionaries(names, names),
    },
)
odd_metadata = st.fixed_dictionaries(
    {}, optional={"name": scalars, "namespace": scalars, "uid": scalars, "labels": json_values}
)
metadata = st.one_of(good_metadata, good_metadata, good_metadata, odd_metadata)

node_like = st.fixed_dictionaries(
    {"kind": st.just("Node"), "metadata": metadata},
    optional={
        "spec": st.fixed_dictionaries(
            {},
            optional={
                "unschedulable": st.booleans() | scalars,
                "taints": st.lists(
                    st.fixed_dictionaries(
                        {"key": names, "effect": st.sampled_from(["NoSchedule", "Sometimes"])}
                    ),
                    max_size=2,
                )
                | json_values,
            },
        ),
        "status": st.fixed_dictionaries({}, optional={"allocatable": resources | json_values}),
    },
)
pod_like = st.fixed_dictionaries(
    {"kind": st.just("Pod"), "metadata": metadata},
    optional={
        "spec": st.fixed_dictionaries(
            {},
            optional={
                "priority": st.integers(-(2**31), 2**31) | scalars,
                "priorityClassName": names | scalars,
                "nodeName": names | scalars,
                "nodeSelector": st.dictionaries(names, names) | json_values,
                "containers": st.lists(
                    st.fixed_dictionaries(
                        {"name": names},
                        optional={
                            "resources": st.fixed_dictionaries(
                                {}, optional={"requests": resources, "limits": resources}
                            )
                            | json_values
                        },
                    ),
                    max_size=2,
                )
                | json_values,
            },
        )
        | json_values,
        "status": st.fixed_dictionaries(
            {}, optional={"phase": st.sampled_from(["Pending", "Running", "Succeeded"]) | scalars}
        ),
    },
)
other_like = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["PodDisruptionBudget", "PriorityClass", "Service", ""]),
        "metadata": metadata,
    },
    optional={"spec": json_values, "value": scalars},
)
lists = st.fixed_dictionaries(
    {
        "kind": st.just("List"),
        "items": st.lists(
            st.one_of(node_like, node_like, pod_like, pod_like, other_like), max_size=6
        ),
    }
)
FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def stub() -> Iterator[Any]:
    server, port = make_server("127.0.0.1:0", max_concurrent=1)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield solver_pb2_grpc.SolverStub(channel)
    channel.close()
    server.stop(grace=None)


def plan(stub: Any, request: solver_pb2.PlanRequest) -> grpc.StatusCode:
    try:
        response = stub.Plan(request, timeout=30)
    except grpc.RpcError as err:
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
        assert err.details()
        return err.code()
    assert response.status
    return grpc.StatusCode.OK


@FUZZ
@given(doc=lists)
def test_any_snapshot_is_planned_or_refused(stub: Any, doc: Any) -> None:
    raw = json.dumps(doc).encode()
    plan(stub, solver_pb2.PlanRequest(snapshot_json=raw, time_limit_seconds=1.0, workers=1))


@FUZZ
@given(doc=json_values | st.fixed_dictionaries({"kind": scalars, "items": json_values}))
def test_any_json_is_refused_or_planned(stub: Any, doc: Any) -> None:
    raw = json.dumps(doc).encode()
    plan(stub, solver_pb2.PlanRequest(snapshot_json=raw, time_limit_seconds=1.0, workers=1))


@FUZZ
@given(raw=st.binary(max_size=100))
def test_any_bytes_are_refused_or_planned(stub: Any, raw: bytes) -> None:
    plan(stub, solver_pb2.PlanRequest(snapshot_json=raw, time_limit_seconds=1.0, workers=1))


@FUZZ
@given(
    time_limit=st.floats(width=32) | st.just(0.0),
    workers=st.integers(-(2**31), 8),
    max_evictions=st.none() | st.integers(-(2**31), 2**31 - 1),
)
def test_any_limits_are_taken_or_refused(
    stub: Any, time_limit: float, workers: int, max_evictions: int | None
) -> None:
    doc = {"kind": "List", "items": []}
    request = solver_pb2.PlanRequest(
        snapshot_json=json.dumps(doc).encode(),
        time_limit_seconds=time_limit,
        workers=workers,
        max_evictions=max_evictions,
    )
    code = plan(stub, request)
    valid_limit = time_limit == 0 or 0 < time_limit <= 3600  # 0 means the default
    valid = valid_limit and workers >= 0 and (max_evictions is None or max_evictions >= 0)
    assert code is (grpc.StatusCode.OK if valid else grpc.StatusCode.INVALID_ARGUMENT)
