"""The kube-scheduler extender v1 wire protocol, as pure functions of bytes (no HTTP here).

Types (k8s.io/kube-scheduler/extender/v1; no JSON tags, so keys are the Go field names):
``ExtenderArgs{Pod, Nodes, NodeNames}`` in for filter and prioritize;
``ExtenderFilterResult{Nodes, NodeNames, FailedNodes, FailedAndUnresolvableNodes, Error}`` out;
``HostPriorityList = [{"Host", "Score"}]`` out of prioritize, Score in 0..10;
``ExtenderPreemptionArgs{Pod, NodeNameToVictims, NodeNameToMetaVictims}`` in and
``ExtenderPreemptionResult{NodeNameToMetaVictims}`` out of preempt, with
``MetaVictims{Pods: [{"UID"}], NumPDBViolations}``. Go decodes keys case-insensitively, so we
accept any case on input and always answer in PascalCase.

With ``nodeCacheCapable: true`` requests carry ``NodeNames`` and answers use ``NodeNames``; with
full ``Nodes`` lists the filter answers with the surviving Node objects. Anything malformed
raises :class:`ProtocolError` (the server turns it into HTTP 400).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

from dunnage.scheduler_extender.nodestate import (
    DEFAULT_GPU_RESOURCES,
    NodeGpus,
    NodeState,
    gpus_in,
    pod_gpus,
)
from dunnage.scheduler_extender.planbook import PlanBook, PlanBookView, PodRef, Steer

MAX_PRIORITY = 10  # extenderv1.MaxExtenderPriority
MIN_PRIORITY = 0
NEUTRAL = 5


class ProtocolError(ValueError):
    """A request the extender cannot read (HTTP 400)."""


# --- decoding ----------------------------------------------------------------------------


def _field(obj: Mapping[str, Any], name: str) -> Any:
    """``obj[name]``, matching the key case-insensitively as Go's encoding/json does."""
    value = obj.get(name)
    if value is None:
        lower = name.lower()
        for key, candidate in obj.items():
            if isinstance(key, str) and key.lower() == lower and candidate is not None:
                return candidate
    return value


def decode(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("body must be a JSON object")
    return doc


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{what} must be a string")
    return value


def parse_pod(doc: Mapping[str, Any]) -> tuple[PodRef, Mapping[str, Any]]:
    """The ``Pod`` of a request: its reference and its spec."""
    pod = _field(doc, "Pod")
    if not isinstance(pod, Mapping):
        raise ProtocolError("Pod must be a Pod object")
    meta = pod.get("metadata")
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping):
        raise ProtocolError("Pod.metadata must be an object")
    spec = pod.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise ProtocolError("Pod.spec must be an object")
    owner = None
    refs = meta.get("ownerReferences")
    if refs is not None:
        if not isinstance(refs, list):
            raise ProtocolError("Pod.metadata.ownerReferences must be a list")
        for ref in refs:
            if isinstance(ref, Mapping) and ref.get("controller") is True:
                owner = f"{_text(ref.get('kind'), 'ownerReference kind')}/" + _text(
                    ref.get("name"), "ownerReference name"
                )
    priority = spec.get("priority")
    if priority is None:
        priority = 0
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ProtocolError("Pod.spec.priority must be an integer")
    ref = PodRef(
        namespace=_text(meta.get("namespace"), "Pod.metadata.namespace") or "default",
        name=_text(meta.get("name"), "Pod.metadata.name"),
        uid=_text(meta.get("uid"), "Pod.metadata.uid"),
        owner=owner,
        priority=priority,
    )
    return ref, spec


@dataclass(frozen=True, slots=True)
class Candidates:
    """The nodes of an ``ExtenderArgs``: names, plus the Node objects when not cache-capable."""

    names: list[str]
    nodes: list[Mapping[str, Any]] | None  # None: the request carried NodeNames


def parse_candidates(doc: Mapping[str, Any]) -> Candidates:
    names = _field(doc, "NodeNames")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ProtocolError("NodeNames must be a list of strings")
        return Candidates(names, None)
    node_list = _field(doc, "Nodes")
    if node_list is None:
        return Candidates([], None)
    if not isinstance(node_list, Mapping):
        raise ProtocolError("Nodes must be a NodeList object")
    items = node_list.get("items")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ProtocolError("Nodes.items must be a list")
    out_names = []
    for index, item in enumerate(items):
        meta = item.get("metadata") if isinstance(item, Mapping) else None
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if not isinstance(name, str):
            raise ProtocolError(f"Nodes.items[{index}].metadata.name must be a string")
        out_names.append(name)
    return Candidates(out_names, items)


def parse_victims(doc: Mapping[str, Any]) -> dict[str, tuple[list[str], int]]:
    """Node -> (victim UIDs, NumPDBViolations), from meta victims or full victims."""
    out: dict[str, tuple[list[str], int]] = {}
    for key, pod_uid in (("NodeNameToMetaVictims", _meta_uid), ("NodeNameToVictims", _pod_uid)):
        table = _field(doc, key)
        if table is None:
            continue
        if not isinstance(table, Mapping):
            raise ProtocolError(f"{key} must be an object")
        for node, victims in table.items():
            if victims is None:
                out.setdefault(node, ([], 0))
                continue
            if not isinstance(victims, Mapping):
                raise ProtocolError(f"{key}[{node}] must be an object")
            pods = _field(victims, "Pods")
            if pods is None:
                pods = []
            if not isinstance(pods, list):
                raise ProtocolError(f"{key}[{node}].Pods must be a list")
            violations = _field(victims, "NumPDBViolations")
            if violations is None:
                violations = 0
            if not isinstance(violations, int) or isinstance(violations, bool):
                raise ProtocolError(f"{key}[{node}].NumPDBViolations must be an integer")
            uids = [pod_uid(p, f"{key}[{node}].Pods") for p in pods]
            if node not in out or not out[node][0]:
                out[node] = (uids, violations)
    return out


def _meta_uid(pod: Any, where: str) -> str:
    if not isinstance(pod, Mapping):
        raise ProtocolError(f"{where} items must be objects")
    return _text(_field(pod, "UID"), f"{where} UID")


def _pod_uid(pod: Any, where: str) -> str:
    if not isinstance(pod, Mapping):
        raise ProtocolError(f"{where} items must be Pod objects")
    meta = pod.get("metadata")
    if not isinstance(meta, Mapping):
        raise ProtocolError(f"{where} items need metadata")
    return _text(meta.get("uid"), f"{where} metadata.uid")


# --- encoding ----------------------------------------------------------------------------


def _names_json(names: list[str]) -> str:
    return "[" + ",".join(map(encode_basestring_ascii, names)) + "]"


def _failed_json(failed: Mapping[str, list[str]]) -> str:
    """A FailedNodesMap from reason -> node names (reasons repeat: each is encoded once)."""
    parts = []
    for reason, names in failed.items():
        if names:
            sep = ":" + encode_basestring_ascii(reason)
            parts.append((sep + ",").join(map(encode_basestring_ascii, names)) + sep)
    return "{" + ",".join(parts) + "}"


def filter_result_json(
    candidates: Candidates,
    kept: list[str],
    failed: Mapping[str, list[str]],
    unresolvable: Mapping[str, list[str]],
) -> bytes:
    """An ExtenderFilterResult; ``failed`` and ``unresolvable`` map reason -> node names."""
    if candidates.nodes is None:
        nodes_part = '"Nodes":null,"NodeNames":' + _names_json(kept)
    else:
        keep = set(kept)
        items = [
            n for n, name in zip(candidates.nodes, candidates.names, strict=True) if name in keep
        ]
        nodes_part = (
            '"Nodes":'
            + json.dumps({"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": items})
            + ',"NodeNames":null'
        )
    return (
        "{"
        + nodes_part
        + ',"FailedNodes":'
        + _failed_json(failed)
        + ',"FailedAndUnresolvableNodes":'
        + _failed_json(unresolvable)
        + ',"Error":""}'
    ).encode()


def priorities_json(names: list[str], scores: list[int]) -> bytes:
    return (
        "["
        + ",".join(
            f'{{"Host":{encode_basestring_ascii(n)},"Score":{s}}}'
            for n, s in zip(names, scores, strict=True)
        )
        + "]"
    ).encode()


# --- scoring -----------------------------------------------------------------------------


def best_fit_score(request: float, node: NodeGpus | None) -> int:
    """GPU-aware best fit, 0..9 (10 is for planned nodes).

    A GPU pod prefers the node left with the fewest free GPUs after it lands (exact fit 9, each
    GPU left over one less, down to 1), so whole GPUs stay free together for large instances;
    a node without room for it scores 0. A pod without GPUs prefers nodes without GPUs (9), then
    GPU nodes whose GPUs are all taken (5), then GPU nodes with more free GPUs (less).
    Unknown nodes score a neutral 5.
    """
    if node is None:
        return NEUTRAL
    if request > 0:
        leftover = node.free - request
        if leftover < -1e-9:
            return MIN_PRIORITY
        return max(1, 9 - math.ceil(leftover - 1e-9))
    if node.capacity <= 0:
        return 9
    if node.free <= 1e-9:
        return NEUTRAL
    return max(1, NEUTRAL - math.ceil(node.free - 1e-9))


# How long a replacement sent to a target counts there without being seen bound (a pod that
# kube-scheduler could not place yet is filtered again within its back-off, at most 10 s).
ASSUME_SECONDS = 15.0


class ExtenderCore:
    """Filter, prioritize and preempt, over a :class:`PlanBook` and optional node state.

    ``reserve_nodes``: pods that no plan covers are kept off the nodes an executing plan frees
    up (else a bystander could take the room the plan made for its pods).
    ``unresolvable_elsewhere``: for a planned pod, the other nodes go to
    ``FailedAndUnresolvableNodes`` so kube-scheduler's own preemption does not evict there.
    """

    def __init__(
        self,
        book: PlanBook | None = None,
        state: NodeState | None = None,
        *,
        gpu_resources: tuple[str, ...] = DEFAULT_GPU_RESOURCES,
        reserve_nodes: bool = True,
        unresolvable_elsewhere: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.book = book if book is not None else PlanBook()
        self._clock = clock
        # Owner-steered pods sent to one target node and not yet seen bound: pod UID ->
        # (owner, node, when). The node state learns of a binding only from its watch, so
        # without these two replacements filtered back to back would both see room on the
        # same target (kube-scheduler's own assume cache, for the plan's quotas).
        self._assumed: dict[str, tuple[str, str, float]] = {}
        self._assumed_lock = threading.Lock()
        self.state = state
        self._gpu_resources = gpu_resources
        self.reserve_nodes = reserve_nodes
        self.unresolvable_elsewhere = unresolvable_elsewhere
        # Best-fit scores per GPU request, per node, as of node state version _scored_at; kept
        # up to date node by node (each binding changes one node's GPUs, not the cluster's).
        self._scores_lock = threading.Lock()
        self._scored_at = -1
        self._score_tables: dict[float, dict[str, int]] = {}

    @property
    def gpu_resources(self) -> tuple[str, ...]:
        """The GPU resources scored: the node state's (it follows the policy), else those
        given."""
        return self.state.gpu_resources if self.state is not None else self._gpu_resources

    # --- verbs ---------------------------------------------------------------------------

    def filter(self, body: bytes) -> tuple[bytes, Steer | None]:
        doc = decode(body)
        pod, _ = parse_pod(doc)
        candidates = parse_candidates(doc)
        view = self.book.view()
        steer = view.steer(pod)
        failed: dict[str, list[str]] = {}
        unresolvable: dict[str, list[str]] = {}
        if steer is not None:
            allowed = self._with_room_for_owner(pod, steer, candidates.names)
            kept = [n for n in candidates.names if n in allowed]
            others = [n for n in candidates.names if n not in allowed]
            target = unresolvable if self.unresolvable_elsewhere else failed
            target[steer.reason()] = others
        elif self.reserve_nodes and view.reserved:
            kept = []
            reserved = view.reserved
            for name in candidates.names:
                plan = reserved.get(name)
                if plan is None:
                    kept.append(name)
                else:
                    failed.setdefault(f"node reserved by dunnage plan {plan}", []).append(name)
        else:
            kept = candidates.names
        return filter_result_json(candidates, kept, failed, unresolvable), steer

    def prioritize(self, body: bytes) -> tuple[bytes, Steer | None]:
        doc = decode(body)
        pod, spec = parse_pod(doc)
        candidates = parse_candidates(doc)
        steer = self.book.view().steer(pod)
        names = candidates.names
        if steer is not None:
            planned = set(steer.nodes)
            scores = [MAX_PRIORITY if n in planned else MIN_PRIORITY for n in names]
            return priorities_json(names, scores), steer
        request = round(pod_gpus(spec, self.gpu_resources), 3)
        if self.state is not None and self.state.synced:
            if spec.get("resourceClaims"):  # and what they ask of devices serving GPUs
                request = round(request + self.state.claimed_gpus(_field(doc, "Pod")), 3)
            scores = self._scores(request, names)
        elif candidates.nodes is not None:
            scores = [
                best_fit_score(request, _gpus_of_node(node, self.gpu_resources))
                for node in candidates.nodes
            ]
        else:
            scores = [NEUTRAL] * len(names)
        return priorities_json(names, scores), None

    def preempt(self, body: bytes) -> tuple[bytes, Steer | None]:
        doc = decode(body)
        pod, _ = parse_pod(doc)
        victims = parse_victims(doc)
        view = self.book.view()
        steer = view.steer(pod)
        result: dict[str, dict[str, Any]] = {}
        if steer is not None:
            for node in steer.nodes:
                uids = [u for u in view.victims_on(steer.plan, node) if self._on_node(u, node)]
                if uids:  # kube-scheduler rejects a node with no victims
                    violations = victims.get(node, ([], 0))[1]
                    result[node] = _meta_victims(uids, violations)
        else:
            reserved = view.reserved if self.reserve_nodes else {}
            for node, (uids, violations) in victims.items():
                if node not in reserved and uids:
                    result[node] = _meta_victims(uids, violations)
        return json.dumps({"NodeNameToMetaVictims": result}).encode(), steer

    # --- helpers -------------------------------------------------------------------------

    def _with_room_for_owner(self, pod: PodRef, steer: Steer, feasible: Sequence[str]) -> set[str]:
        """For a moved pod's replacement: the one target node furthest below the pods the plan
        puts there (replacements are interchangeable: counts keep them on their targets),
        counting replacements already sent there and not yet seen bound. Targets among
        ``feasible`` (the nodes kube-scheduler's own filters passed) come first: a target
        whose victim is still terminating would make the replacement wait for a retry while
        another target has room now. Only a feasible choice is assumed. Empty when every
        target has its count."""
        owner = pod.owner_key
        state = self.state
        if not steer.quota or owner is None or state is None or not state.synced:
            return set(steer.nodes)
        quota = dict(steer.quota)
        if any(n not in quota for n in steer.nodes):  # no count to keep: any target
            return set(steer.nodes)
        now = self._clock()
        with self._assumed_lock:
            for uid, (_, _, when) in list(self._assumed.items()):
                if now - when > ASSUME_SECONDS or state.pod_node(uid) is not None:
                    del self._assumed[uid]
            self._assumed.pop(pod.uid, None)
            assumed: dict[str, int] = {}
            for other, node, _ in self._assumed.values():
                if other == owner:
                    assumed[node] = assumed.get(node, 0) + 1
            room = {n: quota[n] - state.owned_on(owner, n) - assumed.get(n, 0) for n in steer.nodes}
            open_now = set(feasible)
            # The first of equals: stable.
            best = max(steer.nodes, key=lambda n: (room[n] > 0 and n in open_now, room[n]))
            if room[best] <= 0:
                return set()
            if pod.uid and best in open_now:
                self._assumed[pod.uid] = (owner, best, now)
            return {best}

    def _on_node(self, uid: str, node: str) -> bool:
        """False only when the node state knows the pod is gone or elsewhere."""
        if self.state is None or not self.state.synced:
            return True
        return self.state.pod_node(uid) == node

    def _scores(self, request: float, names: list[str]) -> list[int]:
        assert self.state is not None
        with self._scores_lock:
            version, changed = self.state.changes_since(self._scored_at)
            tables = self._score_tables
            if changed is None:
                tables.clear()
            elif changed:
                for node in changed:
                    gpus = self.state.node_gpus(node)
                    for req, table in tables.items():
                        if gpus is None:
                            table.pop(node, None)
                        else:
                            table[node] = best_fit_score(req, gpus)
            self._scored_at = version
            cached = tables.get(request)
            if cached is None:
                cached = {n: best_fit_score(request, g) for n, g in self.state.gpus().items()}
                if len(tables) < 64:
                    tables[request] = cached
            return [cached.get(n, NEUTRAL) for n in names]


def _meta_victims(uids: list[str], violations: int) -> dict[str, Any]:
    return {"Pods": [{"UID": u} for u in uids], "NumPDBViolations": violations}


def _gpus_of_node(node: Mapping[str, Any], names: tuple[str, ...]) -> NodeGpus | None:
    """From a Node object alone: allocatable GPUs, with usage unknown (counted as free)."""
    status = node.get("status")
    alloc = status.get("allocatable") if isinstance(status, Mapping) else None
    if not isinstance(alloc, Mapping):
        return None
    capacity = gpus_in(alloc, names)
    return NodeGpus(capacity, capacity)


def view_summary(view: PlanBookView) -> dict[str, Any]:
    """What /readyz and debugging show about the plan book."""
    return {"plans": sorted(view.plans), "reservedNodes": len(view.reserved)}
