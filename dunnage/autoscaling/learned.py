"""The learned policy: per role, tabular Q-learning over the KPA concurrency target.

Following Schuler, Jamil and Kühl (CCGrid 2021), an agent per role moves the concurrency target
along a ladder of values; the KPA decider (:mod:`dunnage.autoscaling.kpa`) then scales with that
target exactly as it would with a static one.

- **Ladder**: geometric targets between the role's bounds (ratio
  ``LearningSettings.ladder_ratio``, by default 2^(1/3): about +26% a rung).
- **State**: (rung of the current target, load trend, latency band). The load trend compares
  the role's request rate over the last decision interval with the interval before: ``rising``
  (+10% or more), ``falling`` (-10% or more) or ``steady``; a trend, not a level, so that a
  policy trained at one load plays at another. The band comes from the role's SLO
  attainment over the last decision interval: ``ok`` (>= goal + half the remaining margin, 0.95
  for a 0.9 goal), ``tight`` (>= goal) or ``violating``. Each role is judged on its own latency
  (:func:`~dunnage.autoscaling.types.role_slo`): ``serve`` on TTFT and TPOT; in P/D prefill on
  its time to the end of the prompt and decode on its time from the KV arrival to the first
  token and on TPOT, so neither is charged with queueing its peer caused.
- **Actions**: move down two rungs, down one, stay, or up one (bounded moves: one decision never
  jumps far from a known target, and climbing is slower than falling back).
- **Reward** per decision interval: the role's goodput (requests meeting its objectives per
  second) per replica-hour of the role, divided by a per-role scale fixed in the first interval, minus
  ``slo_penalty`` times the attainment shortfall relative to the goal.
- **Training** (offline, :func:`train`): episodes on random windows of a trace in the simulator;
  one role learns per episode, in turn, while the others play their best targets so far; the
  learner starts near its best rung so far, or at a contender for it (a rung whose mean reward
  is higher but whose intervals are too few to show it safe) or one of its least-visited rungs
  (exploring starts), every move of a state is tried once, then epsilon-greedy with epsilon
  decaying from 0.5 to 0.05; learning rate 1/(visits+1)^0.6 (at least 0.1).
- **Home rung**: a role starts at the rung whose intervals earned the best mean reward. An
  interval is charged to the rung in force if the fleet started at that rung or the rung was
  chosen after two healthy decisions in a row; when such an interval ends violating, the
  intervals until the role is healthy again are charged to that rung too, whatever rung is in
  force meanwhile (a target pays for the collapse it led to and the recovery from it, not
  for another's); no interval during which a peer role violated its SLO is charged. A rung
  qualifies when its intervals show with 90% confidence that at most 10% of intervals at it
  end violating the SLO, and no lower rung surely exceeds that. A run's first two intervals
  (its start-up) count towards a rung's violations, not towards its mean reward.
- **Online refinement**: the same updates from live metrics with a small learning rate; the
  greedy move only considers actions tried before in that state and, while the SLO holds,
  leaves a rung only for one whose charged intervals earned more (a lower one: clearly more,
  by ``STAY_MARGIN``); a violation is answered only once it recurs (another among the last
  three decisions), and only by a lower target; the rung that tipped the role over is not
  climbed back to for 15 decisions; exploration is bounded: a healthy role tries, with
  probability ``exploration_rate``, a move one rung *down* (a lower target means more
  replicas), never up, so exploring cannot starve production; the move is a probe, undone at
  the next decision unless the probed rung's charged intervals then show it safe and clearly
  better (:meth:`QAgent.probe_paid_off`).

Attainment comes from counters of requests meeting each SLO when the metrics source gives them,
otherwise from TTFT/TPOT quantiles (:func:`attainment_from_quantiles`); the joint attainment is
estimated as the product of the two (Prometheus histograms give only the marginals).
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dunnage.autoscaling.kpa import METRICS, KPASettings
from dunnage.autoscaling.policy import Autoscaler, RoleBounds
from dunnage.autoscaling.types import (
    DECODE,
    PREFILL,
    SERVE,
    SLO,
    RoleObservation,
    attainment_from_quantiles,
    role_slo,
)
from dunnage.errors import InputError

FORMAT = "dunnage.io/learned-autoscaling-policy"
FORMAT_VERSION = 3
# 1: states without the load trend (read as the same in every trend); 2: rungRewards without
# the start-up count (their means are over every interval)

# What reading a hand-edited JSON document (a policy file, a saved state) can raise.
MALFORMED = (AttributeError, IndexError, KeyError, OverflowError, TypeError, ValueError)

OK, TIGHT, VIOLATING = 0, 1, 2
BANDS = ("ok", "tight", "violating")
FALLING, STEADY, RISING = 0, 1, 2
LOADS = ("falling", "steady", "rising")
# A change of the request rate between two decision intervals that counts as a trend: about
# 0.4 of a rung's worth of replicas (a rung is +26%), well above the sampling noise of a fleet's
# request rate over two minutes.
LOAD_STEP = 0.1
# (rung, load trend, latency band)
State = tuple[int, int, int]
# Moves in rungs: falling back is faster than climbing (a target too high risks SLO
# violations and KPA oscillations; one too low only costs replicas).
MOVES = (-2, -1, 0, 1)
ACTIONS = ("down2", "down", "stay", "up")
DOWN2, DOWN, STAY, UP = 0, 1, 2, 3
# The home rung's evidence: rungs need this many charged intervals to be compared at all, and
# to be settled on, confidence that an interval at the rung ends violating the SLO at most this
# often (a one-sided Clopper-Pearson bound on the share of charged intervals that did: a rung
# beside a cliff can show 16 clean intervals at a 10% risk of collapse, and then the target is
# a gamble whatever its mean; with none violating it takes 22). An interval is charged to its
# rung only after this many healthy decisions in a row (a KPA limit cycle outlasts one
# interval: its period is about 150 s).
MIN_RUNG_INTERVALS = 10
MAX_VIOLATING_SHARE = 0.1
SAFETY_CONFIDENCE = 0.9
HEALTHY_BEFORE_RECORD = 2
# A run's first this-many decision intervals are its start-up: a fleet started at its steady-state
# size still settles through the KPA's first panic and stable windows, at a cost that depends on
# the target's neighbourhood more than on the target (in the benchmark's P/D training, prefill
# 1.01 earned 0.66 and 0.47 in its first and second intervals of a run, 1.08 after). Start-ups
# count towards a rung's violations, not its mean reward: exploring starts would charge that cost
# to the rungs they start at, and the rungs visited least are those started at most.
STARTUP_DECISIONS = 2
# Online, a violating decision moves the target down when another of the last this-many
# decisions (itself included) violated too.
RECURRENCE_DECISIONS = 4
# Online, a role does not climb back to a rung that tipped it into violating its SLO (a rung in
# force after healthy decisions) within this many decisions (30 minutes at the default
# interval): bursts minutes apart would catch it there again.
CLIMB_COOLDOWN_DECISIONS = 15
STAY_MARGIN = 0.1  # in reward units (1 = the first interval's goodput per replica-hour)

# Target ranges the ladders span unless bounds say otherwise. Prefill requests are short
# (tens of ms), so a prefill replica's useful concurrency is around 1 or below.
DEFAULT_TARGET_RANGE = {SERVE: (4.0, 256.0), DECODE: (4.0, 256.0), PREFILL: (0.1, 16.0)}
# On the rps metric (requests per second per replica): an H100 serving Llama-3.1-8B sustains
# about 16 conversation requests/s under the benchmark's SLOs (docs/benchmarks.md, side run 4).
DEFAULT_RPS_TARGET_RANGE = {SERVE: (1.0, 128.0), DECODE: (1.0, 128.0), PREFILL: (1.0, 128.0)}
LADDER_RATIO = 2 ** (1 / 3)
# Default training length. With 50 per role the benchmark's aggregated learner saw 38 intervals
# at 32, too few to tell a 4% risk of collapse from a 13% one (docs/benchmarks.md).
EPISODES_PER_ROLE = 100


def episodes_or_default(episodes: int | None, roles: Sequence[str]) -> int:
    """``--episodes`` as given, else the default per role."""
    if episodes is None:
        return EPISODES_PER_ROLE * len(roles)
    if episodes < 1:
        raise InputError("must be at least 1", obj="--episodes")
    return episodes


@dataclass(frozen=True)
class LearningSettings:
    decision_interval: float = 120.0  # seconds between target moves
    exploration_rate: float = 0.05  # online; only downward moves are explored
    learning_rate: float = 0.1  # online
    discount: float = 0.3
    slo_penalty: float = 10.0
    ladder_ratio: float = LADDER_RATIO  # between neighbouring rungs of a fresh agent's ladder

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ladder(lo: float, hi: float, ratio: float = LADDER_RATIO) -> list[float]:
    """Geometric rungs from ``lo`` to ``hi`` (both included), 3 significant digits."""
    if not (0 < lo <= hi) or not ratio > 1:
        raise ValueError("need 0 < lo <= hi and ratio > 1")
    rungs: list[float] = []
    x = lo
    while x < hi * (1 - 1e-9):
        value = float(f"{x:.3g}")
        if not rungs or value > rungs[-1]:
            rungs.append(value)
        x *= ratio
    if not rungs or hi > rungs[-1]:
        rungs.append(float(hi))
    return rungs


def load_of(rate: float, previous: float | None) -> int:
    """The load trend of an interval whose mean request rate was ``rate``, after one with
    ``previous`` (None: no interval before it)."""
    if previous is None or previous <= 0:
        return STEADY
    if rate >= previous * (1 + LOAD_STEP):
        return RISING
    if rate * (1 + LOAD_STEP) <= previous:
        return FALLING
    return STEADY


def band_of(attainment: float, goal: float) -> int:
    if attainment < goal:
        return VIOLATING
    if attainment < goal + (1 - goal) / 2:
        return TIGHT
    return OK


@dataclass
class QAgent:
    """Q-table over (rung, load trend, latency band) x moves for one role."""

    rungs: list[float]
    index: int = 0
    q: dict[State, list[float]] = field(default_factory=dict)
    visits: dict[State, list[int]] = field(default_factory=dict)
    reward_scale: float | None = None
    # Per rung: [reward sum of the intervals after a run's start-up, intervals, intervals that
    # ended violating the SLO, start-up intervals].
    rung_rewards: dict[int, list[float]] = field(default_factory=dict)

    def record(
        self, rung: int, reward: float, violated: bool = False, *, startup: bool = False
    ) -> None:
        """Charge an interval to ``rung``. A start-up interval (one of a run's first
        :data:`STARTUP_DECISIONS`) counts towards the rung's violations, not its mean reward."""
        stats = self.rung_rewards.setdefault(rung, [0.0, 0.0, 0.0, 0.0])
        stats[0] += 0.0 if startup else reward
        stats[1] += 1
        stats[2] += 1 if violated else 0
        stats[3] += 1 if startup else 0

    def values(self, state: State) -> list[float]:
        return self.q.setdefault(state, [0.0] * len(MOVES))

    def counts(self, state: State) -> list[int]:
        return self.visits.setdefault(state, [0] * len(MOVES))

    def allowed(self, index: int) -> list[int]:
        """Moves that change the rung (or stay); at the ends, moves past them are not offered."""
        top = len(self.rungs) - 1
        return [a for a, d in enumerate(MOVES) if d == 0 or 0 <= index + d <= top]

    def greedy(self, state: State) -> int:
        """Best action among those tried in ``state``. In a state never tried: move down when
        the SLO is being violated (the safe direction), else stay."""
        q, n = self.values(state), self.counts(state)
        tried = [a for a in self.allowed(state[0]) if n[a] > 0]
        if not tried:
            return DOWN if state[2] == VIOLATING and state[0] > 0 else STAY
        best = max(tried, key=lambda a: (q[a], a == STAY))
        # Hysteresis: leave a rung where staying was tried only for a clear gain, so estimates
        # a few hundredths apart do not walk the target about.
        if STAY in tried and best != STAY and q[best] - q[STAY] < STAY_MARGIN:
            return STAY
        return best

    def choose(
        self,
        state: State,
        epsilon: float,
        rng: random.Random,
        *,
        online: bool,
        violated_recently: bool = False,
    ) -> tuple[int, bool]:
        """Epsilon-greedy; online exploration only tries moving down. Offline (training), a
        learning role tries every move of a state once before trusting the greedy one.

        Online, a violation is answered only once it recurs (``violated_recently``: one of
        the last :data:`RECURRENCE_DECISIONS` - 1 decisions saw one too), and then by a lower
        target (the greedy move if it goes down, else one rung): the KPA's panic mode answers
        a burst within seconds, while a target move lands on a fleet that is still scaling and
        turns a transient into a limit cycle. Recurring, not lasting: bursts a few minutes
        apart violate every other interval and sink the attainment just the same."""
        if online and state[2] == VIOLATING:
            if not violated_recently or state[0] == 0:
                return STAY, False
            action = self.greedy(state)
            return (action if MOVES[action] < 0 else DOWN), False
        if not online and epsilon > 0:
            counts = self.counts(state)
            untried = [a for a in self.allowed(state[0]) if counts[a] == 0]
            if untried:
                return rng.choice(untried), True
        if rng.random() < epsilon:
            if online:
                if state[0] > 0:
                    return DOWN, True
            else:
                return rng.choice(self.allowed(state[0])), True
        action = self.greedy(state)
        # While healthy, leave a rung only for one its charged intervals show to be better
        # (greedy moves stay on the ladder).
        if online and action != STAY and not self.worth_moving(state[0], state[0] + MOVES[action]):
            return STAY, False
        return action, False

    def worth_moving(self, src: int, dst: int) -> bool:
        """Whether a healthy role should leave rung ``src`` for ``dst`` online: ``src`` has no
        safe mean, or ``dst``'s beats it, clearly (by :data:`STAY_MARGIN`) when ``dst`` is lower.
        A Q-value can rest on one or two samples, a rung's mean on many; and a role meeting its
        SLO takes on more replicas only for a clear gain, because one live interval (a ramp's
        start-up, say) can move a mean by a few hundredths."""
        here, there = self.safe_mean(src), self.safe_mean(dst)
        margin = STAY_MARGIN if dst < src else 0.0
        return here is None or (there is not None and there > here + margin)

    def probe_paid_off(self, left: int, probed: int) -> bool:
        """Whether a role keeps the rung ``probed`` an exploring move took it to from ``left``:
        only when the probed rung's charged intervals show a safe mean that clearly (by
        :data:`STAY_MARGIN`) beats ``left``'s, or ``left`` has none. Without that evidence the
        role goes back: exploration only goes down, so a move kept on no evidence would lower
        the target for good."""
        here, there = self.safe_mean(left), self.safe_mean(probed)
        return there is not None and (here is None or there > here + STAY_MARGIN)

    def learn(
        self,
        state: State,
        action: int,
        reward: float,
        nxt: State,
        alpha: float | None,
        gamma: float,
    ) -> None:
        q = self.values(state)
        n = self.counts(state)
        n[action] += 1
        if alpha is None:
            alpha = max(0.1, 1.0 / (n[action] + 1) ** 0.6)
        nq, nn = self.values(nxt), self.counts(nxt)
        tried = [nq[a] for a in self.allowed(nxt[0]) if nn[a] > 0]
        future = max(tried) if tried else q[action]
        q[action] += alpha * (reward + gamma * future - q[action])

    def home(self) -> int:
        """The rung to start from: the best mean reward of the intervals spent at a rung.

        Intervals are charged as :class:`LearnedTargets` records them: a target pays for the
        violations and oscillations it led to and the recovery from them, not for those
        another target or a peer role caused. Rungs qualify when their intervals show, with
        :data:`SAFETY_CONFIDENCE`, that at most :data:`MAX_VIOLATING_SHARE` of a rung's
        intervals end violating the SLO (a target that often tips the fleet into oscillation
        is a gamble, whatever its mean) and no lower rung surely exceeds that share (see
        :meth:`safe_mean`); if no rung qualifies, the best mean among those with enough intervals; without any, the
        rung where staying in the ``ok`` band is worth the most (tried twice, else once);
        without that, the current rung."""
        safe = [(i, m) for i in self.rung_rewards if (m := self.safe_mean(i)) is not None]
        known = [
            (i, m)
            for i, stats in self.rung_rewards.items()
            if stats[1] >= MIN_RUNG_INTERVALS and (m := _settled_mean(stats)) is not None
        ]
        if safe or known:
            return max(safe or known, key=lambda x: (x[1], -x[0]))[0]
        for least in (2, 1):
            tried = [s for s, n in self.visits.items() if s[2] == OK and n[STAY] >= least]
            if tried:
                return max(tried, key=lambda s: (self.q[s][STAY], -s[0]))[0]
        return self.index

    def safe_mean(self, rung: int) -> float | None:
        """The mean reward of the intervals charged to ``rung``, if they are enough and safe
        enough to choose it as a home (see :meth:`home`), else None. A rung is not safe while
        a lower one surely is not: a higher target leaves fewer replicas for the same load, so
        its risk of tipping the fleet over is no smaller (a training half can still show a
        clean run at a higher target, by the luck of the episodes that played it)."""
        if any(_surely_risky(stats) for i, stats in self.rung_rewards.items() if i < rung):
            return None
        return _safe_mean(self.rung_rewards.get(rung))

    def least_visited(self, rng: random.Random) -> int:
        """A rung among those with the fewest intervals so far (count-based exploration)."""
        counts = [0] * len(self.rungs)
        for (i, _, _), n in self.visits.items():
            counts[i] += sum(n)
        low = min(counts)
        return rng.choice([i for i, c in enumerate(counts) if c == low])

    def contenders(self) -> list[int]:
        """Rungs that could still replace the home rung: their mean reward beats the home's,
        but their intervals are too few to show the :meth:`home` safety bound, and neither
        they nor a lower rung surely violates it. Only more intervals at them can change the
        home; intervals elsewhere cannot (best-arm identification: sample the arms whose
        confidence intervals overlap the leader's)."""
        home = self.rung_rewards.get(self.home())
        home_mean = None if home is None else _settled_mean(home)
        if home_mean is None:
            return []
        lowest_risky = min(
            (i for i, stats in self.rung_rewards.items() if _surely_risky(stats)),
            default=len(self.rungs),
        )
        return sorted(
            i
            for i, stats in self.rung_rewards.items()
            if i < lowest_risky and (m := _settled_mean(stats)) is not None and m > home_mean
        )

    def exploring_start(self, rng: random.Random) -> int:
        """Where a learning run starts when it explores: half the time at the contender
        (:meth:`contenders`) with the fewest intervals, if there is one, else at one of the
        least-visited rungs."""
        contenders = self.contenders()
        if contenders and rng.random() < 0.5:
            fewest = min(self.rung_rewards[i][1] for i in contenders)
            return rng.choice([i for i in contenders if self.rung_rewards[i][1] == fewest])
        return self.least_visited(rng)

    def move(self, action: int) -> None:
        self.index = min(max(self.index + MOVES[action], 0), len(self.rungs) - 1)

    @property
    def target(self) -> float:
        return self.rungs[self.index]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rungs": self.rungs,
            "home": self.home(),
            "homeTarget": self.rungs[self.home()],
            "rewardScale": self.reward_scale,
            # [mean reward after start-ups, intervals, violating, start-up intervals]
            "rungRewards": {
                str(i): [round(total / max(1.0, n - startup), 6), int(n), int(bad), int(startup)]
                for i, (total, n, bad, startup) in self.rung_rewards.items()
            },
            "q": {_key(s): [round(v, 6) for v in vs] for s, vs in self.q.items()},
            "visits": {_key(s): list(ns) for s, ns in self.visits.items()},
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> QAgent:
        try:
            rungs = [float(x) for x in raw["rungs"]]
            agent = cls(rungs=rungs, index=int(raw.get("home", 0)))
            scale = raw.get("rewardScale")
            agent.reward_scale = None if scale is None else float(scale)
            for key, vs in (raw.get("q") or {}).items():
                for state in _states(key):
                    agent.q[state] = [float(v) for v in vs]
            for key, ns in (raw.get("visits") or {}).items():
                for state in _states(key):
                    agent.visits[state] = [int(n) for n in ns]
            for key, stats in (raw.get("rungRewards") or {}).items():
                # Version 2 files have no start-up count: their means are over every interval.
                mean, n, bad, startup = (*stats, 0) if len(stats) == 3 else stats
                settled = int(n) - int(startup)
                if settled < 0:
                    raise ValueError(f"rung {key}: more start-up intervals than intervals")
                agent.rung_rewards[int(key)] = [
                    float(mean) * settled,
                    float(int(n)),
                    float(int(bad)),
                    float(int(startup)),
                ]
        except MALFORMED as exc:
            raise InputError(f"{where}: malformed agent ({exc})") from None
        if not rungs or not 0 <= agent.index < len(rungs):
            raise InputError(f"{where}: home rung out of range")
        tables: list[tuple[State, list[float] | list[int]]] = [
            *agent.q.items(),
            *agent.visits.items(),
        ]
        for st, vs in tables:
            if len(vs) != len(MOVES) or not 0 <= st[0] < len(rungs):
                raise InputError(f"{where}: state {_key(st)} out of range")
        if any(not 0 <= i < len(rungs) for i in agent.rung_rewards):
            raise InputError(f"{where}: rungRewards: rung out of range")
        return agent


def _safe_mean(stats: Sequence[float] | None) -> float | None:
    """The mean reward of a rung's charged intervals after start-ups (``stats`` as
    :attr:`QAgent.rung_rewards` keeps them), if its intervals are at least
    :data:`MIN_RUNG_INTERVALS` and show with :data:`SAFETY_CONFIDENCE` that at most
    :data:`MAX_VIOLATING_SHARE` of them violate the SLO, else None."""
    if stats is None:
        return None
    _, n, bad, _ = stats
    if n < MIN_RUNG_INTERVALS or violation_risk_bound(int(bad), int(n)) > MAX_VIOLATING_SHARE:
        return None
    return _settled_mean(stats)


def _settled_mean(stats: Sequence[float]) -> float | None:
    """The mean reward of a rung's intervals after start-ups, None without any."""
    total, n, _, startup = stats
    return None if n <= startup else total / (n - startup)


def _surely_risky(stats: Sequence[float]) -> bool:
    """Whether a rung's intervals show with :data:`SAFETY_CONFIDENCE` that more than
    :data:`MAX_VIOLATING_SHARE` of intervals at it end violating the SLO."""
    _, n, bad, _ = stats
    return violation_risk_bound(int(bad), int(n), lower=True) > MAX_VIOLATING_SHARE


@functools.lru_cache(maxsize=4096)
def violation_risk_bound(violated: int, intervals: int, *, lower: bool = False) -> float:
    """A one-sided Clopper-Pearson bound, at :data:`SAFETY_CONFIDENCE`, on the chance that an
    interval ends violating the SLO, after ``violated`` of ``intervals`` did: the upper bound
    is the chance at which seeing at most ``violated`` is only ``1 - SAFETY_CONFIDENCE``
    likely, the lower one the chance at which seeing at least ``violated`` is."""
    if intervals <= 0:
        return 0.0 if lower else 1.0
    if lower and violated == 0:
        return 0.0
    if not lower and violated >= intervals:
        return 1.0
    tail = 1.0 - SAFETY_CONFIDENCE
    # Seeing at most k violations: the binomial CDF, in logs for long online runs. Seeing at
    # least k is 1 - CDF(k - 1). Both are monotone in p, so bisect.
    k = violated - 1 if lower else violated
    log_n = math.lgamma(intervals + 1)

    def at_most(p: float) -> float:
        log_p, log_q = math.log(p), math.log1p(-p)
        return sum(
            math.exp(
                log_n
                - math.lgamma(i + 1)
                - math.lgamma(intervals - i + 1)
                + i * log_p
                + (intervals - i) * log_q
            )
            for i in range(k + 1)
        )

    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        # Upper bound: the largest p with CDF(k) >= tail. Lower: the smallest p with
        # 1 - CDF(k - 1) >= tail, i.e. CDF(k - 1) <= 1 - tail.
        if at_most(mid) > (1 - tail if lower else tail):
            lo = mid
        else:
            hi = mid
    return hi if not lower else lo


def _key(state: State) -> str:
    i, load, band = state
    return f"{i},{LOADS[load]},{BANDS[band]}"


def _states(key: str) -> list[State]:
    """The states a policy file's key names: ``rung,load,band``, or a version-1 ``rung,band``
    (learned without the load trend: the same in every trend)."""
    parts = key.split(",")
    if len(parts) == 2:
        return [(int(parts[0]), load, BANDS.index(parts[1])) for load in range(len(LOADS))]
    i, load, band = parts
    return [(int(i), LOADS.index(load), BANDS.index(band))]


@dataclass
class _Epoch:
    completed: int = 0
    ttft_ok: int = 0
    tpot_ok: int = 0
    counted: bool = False  # counters seen (else quantiles)
    ttft_att: list[float] = field(default_factory=list)
    tpot_att: list[float] = field(default_factory=list)
    replica_seconds: float = 0.0
    requests: float = 0.0  # request rate x seconds
    seconds: float = 0.0

    def add(self, obs: RoleObservation, dt: float, own: SLO) -> None:
        """One metrics sample covering the last ``dt`` seconds, judged by the role's SLO."""
        self.seconds += dt
        self.replica_seconds += obs.replicas * dt
        self.requests += obs.request_rate * dt
        self.completed += obs.completed
        if obs.ttft_ok is not None and obs.tpot_ok is not None:
            self.counted = True
            self.ttft_ok += obs.ttft_ok
            self.tpot_ok += obs.tpot_ok
            return
        a = attainment_from_quantiles(obs.ttft_quantiles, own.ttft)
        b = 1.0 if math.isinf(own.tpot) else attainment_from_quantiles(obs.tpot_quantiles, own.tpot)
        if a is not None:
            self.ttft_att.append(a)
        if b is not None:
            self.tpot_att.append(b)

    def stats(self) -> tuple[float, float] | None:
        """(goodput per replica-hour, attainment): the attainment is the joint one, estimated
        as the product of the two SLOs' (Prometheus histograms give only the marginals)."""
        if self.completed == 0 or self.seconds <= 0 or self.replica_seconds <= 0:
            return None
        if self.counted:
            ttft = self.ttft_ok / self.completed
            tpot = self.tpot_ok / self.completed
        elif self.ttft_att and self.tpot_att:
            ttft = sum(self.ttft_att) / len(self.ttft_att)
            tpot = sum(self.tpot_att) / len(self.tpot_att)
        else:
            return None
        joint = ttft * tpot
        return self.completed * joint / (self.replica_seconds / 3600.0), joint


class LearnedTargets:
    """A :class:`~dunnage.autoscaling.policy.TargetSource` that moves targets by Q-learning."""

    kind = "learned"

    def __init__(
        self,
        agents: Mapping[str, QAgent],
        slo: SLO,
        settings: LearningSettings | None = None,
        *,
        learn: bool = True,
        epsilon: float | None = None,
        online: bool = True,
        seed: int = 0,
        learners: Sequence[str] | None = None,
    ) -> None:
        self.agents = dict(agents)
        # Roles that learn and explore; the others play their greedy moves (training learns one
        # role at a time, so one role's exploring does not blur what another learns).
        self.learners = set(self.agents if learners is None else learners)
        self.slo = slo
        self._own_slo = {role: role_slo(slo, role) for role in self.agents}
        self.settings = settings or LearningSettings()
        self.learn = learn
        self.online = online
        self.epsilon = self.settings.exploration_rate if epsilon is None else epsilon
        self.rng = random.Random(seed)
        self._epoch = {role: _Epoch() for role in self.agents}
        self._last_obs: float | None = None
        self._last_decision: float | None = None
        self._prev: dict[str, tuple[State, int]] = {}
        # Each role's mean request rate over the last decision interval (for the load trend).
        self._rate: dict[str, float] = {}
        # Per role, the decision count at which each rung last tipped the role into violating.
        self._decisions = 0
        self._tipped_at: dict[str, dict[int, int]] = {role: {} for role in self.agents}
        # Whether each of the role's last few decisions saw a violation (newest last).
        self._violations: dict[str, deque[bool]] = {
            role: deque(maxlen=RECURRENCE_DECISIONS - 1) for role in self.agents
        }
        # Decisions in a row taken from a healthy state. A fleet starts sized for its starting
        # targets, so its start counts as settled: how a target rides out a start-up is its own
        # doing, and the metastable targets are the ones that tip over there.
        self._healthy = dict.fromkeys(self.agents, HEALTHY_BEFORE_RECORD)
        # The rung whose charged interval ended violating, while the role recovers from it.
        self._blamed: dict[str, int] = {}
        # Online, the rung an exploring move left, for one decision: the move is a probe.
        self._probed_from: dict[str, int] = {}
        self.history: list[dict[str, Any]] = []

    def target(self, role: str) -> float:
        return self.agents[role].target

    def observe(self, now: float, observations: Mapping[str, RoleObservation]) -> None:
        dt = 0.0 if self._last_obs is None else max(0.0, now - self._last_obs)
        self._last_obs = now
        if self._last_decision is None:
            self._last_decision = now
        for role, obs in observations.items():
            ep = self._epoch.get(role)
            if ep is None:
                continue
            ep.add(obs, dt, self._own_slo[role])

    def update(self, now: float) -> Mapping[str, Mapping[str, Any]]:
        if (
            self._last_decision is None
            or now - self._last_decision < self.settings.decision_interval
        ):
            return {}
        self._last_decision = now
        self._decisions += 1
        s = self.settings
        out: dict[str, Mapping[str, Any]] = {}
        all_stats = {role: ep.stats() for role, ep in self._epoch.items()}
        loads: dict[str, int] = {}
        for role, ep in self._epoch.items():
            rate = ep.requests / ep.seconds if ep.seconds > 0 else 0.0
            loads[role] = load_of(rate, self._rate.get(role))
            self._rate[role] = rate
        self._epoch = {role: _Epoch() for role in self.agents}
        peers_violating = {
            role: any(
                st is not None and band_of(st[1], self.slo.attainment) == VIOLATING
                for other, st in all_stats.items()
                if other != role
            )
            for role in self.agents
        }
        for role, agent in self.agents.items():
            stats = all_stats[role]
            if stats is None:
                self._prev.pop(role, None)
                self._violations[role].clear()
                self._healthy[role] = 0
                continue
            per_hour, own = stats
            if agent.reward_scale is None and per_hour > 0:
                agent.reward_scale = per_hour
            scale = agent.reward_scale or 1.0
            shortfall = max(0.0, self.slo.attainment - own) / self.slo.attainment
            reward = per_hour / scale - s.slo_penalty * shortfall
            state = (agent.index, loads[role], band_of(own, self.slo.attainment))
            prev = self._prev.get(role)
            learner = role in self.learners
            # Charge the interval to the rung in force during it, if the role had been healthy
            # for a while when that rung was chosen and its peers stayed healthy: a flood from a
            # collapsed prefill pool is not the rung's doing, and the recovery from a collapse
            # is charged to the rung that collapsed, whatever rung is in force meanwhile.
            violated = state[2] == VIOLATING
            if self.learn and learner and not peers_violating[role]:
                startup = self._decisions <= STARTUP_DECISIONS
                if self._healthy.get(role, 0) >= HEALTHY_BEFORE_RECORD:
                    agent.record(agent.index, reward, violated, startup=startup)
                    self._blamed.pop(role, None)
                    if violated:
                        self._blamed[role] = agent.index
                elif role in self._blamed:
                    agent.record(self._blamed[role], reward, violated, startup=startup)
            if violated and self._healthy.get(role, 0) >= HEALTHY_BEFORE_RECORD:
                self._tipped_at[role][agent.index] = self._decisions
            self._healthy[role] = 0 if violated else self._healthy.get(role, 0) + 1
            if self.learn and learner and prev is not None:
                alpha = s.learning_rate if self.online else None
                agent.learn(prev[0], prev[1], reward, state, alpha, s.discount)
            epsilon = self.epsilon if learner else 0.0
            action, explored = agent.choose(
                state,
                epsilon,
                self.rng,
                online=self.online,
                violated_recently=any(self._violations[role]),
            )
            self._violations[role].append(violated)
            left = self._probed_from.pop(role, None)
            undone = False
            if (
                left == agent.index + 1
                and not violated
                and action == STAY
                and not agent.probe_paid_off(left, agent.index)
            ):
                # An exploring move probes the rung below for one interval, then the role
                # goes back unless the probe made the move worth it (as a greedy move down
                # would need): otherwise each probe would lower the target for good,
                # exploration going only down.
                action, undone = UP, True
            if self.online and MOVES[action] > 0:
                last = self._tipped_at[role].get(agent.index + MOVES[action])
                if last is not None and self._decisions - last < CLIMB_COOLDOWN_DECISIONS:
                    action, undone = STAY, False
            before = agent.target
            if self.online and explored:
                self._probed_from[role] = agent.index
            agent.move(action)
            self._prev[role] = (state, action)
            record = {
                "state": _key(state),
                "requestRate": round(self._rate[role], 3),
                "attainment": round(own, 4),
                "jointAttainment": round(own, 4),
                "goodputPerReplicaHour": round(per_hour, 2),
                "reward": round(reward, 4),
                "action": ACTIONS[action],
                "explored": explored,
                "probeUndone": undone,
                "targetBefore": before,
                "target": agent.target,
            }
            out[role] = record
            self.history.append({"time": now, "role": role, **record})
        return out

    def export(self, base: LearnedModel | None, *, key: str, metric: str) -> dict[str, Any]:
        """The agents as they are now, as a policy file (``dunnage policy train``'s format, so
        it can be another policy's initial policy too) with an ``online`` section: per role
        the rung it is at and what the learner remembers between decisions (the last state and
        move, still to be learned from; the last interval's request rate, for the load trend;
        recent violations; healthy decisions in a row; the rung blamed for a collapse; the
        rungs it may not climb back to yet; a probe in progress), and ``key``, what the state
        was learned under (the caller takes it over only then). ``base`` is the initial
        policy the state grew from (its provenance is kept, without its training log)."""
        model = LearnedModel(
            agents=self.agents,
            slo=self.slo,
            settings=self.settings,
            mode=base.mode if base else "",
            profile=base.profile if base else "",
            # The provenance without the per-episode log (most of a trained file's size; a
            # state is saved every decision).
            training={k: v for k, v in base.training.items() if k != "log"} if base else {},
            metric=metric,
            concurrency_limit=base.concurrency_limit if base else None,
        )
        doc = model.to_dict()
        roles: dict[str, Any] = {}
        for role, agent in self.agents.items():
            prev = self._prev.get(role)
            roles[role] = {
                "rung": agent.index,
                "previous": None if prev is None else [_key(prev[0]), ACTIONS[prev[1]]],
                "requestRate": self._rate.get(role),
                "violations": list(self._violations[role]),
                "healthy": self._healthy.get(role, 0),
                "blamed": self._blamed.get(role),
                "tippedAt": {str(i): n for i, n in sorted(self._tipped_at[role].items())},
                "probedFrom": self._probed_from.get(role),
            }
        doc["online"] = {"key": key, "decisions": self._decisions, "roles": roles}
        return doc

    def restore(self, raw: Mapping[str, Any], where: str) -> dict[str, float]:
        """Take over a state :meth:`export` wrote, for every role whose ladder is this one's:
        its tables and rung means, the rung it was at and the learner's memory between
        decisions, so that it goes on as the learner that wrote it would have. All or nothing:
        a malformed state raises :class:`InputError` naming ``where`` and changes nothing.
        Returns the restored roles' targets."""
        saved = LearnedModel.from_dict(raw, where)
        online = raw.get("online")
        if not isinstance(online, Mapping):
            raise InputError(f"{where}: online: missing (not a saved online state)")
        taken: dict[str, tuple[QAgent, _Memory]] = {}
        try:
            decisions = int(online.get("decisions", 0))
            states = online.get("roles") or {}
            for role, agent in self.agents.items():
                old = saved.agents.get(role)
                if old is not None and old.rungs == agent.rungs:
                    taken[role] = (old, _Memory.parse(states.get(role) or {}, old))
        except MALFORMED as exc:
            raise InputError(f"{where}: online.roles: malformed ({exc!r})") from None
        for role, (old, memory) in taken.items():
            agent = self.agents[role]
            agent.q, agent.visits, agent.rung_rewards = old.q, old.visits, old.rung_rewards
            agent.reward_scale = old.reward_scale
            agent.index = memory.rung
            _put(self._prev, role, memory.previous)
            _put(self._rate, role, memory.request_rate)
            _put(self._blamed, role, memory.blamed)
            _put(self._probed_from, role, memory.probed_from)
            self._violations[role].clear()
            self._violations[role].extend(memory.violations)
            self._healthy[role] = memory.healthy
            self._tipped_at[role] = memory.tipped_at
        if taken:
            self._decisions = max(self._decisions, decisions)
        return {role: self.agents[role].target for role in taken}


def _put(table: dict[str, Any], role: str, value: Any) -> None:
    """``table[role] = value``, or no entry for ``role`` when ``value`` is None."""
    if value is None:
        table.pop(role, None)
    else:
        table[role] = value


@dataclass(frozen=True)
class _Memory:
    """What :class:`LearnedTargets` remembers of a role between decisions (see ``export``)."""

    rung: int
    previous: tuple[State, int] | None
    request_rate: float | None
    violations: tuple[bool, ...]
    healthy: int
    blamed: int | None
    tipped_at: dict[int, int]
    probed_from: int | None

    @classmethod
    def parse(cls, raw: Mapping[str, Any], agent: QAgent) -> _Memory:
        """Raises one of :data:`MALFORMED` on anything :meth:`LearnedTargets.export` would
        not have written for ``agent``'s ladder."""
        top = len(agent.rungs) - 1

        def rung(value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise ValueError(f"rung {value!r} out of range")
            return value

        def optional(value: Any, convert: Callable[[Any], Any]) -> Any:
            return None if value is None else convert(value)

        previous = raw.get("previous")
        if previous is not None:
            (state,) = _states(str(previous[0]))
            previous = (state, ACTIONS.index(str(previous[1])))
            rung(state[0])
        rate = optional(raw.get("requestRate"), float)
        if rate is not None and not (math.isfinite(rate) and rate >= 0):
            raise ValueError(f"requestRate {rate!r}")
        violations = raw.get("violations") or []
        if not all(isinstance(v, bool) for v in violations):
            raise ValueError("violations: must be true or false")
        return cls(
            rung=rung(raw.get("rung", agent.home())),
            previous=previous,
            request_rate=rate,
            violations=tuple(violations)[-(RECURRENCE_DECISIONS - 1) :],
            healthy=max(0, int(raw.get("healthy", HEALTHY_BEFORE_RECORD))),
            blamed=optional(raw.get("blamed"), rung),
            tipped_at={rung(int(i)): int(n) for i, n in (raw.get("tippedAt") or {}).items()},
            probed_from=optional(raw.get("probedFrom"), rung),
        )


# --- the policy file ---------------------------------------------------------------------------


class LimitMismatch(ValueError):
    """A KPA setting (``setting``: a :class:`KPASettings` field) contradicts the per-replica
    limit a learned policy was trained under."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass
class LearnedModel:
    agents: dict[str, QAgent]
    slo: SLO
    settings: LearningSettings
    mode: str
    profile: str
    training: dict[str, Any] = field(default_factory=dict)
    # The KPA metric the targets are in (concurrency, or rps: requests/s per replica).
    metric: str = "concurrency"
    # The fixed per-replica limit on requests in flight the policy was trained under
    # (KPASettings.fixed_limit); None: Knative's limit, which follows the target.
    concurrency_limit: int | None = None

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.agents)

    def kpa_settings(self) -> KPASettings:
        """Knative's settings on the policy's metric, with the limit it was trained under."""
        return self.played_under(KPASettings(metric=self.metric))

    def played_under(self, kpa: KPASettings) -> KPASettings:
        """``kpa`` with each replica's limit as the policy was trained: fixed at its
        ``concurrency_limit``, or following the target. Raises :class:`LimitMismatch` when
        ``kpa`` fixes another limit (its targets were learned for this one)."""
        if self.concurrency_limit is None:
            if kpa.fixed_concurrency_limit is not None:
                raise LimitMismatch(
                    "fixed_limit", "the policy was trained with the limit following the target"
                )
            return kpa
        if kpa.fixed_limit and kpa.container_concurrency != self.concurrency_limit:
            raise LimitMismatch(
                "container_concurrency",
                f"the policy was trained with each replica's limit fixed at "
                f"{self.concurrency_limit}",
            )
        return kpa.with_(fixed_limit=True, container_concurrency=self.concurrency_limit)

    def home_targets(self) -> dict[str, float]:
        return {role: a.rungs[a.home()] for role, a in self.agents.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "mode": self.mode,
            "profile": self.profile,
            "metric": self.metric,
            **(
                {}
                if self.concurrency_limit is None
                else {"concurrencyLimit": self.concurrency_limit}
            ),
            "slo": self.slo.to_dict(),
            "learning": self.settings.to_dict(),
            "targets": self.home_targets(),
            "roles": {role: a.to_dict() for role, a in self.agents.items()},
            "training": self.training,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> LearnedModel:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise InputError(f"{where}: not a learned policy file (format must be {FORMAT})")
        if raw.get("version") not in (1, 2, FORMAT_VERSION):
            raise InputError(f"{where}: version: unsupported {raw.get('version')!r}")
        try:
            slo = SLO(**{k: float(v) for k, v in raw["slo"].items()})
            settings = LearningSettings(**raw.get("learning", {}))
            roles = raw["roles"]
        except MALFORMED as exc:
            raise InputError(f"{where}: malformed ({exc})") from None
        if not isinstance(roles, dict) or not roles:
            raise InputError(f"{where}: roles: must name at least one role")
        metric = raw.get("metric", "concurrency")  # files from before the rps metric
        if metric not in METRICS:
            raise InputError(f"{where}: metric: must be one of {', '.join(METRICS)}")
        limit = raw.get("concurrencyLimit")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InputError(f"{where}: concurrencyLimit: must be a positive integer")
        agents = {
            str(role): QAgent.from_dict(body, f"{where}: roles.{role}")
            for role, body in roles.items()
        }
        return cls(
            agents=agents,
            slo=slo,
            settings=settings,
            mode=str(raw.get("mode", "")),
            profile=str(raw.get("profile", "")),
            training=dict(raw.get("training") or {}),
            metric=metric,
            concurrency_limit=limit,
        )

    @classmethod
    def load(cls, path: str | Path) -> LearnedModel:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{path}: no such file", obj="--policy")
        try:
            raw = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}: not JSON ({exc.msg} at line {exc.lineno})", obj="--policy"
            ) from None
        return cls.from_dict(raw, str(path))


def describe(model: LearnedModel, online: Any = None) -> dict[str, Any]:
    """What a policy file, or a saved online state (its ``online`` section as ``online``),
    says per role, for ``dunnage policy show``: the home target and why, as the evidence of
    each rung that has charged intervals (``verdict``: ``home``; ``safe``; ``too few``
    intervals to judge; ``unproven``, when its intervals cannot show with 90% confidence that
    at most 10% of intervals there violate the SLO; ``surely risky``, when they show more;
    ``above a surely risky rung``) and, for a saved state,
    where each role is now, the rungs it may not climb back to yet (with the decisions left)
    and a probe in progress. Raises InputError on a malformed ``online``."""
    states: Mapping[str, Any] = {}
    decisions = 0
    if online is not None:
        try:
            decisions = int(online.get("decisions", 0))
            states = online.get("roles") or {}
            memories = {
                role: _Memory.parse(states.get(role) or {}, agent)
                for role, agent in model.agents.items()
            }
        except MALFORMED as exc:
            raise InputError(f"online: malformed ({exc!r})") from None
    roles: dict[str, Any] = {}
    for role, agent in model.agents.items():
        home = agent.home()
        rungs = []
        for i in sorted(agent.rung_rewards):
            stats = agent.rung_rewards[i]
            _, n, bad, startup = stats
            if i == home:
                verdict = "home"
            elif agent.safe_mean(i) is not None:
                verdict = "safe"
            elif _surely_risky(stats):
                verdict = "surely risky"
            elif n < MIN_RUNG_INTERVALS:
                verdict = "too few"
            elif _safe_mean(stats) is not None:
                verdict = "above a surely risky rung"
            else:
                verdict = "unproven"
            rungs.append(
                {
                    "target": agent.rungs[i],
                    "intervals": int(n),
                    "startups": int(startup),
                    "violating": int(bad),
                    "meanReward": _settled_mean(stats),
                    "violationRiskBound": round(violation_risk_bound(int(bad), int(n)), 4),
                    "verdict": verdict,
                }
            )
        entry: dict[str, Any] = {"home": agent.rungs[home], "rungs": rungs}
        if online is not None:
            memory = memories[role]
            entry["now"] = agent.rungs[memory.rung]
            entry["noClimbTo"] = {
                f"{agent.rungs[i]:g}": CLIMB_COOLDOWN_DECISIONS - (decisions - at)
                for i, at in sorted(memory.tipped_at.items())
                if decisions - at < CLIMB_COOLDOWN_DECISIONS
            }
            if memory.probed_from is not None:
                entry["probeFrom"] = agent.rungs[memory.probed_from]
        roles[role] = entry
    out: dict[str, Any] = {
        "mode": model.mode,
        "profile": model.profile,
        "metric": model.metric,
        **(
            {} if model.concurrency_limit is None else {"concurrencyLimit": model.concurrency_limit}
        ),
        "slo": model.slo.to_dict(),
        "roles": roles,
    }
    if online is not None:
        out["online"] = {
            k: online.get(k)
            for k in ("decisions", "modelService", "autoscalingPolicy", "savedTime")
            if online.get(k) is not None
        }
    return out


def fresh_agents(
    roles: Sequence[str],
    bounds: Mapping[str, RoleBounds] | None = None,
    start: float | None = None,
    metric: str = "concurrency",
    ratio: float = LADDER_RATIO,
) -> dict[str, QAgent]:
    ranges = DEFAULT_RPS_TARGET_RANGE if metric == "rps" else DEFAULT_TARGET_RANGE
    agents = {}
    for role in roles:
        lo, hi = ranges.get(role, (1.0, 256.0))
        b = (bounds or {}).get(role)
        if b is not None:
            lo, hi = max(lo, b.min_target), min(hi, b.max_target)
            if lo > hi:
                lo, hi = b.min_target, b.max_target
        rungs = ladder(lo, hi, ratio)
        index = len(rungs) // 2
        if start is not None:
            index = min(range(len(rungs)), key=lambda i: abs(math.log(rungs[i] / start)))
        agents[role] = QAgent(rungs=rungs, index=index)
    return agents


def learned_policy(
    model: LearnedModel,
    *,
    kpa: KPASettings | None = None,
    bounds: Mapping[str, RoleBounds] | None = None,
    learn: bool = True,
    seed: int = 0,
) -> Autoscaler:
    """A policy that starts every role at its learned home target and refines online. ``kpa``
    defaults to Knative's settings on the model's metric; it must be on that metric."""
    kpa = kpa or model.kpa_settings()
    if kpa.metric != model.metric:
        raise InputError(
            f"the policy's targets are on the {model.metric} metric, the KPA's on {kpa.metric}"
        )
    agents = {}
    for role, agent in model.agents.items():
        copy = QAgent.from_dict(agent.to_dict(), role)
        copy.index = agent.home()
        agents[role] = copy
    source = LearnedTargets(agents, model.slo, model.settings, learn=learn, online=True, seed=seed)
    return Autoscaler(tuple(agents), source, kpa, dict(bounds or {}), "learned")


def train(
    trace: Any,
    profile: Any,
    *,
    mode: str,
    slo: SLO,
    episodes: int,
    window: float = 900.0,
    settings: LearningSettings | None = None,
    kpa: KPASettings | None = None,
    bounds: Mapping[str, RoleBounds] | None = None,
    seed: int = 0,
    progress: Callable[[int, dict[str, Any]], None] | None = None,
) -> LearnedModel:
    """Offline Q-learning in the simulator on random ``window``-second slices of ``trace``."""
    from dunnage.autoscaling.types import roles_for
    from dunnage.sim.engine import simulate

    settings = settings or LearningSettings()
    if episodes < 1:
        raise InputError("must be at least 1", obj="--episodes")
    roles = roles_for(mode)
    kpa = kpa or KPASettings()
    agents = fresh_agents(roles, bounds, metric=kpa.metric, ratio=settings.ladder_ratio)
    rng = random.Random(seed)
    window = min(window, trace.duration)
    if window < 3 * settings.decision_interval:
        raise InputError(
            f"the training trace must cover at least 3 decision intervals "
            f"({3 * settings.decision_interval:g} s); it has {window:g} s",
            obj="--trace",
        )
    t0 = time.perf_counter()
    log: list[dict[str, Any]] = []
    for ep in range(episodes):
        start = rng.uniform(0.0, max(0.0, trace.duration - window))
        part = trace.window(start, start + window)
        # One role learns per episode, in turn; exploring starts for it (half the episodes at
        # a contender for its home or one of its least-visited rungs, half near its best rung
        # so far), the others start at their best rung.
        learner = roles[ep % len(roles)]
        for role, agent in agents.items():
            if role != learner:
                agent.index = agent.home()
            elif rng.random() < 0.5:
                agent.index = agent.exploring_start(rng)
            else:
                agent.index = min(max(agent.home() + rng.randint(-3, 3), 0), len(agent.rungs) - 1)
        epsilon = max(0.05, 0.5 * (1 - ep / max(1, episodes - 1)))
        source = LearnedTargets(
            agents,
            slo,
            settings,
            learn=True,
            epsilon=epsilon,
            online=False,
            seed=rng.randrange(2**31),
            learners=[learner],
        )
        policy = Autoscaler(roles, source, kpa, dict(bounds or {}), "learned")
        result = simulate(part, profile, policy, mode=mode, slo=slo, warmup=0.0)
        entry = {
            "episode": ep,
            "learner": learner,
            "start_s": round(start, 1),
            "epsilon": round(epsilon, 3),
            "goodput_per_gpu_hour": result.summary["goodput_per_gpu_hour"],
            "slo_attainment": result.summary["slo_attainment"],
            "home": {role: a.rungs[a.home()] for role, a in agents.items()},
        }
        log.append(entry)
        if progress is not None:
            progress(ep, entry)
    for agent in agents.values():
        agent.index = agent.home()
    return LearnedModel(
        agents=agents,
        slo=slo,
        settings=settings,
        mode=mode,
        profile=profile.name,
        training={
            "trace": trace.name,
            "episodes": episodes,
            "window_s": window,
            "seed": seed,
            "seconds": round(time.perf_counter() - t0, 1),
            "log": log,
        },
        metric=kpa.metric,
        concurrency_limit=kpa.fixed_concurrency_limit,
    )
