#!/usr/bin/env python3
"""Run the "Priority Matters" grid benchmark; write JSON to bench/results/ and a plot to docs/.

    .venv/bin/python bench/paper_grid.py --time-limit 1 10 --seeds 10
    .venv/bin/python bench/paper_grid.py --plot-only bench/results/paper_grid.json

Extra arguments are passed to `dunnage bench paper` (see `dunnage bench paper --help`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "paper_grid.json"
PLOT = ROOT / "docs" / "bench_paper_grid.png"


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc["summary"] if r["priorities"] == "all" and r["planned"]]
    windows = sorted({r["window"] for r in rows})
    fig, axes = plt.subplots(1, len(windows), figsize=(6 * len(windows), 4), squeeze=False)
    colours = {"improved": "#2a9d8f", "certified": "#264653", "undecided": "#e76f51"}
    for ax, window in zip(axes[0], windows, strict=True):
        sel = [r for r in rows if r["window"] == window]
        labels = [str(r["nodes"]) for r in sel]
        bottom = [0.0] * len(sel)
        for cat, colour in colours.items():
            values = [r[f"{cat}_pct"] or 0.0 for r in sel]
            ax.bar(labels, values, bottom=bottom, color=colour, label=cat)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        for r, label in zip(sel, labels, strict=True):
            ax.text(label, 101, f"n={r['planned']}", ha="center", va="bottom", fontsize=7)
        paper = {1.0: "paper, 4 prio: 44/19/37", 10.0: "paper, 4 prio: 74/20/6"}.get(window)
        ax.set_title(f"{window:g} s window" + (f"  ({paper})" if paper else ""), fontsize=9)
        ax.set_xlabel("nodes")
        ax.set_ylabel("% of scenarios the default left pending")
        ax.set_ylim(0, 110)
        ax.axhline(95, color="grey", linestyle=":", linewidth=1)
    axes[0][0].legend(loc="lower left", fontsize=8)
    cpus = doc["machine"]["cpus"]
    fig.suptitle(f"Paper grid: planner vs default scheduler (with preemption), {cpus} cores")
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
        doc = json.loads(args.plot_only.read_text())
        plot(doc, args.plot)
        print(f"wrote {args.plot}")
        return 0
    sys.path.insert(0, str(ROOT))
    from dunnage.cli import main as dunnage

    code = dunnage(["bench", "paper", *rest, "--save", str(args.results)])
    if args.results.is_file():
        plot(json.loads(args.results.read_text()), args.plot)
        print(f"wrote {args.results} and {args.plot}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
