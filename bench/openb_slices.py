#!/usr/bin/env python3
"""Run the openb slice benchmark; write JSON to bench/results/ and a plot to docs/.

    .venv/bin/python bench/openb_slices.py --nodes 100 400 1523 --time-limit 10
    .venv/bin/python bench/openb_slices.py --plot-only bench/results/openb_slices.json

Extra arguments are passed to `dunnage bench openb` (see `dunnage bench openb --help`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "openb_slices.json"
PLOT = ROOT / "docs" / "bench_openb_slices.png"


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slices = doc["slices"]
    fig, axes = plt.subplots(1, len(slices), figsize=(4.5 * len(slices), 4), squeeze=False)
    for ax, s in zip(axes[0], slices, strict=True):
        prios = list(s["pods_by_priority"])
        total = [s["pods_by_priority"][p] for p in prios]
        default = [s["default"]["placed_by_priority"].get(p, 0) for p in prios]
        after = [s["plan"]["placed_after"].get(p, 0) for p in prios]
        x = range(len(prios))
        ax.bar(
            [i - 0.2 for i in x],
            [d / t * 100 for d, t in zip(default, total, strict=True)],
            0.4,
            label="default scheduler",
        )
        ax.bar(
            [i + 0.2 for i in x],
            [a / t * 100 for a, t in zip(after, total, strict=True)],
            0.4,
            label="planner",
        )
        ax.set_xticks(
            list(x),
            [f"prio {p}\n({t} pods)" for p, t in zip(prios, total, strict=True)],
            fontsize=8,
        )
        lowest = min([d / t * 100 for d, t in zip(default, total, strict=True)] + [100.0])
        ax.set_ylim(max(0.0, lowest - 10), 100.5)
        ax.set_ylabel("% of the slice's pods placed")
        p = s["plan"]
        ax.set_title(
            f"{s['nodes']} nodes: {p['status']}{' (proven)' if p['proven_optimal'] else ''}\n"
            f"{p['moves']} moves, {p['evictions']} evictions, {p['solve_seconds']:.1f} s, "
            f"{s['peak_rss_mb']:.0f} MB",
            fontsize=9,
        )
    axes[0][0].legend(loc="lower left", fontsize=8)
    cpus = doc["machine"]["cpus"]
    fig.suptitle(
        f"openb slices: default scheduler (preemption, trace order) vs planner, "
        f"{doc['config']['time_limit']:g} s window, {cpus} cores"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument("--plot-only", type=Path, default=None, metavar="JSON")
    args, rest = parser.parse_known_args(argv)
    if args.plot_only is not None:
        plot(json.loads(args.plot_only.read_text()), args.plot)
        print(f"wrote {args.plot}")
        return 0
    sys.path.insert(0, str(ROOT))
    from dunnage.cli import main as dunnage

    code = dunnage(["bench", "openb", *rest, "--save", str(args.results)])
    if args.results.is_file():
        plot(json.loads(args.results.read_text()), args.plot)
        print(f"wrote {args.results} and {args.plot}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
