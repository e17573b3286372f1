"""`dunnage sim` (run a trace through a simulated fleet) and `dunnage trace synth`."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Any

from dunnage.errors import InputError, require_positive

if TYPE_CHECKING:
    from dunnage.autoscaling.kpa import KPASettings

POLICY_HELP = (
    "kpa (Knative defaults: target 70 of container concurrency 100), static:N or "
    "static:prefill=N,decode=M (a fixed KPA target per role), learned (train on the first part "
    "of the trace, evaluate on the rest) or learned:POLICY.json (a policy from `dunnage policy "
    "train`)"
)


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `dunnage sim` and `dunnage policy train`."""
    from dunnage.sim.profiles import DEFAULT_PROFILE, PROFILES

    parser.add_argument(
        "--trace",
        required=True,
        metavar="CSV",
        help="TIMESTAMP,ContextTokens,GeneratedTokens file, or builtin:azure-conv",
    )
    parser.add_argument(
        "--mode",
        choices=("aggregated", "disaggregated"),
        default="aggregated",
        help="serve pool, or prefill and decode pools (default aggregated)",
    )
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        metavar="NAME",
        help=f"engine profile: {', '.join(sorted(PROFILES))} (default {DEFAULT_PROFILE})",
    )
    parser.add_argument(
        "--load-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="superpose X time-shifted copies of the trace (same duration, X times the load)",
    )
    parser.add_argument(
        "--slo-ttft", type=float, default=None, metavar="S", help="TTFT SLO (profile default)"
    )
    parser.add_argument(
        "--slo-tpot", type=float, default=None, metavar="S", help="TPOT SLO (profile default)"
    )
    parser.add_argument(
        "--slo-attainment",
        type=float,
        default=0.9,
        metavar="F",
        help="share of requests that must meet both SLOs (default 0.9)",
    )
    parser.add_argument(
        "--range",
        default="0:1",
        metavar="LO:HI",
        help="part of the trace to use, as fractions of its duration (default 0:1)",
    )


def add_kpa_arguments(parser: argparse.ArgumentParser, *, from_file: bool = False) -> None:
    """The KPA's metric and limit, for `dunnage sim` and `dunnage policy train`."""
    default = "concurrency, or a learned policy file's metric" if from_file else "concurrency"
    parser.add_argument(
        "--metric",
        choices=("concurrency", "rps"),
        default=None,
        help="what the KPA scales on, as Knative's autoscaling.knative.dev/metric: in-flight "
        f"requests or requests per second per replica; targets are in its unit (default {default})",
    )
    parser.add_argument(
        "--container-concurrency",
        type=int,
        default=100,
        metavar="N",
        help="Knative's containerConcurrency (default 100): with --metric rps or --fixed-limit, "
        "each replica's limit on requests in flight; with concurrency the limit follows the "
        "target instead (target / 0.7) and N only sets the kpa policy's target (70%% of N)",
    )
    parser.add_argument(
        "--fixed-limit",
        action="store_true",
        default=None,
        help="each replica's limit on requests in flight is --container-concurrency whatever "
        "the target (engines batching up to their own limit behind a plain Service), not "
        "target / 0.7"
        + (" (default: as the learned policy file was trained)" if from_file else ""),
    )


def kpa_settings(args: argparse.Namespace, metric: str | None = None) -> KPASettings:
    """The KPA settings of --metric (else ``metric``, else concurrency) and the limit."""
    from dunnage.autoscaling.kpa import KPASettings

    if args.container_concurrency < 1:
        raise InputError("must be at least 1", obj="--container-concurrency")
    return KPASettings(
        metric=args.metric or metric or "concurrency",
        container_concurrency=args.container_concurrency,
        fixed_limit=bool(args.fixed_limit),
    )


def add_commands(subparsers: Any) -> None:
    from dunnage.autoscaling.learned import EPISODES_PER_ROLE

    sim = subparsers.add_parser(
        "sim",
        help="simulate an LLM-serving fleet under an autoscaling policy",
        description=(
            "Run a request trace through a discrete-event model of vLLM-like replicas "
            "(continuous batching, chunked prefill, KV cache, cold starts; aggregated or "
            "prefill/decode) scaled by a policy, and report TTFT/TPOT, SLO attainment, goodput "
            "and GPU-hours. See docs/autoscaling.md."
        ),
    )
    add_trace_arguments(sim)
    sim.add_argument("--policy", default="kpa", help=POLICY_HELP)
    add_kpa_arguments(sim, from_file=True)
    sim.add_argument(
        "--train-fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="with --policy learned: train on the first F of the range, evaluate on the rest "
        "(default 0.5)",
    )
    sim.add_argument(
        "--episodes",
        type=int,
        default=None,
        help=f"with --policy learned: training episodes (default {EPISODES_PER_ROLE} per role)",
    )
    sim.add_argument(
        "--no-online",
        action="store_true",
        help="learned policies: do not refine online during the run",
    )
    sim.add_argument(
        "--warmup",
        type=float,
        default=300.0,
        metavar="S",
        help="requests arriving in the first S seconds are not counted (default 300)",
    )
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument(
        "--timeline", metavar="FILE", help="write replicas/targets/concurrency per tick (JSON)"
    )
    sim.add_argument("-o", "--output", choices=("table", "json"), default="table")
    sim.set_defaults(func=run_sim)

    trace = subparsers.add_parser("trace", help="request traces for `dunnage sim`")
    tsub = trace.add_subparsers(dest="trace_command", metavar="COMMAND", required=True)
    synth = tsub.add_parser(
        "synth",
        help="write a synthetic trace (poisson, bursty, diurnal) as CSV",
        description=(
            "Generate arrivals (Poisson, Markov-modulated bursts, or a sinusoidal day) with "
            "prompt/output lengths resampled from a trace (default: the Azure conversation "
            "trace) and write them in the Azure CSV format."
        ),
    )
    synth.add_argument("--kind", choices=("poisson", "bursty", "diurnal"), default="bursty")
    synth.add_argument("--rate", type=float, required=True, help="mean requests per second")
    synth.add_argument("--duration", type=float, default=3600.0, metavar="S")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--lengths",
        default="builtin:azure-conv",
        metavar="CSV",
        help="trace whose prompt/output lengths are resampled, or 'lognormal'",
    )
    synth.add_argument("--burst-factor", type=float, default=4.0)
    synth.add_argument("--burst-seconds", type=float, default=30.0)
    synth.add_argument("--burst-every", type=float, default=300.0)
    synth.add_argument("-o", "--output", required=True, metavar="FILE")
    synth.set_defaults(func=run_synth)


def parse_range(text: str) -> tuple[float, float]:
    lo_s, sep, hi_s = text.partition(":")
    try:
        lo, hi = float(lo_s), float(hi_s)
    except ValueError:
        raise InputError(f"{text!r}: must be LO:HI fractions, e.g. 0.5:1", obj="--range") from None
    if not sep or not (0 <= lo < hi <= 1):
        raise InputError(f"{text!r}: need 0 <= LO < HI <= 1", obj="--range")
    return lo, hi


def load_inputs(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(trace over --range, profile, SLO) from the shared options."""
    from dunnage.autoscaling.types import SLO
    from dunnage.sim.profiles import get_profile
    from dunnage.sim.trace import load_csv

    profile = get_profile(args.profile)
    require_positive(args.load_scale, "--load-scale")
    require_positive(args.slo_ttft, "--slo-ttft")
    require_positive(args.slo_tpot, "--slo-tpot")
    if not 0 < args.slo_attainment <= 1:
        raise InputError("must be in (0, 1]", obj="--slo-attainment")
    lo, hi = parse_range(args.range)
    trace = load_csv(args.trace).scaled(args.load_scale)
    if (lo, hi) != (0.0, 1.0):
        trace = trace.fraction(lo, hi)
    slo = SLO(
        ttft=args.slo_ttft if args.slo_ttft is not None else profile.slo_ttft,
        tpot=args.slo_tpot if args.slo_tpot is not None else profile.slo_tpot,
        attainment=args.slo_attainment,
    )
    return trace, profile, slo


def run_sim(args: argparse.Namespace) -> int:
    from dunnage.autoscaling.learned import (
        LearnedModel,
        LimitMismatch,
        episodes_or_default,
        learned_policy,
        train,
    )
    from dunnage.autoscaling.policy import kpa_policy, parse_static, static_policy
    from dunnage.autoscaling.types import roles_for
    from dunnage.sim.engine import simulate

    trace, profile, slo = load_inputs(args)
    if not 0 <= args.warmup < math.inf:  # NaN too: it would count no request
        raise InputError("must be a non-negative number of seconds", obj="--warmup")
    roles = roles_for(args.mode)
    spec = args.policy.strip()
    extra: dict[str, Any] = {}
    kpa = kpa_settings(args)
    if spec == "kpa":
        policy = kpa_policy(roles, kpa)
    elif spec.startswith("static:"):
        policy = static_policy(roles, parse_static(spec.removeprefix("static:"), roles), kpa)
    elif spec == "learned":
        f = args.train_fraction
        if not 0 < f < 1:
            raise InputError("must be between 0 and 1", obj="--train-fraction")
        train_part = trace.fraction(0, f)
        eval_part = trace.fraction(f, 1)
        if len(eval_part) == 0:
            raise InputError("the evaluation part of the trace has no requests", obj="--trace")
        episodes = episodes_or_default(args.episodes, roles)
        lo, hi = parse_range(args.range)
        cut = lo + f * (hi - lo)
        print(
            f"dunnage sim: training the learned policy on fractions {lo:g}-{cut:g} of the trace "
            f"({episodes} episodes), then evaluating on {cut:g}-{hi:g}",
            file=sys.stderr,
        )
        model = train(
            train_part,
            profile,
            mode=args.mode,
            slo=slo,
            episodes=episodes,
            kpa=kpa,
            seed=args.seed,
        )
        extra = {
            "train_range": [lo, round(cut, 6)],
            "eval_range": [round(cut, 6), hi],
            "split": f"trained on fractions {lo:g}-{cut:g} of the trace, evaluated on {cut:g}-{hi:g}",
            "learned_targets": model.home_targets(),
            "training_seconds": model.training.get("seconds"),
        }
        trace = eval_part
        policy = learned_policy(model, kpa=kpa, learn=not args.no_online, seed=args.seed)
    elif spec.startswith("learned:"):
        model = LearnedModel.load(spec.removeprefix("learned:"))
        if set(model.roles) != set(roles):
            raise InputError(
                f"{spec.removeprefix('learned:')}: policy is for roles {', '.join(model.roles)}, "
                f"but --mode {args.mode} has {', '.join(roles)}",
                obj="--policy",
            )
        if args.metric not in (None, model.metric):
            raise InputError(
                f"{spec.removeprefix('learned:')}: the policy's targets are on the "
                f"{model.metric} metric",
                obj="--metric",
            )
        try:
            kpa = model.played_under(kpa_settings(args, model.metric))
        except LimitMismatch as exc:
            raise InputError(
                f"{spec.removeprefix('learned:')}: {exc}",
                obj="--" + exc.setting.replace("_", "-"),
            ) from None
        policy = learned_policy(model, kpa=kpa, learn=not args.no_online, seed=args.seed)
        extra = {"learned_targets": model.home_targets()}
    else:
        raise InputError(f"{spec!r}: {POLICY_HELP}", obj="--policy")
    result = simulate(
        trace,
        profile,
        policy,
        mode=args.mode,
        slo=slo,
        warmup=min(args.warmup, trace.duration / 2),
        keep_timeline=bool(args.timeline),
    )
    summary = {**result.summary, "load_scale": args.load_scale, "metric": kpa.metric, **extra}
    if args.policy.startswith("learned"):
        summary["learned_targets_final"] = {r: policy.target(r) for r in roles}
    if args.timeline:
        with open(args.timeline, "w") as fh:
            json.dump(result.timeline, fh)
    if args.output == "json":
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_summary(summary))
    return 0


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"policy {s['policy']}  mode {s['mode']}  profile {s['profile']}  trace {s['trace']}",
        f"requests {s['measured_requests']} counted of {s['requests']} "
        f"(first {s['warmup_s']:g} s are warm-up)",
        f"SLO: TTFT <= {s['slo_ttft']:g} s, TPOT <= {s['slo_tpot']:g} s",
        "",
        f"goodput          {s['goodput_rps']:.2f} req/s   (throughput {s['throughput_rps']:.2f})",
        f"SLO attainment   {s['slo_attainment']:.2%}   (TTFT {s['ttft_attainment']:.2%}, "
        f"TPOT {s['tpot_attainment']:.2%})",
        f"GPU-hours        {s['gpu_hours']:.2f}   replicas max {s['replicas_max']}, "
        f"mean {s['replicas_mean']:.1f}",
        f"goodput/GPU-hour {s['goodput_per_gpu_hour']:.0f}",
        f"TTFT p50/p90/p99 {s['ttft_p50']:.3f} / {s['ttft_p90']:.3f} / {s['ttft_p99']:.3f} s",
        f"TPOT p50/p90/p99 {s['tpot_p50'] * 1e3:.1f} / {s['tpot_p90'] * 1e3:.1f} / "
        f"{s['tpot_p99'] * 1e3:.1f} ms",
    ]
    if "split" in s:
        lines.append(f"learned: {s['split']}; targets {s['learned_targets']}")
    elif "learned_targets" in s:
        lines.append(f"learned targets {s['learned_targets']}")
    lines.append(f"(simulated {s['sim_events']} events in {s['sim_wall_s']:.1f} s)")
    return "\n".join(lines) + "\n"


def run_synth(args: argparse.Namespace) -> int:
    from dunnage.sim.trace import load_csv, synthetic, write_csv

    require_positive(args.rate, "--rate")
    require_positive(args.duration, "--duration")
    lengths = None if args.lengths == "lognormal" else load_csv(args.lengths)
    trace = synthetic(
        args.kind,
        rate=args.rate,
        duration=args.duration,
        seed=args.seed,
        lengths=lengths,
        burst_factor=args.burst_factor,
        burst_seconds=args.burst_seconds,
        burst_every=args.burst_every,
    )
    write_csv(trace, args.output)
    print(json.dumps(trace.summary()))
    return 0
