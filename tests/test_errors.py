"""The shared input checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dunnage.cli import main
from dunnage.errors import InputError, require_positive


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_require_positive_refuses_zero_negative_and_non_finite(value: float) -> None:
    with pytest.raises(InputError, match=r"^--x: must be a positive number$"):
        require_positive(value, "--x")


@pytest.mark.parametrize("value", [None, 1e-9, 5.0])
def test_require_positive_takes_positive_numbers_and_none(value: float | None) -> None:
    require_positive(value, "--x")


def test_a_nan_time_limit_is_refused_by_the_planner_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--time-limit nan` passed the old `<= 0` check and reached the solver."""
    snapshot = tmp_path / "empty.yaml"
    snapshot.write_text("apiVersion: v1\nkind: List\nitems: []\n")
    assert main(["plan", str(snapshot), "--time-limit", "nan"]) == 2
    assert "--time-limit: must be a positive number" in capsys.readouterr().err
