"""The extender's HTTP server: ``POST /filter``, ``/prioritize``, ``/preempt``; ``GET /healthz``,
``/readyz``, ``/metrics``.

A stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive (kube-scheduler reuses its
connections). Each response goes out in one write with ``TCP_NODELAY`` set, so keep-alive calls
do not wait on Nagle's algorithm. Bodies are capped by ``Content-Length`` (8 MiB); anything
unreadable is answered 400 with ``{"error": ...}`` and the server carries on.

Without a cluster the server speaks the protocol over an empty (or test-fed) plan book; with one
(``--kubeconfig`` or, in a pod, ``--in-cluster``) it also keeps a node-state cache from watches
for GPU-aware scoring and runs the fallback planner, which steers pods through the same plan
book (see :mod:`.live`). With ``--leader-elect`` only the replica holding the Lease plans (see
:mod:`dunnage.cluster.leadership`); every replica answers calls, standbys steering by the
leader's recorded plans. SIGTERM stops the server (and releases the Lease).

Run as ``dunnage extender serve --port P`` or ``python -m dunnage.scheduler_extender.server
--port P``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dunnage.scheduler_extender.metrics import DunnageMetrics, default_metrics
from dunnage.scheduler_extender.planbook import Steer
from dunnage.scheduler_extender.protocol import ExtenderCore, ProtocolError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
VERBS = ("filter", "prioritize", "preempt")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class ExtenderHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        core: ExtenderCore,
        metrics: DunnageMetrics,
        not_ready: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.core = core
        self.metrics = metrics
        self.not_ready = not_ready  # why /readyz says 503, or None
        self.internal_errors = 0  # requests that hit an unexpected exception (a bug)
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ExtenderHTTPServer
    timeout = 120  # idle keep-alive connections are dropped after this

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(
        self,
        code: int,
        body: bytes,
        content_type: str = "application/json",
        close: bool = False,
    ) -> None:
        head = (
            f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
        ).encode("latin-1")
        if close:
            self.close_connection = True
        try:
            self.wfile.write(head + body)
        except OSError:
            self.close_connection = True

    def _error(self, code: int, message: str, close: bool = False) -> None:
        self._send(code, _error_body(message), close=close)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed request lines and headers end up here: answer 400 JSON (never HTML, never 5xx)
        self._error(400 if code >= 500 else code, message or "bad request", close=True)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, b"ok", "text/plain")
        elif path == "/readyz":
            reason = self.server.not_ready()
            if reason is None:
                self._send(200, b"ok", "text/plain")
            else:
                self._send(503, reason.encode(), "text/plain")
        elif path == "/metrics":
            self._send(200, generate_latest(self.server.metrics.registry), CONTENT_TYPE_LATEST)
        else:
            self._error(404, f"no such path {path}")

    def do_POST(self) -> None:
        started = time.perf_counter()
        verb = self.path.split("?", 1)[0].strip("/")
        if verb not in VERBS:
            self._drain_or_close()
            self._error(404, f"no such verb {verb!r}; expected one of {', '.join(VERBS)}")
            return
        steer: Steer | None = None
        close = False
        body = self._read_body()
        if isinstance(body, str):
            code, reply, close = 400, _error_body(body), True
        else:
            try:
                handler = getattr(self.server.core, verb)
                answer, steer = handler(body)
            except ProtocolError as exc:
                code, reply = 400, _error_body(str(exc))
            except Exception as exc:  # a bug: log it, answer 400, keep serving
                self.server.internal_errors += 1
                log.exception("%s failed", verb)
                code, reply = 400, _error_body(f"cannot process request: {type(exc).__name__}")
            else:
                code, reply = 200, answer
        # Counted before the answer goes out, so a caller holding the answer finds it counted.
        metrics = self.server.metrics
        metrics.observe_request(verb, time.perf_counter() - started, code)
        if steer is not None:
            metrics.steered.labels(verb).inc()
        self._send(code, reply, close=close)

    def do_PUT(self) -> None:
        self._not_allowed()

    def do_DELETE(self) -> None:
        self._not_allowed()

    def do_PATCH(self) -> None:
        self._not_allowed()

    def _not_allowed(self) -> None:
        self._drain_or_close()
        self._error(405, "method not allowed")

    def _content_length(self) -> int | None:
        if self.headers.get("Transfer-Encoding"):
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        try:
            length = int(raw.strip())
        except ValueError:
            return None
        return length if length >= 0 else None

    def _drain_or_close(self) -> None:
        """Skip a small unread body so the connection stays usable; else close after answering."""
        length = self._content_length()
        if length is None or length > MAX_BODY_BYTES:
            self.close_connection = True
        elif length:
            self.rfile.read(length)

    def _read_body(self) -> bytes | str:
        """The request body, or why it cannot be read (answered 400, closing the connection)."""
        length = self._content_length()
        if length is None:
            return "a valid Content-Length is required (no chunked bodies)"
        if length > MAX_BODY_BYTES:
            return f"body of {length} bytes exceeds the limit of {MAX_BODY_BYTES}"
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            return "body shorter than Content-Length"
        return body


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def make_server(
    host: str = "127.0.0.1",
    port: int = 0,
    core: ExtenderCore | None = None,
    metrics: DunnageMetrics | None = None,
    not_ready: Callable[[], str | None] = lambda: None,
) -> ExtenderHTTPServer:
    """A bound, not yet serving server (port 0 picks a free port: see ``server.port``).
    ``not_ready`` says why ``/readyz`` fails (None: ready)."""
    return ExtenderHTTPServer(
        (host, port), core or ExtenderCore(), metrics or default_metrics(), not_ready
    )


def serve_in_thread(server: ExtenderHTTPServer) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="extender-http", daemon=True
    )
    thread.start()
    return thread


# --- the command -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8888, help="port to listen on (default 8888)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig of the cluster; without it (or --in-cluster) the extender serves the "
        "protocol only",
    )
    parser.add_argument(
        "--in-cluster",
        action="store_true",
        help="watch the cluster this pod runs in, with its service account (the token is "
        "re-read as the kubelet rotates it)",
    )
    parser.add_argument(
        "--gpu-resource",
        action="append",
        default=None,
        metavar="NAME",
        help="GPU resource name for scoring (repeatable; default: the policy's, nvidia.com/gpu)",
    )
    parser.add_argument(
        "--policy",
        default="default",
        help="PackingPolicy the fallback planner follows (default: default)",
    )
    parser.add_argument(
        "--no-planner",
        dest="planner",
        action="store_false",
        help="with a cluster: watch and score, but run no fallback planner",
    )
    parser.add_argument(
        "--solver",
        default=None,
        metavar="HOST:PORT",
        help="solve plans in this solver service (dunnage solver serve) instead of in process",
    )
    from dunnage.cluster.leadership import add_election_arguments

    add_election_arguments(
        parser,
        lease="dunnage-extender",
        acts="runs the planner; other replicas stand by, answering calls by the plans it records",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    from dunnage.errors import InputError
    from dunnage.scheduler_extender.nodestate import DEFAULT_GPU_RESOURCES, NodeState
    from dunnage.scheduler_extender.planbook import PlanBook

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not 0 <= args.port <= 65535:
        raise InputError("must be a port number (0..65535)", obj="--port")
    election = _election_settings(args)  # checked before connecting to anything
    metrics = default_metrics()
    book = PlanBook(on_change=metrics.active_plans.set)
    gpu_names = tuple(args.gpu_resource or DEFAULT_GPU_RESOURCES)
    state: NodeState | None = None
    live = None
    stop = threading.Event()
    if args.kubeconfig or args.in_cluster:
        from kubernetes import client

        from dunnage.cluster import access, crds
        from dunnage.cluster.connect import load_client_configuration
        from dunnage.scheduler_extender.live import start_live

        configuration = load_client_configuration(args.kubeconfig, in_cluster=args.in_cluster)
        checks = client.ApiClient(configuration)
        needed = [*access.EXTENDER, *(access.EXTENDER_PLANNER if args.planner else ())]
        access.refuse(access.ask(checks, needed, []) or [], "extender")
        crds.check(checks, crds.EXTENDER_CRDS, "extender")
        live = start_live(
            configuration,
            book,
            metrics,
            stop,
            policy_name=args.policy,
            gpu_resources=tuple(args.gpu_resource) if args.gpu_resource else None,
            planner=args.planner,
            solver_address=args.solver,
            start_planner=election is None,  # else once this replica leads
        )
        state = live.state
    core = ExtenderCore(book, state, gpu_resources=state.gpu_resources if state else gpu_names)
    leadership = None
    exit_code = 0

    mirror: Any = None  # a PlanMirror while this replica stands by

    def not_ready() -> str | None:
        if state is not None and not state.synced:
            return "node state not synced"
        if mirror is not None and not mirror.synced:
            return "the leader's plans not synced"
        return None

    try:
        server = make_server(args.host, args.port, core, metrics, not_ready)
    except OSError as exc:
        raise InputError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from exc

    def shut_down() -> None:  # from another thread: shutdown() waits for serve_forever to end
        threading.Thread(target=server.shutdown, name="extender-shutdown", daemon=True).start()

    if live is not None and election is not None:
        from dunnage.cluster.leadership import Leadership
        from dunnage.scheduler_extender.live import PlanMirror

        planner = live.planner
        # Until it leads, this replica steers by the leader's recorded plans (without a
        # planner no replica makes any, nor may it read them: the chart grants it none).
        mirror = standby = PlanMirror(live.api_client, book) if planner is not None else None
        if standby is not None:
            standby.start()

        def lead() -> None:
            if standby is not None:
                standby.stop()
                book.load([])  # the planner's resume publishes what is still executing
            metrics.leader.set(1)
            if planner is not None:
                planner.start()

        def lost() -> None:
            nonlocal exit_code
            metrics.leader.set(0)
            exit_code = 1
            stop.set()
            if planner is not None:
                planner.stop()
            log.error("exiting: a restart rejoins the election as a standby")
            shut_down()

        leadership = Leadership(
            live.api_client, election, component="dunnage-extender", on_started=lead, on_lost=lost
        )
        leadership.start()
    else:
        metrics.leader.set(1)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: shut_down())  # the pod is being deleted
    log.info(
        "dunnage extender listening on %s:%d (%s)",
        args.host,
        server.port,
        "watching the cluster" if state else "protocol only, no cluster",
    )
    try:
        server.serve_forever()
    finally:
        stop.set()
        if live is not None and live.planner is not None:
            live.planner.stop()  # before the Lease goes: never two planners at once
        if leadership is not None:
            leadership.release()
        server.server_close()
    return exit_code


def _election_settings(args: argparse.Namespace) -> Any:
    """The Lease to campaign for, or None without ``--leader-elect``."""
    from dunnage.cluster.leadership import election_settings
    from dunnage.errors import InputError

    if args.leader_elect and not (args.kubeconfig or args.in_cluster):
        raise InputError("needs a cluster: give --kubeconfig or --in-cluster", obj="--leader-elect")
    return election_settings(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dunnage.scheduler_extender.server",
        description="kube-scheduler extender (filter, prioritize, preempt) for dunnage",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    from dunnage.errors import InputError

    try:
        return run(args)
    except InputError as exc:
        print(f"dunnage: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
