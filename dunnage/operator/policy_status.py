"""The operator's writes of AutoscalingPolicy status, combined per policy.

Every ModelService's autoscaling loop writes its entry and its decisions into the status of the
policy it uses, and a policy is often shared by many. Written one by one, each with the
policy's resourceVersion, they refuse each other (409) whenever two loops write from the same
read, and the loops read the policy from a watch that lags their own writes. So a process
writes each policy's status through one :class:`PolicyStatusWriter`: a loop hands it its
change (:class:`~dunnage.autoscaling.loop.StatusChange`) and waits; whichever loop finds the
policy free writes every change waiting for it as one patch
(:func:`~dunnage.autoscaling.loop.combine_status_changes`), made from the policy as this
process last wrote it (the API server's answer to that write), or as read when someone else
wrote it since or its spec is newer. Another writer (an admin, another tool) costs one 409 and
a read; the process's own loops never refuse each other.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dunnage.autoscaling.loop import StatusChange, combine_status_changes, generation
from dunnage.operator.reconcile import ApiError

log = logging.getLogger(__name__)

PolicyKey = tuple[str, str, str]  # namespace, name, uid


class PolicyStatusApi(Protocol):
    def read_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The policy as the API server has it now (not from the watch); None if gone."""
        ...

    def patch_policy_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        """Merge-patch the status; the policy as written. With ``resource_version``, ApiError
        409 if the policy changed since."""
        ...

    def json_patch_policy_status(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply a JSON patch to the status (no precondition but the patch's own tests: an
        ApiError, 422, when one fails); the policy as written."""
        ...


@dataclass
class _Waiting:
    change: StatusChange
    done: bool = False
    written: bool = False


@dataclass
class PolicyStatusWriter:
    """One process's writes of policy status (see the module's docstring). Thread-safe: kopf
    runs the loops' ticks in a thread pool."""

    # Told of each request: "written" with the number of changes it carried, else (with 0)
    # "conflict" (409: written by someone else since), "refused" (422: a JSON patch's test
    # failed) or "error" (anything else, the policy's read again included).
    observe: Callable[[str, int], None] = lambda result, changes: None
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _locks: dict[PolicyKey, threading.Lock] = field(default_factory=dict)
    _waiting: dict[PolicyKey, list[_Waiting]] = field(default_factory=dict)
    # The policy as this process last wrote it: fresher than the watch.
    _written: dict[PolicyKey, dict[str, Any]] = field(default_factory=dict)

    def write(self, api: PolicyStatusApi, policy: Mapping[str, Any], change: StatusChange) -> bool:
        """Write ``change`` to the status of ``policy`` (as the caller read it), with the
        changes other threads are waiting to write there; whether it was written (False when
        it had nothing to write, or the write failed: logged)."""
        key = _key(policy)
        mine = _Waiting(change)
        with self._guard:
            self._waiting.setdefault(key, []).append(mine)
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if not mine.done:  # else the thread before wrote it with its own
                with self._guard:
                    batch = self._waiting.pop(key)
                    written = self._written.get(key)
                self._flush(api, key, _fresher(policy, written), batch)
        return mine.written

    def _flush(
        self,
        api: PolicyStatusApi,
        key: PolicyKey,
        policy: Mapping[str, Any] | None,
        batch: list[_Waiting],
    ) -> None:
        namespace, name, _ = key
        try:
            for attempt in range(2):
                if policy is None:
                    return
                combined = combine_status_changes(policy, [_guarded(w.change, key) for w in batch])
                if combined is None:
                    return
                after = None
                if combined.json_patch is not None:
                    try:
                        after = api.json_patch_policy_status(namespace, name, combined.json_patch)
                    except ApiError as exc:  # an entry changed since: the whole status then
                        self.observe("refused" if exc.status == 422 else "error", 0)
                        log.debug(
                            "AutoscalingPolicy %s/%s: JSON patch of the status refused: %s",
                            namespace,
                            name,
                            exc,
                        )
                if after is None:
                    version = (policy.get("metadata") or {}).get("resourceVersion")
                    try:
                        after = api.patch_policy_status(
                            namespace, name, combined.merge_patch, version
                        )
                    except ApiError as exc:
                        self.observe("conflict" if exc.status == 409 else "error", 0)
                        if exc.status != 409 or attempt:
                            self._forget(key)
                            log.warning(
                                "status of AutoscalingPolicy %s/%s not written: %s",
                                namespace,
                                name,
                                exc,
                            )
                            return
                        # Written by someone else since (or the spec edited): read it again.
                        try:
                            policy = api.read_policy(namespace, name)
                        except ApiError as exc:
                            self.observe("error", 0)
                            self._forget(key)
                            log.warning(
                                "AutoscalingPolicy %s/%s not read again: %s", namespace, name, exc
                            )
                            return
                        continue
                with self._guard:
                    self._written[key] = after
                self.observe("written", sum(combined.made))
                for waiting, made in zip(batch, combined.made, strict=True):
                    waiting.written = made
                return
        finally:
            for waiting in batch:
                waiting.done = True

    def forget(self, policy: Mapping[str, Any]) -> None:
        """Drop what is kept for a deleted policy."""
        key = _key(policy)
        with self._guard:
            self._written.pop(key, None)
            self._locks.pop(key, None)

    def _forget(self, key: PolicyKey) -> None:
        with self._guard:
            self._written.pop(key, None)


def _guarded(change: StatusChange, key: PolicyKey) -> StatusChange:
    """``change`` whose failure (a bug in making it) is logged and leaves it unwritten, not
    the other loops' changes written with it."""

    def make(body: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            return change.make(body)
        except Exception:
            log.exception(
                "AutoscalingPolicy %s/%s: a status change (of %s) could not be made",
                key[0],
                key[1],
                change.model_service or "a release",
            )
            return None

    return StatusChange(make, change.model_service)


def _key(policy: Mapping[str, Any]) -> PolicyKey:
    meta = policy.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid"))


def _fresher(read: Mapping[str, Any], written: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The policy to make a write from: as this process last wrote it, unless the caller's
    read shows a newer spec (an edit since, which that write's answer does not show)."""

    if written is None or generation(read) > generation(written):
        return read
    return written
