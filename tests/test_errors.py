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


def test_a_component_that_fails_to_start_is_reported_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dunnage cluster up` whose etcd exits at once (here a stand-in binary): an error line
    with the component's last output and where the logs are, and nothing left running."""
    from dunnage.devcluster import cluster as devcluster

    binaries = tmp_path / "bin"
    binaries.mkdir()
    for name in devcluster.BINARIES:
        stand_in = binaries / name
        stand_in.write_text("#!/bin/sh\necho 'cannot lock the data directory' >&2\nexit 1\n")
        stand_in.chmod(0o755)
    monkeypatch.setattr(devcluster, "bin_dir", lambda *_: binaries)
    assert main(["cluster", "up", "--dir", str(tmp_path / "c"), "--bare"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dunnage: error: cluster up failed: etcd exited during start-up")
    assert "cannot lock the data directory" in err and "Traceback" not in err
    assert f"# logs: {tmp_path / 'c' / 'logs'}" in err
    assert devcluster.DevCluster(tmp_path / "c").running() == []


def test_cluster_down_where_none_ran_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cluster", "down", "--dir", str(tmp_path / "never")]) == 0
    assert capsys.readouterr().out == f"# no cluster ran in {tmp_path / 'never'}\n"
