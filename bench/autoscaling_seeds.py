#!/usr/bin/env python3
"""How much the learned policy depends on its training seed.

    .venv/bin/python bench/autoscaling_seeds.py --seeds 0 1 2 3                 # aggregated, ~25 min
    .venv/bin/python bench/autoscaling_seeds.py --modes disaggregated --seeds 1 2
    .venv/bin/python bench/autoscaling_seeds.py --seeds 1 2 --policy-dir DIR   # keep, reuse
    .venv/bin/python bench/autoscaling_seeds.py --seeds 0 1 --episodes-per-role 400  # ~1 h

For each seed: train exactly as bench/autoscaling.py does (first half of the Azure trace at load
scale 50, 100 episodes per role unless ``--episodes-per-role`` says otherwise), then play the
learned policy on the same six traces. Results go to bench/results/autoscaling-seeds.json (rows
are replaced per mode, seed and episodes) and a markdown table is printed. Every number comes from the simulator; nothing is fixed by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from autoscaling import locked_results, run_one, train_policy  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "autoscaling-seeds.json"
TRACES = ["azure-eval", "azure-x40", "azure-x60", "diurnal", "bursty", "bursty3x"]


def train_seed(
    mode: str, seed: int, episodes: int, directory: Path, name: str
) -> tuple[str, dict[str, Any]]:
    """Train with ``seed`` into ``directory``/``name``, or reuse the policy file already there."""
    from dunnage.autoscaling.learned import LearnedModel

    path = directory / name
    if path.exists():
        return str(path), LearnedModel.load(path).home_targets()
    model = train_policy(mode, episodes, seed)
    model.save(path)
    return str(path), model.home_targets()


def table(rows: list[dict[str, Any]], mode: str, episodes: int) -> str:
    rows = sorted(
        (r for r in rows if r["mode"] == mode and episodes_of(r) == episodes),
        key=lambda r: r["seed"],
    )
    lines = [
        f"**{mode}, {episodes} episodes** (goodput per GPU-hour; SLO attainment in brackets)",
        "",
        "| seed | home targets | " + " | ".join(TRACES) + " |",
        "|---|---|" + "---|" * len(TRACES),
    ]
    for r in rows:
        home = ", ".join(f"{k} {v:g}" for k, v in r["home"].items())
        cells = [
            f"{r[t]['goodput_per_gpu_hour']:,.0f} ({r[t]['slo_attainment']:.1%})" for t in TRACES
        ]
        lines.append(f"| {r['seed']} | {home} | " + " | ".join(cells) + " |")
    median = [
        f"{statistics.median(r[t]['goodput_per_gpu_hour'] for r in rows):,.0f}" for t in TRACES
    ]
    lowest = [f"{min(r[t]['slo_attainment'] for r in rows):.1%}" for t in TRACES]
    lines.append("| median | | " + " | ".join(median) + " |")
    lines.append("| lowest attainment | | " + " | ".join(lowest) + " |")
    return "\n".join(lines)


def episodes_of(row: dict[str, Any]) -> int:
    """A row's training episodes (rows from before the field were trained with the default)."""
    from dunnage.autoscaling.learned import EPISODES_PER_ROLE
    from dunnage.autoscaling.types import roles_for

    return int(row.get("episodes", EPISODES_PER_ROLE * len(roles_for(row["mode"]))))


def main() -> int:
    from dunnage.autoscaling.learned import EPISODES_PER_ROLE
    from dunnage.autoscaling.types import roles_for

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--modes", nargs="+", default=["aggregated"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--episodes-per-role", type=int, default=EPISODES_PER_ROLE)
    ap.add_argument(
        "--policy-dir",
        type=Path,
        help="keep the trained policies here and reuse those already there (to re-play them "
        "after a change of the online rules, which training does not use)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.workers) as pool:
        directory = args.policy_dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        for mode in args.modes:
            episodes = args.episodes_per_role * len(roles_for(mode))
            more = "" if args.episodes_per_role == EPISODES_PER_ROLE else f"-{episodes}"
            trained = {
                seed: pool.submit(
                    train_seed, mode, seed, episodes, directory, f"policy-{mode}-{seed}{more}.json"
                )
                for seed in args.seeds
            }
            for seed, future in trained.items():
                path, home = future.result()
                print(f"[{mode}] seed {seed}: home {home}", flush=True)
                jobs = [
                    {"mode": mode, "trace": t, "policy": "learned", "file": path} for t in TRACES
                ]
                runs = list(pool.map(run_one, jobs))
                row: dict[str, Any] = {
                    "mode": mode,
                    "seed": seed,
                    "episodes": episodes,
                    "home": home,
                }
                for trace, run in zip(TRACES, runs, strict=True):
                    row[trace] = {
                        k: run[k] for k in ("goodput_per_gpu_hour", "slo_attainment", "gpu_hours")
                    }
                    row[trace]["targets_final"] = run["targets_final"]
                with locked_results(RESULTS) as doc:
                    kept = doc.get("rows", [])
                    doc["rows"] = [
                        r
                        for r in kept
                        if (r["mode"], r["seed"], episodes_of(r)) != (mode, seed, episodes)
                    ]
                    doc["rows"].append(row)
                    doc["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    rows = json.loads(RESULTS.read_text())["rows"]
    for mode in args.modes:
        print(table(rows, mode, args.episodes_per_role * len(roles_for(mode))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
