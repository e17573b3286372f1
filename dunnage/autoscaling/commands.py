"""`dunnage policy train` and `dunnage policy show`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dunnage.errors import InputError


def add_commands(subparsers: Any) -> None:
    from dunnage.autoscaling.learned import EPISODES_PER_ROLE
    from dunnage.sim.commands import add_kpa_arguments, add_trace_arguments

    policy = subparsers.add_parser("policy", help="learned autoscaling policies")
    sub = policy.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)
    train = sub.add_parser(
        "train",
        help="learn per-role concurrency targets on a trace (offline, in the simulator)",
        description=(
            "Q-learning over the KPA concurrency target of each role, in the simulator, on "
            "random windows of the trace. Writes a policy file for `dunnage sim --policy "
            "learned:FILE` (and for AutoscalingPolicy spec.learned.initialPolicy)."
        ),
    )
    add_trace_arguments(train)
    add_kpa_arguments(train)
    train.add_argument(
        "--episodes",
        type=int,
        default=None,
        help=f"training episodes (default {EPISODES_PER_ROLE} per role)",
    )
    train.add_argument(
        "--window",
        type=float,
        default=900.0,
        metavar="S",
        help="seconds of trace per episode (default 900)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("-o", "--output", required=True, metavar="POLICY.json")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    train.set_defaults(func=run_train)

    show = sub.add_parser("show", help="print a policy file's learned targets")
    show.add_argument("file", metavar="POLICY.json")
    show.set_defaults(func=run_show)


def run_train(args: argparse.Namespace) -> int:
    from dunnage.autoscaling.learned import episodes_or_default, train
    from dunnage.autoscaling.types import roles_for
    from dunnage.sim.commands import kpa_settings, load_inputs

    trace, profile, slo = load_inputs(args)
    episodes = episodes_or_default(args.episodes, roles_for(args.mode))
    if args.window <= 0:
        raise InputError("must be positive", obj="--window")

    def progress(ep: int, entry: dict[str, Any]) -> None:
        if not args.quiet:
            print(
                f"episode {ep + 1}/{episodes}: goodput/GPU-h "
                f"{entry['goodput_per_gpu_hour']:.0f}, attainment {entry['slo_attainment']:.3f}, "
                f"best targets {entry['home']}",
                file=sys.stderr,
            )

    model = train(
        trace,
        profile,
        mode=args.mode,
        slo=slo,
        episodes=episodes,
        window=args.window,
        kpa=kpa_settings(args),
        seed=args.seed,
        progress=progress,
    )
    model.training.update(
        {
            "load_scale": args.load_scale,
            "range": args.range,
            "trace_arg": args.trace,
            "container_concurrency": args.container_concurrency,
        }
    )
    model.save(args.output)
    print(
        json.dumps(
            {
                "output": args.output,
                "mode": model.mode,
                "profile": model.profile,
                "metric": model.metric,
                "targets": model.home_targets(),
                "episodes": episodes,
                "seconds": model.training["seconds"],
            }
        )
    )
    return 0


def run_show(args: argparse.Namespace) -> int:
    from dunnage.autoscaling.learned import BANDS, LOADS, LearnedModel

    model = LearnedModel.load(args.file)
    print(
        f"mode {model.mode}  profile {model.profile}  metric {model.metric}  "
        f"SLO {model.slo.to_dict()}"
    )
    for role, agent in model.agents.items():
        home = agent.home()
        print(f"{role}: target {agent.rungs[home]:g} (rung {home} of {len(agent.rungs)})")
        for i, rung in enumerate(agent.rungs):
            cells = []
            for load, trend in enumerate(LOADS):
                for b, name in enumerate(BANDS):
                    n = agent.visits.get((i, load, b))
                    if n and sum(n):
                        q = agent.q[(i, load, b)]
                        values = " ".join(f"{v:+.2f}" for v in q)
                        cells.append(f"{trend}/{name}: {values} ({sum(n)})")
            if cells:
                print(f"  {rung:>8g}  " + "   ".join(cells))
    return 0
