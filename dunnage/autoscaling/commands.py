"""`dunnage policy train` and `dunnage policy show`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dunnage.errors import InputError, require_positive


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

    show = sub.add_parser(
        "show",
        help="print a policy file's learned targets and the evidence behind them",
        description=(
            "The home target of each role and why: every rung's charged intervals, violations, "
            "mean reward and verdict. Reads a policy file, or a saved learned state (the "
            "ConfigMap <modelservice>-learned-state as JSON, e.g. `kubectl get configmap "
            "chat-learned-state -o json | dunnage policy show -`), which adds where each role "
            "is now and the rungs it may not climb back to yet."
        ),
    )
    show.add_argument("file", metavar="POLICY.json", help="a policy file or ConfigMap; - for stdin")
    show.add_argument(
        "--key", default="policy.json", help="the ConfigMap's key (default policy.json)"
    )
    show.add_argument("-o", "--output", choices=("text", "json"), default="text")
    show.add_argument("--q-values", action="store_true", help="also print the Q-table")
    show.set_defaults(func=run_show)


def run_train(args: argparse.Namespace) -> int:
    from dunnage.autoscaling.learned import episodes_or_default, train
    from dunnage.autoscaling.types import roles_for
    from dunnage.sim.commands import kpa_settings, load_inputs

    trace, profile, slo = load_inputs(args)
    episodes = episodes_or_default(args.episodes, roles_for(args.mode))
    require_positive(args.window, "--window")

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


def _read_policy(path: str, key: str) -> tuple[Any, str]:
    """(the policy file's JSON, where it came from) from a file, stdin, or a ConfigMap."""
    where = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(raw, dict) and raw.get("kind") == "ConfigMap":
        name = (raw.get("metadata") or {}).get("name", "?")
        data = (raw.get("data") or {}).get(key)
        if data is None:
            raise InputError(f"ConfigMap {name} has no key {key!r}", obj=where, field="--key")
        where = f"ConfigMap {name} key {key}"
        try:
            raw = json.loads(data)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not JSON ({exc.msg} at line {exc.lineno})") from None
    return raw, where


def run_show(args: argparse.Namespace) -> int:
    from dunnage.autoscaling.learned import BANDS, LOADS, LearnedModel, describe

    raw, where = _read_policy(args.file, args.key)
    model = LearnedModel.from_dict(raw, where)
    try:
        report = describe(model, raw.get("online"))
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    if args.output == "json":
        print(json.dumps(report, indent=1))
        return 0
    slo = model.slo
    print(
        f"{where}: mode {model.mode or '-'}, profile {model.profile or '-'}, metric "
        f"{model.metric}, "
        + ("" if model.concurrency_limit is None else f"limit {model.concurrency_limit}, ")
        + f"SLO TTFT {slo.ttft:g} s, TPOT {slo.tpot:g} s, {slo.attainment:.0%}"
    )
    online = report.get("online")
    if online:
        saved = ", ".join(f"{k} {v}" for k, v in online.items())
        print(f"saved online state: {saved}")
    for role, entry in report["roles"].items():
        line = f"{role}: home target {entry['home']:g}"
        if "now" in entry:
            line += f", now {entry['now']:g}"
        if entry.get("probeFrom") is not None:
            line += f" (probing down from {entry['probeFrom']:g})"
        for target, left in (entry.get("noClimbTo") or {}).items():
            line += f"; not back up to {target} for {left} more decisions"
        print(line)
        print(
            f"  {'target':>8} {'intervals':>9} {'start-ups':>9} {'violating':>9} "
            f"{'mean':>7} {'risk<=':>7}  verdict"
        )
        for r in entry["rungs"]:
            mean = "-" if r["meanReward"] is None else f"{r['meanReward']:.3f}"
            print(
                f"  {r['target']:>8g} {r['intervals']:>9} {r['startups']:>9} "
                f"{r['violating']:>9} {mean:>7} {r['violationRiskBound']:>7.1%}  {r['verdict']}"
            )
    if not args.q_values:
        return 0
    for role, agent in model.agents.items():
        print(f"{role}: Q-values per state (down2 down stay up) and visits")
        for i, rung in enumerate(agent.rungs):
            cells = []
            for load, trend in enumerate(LOADS):
                for b, name in enumerate(BANDS):
                    n = agent.visits.get((i, load, b))
                    if n and sum(n):
                        q = agent.q.get((i, load, b), [0.0] * len(n))
                        values = " ".join(f"{v:+.2f}" for v in q)
                        cells.append(f"{trend}/{name}: {values} ({sum(n)})")
            if cells:
                print(f"  {rung:>8g}  " + "   ".join(cells))
    return 0
