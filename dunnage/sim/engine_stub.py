"""A simulated engine endpoint: vLLM-named metrics whose values a test sets over HTTP.

    python -m dunnage.sim.engine_stub --port 9100 [--running 0 --waiting 0 --rps 0 ...]

- ``GET /metrics``: Prometheus text, with vLLM's names: the gauges ``vllm:num_requests_running``
  and ``vllm:num_requests_waiting``, the counter ``vllm:request_success_total`` and the
  histograms ``vllm:time_to_first_token_seconds`` and ``vllm:inter_token_latency_seconds``
  (vLLM's own bucket bounds).
- ``POST /load`` with a JSON object of any of ``running``, ``waiting``, ``rps``, ``ttft``,
  ``tpot``: sets the gauges, and the rate of simulated completions with that TTFT and TPOT
  (a background thread records them every 0.1 s); answers with the whole load. Each value must
  be a finite JSON number >= 0 (``rps`` at most 10,000); anything else is answered 400 with the
  reason and changes nothing.
- ``GET /load``: the load now.

The series carry vLLM's ``model_name`` label only; Prometheus attaches ``namespace``,
``model_service`` and ``role`` as target labels (the e2e's scrape config does), as it would from
pod labels in a cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# vLLM's bucket bounds (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TPOT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
FIELDS = ("running", "waiting", "rps", "ttft", "tpot")
# Bounds that keep the stub responsive: every completion is recorded one by one under the lock
# that /metrics takes too, and a request body is read whole before it is parsed.
MAX_RPS = 10_000.0
MAX_BODY = 64 * 1024


@dataclass
class Load:
    running: float = 0.0
    waiting: float = 0.0
    rps: float = 0.0  # simulated completions per second
    ttft: float = 0.1  # seconds, recorded for each completion
    tpot: float = 0.02


class EngineStub:
    """The metrics and the load that drives them; :meth:`serve` runs the HTTP endpoint."""

    def __init__(self, load: Load | None = None, model_name: str = "stub") -> None:
        self.load = load or Load()
        self.lock = threading.Lock()
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        r = self.registry
        self.running = Gauge(
            "vllm:num_requests_running", "Requests in model execution batches.", labels, registry=r
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting to be processed.", labels, registry=r
        )
        self.success = Counter(
            "vllm:request_success", "Finished requests.", [*labels, "finished_reason"], registry=r
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Inter-token latency.",
            labels,
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.model_name = model_name
        self._carry = 0.0
        self._stop = threading.Event()
        self.set(**asdict(self.load))

    def set(self, **values: float) -> Load:
        unknown = set(values) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown load field {sorted(unknown)[0]!r} (fields: {FIELDS})")
        numbers: dict[str, float] = {}
        for key, value in values.items():
            # JSON numbers only (bool is an int to Python); NaN and infinities are not loads.
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} must be a number, got {value!r}")
            try:
                number = float(value)
            except OverflowError:  # an int beyond the float range
                number = math.inf
            if not 0 <= number < math.inf:
                raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
            if key == "rps" and number > MAX_RPS:
                raise ValueError(f"rps must be at most {MAX_RPS:g}, got {value!r}")
            numbers[key] = number
        with self.lock:
            for key, number in numbers.items():
                setattr(self.load, key, number)
            self.running.labels(self.model_name).set(self.load.running)
            self.waiting.labels(self.model_name).set(self.load.waiting)
            return Load(**asdict(self.load))

    def advance(self, seconds: float) -> int:
        """Record the completions of ``seconds`` at the current rate; returns how many."""
        with self.lock:
            self._carry += self.load.rps * seconds
            n = int(self._carry)
            self._carry -= n
            for _ in range(n):
                self.success.labels(self.model_name, "stop").inc()
                self.ttft.labels(self.model_name).observe(self.load.ttft)
                self.itl.labels(self.model_name).observe(self.load.tpot)
        return n

    def _tick(self, period: float = 0.1) -> None:
        last = time.monotonic()
        while not self._stop.wait(period):
            now = time.monotonic()
            self.advance(now - last)
            last = now

    def handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # A scraper stopped mid-answer is gone, not an error of the stub.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(stub.registry), CONTENT_TYPE_LATEST)
                elif self.path == "/load":
                    with stub.lock:
                        self._send(200, json.dumps(asdict(stub.load)).encode())
                else:
                    self._send(404, b'{"error": "not found"}')

            def do_POST(self) -> None:
                if self.path != "/load":
                    self._send(404, b'{"error": "not found"}')
                    return
                try:
                    length = self.headers.get("Content-Length") or "0"
                    if not (length.isdigit() and int(length) <= MAX_BODY):
                        self.close_connection = True  # the body, if any, is not read
                        raise ValueError(f"Content-Length must be 0 to {MAX_BODY}, got {length}")
                    raw = self.rfile.read(int(length))
                    values = json.loads(raw or b"{}")
                    if not isinstance(values, dict):
                        raise ValueError("the body must be a JSON object")
                    load = stub.set(**values)
                except (ValueError, TypeError, RecursionError) as exc:
                    self._send(400, json.dumps({"error": str(exc)}).encode())
                    return
                self._send(200, json.dumps(asdict(load)).encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass  # Prometheus scrapes every second; no access log

        return Handler

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
        """Start the endpoint and the completion thread in the background; returns the server."""
        server = ThreadingHTTPServer((host, port), self.handler())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        threading.Thread(target=self._tick, daemon=True).start()
        return server

    def stop(self) -> None:
        self._stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dunnage.sim.engine_stub",
        description="A simulated vLLM metrics endpoint whose load is set by POST /load.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-name", default="stub")
    for name in FIELDS:
        parser.add_argument(f"--{name}", type=float, default=getattr(Load(), name))
    args = parser.parse_args(argv)
    stub = EngineStub(Load(*(getattr(args, f) for f in FIELDS)), model_name=args.model_name)
    server = stub.serve(args.host, args.port)
    print(f"engine stub on http://{args.host}:{server.server_address[1]}/metrics", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
