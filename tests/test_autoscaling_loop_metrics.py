"""The Prometheus metrics source: PromQL, answers parsed per role, histogram arithmetic as
Prometheus does it, and clear errors (naming the policy and field) for an unreachable Prometheus
or garbage answers. A local HTTP server stands in for Prometheus' /api/v1/query."""

from __future__ import annotations

import json
import math
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dunnage.autoscaling.metrics import (
    MetricsError,
    PrometheusSource,
    RoleMetrics,
    SampleCache,
    histogram,
    observation,
    parse_vector,
    queries,
    with_demand,
)
from dunnage.autoscaling.types import SLO
from dunnage.devcluster.cluster import free_port
from dunnage.sim.engine_stub import EngineStub, Load

OBJ = "AutoscalingPolicy ns/pol"


def vector(*series: tuple[dict[str, str], float]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [1700000000.0, str(v)]} for m, v in series],
        },
    }


# --- histograms --------------------------------------------------------------------------------


def test_quantile_matches_prometheus_histogram_quantile() -> None:
    h = histogram({0.1: 10.0, 0.5: 30.0, 1.0: 40.0, math.inf: 40.0})
    assert h.total == 40.0
    # rank 20 lies in (0.1, 0.5] holding 20 of them: 0.1 + 0.4 * 10 / 20
    assert h.quantile(0.5) == pytest.approx(0.3)
    assert h.quantile(0.1) == pytest.approx(0.04)  # first bucket starts at 0
    assert h.quantile(1.0) == pytest.approx(1.0)
    # Requests beyond the last finite bound: Prometheus answers that bound.
    tail = histogram({0.1: 1.0, math.inf: 10.0})
    assert tail.quantile(0.99) == 0.1
    assert histogram({0.1: 0.0}).quantile(0.5) is None


def test_rate_within_interpolates_inside_a_bucket() -> None:
    h = histogram({0.1: 10.0, 0.5: 30.0, math.inf: 40.0})
    assert h.rate_within(0.05) == pytest.approx(5.0)
    assert h.rate_within(0.3) == pytest.approx(20.0)
    assert h.rate_within(0.5) == pytest.approx(30.0)
    assert h.rate_within(100.0) == pytest.approx(30.0)  # unknown tail counts as missed


def test_out_of_order_bucket_rates_are_made_monotone() -> None:
    h = histogram({0.1: 5.0, 0.2: 4.9, 0.4: -1.0})
    assert [c for _, c in h.buckets] == [5.0, 5.0, 5.0, 5.0]
    assert math.isinf(h.buckets[-1][0])


@given(
    st.lists(st.floats(0.0, 100.0), min_size=2, max_size=8),
    st.floats(0.001, 0.999),
)
def test_quantile_and_rate_within_are_inverse(counts: list[float], q: float) -> None:
    bounds = [0.01 * 2**i for i in range(len(counts))]
    cumulative = list(itertools_accumulate(counts))
    h = histogram(dict(zip(bounds, cumulative, strict=True)))
    value = h.quantile(q)
    if value is None:
        assert h.total == 0
        return
    if value < bounds[-1]:
        assert h.rate_within(value) == pytest.approx(q * h.total, rel=1e-6, abs=1e-6)


def itertools_accumulate(values: list[float]) -> Iterator[float]:
    total = 0.0
    for v in values:
        total += v
        yield total


# --- queries and answers -----------------------------------------------------------------------


def test_queries_select_the_namespace_and_group_by_model_service_and_role() -> None:
    q = queries("ns", 'job="vllm"', "30s")
    sel = 'namespace="ns",model_service!="",job="vllm"'
    assert q["concurrency"] == (
        "sum by (model_service, role) "
        f'({{__name__=~"vllm:num_requests_running|vllm:num_requests_waiting",{sel}}})'
    )
    assert q["request_rate"] == (
        f"sum by (model_service, role) (rate(vllm:request_success_total{{{sel}}}[30s]))"
    )
    assert "vllm:time_to_first_token_seconds_bucket" in q["ttft"]
    assert "(model_service, role, le)" in q["ttft"]
    left, right = q["tpot"].split(" or ")
    assert "vllm:inter_token_latency_seconds_bucket" in left
    assert "vllm:time_per_output_token_seconds_bucket" in right
    # Quotes in names cannot escape the matcher.
    assert 'namespace="a\\"b"' in queries('a"b')["concurrency"]


@pytest.mark.parametrize("selector", ["job=vllm", 'job="a"} or vector(1) #', "x"])
def test_a_bad_pod_selector_names_the_field(selector: str) -> None:
    with pytest.raises(MetricsError) as err:
        queries("ns", selector, obj=OBJ)
    assert str(err.value).startswith(f"{OBJ}, field spec.metrics.prometheus.podSelector: ")


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ([], "not a JSON object"),
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "parse error"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "matrix"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{}]}}, "malformed"),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
            "malformed",
        ),
        (vector(({"role": "serve"}, math.inf)), "an infinite value for {'role': 'serve'}"),
    ],
)
def test_garbage_answers_are_errors(payload: Any, words: str) -> None:
    with pytest.raises(MetricsError) as err:
        parse_vector(payload, "concurrency", OBJ)
    assert str(err.value).startswith(f"{OBJ}: Prometheus answered the concurrency query")
    assert words in str(err.value)


def test_nan_samples_are_dropped() -> None:
    answer = vector(({"role": "serve"}, 3.0), ({"role": "decode"}, float("nan")))
    assert parse_vector(answer, "x") == [({"role": "serve"}, 3.0)]


# --- against an HTTP server --------------------------------------------------------------------


@contextmanager
def keep_alive_server(
    answer: Callable[[BaseHTTPRequestHandler], None],
) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    """An HTTP/1.1 server (connections kept alive, as Prometheus' are) calling ``answer`` with
    each request's handler; yields its URL and the client address of each connection."""
    connections: list[tuple[str, int]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            connections.append(self.client_address)

        def do_GET(self) -> None:
            answer(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", connections
    finally:
        server.shutdown()
        server.server_close()


def send(handler: BaseHTTPRequestHandler, code: int, raw: bytes) -> None:
    handler.send_response(code)
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


def reply(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    send(handler, 200, json.dumps(body).encode())


@pytest.fixture
def fake_prometheus() -> Iterator[tuple[str, dict[str, Callable[[str], tuple[int, bytes]]]]]:
    """A server answering /api/v1/query through ``routes[kind](query)``."""
    routes: dict[str, Callable[[str], tuple[int, bytes]]] = {}

    def answer(handler: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlparse(handler.path)
        promql = urllib.parse.parse_qs(url.query).get("query", [""])[0]
        send(handler, *routes["any"](promql))

    with keep_alive_server(answer) as (url, _):
        yield url, routes


def test_sample_reads_each_role(
    fake_prometheus: tuple[str, dict[str, Callable[[str], tuple[int, bytes]]]],
) -> None:
    url, routes = fake_prometheus

    def answer(promql: str) -> tuple[int, bytes]:
        if "num_requests" in promql:
            body = vector(
                ({"model_service": "chat", "role": "prefill"}, 3.0),
                ({"model_service": "chat", "role": "decode"}, 40.0),
                ({"model_service": "other", "role": "decode"}, 7.0),  # not chat's
            )
        elif "request_success" in promql:
            body = vector(({"model_service": "chat", "role": "decode"}, 12.5))
        elif "time_to_first_token" in promql:
            body = vector(
                ({"model_service": "chat", "role": "prefill", "le": "0.5"}, 4.0),
                ({"model_service": "chat", "role": "prefill", "le": "+Inf"}, 5.0),
                ({"model_service": "other", "role": "prefill", "le": "+Inf"}, 9.0),
            )
        else:
            body = vector()
        return 200, json.dumps(body).encode()

    routes["any"] = answer
    got = PrometheusSource(url, obj=OBJ).sample("ns", "chat", ("prefill", "decode"))
    assert got["prefill"].concurrency == 3.0 and got["decode"].concurrency == 40.0
    assert got["decode"].request_rate == 12.5 and got["prefill"].request_rate == 0.0
    ttft = got["prefill"].ttft
    assert ttft is not None and ttft.total == 5.0 and ttft.rate_within(0.5) == 4.0
    assert got["decode"].ttft is None and got["prefill"].tpot is None
    # A role Prometheus has no series for is absent, not zero.
    assert "serve" not in PrometheusSource(url).sample("ns", "chat", ("serve",))


def test_series_whose_sum_overflows_are_an_error_naming_the_policy(
    fake_prometheus: tuple[str, dict[str, Callable[[str], tuple[int, bytes]]]],
) -> None:
    """Each gauge finite, their sum not (a bad exporter): an error, not an infinite load."""
    url, routes = fake_prometheus
    series = {"model_service": "chat", "role": "decode"}
    huge = vector((series, 9e307), (series, 9e307))
    routes["any"] = lambda q: (200, json.dumps(huge if "num_requests" in q else vector()).encode())
    with pytest.raises(MetricsError) as err:
        PrometheusSource(url, obj=OBJ).sample("ns", "chat", ("decode",))
    assert str(err.value) == (
        f"{OBJ}: Prometheus answered the concurrency query with series of role 'decode' that "
        "sum to more than a float holds (a bad exporter)"
    )


def test_the_loops_of_a_policy_share_one_read_of_prometheus(
    fake_prometheus: tuple[str, dict[str, Callable[[str], tuple[int, bytes]]]],
) -> None:
    """Eight ModelServices' loops sampling at once: one read (four queries) answers them all,
    each with its own series; again only once the answers are max_age old, and while that read
    runs the others take the answer before. A failed read is shared the same way (Prometheus
    is not asked by every loop while it fails), also with another policy asking the same
    queries."""
    url, routes = fake_prometheus
    asked: list[str] = []
    gate = threading.Event()
    names = [f"ms{i}" for i in range(8)]

    def answer(promql: str) -> tuple[int, bytes]:
        asked.append(promql)
        gate.wait(5)  # every loop is waiting on the first read before it answers
        running = [({"model_service": n, "role": "serve"}, float(i)) for i, n in enumerate(names)]
        return 200, json.dumps(vector(*running) if "num_requests" in promql else vector()).encode()

    routes["any"] = answer
    now = [0.0]
    cache = SampleCache(clock=lambda: now[0])
    got: dict[str, float] = {}

    def loop(name: str) -> None:
        metrics = PrometheusSource(url, obj=OBJ).sample("ns", name, ("serve",), cache, 1.0)
        got[name] = metrics["serve"].concurrency

    threads = [threading.Thread(target=loop, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    while not asked:
        threading.Event().wait(0.01)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert got == {n: float(i) for i, n in enumerate(names)}
    assert len(asked) == 4  # concurrency, request rate, TTFT, TPOT: once
    now[0] = 0.9
    loop("ms3")
    assert len(asked) == 4
    now[0] = 1.0
    loop("ms3")
    assert len(asked) == 8
    # While one loop reads again, the others take the answer before instead of waiting.
    gate.clear()
    now[0] = 2.0
    reader = threading.Thread(target=loop, args=("ms5",))
    reader.start()
    while len(asked) == 8:
        threading.Event().wait(0.01)
    got.clear()
    loop("ms6")  # at once: the read is still held at the gate
    assert got == {"ms6": 6.0} and len(asked) == 9
    gate.set()
    reader.join(10)
    assert len(asked) == 12

    routes["any"] = lambda q: (asked.append(q), (503, b"overloaded"))[1]
    now[0] = 3.0
    for _ in range(3):
        with pytest.raises(
            MetricsError, match=f"^{OBJ}, field spec.metrics.prometheus.url: .*HTTP 503"
        ):
            PrometheusSource(url, obj=OBJ).sample("ns", "ms1", ("serve",), cache, 1.0)
    assert len(asked) == 13  # its first query failed, and ended the read for all three
    # Another policy asking the same queries shares the read, and its error names that policy.
    other = "AutoscalingPolicy ns/other"
    with pytest.raises(
        MetricsError, match=f"^{other}, field spec.metrics.prometheus.url: .*HTTP 503"
    ):
        PrometheusSource(url, obj=other).sample("ns", "ms1", ("serve",), cache, 1.0)
    assert len(asked) == 13
    # One with another rate window asks its own queries.
    with pytest.raises(MetricsError, match=f"^{other}, "):
        PrometheusSource(url, obj=other, rate_window="30s").sample(
            "ns", "ms1", ("serve",), cache, 1.0
        )
    assert len(asked) == 14


def test_unreachable_prometheus_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MetricsError) as err:
        PrometheusSource(url, obj=OBJ, timeout=2).sample("ns", "chat", ("serve",))
    message = str(err.value)
    assert message.startswith(f"{OBJ}, field spec.metrics.prometheus.url: Prometheus at {url}")
    assert "unreachable" in message


def test_not_prometheus_and_http_errors_are_clear(
    fake_prometheus: tuple[str, dict[str, Callable[[str], tuple[int, bytes]]]],
) -> None:
    url, routes = fake_prometheus
    routes["any"] = lambda q: (200, b"<html>a dashboard</html>")
    with pytest.raises(MetricsError, match=r"not JSON .* is spec\.metrics\.prometheus\.url the"):
        PrometheusSource(url, obj=OBJ).sample("ns", "chat", ("serve",))
    error = {"status": "error", "errorType": "bad_data", "error": "invalid parameter"}
    routes["any"] = lambda q: (400, json.dumps(error).encode())
    with pytest.raises(MetricsError, match="bad_data: invalid parameter"):
        PrometheusSource(url, obj=OBJ).sample("ns", "chat", ("serve",))
    routes["any"] = lambda q: (503, b"overloaded")
    with pytest.raises(MetricsError, match="HTTP 503"):
        PrometheusSource(url, obj=OBJ).sample("ns", "chat", ("serve",))


def test_reads_keep_one_connection_to_prometheus_alive() -> None:
    """Two reads of four queries each, one after the other: one connection, not eight; a
    server that drops a kept-alive connection as the next query arrives (its idle timeout
    racing the query) costs that query a new connection, not an error."""
    served: list[str] = []

    def answer(handler: BaseHTTPRequestHandler) -> None:
        served.append(handler.path)
        running = vector(({"model_service": "chat", "role": "serve"}, 2.0))
        reply(handler, running if "num_requests" in handler.path else vector())

    with keep_alive_server(answer) as (url, connections):
        for _ in range(2):
            got = PrometheusSource(url, obj=OBJ).sample("ns", "chat", ("serve",))
            assert got["serve"].concurrency == 2.0
        assert len(served) == 8 and len(connections) == 1

    dropped: list[str] = []

    def dropping(handler: BaseHTTPRequestHandler) -> None:
        if getattr(handler, "answered", False):  # its second query: closed unanswered
            dropped.append(handler.path)
            handler.close_connection = True
            return
        handler.answered = True  # type: ignore[attr-defined]
        answer(handler)

    served.clear()
    with keep_alive_server(dropping) as (url, connections):
        for _ in range(2):
            got = PrometheusSource(url, obj=OBJ).sample("ns", "chat", ("serve",))
            assert got["serve"].concurrency == 2.0
        assert len(served) == 8 and len(dropped) == 7 and len(connections) == 8


def test_a_redirect_is_followed_and_a_proxy_named_by_the_environment_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prometheus behind a path that redirects (a proxy's login-free prefix, say) answers; with
    HTTP_PROXY set the query goes through that proxy (as urllib sent it), unless NO_PROXY names
    the host."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        path = urllib.parse.urlparse(handler.path)
        if path.path == "/old/api/v1/query":
            handler.send_response(307)
            handler.send_header("Location", f"/api/v1/query?{path.query}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        running = vector(({"model_service": "chat", "role": "serve"}, 5.0))
        reply(handler, running if "num_requests" in path.query else vector())

    with keep_alive_server(answer) as (url, _):
        got = PrometheusSource(f"{url}/old", obj=OBJ).sample("ns", "chat", ("serve",))
        assert got["serve"].concurrency == 5.0

    through: list[str] = []

    def proxy(handler: BaseHTTPRequestHandler) -> None:
        through.append(handler.path)  # absolute-form: the proxy is asked for the whole URL
        running = vector(({"model_service": "chat", "role": "serve"}, 7.0))
        reply(handler, running if "num_requests" in handler.path else vector())

    with keep_alive_server(proxy) as (proxy_url, _):
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.setenv("NO_PROXY", "")
        target = "http://prometheus.monitoring.svc:9090"
        got = PrometheusSource(target, obj=OBJ).sample("ns", "chat", ("serve",))
        assert got["serve"].concurrency == 7.0
        assert len(through) == 4 and all(p.startswith(f"{target}/api/v1/query?") for p in through)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        direct = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        with pytest.raises(MetricsError, match=f"Prometheus at {direct} is unreachable"):
            PrometheusSource(direct, obj=OBJ, timeout=2).sample("ns", "chat", ("serve",))
        assert len(through) == 4


def test_the_activation_demand_is_the_sum_of_the_query_for_the_model_service(
    fake_prometheus: tuple[str, dict[str, Callable[[str], tuple[int, bytes]]]],
) -> None:
    url, routes = fake_prometheus
    asked: list[str] = []

    def answer(promql: str) -> tuple[int, bytes]:
        asked.append(promql)
        return 200, json.dumps(vector(({"route": "a"}, 3.0), ({"route": "b"}, 4.5))).encode()

    routes["any"] = answer
    template = 'sum by (route) (gateway_queued{ns="$namespace",svc="$model_service"})'
    assert PrometheusSource(url, obj=OBJ).demand(template, "team-a", "chat") == {"": 7.5}
    assert asked == ['sum by (route) (gateway_queued{ns="team-a",svc="chat"})']
    # Series with a role label are that role's demand (a router with a queue per pool).
    per_pool = vector(({"role": "prefill"}, 6.0), ({"role": "decode"}, 2.0), ({}, 1.0))
    routes["any"] = lambda q: (200, json.dumps(per_pool).encode())
    got = PrometheusSource(url, obj=OBJ).demand(template, "team-a", "chat")
    assert got == {"prefill": 6.0, "decode": 2.0, "": 1.0}
    routes["any"] = lambda q: (200, json.dumps(vector()).encode())
    assert PrometheusSource(url, obj=OBJ).demand(template, "team-a", "chat") == {}
    # A demand no decider can size for is the query's error, not a crash of the loop.
    for value, words in (("+Inf", "an infinite value"), ("-3", "not negative")):
        body = {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [0, value]}]}}  # fmt: skip
        routes["any"] = lambda q, b=body: (200, json.dumps(b).encode())  # type: ignore[misc]
        with pytest.raises(MetricsError, match=words) as err:
            PrometheusSource(url, obj=OBJ).demand(template, "team-a", "chat")
        assert err.value.field == "spec.metrics.prometheus.activationQuery"
    # A query Prometheus refuses is the activationQuery's fault, and the error says so.
    error = {"status": "error", "errorType": "bad_data", "error": "parse error"}
    routes["any"] = lambda q: (400, json.dumps(error).encode())
    with pytest.raises(MetricsError) as err:
        PrometheusSource(url, obj=OBJ).demand("sum(", "ns", "chat")
    assert err.value.field == "spec.metrics.prometheus.activationQuery"
    assert "activation query with an error: bad_data: parse error" in str(err.value)


def test_roles_without_a_ready_replica_see_the_demand_not_their_engines() -> None:
    engines = {"prefill": RoleMetrics(concurrency=0.4), "decode": RoleMetrics(concurrency=3.0)}
    got = with_demand(engines, ["decode"], {"": 12.0}, "concurrency")
    assert got["prefill"] == engines["prefill"]  # a role with ready replicas keeps its own
    assert got["decode"] == RoleMetrics(concurrency=12.0)
    # Per role: its own series plus those without a role label; none at all is no demand.
    both = with_demand({}, ["prefill", "decode"], {"prefill": 6.0, "": 1.0}, "concurrency")
    assert both == {"prefill": RoleMetrics(7.0), "decode": RoleMetrics(1.0)}
    assert with_demand({}, ["serve"], {}, "concurrency") == {"serve": RoleMetrics(0.0)}
    demand = with_demand({}, ["serve"], {"": 5.0}, "rps")["serve"]
    assert demand == RoleMetrics(0.0, request_rate=5.0)
    # The rps decider sees the rate; no replica served it, so nothing counts as completed.
    idle = observation(demand, replicas=1, ready_replicas=0, seconds=2.0, slo=SLO(1.0, 0.1))
    assert idle.request_rate == 5.0 and idle.completed == 0
    served = observation(demand, replicas=1, ready_replicas=1, seconds=2.0, slo=SLO(1.0, 0.1))
    assert served.completed == 10
    assert engines["decode"].concurrency == 3.0  # not modified in place


def test_the_url_must_be_http() -> None:
    with pytest.raises(MetricsError, match=r"field spec\.metrics\.prometheus\.url: .prom:9090."):
        PrometheusSource("prom:9090", obj=OBJ)


# --- the engine stub ---------------------------------------------------------------------------


def test_engine_stub_exposes_vllm_names_with_the_load_set() -> None:
    stub = EngineStub(Load(running=3, waiting=2, rps=10, ttft=0.3, tpot=0.04))
    assert stub.advance(1.05) == 10
    assert stub.advance(0.96) == 10  # the fractions carry over
    text = generate(stub)
    assert 'vllm:num_requests_running{model_name="stub"} 3.0' in text
    assert 'vllm:num_requests_waiting{model_name="stub"} 2.0' in text
    assert 'vllm:request_success_total{finished_reason="stop",model_name="stub"} 20.0' in text
    assert 'vllm:time_to_first_token_seconds_bucket{le="0.25",model_name="stub"} 0.0' in text
    assert 'vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="stub"} 20.0' in text
    assert 'vllm:inter_token_latency_seconds_bucket{le="0.05",model_name="stub"} 20.0' in text
    stub.set(running=0)
    assert 'vllm:num_requests_running{model_name="stub"} 0.0' in generate(stub)
    with pytest.raises(ValueError, match="unknown load field 'x'"):
        stub.set(x=1)
    with pytest.raises(ValueError, match="running must be a finite number >= 0"):
        stub.set(running=-1)


def generate(stub: EngineStub) -> str:
    from prometheus_client import generate_latest

    return generate_latest(stub.registry).decode()


def test_each_role_is_held_to_its_own_share_of_the_slo() -> None:
    from dunnage.autoscaling.metrics import Histogram, RoleMetrics, observation
    from dunnage.autoscaling.types import SLO, role_slo

    slo = SLO(ttft=2.0, tpot=0.1)
    # 10 requests/s; TTFT buckets: 4/s within 0.5 s, 8/s within 1.5 s, all within 2.5 s.
    ttft = Histogram(((0.5, 4.0), (1.5, 8.0), (2.5, 10.0), (math.inf, 10.0)))
    tpot = Histogram(((0.05, 5.0), (0.1, 10.0), (math.inf, 10.0)))
    prefill = observation(
        RoleMetrics(3.0, 10.0, ttft, None),  # prefill pods report no TPOT histogram
        replicas=2,
        ready_replicas=2,
        seconds=1.0,
        slo=role_slo(slo, "prefill"),
    )
    assert (prefill.completed, prefill.ttft_ok, prefill.tpot_ok) == (10, 8, 10)
    decode = observation(
        RoleMetrics(30.0, 10.0, ttft, tpot),
        replicas=2,
        ready_replicas=2,
        seconds=1.0,
        slo=role_slo(slo, "decode"),
    )
    assert (decode.completed, decode.ttft_ok, decode.tpot_ok) == (10, 4, 10)
    serve = observation(
        RoleMetrics(30.0, 10.0, ttft, tpot), replicas=2, ready_replicas=2, seconds=1.0, slo=slo
    )
    assert (serve.ttft_ok, serve.tpot_ok) == (9, 10)
