"""The permission check before a component starts (dunnage.cluster.access, and the
operator's check_access).

The API server's answers come from a stand-in here; the e2e (test_operator.py, the chart test)
runs the operator with the chart's ClusterRole and with less.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest

from dunnage.cluster.access import Permission
from dunnage.errors import InputError
from dunnage.operator import autoscaler
from dunnage.operator.commands import check_access


class Authorization:
    """Answers SelfSubjectAccessReviews: everything but ``refused`` (verb, resource, namespace)
    is allowed. Records what was asked."""

    def __init__(
        self, refused: Iterable[tuple[str, str, str | None]] = (), fail: bool = False
    ) -> None:
        self.refused = set(refused)
        self.fail = fail
        self.asked: list[tuple[str, str, str | None, str | None]] = []

    def create_self_subject_access_review(self, review: Any) -> Any:
        if self.fail:
            raise ConnectionError("connection refused")
        a = review.spec.resource_attributes
        self.asked.append((a.verb, a.resource, a.namespace, a.subresource))
        allowed = (a.verb, a.resource, a.namespace) not in self.refused
        return SimpleNamespace(status=SimpleNamespace(allowed=allowed))


@pytest.fixture
def authorization(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """check_access against a stand-in; ``watched`` counts watch_autoscalers calls."""
    from kubernetes import client

    state: dict[str, Any] = {"auth": Authorization(), "watched": 0}
    monkeypatch.setattr(client, "AuthorizationV1Api", lambda _api: state["auth"])

    def watch() -> None:
        state["watched"] += 1

    monkeypatch.setattr(autoscaler, "watch_autoscalers", watch)
    return state


def test_a_rule_reads_as_kubectl_auth_can_i_takes_it() -> None:
    assert Permission("patch", "dunnage.io", "modelservices", "status").rule == (
        "patch modelservices/status.dunnage.io"
    )
    assert Permission("create", "", "events").rule == "create events"


def test_everything_granted_starts_with_the_hpa_index(authorization: dict[str, Any]) -> None:
    check_access(object(), [], peering=True)
    assert authorization["watched"] == 1
    asked = authorization["auth"].asked
    assert ("patch", "modelservices", None, "status") in asked
    assert ("watch", "clusterkopfpeerings", None, None) in asked  # all namespaces: cluster peering
    assert ("list", "horizontalpodautoscalers", None, None) in asked


def test_each_namespace_is_asked_for_and_peering_only_when_on(
    authorization: dict[str, Any],
) -> None:
    check_access(object(), ["a", "b"], peering=False)
    asked = authorization["auth"].asked
    assert {n for (_, r, n, _) in asked if r == "deployments"} == {"a", "b"}
    assert {n for (_, r, n, _) in asked if r == "priorityclasses"} == {None}  # cluster-scoped
    assert not [r for (_, r, _, _) in asked if "kopfpeerings" in r]
    authorization["auth"].asked.clear()
    check_access(object(), ["a"], peering=True)
    assert ("patch", "kopfpeerings", "a", None) in authorization["auth"].asked


def test_a_missing_permission_it_needs_is_named_and_nothing_starts(
    authorization: dict[str, Any],
) -> None:
    authorization["auth"] = Authorization(
        {("create", "events", "b"), ("get", "priorityclasses", None)}
    )
    with pytest.raises(InputError) as caught:
        check_access(object(), ["a", "b"], peering=False)
    message = str(caught.value)
    assert "create events (in namespace b)" in message
    assert "get priorityclasses.scheduling.k8s.io (cluster-wide)" in message
    assert "in namespace a" not in message
    assert authorization["watched"] == 0


def test_without_the_hpa_watch_it_starts_without_the_hpa_index(
    authorization: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    authorization["auth"] = Authorization({("watch", "horizontalpodautoscalers", None)})
    check_access(object(), [], peering=False)
    assert authorization["watched"] == 0
    assert "HorizontalPodAutoscalers are not checked" in caplog.text
    assert "watch horizontalpodautoscalers.autoscaling (cluster-wide)" in caplog.text


def test_when_the_question_fails_it_starts_as_before(
    authorization: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    authorization["auth"] = Authorization(fail=True)
    check_access(object(), [], peering=False)
    assert authorization["watched"] == 1
    assert "could not ask the API server" in caplog.text
