"""`dunnage cluster up` / `dunnage cluster down`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

DEFAULT_DIR = ".dunnage-cluster"


def add_commands(subparsers: Any) -> None:
    cluster = subparsers.add_parser("cluster", help="a local control plane from real binaries")
    verbs = cluster.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)
    up = verbs.add_parser("up", help="start etcd, the control plane, kwok and the extender")
    up.add_argument(
        "--dir", default=DEFAULT_DIR, help=f"state, logs, kubeconfig (default {DEFAULT_DIR})"
    )
    up.add_argument("--nodes", type=int, default=4)
    up.add_argument("--gpus-per-node", type=int, default=8)
    up.add_argument("--bare", action="store_true", help="no dunnage processes, control plane only")
    up.add_argument(
        "--consult-every-pod",
        action="store_true",
        help="kube-scheduler consults the extender for every pod, not only those asking GPUs "
        "as extended resources (pods whose GPUs come from ResourceClaims need it)",
    )
    up.set_defaults(func=run_up)
    down = verbs.add_parser("down", help="stop exactly what `up` started")
    down.add_argument("--dir", default=DEFAULT_DIR)
    down.set_defaults(func=run_down)


def run_up(args: argparse.Namespace) -> int:
    from dunnage.devcluster.cluster import DevCluster
    from dunnage.errors import InputError

    if args.nodes < 0 or args.gpus_per_node < 0:
        raise InputError("must not be negative", obj="--nodes/--gpus-per-node")
    cluster = DevCluster(args.dir)
    started = time.monotonic()
    try:
        cluster.up(
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            bare=args.bare,
            consult_every_pod=args.consult_every_pod,
        )
    except (RuntimeError, TimeoutError) as exc:  # a component failed (up stopped the rest)
        print(f"dunnage: error: cluster up failed: {exc}", file=sys.stderr)
        print(f"# logs: {cluster.logs}", file=sys.stderr)
        return 1
    print(f"# cluster up in {time.monotonic() - started:.1f}s: {', '.join(cluster.running())}")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def run_down(args: argparse.Namespace) -> int:
    from dunnage.devcluster.cluster import DevCluster

    cluster = DevCluster(args.dir)
    running = cluster.running()
    cluster.down()
    print(
        f"# cluster in {cluster.dir} stopped" if running else f"# no cluster ran in {cluster.dir}"
    )
    return 0
