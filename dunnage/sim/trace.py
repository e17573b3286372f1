"""Request traces: (arrival time, prompt tokens, output tokens), read from CSV or generated.

The CSV format is the Azure LLM inference trace's: a header ``TIMESTAMP,ContextTokens,
GeneratedTokens`` and one request per row; TIMESTAMP is ``YYYY-MM-DD HH:MM:SS[.fffffff]`` or a
number of seconds. Rows need not be sorted. ``builtin:azure-conv`` names the copy shipped in
``dunnage/data/azure-llm/`` (see its README for the source).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from dunnage.errors import InputError, require_positive

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "azure-llm"
BUILTIN = {"azure-conv": DATA_DIR / "AzureLLMInferenceTrace_conv.csv"}
COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MAX_TOKENS = 10_000_000  # per request and column: beyond any model's context
# Spread of the time shifts when a trace is superposed on itself (see Trace.scaled).
SCALE_SPREAD_SECONDS = 300.0


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests sorted by arrival; times in seconds from the trace's start."""

    arrival: np.ndarray  # float64
    prompt: np.ndarray  # int64, >= 1
    output: np.ndarray  # int64, >= 1
    duration: float  # seconds the trace covers (>= last arrival)
    name: str = "trace"

    def __len__(self) -> int:
        return int(self.arrival.shape[0])

    @property
    def rate(self) -> float:
        return len(self) / self.duration if self.duration > 0 else 0.0

    def scaled(self, factor: float) -> Trace:
        """``factor`` superposed copies, each shifted in time and wrapped around the end.

        Copy k is shifted by k * S / factor with S = min(duration, 5 minutes), so the load is
        ``factor`` times the original while minute-scale bursts and the hour-scale shape of the
        trace survive (shifts spread over the whole duration would flatten it). A fractional
        factor adds the last copy's first requests only (a prefix of the right share).
        """
        require_positive(factor, "--load-scale")
        if factor == 1 or len(self) == 0:
            return self
        whole = math.floor(factor)
        frac = factor - whole
        copies = whole + (1 if frac > 1e-9 else 0)
        spread = min(self.duration, SCALE_SPREAD_SECONDS)
        arrivals, prompts, outputs = [], [], []
        for k in range(copies):
            shift = k * spread / factor
            t = self.arrival + shift
            if self.duration > 0:
                t = np.where(t >= self.duration, t - self.duration, t)
            p, o = self.prompt, self.output
            if k == whole:  # the fractional copy: every request with probability frac, seeded
                keep = np.random.default_rng(k).random(len(self)) < frac
                t, p, o = t[keep], p[keep], o[keep]
            arrivals.append(t)
            prompts.append(p)
            outputs.append(o)
        return _sorted(
            np.concatenate(arrivals),
            np.concatenate(prompts),
            np.concatenate(outputs),
            self.duration,
            f"{self.name} x{factor:g}",
        )

    def window(self, start: float, end: float) -> Trace:
        """Requests arriving in [start, end) seconds, shifted to start at 0."""
        lo = int(np.searchsorted(self.arrival, start, side="left"))
        hi = int(np.searchsorted(self.arrival, end, side="left"))
        return Trace(
            self.arrival[lo:hi] - start,
            self.prompt[lo:hi],
            self.output[lo:hi],
            max(0.0, min(end, self.duration) - start),
            f"{self.name}[{start:.0f}s:{min(end, self.duration):.0f}s]",
        )

    def fraction(self, lo: float, hi: float) -> Trace:
        """The part between fractions ``lo`` and ``hi`` of the duration."""
        return self.window(lo * self.duration, hi * self.duration)

    def summary(self) -> dict[str, float | int | str]:
        return {
            "name": self.name,
            "requests": len(self),
            "duration_s": round(self.duration, 3),
            "rate_rps": round(self.rate, 3),
            "prompt_mean": round(float(self.prompt.mean()), 1) if len(self) else 0.0,
            "output_mean": round(float(self.output.mean()), 1) if len(self) else 0.0,
        }


def _sorted(
    arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray, duration: float, name: str
) -> Trace:
    order = np.argsort(arrival, kind="stable")
    return Trace(
        arrival[order].astype(np.float64),
        prompt[order].astype(np.int64),
        output[order].astype(np.int64),
        float(duration),
        name,
    )


def resolve(spec: str) -> Path:
    """A trace argument: a path, or ``builtin:NAME``."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if name not in BUILTIN:
            raise InputError(
                f"unknown built-in trace {name!r}; known: {', '.join(sorted(BUILTIN))}",
                obj="--trace",
            )
        return BUILTIN[name]
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"{spec}: no such file", obj="--trace")
    return path


def _timestamp(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    # The Azure files carry 7 fractional digits; datetime takes at most 6.
    main, _, frac = text.partition(".")
    base = datetime.strptime(main, "%Y-%m-%d %H:%M:%S")
    seconds = base.timestamp()
    if frac:
        if not frac.isdigit():
            raise ValueError(text)
        seconds += int(frac) / 10 ** len(frac)
    return seconds


def load_csv(spec: str) -> Trace:
    path = resolve(spec)
    arrivals: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise InputError(
                f"{path}: header must have columns {', '.join(COLUMNS)}; missing {', '.join(missing)}",
                obj="--trace",
            )
        idx = [header.index(c) for c in COLUMNS]
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            try:
                cells = [row[i] for i in idx]
            except IndexError:
                raise InputError(f"{path}: line {line}: too few columns", obj="--trace") from None
            try:
                t = _timestamp(cells[0])
            except ValueError:
                raise InputError(
                    f"{path}: line {line}: TIMESTAMP: {cells[0]!r} is not a time", obj="--trace"
                ) from None
            values = []
            for name, cell in zip(COLUMNS[1:], cells[1:], strict=True):
                try:
                    value = int(cell)
                except ValueError:
                    raise InputError(
                        f"{path}: line {line}: {name}: {cell!r} is not an integer", obj="--trace"
                    ) from None
                if not 1 <= value <= MAX_TOKENS:
                    raise InputError(
                        f"{path}: line {line}: {name}: must be within 1..{MAX_TOKENS}, got {value}",
                        obj="--trace",
                    )
                values.append(value)
            arrivals.append(t)
            prompts.append(values[0])
            outputs.append(values[1])
    if not arrivals:
        raise InputError(f"{path}: no requests", obj="--trace")
    arr = np.asarray(arrivals, dtype=np.float64)
    arr -= arr.min()
    if not arr.max() > 0:
        raise InputError(
            f"{path}: every request arrives at the same instant; goodput and the other rates "
            "need a trace that spans some time",
            obj="--trace",
        )
    return _sorted(
        arr,
        np.asarray(prompts, dtype=np.int64),
        np.asarray(outputs, dtype=np.int64),
        float(arr.max()),
        path.stem if not spec.startswith("builtin:") else spec.removeprefix("builtin:"),
    )


def write_csv(trace: Trace, path: str | Path, start: datetime | None = None) -> None:
    """Write in the Azure format (so `dunnage sim --trace` reads it back)."""
    start = start or datetime(2024, 1, 1)
    with Path(path).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for t, p, o in zip(trace.arrival, trace.prompt, trace.output, strict=True):
            stamp = (start + timedelta(seconds=float(t))).strftime("%Y-%m-%d %H:%M:%S.%f")
            writer.writerow((stamp, int(p), int(o)))


# --- synthetic workloads -------------------------------------------------------------------

SYNTHETIC_KINDS = ("poisson", "bursty", "diurnal")


def synthetic(
    kind: str,
    *,
    rate: float,
    duration: float,
    seed: int = 0,
    lengths: Trace | None = None,
    burst_factor: float = 4.0,
    burst_seconds: float = 30.0,
    burst_every: float = 300.0,
    period: float = 3600.0,
    amplitude: float = 0.5,
    prompt_mean: float = 1000.0,
    output_mean: float = 200.0,
) -> Trace:
    """A synthetic trace with mean arrival rate ``rate`` requests/s.

    - ``poisson``: constant rate.
    - ``bursty``: a Markov-modulated Poisson process: bursts of ``burst_factor`` times the base
      rate, exponentially long (mean ``burst_seconds``), starting on average every
      ``burst_every`` seconds; the base rate is lowered so the mean stays ``rate``.
    - ``diurnal``: rate * (1 + amplitude * sin(2 pi t / period)).

    Lengths are resampled from ``lengths`` (e.g. the Azure trace) when given, otherwise drawn
    from log-normal distributions with the given means (sigma 1 for prompts, 0.8 for outputs).
    """
    if kind not in SYNTHETIC_KINDS:
        raise InputError(f"must be one of {', '.join(SYNTHETIC_KINDS)}", obj="--kind")
    require_positive(rate, "--rate")
    require_positive(duration, "--duration")
    rng = np.random.default_rng(seed)
    if kind == "poisson":
        n = rng.poisson(rate * duration)
        arrival = np.sort(rng.uniform(0, duration, n))
    else:
        # Thinning of a Poisson process at the peak rate.
        if kind == "bursty":
            if burst_factor < 1 or burst_seconds <= 0 or burst_every <= burst_seconds:
                raise InputError("bursts need factor >= 1 and every > seconds", obj="--kind")
            on_share = burst_seconds / burst_every
            base = rate / (1 + on_share * (burst_factor - 1))
            peak = base * burst_factor
            # Alternating off/on periods, exponentially distributed.
            edges = []
            t, on = 0.0, False
            while t < duration:
                t += rng.exponential(burst_seconds if on else burst_every - burst_seconds)
                edges.append(t)
                on = not on
            edge_arr = np.asarray(edges)
        else:
            if not 0 <= amplitude < 1 or period <= 0:
                raise InputError("needs 0 <= amplitude < 1 and a positive period", obj="--kind")
            peak = rate * (1 + amplitude)
        n = rng.poisson(peak * duration)
        cand = np.sort(rng.uniform(0, duration, n))
        if kind == "bursty":
            # Period index parity: even index -> off (base), odd -> on (peak).
            in_burst = np.searchsorted(edge_arr, cand, side="right") % 2 == 1
            accept = np.where(in_burst, 1.0, base / peak)
        else:
            accept = (1 + amplitude * np.sin(2 * np.pi * cand / period)) / (1 + amplitude)
        arrival = cand[rng.random(n) < accept]
    m = len(arrival)
    if lengths is not None and len(lengths):
        pick = rng.integers(0, len(lengths), m)
        prompt, output = lengths.prompt[pick], lengths.output[pick]
    else:
        prompt = _lognormal(rng, prompt_mean, 1.0, m)
        output = _lognormal(rng, output_mean, 0.8, m)
    return _sorted(arrival, prompt, output, duration, f"synthetic-{kind}")


def _lognormal(rng: np.random.Generator, mean: float, sigma: float, n: int) -> np.ndarray:
    mu = math.log(mean) - sigma * sigma / 2
    return np.maximum(1, np.round(rng.lognormal(mu, sigma, n))).astype(np.int64)
