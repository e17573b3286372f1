#!/usr/bin/env python3
"""Compare two paper-grid results scenario by scenario (per window).

    .venv/bin/python bench/paper_grid_diff.py OLD.json NEW.json

For each scenario planned in both runs: is NEW's placement better, the same or worse
(lexicographically by priority, highest first), by cluster size; and where it is the same, how
the evictions and moves compare. Summary rows hide how much two runs differ: the planner's
steps stop on wall-clock limits, so even one commit run twice differs (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Key = tuple[str, float]


def placement(plan: Mapping[str, Any]) -> tuple[int, ...]:
    """Pods placed per priority, highest first: tuples compare lexicographically."""
    placed = plan["placed_after"]
    return tuple(placed[p] for p in sorted(placed, key=lambda p: -int(p)))


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[float, dict[str, Any]]:
    before: dict[Key, Mapping[str, Any]] = {
        (p["scenario"], p["time_limit"]): p for p in old["plans"]
    }
    out: dict[float, dict[str, Any]] = {}
    for plan in new["plans"]:
        key = (plan["scenario"], plan["time_limit"])
        if key not in before:
            continue
        was = before[key]
        window = out.setdefault(
            plan["time_limit"],
            {"outcomes": Counter(), "by_nodes": defaultdict(Counter), "same_placement": Counter()},
        )
        a, b = placement(was), placement(plan)
        outcome = "better" if b > a else "worse" if b < a else "same"
        window["outcomes"][outcome] += 1
        window["by_nodes"][plan["nodes"]][outcome] += 1
        if outcome == "same":
            same = window["same_placement"]
            same["moves_old"] += was["moves"]
            same["moves_new"] += plan["moves"]
            same["evictions_old"] += was["evictions"]
            same["evictions_new"] += plan["evictions"]
            old_cost = (was["evictions"], was["moves"])
            new_cost = (plan["evictions"], plan["moves"])
            if new_cost != old_cost:
                same["less_disruption" if new_cost < old_cost else "more_disruption"] += 1
    return out


def format_comparison(result: Mapping[float, Mapping[str, Any]]) -> str:
    lines = []
    for window in sorted(result):
        r = result[window]
        o, s = r["outcomes"], r["same_placement"]
        lines.append(
            f"{window:g} s: {sum(o.values())} scenarios in both; new placement better in "
            f"{o['better']}, same in {o['same']}, worse in {o['worse']}"
        )
        sizes = ", ".join(
            f"{n}: {c['better']}/{c['same']}/{c['worse']}" for n, c in sorted(r["by_nodes"].items())
        )
        lines.append(f"  by nodes (better/same/worse): {sizes}")
        lines.append(
            f"  same placement: less disruption in {s['less_disruption']}, more in "
            f"{s['more_disruption']}; moves {s['moves_old']} -> {s['moves_new']}, "
            f"evictions {s['evictions_old']} -> {s['evictions_new']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    docs = [json.loads(path.read_text()) for path in (args.old, args.new)]
    result = compare(*docs)
    if not result:
        print("no scenario is in both runs", file=sys.stderr)
        return 1
    print(format_comparison(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
