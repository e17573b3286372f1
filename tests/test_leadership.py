"""Leader election settings: bad values name their flag, and what is accepted is exactly what
the Kubernetes client's election config accepts (it calls sys.exit on the rest). The election
itself runs against a real API server in e2e/test_planner_restart.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.leaderelection import electionconfig

from dunnage.cli import main
from dunnage.cluster.leadership import ElectionSettings, _describe, default_identity
from dunnage.errors import InputError


def settings(**times: int) -> ElectionSettings:
    return ElectionSettings(namespace="ns", lease_name="lease", identity="me", **times)


def test_defaults_are_kube_schedulers() -> None:
    s = settings()
    assert (s.lease_duration, s.renew_deadline, s.retry_period) == (15, 10, 2)


@pytest.mark.parametrize(
    ("times", "flag"),
    [
        ({"retry_period": 0}, "--leader-elect-retry-period"),
        ({"renew_deadline": 2, "retry_period": 2}, "--leader-elect-renew-deadline"),
        ({"lease_duration": 10, "renew_deadline": 10}, "--leader-elect-lease-duration"),
    ],
)
def test_bad_times_name_their_flag(times: dict[str, int], flag: str) -> None:
    with pytest.raises(InputError, match=flag):
        settings(**times)


def test_empty_names_are_refused() -> None:
    with pytest.raises(InputError, match="--leader-elect-namespace"):
        ElectionSettings(namespace="", lease_name="lease", identity="me")
    with pytest.raises(InputError, match="--leader-elect-lease"):
        ElectionSettings(namespace="ns", lease_name="", identity="me")


@given(
    lease=st.integers(-2, 40),
    renew=st.integers(-2, 40),
    retry=st.integers(-2, 40),
)
def test_accepted_exactly_when_the_clients_config_accepts(
    lease: int, renew: int, retry: int
) -> None:
    try:
        settings(lease_duration=lease, renew_deadline=renew, retry_period=retry)
        ours = True
    except InputError:
        ours = False
    try:
        electionconfig.Config(object(), lease, renew, retry, lambda: None, None)
        theirs = True
    except SystemExit:
        theirs = False
    assert ours == theirs


def test_identity_is_the_pod_and_a_fresh_suffix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "extender-7f9c")
    first, second = default_identity(), default_identity()
    assert first.startswith("extender-7f9c_") and second.startswith("extender-7f9c_")
    assert first != second  # a restarted container is a new candidate


def test_api_errors_read_as_one_line() -> None:
    class Forbidden:
        status, reason = 403, "Forbidden"
        body = '{"kind": "Status", "message": "leases.coordination.k8s.io is forbidden"}'

    assert _describe(Forbidden()) == "403 Forbidden: leases.coordination.k8s.io is forbidden"

    class NoBody:
        status, reason, body = 500, "Internal Server Error", None

    assert _describe(NoBody()) == "500 Internal Server Error"


def test_leader_election_needs_a_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extender", "serve", "--port", "0", "--leader-elect"]) == 2
    assert "--leader-elect: needs a cluster" in capsys.readouterr().err


def test_bad_lease_times_fail_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["extender", "serve", "--port", "0", "--kubeconfig", "/nonexistent/kubeconfig"]
    argv += ["--leader-elect", "--leader-elect-lease-duration", "5"]
    assert main(argv) == 2
    assert "--leader-elect-lease-duration: must be more than" in capsys.readouterr().err
