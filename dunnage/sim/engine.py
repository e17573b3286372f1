"""Discrete-event simulator of an LLM-serving fleet under an autoscaling policy.

Model
-----
Requests come from a :class:`~dunnage.sim.trace.Trace`. Each role (``serve``, or ``prefill``
then ``decode``) is a pool of replicas behind one FIFO queue (the router / activator). A request
is sent to the ready replica with the fewest requests in flight, if that replica is under the
policy's hard per-replica concurrency limit; otherwise it waits in the queue. A replica is one
vLLM-like engine doing continuous batching:

- Requests it holds wait in the engine until it admits them into the batch: at most
  ``max_num_seqs`` sequences, and the KV cache must hold the request's prompt plus its whole
  output (reserving the full length up front stands in for vLLM's preemption under memory
  pressure, which is not modelled).
- Each iteration serves every decoding sequence one token and fills the rest of the token budget
  (``max_batched_tokens``) with prompt chunks, first come first served (chunked prefill). Its
  cost is the profile's ``b0 + b1 P + b2 n + attn S + prefill_attn ...`` (see
  :mod:`dunnage.sim.profiles`).
- Aggregated (``serve``): a request's first token comes at the end of the iteration that
  finishes its prompt; then one token per iteration. Disaggregated: the prefill replica computes
  the prompt, the KV cache moves to decode (``kv_transfer_seconds``), the request joins the
  decode pool's queue, and its first token comes at the end of its first decode iteration.
- Replicas the policy adds start after the profile's cold start (pod start + model load); GPU
  time is billed from creation. Removed replicas stop taking requests, finish what they hold,
  then go (starting replicas are cancelled first, then the least loaded ready ones).

Speed: a replica with nothing to prefill runs its decode iterations as one event up to its next
completion (iteration costs are summed in closed form, since the cached tokens grow by the batch
size each step); an arrival it can admit cuts that segment at the next iteration boundary.

Metrics: every second each role reports its time-averaged concurrency (requests queued in front
of it plus in flight at its replicas) to the policy, with counts of the requests it finished in
that second and how many met its own latency objectives (``role_slo``: in P/D the prefill pool is
timed to the end of the prompt, the decode pool from the KV arrival to the first token, as each
pool's own histograms would); every tick (2 s) the policy decides. In the results a request meets
its SLO when its end-to-end TTFT <= slo.ttft and TPOT (mean time per output token after the first)
<= slo.tpot. Requests arriving in the first ``warmup`` seconds are simulated but not counted,
and GPU time is counted from the end of the warm-up to the last completion.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from dunnage.autoscaling.types import (
    DECODE,
    PREFILL,
    SERVE,
    SLO,
    Decision,
    RoleObservation,
    role_slo,
    roles_for,
)
from dunnage.errors import InputError
from dunnage.sim.profiles import Profile
from dunnage.sim.trace import Trace

MODES = ("aggregated", "disaggregated")

_STEP, _READY, _KV, _SAMPLE, _TICK = 0, 1, 2, 3, 4


class Controller(Protocol):
    """What the simulator needs from a scaling policy."""

    @property
    def name(self) -> str: ...

    def initial_replicas(self, role: str, sizing: Callable[[float], int]) -> int: ...

    def concurrency_limit(self, role: str) -> int: ...

    def observe(self, now: float, observations: Mapping[str, RoleObservation]) -> None: ...

    def decide(self, now: float) -> Decision: ...


class _Replica:
    __slots__ = (
        "A",
        "busy",
        "chunks",
        "draining",
        "gone",
        "inflight",
        "it",
        "kv",
        "mixed",
        "n",
        "pool",
        "prefill",
        "ready",
        "rid",
        "running",
        "seg_c",
        "seg_h",
        "seg_k",
        "seg_t0",
        "t_end",
        "t_start",
        "version",
        "waiting",
    )

    def __init__(self, rid: int, pool: _Pool, now: float) -> None:
        self.rid = rid
        self.pool = pool
        self.ready = False
        self.draining = False
        self.gone = False
        self.t_start = now
        self.t_end = math.inf
        self.inflight = 0
        self.waiting: deque[int] = deque()
        self.prefill: deque[list[int]] = deque()  # [request, prompt tokens left]
        self.running: list[tuple[int, int]] = []  # heap of (finish iteration, request)
        self.n = 0  # decoding sequences
        self.A = 0  # sum over decoding sequences of (prompt - base); cached = A + n * it
        self.kv = 0
        self.it = 0  # iterations done
        self.busy = False
        self.mixed = False
        self.chunks: list[tuple[list[int], int]] = []
        self.seg_t0 = 0.0
        self.seg_k = 0
        self.seg_c = 0.0
        self.seg_h = 0.0
        self.version = 0


class _Pool:
    __slots__ = (
        "area",
        "arrivals",
        "conc",
        "limit",
        "queue",
        "ready",
        "replicas",
        "role",
        "t_area",
    )

    def __init__(self, role: str) -> None:
        self.role = role
        self.replicas: list[_Replica] = []  # alive: starting, ready or draining
        self.ready: list[_Replica] = []  # ready and not draining
        self.queue: deque[int] = deque()
        self.limit = 1
        self.conc = 0
        self.area = 0.0
        self.t_area = 0.0
        self.arrivals = 0


@dataclass
class SimResult:
    summary: dict[str, Any]
    timeline: dict[str, Any] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    ttft: np.ndarray | None = None
    tpot: np.ndarray | None = None


def _quantiles(values: np.ndarray, prefix: str) -> dict[str, float]:
    if len(values) == 0:
        return {f"{prefix}_{k}": math.nan for k in ("mean", "p50", "p90", "p99")}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        f"{prefix}_mean": round(float(values.mean()), 6),
        f"{prefix}_p50": round(float(p50), 6),
        f"{prefix}_p90": round(float(p90), 6),
        f"{prefix}_p99": round(float(p99), 6),
    }


def steady_state_replicas(
    trace: Trace, profile: Profile, mode: str, role: str, target: float, horizon: float = 120.0
) -> int:
    """Replicas at which a KPA with ``target`` would hold the trace's first ``horizon`` seconds.

    Every run starts at (an estimate of) its policy's own steady state, as a fleet that has been
    serving for a while would, so no policy starts with a fleet far from what it would choose.
    Little's law per replica: it holds ``target`` requests, each taking its prefill plus its output
    at the iteration cost of a batch of ``target`` (decode iterations stretched by the share of
    time spent on prompts). Past saturation it falls back to the throughput need.
    """
    n = int(np.searchsorted(trace.arrival, min(horizon, trace.duration)))
    if n == 0:
        return 1
    rate = n / max(min(horizon, trace.duration), 1e-9)
    prompt = float(trace.prompt[:n].mean())
    output = float(trace.output[:n].mean())
    p = profile
    if role == PREFILL:
        k = min(target, p.max_batched_tokens / prompt)
        per_replica = k / (p.b0 + p.b1 * k * prompt)
    else:
        batch = min(target, p.max_num_seqs)
        step = p.b0 + p.b2 * batch + p.attn * batch * (prompt + output / 2)
        if role == DECODE:
            per_replica = target / (output * step)
        else:
            prefill = p.b0 + p.b1 * prompt
            per_replica = target / (prefill + output * step)
            for _ in range(30):  # prompts take a share f of the time, stretching decode steps
                f = min(0.9, per_replica * prompt * p.b1)
                per_replica = target / (prefill + output * step / (1 - f))
        # A replica cannot do more than its throughput at the largest batch.
        full = p.max_num_seqs
        full_step = p.b0 + p.b2 * full + p.attn * full * (prompt + output / 2)
        cap = 1.0 / (p.b1 * prompt + output * full_step / full)
        if role == DECODE:
            cap = full / (output * full_step)
        per_replica = min(per_replica, cap * 0.9)
    return max(1, math.ceil(rate / per_replica))


def simulate(
    trace: Trace,
    profile: Profile,
    policy: Controller,
    *,
    mode: str = "aggregated",
    slo: SLO | None = None,
    warmup: float = 300.0,
    sample_period: float = 1.0,
    tick: float = 2.0,
    keep_timeline: bool = False,
    keep_decisions: bool = False,
    keep_latencies: bool = False,
) -> SimResult:
    """Run ``trace`` through a fleet that ``policy`` scales; see the module docstring."""
    if mode not in MODES:
        raise InputError(f"must be one of {', '.join(MODES)}", obj="--mode")
    slo = slo or SLO(profile.slo_ttft, profile.slo_tpot)
    wall0 = time.perf_counter()
    roles = roles_for(mode)
    pd = mode == "disaggregated"
    nreq = len(trace)
    arrival: list[float] = trace.arrival.tolist()
    prompt: list[int] = trace.prompt.tolist()
    output: list[int] = trace.output.tolist()
    first = [math.nan] * nreq
    done = [math.nan] * nreq
    base = [0] * nreq
    need_kv_serve = [
        min(p + o, profile.kv_capacity_tokens) for p, o in zip(prompt, output, strict=True)
    ]

    b0, b1, b2 = profile.b0, profile.b1, profile.b2
    attn, pattn = profile.attn, profile.prefill_attn
    max_seqs = profile.max_num_seqs
    budget_tokens = profile.max_batched_tokens
    kv_cap = profile.kv_capacity_tokens
    cold = profile.cold_start_seconds
    xfer_lat = profile.kv_transfer_latency
    xfer_per_token = profile.kv_bytes_per_token / profile.kv_transfer_bandwidth
    slo_tpot = slo.tpot

    pools = {role: _Pool(role) for role in roles}
    front = pools[DECODE] if pd else pools[SERVE]
    prefill_pool = pools[PREFILL] if pd else None
    entry_pool = pools[PREFILL] if pd else front

    heap: list[tuple[float, int, int, Any, int]] = []
    seq = 0
    all_replicas: list[_Replica] = []
    # Per-sample counters per role: completed, ttft ok, tpot ok. ``serve`` counts the client's
    # view; in P/D each role counts against its own share of the SLO (``role_slo``): prefill at
    # the end of a prompt, decode at completion with its first token timed from the KV arrival.
    counts = {role: [0, 0, 0] for role in roles}
    own_slo = {role: role_slo(slo, role) for role in roles}
    kv_at = [math.nan] * nreq if pd else []
    completed_total = 0
    events = 0

    def push(t: float, kind: int, obj: Any, version: int = 0) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, kind, obj, version))

    def bump(pool: _Pool, now: float, delta: int) -> None:
        pool.area += pool.conc * (now - pool.t_area)
        pool.t_area = now
        pool.conc += delta

    def kv_need(pool: _Pool, req: int) -> int:
        if pool is prefill_pool:
            return min(prompt[req], kv_cap)
        return need_kv_serve[req]

    def admit(rep: _Replica) -> list[int]:
        """Move requests from the engine's waiting queue into the batch; returns decode joins."""
        joined: list[int] = []
        waiting = rep.waiting
        pool = rep.pool
        is_decode = pool.role == DECODE
        while waiting:
            req = waiting[0]
            need = kv_need(pool, req)
            active = rep.n + len(rep.prefill)
            if active >= max_seqs or (rep.kv + need > kv_cap and active > 0):
                break
            waiting.popleft()
            rep.kv += need
            if is_decode:
                b = rep.it
                base[req] = b
                heapq.heappush(rep.running, (b + output[req], req))
                rep.n += 1
                rep.A += prompt[req] - b
                joined.append(req)
            else:
                rep.prefill.append([req, prompt[req]])
        return joined

    def start(rep: _Replica, now: float) -> None:
        """At an iteration boundary of an idle replica: plan and schedule its next work."""
        joined = admit(rep)
        if rep.prefill:
            n = rep.n
            room = budget_tokens - n
            chunks: list[tuple[list[int], int]] = []
            total = 0
            quad = 0.0
            for entry in rep.prefill:
                if room <= 0:
                    break
                left = entry[1]
                take = left if left < room else room
                done_before = prompt[entry[0]] - left
                quad += take * (done_before + take / 2)
                chunks.append((entry, take))
                total += take
                room -= take
            dt = b0 + b1 * total + pattn * quad + b2 * n + attn * (rep.A + n * rep.it)
            rep.mixed = True
            rep.chunks = chunks
            rep.busy = True
            rep.version += 1
            push(now + dt, _STEP, rep, rep.version)
        elif rep.n:
            n = rep.n
            k = rep.running[0][0] - rep.it
            c = b0 + b2 * n + attn * (rep.A + n * rep.it)
            h = attn * n / 2
            rep.mixed = False
            rep.seg_t0 = now
            rep.seg_k = k
            rep.seg_c = c
            rep.seg_h = h
            rep.busy = True
            rep.version += 1
            push(now + k * c + h * k * (k - 1), _STEP, rep, rep.version)
            if joined:
                t1 = now + c  # end of the first iteration: the decode role's first token
                for req in joined:
                    first[req] = t1
        else:
            rep.busy = False

    def interrupt(rep: _Replica, now: float) -> None:
        """Cut a running decode segment at the first iteration boundary at or after ``now``."""
        if rep.mixed or rep.seg_k <= 1:
            return
        elapsed = now - rep.seg_t0
        c, h = rep.seg_c, rep.seg_h
        if h > 0:
            b = c - h
            k = math.ceil((-b + math.sqrt(b * b + 4 * h * elapsed)) / (2 * h) - 1e-9)
        else:
            k = math.ceil(elapsed / c - 1e-9)
        k = max(k, 1)
        if k < rep.seg_k:
            rep.seg_k = k
            rep.version += 1
            push(max(now, rep.seg_t0 + k * c + h * k * (k - 1)), _STEP, rep, rep.version)

    def send(rep: _Replica, req: int, now: float) -> None:
        rep.inflight += 1
        rep.waiting.append(req)
        if not rep.busy:
            start(rep, now)
        elif (
            not rep.mixed
            and len(rep.waiting) == 1
            and rep.n + len(rep.prefill) < max_seqs
            and rep.kv + kv_need(rep.pool, req) <= kv_cap
        ):
            interrupt(rep, now)

    def dispatch(pool: _Pool, now: float) -> None:
        queue = pool.queue
        while queue:
            best = None
            low = pool.limit
            for rep in pool.ready:
                if rep.inflight < low:
                    best = rep
                    low = rep.inflight
            if best is None:
                return
            send(best, queue.popleft(), now)

    def finish(rep: _Replica, req: int, now: float) -> None:
        nonlocal completed_total
        done[req] = now
        rep.inflight -= 1
        rep.kv -= need_kv_serve[req]
        bump(rep.pool, now, -1)
        completed_total += 1
        role = rep.pool.role
        c = counts[role]
        c[0] += 1
        ttft = first[req] - (kv_at[req] if pd else arrival[req])
        if ttft <= own_slo[role].ttft:
            c[1] += 1
        out = output[req]
        if out <= 1 or (now - first[req]) / (out - 1) <= slo_tpot:
            c[2] += 1

    def retire(rep: _Replica, now: float) -> None:
        rep.gone = True
        rep.t_end = now
        rep.pool.replicas.remove(rep)

    def on_step(rep: _Replica, now: float) -> None:
        pool = rep.pool
        if rep.mixed:
            rep.it += 1
            for entry, take in rep.chunks:
                entry[1] -= take
            rep.chunks = []
            pf = rep.prefill
            while pf and pf[0][1] <= 0:
                req = pf.popleft()[0]
                if pool is prefill_pool:
                    # Prompt done here: free the slot, ship the KV cache to decode.
                    rep.inflight -= 1
                    rep.kv -= min(prompt[req], kv_cap)
                    bump(pool, now, -1)
                    c = counts[PREFILL]
                    c[0] += 1
                    c[2] += 1
                    if now - arrival[req] <= own_slo[PREFILL].ttft:
                        c[1] += 1
                    push(now + xfer_lat + prompt[req] * xfer_per_token, _KV, req)
                else:
                    first[req] = now
                    if output[req] <= 1:
                        finish(rep, req, now)
                    else:
                        b = rep.it - 1
                        base[req] = b
                        heapq.heappush(rep.running, (b + output[req], req))
                        rep.n += 1
                        rep.A += prompt[req] - b
        else:
            rep.it += rep.seg_k
        running = rep.running
        it = rep.it
        while running and running[0][0] <= it:
            _, req = heapq.heappop(running)
            rep.n -= 1
            rep.A -= prompt[req] - base[req]
            finish(rep, req, now)
        rep.busy = False
        if pool.queue and not rep.draining:
            dispatch(pool, now)
        if not rep.busy:
            start(rep, now)
        if rep.draining and rep.inflight == 0 and not rep.busy:
            retire(rep, now)

    def add_replica(pool: _Pool, now: float, ready: bool) -> None:
        rep = _Replica(len(all_replicas), pool, now)
        all_replicas.append(rep)
        pool.replicas.append(rep)
        if ready:
            rep.ready = True
            pool.ready.append(rep)
        else:
            push(now + cold, _READY, rep)

    def scale(pool: _Pool, desired: int, now: float) -> None:
        alive = [r for r in pool.replicas if not r.draining]
        if desired > len(alive):
            for _ in range(desired - len(alive)):
                add_replica(pool, now, False)
            return
        extra = len(alive) - desired
        if extra <= 0:
            return
        starting = [r for r in alive if not r.ready]
        for rep in reversed(starting):  # newest first: furthest from ready
            if extra == 0:
                return
            rep.draining = True
            retire(rep, now)
            extra -= 1
        for rep in sorted(pool.ready, key=lambda r: r.inflight)[:extra]:
            rep.draining = True
            pool.ready.remove(rep)
            if rep.inflight == 0 and not rep.busy:
                retire(rep, now)

    # --- initial fleet: each policy starts at its own estimated steady state -------------------
    for role, pool in pools.items():
        pool.limit = policy.concurrency_limit(role)

        def sizing(target: float, role: str = role) -> int:
            return steady_state_replicas(trace, profile, mode, role, target)

        for _ in range(max(0, policy.initial_replicas(role, sizing))):
            add_replica(pool, 0.0, True)

    push(sample_period, _SAMPLE, None)
    push(tick, _TICK, None)

    timeline: dict[str, list[Any]] = {"t": []}
    for role in roles:
        timeline[f"{role}_replicas"] = []
        timeline[f"{role}_ready"] = []
        timeline[f"{role}_target"] = []
        timeline[f"{role}_concurrency"] = []
    decisions: list[dict[str, Any]] = []
    last_sample = 0.0
    replicas_max = {role: len(pools[role].replicas) for role in roles}
    total_max = sum(replicas_max.values())

    i = 0
    now = 0.0
    heappop = heapq.heappop
    while completed_total < nreq:
        t_arr = arrival[i] if i < nreq else math.inf
        if heap and heap[0][0] <= t_arr:
            now, _, kind, obj, version = heappop(heap)
            events += 1
            if kind == _STEP:
                if version == obj.version:
                    on_step(obj, now)
            elif kind == _SAMPLE:
                dt = now - last_sample
                obs: dict[str, RoleObservation] = {}
                for role, pool in pools.items():
                    bump(pool, now, 0)
                    avg = pool.area / dt if dt > 0 else float(pool.conc)
                    pool.area = 0.0
                    obs[role] = RoleObservation(
                        concurrency=avg,
                        ready_replicas=len(pool.ready),
                        replicas=sum(1 for r in pool.replicas if not r.draining),
                        request_rate=pool.arrivals / dt if dt > 0 else 0.0,
                        completed=counts[role][0],
                        ttft_ok=counts[role][1],
                        tpot_ok=counts[role][2],
                    )
                    pool.arrivals = 0
                    counts[role] = [0, 0, 0]
                last_sample = now
                policy.observe(now, obs)
                push(now + sample_period, _SAMPLE, None)
            elif kind == _TICK:
                decision = policy.decide(now)
                for role, pool in pools.items():
                    rd = decision.roles.get(role)
                    if rd is None:
                        continue
                    pool.limit = max(1, rd.concurrency_limit)
                    scale(pool, rd.desired, now)
                    dispatch(pool, now)  # a raised limit frees room at once
                    alive = len(pool.replicas)
                    replicas_max[role] = max(replicas_max[role], alive)
                total_max = max(total_max, sum(len(p.replicas) for p in pools.values()))
                if keep_timeline:
                    timeline["t"].append(now)
                    for role, pool in pools.items():
                        rd = decision.roles.get(role)
                        timeline[f"{role}_replicas"].append(len(pool.replicas))
                        timeline[f"{role}_ready"].append(len(pool.ready))
                        timeline[f"{role}_target"].append(rd.target if rd else math.nan)
                        timeline[f"{role}_concurrency"].append(pool.conc)
                if keep_decisions:
                    decisions.append(decision.to_dict())
                push(now + tick, _TICK, None)
            elif kind == _READY:
                if not obj.gone and not obj.draining:
                    obj.ready = True
                    obj.pool.ready.append(obj)
                    dispatch(obj.pool, now)
            else:  # _KV: a prompt's KV cache reached the decode pool
                kv_at[obj] = now
                front.arrivals += 1
                bump(front, now, 1)
                front.queue.append(obj)
                dispatch(front, now)
        else:
            now = t_arr
            req = i
            i += 1
            entry_pool.arrivals += 1
            bump(entry_pool, now, 1)
            queue = entry_pool.queue
            queue.append(req)
            if len(queue) == 1:  # otherwise every replica is at its limit already
                dispatch(entry_pool, now)

    end = now
    wall = time.perf_counter() - wall0

    # --- metrics ------------------------------------------------------------------------------
    arr = trace.arrival
    t_first = np.asarray(first)
    t_done = np.asarray(done)
    outs = trace.output
    ttft = t_first - arr
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(outs > 1, (t_done - t_first) / np.maximum(outs - 1, 1), 0.0)
    measured = arr >= warmup
    m_ttft = ttft[measured]
    m_tpot = tpot[measured]
    multi = outs[measured] > 1
    ok_ttft = m_ttft <= slo.ttft
    ok_tpot = m_tpot <= slo.tpot
    ok = ok_ttft & ok_tpot
    count = int(measured.sum())
    span = max(trace.duration - warmup, 1e-9)
    measure_end = max(end, trace.duration)
    gpu_seconds = {role: 0.0 for role in roles}
    for rep in all_replicas:
        lo = max(rep.t_start, warmup)
        hi = min(rep.t_end, measure_end)
        if hi > lo:
            gpu_seconds[rep.pool.role] += (hi - lo) * profile.gpus_per_replica
    gpu_hours = sum(gpu_seconds.values()) / 3600.0
    good = int(ok.sum())
    goodput = good / span
    summary: dict[str, Any] = {
        "policy": policy.name,
        "mode": mode,
        "profile": profile.name,
        "trace": trace.name,
        "requests": nreq,
        "measured_requests": count,
        "warmup_s": warmup,
        "duration_s": round(trace.duration, 3),
        "slo_ttft": slo.ttft,
        "slo_tpot": slo.tpot,
        "goodput_rps": round(goodput, 4),
        "throughput_rps": round(count / span, 4),
        "slo_attainment": round(good / count, 5) if count else math.nan,
        "ttft_attainment": round(float(ok_ttft.mean()), 5) if count else math.nan,
        "tpot_attainment": round(float(ok_tpot.mean()), 5) if count else math.nan,
        "gpu_hours": round(gpu_hours, 4),
        "gpu_hours_by_role": {r: round(s / 3600.0, 4) for r, s in gpu_seconds.items()},
        "goodput_per_gpu_hour": round(good / gpu_hours, 2) if gpu_hours > 0 else 0.0,
        **_quantiles(m_ttft, "ttft"),
        **_quantiles(m_tpot[multi], "tpot"),
        "replicas_max": total_max,
        "replicas_max_by_role": replicas_max,
        "replicas_mean": round(gpu_hours * 3600 / span / profile.gpus_per_replica, 3),
        "sim_end_s": round(end, 3),
        "sim_events": events,
        "sim_wall_s": round(wall, 3),
    }
    return SimResult(
        summary=summary,
        timeline=timeline if keep_timeline else {},
        decisions=decisions,
        ttft=ttft if keep_latencies else None,
        tpot=tpot if keep_latencies else None,
    )
