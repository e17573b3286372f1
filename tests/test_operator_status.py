"""ModelService status derivation: conditions, reasons, transition times, events."""

from __future__ import annotations

from typing import Any

from dunnage.operator import status as st
from dunnage.operator.spec import parse
from tests.test_operator_render import body, pd_body

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:01:00Z"


def deployment(
    replicas: int,
    ready: int,
    *,
    updated: int | None = None,
    total: int | None = None,
    generation: int = 1,
    observed: int = 1,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas if total is None else total,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": replicas if updated is None else updated,
            "conditions": conditions or [],
        },
    }


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def derive(live: dict[str, Any], problem: st.Problem | None = None, **kw: Any) -> dict[str, Any]:
    ms = parse(pd_body())
    args: dict[str, Any] = {
        "observed_generation": ms.generation,
        "problem": problem,
        "previous": None,
        "now": T0,
    }
    args.update(kw)
    return st.derive(ms, live, **args)


def test_all_roles_ready() -> None:
    status = derive({"prefill": deployment(2, 2), "decode": deployment(3, 3)})
    assert conds(status) == {
        "Ready": ("True", "AllRolesReady"),
        "Progressing": ("False", "Complete"),
        "Degraded": ("False", "AsExpected"),
    }
    assert status["summary"] == "prefill 2/2, decode 3/3"
    assert status["mode"] == "PrefillDecode"
    assert status["roles"]["decode"] == {
        "deployment": "llm-decode",
        "replicas": 3,
        "readyReplicas": 3,
        "updatedReplicas": 3,
        "availableReplicas": 3,
        "replicasOwner": "ModelService",
    }
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])


def test_missing_and_partial_roles_are_not_ready() -> None:
    status = derive({"prefill": deployment(2, 1)})
    assert conds(status)["Ready"] == ("False", "RolesNotReady")
    assert status["summary"] == "prefill 1/2, decode -/3"
    assert conds(status)["Progressing"] == ("True", "RollingOut")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "not ready: prefill 1/2, decode -/3"


def test_rollout_in_flight_is_progressing_not_ready() -> None:
    # New template seen, one pod updated, an old pod still terminating.
    status = derive({"prefill": deployment(2, 2, updated=1, total=3), "decode": deployment(3, 3)})
    assert conds(status)["Ready"] == ("False", "RolesNotReady")
    assert conds(status)["Progressing"] == ("True", "RollingOut")
    # The Deployment controller has not seen the new template yet.
    status = derive(
        {"prefill": deployment(2, 2, generation=2, observed=1), "decode": deployment(3, 3)}
    )
    assert conds(status)["Ready"][0] == "False"


def test_older_generation_is_reconciling() -> None:
    status = derive(
        {"prefill": deployment(2, 2), "decode": deployment(3, 3)}, observed_generation=2
    )
    assert conds(status)["Ready"] == ("False", "Reconciling")
    assert conds(status)["Progressing"] == ("True", "RollingOut")


def test_blocking_problem_degrades_and_blocks() -> None:
    problem = st.Problem(st.PRIORITY_CLASS_NOT_FOUND, "PriorityClass 'x' does not exist")
    status = derive({}, problem)
    assert conds(status) == {
        "Ready": ("False", st.PRIORITY_CLASS_NOT_FOUND),
        "Progressing": ("False", "Blocked"),
        "Degraded": ("True", st.PRIORITY_CLASS_NOT_FOUND),
    }
    assert st.blocking_problem(status) == problem


def test_deployment_problems_degrade() -> None:
    stuck = deployment(
        3,
        1,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet has timed out progressing.",
            }
        ],
    )
    status = derive({"prefill": deployment(2, 2), "decode": stuck})
    assert conds(status)["Degraded"] == ("True", st.ROLLOUT_STUCK)
    assert "llm-decode: ReplicaSet has timed out" in status["conditions"][2]["message"]
    assert st.blocking_problem(status) is None  # read from the Deployments, not blocking
    failing = deployment(
        2,
        0,
        conditions=[
            {"type": "ReplicaFailure", "status": "True", "message": "pods forbidden: quota"}
        ],
    )
    status = derive({"prefill": failing, "decode": deployment(3, 3)})
    assert conds(status)["Degraded"] == ("True", st.REPLICA_FAILURE)
    assert conds(status)["Progressing"] == ("True", "RollingOut")


def test_transition_time_moves_only_on_flip() -> None:
    ready = {"prefill": deployment(2, 2), "decode": deployment(3, 3)}
    first = derive(ready, now=T0)
    again = derive(ready, previous=first, now=T1)
    assert again == first  # re-deriving an unchanged status is a no-op
    flipped = derive(
        {"prefill": deployment(2, 1), "decode": deployment(3, 3)}, previous=first, now=T1
    )
    times = {c["type"]: c["lastTransitionTime"] for c in flipped["conditions"]}
    assert times == {"Ready": T1, "Progressing": T1, "Degraded": T0}


def test_events_on_ready_and_degraded_transitions() -> None:
    ready = derive({"prefill": deployment(2, 2), "decode": deployment(3, 3)})
    assert st.transitions(None, ready) == [("Normal", "Ready", "prefill 2/2, decode 3/3")]
    assert st.transitions(ready, ready) == []
    problem = st.Problem(st.REJECTED, "Service ns/llm: exists")
    degraded = derive({}, problem, previous=ready)
    assert st.transitions(ready, degraded) == [("Warning", st.REJECTED, "Service ns/llm: exists")]
    assert ("Normal", "Recovered", "no longer Rejected") in st.transitions(degraded, ready)


def test_serve_mode_and_autoscaled_owner() -> None:
    ms = parse(body(autoscaling={"policyRef": {"name": "p"}}))
    status = st.derive(
        ms, {"serve": deployment(7, 7)}, observed_generation=3, problem=None, previous=None, now=T0
    )
    assert status["mode"] == "Serve"
    assert status["roles"]["serve"]["replicas"] == 7  # the Deployment's count, the policy's
    assert status["roles"]["serve"]["replicasOwner"] == "AutoscalingPolicy"
    assert conds(status)["Ready"] == ("True", "AllRolesReady")


def test_invalid_status_has_conditions_only() -> None:
    problem = st.Problem(st.INVALID_SPEC, "spec.roles: bad")
    status = st.invalid(4, problem, None, T0)
    assert status["observedGeneration"] == 4
    assert conds(status)["Degraded"] == ("True", st.INVALID_SPEC)
    assert st.blocking_problem(status) == problem
