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
    serve.set_defaults(func=_run_extender)

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
        from dunnage.solver.service import add_serve_command

        add_serve_command(solver_verbs)


def _run_extender(args: argparse.Namespace) -> int:
    from dunnage.scheduler_extender.server import run

    return run(args)
