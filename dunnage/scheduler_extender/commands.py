"""`dunnage extender serve` and `dunnage solver serve`."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(subparsers: Any) -> None:
    extender = subparsers.add_parser(
        "extender",
        help="kube-scheduler extender (filter / prioritize / preempt)",
        description="The kube-scheduler HTTP extender of dunnage.",
    )
    verbs = extender.add_subparsers(dest="extender_command", metavar="COMMAND", required=True)
    serve = verbs.add_parser(
        "serve",
        help="serve the extender protocol over HTTP",
        description=(
            "Serve POST /filter, /prioritize, /preempt (kube-scheduler extender v1, "
            "nodeCacheCapable or not) and GET /healthz, /readyz, /metrics."
        ),
    )
    from dunnage.scheduler_extender.server import add_arguments

    add_arguments(serve)
    serve.set_defaults(func=_run_extender, exit_after_shutdown=True)

    # The solver service lives in dunnage.solver.service; its command is registered here unless
    # the solver's own commands module already added a `solver` group.
    if "solver" not in getattr(subparsers, "choices", {}):
        solver = subparsers.add_parser(
            "solver",
            help="the packing solver as a gRPC service",
            description="The CP-SAT packing planner behind a gRPC API (dunnage.solver.v1.Solver).",
        )
        solver_verbs = solver.add_subparsers(
            dest="solver_command", metavar="COMMAND", required=True
        )
        serve_solver = solver_verbs.add_parser(
            "serve",
            help="serve the planner over gRPC",
            description="Serve dunnage.solver.v1.Solver/Plan and grpc.health.v1 on a TCP port.",
        )
        serve_solver.add_argument("--port", type=int, default=50051, help="port (default 50051)")
        serve_solver.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
        serve_solver.add_argument(
            "--max-concurrent", type=int, default=2, help="plans solved at once (default 2)"
        )
        serve_solver.set_defaults(func=_run_solver)


def _run_extender(args: argparse.Namespace) -> int:
    from dunnage.scheduler_extender.server import run

    return run(args)


def _run_solver(args: argparse.Namespace) -> int:
    from dunnage.solver.service import run_serve  # grpc is imported only when serving

    return run_serve(args)
