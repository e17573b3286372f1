"""The reconcile sequence against an in-memory API that models server-side apply ownership of
spec.replicas (the one field whose ownership the operator hands over)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dunnage.operator import render as r
from dunnage.operator import status as st
from dunnage.operator.reconcile import ApiError, Object, owns_replicas, reconcile, status_only
from dunnage.operator.spec import ModelService
from tests.test_operator_render import body, pd_body

Key = tuple[str, str, str]


class FakeApi:
    def __init__(self, priority_classes: tuple[str, ...] = ()) -> None:
        self.objects: dict[Key, Object] = {}
        self.replica_owners: dict[Key, set[str]] = {}
        self.priority_classes = set(priority_classes)
        self.statuses: list[Object] = []
        self.calls: list[tuple[str, Key, str, bool]] = []
        self.reject: set[Key] = set()
        self.model_services: dict[tuple[str, str], Object] = {}

    # --- the Api protocol ---

    def apply(
        self, obj: Object, *, field_manager: str = r.FIELD_MANAGER, dry_run: bool = False
    ) -> Object:
        key = r.key(obj)
        self.calls.append(("apply", key, field_manager, dry_run))
        if key in self.reject:
            raise ApiError(422, f"{key[0]} {key[1]}/{key[2]}: already owned by another controller")
        current = copy.deepcopy(self.objects.get(key))
        owners = set(self.replica_owners.get(key, set()))
        if current is None:
            current = copy.deepcopy(obj)
            current["metadata"]["uid"] = f"uid-{key[2]}"
        else:
            current["metadata"].update(copy.deepcopy(obj["metadata"]))
            if obj.get("spec", {}).keys() - {"replicas"}:  # a full configuration
                replicas = current["spec"].get("replicas")
                current["spec"] = copy.deepcopy(obj["spec"])
                if replicas is not None:
                    current["spec"]["replicas"] = replicas  # decided below
        if obj["kind"] == "Deployment":
            wanted = obj.get("spec", {}).get("replicas")
            if wanted is not None:
                if current["spec"].get("replicas") != wanted:
                    owners = set()  # forced: the others lose the field
                current["spec"]["replicas"] = wanted
                owners.add(field_manager)
            else:
                owners.discard(field_manager)
                if not owners:  # nobody owns it any more: back to the default
                    current["spec"]["replicas"] = 1
            current["metadata"]["managedFields"] = [
                {"manager": m, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
                for m in sorted(owners)
            ]
        if not dry_run:
            self.objects[key] = current
            if obj["kind"] == "Deployment":
                self.replica_owners[key] = owners
        return copy.deepcopy(current)

    def get(self, kind: str, namespace: str, name: str) -> Object | None:
        self.calls.append(("get", (kind, namespace, name), "", False))
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found else None

    def get_model_service(self, namespace: str, name: str) -> Object | None:
        return self.model_services.get((namespace, name))

    def remove_finalizer(
        self, namespace: str, name: str, finalizers: list[str], finalizer: str
    ) -> None:
        raise NotImplementedError  # (no reconcile removes finalizers)

    def priority_class_exists(self, name: str) -> bool:
        return name in self.priority_classes

    def apply_status(self, ms: ModelService, status: Object) -> None:
        self.statuses.append(copy.deepcopy(status))

    def list_owned(self, kind: str, namespace: str, model_service: str) -> list[Object]:
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in self.objects.items()
            if k == kind
            and ns == namespace
            and o["metadata"].get("labels", {}).get(r.MODEL_SERVICE_LABEL) == model_service
        ]

    def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        self.calls.append(("delete", (kind, namespace, name), "", False))
        self.objects.pop((kind, namespace, name), None)

    # --- helpers ---

    def writes(self) -> list[tuple[str, Key, str, bool]]:
        return [c for c in self.calls if c[0] in ("apply", "delete") and not c[3]]

    def replicas(self, name: str) -> int:
        return int(self.objects[("Deployment", "ns", name)]["spec"]["replicas"])

    def scale(self, name: str, replicas: int, manager: str = "kubectl") -> None:
        key = ("Deployment", "ns", name)
        self.objects[key]["spec"]["replicas"] = replicas
        self.replica_owners[key] = {manager}

    def set_ready(self) -> None:
        for (kind, _, _), obj in self.objects.items():
            if kind == "Deployment":
                n = obj["spec"].get("replicas", 1)
                obj["metadata"]["generation"] = 1
                obj["status"] = {
                    "observedGeneration": 1,
                    "replicas": n,
                    "readyReplicas": n,
                    "availableReplicas": n,
                    "updatedReplicas": n,
                }


def with_status(raw: dict[str, Any], status: Object) -> dict[str, Any]:
    return {**raw, "status": status}


def conds(status: Object) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_creates_every_object_after_a_full_dry_run() -> None:
    api = FakeApi()
    out = reconcile(api, pd_body())
    assert out.problem is None
    applies = [c for c in api.calls if c[0] == "apply"]
    dry = [c[1] for c in applies if c[3]]
    real = [c[1] for c in applies if not c[3]]
    assert dry == real and len(real) == 7
    assert applies.index(next(c for c in applies if not c[3])) == 7  # every dry run first
    assert all(c[2] == r.FIELD_MANAGER for c in applies)
    assert api.replicas("llm-decode") == 3 and api.replicas("llm-prefill") == 2
    assert conds(out.status)["Ready"] == ("False", "RolesNotReady")
    assert api.statuses == [out.status]


def test_reconcile_again_writes_no_new_status_and_becomes_ready() -> None:
    api = FakeApi()
    first = reconcile(api, pd_body())
    again = reconcile(api, with_status(pd_body(), first.status))
    assert again.status == first.status or again.status["conditions"] == first.status["conditions"]
    assert len(api.statuses) == 1  # unchanged status: not written again
    api.set_ready()
    ready = reconcile(api, with_status(pd_body(), first.status))
    assert conds(ready.status)["Ready"] == ("True", "AllRolesReady")
    assert ("Normal", "Ready", "prefill 2/2, decode 3/3") in ready.events


def test_missing_priority_class_writes_nothing_but_status() -> None:
    api = FakeApi()
    out = reconcile(api, pd_body(priorityClassName="llm-high"))
    assert api.writes() == [] and not any(c[0] == "apply" for c in api.calls)
    assert out.problem is not None and out.problem.reason == st.PRIORITY_CLASS_NOT_FOUND
    assert out.retry
    assert conds(out.status)["Degraded"] == ("True", st.PRIORITY_CLASS_NOT_FOUND)
    assert ("Warning", st.PRIORITY_CLASS_NOT_FOUND, out.problem.message) in out.events
    api.priority_classes.add("llm-high")
    fixed = reconcile(api, with_status(pd_body(priorityClassName="llm-high"), out.status))
    assert fixed.problem is None and len(api.objects) == 7
    assert conds(fixed.status)["Degraded"] == ("False", "AsExpected")


def test_a_roles_priority_class_must_exist_too() -> None:
    """Decode above prefill (the planner evicts prefill first, decode holds in-flight KV
    caches): the role's class is checked like the ModelService's, and named with its field."""
    raw = pd_body(priorityClassName="llm")
    raw["spec"]["roles"]["decode"]["priorityClassName"] = "llm-decode"
    api = FakeApi(priority_classes=("llm",))
    out = reconcile(api, raw)
    assert api.writes() == []
    assert out.problem is not None and out.problem.reason == st.PRIORITY_CLASS_NOT_FOUND
    assert "'llm-decode' (spec.roles.decode.priorityClassName)" in out.problem.message
    api.priority_classes.add("llm-decode")
    fixed = reconcile(api, with_status(raw, out.status))
    assert fixed.problem is None
    classes = {
        name: obj["spec"]["template"]["spec"]["priorityClassName"]
        for (kind, _, name), obj in api.objects.items()
        if kind == "Deployment"
    }
    assert classes == {"llm-prefill": "llm", "llm-decode": "llm-decode"}


def test_refused_dry_run_creates_nothing() -> None:
    api = FakeApi()
    api.reject.add(("Service", "ns", "llm"))  # the front Service name is taken
    out = reconcile(api, pd_body())
    assert api.objects == {} and api.writes() == []
    assert out.problem is not None and out.problem.reason == st.REJECTED
    assert "nothing was created" in out.problem.message
    assert "Service ns/llm" in out.problem.message


def test_invalid_spec_is_reported_not_retried() -> None:
    api = FakeApi()
    raw = body(roles={"serve": {"replicas": 1}, "prefill": {"replicas": 1}})
    out = reconcile(api, raw)
    assert out.problem is not None and out.problem.reason == st.INVALID_SPEC
    assert not out.retry and api.calls == []
    assert conds(out.status)["Degraded"] == ("True", st.INVALID_SPEC)
    assert status_only(raw, {}) is None


def test_manual_scale_is_reverted_without_a_policy() -> None:
    api = FakeApi()
    reconcile(api, pd_body())
    api.scale("llm-decode", 9)
    reconcile(api, pd_body())
    assert api.replicas("llm-decode") == 3
    assert owns_replicas(api.objects[("Deployment", "ns", "llm-decode")])


def test_policy_owned_count_survives_reconciles() -> None:
    raw = pd_body(autoscaling={"policyRef": {"name": "llm-default"}})
    api = FakeApi()
    reconcile(api, raw)
    # Created with the ModelService's count, then handed over: the operator owns no replicas.
    assert api.replicas("llm-decode") == 3
    for name in ("llm-decode", "llm-prefill"):
        deployment = api.objects[("Deployment", "ns", name)]
        assert not owns_replicas(deployment)
        assert owns_replicas(deployment, r.HANDOVER_MANAGER)
    api.scale("llm-decode", 7, manager="dunnage-autoscaler")
    reconcile(api, raw)
    assert api.replicas("llm-decode") == 7  # not reconciled back
    writes = api.writes()
    reconcile(api, raw)
    assert [w for w in api.writes()[len(writes) :] if w[2] == r.HANDOVER_MANAGER] == []


def test_policy_added_later_keeps_the_current_count() -> None:
    api = FakeApi()
    reconcile(api, pd_body())
    api.scale("llm-prefill", 2, manager=r.FIELD_MANAGER)
    raw = pd_body(autoscaling={"policyRef": {"name": "llm-default"}})
    reconcile(api, raw)
    # Without the hand-over the operator dropping the field would reset it to 1.
    assert api.replicas("llm-decode") == 3 and api.replicas("llm-prefill") == 2
    assert not owns_replicas(api.objects[("Deployment", "ns", "llm-decode")])
    handover = [c for c in api.calls if c[2] == r.HANDOVER_MANAGER]
    assert handover and all(not c[3] for c in handover)


def test_policy_removed_takes_the_count_back() -> None:
    raw = pd_body(autoscaling={"policyRef": {"name": "llm-default"}})
    api = FakeApi()
    reconcile(api, raw)
    api.scale("llm-decode", 12, manager="dunnage-autoscaler")
    reconcile(api, pd_body())
    assert api.replicas("llm-decode") == 3
    assert owns_replicas(api.objects[("Deployment", "ns", "llm-decode")])


def test_mode_switch_prunes_only_its_own_old_objects() -> None:
    api = FakeApi()
    reconcile(api, body())
    assert ("Deployment", "ns", "llm-serve") in api.objects
    # Someone else's object with the label but another owner is left alone.
    stranger = copy.deepcopy(api.objects[("Service", "ns", "llm-serve")])
    stranger["metadata"]["name"] = "llm-other"
    stranger["metadata"]["ownerReferences"] = [{"uid": "someone-else", "controller": True}]
    api.objects[("Service", "ns", "llm-other")] = stranger
    reconcile(api, pd_body())
    names = {(k, n) for k, _, n in api.objects}
    assert ("Deployment", "llm-serve") not in names
    assert ("PodDisruptionBudget", "llm-serve") not in names
    assert ("Service", "llm-serve") not in names
    assert ("Service", "llm-other") in names
    assert ("Deployment", "llm-prefill") in names and ("Deployment", "llm-decode") in names


def test_failed_write_is_apply_failed_and_retried() -> None:
    class Flaky(FakeApi):
        def apply(self, obj: Object, **kw: Any) -> Object:
            if obj["kind"] == "PodDisruptionBudget" and not kw.get("dry_run"):
                raise ApiError(500, "etcd timeout")
            return super().apply(obj, **kw)

    api = Flaky()
    out = reconcile(api, pd_body())
    assert out.problem is not None and out.problem.reason == st.APPLY_FAILED and out.retry
    fixed = reconcile(FakeApi(), pd_body())
    assert fixed.problem is None


def test_status_only_keeps_a_blocking_problem_and_generation() -> None:
    api = FakeApi()
    blocked = reconcile(api, pd_body(priorityClassName="missing"))
    raw = with_status(pd_body(priorityClassName="missing"), blocked.status)
    status = status_only(raw, {})
    assert status is not None
    assert conds(status)["Degraded"] == ("True", st.PRIORITY_CLASS_NOT_FOUND)
    assert status["observedGeneration"] == blocked.status["observedGeneration"]


@pytest.mark.parametrize("autoscaled", [False, True])
def test_killed_after_any_write_converges_to_the_same_state(autoscaled: bool) -> None:
    """A reconcile cut short after its k-th write, then run again, ends as an uninterrupted one."""
    raw = pd_body(**({"autoscaling": {"policyRef": {"name": "p"}}} if autoscaled else {}))
    reference = FakeApi()
    reconcile(reference, raw)
    total = len(reference.writes())

    class Killed(Exception):
        pass

    for k in range(total):

        class Dying(FakeApi):
            budget = k

            def apply(self, obj: Object, **kw: Any) -> Object:
                if not kw.get("dry_run"):
                    if self.budget == 0:
                        raise Killed
                    self.budget -= 1
                return super().apply(obj, **kw)

        api = Dying()
        with pytest.raises(Killed):
            reconcile(api, raw)
        api.budget = 10**6
        reconcile(api, raw)
        assert api.objects.keys() == reference.objects.keys()
        for key, obj in reference.objects.items():
            assert api.objects[key]["spec"] == obj["spec"], key
        assert api.replica_owners == reference.replica_owners


def test_dry_run_and_prune_only_when_they_can_matter() -> None:
    raw = pd_body()
    raw["metadata"]["generation"] = 1
    api = FakeApi()
    first = reconcile(api, raw)
    assert any(c[3] for c in api.calls)  # the first apply of a generation is dry-run first
    assert not [c for c in api.calls if c[0] == "delete"]
    api.calls.clear()
    reconcile(api, with_status(raw, first.status))  # e.g. a resume: nothing new
    assert not any(c[3] for c in api.calls)
    changed = pd_body()
    changed["metadata"]["generation"] = 2
    api.calls.clear()
    reconcile(api, with_status(changed, first.status))
    assert any(c[3] for c in api.calls)


def test_switch_blocked_then_unblocked_still_prunes_the_old_role() -> None:
    api = FakeApi()
    serve = body()
    serve["metadata"]["generation"] = 1
    first = reconcile(api, serve)
    switched = pd_body(priorityClassName="later")
    switched["metadata"]["generation"] = 2
    blocked = reconcile(api, with_status(switched, first.status))
    assert blocked.problem is not None and ("Deployment", "ns", "llm-serve") in api.objects
    api.priority_classes.add("later")
    reconcile(api, with_status(switched, blocked.status))
    assert ("Deployment", "ns", "llm-serve") not in api.objects
    assert ("Deployment", "ns", "llm-decode") in api.objects
