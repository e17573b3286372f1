"""bench/paper_grid_diff.py: scenario-by-scenario comparison of two paper-grid runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

_PATH = Path(__file__).resolve().parent.parent / "bench" / "paper_grid_diff.py"
_spec = importlib.util.spec_from_file_location("paper_grid_diff", _PATH)
assert _spec is not None and _spec.loader is not None
diff = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diff)


def plan(name: str, placed: dict[str, int], moves: int = 0, evictions: int = 0) -> dict[str, Any]:
    return {
        "scenario": name,
        "nodes": 8,
        "time_limit": 1.0,
        "placed_after": placed,
        "moves": moves,
        "evictions": evictions,
    }


def test_placements_compare_by_the_highest_priority_first(tmp_path: Path, capsys: Any) -> None:
    old = {
        "plans": [
            plan("a", {"1": 5, "3": 2}),  # new places one more at priority 3, fewer at 1: better
            plan("b", {"1": 5, "3": 2}, moves=4),  # same placement, fewer moves
            plan("c", {"1": 5, "3": 2}),  # new places fewer at 3: worse
            plan("only-old", {"1": 1}),
        ]
    }
    new = {
        "plans": [
            plan("a", {"1": 3, "3": 3}),
            plan("b", {"1": 5, "3": 2}, moves=1),
            plan("c", {"1": 9, "3": 1}),
        ]
    }
    result = diff.compare(old, new)[1.0]
    assert dict(result["outcomes"]) == {"better": 1, "same": 1, "worse": 1}
    assert result["same_placement"]["less_disruption"] == 1
    assert (result["same_placement"]["moves_old"], result["same_placement"]["moves_new"]) == (4, 1)
    paths = [tmp_path / "old.json", tmp_path / "new.json"]
    for path, doc in zip(paths, (old, new), strict=True):
        path.write_text(json.dumps(doc))
    assert diff.main([str(p) for p in paths]) == 0
    assert "better in 1, same in 1, worse in 1" in capsys.readouterr().out


placements = st.dictionaries(st.sampled_from(["0", "1", "2"]), st.integers(0, 5), min_size=3)


@given(st.lists(st.tuples(placements, placements), min_size=1, max_size=8))
def test_swapping_the_runs_swaps_better_and_worse(pairs: list[tuple[dict, dict]]) -> None:
    old = {"plans": [plan(str(i), a) for i, (a, _) in enumerate(pairs)]}
    new = {"plans": [plan(str(i), b) for i, (_, b) in enumerate(pairs)]}
    forward, backward = diff.compare(old, new)[1.0], diff.compare(new, old)[1.0]
    assert forward["outcomes"]["better"] == backward["outcomes"]["worse"]
    assert forward["outcomes"]["same"] == backward["outcomes"]["same"]
    assert sum(forward["outcomes"].values()) == len(pairs)
