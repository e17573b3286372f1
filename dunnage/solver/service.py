"""The packing planner as a gRPC service (``dunnage.solver.v1.Solver``), and its client.

The fallback planner calls it so that CP-SAT never runs on the extender's request path. The
request carries the snapshot as a Kubernetes List in JSON (the same format as `dunnage plan`
files); the response carries the :class:`Plan` fields, typed. Standard gRPC health checking
(``grpc.health.v1``) reports SERVING for ``""`` and ``dunnage.solver.v1.Solver``.

Generated code: ``dunnage/solver/proto_gen`` from ``proto/dunnage/solver/v1/solver.proto``.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from dunnage.cluster.loader import snapshot_from_list, snapshot_to_list
from dunnage.cluster.model import Snapshot
from dunnage.errors import InputError
from dunnage.solver.plan import Binding, Eviction, Move, Plan, PlanStatus
from dunnage.solver.proto_gen import solver_pb2, solver_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "dunnage.solver.v1.Solver"
DEFAULT_TIME_LIMIT = 1.0
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # snapshots of large clusters are big
_RPC_MARGIN_SECONDS = 5.0  # client deadline beyond the solve's own time limit

_STATUS_TO_PROTO = {
    PlanStatus.IMPROVED: solver_pb2.PLAN_STATUS_IMPROVED,
    PlanStatus.OPTIMAL: solver_pb2.PLAN_STATUS_OPTIMAL,
    PlanStatus.NO_IMPROVEMENT: solver_pb2.PLAN_STATUS_NO_IMPROVEMENT,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}

SolveFunction = Callable[..., Plan]  # solve(snapshot, *, time_limit, workers, ...) -> Plan


# --- conversions (pure) ------------------------------------------------------------------


def plan_to_proto(plan: Plan) -> solver_pb2.PlanResponse:
    return solver_pb2.PlanResponse(
        status=_STATUS_TO_PROTO[plan.status],
        assignments=[
            solver_pb2.Assignment(pod=pod, node=node or "")
            for pod, node in plan.assignments.items()
        ],
        bindings=[solver_pb2.Binding(pod=b.pod, node=b.node) for b in plan.bindings],
        moves=[
            solver_pb2.Move(pod=m.pod, from_node=m.source, to_node=m.target) for m in plan.moves
        ],
        evictions=[solver_pb2.Eviction(pod=e.pod, node=e.node) for e in plan.evictions],
        placed_before=[
            solver_pb2.PlacedCount(priority=p, pods=n) for p, n in plan.placed_before.items()
        ],
        placed_after=[
            solver_pb2.PlacedCount(priority=p, pods=n) for p, n in plan.placed_after.items()
        ],
        proven_optimal=plan.proven_optimal,
        placements_proven_optimal=plan.placements_proven_optimal,
        solve_seconds=plan.solve_seconds,
        unplaced_reasons=dict(plan.unplaced_reasons),
        stats_json=json.dumps(dict(plan.stats), default=str),
    )


def plan_from_proto(msg: solver_pb2.PlanResponse) -> Plan:
    if msg.status not in _STATUS_FROM_PROTO:
        raise ValueError(f"solver answered with an unknown plan status {msg.status}")
    try:
        stats = json.loads(msg.stats_json) if msg.stats_json else {}
    except ValueError:
        stats = {"raw": msg.stats_json}
    return Plan(
        status=_STATUS_FROM_PROTO[msg.status],
        assignments={a.pod: (a.node or None) for a in msg.assignments},
        bindings=tuple(Binding(b.pod, b.node) for b in msg.bindings),
        moves=tuple(Move(m.pod, m.from_node, m.to_node) for m in msg.moves),
        evictions=tuple(Eviction(e.pod, e.node) for e in msg.evictions),
        placed_before={c.priority: c.pods for c in msg.placed_before},
        placed_after={c.priority: c.pods for c in msg.placed_after},
        proven_optimal=msg.proven_optimal,
        placements_proven_optimal=msg.placements_proven_optimal or msg.proven_optimal,
        solve_seconds=msg.solve_seconds,
        unplaced_reasons=dict(msg.unplaced_reasons),
        stats=stats if isinstance(stats, dict) else {"raw": stats},
    )


def snapshot_bytes(snapshot: Snapshot | Mapping[str, Any]) -> bytes:
    """A snapshot (or a Kubernetes List dict) as the request's JSON bytes."""
    doc = snapshot_to_list(snapshot) if isinstance(snapshot, Snapshot) else snapshot
    return json.dumps(doc, separators=(",", ":")).encode()


def snapshot_from_bytes(raw: bytes) -> Snapshot:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(
            f"not valid JSON: {exc}", obj="PlanRequest", field="snapshot_json"
        ) from None
    return snapshot_from_list(doc, source="PlanRequest.snapshot_json")


# --- server ------------------------------------------------------------------------------


def _default_solve(snapshot: Snapshot, **kwargs: Any) -> Plan:
    from dunnage.solver.planner import solve

    return solve(snapshot, **kwargs)


class SolverServicer(solver_pb2_grpc.SolverServicer):  # type: ignore[misc]
    def __init__(self, solve: SolveFunction = _default_solve) -> None:
        self._solve = solve

    def Plan(
        self, request: solver_pb2.PlanRequest, context: grpc.ServicerContext
    ) -> solver_pb2.PlanResponse:
        time_limit = request.time_limit_seconds or DEFAULT_TIME_LIMIT
        if not 0 < time_limit <= 3600:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "time_limit_seconds must be in (0, 3600]"
            )
        if request.workers < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "workers must not be negative")
        for cap in ("max_evictions", "max_moves"):
            if request.HasField(cap) and getattr(request, cap) < 0:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{cap} must not be negative")
        try:
            snapshot = snapshot_from_bytes(request.snapshot_json)
        except InputError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        plan = self._solve(
            snapshot,
            time_limit=time_limit,
            workers=request.workers or None,
            seed=request.seed,
            max_evictions=request.max_evictions if request.HasField("max_evictions") else None,
            max_moves=request.max_moves if request.HasField("max_moves") else None,
            pin_bare_pods=request.pin_bare_pods,
        )
        log.info(
            "planned %d pods on %d nodes: %s in %.2fs",
            len(snapshot.pods),
            len(snapshot.nodes),
            plan.status.value,
            plan.solve_seconds,
        )
        return plan_to_proto(plan)


def make_server(
    address: str = "127.0.0.1:0",
    *,
    solve: SolveFunction = _default_solve,
    max_concurrent: int = 2,
) -> tuple[grpc.Server, int]:
    """A started gRPC server with the Solver and health services; returns it and its port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_concurrent + 2, thread_name_prefix="solver"),
        maximum_concurrent_rpcs=max_concurrent * 4,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    solver_pb2_grpc.add_SolverServicer_to_server(SolverServicer(solve), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise InputError(f"cannot listen on {address}", obj="--port")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


# --- client ------------------------------------------------------------------------------


class SolverClient:
    """Calls a solver service: ``SolverClient("127.0.0.1:50051").plan(snapshot, 1.0)``."""

    def __init__(self, address: str, *, channel: grpc.Channel | None = None) -> None:
        self.address = address
        self._channel = channel or grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._stub = solver_pb2_grpc.SolverStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def plan(
        self,
        snapshot: Snapshot | Mapping[str, Any],
        time_limit: float = DEFAULT_TIME_LIMIT,
        *,
        workers: int | None = None,
        max_evictions: int | None = None,
        max_moves: int | None = None,
        pin_bare_pods: bool = False,
        seed: int = 0,
        timeout: float | None = None,
    ) -> Plan:
        """Plan ``snapshot`` remotely. Raises ``grpc.RpcError`` when the call fails."""
        request = solver_pb2.PlanRequest(
            snapshot_json=snapshot_bytes(snapshot),
            time_limit_seconds=time_limit,
            workers=workers or 0,
            pin_bare_pods=pin_bare_pods,
            seed=seed,
        )
        if max_evictions is not None:
            request.max_evictions = max_evictions
        if max_moves is not None:
            request.max_moves = max_moves
        deadline = timeout if timeout is not None else time_limit + _RPC_MARGIN_SECONDS
        response = self._stub.Plan(request, timeout=deadline)
        return plan_from_proto(response)

    def healthy(self, timeout: float = 2.0) -> bool:
        """True when the service reports SERVING."""
        try:
            answer = self._health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout
            )
        except grpc.RpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SolverClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remote_solve_fn(client: SolverClient) -> Callable[[Snapshot, Any], Plan]:
    """A ``FallbackPlanner`` solve function (snapshot, PlannerSettings) -> Plan over gRPC."""

    def solve(snapshot: Snapshot, settings: Any) -> Plan:
        return client.plan(
            snapshot,
            settings.time_budget_seconds,
            max_evictions=settings.max_evictions,
            max_moves=settings.max_moves,
            pin_bare_pods=True,
        )

    return solve


# --- the command -------------------------------------------------------------------------


def add_serve_command(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve the planner over gRPC",
        description="Serve dunnage.solver.v1.Solver/Plan and grpc.health.v1 on a TCP port.",
    )
    serve.add_argument("--port", type=int, default=50051, help="port (default 50051)")
    serve.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    serve.add_argument(
        "--max-concurrent", type=int, default=2, help="plans solved at once (default 2)"
    )
    serve.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not 0 <= args.port <= 65535:
        raise InputError("must be a port number (0..65535)", obj="--port")
    if args.max_concurrent < 1:
        raise InputError("must be at least 1", obj="--max-concurrent")
    host = f"[{args.host}]" if ":" in args.host else args.host
    server, port = make_server(f"{host}:{args.port}", max_concurrent=args.max_concurrent)
    log.info("dunnage solver serving on %s:%d", args.host, port)
    stop = threading.Event()
    try:
        stop.wait()
    finally:
        server.stop(grace=2.0)
    return 0
