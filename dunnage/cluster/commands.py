"""`dunnage import ...`: build snapshot files from public traces."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dunnage.errors import InputError


def add_commands(subparsers: Any) -> None:
    importer = subparsers.add_parser(
        "import",
        help="build a snapshot file from a public trace",
        description="Build a snapshot file (a Kubernetes List) from a public trace.",
    )
    sources = importer.add_subparsers(dest="source", metavar="SOURCE", required=True)
    openb = sources.add_parser(
        "openb",
        help="a slice of the openb GPU cluster (Alibaba cluster-trace-gpu-v2023)",
        description=(
            "Write a slice of the openb GPU cluster as a Kubernetes List (YAML, or JSON for a "
            ".json file): sampled nodes, their share of the trace's pods, all pending, in trace "
            "arrival order, with PriorityClasses for the trace's qos classes."
        ),
    )
    openb.add_argument(
        "--nodes",
        type=int,
        default=None,
        metavar="N",
        help="seeded random sample of N of the 1523 nodes (default: all)",
    )
    openb.add_argument("--seed", type=int, default=0, metavar="S")
    pods = openb.add_mutually_exclusive_group()
    pods.add_argument(
        "--pods",
        type=int,
        default=None,
        metavar="M",
        help="exactly M pods, a seeded sample in trace order (default: the slice's share)",
    )
    pods.add_argument(
        "--load",
        type=float,
        default=1.0,
        metavar="X",
        help="scale the slice's share of the trace's pods (default 1.0: loaded like the real cluster)",
    )
    openb.add_argument(
        "--time",
        type=float,
        default=None,
        metavar="T",
        help="only pods alive at second T of the trace",
    )
    openb.add_argument(
        "-o", "--output", default=None, metavar="FILE", help="default: stdout (YAML)"
    )
    openb.add_argument(
        "--summary", action="store_true", help="print the slice's totals to stderr (as JSON)"
    )
    openb.set_defaults(func=run_import_openb)


def run_import_openb(args: argparse.Namespace) -> int:
    from dunnage.cluster.openb import import_openb, trace_summary, write_snapshot

    if args.nodes is not None and args.nodes < 1:
        raise InputError("must be at least 1", obj="--nodes")
    if args.time is not None and args.time < 0:
        raise InputError("must not be negative", obj="--time")
    snapshot = import_openb(args.nodes, args.seed, pods=args.pods, time=args.time, load=args.load)
    text = write_snapshot(snapshot, args.output)
    if args.output is None:
        sys.stdout.write(text)
    if args.summary or args.output is not None:
        print(json.dumps(trace_summary(snapshot)), file=sys.stderr)
    return 0
