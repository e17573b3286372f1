"""The learned policy: Q-learning converges where the best target is known, exploration is
bounded, policy files round-trip, and the offline training pipeline runs in the simulator."""

from __future__ import annotations

import copy
import io
import itertools
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunnage.autoscaling.kpa import KPASettings
from dunnage.autoscaling.learned import (
    CLIMB_COOLDOWN_DECISIONS,
    DOWN,
    DOWN2,
    FALLING,
    LOADS,
    MAX_VIOLATING_SHARE,
    MOVES,
    OK,
    RISING,
    STAY,
    STAY_MARGIN,
    STEADY,
    UP,
    VIOLATING,
    LearnedModel,
    LearnedTargets,
    LearningSettings,
    QAgent,
    band_of,
    fresh_agents,
    ladder,
    learned_policy,
    load_of,
    train,
    violation_risk_bound,
)
from dunnage.autoscaling.policy import RoleBounds
from dunnage.autoscaling.types import SLO, RoleObservation
from dunnage.cli import main
from dunnage.errors import InputError
from dunnage.sim.profiles import get_profile
from dunnage.sim.trace import synthetic, write_csv

REPO = Path(__file__).resolve().parents[1]

SLO_ = SLO(ttft=2.0, tpot=0.1, attainment=0.9)
# The fewest clean intervals that make a rung safe to settle on (22).
CLEAN = next(n for n in itertools.count(1) if violation_risk_bound(0, n) <= MAX_VIOLATING_SHARE)


class ToyFleet:
    """A workload whose best target is known: replicas = ceil(load * latency(T) / T) with
    latency growing with the batch, so a higher target needs fewer replicas (better goodput
    per replica-hour) until ``best``; above it, requests miss their TTFT SLO."""

    def __init__(self, best: float, rate: float = 200.0, seed: int = 0) -> None:
        self.best = best
        self.rate = rate
        self.rng = np.random.default_rng(seed)

    def step(self, target: float) -> RoleObservation:
        latency = 2.0 + target / 40.0
        replicas = max(1, math.ceil(self.rate * latency / target))
        completed = int(self.rng.poisson(self.rate))
        share = 1.0 if target <= self.best * 1.001 else max(0.0, 1 - 3 * (target / self.best - 1))
        ttft_ok = int(self.rng.binomial(completed, share))
        return RoleObservation(
            concurrency=self.rate * latency,
            ready_replicas=replicas,
            replicas=replicas,
            completed=completed,
            ttft_ok=ttft_ok,
            tpot_ok=completed,
        )


def drive(source: LearnedTargets, fleet: ToyFleet, t: float, decisions: int) -> float:
    """Plays ``decisions`` decision intervals of a ToyFleet through ``source`` from ``t``."""
    for _ in range(decisions * int(source.settings.decision_interval)):
        t += 1.0
        source.observe(t, {"serve": fleet.step(source.target("serve"))})
        source.update(t)
    return t


def play(
    agents: dict[str, QAgent],
    fleet: ToyFleet,
    *,
    decisions: int,
    epsilon: float,
    online: bool,
    seed: int,
    learn: bool = True,
) -> LearnedTargets:
    source = LearnedTargets(
        agents, SLO_, LearningSettings(), learn=learn, epsilon=epsilon, online=online, seed=seed
    )
    drive(source, fleet, 0.0, decisions)
    return source


def test_ladder_is_geometric_and_inclusive() -> None:
    rungs = ladder(4, 256)
    assert rungs[0] == 4 and rungs[-1] == 256
    ratios = [b / a for a, b in itertools.pairwise(rungs)]
    assert all(1.1 < r < 1.4 for r in ratios)
    assert ladder(0.1, 16)[0] == 0.1
    with pytest.raises(ValueError):
        ladder(0, 1)
    with pytest.raises(ValueError):
        ladder(1, 2, ratio=1.0)  # would never climb


def test_a_finer_ladder_has_every_other_rung_of_the_default_one() -> None:
    coarse = fresh_agents(["serve"], metric="rps")["serve"].rungs
    fine = fresh_agents(["serve"], metric="rps", ratio=2 ** (1 / 6))["serve"].rungs
    assert fine[0] == coarse[0] and fine[-1] == coarse[-1]
    assert len(fine) == 2 * len(coarse) - 1
    # 3 significant digits each, so the shared rungs agree to rounding.
    assert all(abs(f / c - 1) < 2e-3 for f, c in zip(fine[::2], coarse, strict=True))


def test_bands() -> None:
    assert band_of(0.99, 0.9) == OK
    assert band_of(0.93, 0.9) == 1
    assert band_of(0.85, 0.9) == VIOLATING


@pytest.mark.parametrize("best", [16.0, 40.3, 102.0])
def test_learning_converges_to_the_known_best_target(best: float) -> None:
    agents = fresh_agents(["serve"])
    rungs = agents["serve"].rungs
    assert best in rungs
    fleet = ToyFleet(best, seed=int(best))
    rng = random.Random(1)
    episodes = 60
    for ep in range(episodes):
        agents["serve"].index = rng.randrange(len(rungs))  # exploring starts
        eps = max(0.05, 0.5 * (1 - ep / episodes))
        play(agents, fleet, decisions=12, epsilon=eps, online=False, seed=ep)
    agent = agents["serve"]
    assert agent.rungs[agent.home()] == best
    # Greedy moves from the neighbours lead to it, and it stays there.
    i = rungs.index(best)
    assert agent.greedy((i, STEADY, OK)) == STAY
    assert MOVES[agent.greedy((i + 1, STEADY, VIOLATING))] < 0


def test_online_refinement_walks_from_a_stale_target_to_a_new_best() -> None:
    # Trained where 64 was best; the workload changes so 25.4 is: online updates follow it.
    agents = fresh_agents(["serve"])
    rng = random.Random(2)
    for ep in range(50):
        agents["serve"].index = rng.randrange(len(agents["serve"].rungs))
        play(agents, ToyFleet(64.0, seed=ep), decisions=12, epsilon=0.3, online=False, seed=ep)
    model = LearnedModel(agents, SLO_, LearningSettings(), "aggregated", "toy")
    assert model.home_targets() == {"serve": 64.0}
    pol = learned_policy(model, seed=3)
    source = pol.source
    assert isinstance(source, LearnedTargets)
    drive(source, ToyFleet(25.4, seed=99), 0.0, 40)
    assert source.target("serve") <= 32.0
    late = [h for h in source.history[-10:]]
    assert sum(h["attainment"] >= 0.9 for h in late) >= 8


@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(0, 18),
    load=st.sampled_from([0, 1, 2]),
    band=st.sampled_from([0, 1, 2]),
    values=st.lists(st.floats(-10, 10), min_size=4, max_size=4),
    counts=st.lists(st.integers(0, 3), min_size=4, max_size=4),
    violated_recently=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_online_exploration_never_raises_a_target(
    index: int,
    load: int,
    band: int,
    values: list[float],
    counts: list[int],
    violated_recently: bool,
    seed: int,
) -> None:
    agent = QAgent(rungs=ladder(4, 256), index=index)
    agent.q[(index, load, band)] = values
    agent.visits[(index, load, band)] = counts
    action, explored = agent.choose(
        (index, load, band),
        1.0,
        random.Random(seed),
        online=True,
        violated_recently=violated_recently,
    )
    g = agent.greedy((index, load, band))
    if band == VIOLATING:
        # A violation is answered only when it lasts, never by raising, never by exploring.
        assert not explored
        if not violated_recently or index == 0:
            assert action == STAY
        else:
            assert action == (g if MOVES[g] < 0 else DOWN)
    elif explored:
        assert action == DOWN
    else:
        assert action == g
    # Greedy moves only use actions tried in that state; untried states stay, or fall back
    # one rung when the SLO is violated.
    if any(counts[a] > 0 for a in agent.allowed(index)):
        assert counts[g] > 0
    else:
        assert g == (DOWN if band == VIOLATING and index > 0 else STAY)
    assert 0 <= index + MOVES[g] < len(agent.rungs)


def test_a_rung_is_charged_with_its_collapses_and_recoveries_not_its_peers() -> None:
    """A rung is charged with the collapse it led to and the recovery from it, not with a
    flood from a collapsed peer."""
    agents = fresh_agents(["prefill", "decode"], start=1.0)
    agents["decode"].index = 8
    source = LearnedTargets(
        agents, SLO_, LearningSettings(decision_interval=10), epsilon=0.0, online=False
    )

    def interval(end: int, decode_ok: float, prefill_ok: float) -> None:
        for t in range(end - 9, end + 1):
            source.observe(
                float(t),
                {
                    role: RoleObservation(
                        concurrency=1.0,
                        ready_replicas=2,
                        replicas=2,
                        completed=100,
                        ttft_ok=int(100 * ok),
                        tpot_ok=100,
                    )
                    for role, ok in (("prefill", prefill_ok), ("decode", decode_ok))
                },
            )
        source.update(float(end))

    def charged(role: str) -> tuple[int, int]:
        stats = agents[role].rung_rewards.values()
        return int(sum(st[1] for st in stats)), int(sum(st[2] for st in stats))

    source.observe(1.0, {})
    interval(11, 1.0, 1.0)  # the start: the fleet was sized for its targets, charged
    assert charged("decode") == (1, 0)
    collapsed = agents["decode"].index
    interval(21, 0.5, 1.0)  # decided after a healthy start: charged, violating
    assert charged("decode") == (2, 1)
    # Both were the run's start-up: counted, but not in the rung's mean reward.
    assert agents["decode"].rung_rewards[collapsed] == [0.0, 2.0, 1.0, 2.0]
    assert agents["decode"].index < collapsed  # it fell back a rung ...
    interval(31, 0.5, 1.0)  # ... but the recovery is charged to the rung that collapsed
    interval(41, 1.0, 1.0)
    interval(51, 1.0, 1.0)
    assert charged("decode") == (5, 2)
    assert agents["decode"].rung_rewards[collapsed][1:] == [5.0, 2.0, 2.0]
    interval(61, 1.0, 1.0)  # two healthy decisions in a row: charged to its own rung
    assert charged("decode") == (6, 2)
    assert agents["decode"].rung_rewards[collapsed][1:] == [5.0, 2.0, 2.0]
    interval(71, 1.0, 0.2)  # prefill violated meanwhile: not charged to decode ...
    assert charged("decode") == (6, 2)
    # ... but prefill's own violation is charged to it (its intervals 21 and 31 were not:
    # decode violated)
    assert charged("prefill") == (5, 1)
    interval(81, 1.0, 1.0)  # prefill had violated when decode's rung was chosen: still charged
    assert charged("decode") == (7, 2)


def test_online_a_healthy_role_leaves_its_rung_only_for_a_better_charged_one() -> None:
    agent = QAgent(rungs=ladder(4, 256), index=8)
    for state in (
        (8, STEADY, OK),
        (8, STEADY, VIOLATING),
    ):  # Q: moving up looks best, staying was tried once
        agent.q[state] = [0.0, 0.0, 1.0, 2.0]
        agent.visits[state] = [1, 1, 1, 3]
    for _ in range(CLEAN):
        agent.record(8, 1.0)
    rng = random.Random(0)
    # The rung above has no charged intervals: stay while healthy.
    assert agent.choose((8, STEADY, OK), 0.0, rng, online=True) == (STAY, False)
    for _ in range(CLEAN):
        agent.record(9, 0.8)  # charged, but worse: still stay
    assert agent.choose((8, STEADY, OK), 0.0, rng, online=True) == (STAY, False)
    for _ in range(20):
        agent.record(9, 1.5)  # now better on its charged intervals: follow Q
    assert agent.choose((8, STEADY, OK), 0.0, rng, online=True) == (UP, False)
    agent.rung_rewards.pop(9)
    # Offline (training) the Q-greedy move stands.
    assert agent.choose((8, STEADY, OK), 0.0, rng, online=False) == (UP, False)


def test_online_a_healthy_role_moves_down_only_for_a_clear_gain() -> None:
    """One live interval can move a thin rung mean by a few hundredths (a ramp's start-up,
    say); a role meeting its SLO takes on more replicas only for a clear gain, while climbing
    back needs only a better mean."""
    agent = QAgent(rungs=ladder(4, 256), index=8)
    agent.q[(8, STEADY, OK)] = [0.0, 2.0, 1.0, 0.0]  # Q: one rung down looks best
    agent.visits[(8, STEADY, OK)] = [1, 3, 1, 1]
    agent.q[(7, STEADY, OK)] = [0.0, 0.0, 1.0, 2.0]  # and from there, back up
    agent.visits[(7, STEADY, OK)] = [1, 1, 1, 3]
    for _ in range(CLEAN):
        agent.record(8, 1.0)
        agent.record(7, 1.0 + STAY_MARGIN / 2)
    rng = random.Random(0)
    assert agent.choose((8, STEADY, OK), 0.0, rng, online=True) == (STAY, False)
    for _ in range(CLEAN):
        agent.record(7, 1.0 + 2 * STAY_MARGIN)  # now clearly better (mean 1.125)
    assert agent.choose((8, STEADY, OK), 0.0, rng, online=True) == (DOWN, False)
    # Upwards, a better mean is enough.
    agent.rung_rewards[8] = [(1.0 + 2 * STAY_MARGIN) * CLEAN, CLEAN, 0, 0]
    assert agent.choose((7, STEADY, OK), 0.0, rng, online=True) == (UP, False)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), data=st.data())
def test_the_violation_risk_bound_is_the_clopper_pearson_one(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    bound = violation_risk_bound(k, n)
    assert k / n <= bound <= 1.0
    if k < n:
        # Seeing at most k violations is exactly 10% likely at the bound (one-sided, 90%).
        cdf = sum(math.comb(n, i) * bound**i * (1 - bound) ** (n - i) for i in range(k + 1))
        assert cdf == pytest.approx(0.1, abs=1e-6)
        assert violation_risk_bound(k, n + 1) < bound  # more evidence, a tighter bound
        assert violation_risk_bound(k + 1, n) > bound
    if k == 0:
        assert bound == pytest.approx(1 - 0.1 ** (1 / n))
    lower = violation_risk_bound(k, n, lower=True)
    assert 0.0 <= lower <= k / n
    if k > 0:
        # Seeing at least k violations is exactly 10% likely at the lower bound.
        cdf = sum(math.comb(n, i) * lower**i * (1 - lower) ** (n - i) for i in range(k))
        assert 1 - cdf == pytest.approx(0.1, abs=1e-6)
    else:
        assert lower == 0.0
    assert CLEAN == 22


def test_load_trend_compares_an_intervals_request_rate_with_the_one_before() -> None:
    assert load_of(111.0, 100.0) == RISING
    assert load_of(109.0, 100.0) == STEADY
    assert load_of(90.0, 100.0) == FALLING
    assert load_of(92.0, 100.0) == STEADY
    assert load_of(500.0, None) == STEADY  # no interval before it
    assert load_of(5.0, 0.0) == STEADY  # nothing to compare with


def test_the_state_has_the_load_trend_of_the_roles_request_rate() -> None:
    agent = QAgent(rungs=ladder(4, 256), index=8)
    source = LearnedTargets(
        {"serve": agent}, SLO_, LearningSettings(decision_interval=10), epsilon=0.0, online=False
    )
    source.observe(1.0, {})
    states = []
    for k, rate in enumerate((100.0, 100.0, 130.0, 130.0, 100.0)):
        for t in range(10 * k + 2, 10 * k + 12):
            obs = RoleObservation(
                1.0, 2, 2, request_rate=rate, completed=100, ttft_ok=100, tpot_ok=100
            )
            source.observe(float(t), {"serve": obs})
        step = source.update(float(10 * k + 11))["serve"]
        assert step["requestRate"] == rate
        states.append(step["state"])
    assert [st.split(",")[1] for st in states] == [
        "steady",
        "steady",
        "rising",
        "steady",
        "falling",
    ]
    # Each decision learns about the state of the one before: the last (falling) comes next.
    assert [sum(agent.counts((8, load, OK))) for load in (FALLING, STEADY, RISING)] == [0, 3, 1]


def test_a_rung_is_not_safe_while_a_lower_one_surely_is_not() -> None:
    """A higher target leaves fewer replicas for the same load: a clean training record above a
    rung that surely tips the fleet over is luck, not safety."""
    agent = QAgent(rungs=ladder(4, 256), index=8)
    for _ in range(3 * CLEAN):
        agent.record(8, 1.0)
        agent.record(10, 2.0)
    assert agent.home() == 10
    for k in range(20):
        agent.record(9, 1.5, violated=k % 7 == 0)  # 3 of 20: maybe more than 10%, not surely
    assert violation_risk_bound(3, 20, lower=True) < MAX_VIOLATING_SHARE
    assert agent.home() == 10
    for k in range(20):
        agent.record(9, 1.5, violated=k % 2 == 0)  # 13 of 40: surely more than 10%
    assert violation_risk_bound(13, 40, lower=True) > MAX_VIOLATING_SHARE
    assert agent.safe_mean(10) is None and agent.home() == 8


def test_exploring_starts_go_to_the_rungs_that_could_still_replace_the_home() -> None:
    """Only intervals at a rung with a better mean but too little evidence can move the home
    (best-arm identification); rungs that are worse, or surely too risky, or above a rung that
    surely is, are not contenders."""
    agent = QAgent(rungs=ladder(4, 256), index=0)
    for _ in range(CLEAN):
        agent.record(8, 1.0)
    agent.record(6, 0.5)  # worse: not a contender
    for k in range(3):
        agent.record(11, 9.0, startup=True)  # start-ups only: no mean yet
        agent.record(9, 1.4, startup=k == 0)  # better, two intervals after start-ups
        agent.record(10, 1.3)
        agent.record(10, 1.3)
    assert agent.home() == 8
    assert agent.contenders() == [9, 10]
    rng = random.Random(0)
    starts = [agent.exploring_start(rng) for _ in range(400)]
    # Half at the contender with the fewest intervals (9: 3 against 10's 6), half at the
    # least-visited rungs (no state visited yet: any of the 19, 10 or 11 times each).
    assert 170 < starts.count(9) < 250
    assert starts.count(10) < 30
    # Once 9 is surely risky, neither it nor 10 above it contends.
    for _ in range(6):
        agent.record(9, 1.4, violated=True)
    assert violation_risk_bound(6, 9, lower=True) > MAX_VIOLATING_SHARE
    assert agent.contenders() == []
    # A contender that shows its safety becomes the home, and contends no more.
    fresh = QAgent(rungs=ladder(4, 256), index=0)
    for _ in range(CLEAN):
        fresh.record(8, 1.0)
        fresh.record(9, 1.4)
    assert fresh.home() == 9 and fresh.contenders() == []


def test_online_a_violation_is_answered_only_when_it_lasts_and_never_by_raising() -> None:
    agent = QAgent(rungs=ladder(4, 256), index=8)
    agent.q[(8, STEADY, VIOLATING)] = [0.0, 1.0, 0.5, 2.0]  # Q: moving up looks best, then down
    agent.visits[(8, STEADY, VIOLATING)] = [1, 1, 1, 3]
    rng = random.Random(0)
    state = (8, STEADY, VIOLATING)
    # Offline the greedy move stands; online a first violation is ridden out ...
    assert agent.choose(state, 0.0, rng, online=False) == (UP, False)
    assert agent.choose(state, 1.0, rng, online=True) == (STAY, False)
    # ... a lasting one is answered by a lower target (more replicas), never a higher one:
    # one rung down when the greedy move does not go down, else the greedy move.
    assert agent.choose(state, 0.0, rng, online=True, violated_recently=True) == (DOWN, False)
    agent.q[state] = [3.0, 1.0, 0.5, 2.0]
    assert agent.choose(state, 0.0, rng, online=True, violated_recently=True) == (DOWN2, False)


class Intervals:
    """Plays 10 s decision intervals of a serve role through LearnedTargets (online, no
    exploration, no learning): ``play(share)`` -> the decision's action, with ``share`` of the
    requests meeting the TTFT SLO."""

    def __init__(self, agent: QAgent) -> None:
        self.source = LearnedTargets(
            {"serve": agent}, SLO_, LearningSettings(decision_interval=10), epsilon=0.0, learn=False
        )
        self.end = 1
        self.source.observe(1.0, {})

    def play(self, share: float) -> str:
        for t in range(self.end + 1, self.end + 11):
            obs = RoleObservation(1.0, 2, 2, completed=100, ttft_ok=int(100 * share), tpot_ok=100)
            self.source.observe(float(t), {"serve": obs})
        self.end += 10
        return str(self.source.update(float(self.end))["serve"]["action"])


def test_a_first_violation_online_keeps_the_target_and_a_second_moves_it_down() -> None:
    agent = QAgent(rungs=ladder(4, 256), index=8)
    agent.q[(8, STEADY, VIOLATING)] = [0.0, 1.0, 0.5, 0.0]
    agent.visits[(8, STEADY, VIOLATING)] = [1, 1, 1, 1]
    intervals = Intervals(agent)
    assert intervals.play(0.5) == "stay"
    assert intervals.play(0.5) == "down"
    assert intervals.source.target("serve") == agent.rungs[7]


def test_online_a_violation_that_recurs_within_four_decisions_moves_the_target_down() -> None:
    """Bursts a few minutes apart violate every other interval: that recurs, so it is answered
    like a lasting violation; one three healthy decisions after the last is ridden out."""
    agent = QAgent(rungs=ladder(4, 256), index=8)
    agent.visits[(8, STEADY, VIOLATING)] = [1, 1, 1, 1]
    agent.visits[(8, STEADY, OK)] = [1, 1, 1, 1]
    agent.q[(8, STEADY, OK)] = [0.0, 0.0, 1.0, 0.0]  # healthy: stay
    intervals = Intervals(agent)
    assert [intervals.play(share) for share in (0.5, 1.0, 1.0, 1.0)] == ["stay"] * 4
    assert intervals.play(0.5) == "stay"  # the last violation was four decisions ago
    assert intervals.play(1.0) == "stay"
    assert intervals.play(0.5) == "down"  # two decisions after the one before
    assert intervals.source.target("serve") == agent.rungs[7]


def test_online_a_role_does_not_climb_back_soon_to_the_rung_that_tipped_it_over() -> None:
    agent = QAgent(rungs=ladder(4, 256), index=8)
    for rung in (7, 8):
        agent.visits[(rung, STEADY, OK)] = [1, 1, 1, 1]
        agent.visits[(rung, STEADY, VIOLATING)] = [1, 1, 1, 1]
    agent.q[(7, STEADY, OK)] = [0.0, 0.0, 0.5, 1.0]  # healthy at 7: up looks best
    agent.q[(8, STEADY, OK)] = [0.0, 0.0, 1.0, 0.0]
    for _ in range(CLEAN):  # charged intervals: 8 earned more than 7, so climbing is worth it
        agent.record(7, 1.0)
        agent.record(8, 2.0)
    intervals = Intervals(agent)
    assert [intervals.play(0.5), intervals.play(0.5)] == ["stay", "down"]  # 8 tipped it over
    assert intervals.source.target("serve") == agent.rungs[7]
    healthy = [intervals.play(1.0) for _ in range(CLIMB_COOLDOWN_DECISIONS)]
    # Held at 7 while 8's violation is recent, then back up to 8.
    assert healthy[:-2] == ["stay"] * (CLIMB_COOLDOWN_DECISIONS - 2) and healthy[-2] == "up"
    assert intervals.source.target("serve") == agent.rungs[8]


@pytest.mark.parametrize("gain, back", [(STAY_MARGIN / 2, True), (2 * STAY_MARGIN, False)])
def test_online_an_exploring_move_is_a_probe_undone_unless_it_shows_a_clear_gain(
    gain: float, back: bool
) -> None:
    """Exploration only goes down; were its moves kept, each would lower the target for good
    (the greedy move stays where staying was tried). After one interval the role goes back
    unless the probed rung clearly earns more (this source does not learn, so the means are
    the recorded ones)."""
    agent = QAgent(rungs=ladder(4, 256), index=8)
    for _ in range(CLEAN):
        agent.record(8, 1.0)
        agent.record(7, 1.0 + gain)
    intervals = Intervals(agent)
    intervals.source.epsilon = 1.0  # explore at the next healthy decision
    assert intervals.play(1.0) == "down"
    assert intervals.source.history[-1]["explored"]
    intervals.source.epsilon = 0.0
    assert intervals.play(1.0) == ("up" if back else "stay")
    assert intervals.source.history[-1]["probeUndone"] is back
    assert intervals.source.target("serve") == agent.rungs[8 if back else 7]
    assert intervals.play(1.0) == "stay"  # one decision only: no more moves


@pytest.mark.parametrize(
    "left, probed, back",
    [(0, 0, True), (3, 3, True), (0, CLEAN, False), (CLEAN, 3, True)],
)
def test_a_probe_is_kept_only_on_evidence_for_the_probed_rung(
    left: int, probed: int, back: bool
) -> None:
    """Intervals charged to the rung the probe left and to the probed one (all earning the
    same): a rung without enough of them has no safe mean. A probe is kept only when the
    probed rung has one and the rung it left has none (or a clearly lower one); otherwise
    (a learner starting from scratch, say) every probe would lower the target for good."""
    agent = QAgent(rungs=ladder(4, 256), index=8)
    for _ in range(left):
        agent.record(8, 1.0)
    for _ in range(probed):
        agent.record(7, 1.0)
    intervals = Intervals(agent)
    intervals.source.epsilon = 1.0
    assert intervals.play(1.0) == "down"
    intervals.source.epsilon = 0.0
    assert intervals.play(1.0) == ("up" if back else "stay")
    assert intervals.source.target("serve") == agent.rungs[8 if back else 7]


def test_quantiles_stand_in_for_counters() -> None:
    agents = fresh_agents(["serve"], start=32)
    source = LearnedTargets(agents, SLO_, LearningSettings(decision_interval=10), seed=0)
    for t in range(1, 12):
        obs = RoleObservation(
            concurrency=100,
            ready_replicas=4,
            replicas=4,
            completed=50,
            ttft_quantiles={0.5: 0.4, 0.9: 1.5, 0.99: 5.0},
            tpot_quantiles={0.5: 0.02, 0.99: 0.05},
        )
        source.observe(float(t), {"serve": obs})
    step = source.update(11.0)["serve"]
    # TTFT: 2 s lies between p90 1.5 s and p99 5 s -> about 0.9 + 0.09 * 0.5/3.5.
    assert step["attainment"] == pytest.approx((0.9 + 0.09 * 0.5 / 3.5) * 0.99, rel=1e-3)


def test_policy_file_round_trip_and_errors(tmp_path: Path) -> None:
    agents = fresh_agents(["prefill", "decode"])
    agents["decode"].q[(3, STEADY, OK)] = [0.1, 0.2, 0.9, 0.3]
    agents["decode"].visits[(3, STEADY, OK)] = [1, 1, 4, 1]
    agents["decode"].reward_scale = 1234.0
    for reward in (0.5, 0.7, 0.6, 0.6, 0.6) * 2:
        agents["prefill"].record(2, reward)
    for reward in (2.0, -5.0, 2.0, 1.0, 1.0) * 2:  # oscillations: worse on average
        agents["prefill"].record(5, reward, violated=reward < 0)
    for k in range(60):  # one interval in 60 ended violating: surely within the 10% allowed
        agents["prefill"].record(6, 2.0, violated=k == 0)
    for k in range(10):  # the best mean, but two intervals in 10 ended violating
        agents["prefill"].record(3, 3.0 if k > 1 else 2.0, violated=k <= 1)
    for _ in range(CLEAN - 1):  # clean and better, but too few to be sure of the 10%
        agents["prefill"].record(9, 2.5)
    for _ in range(4):  # safe so far, but too few intervals to count
        agents["prefill"].record(8, 3.0)
    agents["prefill"].record(7, 9.0)  # too few intervals to count
    assert agents["prefill"].home() == 6
    model = LearnedModel(agents, SLO_, LearningSettings(), "disaggregated", "llama3-8b-h100")
    path = tmp_path / "p.json"
    model.save(path)
    back = LearnedModel.load(path)
    assert back.home_targets() == model.home_targets()
    assert back.agents["decode"].q[(3, STEADY, OK)] == [0.1, 0.2, 0.9, 0.3]
    assert back.agents["decode"].reward_scale == 1234.0
    assert back.home_targets()["decode"] == agents["decode"].rungs[3]
    assert back.agents["prefill"].rung_rewards[5] == pytest.approx([2.0, 10.0, 2.0, 0.0], abs=1e-5)
    assert back.agents["prefill"].home() == 6
    raw = json.loads(path.read_text())
    for breakage, message in (
        (lambda r: r.update(format="x"), "not a learned policy"),
        (lambda r: r.update(version=99), "version"),
        (
            lambda r: r["roles"]["decode"]["q"].update({"99,steady,ok": [0, 0, 0, 0]}),
            "out of range",
        ),
        (lambda r: r["roles"]["decode"]["q"].update({"1,steady,ok": [0, 0]}), "out of range"),
        (lambda r: r.update(roles={}), "at least one role"),
        (lambda r: r.update(metric="qps"), "metric: must be one of concurrency, rps"),
        (
            lambda r: r["roles"]["prefill"]["rungRewards"].update({"2": [0.5, 3, 0, 4]}),
            "roles.prefill: malformed agent .rung 2: more start-up intervals than intervals",
        ),
    ):
        broken = json.loads(json.dumps(raw))
        breakage(broken)
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(broken))
        with pytest.raises(InputError, match=message):
            LearnedModel.load(bad)
    (tmp_path / "notjson.json").write_text("{")
    with pytest.raises(InputError, match="not JSON"):
        LearnedModel.load(tmp_path / "notjson.json")


def test_start_ups_count_towards_a_rungs_violations_not_its_mean() -> None:
    """A run's first intervals settle the fleet whatever the target; exploring starts would
    charge that cost to the rungs they start at."""
    agent = QAgent(rungs=ladder(4, 256), index=0)
    for k in range(CLEAN):
        agent.record(8, 1.0)
        agent.record(9, 1.2 if k % 3 else 0.1, startup=k % 3 == 0)  # costly start-ups
    assert agent.home() == 9  # 1.2 after start-ups, against 8's 1.0
    assert agent.rung_rewards[9][1:] == [CLEAN, 0, len(range(0, CLEAN, 3))]
    # A start-up that ends violating counts against the rung's safety all the same.
    for _ in range(3):
        agent.record(9, -5.0, violated=True, startup=True)
    assert agent.safe_mean(9) is None
    assert agent.home() == 8


def test_a_version_2_policy_file_has_no_start_ups(tmp_path: Path) -> None:
    """Files learned before start-ups were told apart keep their means over every interval."""
    model = LearnedModel(fresh_agents(["serve"]), SLO_, LearningSettings(), "aggregated", "toy")
    raw = model.to_dict()
    raw["version"] = 2
    raw["roles"]["serve"]["rungRewards"] = {"5": [1.5, CLEAN, 0]}
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(raw))
    back = LearnedModel.load(path).agents["serve"]
    assert back.rung_rewards[5] == pytest.approx([1.5 * CLEAN, CLEAN, 0, 0])
    assert back.safe_mean(5) == pytest.approx(1.5)


def test_a_version_1_policy_file_reads_its_states_as_the_same_in_every_load_trend(
    tmp_path: Path,
) -> None:
    """Files learned before the load trend was part of the state keep working."""
    agents = fresh_agents(["serve"])
    agents["serve"].q[(3, STEADY, OK)] = [0.1, 0.2, 0.9, 0.3]
    agents["serve"].visits[(3, STEADY, OK)] = [1, 1, 4, 1]
    raw = LearnedModel(agents, SLO_, LearningSettings(), "aggregated", "toy").to_dict()
    raw["version"] = 1
    body = raw["roles"]["serve"]
    for table in ("q", "visits"):
        body[table] = {k.replace(",steady,", ","): v for k, v in body[table].items()}
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(raw))
    back = LearnedModel.load(path).agents["serve"]
    assert {back.q[(3, load, OK)][2] for load in range(len(LOADS))} == {0.9}
    assert {back.visits[(3, load, OK)][2] for load in range(len(LOADS))} == {4}
    # The benchmark's rps policies were learned before the load trend.
    for name in ("aggregated-rps", "disaggregated-rps"):
        rps = Path(__file__).parent.parent / "bench" / "results" / f"autoscaling-policy-{name}.json"
        assert LearnedModel.load(rps).metric == "rps"


def test_training_in_the_simulator_finds_the_best_static_target() -> None:
    # A workload with a tight TPOT SLO: past some batch size TPOT exceeds it, below it more
    # replicas are needed. The best static target comes from a sweep in the same simulator;
    # the learned home target must score as well as it in that sweep, and do about as well
    # when it runs (refining online).
    from dunnage.autoscaling.policy import RoleBounds, static_policy
    from dunnage.sim.engine import simulate

    profile = get_profile("llama3-8b-h100")
    slo = SLO(ttft=2.0, tpot=0.018, attainment=0.9)
    tr = synthetic("poisson", rate=25.0, duration=2400.0, seed=11, prompt_mean=300, output_mean=150)
    bounds = {"serve": RoleBounds(1, 200, 8, 128)}
    rungs = fresh_agents(["serve"], bounds)["serve"].rungs
    test_part = tr.fraction(0.5, 1)

    def score(target: float) -> float:
        pol = static_policy(["serve"], {"serve": target}, bounds=bounds)
        s = simulate(test_part, profile, pol, slo=slo, warmup=120).summary
        ok = s["slo_attainment"] >= slo.attainment
        return s["goodput_per_gpu_hour"] if ok else 0.0

    scores = {t: score(t) for t in rungs}
    best = max(scores, key=lambda t: scores[t])
    model = train(
        tr.fraction(0, 0.5),
        profile,
        mode="aggregated",
        slo=slo,
        episodes=24,
        window=720,
        bounds=bounds,
        seed=0,
    )
    home = model.home_targets()["serve"]
    # Several rungs can tie for best (a plateau once the fleet is one replica); the learned one
    # must be one of the best.
    assert scores[home] >= 0.98 * scores[best], (home, best, scores)
    pol = learned_policy(model, bounds=bounds)
    s = simulate(test_part, profile, pol, slo=slo, warmup=120).summary
    assert s["slo_attainment"] >= 0.9
    assert s["goodput_per_gpu_hour"] >= 0.9 * scores[best]


def test_policy_train_and_sim_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    write_csv(synthetic("poisson", rate=6.0, duration=900.0, seed=1), trace)
    out = tmp_path / "policy.json"
    rc = main(
        [
            "policy",
            "train",
            "--trace",
            str(trace),
            "--mode",
            "disaggregated",
            "--episodes",
            "2",
            "--window",
            "400",
            "-q",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["targets"]) == {"prefill", "decode"}
    rc = main(
        [
            "sim",
            "--trace",
            str(trace),
            "--mode",
            "disaggregated",
            "--policy",
            f"learned:{out}",
            "-o",
            "json",
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["policy"] == "learned" and set(res["learned_targets"]) == {"prefill", "decode"}
    # The wrong mode for the file is a clear input error.
    rc = main(["sim", "--trace", str(trace), "--policy", f"learned:{out}"])
    assert rc == 2 and "roles" in capsys.readouterr().err
    assert main(["policy", "show", str(out)]) == 0
    assert "prefill: home target" in capsys.readouterr().out


def test_the_rps_metric_through_train_and_sim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A policy trained on the rps metric says so in its file, is played on that metric, and
    is refused on the other; kpa and static take the metric and limit too."""
    trace = tmp_path / "t.csv"
    write_csv(synthetic("poisson", rate=6.0, duration=900.0, seed=1), trace)
    out = tmp_path / "rps.json"
    common = ["--trace", str(trace), "--container-concurrency", "64"]
    assert main(["policy", "train", *common, "--metric", "rps", "--episodes", "2", "--window",
                 "400", "-q", "-o", str(out)]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["metric"] == "rps"
    model = LearnedModel.load(out)
    assert model.metric == "rps" and model.training["container_concurrency"] == 64
    assert model.agents["serve"].rungs[0] == 1.0  # the rps ladder, not the concurrency one
    assert main(["sim", *common, "--policy", f"learned:{out}", "-o", "json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["metric"] == "rps" and res["policy"] == "learned"
    assert main(["sim", *common, "--policy", f"learned:{out}", "--metric", "concurrency"]) == 2
    err = capsys.readouterr().err
    assert "--metric" in err and "the policy's targets are on the rps metric" in err
    for policy in ("kpa", "static:4"):
        assert main(["sim", *common, "--metric", "rps", "--policy", policy, "-o", "json"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert res["metric"] == "rps" and res["goodput_rps"] > 0
    assert main(["sim", "--trace", str(trace), "--container-concurrency", "0"]) == 2
    assert "--container-concurrency: must be at least 1" in capsys.readouterr().err
    # A NaN warm-up counted no request and printed NaN, which is not JSON.
    assert main(["sim", "--trace", str(trace), "--warmup", "nan"]) == 2
    assert "--warmup: must be a non-negative number of seconds" in capsys.readouterr().err
    # 0 episodes is refused, not taken as "the default" (it once trained 100).
    for argv in (
        ["policy", "train", *common, "--episodes", "0", "-o", str(tmp_path / "none.json")],
        ["sim", *common, "--policy", "learned", "--episodes", "0"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--episodes: must be at least 1" in err and "episode 1/" not in err
    assert not (tmp_path / "none.json").exists()
    with pytest.raises(InputError, match="on the rps metric, the KPA's on concurrency"):
        learned_policy(model, kpa=KPASettings())


def test_a_fixed_limit_through_train_and_sim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--fixed-limit: each replica's limit is --container-concurrency whatever the target; a
    policy trained so records its limit, plays under it, and refuses another one."""
    assert KPASettings().limit_for(10.1) == 15  # Knative's: follows the target
    fixed = KPASettings(fixed_limit=True, container_concurrency=256)
    assert fixed.limit_for(10.1) == fixed.limit_for(161) == 256
    trace = tmp_path / "t.csv"
    write_csv(synthetic("poisson", rate=6.0, duration=900.0, seed=1), trace)
    out = tmp_path / "fixed.json"
    common = ["--trace", str(trace)]
    # A limit of 2 binds (a role's targets are 4 and up): a run under it is not a run without.
    limit = ["--fixed-limit", "--container-concurrency", "2"]
    assert main(["policy", "train", *common, *limit, "--episodes", "2", "--window", "400",
                 "-q", "-o", str(out)]) == 0  # fmt: skip
    capsys.readouterr()
    model = LearnedModel.load(out)
    assert model.concurrency_limit == 2 and json.loads(out.read_text())["concurrencyLimit"] == 2
    assert learned_policy(model).concurrency_limit("serve") == 2  # the file's limit by default
    # The sim plays it under its limit unless told otherwise: the same run as with the flags.
    assert main(["sim", *common, "--policy", f"learned:{out}", "-o", "json"]) == 0
    by_default = json.loads(capsys.readouterr().out)
    assert main(["sim", *common, "--policy", f"learned:{out}", *limit, "-o", "json"]) == 0
    explicit = json.loads(capsys.readouterr().out)
    assert by_default.pop("sim_wall_s") and explicit.pop("sim_wall_s")
    assert explicit == by_default
    assert main(["sim", *common, "--policy", f"learned:{out}", "--fixed-limit",
                 "--container-concurrency", "100"]) == 2  # fmt: skip
    assert "trained with each replica's limit fixed at 2" in capsys.readouterr().err
    coupled = tmp_path / "coupled.json"
    assert main(["policy", "train", *common, "--episodes", "2", "--window", "400", "-q",
                 "-o", str(coupled)]) == 0  # fmt: skip
    capsys.readouterr()
    assert "concurrencyLimit" not in json.loads(coupled.read_text())
    assert main(["sim", *common, "--policy", f"learned:{coupled}", *limit]) == 2
    err = capsys.readouterr().err
    assert "--fixed-limit" in err and "trained with the limit following the target" in err
    raw = json.loads(out.read_text())
    for bad in (0, "64", True, 1.5):
        raw["concurrencyLimit"] = bad
        (tmp_path / "bad.json").write_text(json.dumps(raw))
        with pytest.raises(InputError, match="concurrencyLimit: must be a positive integer"):
            LearnedModel.load(tmp_path / "bad.json")


def test_sim_learned_without_a_file_trains_then_evaluates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = main(
        [
            "sim",
            "--trace",
            "builtin:azure-conv",
            "--range",
            "0:0.5",
            "--policy",
            "learned",
            "--episodes",
            "2",
            "-o",
            "json",
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["train_range"] == [0.0, 0.25] and res["eval_range"] == [0.25, 0.5]
    assert "split" in res and res["goodput_per_gpu_hour"] > 0


def test_a_restored_learner_goes_on_as_the_one_that_kept_running() -> None:
    """An operator restart: the learner's state is exported after a decision, taken over by
    a learner built from the initial agents, and from then on both decide alike on the same
    load. The export is taken while a probe is in progress and after a rung tipped the role
    over, so the probe's undoing and the climb cool-down must come through too."""
    settings_ = LearningSettings(decision_interval=10)
    agents = fresh_agents(["serve"], start=64)
    fleet = ToyFleet(40.3, seed=1)
    running = LearnedTargets(agents, SLO_, settings_, epsilon=0.3, seed=4)
    t = 0.0
    for _ in range(500):
        t = drive(running, fleet, t, 1)
        doc = json.loads(json.dumps(running.export(None, key="k", metric="concurrency")))
        memory = doc["online"]["roles"]["serve"]
        if memory["probedFrom"] is not None and memory["tippedAt"] and memory["previous"]:
            break
    else:
        pytest.fail("no probe in progress after a rung tipped the role over")
    restarted = LearnedTargets(fresh_agents(["serve"], start=64), SLO_, settings_, seed=9)
    assert restarted.restore(doc, "saved") == {"serve": running.target("serve")}
    running.epsilon = restarted.epsilon = 0.0  # their random draws differ; their decisions not
    restarted.observe(t, {})  # the restarted learner's clock starts at the last decision
    twin = copy.deepcopy(fleet)
    drive(running, fleet, t, 40)
    drive(restarted, twin, t, 40)
    n = len(restarted.history)
    assert n == 40
    assert [h["action"] for h in restarted.history] == [h["action"] for h in running.history[-n:]]


@pytest.mark.parametrize("memory", [True, False])
def test_a_probe_in_progress_is_undone_after_a_restart(memory: bool) -> None:
    """A restart right after an exploring move down: the restored learner undoes the probe at
    its next decision as the running one would have; without its memory it would keep the
    lower target (exploration's ratchet)."""

    def agent() -> QAgent:
        a = QAgent(rungs=ladder(4, 256), index=8)
        for _ in range(CLEAN):
            a.record(8, 1.0)
            a.record(7, 1.0)
        return a

    intervals = Intervals(agent())
    intervals.source.epsilon = 1.0
    assert intervals.play(1.0) == "down"
    doc = json.loads(json.dumps(intervals.source.export(None, key="k", metric="concurrency")))
    if not memory:
        doc["online"]["roles"]["serve"] = {"rung": doc["online"]["roles"]["serve"]["rung"]}
    restarted = Intervals(agent())
    restarted.end = intervals.end
    restarted.source.observe(float(intervals.end), {})
    restarted.source.restore(doc, "saved")
    assert restarted.source.target("serve") == ladder(4, 256)[7]
    assert restarted.play(1.0) == ("up" if memory else "stay")
    assert restarted.source.target("serve") == ladder(4, 256)[8 if memory else 7]


def test_restore_takes_the_roles_whose_ladder_matches_and_refuses_a_malformed_state_whole() -> None:
    running = LearnedTargets(fresh_agents(["prefill", "decode"]), SLO_, seed=0)
    running.agents["prefill"].index -= 2
    running.agents["decode"].index -= 1
    doc = running.export(None, key="k", metric="concurrency")
    narrowed = {"decode": RoleBounds(min_target=8, max_target=128)}
    other = LearnedTargets(fresh_agents(["prefill", "decode"], narrowed), SLO_, seed=0)
    assert other.restore(doc, "saved") == {"prefill": running.target("prefill")}
    assert other.target("decode") == fresh_agents(["decode"], narrowed)["decode"].target

    fresh = LearnedTargets(fresh_agents(["prefill", "decode"]), SLO_, seed=0)
    before = fresh.export(None, key="k", metric="concurrency")
    broken = json.loads(json.dumps(doc))
    broken["online"]["roles"]["decode"]["rung"] = 99
    with pytest.raises(InputError, match=r"saved: online.roles: malformed .*rung 99"):
        fresh.restore(broken, "saved")
    assert fresh.export(None, key="k", metric="concurrency") == before  # prefill untouched too
    del broken["online"]
    with pytest.raises(InputError, match="saved: online: missing"):
        fresh.restore(broken, "saved")


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.one_of(st.integers(-3, 40), st.text(max_size=12), st.booleans()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-3, 40), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(
    path=st.sampled_from(
        [
            ("online",),
            ("online", "decisions"),
            ("online", "roles"),
            ("online", "roles", "serve"),
            *[
                ("online", "roles", "serve", field)
                for field in (
                    "rung",
                    "previous",
                    "requestRate",
                    "violations",
                    "healthy",
                    "blamed",
                    "tippedAt",
                    "probedFrom",
                )
            ],
            ("slo",),
            ("learning",),
            ("metric",),
            ("version",),
            ("roles",),
            ("roles", "serve"),
            ("roles", "serve", "rungs"),
            ("roles", "serve", "q"),
            ("roles", "serve", "visits"),
            ("roles", "serve", "home"),
            ("roles", "serve", "rewardScale"),
            ("roles", "serve", "rungRewards"),
        ]
    ),
    junk=JUNK,
)
def test_restoring_any_edit_of_a_saved_state_takes_it_whole_or_refuses_it_whole(
    path: tuple[str, ...], junk: Any
) -> None:
    """A saved state someone edited (it is a ConfigMap): restore either takes it or raises an
    InputError naming where it came from, and then changes nothing."""
    running = LearnedTargets(fresh_agents(["serve"], start=32), SLO_, seed=0)
    drive(running, ToyFleet(40.3, seed=2), 0.0, 3)
    doc = json.loads(json.dumps(running.export(None, key="k", metric="concurrency")))
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = junk
    fresh = LearnedTargets(fresh_agents(["serve"], start=32), SLO_, seed=0)
    before = fresh.export(None, key="k", metric="concurrency")
    try:
        restored = fresh.restore(json.loads(json.dumps(doc)), "ConfigMap ns/x")
    except InputError as exc:
        assert str(exc).startswith("ConfigMap ns/x")
        assert fresh.export(None, key="k", metric="concurrency") == before
        return
    assert set(restored) <= {"serve"}
    drive(fresh, ToyFleet(40.3, seed=3), 400.0, 2)  # and it goes on deciding


BENCH_POLICY = Path(__file__).resolve().parent.parent / "bench" / "results"


def test_policy_show_explains_the_home_target_by_each_rungs_evidence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = BENCH_POLICY / "autoscaling-policy-aggregated.json"
    model = LearnedModel.load(path)
    agent = model.agents["serve"]
    assert main(["policy", "show", str(path), "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rungs = report["roles"]["serve"]["rungs"]
    assert report["roles"]["serve"]["home"] == agent.rungs[agent.home()]
    assert [r["target"] for r in rungs if r["verdict"] == "home"] == [agent.rungs[agent.home()]]
    for r in rungs:
        i = agent.rungs.index(r["target"])
        _, n, bad, startup = agent.rung_rewards[i]
        assert (r["intervals"], r["violating"], r["startups"]) == (n, bad, startup)
        if r["verdict"] in ("home", "safe"):
            assert agent.safe_mean(i) is not None or r["verdict"] == "home"
            assert r["violationRiskBound"] <= MAX_VIOLATING_SHARE
        else:
            assert agent.safe_mean(i) is None
        if r["verdict"] == "unproven":
            assert r["violationRiskBound"] > MAX_VIOLATING_SHARE
        # The home is the best safe mean (this file has safe rungs).
        if r["verdict"] == "safe":
            assert r["meanReward"] <= report_mean(rungs, "home")
    assert main(["policy", "show", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"serve: home target {agent.rungs[agent.home()]:g}\n" in text
    assert "verdict" in text and "Q-values" not in text


def report_mean(rungs: list[dict[str, Any]], verdict: str) -> float:
    (mean,) = [r["meanReward"] for r in rungs if r["verdict"] == verdict]
    return float(mean)


def test_a_reader_that_goes_away_is_no_traceback() -> None:
    """`dunnage policy show FILE | head -1`: once head exits, writes fail with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    policy = REPO / "bench" / "results" / "autoscaling-policy-disaggregated.json"
    done = subprocess.run(
        [sys.executable, "-m", "dunnage.cli", "policy", "show", str(policy)],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


def test_policy_show_reads_a_saved_state_configmap_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a rung tipped the role over: the saved state shows where the role is now and how
    long it may not climb back."""
    agent = QAgent(rungs=ladder(4, 256), index=8)
    for rung in (7, 8):
        agent.visits[(rung, STEADY, VIOLATING)] = [1, 1, 1, 1]
    for _ in range(CLEAN):  # 8 is the home: the best safe mean
        agent.record(7, 1.0)
        agent.record(8, 2.0)
    intervals = Intervals(agent)
    assert [intervals.play(0.5), intervals.play(0.5)] == ["stay", "down"]
    doc = intervals.source.export(None, key="k", metric="concurrency")
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "chat-learned-state"},
        "data": {"policy.json": json.dumps(doc)},
    }
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(config_map)))
    assert main(["policy", "show", "-", "--q-values"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("ConfigMap chat-learned-state key policy.json: mode -")
    rungs = ladder(4, 256)
    assert (
        f"serve: home target {rungs[8]:g}, now {rungs[7]:g}; not back up to {rungs[8]:g} "
        f"for {CLIMB_COOLDOWN_DECISIONS - 1} more decisions" in text
    )
    assert "saved online state: decisions 2" in text and "Q-values" in text

    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(config_map)))
    assert main(["policy", "show", "-", "--key", "other.json"]) == 2
    assert "ConfigMap chat-learned-state has no key 'other.json'" in capsys.readouterr().err
    doc["online"]["roles"]["serve"]["rung"] = 99
    config_map["data"]["policy.json"] = json.dumps(doc)
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(config_map)))
    assert main(["policy", "show", "-"]) == 2
    err = capsys.readouterr().err
    assert "ConfigMap chat-learned-state key policy.json: online: malformed" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("{"))
    assert main(["policy", "show", "-"]) == 2
    assert "stdin: not JSON" in capsys.readouterr().err


def test_a_saved_state_keeps_the_initial_policys_provenance_without_its_training_log() -> None:
    model = LearnedModel.load(BENCH_POLICY / "autoscaling-policy-aggregated.json")
    assert model.training["log"]
    source = learned_policy(model).source
    assert isinstance(source, LearnedTargets)
    doc = source.export(model, key="k", metric=model.metric)
    assert doc["training"] == {k: v for k, v in model.training.items() if k != "log"}
    assert doc["profile"] == model.profile and doc["mode"] == model.mode
    assert len(json.dumps(doc)) < 20_000
