"""The `dunnage` command line.

Each area of the project adds its own sub-commands through an ``add_commands(subparsers)``
function in its ``commands`` module, so this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from dunnage.errors import InputError

# Modules that contribute sub-commands; each defines add_commands(subparsers).
COMMAND_MODULES = (
    "dunnage.cluster.commands",
    "dunnage.solver.commands",
    "dunnage.devcluster.commands",
    "dunnage.scheduler_extender.commands",
    "dunnage.operator.commands",
    "dunnage.autoscaling.commands",
    "dunnage.sim.commands",
    "dunnage.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dunnage",
        description="Optimal packing fallback for kube-scheduler and an LLM-serving operator.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # that area has no commands yet
            raise
        module.add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
    except InputError as exc:
        print(f"dunnage: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`dunnage policy show ... | head`): not an error of ours. Point
        # stdout at /dev/null so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it
    if getattr(args, "exit_after_shutdown", False):
        exit_now(code)
    return code


def exit_now(code: int) -> None:
    """End a server process once its own shutdown is done (planner stopped, Lease released).

    Once, in CI under load, an extender died of SIGABRT, without a message, after its orderly
    shutdown had finished ("released the Lease" was its last line); what remained then were
    daemon threads (watches, the election), often inside a network call, and the interpreter's
    finalization around them. Nothing is left to clean up, so the process leaves without it.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
