"""The engine stub's HTTP endpoint under arbitrary requests: 200, 400 or 404, never a crash; a
rejected load changes nothing, an accepted one is what GET /load and /metrics then show."""

from __future__ import annotations

import http.client
import json
import math
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from dunnage.sim.engine_stub import FIELDS, MAX_BODY, MAX_RPS, EngineStub

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=10,
)
loads = st.dictionaries(
    st.sampled_from([*FIELDS, "x", "Running"]),
    st.floats(min_value=0, max_value=2 * MAX_RPS) | st.integers(-5, 50) | json_values,
    max_size=6,
)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[EngineStub, int]]:
    engine = EngineStub()
    server: ThreadingHTTPServer = engine.serve()
    yield engine, server.server_address[1]
    engine.stop()
    server.shutdown()
    server.server_close()


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def load_now(port: int) -> dict[str, float]:
    status, payload = call(port, "GET", "/load")
    assert status == 200
    return json.loads(payload)


def acceptable(values: Any) -> bool:
    """The rule, stated apart from the code: a JSON object of known fields, each a finite
    number >= 0 (not a boolean), and rps at most MAX_RPS."""
    if not isinstance(values, dict):
        return False
    for key, value in values.items():
        if key not in FIELDS or isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not (0 <= value < 1e300 and math.isfinite(value)) or (key == "rps" and value > MAX_RPS):
            return False
    return True


@FUZZ
@given(values=loads | json_values)
def test_post_load_applies_all_or_nothing(stub: tuple[EngineStub, int], values: Any) -> None:
    _, port = stub
    before = load_now(port)
    status, payload = call(port, "POST", "/load", json.dumps(values).encode())
    after = load_now(port)
    if acceptable(values):
        assert status == 200
        expected = {**before, **{k: float(v) for k, v in values.items()}}
        assert json.loads(payload) == after == expected
    else:
        assert status == 400
        assert isinstance(json.loads(payload)["error"], str)
        assert after == before
    gauges = {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(call(port, "GET", "/metrics")[1].decode())
        if family.type == "gauge"
    }
    assert gauges["vllm:num_requests_running"] == after["running"]
    assert gauges["vllm:num_requests_waiting"] == after["waiting"]


@FUZZ
@given(body=st.binary(max_size=200))
def test_post_load_with_random_bytes(stub: tuple[EngineStub, int], body: bytes) -> None:
    _, port = stub
    before = load_now(port)
    status, _ = call(port, "POST", "/load", body)
    assert status in (200, 400)
    if status == 400:
        assert load_now(port) == before


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST"]),
    path=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20).map("/{}".format),
)
def test_other_paths_are_not_found(stub: tuple[EngineStub, int], method: str, path: str) -> None:
    _, port = stub
    status, payload = call(port, method, path, b"{}" if method == "POST" else None)
    # http.server reduces a path's leading slashes to one (CPython gh-87389: "//x" would be
    # taken for a host by clients that follow a redirect to it).
    served = "/" + path.lstrip("/")
    if served in ("/metrics", "/load"):
        assert status == 200
    else:
        assert status == 404 and json.loads(payload) == {"error": "not found"}


@pytest.mark.parametrize("length", ["-1", str(MAX_BODY + 1), "many"])
def test_a_bad_content_length_is_refused_without_reading(
    stub: tuple[EngineStub, int], length: str
) -> None:
    _, port = stub
    status, payload = call(port, "POST", "/load", b"{}", {"Content-Length": length})
    assert status == 400 and "Content-Length" in json.loads(payload)["error"]


def test_a_deeply_nested_body_is_refused(stub: tuple[EngineStub, int]) -> None:
    _, port = stub
    status, payload = call(port, "POST", "/load", b"[" * 50_000)
    assert status == 400 and json.loads(payload)["error"]
