"""The combined writes of AutoscalingPolicy status: the merge-patch algebra they rest on, the
combination of several loops' changes, and the writer under threads."""

from __future__ import annotations

import copy
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as hs

from dunnage.autoscaling import loop
from dunnage.autoscaling import spec as policy_spec
from dunnage.autoscaling.loop import StatusChange
from dunnage.operator.policy_status import PolicyStatusWriter
from dunnage.operator.reconcile import ApiError
from tests.test_autoscaling_loop import FakeScaleApi, merge_patch, policy_body

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
READY = (True, "Scaling", "scaling")

# JSON values as a status holds them: no nulls (a merge patch cannot write one).
_scalars = hs.one_of(hs.booleans(), hs.integers(-5, 5), hs.text("ab", max_size=2))
_json = hs.recursive(
    _scalars,
    lambda inner: hs.one_of(
        hs.lists(inner, max_size=3), hs.dictionaries(hs.text("abc", max_size=2), inner, max_size=3)
    ),
    max_leaves=12,
)
_objects = hs.dictionaries(hs.text("abc", max_size=2), _json, max_size=4)


@settings(max_examples=300, deadline=None)
@given(old=_objects, new=_objects)
def test_the_merge_patch_between_two_statuses_turns_one_into_the_other(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    """As the API server applies it (the tests' own RFC 7386 reading) and as the writer folds
    it; and it names only what changed."""
    patch = loop.merge_patch_between(old, new)
    assert merge_patch(old, patch) == new
    assert loop.apply_merge_patch(old, patch) == new
    assert all(key not in old or old[key] != new.get(key) for key in patch)
    assert loop.apply_merge_patch(old, new) == merge_patch(old, new)  # a patch, applied


def decision(minute: int, who: str) -> dict[str, Any]:
    stamp = (NOW + timedelta(minutes=minute)).strftime(policy_spec.STAMP)
    return {"time": stamp, "modelService": who, "role": "serve"}


def loop_change(read: dict[str, Any], who: str, minute: int | None) -> StatusChange:
    """What a loop hands the writer: its status made from its read of the policy (a decision
    at ``minute``, or only a refresh of its entry), made again from the policy as written."""
    own: dict[str, Any] = {"summary": f"serve={len(who)}"}
    if minute is not None:
        own["lastDecisions"] = loop.merge_decisions(read, [decision(minute, who)])[
            -policy_spec.MAX_DECISIONS :
        ]
    status = loop.shared_status(own, read, who, READY, NOW)
    return StatusChange(lambda body: loop.rebase_status(status, body, who, NOW), model_service=who)


@settings(max_examples=150, deadline=None)
@given(
    seen=hs.frozensets(hs.sampled_from("abcd")),
    changes=hs.lists(
        hs.tuples(hs.sampled_from("abcdef"), hs.none() | hs.integers(0, 59)),
        min_size=1,
        max_size=6,
        unique_by=lambda c: c[0],
    ),
    released=hs.frozensets(hs.sampled_from("abcdef"), max_size=2),
)
def test_combined_changes_write_what_they_would_one_after_another(
    seen: frozenset[str], changes: list[tuple[str, int | None]], released: frozenset[str]
) -> None:
    """Loops' changes (entries refreshed, decisions) and a release, combined: the one merge
    patch leaves the policy as writing them in turn would, and so does the JSON patch when
    there is one, which is exactly when every change touches only its own figures."""
    body = policy_body()
    body["metadata"]["resourceVersion"] = "1"
    for who in sorted(seen):  # entries already there, each written by its loop
        patch = loop_change(body, who, None).make(body)
        body["status"] = merge_patch(body.get("status"), patch)
    batch = [loop_change(body, who, minute) for who, minute in changes]
    if released:
        batch.append(StatusChange(lambda b: loop.released_status(b, set(released), NOW)))

    one_by_one = copy.deepcopy(body)
    made = []
    for change in batch:
        patch = change.make(one_by_one)
        made.append(patch is not None)
        if patch is not None:
            one_by_one["status"] = merge_patch(one_by_one.get("status"), patch)

    combined = loop.combine_status_changes(body, batch)
    assert combined is not None  # every loop's change has its entry to write
    assert combined.made == tuple(made)
    assert merge_patch(body.get("status"), combined.merge_patch) == one_by_one["status"]
    release_writes = bool(released) and made[-1]  # a release of no entry writes nothing
    own_only = not release_writes and all(who in seen and minute is None for who, minute in changes)
    assert (combined.json_patch is not None) == own_only
    if combined.json_patch is not None:
        applied = jsonpatch.apply_patch(body, combined.json_patch)
        assert applied["status"] == one_by_one["status"]


class SlowPolicyApi(FakeScaleApi):
    """The fake API server, answering each status write after ``delay`` seconds, one at a
    time, and counting the writes it refuses."""

    def __init__(self, policy: dict[str, Any], delay: float) -> None:
        super().__init__(policy, replicas=1)
        self.delay = delay
        self.refused = 0
        self.serve = threading.Lock()

    def patch_policy_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        time.sleep(self.delay)
        with self.serve:
            try:
                return super().patch_policy_status(namespace, name, status, resource_version)
            except ApiError:
                self.refused += 1
                raise

    def json_patch_policy_status(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        time.sleep(self.delay)
        with self.serve:
            try:
                return super().json_patch_policy_status(namespace, name, ops)
            except ApiError:
                self.refused += 1
                raise


def test_loops_writing_a_policy_at_once_are_combined_without_conflicts() -> None:
    """Eight loops decide at once, five times, each from the policy as read before any of
    them wrote (the watch lags): every decision and entry lands, none is refused, nothing is
    read again, and the waiting ones go out together in fewer writes than decisions."""
    policy = policy_body()
    policy["metadata"].update(resourceVersion="1", uid="p1")
    api = SlowPolicyApi(policy, delay=0.05)
    observed: list[tuple[str, int]] = []
    writer = PolicyStatusWriter(observe=lambda result, changes: observed.append((result, changes)))
    names = [f"ms{i}" for i in range(8)]
    rounds = 5
    start = threading.Barrier(len(names))
    results: list[bool] = []
    errors: list[BaseException] = []

    def run(who: str) -> None:
        try:
            for minute in range(rounds):
                read = copy.deepcopy(policy)  # the watch: what was there before any write
                start.wait(timeout=30)
                results.append(writer.write(api, read, loop_change(read, who, minute)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(who,)) for who in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and results == [True] * (rounds * len(names))
    status = api.policy["status"]  # type: ignore[index]
    assert set(status["modelServices"]) == set(names)
    everything = sorted(
        (decision(m, who) for who in names for m in range(rounds)), key=policy_spec.decision_order
    )
    assert status["lastDecisions"] == everything[-policy_spec.MAX_DECISIONS :]
    assert api.refused == 0 and api.reads == []
    writes = len(api.statuses) + len(api.json_patches)
    assert writes < rounds * len(names), writes
    # What the operator's metrics count: each write, and the changes it carried.
    assert {result for result, _ in observed} == {"written"} and len(observed) == writes
    assert sum(changes for _, changes in observed) == rounds * len(names)


def test_a_policy_written_elsewhere_since_costs_one_conflict_and_one_read() -> None:
    policy = policy_body()
    policy["metadata"].update(resourceVersion="1", uid="p1")
    api = SlowPolicyApi(policy, delay=0)
    observed: list[tuple[str, int]] = []
    writer = PolicyStatusWriter(observe=lambda result, changes: observed.append((result, changes)))
    assert writer.write(api, copy.deepcopy(policy), loop_change(policy, "a", 1))
    api.policy["status"]["summary"] = "edited"  # type: ignore[index]
    api.written()
    assert writer.write(api, copy.deepcopy(policy), loop_change(policy, "b", 2))
    assert api.refused == 1 and api.reads == ["policy pol"]
    assert observed == [("written", 1), ("conflict", 0), ("written", 1)]
    status = api.policy["status"]  # type: ignore[index]
    assert set(status["modelServices"]) == {"a", "b"}
    assert [d["modelService"] for d in status["lastDecisions"]] == ["a", "b"]

    # A change with nothing to write is not written; the policy gone, the write fails.
    assert not writer.write(api, policy, StatusChange(lambda body: None))
    api.policy = None
    assert not writer.write(api, policy, loop_change(policy, "c", 3))
    assert observed[3:] == [("error", 0)]  # 404; nothing written for the change of nothing


def test_a_deleted_policy_is_forgotten_and_its_namesake_written_from_its_own_read() -> None:
    """The writer keeps the policy as last written; deleted and made again under the same
    name (a new uid), the new one is written from its own read, not the old one's answer."""
    policy = policy_body()
    policy["metadata"].update(resourceVersion="1", uid="p1")
    api = SlowPolicyApi(policy, delay=0)
    writer = PolicyStatusWriter()
    assert writer.write(api, copy.deepcopy(policy), loop_change(policy, "a", 1))
    assert writer._written  # the answer, kept for the next write
    writer.forget(policy)
    assert not writer._written and not writer._locks

    again = policy_body()
    again["metadata"].update(resourceVersion="9", uid="p2")
    api.policy = copy.deepcopy(again)
    assert writer.write(api, copy.deepcopy(again), loop_change(again, "b", 2))
    assert api.refused == 0 and api.reads == []
    assert set(api.policy["status"]["modelServices"]) == {"b"}  # type: ignore[index]


def test_a_change_that_cannot_be_made_leaves_the_others_written() -> None:
    """A bug in one loop's change (its ``make`` raises) is logged; the changes waiting with it
    are written all the same."""
    policy = policy_body()
    policy["metadata"].update(resourceVersion="1", uid="p1")
    api = SlowPolicyApi(policy, delay=0.05)
    writer = PolicyStatusWriter()

    def broken(body: Any) -> dict[str, Any]:
        raise KeyError("a bug")

    start = threading.Barrier(3)
    results: dict[str, bool] = {}

    def run(who: str, change: StatusChange) -> None:
        start.wait(timeout=30)
        results[who] = writer.write(api, copy.deepcopy(policy), change)

    changes = {
        "a": loop_change(policy, "a", 1),
        "b": StatusChange(broken, model_service="b"),
        "c": loop_change(policy, "c", 2),
    }
    threads = [threading.Thread(target=run, args=item) for item in changes.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == {"a": True, "b": False, "c": True}
    status = api.policy["status"]  # type: ignore[index]
    assert set(status["modelServices"]) == {"a", "c"}
