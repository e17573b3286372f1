"""The KPA decider against Knative's rules on scripted load steps.

Each script feeds one concurrency sample per second (Knative's 1 s buckets) and asks for a
decision every 2 s tick, as the autoscaler does; the expected counts are worked out by hand from
knative.dev/serving pkg/autoscaler/scaling/autoscaler.go (quoted in dunnage/autoscaling/kpa.py).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunnage.autoscaling.kpa import KPAResult, KPAScaler, KPASettings
from dunnage.autoscaling.policy import RoleBounds, kpa_policy, static_policy
from dunnage.autoscaling.types import RoleObservation

DEFAULT = KPASettings()


def run(
    scaler: KPAScaler,
    load: list[tuple[float, float]],
    ready: int | None = None,
    start: float = 0.0,
    follow: bool = False,
) -> list[tuple[float, KPAResult]]:
    """Feed (seconds, concurrency) segments; decide every tick. With ``follow`` the ready count
    becomes each decision at once (pods start instantly), else it stays ``ready``."""
    out = []
    t = start
    pods = ready or 1
    for seconds, conc in load:
        for _ in range(int(seconds)):
            t += 1.0
            scaler.record(t, conc)
            if round(t) % 2 == 0:
                res = scaler.scale(t, pods)
                out.append((t, res))
                if follow:
                    pods = res.desired
    return out


def test_knative_defaults() -> None:
    s = KPASettings()
    assert s.stable_window == 60 and s.panic_window == 6
    assert s.panic_threshold == 2.0
    assert s.max_scale_up_rate == 1000 and s.max_scale_down_rate == 2
    assert s.tick == 2 and s.scale_to_zero_grace == 30
    assert s.default_target == 70 and s.limit_for(70) == 100


def test_steady_load_asks_for_load_over_target() -> None:
    sc = KPAScaler(DEFAULT, 10)
    (_, last) = run(sc, [(120, 95)], ready=10)[-1]
    assert last.desired == 10 and not last.panicking
    assert last.stable == pytest.approx(95) and last.dspc == 10


def test_window_average_counts_only_buckets_since_the_first_sample() -> None:
    sc = KPAScaler(DEFAULT, 10)
    sc.record(1.0, 40)
    sc.record(2.0, 20)
    res = sc.scale(2.0, 3)
    assert res.stable == pytest.approx(30)  # two buckets, not 60
    assert res.desired == 3


def test_panic_entry_exit_and_no_scale_down_while_panicking() -> None:
    sc = KPAScaler(DEFAULT, 10)
    steps = run(sc, [(60, 100)], ready=10)
    assert steps[-1][1].desired == 10 and not steps[-1][1].panicking
    # A surge to 300: the 6 s panic window sees it first.
    surge = run(sc, [(6, 300)], ready=10, start=60)
    # The first tick of the surge: panic avg (100*5+300)/6 = 133 -> 14 pods; 14/10 < 2: calm.
    assert not surge[0][1].panicking
    # By t=66 the panic window is all 300: dppc 30, 30/10 >= 2 -> panic, desired 30.
    t_panic, res = surge[-1]
    assert res.panicking and res.dppc == 30 and res.desired == 30
    # The stable average is far lower; in panic the larger (panic) count wins.
    assert res.dspc == math.ceil((54 * 100 + 6 * 300) / 60 / 10)
    # Load falls back: no scale-down while panicking, for a whole stable window.
    after = run(sc, [(70, 100)], ready=30, start=66)
    calm_again = [r for t, r in after if t <= t_panic + 60]
    assert all(r.panicking and r.desired == 30 for _, r in [(0, x) for x in calm_again])
    # Panic ends once a stable window passed with no tick over the threshold (strictly after).
    t_last_over = t_panic  # ticks after 66 see dppc/ready = 10/30 < 2
    ended = [(t, r) for t, r in after if not r.panicking]
    assert ended and ended[0][0] == t_last_over + 62
    assert ended[0][1].desired == 15  # max(dspc, floor(30/2)): the scale-down rate limit


def test_panic_is_extended_while_over_threshold() -> None:
    sc = KPAScaler(DEFAULT, 10)
    run(sc, [(60, 20)], ready=2)
    steps = run(sc, [(120, 80)], ready=2, start=60)  # 8 pods wanted, 2 ready: ratio 4
    assert all(r.panicking for t, r in steps if t >= 64)
    # The decision ratchets to the panic count and never drops in panic.
    desired = [r.desired for t, r in steps if t >= 64]
    assert desired == sorted(desired) and desired[-1] == 8


def test_scale_down_is_limited_to_half_the_ready_pods_per_tick() -> None:
    sc = KPAScaler(DEFAULT, 10, initial_ready=0)
    run(sc, [(60, 1000)], ready=100)
    steps = run(sc, [(66, 0)], ready=100, start=60, follow=True)
    counts = [r.desired for _, r in steps]
    # Stable average falls slowly; each tick may at most halve the ready pods.
    for before, after in zip([100, *counts], counts, strict=False):
        assert after >= math.floor(before / 2)
    # At t=120 the window is empty (dspc 0) but 4 ready pods may only halve: 2, then 1; the
    # scale-to-zero grace then holds one pod.
    assert counts[-4:] == [2, 1, 1, 1]


def test_scale_up_rate_limit() -> None:
    slow = KPASettings(max_scale_up_rate=2.0, panic_threshold=100.0)  # no panic
    sc = KPAScaler(slow, 1)
    steps = run(sc, [(60, 100)], ready=4)
    assert steps[-1][1].desired == math.ceil(2.0 * 4)
    # With one ready pod (or none: Knative uses max(1, ready)) the cap is ceil(rate * 1).
    assert sc.scale(61, 0).desired == 2


def test_a_reading_too_large_to_count_in_pods_scales_up_at_the_rate_limit() -> None:
    """1e308 in flight over a target of 0.1 is more pods than a float holds (an overflow in
    ceil() before the per-pod ratio was capped); the decision is the rate limit's, in panic."""
    sc = KPAScaler(DEFAULT, 0.1)
    sc.record(1.0, 1e308)
    res = sc.scale(1.0, 3)
    assert (res.desired, res.panicking) == (math.ceil(DEFAULT.max_scale_up_rate * 3), True)


def test_scale_to_zero_after_the_grace_period() -> None:
    sc = KPAScaler(DEFAULT, 10, min_scale=0)
    run(sc, [(30, 5)], ready=1)
    steps = run(sc, [(200, 0)], ready=1, start=30)
    zero_from = next(t for t, r in steps if r.desired == 0)
    first_zero_decision = next(t for t, r in steps if r.dspc == 0)
    # The stable window must be empty of load first, then the grace period passes.
    assert first_zero_decision >= 30 + 60
    assert zero_from - first_zero_decision == pytest.approx(DEFAULT.scale_to_zero_grace, abs=2)
    # Traffic again: one pod is asked for at once.
    again = run(sc, [(2, 3)], ready=0, start=230)
    assert again[-1][1].desired >= 1


def test_a_role_at_zero_with_no_demand_stays_at_zero() -> None:
    """The grace keeps a pod that serves (Knative's active PodAutoscaler); with no ready pod
    and zero demand (what the activator reports) nothing is brought back."""
    sc = KPAScaler(DEFAULT, 10, min_scale=0)
    for t in range(1, 41):
        sc.record(t, 0.0)
        assert sc.scale(t, 0).desired == 0, t  # ready_pods 0
    for t in range(41, 43):
        sc.record(t, 15.0)  # the demand waiting, as the activator reports it
    assert sc.scale(42, 0).desired == 1  # the stable average still low: one pod, at once
    assert sc.scale(42, 0).reason == "stable"


def test_scale_to_zero_disabled_or_min_scale_keeps_pods() -> None:
    off = KPAScaler(KPASettings(enable_scale_to_zero=False), 10)
    run(off, [(200, 0)], ready=1)
    assert off.scale(201, 1).desired == 1
    floor = KPAScaler(DEFAULT, 10, min_scale=3, max_scale=5)
    assert run(floor, [(100, 0)], ready=3)[-1][1].desired == 3
    assert run(floor, [(100, 1000)], ready=5, start=100)[-1][1].desired == 5


def test_a_new_decider_with_pods_starts_in_panic() -> None:
    sc = KPAScaler(DEFAULT, 10, initial_ready=8, now=0.0)
    steps = run(sc, [(40, 10)], ready=8)
    assert all(r.panicking and r.desired == 8 for _, r in steps)  # no early scale-down
    later = run(sc, [(40, 10)], ready=8, start=40)
    assert not later[-1][1].panicking and later[-1][1].desired == 4  # floor(8 / 2)


def test_no_data_keeps_the_current_count() -> None:
    sc = KPAScaler(DEFAULT, 10)
    res = sc.scale(5.0, 4)
    assert not res.valid and res.desired == 4


@settings(max_examples=200, deadline=None)
@given(
    target=st.floats(0.1, 500),
    # Up to the largest float: a bad exporter's reading must give a decision, not an error.
    loads=st.lists(
        st.floats(0, 5000) | st.floats(0, allow_infinity=False), min_size=1, max_size=40
    ),
    ready=st.integers(0, 300),
)
def test_decisions_stay_within_knative_rate_limits(
    target: float, loads: list[float], ready: int
) -> None:
    sc = KPAScaler(DEFAULT, target)
    for i, conc in enumerate(loads):
        sc.record(float(i + 1), conc)
    res = sc.scale(float(len(loads)), ready)
    r = max(1, ready)
    assert res.desired <= math.ceil(DEFAULT.max_scale_up_rate * r)
    if res.desired > 0 and not res.panicking:
        assert res.desired >= min(math.floor(r / 2), res.desired)
    if not res.panicking and res.desired > 1:
        assert res.desired >= math.floor(r / 2)
    assert res.desired >= 0


def test_policy_drives_each_role_and_reports_limits() -> None:
    pol = kpa_policy(["prefill", "decode"], bounds={"decode": RoleBounds(2, 20)})
    assert pol.initial_replicas("decode", lambda target: 1) == 2  # bounded
    assert pol.concurrency_limit("prefill") == 100
    for t in range(1, 61):
        obs = {
            "prefill": RoleObservation(concurrency=140, ready_replicas=2, replicas=2),
            "decode": RoleObservation(concurrency=2000, ready_replicas=2, replicas=2),
        }
        pol.observe(float(t), obs)
    d = pol.decide(60.0)
    assert d.desired == {"prefill": 2, "decode": 20}
    assert d.roles["decode"].panicking and d.roles["decode"].target == 70
    body = d.to_dict()
    assert body["roles"]["decode"]["concurrencyLimit"] == 100


def test_the_rps_metric_scales_on_the_request_rate_with_a_fixed_limit() -> None:
    rps = KPASettings(metric="rps", container_concurrency=256)
    assert rps.default_target == 140 and rps.limit_for(16) == 256  # Knative: 200 x 70%
    pol = static_policy(["serve"], {"serve": 16}, rps)
    pol.initial_replicas("serve", lambda target: 10)
    for t in range(1, 61):
        # 280 requests/s over 10 replicas; their in-flight count (30) is not what is read.
        pol.observe(float(t), {"serve": RoleObservation(30.0, 10, 10, request_rate=280.0)})
    rd = pol.decide(60.0).roles["serve"]
    assert (rd.desired, rd.concurrency_limit, rd.stable_concurrency) == (18, 256, 280.0)
    with pytest.raises(ValueError, match="metric must be one of concurrency, rps"):
        KPASettings(metric="qps")


def test_static_policy_targets_per_role() -> None:
    pol = static_policy(["prefill", "decode"], {"prefill": 0.5, "decode": 64})
    assert pol.concurrency_limit("prefill") == 1 and pol.concurrency_limit("decode") == 92
    pol.initial_replicas("prefill", lambda target: 3)
    for t in range(1, 61):
        pol.observe(float(t), {"prefill": RoleObservation(2.0, 3, 3)})
    assert pol.decide(60.0).roles["prefill"].desired == 4


def test_a_lower_target_lowers_the_limit_only_once_its_replicas_are_ready() -> None:
    """Make before break: lowering a target asks for more replicas, and the running ones keep
    their limit until those are ready (as a new Knative revision's pods take over only when
    ready), so a lower target never cuts the capacity being served."""
    pol = static_policy(["decode"], {"decode": 64})
    pol.initial_replicas("decode", lambda target: 4)

    def decide_at(t0: int, ready: int) -> tuple[int, int]:
        for t in range(t0, t0 + 60):
            pol.observe(float(t), {"decode": RoleObservation(200.0, ready, ready)})
        rd = pol.decide(float(t0 + 59)).roles["decode"]
        return rd.desired, rd.concurrency_limit

    assert decide_at(1, 4) == (4, 92)
    pol.source.targets["decode"] = 32  # type: ignore[attr-defined]
    desired, limit = decide_at(61, 4)
    assert desired == 7 and limit == 92  # the 3 new replicas are still starting
    assert decide_at(121, 7) == (7, 46)  # they are ready: the lower limit applies
    pol.source.targets["decode"] = 64  # type: ignore[attr-defined]
    assert decide_at(181, 7)[1] == 92  # a higher limit applies at once
