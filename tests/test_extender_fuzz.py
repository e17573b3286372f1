"""Fuzzing the extender's three verbs over real HTTP: only 200 or 400, never a crash."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from dunnage.scheduler_extender.metrics import DunnageMetrics
from dunnage.scheduler_extender.nodestate import NodeState
from dunnage.scheduler_extender.planbook import PlanBook
from dunnage.scheduler_extender.protocol import ExtenderCore
from dunnage.scheduler_extender.server import ExtenderHTTPServer, make_server, serve_in_thread
from dunnage.scheduler_extender.steering import SteeringOrders

VERBS = ("/filter", "/prioritize", "/preempt")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
keys = st.sampled_from(
    ["Pod", "pod", "Nodes", "NodeNames", "nodenames", "NodeNameToVictims", "NodeNameToMetaVictims"]
)
pod_like = st.fixed_dictionaries(
    {},
    optional={
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "name": json_values,
                "namespace": st.sampled_from(["ml", "default"]) | json_values,
                "uid": json_values,
                "ownerReferences": st.lists(
                    st.fixed_dictionaries(
                        {"controller": st.booleans(), "kind": json_values, "name": json_values}
                    ),
                    max_size=2,
                )
                | json_values,
            },
        ),
        "spec": st.fixed_dictionaries(
            {},
            optional={
                "priority": st.integers() | json_values,
                "nodeName": json_values,
                "containers": st.lists(
                    st.fixed_dictionaries(
                        {
                            "resources": st.fixed_dictionaries(
                                {},
                                optional={
                                    "limits": st.dictionaries(
                                        st.sampled_from(["nvidia.com/gpu", "cpu"]),
                                        json_values | st.sampled_from(["1", "2Gi", "x", "-1"]),
                                    )
                                },
                            )
                        }
                    ),
                    max_size=3,
                )
                | json_values,
            },
        ),
    },
)
args_like = st.dictionaries(
    keys,
    json_values
    | pod_like
    | st.lists(st.sampled_from(["n1", "n2", "n3"]) | json_values, max_size=5)
    | st.dictionaries(
        st.sampled_from(["n1", "n2"]),
        st.fixed_dictionaries(
            {},
            optional={
                "Pods": st.lists(st.fixed_dictionaries({"UID": json_values}) | pod_like, max_size=3)
                | json_values,
                "NumPDBViolations": json_values,
            },
        )
        | json_values,
        max_size=2,
    )
    | st.fixed_dictionaries({"items": st.lists(json_values | pod_like, max_size=3)}),
    max_size=4,
)


@pytest.fixture(scope="module")
def server() -> Iterator[ExtenderHTTPServer]:
    book = PlanBook()
    book.publish(
        SteeringOrders(
            plan="p",
            expires_at=1e12,
            pods={"ml/big": "n2", "default/": "n1"},
            owners={"ml/ReplicaSet/web": ("n3",)},
            victims={"n2": ("u1",)},
            nodes=frozenset({"n2", "n3"}),
        )
    )
    state = NodeState()
    state.reset(
        [{"metadata": {"name": "n1"}, "status": {"allocatable": {"nvidia.com/gpu": "8"}}}], []
    )
    srv = make_server(
        "127.0.0.1", 0, ExtenderCore(book, state), DunnageMetrics(CollectorRegistry())
    )
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def conn(server: ExtenderHTTPServer) -> Iterator[list[http.client.HTTPConnection]]:
    holder = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)]
    yield holder
    holder[0].close()


def post(
    server: ExtenderHTTPServer, holder: list[http.client.HTTPConnection], verb: str, body: bytes
) -> int:
    connection = holder[0]
    connection.request("POST", verb, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    if response.status == 400:
        assert isinstance(json.loads(payload)["error"], str)
    else:
        json.loads(payload)
    if response.getheader("Connection", "").lower() == "close":
        connection.close()
        holder[0] = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    return response.status


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(verb=st.sampled_from(VERBS), body=st.binary(max_size=200))
def test_random_bytes(server: ExtenderHTTPServer, conn: Any, verb: str, body: bytes) -> None:
    assert post(server, conn, verb, body) in (200, 400)
    assert server.internal_errors == 0


@FUZZ
@given(verb=st.sampled_from(VERBS), doc=json_values)
def test_random_json(server: ExtenderHTTPServer, conn: Any, verb: str, doc: Any) -> None:
    assert post(server, conn, verb, json.dumps(doc).encode()) in (200, 400)
    assert server.internal_errors == 0


@FUZZ
@given(verb=st.sampled_from(VERBS), doc=args_like)
def test_extender_shaped_json(server: ExtenderHTTPServer, conn: Any, verb: str, doc: Any) -> None:
    assert post(server, conn, verb, json.dumps(doc).encode()) in (200, 400)
    assert server.internal_errors == 0
