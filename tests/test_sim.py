"""The LLM-serving simulator: closed-form cases (exact iteration costs, M/D/1 queueing), P/D,
GPU accounting, traces, and conservation properties."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dunnage.autoscaling.policy import RoleBounds, static_policy
from dunnage.autoscaling.types import SLO, RoleObservation, role_slo, roles_for
from dunnage.cli import main
from dunnage.errors import InputError
from dunnage.sim.engine import simulate, steady_state_replicas
from dunnage.sim.profiles import PROFILES, get_profile
from dunnage.sim.trace import Trace, load_csv, synthetic, write_csv

H100 = get_profile("llama3-8b-h100")


def trace_of(
    arrivals: list[float], prompts: list[int], outputs: list[int], duration: float | None = None
) -> Trace:
    arr = np.asarray(arrivals, dtype=float)
    return Trace(
        arr,
        np.asarray(prompts, dtype=np.int64),
        np.asarray(outputs, dtype=np.int64),
        float(duration if duration is not None else (arr.max() + 1 if len(arr) else 1.0)),
        "test",
    )


def fixed(mode: str, target: float | dict[str, float], replicas: int = 1) -> object:
    """A policy that keeps exactly ``replicas`` per role (the KPA cannot move them)."""
    roles = roles_for(mode)
    targets = target if isinstance(target, dict) else dict.fromkeys(roles, target)
    bounds = {r: RoleBounds(replicas, replicas) for r in roles}
    return static_policy(roles, targets, bounds=bounds)


def decode_seconds(p: object, batch: int, prompt: int, tokens_before: int, steps: int) -> float:
    """Sum of pure-decode iteration costs, each sequence holding prompt + tokens cached."""
    total = 0.0
    for k in range(steps):
        cached = batch * (prompt + tokens_before + k)
        total += p.b0 + p.b2 * batch + p.attn * cached  # type: ignore[attr-defined]
    return total


def test_one_request_has_exact_ttft_and_tpot() -> None:
    prompt, out = 1000, 50
    tr = trace_of([0.0], [prompt], [out], duration=10.0)
    res = simulate(tr, H100, fixed("aggregated", 10), warmup=0, keep_latencies=True)
    prefill = H100.b0 + H100.b1 * prompt + H100.prefill_attn * prompt * prompt / 2
    assert res.ttft is not None and res.tpot is not None
    assert res.ttft[0] == pytest.approx(prefill, rel=1e-9)
    # After the prefill iteration the sequence holds prompt + 1 tokens, one more per step.
    tail = decode_seconds(H100, 1, prompt, 1, out - 1)
    assert res.tpot[0] == pytest.approx(tail / (out - 1), rel=1e-9)


def test_requests_arriving_during_an_iteration_join_the_next_one_together() -> None:
    # The first request starts an iteration alone; the other seven, dispatched while it runs,
    # are prefilled together in the next (mixed) iteration, next to request 0's first decode.
    n, prompt, out = 8, 500, 20
    tr = trace_of([0.0] * n, [prompt] * n, [out] * n, duration=10.0)
    res = simulate(tr, H100, fixed("aggregated", 50), warmup=0, keep_latencies=True)
    quad = H100.prefill_attn * prompt * prompt / 2
    first = H100.b0 + H100.b1 * prompt + quad
    mixed = (
        H100.b0 + H100.b1 * (n - 1) * prompt + (n - 1) * quad + H100.b2 + H100.attn * (prompt + 1)
    )
    assert res.ttft is not None and res.tpot is not None
    assert res.ttft[0] == pytest.approx(first, rel=1e-9)
    assert np.allclose(res.ttft[1:], first + mixed, rtol=1e-9)
    assert np.allclose(res.tpot[1:], res.tpot[1], rtol=1e-12)  # lockstep
    # Request 0: one decode step alongside the mixed iteration, then 18 steps with all eight.
    steps = [mixed] + [
        H100.b0 + H100.b2 * n + H100.attn * (prompt + 2 + k + (n - 1) * (prompt + 1 + k))
        for k in range(out - 2)
    ]
    assert res.tpot[0] == pytest.approx(sum(steps) / (out - 1), rel=1e-9)


def test_long_prompts_are_chunked_by_the_token_budget() -> None:
    prompt = 3 * H100.max_batched_tokens
    tr = trace_of([0.0], [prompt], [1], duration=10.0)
    res = simulate(tr, H100, fixed("aggregated", 10), warmup=0, keep_latencies=True)
    budget = H100.max_batched_tokens
    quad = sum(budget * (k * budget + budget / 2) for k in range(3)) * H100.prefill_attn
    expected = 3 * H100.b0 + H100.b1 * prompt + quad
    assert res.ttft is not None and res.ttft[0] == pytest.approx(expected, rel=1e-9)


def test_arrival_during_a_decode_segment_joins_at_the_next_iteration() -> None:
    # Request 0 decodes alone; request 1 arrives mid-way and must start at an iteration boundary.
    prompt, out = 200, 400
    t1 = 0.5
    tr = trace_of([0.0, t1], [prompt, prompt], [out, 1], duration=20.0)
    res = simulate(tr, H100, fixed("aggregated", 10), warmup=0, keep_latencies=True)
    first0 = H100.b0 + H100.b1 * prompt + H100.prefill_attn * prompt * prompt / 2
    # Boundaries of request 0's decode iterations.
    t, k = first0, 0
    while t < t1:
        t += H100.b0 + H100.b2 + H100.attn * (prompt + 1 + k)
        k += 1
    # Request 1 is prefilled in a mixed iteration with request 0 decoding (context prompt+1+k).
    mixed = (
        H100.b0
        + H100.b1 * prompt
        + H100.prefill_attn * prompt * prompt / 2
        + H100.b2
        + H100.attn * (prompt + 1 + k)
    )
    assert res.ttft is not None
    assert res.ttft[1] == pytest.approx(t - t1 + mixed, rel=1e-9)


def test_single_server_queue_matches_m_d_1() -> None:
    # Poisson arrivals, one replica holding one request at a time (target 0.5 -> limit 1),
    # deterministic service (output 1 token: the prefill iteration): an M/D/1 queue, whose
    # mean wait is rho * D / (2 (1 - rho)) (Pollaczek-Khinchine).
    prompt = 2000
    service = H100.b0 + H100.b1 * prompt + H100.prefill_attn * prompt * prompt / 2
    for rho in (0.5, 0.8):
        rate = rho / service
        n = 40_000
        rng = np.random.default_rng(7)
        arrivals = np.cumsum(rng.exponential(1 / rate, n))
        tr = trace_of(list(arrivals), [prompt] * n, [1] * n, duration=float(arrivals[-1]))
        res = simulate(tr, H100, fixed("aggregated", 0.5), warmup=0, keep_latencies=True)
        assert res.ttft is not None
        wait = float(res.ttft.mean()) - service
        expected = rho * service / (2 * (1 - rho))
        assert wait == pytest.approx(expected, rel=0.06), (rho, wait, expected)


def test_little_law_holds_for_the_reported_concurrency() -> None:
    tr = synthetic("poisson", rate=8.0, duration=600.0, seed=3)
    res = simulate(tr, H100, fixed("aggregated", 30, replicas=2), warmup=0, keep_timeline=True)
    e2e = res.summary["ttft_mean"] + res.summary["tpot_mean"] * (float(tr.output.mean()) - 1)
    conc = float(np.mean(res.timeline["serve_concurrency"][30:]))
    assert conc == pytest.approx(8.0 * e2e, rel=0.15)


def test_disaggregated_request_pays_prefill_transfer_and_a_decode_step() -> None:
    prompt, out = 1500, 10
    tr = trace_of([0.0], [prompt], [out], duration=10.0)
    res = simulate(
        tr,
        H100,
        fixed("disaggregated", {"prefill": 1, "decode": 10}),
        mode="disaggregated",
        warmup=0,
        keep_latencies=True,
    )
    prefill = H100.b0 + H100.b1 * prompt + H100.prefill_attn * prompt * prompt / 2
    first_decode = H100.b0 + H100.b2 + H100.attn * prompt
    assert res.ttft is not None and res.tpot is not None
    assert res.ttft[0] == pytest.approx(
        prefill + H100.kv_transfer_seconds(prompt) + first_decode, rel=1e-9
    )
    assert res.tpot[0] == pytest.approx(decode_seconds(H100, 1, prompt, 1, out - 1) / (out - 1))


class Recording:
    """Wraps a policy and keeps every observation it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[tuple[float, Mapping[str, RoleObservation]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def observe(self, now: float, observations: Mapping[str, RoleObservation]) -> None:
        self.seen.append((now, observations))
        self.inner.observe(now, observations)


def test_each_pd_role_counts_against_its_own_share_of_the_slo() -> None:
    # 30 long prompts at once on one prefill replica that takes one at a time: the prompts queue
    # in front of prefill for seconds, while ten idle decode replicas add almost nothing. A late
    # request keeps the run (and its per-second samples) going past the burst.
    n, prompt = 30, 6000
    tr = trace_of([0.0] * n + [50.0], [prompt] * (n + 1), [20] * (n + 1), duration=60.0)
    policy = Recording(
        static_policy(
            ("prefill", "decode"),
            {"prefill": 0.7, "decode": 50},
            bounds={"prefill": RoleBounds(1, 1), "decode": RoleBounds(10, 10)},
        )
    )
    res = simulate(tr, H100, policy, mode="disaggregated", warmup=0, keep_latencies=True)

    def totals(role: str) -> tuple[int, int, int]:
        obs = [o[role] for t, o in policy.seen if t <= 40]
        return (
            sum(o.completed for o in obs),
            sum(o.ttft_ok or 0 for o in obs),
            sum(o.tpot_ok or 0 for o in obs),
        )

    own = role_slo(SLO(H100.slo_ttft, H100.slo_tpot), "prefill")
    prefill_done = H100.b0 * math.ceil(prompt / H100.max_batched_tokens) + H100.b1 * prompt
    in_time = sum(1 for k in range(1, n + 1) if k * prefill_done <= own.ttft)
    assert res.ttft is not None and (res.ttft > H100.slo_ttft).sum() > 0
    completed, ttft_ok, tpot_ok = totals("prefill")
    assert completed == n and tpot_ok == n  # prefill emits no tokens after the first
    assert 0 < ttft_ok < n and abs(ttft_ok - in_time) <= 1
    assert totals("decode") == (n, n, n)  # the queueing was prefill's, not decode's


def test_gpu_hours_of_a_fixed_fleet() -> None:
    tr = synthetic("poisson", rate=2.0, duration=1200.0, seed=1)
    res = simulate(tr, H100, fixed("aggregated", 10, replicas=3), warmup=0)
    end = max(tr.duration, res.summary["sim_end_s"])
    assert res.summary["gpu_hours"] == pytest.approx(3 * end / 3600, rel=1e-3)
    assert res.summary["replicas_max"] == 3
    big = get_profile("llama3-70b-h100x4")
    res70 = simulate(tr, big, fixed("aggregated", 10, replicas=3), warmup=0)
    end70 = max(tr.duration, res70.summary["sim_end_s"])
    assert res70.summary["gpu_hours"] == pytest.approx(4 * 3 * end70 / 3600, rel=1e-3)


def test_slo_counts_and_goodput() -> None:
    tr = synthetic("poisson", rate=4.0, duration=900.0, seed=2)
    loose = simulate(tr, H100, fixed("aggregated", 30), slo=SLO(60, 1), warmup=0).summary
    assert loose["slo_attainment"] == 1.0
    assert loose["goodput_rps"] == pytest.approx(len(tr) / tr.duration, rel=1e-4)
    assert loose["goodput_per_gpu_hour"] == pytest.approx(len(tr) / loose["gpu_hours"], rel=1e-3)
    tight = simulate(tr, H100, fixed("aggregated", 30), slo=SLO(1e-3, 1e-4), warmup=0).summary
    assert tight["slo_attainment"] == 0.0 and tight["goodput_rps"] == 0.0


def test_cold_start_delays_added_replicas() -> None:
    # Quiet, then a burst: the KPA adds replicas, which serve only after the cold start.
    quiet = synthetic("poisson", rate=1.0, duration=200.0, seed=4)
    burst = synthetic("poisson", rate=40.0, duration=200.0, seed=5)
    tr = Trace(
        np.concatenate([quiet.arrival, burst.arrival + 200.0]),
        np.concatenate([quiet.prompt, burst.prompt]),
        np.concatenate([quiet.output, burst.output]),
        400.0,
    )
    pol = static_policy(["serve"], {"serve": 16}, bounds={"serve": RoleBounds(1, 50)})
    res = simulate(tr, H100, pol, warmup=0, keep_timeline=True)
    ready = res.timeline["serve_ready"]
    alive = res.timeline["serve_replicas"]
    t = res.timeline["t"]
    first_add = next(i for i in range(len(t)) if alive[i] > alive[0])
    became_ready = next(i for i in range(len(t)) if ready[i] > ready[0])
    assert t[became_ready] - t[first_add] >= H100.cold_start_seconds - 2.0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 60),
    seed=st.integers(0, 10_000),
    mode=st.sampled_from(["aggregated", "disaggregated"]),
    target=st.sampled_from([0.5, 2.0, 8.0, 64.0]),
    profile=st.sampled_from(sorted(PROFILES)),
)
def test_every_request_completes_in_order_of_its_phases(
    n: int, seed: int, mode: str, target: float, profile: str
) -> None:
    rng = np.random.default_rng(seed)
    arrivals = np.sort(rng.uniform(0, 60, n))
    prompts = rng.integers(1, 9000, n)
    outputs = rng.integers(1, 300, n)
    tr = trace_of(list(arrivals), list(prompts), list(outputs), duration=60.0)
    prof = get_profile(profile)
    pol = static_policy(roles_for(mode), dict.fromkeys(roles_for(mode), target))
    res = simulate(tr, prof, pol, mode=mode, warmup=0, keep_latencies=True)
    assert res.ttft is not None and res.tpot is not None
    assert np.all(np.isfinite(res.ttft)) and np.all(res.ttft > 0)
    assert np.all(res.tpot >= 0)
    # Nobody decodes faster than one weight read per token.
    multi = tr.output > 1
    assert np.all(res.tpot[multi] >= prof.b0 * (1 - 1e-9))
    assert res.summary["measured_requests"] == n


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 300),
    factor=st.floats(0.3, 20.0),
    duration=st.floats(10.0, 5000.0),
)
def test_load_scaling_keeps_the_duration_and_multiplies_the_rate(
    n: int, factor: float, duration: float
) -> None:
    rng = np.random.default_rng(n)
    tr = trace_of(
        list(np.sort(rng.uniform(0, duration, n))),
        list(rng.integers(1, 100, n)),
        list(rng.integers(1, 100, n)),
        duration=duration,
    )
    scaled = tr.scaled(factor)
    assert scaled.duration == tr.duration
    assert np.all(np.diff(scaled.arrival) >= 0)
    assert len(scaled) == 0 or (scaled.arrival.min() >= 0 and scaled.arrival.max() < duration)
    whole = math.floor(factor)
    assert whole * n <= len(scaled) <= (whole + 1) * n
    if factor == whole:
        assert len(scaled) == whole * n
        # Each copy keeps the trace's lengths.
        assert sorted(scaled.prompt.tolist()) == sorted(tr.prompt.tolist() * whole)


def test_azure_trace_loads_and_scales() -> None:
    tr = load_csv("builtin:azure-conv")
    assert len(tr) == 19_366
    assert 3400 < tr.duration < 3600
    assert 1100 < tr.prompt.mean() < 1200 and 200 < tr.output.mean() < 220
    big = tr.scaled(50)
    assert len(big) == 50 * len(tr) and big.duration == tr.duration
    half = big.fraction(0.5, 1.0)
    assert half.arrival.min() >= 0 and half.duration == pytest.approx(tr.duration / 2)


def test_csv_round_trip_and_errors(tmp_path: Path) -> None:
    tr = synthetic("bursty", rate=5.0, duration=120.0, seed=1)
    path = tmp_path / "t.csv"
    write_csv(tr, path)
    back = load_csv(str(path))
    assert len(back) == len(tr)
    assert np.allclose(back.arrival, tr.arrival - tr.arrival.min(), atol=1e-5)
    assert back.prompt.tolist() == tr.prompt.tolist()
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-01-01 00:00:00,12,x\n")
    with pytest.raises(InputError, match="line 2: GeneratedTokens"):
        load_csv(str(bad))
    bad.write_text("TIMESTAMP,Context\n1,2\n")
    with pytest.raises(InputError, match="missing ContextTokens, GeneratedTokens"):
        load_csv(str(bad))
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n1,0,5\n")
    with pytest.raises(InputError, match=r"ContextTokens: must be within 1\.\.10000000, got 0"):
        load_csv(str(bad))
    # Past int64 it was an OverflowError traceback.
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n1,5,99999999999999999999999\n")
    with pytest.raises(InputError, match="GeneratedTokens: must be within"):
        load_csv(str(bad))
    # Rates over a span of 0 s came out as 1e9 requests/s.
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n7,5,5\n7,6,6\n")
    with pytest.raises(InputError, match="every request arrives at the same instant"):
        load_csv(str(bad))
    with pytest.raises(InputError, match="no such file"):
        load_csv(str(tmp_path / "missing.csv"))


@pytest.mark.parametrize("kind", ["poisson", "bursty", "diurnal"])
def test_synthetic_traces_have_the_asked_mean_rate(kind: str) -> None:
    tr = synthetic(kind, rate=50.0, duration=7200.0, seed=5, period=3600.0)
    assert tr.rate == pytest.approx(50.0, rel=0.12)
    if kind == "bursty":
        counts = np.histogram(tr.arrival, bins=720)[0]
        assert counts.max() > 3 * counts.mean()  # bursts are there


def test_profiles_are_documented_and_plausible() -> None:
    assert "llama3-8b-h100" in PROFILES and len(PROFILES) >= 2
    for p in PROFILES.values():
        assert p.notes and p.model and p.gpu
        assert 0.003 < p.b0 < 0.05  # ms-scale weight reads
        assert 5_000 < 1 / p.b1 < 100_000  # prefill tokens per second
        assert p.kv_capacity_tokens > 50_000
        assert p.cold_start_seconds > 0
        # Decoding 256 sequences of ~1k tokens costs a few tens of ms per step.
        assert 0.01 < p.decode_step(256, 1300) < 0.2


def test_steady_state_estimate_grows_with_load_and_shrinks_with_target() -> None:
    low = synthetic("poisson", rate=20.0, duration=300.0, seed=1)
    high = synthetic("poisson", rate=200.0, duration=300.0, seed=1)
    for role, mode, t1, t2 in (
        ("serve", "aggregated", 8, 32),
        ("prefill", "disaggregated", 0.25, 1),
        ("decode", "disaggregated", 16, 64),
    ):
        a = steady_state_replicas(low, H100, mode, role, t1)
        b = steady_state_replicas(high, H100, mode, role, t1)
        c = steady_state_replicas(high, H100, mode, role, t2)
        assert a < b and c < b


def test_sim_cli_prints_the_contract_fields(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "sim",
            "--trace",
            "builtin:azure-conv",
            "--policy",
            "static:24",
            "--load-scale",
            "2",
            "--range",
            "0:0.15",
            "--slo-ttft",
            "2",
            "--slo-tpot",
            "0.1",
            "-o",
            "json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in (
        "goodput_rps",
        "slo_attainment",
        "gpu_hours",
        "goodput_per_gpu_hour",
        "ttft_p50",
        "ttft_p99",
        "tpot_p50",
        "tpot_p99",
        "replicas_max",
    ):
        assert key in out and isinstance(out[key], int | float)
    assert out["policy"] == "static:serve=24" and out["mode"] == "aggregated"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--policy", "bogus"], "--policy"),
        (["--policy", "static:prefill=1,decode=2"], "unknown role"),
        (["--policy", "static:0"], "positive"),
        (["--load-scale", "-1"], "--load-scale"),
        (["--profile", "gpt-9"], "unknown profile"),
        (["--range", "0.5:0.2"], "--range"),
        (["--slo-ttft", "0"], "--slo-ttft"),
        (["--policy", "learned:/nonexistent.json"], "no such file"),
        (["--mode", "disaggregated", "--policy", "static:3"], None),
    ],
)
def test_sim_cli_rejects_bad_input_with_exit_2(
    args: list[str], message: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["sim", "--trace", "builtin:azure-conv", "--range", "0:0.05"]
    rc = main(base + args)
    err = capsys.readouterr().err
    if message is None:
        assert rc == 0  # a valid combination, as a control
    else:
        assert rc == 2 and message in err and "Traceback" not in err


def test_trace_synth_cli_writes_a_readable_trace(tmp_path: Path) -> None:
    out = tmp_path / "bursty.csv"
    rc = main(
        ["trace", "synth", "--kind", "bursty", "--rate", "3", "--duration", "300", "-o", str(out)]
    )
    assert rc == 0
    tr = load_csv(str(out))
    assert len(tr) > 300 and tr.duration < 300


def test_profile_override_is_possible_for_what_if_runs() -> None:
    fast = replace(H100, name="fast", model_load_seconds=0.0, pod_start_seconds=1.0)
    assert fast.cold_start_seconds == 1.0
