"""Per-role engine metrics for the autoscaling loop, from Prometheus' HTTP API.

The engines are vLLM (or anything exposing vLLM's metric names). Prometheus must attach three
target labels to every engine series, from the pod's namespace and its ``dunnage.io/model-service``
and ``dunnage.io/role`` labels (Prometheus label names cannot hold ``.`` or ``/``)::

    namespace      <- __meta_kubernetes_namespace
    model_service  <- __meta_kubernetes_pod_label_dunnage_io_model_service
    role           <- __meta_kubernetes_pod_label_dunnage_io_role

(a ``kubernetes_sd_configs`` pod job with ``relabel_configs``; docs/autoscaling.md has it, and the
e2e sets the same labels on static targets). The queries of a read cover a whole namespace,
grouped by ModelService and role (``BY`` is ``model_service, role``):

- concurrency: ``sum by (BY) ({__name__=~"vllm:num_requests_running|vllm:num_requests_waiting",
  SEL})`` -- in-flight requests, Knative's concurrency figure;
- request rate: ``sum by (BY) (rate(vllm:request_success_total{SEL}[W]))``;
- TTFT: ``sum by (BY, le) (rate(vllm:time_to_first_token_seconds_bucket{SEL}[W]))``;
- TPOT: the same over ``vllm:inter_token_latency_seconds_bucket``, or, for engines older than
  vLLM 0.11, ``vllm:time_per_output_token_seconds_bucket`` (``or``: never both counted).

``SEL`` is ``namespace="NS",model_service!=""`` plus the policy's ``podSelector``. The loops of a
namespace's ModelServices whose policies ask the same queries share each read
(:class:`SampleCache`), so Prometheus answers one read per namespace and set of queries, not one
per ModelService. Latency is read as histogram bucket rates so that the share of requests
within an SLO comes from the buckets (interpolated inside a bucket as
``histogram_quantile`` does), not from a few quantiles.
"""

from __future__ import annotations

import copy
import json
import math
import re
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import urllib3

from dunnage.autoscaling.types import SLO, RoleObservation

NAMESPACE_LABEL = "namespace"
MODEL_SERVICE_LABEL = "model_service"
ROLE_LABEL = "role"

CONCURRENCY_METRICS = ("vllm:num_requests_running", "vllm:num_requests_waiting")
SUCCESS_METRIC = "vllm:request_success_total"
TTFT_METRIC = "vllm:time_to_first_token_seconds"
TPOT_METRICS = ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
QUANTILES = (0.5, 0.9, 0.99)
URL_FIELD = "spec.metrics.prometheus.url"
SELECTOR_FIELD = "spec.metrics.prometheus.podSelector"
ACTIVATION_FIELD = "spec.metrics.prometheus.activationQuery"
# Cached answers (SampleCache) older than this are dropped: far longer than any policy's
# sampleSeconds (at most 60), so only those of policies gone or edited meanwhile.
FORGET_SECONDS = 600.0
_MATCHER = re.compile(r'^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*$')


class MetricsError(Exception):
    """Metrics could not be read; the message names the policy (or ModelService) and field."""

    def __init__(self, message: str, *, obj: str = "", field: str = "") -> None:
        where = ", ".join(p for p in (obj, f"field {field}" if field else "") if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.obj = obj
        self.field = field

    def about(self, obj: str) -> MetricsError:
        """The same error, naming ``obj`` (a read shared by several policies failed)."""
        return MetricsError(self.message, obj=obj, field=self.field)


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram's cumulative bucket rates (requests/s at or under ``le``)."""

    buckets: tuple[tuple[float, float], ...]  # (le, cumulative rate), ascending le, ends at +Inf

    @property
    def total(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def rate_within(self, bound: float) -> float:
        """Requests/s at or under ``bound``: linear inside the bucket holding it (as
        ``histogram_quantile`` assumes), the lowest bucket starting at 0 s."""
        lo_le, lo_count = 0.0, 0.0
        for le, count in self.buckets:
            if bound < le:
                if math.isinf(le):
                    return lo_count  # beyond the last finite bucket nothing is known
                return lo_count + (count - lo_count) * (bound - lo_le) / (le - lo_le)
            lo_le, lo_count = le, count
        return self.total

    def quantile(self, q: float) -> float | None:
        """``histogram_quantile(q, ...)`` over these buckets; None without requests."""
        total = self.total
        if total <= 0 or not self.buckets:
            return None
        rank = q * total
        lo_le, lo_count = 0.0, 0.0
        for le, count in self.buckets:
            if count >= rank:
                if math.isinf(le):
                    return lo_le  # Prometheus returns the highest finite bound
                if count == lo_count:
                    return le
                return lo_le + (le - lo_le) * (rank - lo_count) / (count - lo_count)
            lo_le, lo_count = le, count
        return lo_le

    def quantiles(self, levels: Sequence[float] = QUANTILES) -> dict[float, float]:
        out = {}
        for q in levels:
            value = self.quantile(q)
            if value is not None:
                out[q] = value
        return out


def histogram(points: Mapping[float, float]) -> Histogram:
    """Bucket rates by ``le`` -> :class:`Histogram`, made cumulative-monotone (rates of separately
    scraped buckets can be a little out of order) and closed with +Inf."""
    ordered = sorted(points.items())
    if not ordered or not math.isinf(ordered[-1][0]):
        ordered.append((math.inf, ordered[-1][1] if ordered else 0.0))
    out: list[tuple[float, float]] = []
    running = 0.0
    for le, value in ordered:
        running = max(running, max(0.0, value))
        out.append((le, running))
    return Histogram(tuple(out))


@dataclass(frozen=True)
class RoleMetrics:
    """One role's metrics now: in-flight requests, completions/s and latency bucket rates."""

    concurrency: float
    request_rate: float = 0.0
    ttft: Histogram | None = None
    tpot: Histogram | None = None


class MetricsSource(Protocol):
    def sample(
        self, namespace: str, model_service: str, roles: Sequence[str]
    ) -> dict[str, RoleMetrics]:
        """Metrics per role; a role with no series is left out (no data is not zero load)."""
        ...


def _completed_within(completed: float, histogram: Histogram, bound: float) -> int:
    """Of ``completed`` requests, those within ``bound`` by the histogram's share. Huge
    (finite) rates may overflow into an infinity (at most all of them, then) or a NaN (0 x
    inf: none), which round() refuses."""
    within = completed * histogram.rate_within(bound) / histogram.total
    return 0 if math.isnan(within) else round(min(within, completed))


def observation(
    metrics: RoleMetrics, *, replicas: int, ready_replicas: int, seconds: float, slo: SLO
) -> RoleObservation:
    """What the policy sees from one sample covering ``seconds``: completions in the period are
    the request rate times its length, and those within each SLO come from the buckets. ``slo``
    is the role's own (:func:`~dunnage.autoscaling.types.role_slo`). A role with no ready
    replica completes nothing (its request rate is then demand: :func:`with_demand`)."""
    # min: a huge (finite) rate must not overflow into an infinity that round() refuses.
    rate = metrics.request_rate * seconds
    completed = min(max(0.0, rate), sys.float_info.max) if ready_replicas else 0.0
    ttft_ok = tpot_ok = None
    no_tpot = math.isinf(slo.tpot)  # a P/D prefill pool emits no tokens after the first
    if metrics.ttft is not None and (metrics.tpot is not None or no_tpot):
        # Shares from the histograms, applied to the completions counted by the success counter.
        ttft_total = metrics.ttft.total
        tpot_total = 1.0 if no_tpot or metrics.tpot is None else metrics.tpot.total
        if ttft_total > 0 and tpot_total > 0:
            ttft_ok = _completed_within(completed, metrics.ttft, slo.ttft)
            tpot_ok = (
                round(completed)
                if no_tpot or metrics.tpot is None
                else _completed_within(completed, metrics.tpot, slo.tpot)
            )
    return RoleObservation(
        concurrency=max(0.0, metrics.concurrency),
        ready_replicas=ready_replicas,
        replicas=replicas,
        request_rate=metrics.request_rate,
        completed=round(completed),
        ttft_ok=ttft_ok,
        tpot_ok=tpot_ok,
        ttft_quantiles=metrics.ttft.quantiles() if metrics.ttft else {},
        tpot_quantiles=metrics.tpot.quantiles() if metrics.tpot else {},
    )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_selector(selector: str, obj: str = "") -> list[str]:
    """``a="x", b=~"y"`` -> its matchers; anything else is refused before it reaches PromQL."""
    if not selector.strip():
        return []
    parts = [p for p in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", selector) if p.strip()]
    for part in parts:
        if not _MATCHER.match(part):
            raise MetricsError(
                f'{part.strip()!r} is not a PromQL label matcher (name="value")',
                obj=obj,
                field=SELECTOR_FIELD,
            )
    return [p.strip() for p in parts]


def queries(
    namespace: str, selector: str = "", rate_window: str = "1m", obj: str = ""
) -> dict[str, str]:
    """The PromQL of one sample of every ModelService in ``namespace``, by what it measures,
    grouped by ModelService and role: the loops of a policy's ModelServices share one answer
    (:class:`SampleCache`) instead of asking Prometheus each for its own."""
    sel = ",".join(
        [
            f"{NAMESPACE_LABEL}={_quote(namespace)}",
            f'{MODEL_SERVICE_LABEL}!=""',
            *check_selector(selector, obj),
        ]
    )
    names = "|".join(re.escape(n) for n in CONCURRENCY_METRICS)
    by_role = f"sum by ({MODEL_SERVICE_LABEL}, {ROLE_LABEL})"
    by_le = f"sum by ({MODEL_SERVICE_LABEL}, {ROLE_LABEL}, le)"
    tpot = " or ".join(f"{by_le} (rate({m}_bucket{{{sel}}}[{rate_window}]))" for m in TPOT_METRICS)
    return {
        "concurrency": f'{by_role} ({{__name__=~"{names}",{sel}}})',
        "request_rate": f"{by_role} (rate({SUCCESS_METRIC}{{{sel}}}[{rate_window}]))",
        "ttft": f"{by_le} (rate({TTFT_METRIC}_bucket{{{sel}}}[{rate_window}]))",
        "tpot": tpot,
    }


def parse_vector(
    payload: Any, what: str, obj: str = "", field: str = ""
) -> list[tuple[dict[str, str], float]]:
    """An ``/api/v1/query`` answer -> (labels, value) per series; MetricsError on anything else
    (naming ``field`` when the query comes from it)."""

    def bad(message: str) -> MetricsError:
        return MetricsError(
            f"Prometheus answered the {what} query with {message}", obj=obj, field=field
        )

    if not isinstance(payload, Mapping):
        raise bad("something that is not a JSON object")
    if payload.get("status") != "success":
        raise bad(f"an error: {payload.get('errorType', '?')}: {payload.get('error', '?')}")
    data = payload.get("data")
    if not isinstance(data, Mapping) or data.get("resultType") != "vector":
        kind = data.get("resultType") if isinstance(data, Mapping) else None
        raise bad(f"result type {kind!r}, not a vector")
    out = []
    for item in data.get("result") or []:
        try:
            labels = {str(k): str(v) for k, v in item["metric"].items()}
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise bad(f"a malformed sample {str(item)[:200]!r}") from None
        if math.isnan(value):
            continue  # rate() of a series with too few points
        if math.isinf(value):  # no gauge, rate or demand here is infinite: a bad exporter
            raise bad(f"an infinite value for {labels or 'its result'}")
        out.append((labels, value))
    return out


def _add(total: float, value: float, what: str, role: str, obj: str, field: str) -> float:
    """``total + value``; a MetricsError where finite series sum to more than a float holds."""
    if math.isinf(total := total + value):
        raise MetricsError(
            f"Prometheus answered the {what} query with series of role {role!r} that sum to "
            "more than a float holds (a bad exporter)",
            obj=obj,
            field=field,
        )
    return total


def _by_role(
    series: list[tuple[dict[str, str], float]], what: str, obj: str = "", field: str = ""
) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in series:
        role = labels.get(ROLE_LABEL, "")
        out[role] = _add(out.get(role, 0.0), value, what, role, obj, field)
    return out


def _histograms(
    series: list[tuple[dict[str, str], float]], what: str, obj: str = ""
) -> dict[str, Histogram]:
    points: dict[str, dict[float, float]] = {}
    for labels, value in series:
        try:
            le = float(labels.get("le", ""))
        except ValueError:
            continue
        role = labels.get(ROLE_LABEL, "")
        role_points = points.setdefault(role, {})
        role_points[le] = _add(role_points.get(le, 0.0), value, what, role, obj, "")
    return {role: histogram(p) for role, p in points.items()}


def with_demand(
    metrics: Mapping[str, RoleMetrics],
    idle_roles: Sequence[str],
    demand: Mapping[str, float],
    metric: str,
) -> dict[str, RoleMetrics]:
    """What Knative's activator does for a revision without ready pods: the KPA of each role in
    ``idle_roles`` sees the demand waiting for it (requests, or requests/s on the rps metric),
    not its engines' series, which are absent, or stale ones of engines gone. ``demand`` is by
    role (:meth:`PrometheusSource.demand`); its "" entry counts for every role."""
    out = dict(metrics)
    rps = metric == "rps"
    for role in idle_roles:
        wanted = demand.get(role, 0.0) + demand.get("", 0.0)
        out[role] = RoleMetrics(
            concurrency=0.0 if rps else wanted, request_rate=wanted if rps else 0.0
        )
    return out


Series = list[tuple[dict[str, str], float]]  # (labels, value) per series of a vector
Answers = Mapping[str, Series]  # a sample's parsed answers, by what each query measures
NamespaceAnswers = Mapping[str, Answers]  # a namespace's, by ModelService


def by_model_service(answers: Answers) -> dict[str, dict[str, Series]]:
    """A namespace's answers (:func:`queries`) split by ModelService, in one pass: each loop
    then takes its own without going through the others' series."""
    out: dict[str, dict[str, Series]] = {}
    for what, series in answers.items():
        for labels, value in series:
            name = labels.get(MODEL_SERVICE_LABEL, "")
            out.setdefault(name, {}).setdefault(what, []).append((labels, value))
    return out


def role_metrics(roles: Sequence[str], answers: Answers, obj: str = "") -> dict[str, RoleMetrics]:
    """One ModelService's parsed query answers -> metrics per role (roles without a
    concurrency series left out); ``obj`` names the policy in a MetricsError."""
    concurrency = _by_role(answers.get("concurrency", []), "concurrency", obj)
    rate = _by_role(answers.get("request_rate", []), "request_rate", obj)
    ttft = _histograms(answers.get("ttft", []), "ttft", obj)
    tpot = _histograms(answers.get("tpot", []), "tpot", obj)
    return {
        role: RoleMetrics(
            concurrency=concurrency[role],
            request_rate=rate.get(role, 0.0),
            ttft=ttft.get(role),
            tpot=tpot.get(role),
        )
        for role in roles
        if role in concurrency
    }


# Kept-alive connections to each Prometheus, shared by every policy's reads (a read is four
# queries; a connection per query cost a TCP handshake, and with TLS a TLS one, each).
# Thread-safe; more threads than ``maxsize`` reading one server at once open connections that
# are closed after their answer. Redirects are followed; nothing is retried but a kept-alive
# connection the server closed meanwhile.
_CONNECTIONS = urllib3.PoolManager(num_pools=16, maxsize=32)
_PROXIED: dict[str, urllib3.ProxyManager] = {}
_PROXIED_LOCK = threading.Lock()
_RETRIES = urllib3.Retry(connect=0, read=0, status=0, other=0, redirect=5)


def _connections(url: str) -> urllib3.PoolManager:
    """The pool for ``url``: through the proxy the environment names for it (``HTTPS_PROXY``,
    ``NO_PROXY``... as urllib reads them), else direct."""
    parsed = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if not proxy or urllib.request.proxy_bypass(parsed.hostname or ""):
        return _CONNECTIONS
    with _PROXIED_LOCK:
        if proxy not in _PROXIED:
            _PROXIED[proxy] = urllib3.ProxyManager(proxy, num_pools=16, maxsize=32)
        return _PROXIED[proxy]


class PrometheusSource:
    """:class:`MetricsSource` over Prometheus' ``/api/v1/query`` (instant queries)."""

    def __init__(
        self,
        url: str,
        *,
        selector: str = "",
        rate_window: str = "1m",
        timeout: float = 5.0,
        obj: str = "",
    ) -> None:
        if not re.match(r"^https?://[^\s]+$", url or ""):
            raise MetricsError(f"{url!r} is not an http(s) URL", obj=obj, field=URL_FIELD)
        self.url = url.rstrip("/")
        self.selector = selector
        self.rate_window = rate_window
        self.timeout = timeout
        self.obj = obj
        check_selector(selector, obj)
        self._connections = _connections(self.url)  # the environment read once, not per query

    def query(self, promql: str, what: str, field: str = "") -> list[tuple[dict[str, str], float]]:
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        timeout = urllib3.Timeout(connect=self.timeout, read=self.timeout)
        pool = self._connections
        try:
            try:
                response = pool.request("GET", address, timeout=timeout, retries=_RETRIES)
            except urllib3.exceptions.MaxRetryError as exc:
                if not isinstance(exc.reason, urllib3.exceptions.ProtocolError):
                    raise
                # A kept-alive connection the server closed meanwhile: once more, on a new one.
                response = pool.request("GET", address, timeout=timeout, retries=_RETRIES)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise MetricsError(
                f"Prometheus at {self.url} is unreachable: {reason}", obj=self.obj, field=URL_FIELD
            ) from None
        raw = response.data
        if response.status >= 400:
            # Prometheus explains bad queries (400/422) in a JSON body.
            try:
                payload = json.loads(raw)
            except ValueError:
                raise MetricsError(
                    f"Prometheus at {self.url} answered HTTP {response.status} to the {what} query",
                    obj=self.obj,
                    field=URL_FIELD,
                ) from None
            return parse_vector(payload, what, self.obj, field)
        try:
            payload = json.loads(raw)
        except ValueError:
            raise MetricsError(
                f"Prometheus at {self.url} answered the {what} query with something that is not "
                f"JSON ({raw[:80]!r}); is {URL_FIELD} the Prometheus HTTP API?",
                obj=self.obj,
                field=URL_FIELD,
            ) from None
        return parse_vector(payload, what, self.obj, field)

    def demand(self, template: str, namespace: str, model_service: str) -> dict[str, float]:
        """The value of an ``activationQuery`` for one ModelService, summed per ``role`` label
        (key "" for the series without one, which count for every role: :func:`with_demand`)."""
        promql = template.replace("$namespace", namespace).replace("$model_service", model_service)
        answer = self.query(promql, "activation", ACTIVATION_FIELD)
        by_role = _by_role(answer, "activation", self.obj, ACTIVATION_FIELD)
        for role, value in by_role.items():
            if value < 0:
                raise MetricsError(
                    f"Prometheus answered the activation query with {value:g}"
                    + (f" for role {role}" if role else "")
                    + "; the demand is a number of requests (or requests/s), not negative",
                    obj=self.obj,
                    field=ACTIVATION_FIELD,
                )
        return by_role

    def answers(self, namespace: str) -> dict[str, dict[str, Series]]:
        """One sample of every ModelService in the namespace (:func:`queries`), parsed, by
        ModelService."""
        sample = queries(namespace, self.selector, self.rate_window, self.obj)
        return by_model_service({what: self.query(promql, what) for what, promql in sample.items()})

    def sample(
        self,
        namespace: str,
        model_service: str,
        roles: Sequence[str],
        cache: SampleCache | None = None,
        max_age: float = 0.0,
    ) -> dict[str, RoleMetrics]:
        """Metrics per role of one ModelService; from ``cache``, the namespace's answers as
        read less than ``max_age`` seconds ago by any loop whose policy asks the same
        Prometheus the same queries (URL, pod selector, rate window), so several policies in a
        namespace share one read too."""
        if cache is None:
            answers: NamespaceAnswers = self.answers(namespace)
        else:
            key = (self.url, namespace, self.selector, self.rate_window)
            try:
                answers = cache.get(key, max_age, lambda: self.answers(namespace))
            except MetricsError as exc:
                if exc.obj == self.obj:
                    raise
                raise exc.about(self.obj) from None  # read by another policy's loop
        return role_metrics(roles, answers.get(model_service, {}), self.obj)


class SampleCache:
    """The answers of a namespace's queries, shared by the loops of its ModelServices whose
    policies ask the same queries, for ``max_age`` seconds (a MetricsError too: Prometheus is
    not asked again by every loop while it fails). One loop reads at a time per key. While it
    reads, the others take the answer before (at most ``max_age`` plus a read old) instead of
    waiting: a loop blocked on another's read would hold one of kopf's handler threads, of
    which every ModelService's timer needs one (measured: docs/benchmarks.md). Only before a
    key's first answer do they wait for it. Thread-safe (kopf runs sync handlers in threads)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._changed = threading.Condition()
        self._answers: dict[Hashable, tuple[float, NamespaceAnswers | MetricsError]] = {}
        self._reading: set[Hashable] = set()

    def get(
        self, key: Hashable, max_age: float, read: Callable[[], NamespaceAnswers]
    ) -> NamespaceAnswers:
        with self._changed:
            while True:
                kept = self._answers.get(key)
                if kept is not None and self._clock() - kept[0] < max_age:
                    break
                if key not in self._reading:
                    self._reading.add(key)
                    kept = None  # this loop reads
                    break
                if kept is not None:
                    break  # another loop reads it again: the last answer meanwhile
                self._changed.wait()
        if kept is None:
            answer: NamespaceAnswers | MetricsError | None = None
            try:
                answer = read()
            except MetricsError as exc:
                answer = exc
            finally:
                with self._changed:
                    self._reading.discard(key)
                    if answer is not None:
                        kept = self._answers[key] = (self._clock(), answer)
                        self._forget(kept[0])
                    self._changed.notify_all()
        assert kept is not None  # (read() raised anything else: it propagated)
        if isinstance(kept[1], MetricsError):
            raise copy.copy(kept[1])  # one per loop: raising sets its traceback
        return kept[1]

    def _forget(self, now: float) -> None:
        """Drop answers nobody asked for in a long while (their policy gone or edited)."""
        for key in [k for k, (t, _) in self._answers.items() if now - t > FORGET_SECONDS]:
            del self._answers[key]
