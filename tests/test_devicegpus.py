"""The extender's GPU scoring on nodes whose GPUs a DRA driver publishes (no cluster)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dunnage.scheduler_extender.devicegpus import KINDS as DEVICE_KINDS
from dunnage.scheduler_extender.live import resync_node_state
from dunnage.scheduler_extender.nodestate import NodeGpus, NodeState
from dunnage.scheduler_extender.planbook import PlanBook
from dunnage.scheduler_extender.protocol import ExtenderCore, best_fit_score
from tests.dra_objects import (
    device_class,
    dra_pod,
    extended_pod,
    node_slice,
    partitioned_slices,
    shared_claim,
    taint_rule,
)
from tests.json_fuzz import replace_a_field

GPU = "nvidia.com/gpu"
H100 = 'device.attributes["gpu.example.com"].model == "h100"'


def node(name: str, gpus: int = 0) -> dict[str, Any]:
    allocatable = {"cpu": "32", "pods": "110", **({GPU: str(gpus)} if gpus else {})}
    return {"kind": "Node", "metadata": {"name": name}, "status": {"allocatable": allocatable}}


class Lists:
    """Objects by kind, as the watch cache lists them (ClusterCache.objects)."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.by_kind: dict[str, list[dict[str, Any]]] = {}
        for obj in objects:  # a kind replaced by something else is no kind at all
            if isinstance(obj["kind"], str):
                self.by_kind.setdefault(obj["kind"], []).append(obj)

    def objects(self, kind: str) -> list[dict[str, Any]]:
        return self.by_kind.get(kind, [])


def state_of(objects: list[dict[str, Any]]) -> NodeState:
    lists, state = Lists(objects), NodeState()
    state.reset(
        lists.objects("Node"),
        lists.objects("Pod"),
        {kind: lists.objects(kind) for kind in DEVICE_KINDS},
    )
    return state


def scores(state: NodeState, pod: dict[str, Any], names: list[str]) -> dict[str, int]:
    core = ExtenderCore(PlanBook(), state)
    body = json.dumps({"Pod": pod, "NodeNames": names}).encode()
    return {h["Host"]: h["Score"] for h in json.loads(core.prioritize(body)[0])}


def cluster() -> list[dict[str, Any]]:
    """A device plugin's node ``dp`` (8 GPUs, 2 taken) and a DRA node ``dra`` (4 devices of
    the class serving nvidia.com/gpu, 3 taken: a pod's own claim of 2, an extended resource
    pod's claim of 1)."""
    return [
        device_class("gpu", extended_resource=GPU),
        node("dp", 8),
        node("dra"),
        node_slice("dra", ["h100"] * 4),
        *extended_pod("plugin", 2, node="dp"),  # a device plugin's GPUs: no claim
        *dra_pod("claims", 2, node="dra", allocated=[0, 1]),
        *extended_pod("served", 1, node="dra", allocated=[2]),
        taint_rule("informs", "None", pool="dra"),  # a taint blocking nothing
    ]


def test_dra_devices_count_as_gpus_and_their_claims_as_used() -> None:
    state = state_of(cluster())
    # The extended resource pod on dra is counted once: by its claim, not its container.
    assert state.gpus() == {"dp": NodeGpus(8, 6), "dra": NodeGpus(4, 1)}
    # A pod asking one GPU as an extended resource, or by a claim: dra is the exact fit.
    asking = extended_pod("asking", 1)[0]
    assert scores(state, asking, ["dp", "dra"]) == {"dp": 4, "dra": 9}
    pod, claim = dra_pod("claiming", 1)
    state.apply("ADDED", "ResourceClaim", claim)
    assert state.claimed_gpus(pod) == 1
    assert scores(state, pod, ["dp", "dra"]) == {"dp": 4, "dra": 9}
    # A claim of two fits dp alone.
    pod, claim = dra_pod("pair", 2)
    state.apply("ADDED", "ResourceClaim", claim)
    assert scores(state, pod, ["dp", "dra"]) == {"dp": 5, "dra": 0}


def test_watch_events_keep_the_dra_gpus() -> None:
    objects = cluster()
    state = state_of([o for o in objects if o["kind"] in ("Node", "Pod")])
    assert state.gpus() == {"dp": NodeGpus(8, 6), "dra": NodeGpus(0, 0)}
    for obj in objects:
        if obj["kind"] not in ("Node", "Pod"):
            state.apply("ADDED", obj["kind"], obj)
    assert state.gpus()["dra"] == NodeGpus(4, 1)
    _, claim = dra_pod("claims", 2, node="dra", allocated=[0, 1])
    state.apply("DELETED", "ResourceClaim", claim)
    assert state.gpus()["dra"] == NodeGpus(4, 3)
    # A class that no longer serves nvidia.com/gpu takes the devices away.
    state.apply("MODIFIED", "DeviceClass", device_class("gpu"))
    assert state.gpus()["dra"] == NodeGpus(0, 0)
    state.apply("MODIFIED", "DeviceClass", device_class("gpu", extended_resource=GPU))
    state.apply("DELETED", "ResourceSlice", node_slice("dra", ["h100"] * 4))
    assert state.gpus()["dra"] == NodeGpus(0, 0)


def test_a_pod_asks_what_its_claims_request_of_classes_serving_gpus() -> None:
    state = state_of(cluster())
    pod, claim = dra_pod("p", 1)
    claim["spec"]["devices"]["requests"] = [
        {"name": "first", "firstAvailable": [{"deviceClassName": "gpu", "count": 2}, {}]},
        {"name": "all", "exactly": {"deviceClassName": "gpu", "allocationMode": "All"}},
        {"name": "nic", "exactly": {"deviceClassName": "nic", "count": 4}},
        {"name": "one", "exactly": {"deviceClassName": "gpu"}},
    ]
    state.apply("ADDED", "ResourceClaim", claim)
    # kube-scheduler tries the first alternative first; All's count is not known beforehand
    assert state.claimed_gpus(pod) == 3
    pod["spec"]["resourceClaims"] = [{"name": "gpus", "resourceClaimName": "p-gpus"}]
    del pod["status"]
    assert state.claimed_gpus(pod) == 3  # a claim of its own name
    # Allocated (to another pod sharing it): its devices are taken already, not asked again.
    shared = shared_claim("p-gpus", 2, node="dra", allocated=[3])
    state.apply("MODIFIED", "ResourceClaim", shared)
    assert state.claimed_gpus(pod) == 0


def test_only_devices_a_gpu_class_selects_and_the_planner_counts() -> None:
    state = state_of(
        [
            device_class("gpu", H100, extended_resource=GPU),
            device_class("other"),  # serves no GPU resource scored
            node("a"),
            node("b"),
            node("c"),
            node_slice("a", ["h100", "a100", "h100"]),
            node_slice("b", ["h100", "h100"], taints=[{"key": "k", "effect": "NoSchedule"}]),
            # partitions sharing counters: the planner does not count them either
            node_slice("c", ["h100"], consumesCounters=[{"counterSet": "s", "counters": {}}]),
        ]
    )
    assert state.gpus() == {"a": NodeGpus(2, 2), "b": NodeGpus(0, 0), "c": NodeGpus(0, 0)}


def test_a_device_taint_rule_takes_its_devices_out_until_it_goes() -> None:
    state = state_of([*cluster(), taint_rule("broken", pool="dra", device="gpu-3")])
    assert state.gpus()["dra"] == NodeGpus(3, 0)  # the free one is tainted
    state.apply("ADDED", "DeviceTaintRule", taint_rule("informs", "None", pool="dra"))
    assert state.gpus()["dra"] == NodeGpus(3, 0)
    state.apply("DELETED", "DeviceTaintRule", taint_rule("broken", pool="dra", device="gpu-3"))
    assert state.gpus()["dra"] == NodeGpus(4, 1)


def test_a_whole_gpu_with_a_slice_in_use_is_in_use() -> None:
    """Partitionable GPUs (whole, or two halves drawing on the same counters): the whole ones
    count, and one is in use while a half of it is allocated."""
    half = dra_pod("half", 1, node="a")[1]
    half["status"]["allocation"]["devices"]["results"][0]["device"] = "gpu-0-half-1"
    objects = [device_class("gpu", extended_resource=GPU), node("a"), *partitioned_slices("a", 2)]
    state = state_of([*objects, half])
    assert state.gpus() == {"a": NodeGpus(2, 1)}
    state.apply("DELETED", "ResourceClaim", half)
    assert state.gpus() == {"a": NodeGpus(2, 2)}
    whole = dra_pod("whole", 1, node="a", allocated=[1])[1]
    state.apply("ADDED", "ResourceClaim", whole)
    assert state.gpus() == {"a": NodeGpus(2, 1)}
    # The driver republishes gpu-1 as a plain device, then as a partitionable one again: the
    # claim holding it keeps it in use throughout.
    counters, devices = partitioned_slices("a", 2)
    state.apply("DELETED", "ResourceSlice", counters)
    state.apply("MODIFIED", "ResourceSlice", node_slice("a", ["h100"] * 2))
    assert state.gpus() == {"a": NodeGpus(2, 1)}
    state.apply("ADDED", "ResourceSlice", counters)
    state.apply("MODIFIED", "ResourceSlice", devices)
    assert state.gpus() == {"a": NodeGpus(2, 1)}


def test_a_class_named_among_the_gpu_resources_serves_them() -> None:
    state = NodeState(["deviceclass.resource.kubernetes.io/gpu"])
    state.reset(
        [node("a")],
        [],
        {"DeviceClass": [device_class("gpu")], "ResourceSlice": [node_slice("a", ["h100"] * 2)]},
    )
    assert state.gpus() == {"a": NodeGpus(2, 2)}


def test_malformed_dra_objects_are_left_out_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = node_slice("b", ["h100"])
    broken["spec"]["devices"] = "gpu-0"
    claim = dra_pod("p", 1, node="a")[1]
    claim["status"]["allocation"]["devices"]["results"][0]["device"] = 7
    with caplog.at_level(logging.WARNING):
        state = state_of(
            [
                device_class("gpu", extended_resource=GPU),
                {"kind": "DeviceClass", "metadata": {"name": "bad"}, "spec": {"selectors": 1}},
                node("a"),
                node("b"),
                node_slice("a", ["h100"] * 2),
                broken,
                claim,
            ]
        )
    assert state.gpus() == {"a": NodeGpus(2, 2), "b": NodeGpus(0, 0)}
    assert "DeviceClass bad" in caplog.text and "spec.selectors" in caplog.text
    assert f"ResourceSlice {broken['metadata']['name']}" in caplog.text
    assert "ResourceClaim ml/p-gpus" in caplog.text and "results[0].device" in caplog.text


# --- incremental equals afresh ------------------------------------------------------------

_NODES = ("a", "b")
_DEVICES = ("gpu-0", "gpu-1", "gpu-2", "gpu-3", "gpu-0-half-0", "gpu-1-half-1")
_dra_events = st.lists(
    st.one_of(
        # a node's slice: its devices' models (empty: deleted), or N partitionable GPUs
        st.tuples(
            st.just("slice"),
            st.sampled_from(_NODES),
            st.lists(st.sampled_from(["h100", "a100"]), max_size=4) | st.integers(1, 2),
        ),
        # the class serving GPUs: whether it serves nvidia.com/gpu, and selects h100s only
        st.tuples(st.just("class"), st.booleans(), st.booleans()),
        # a claim: its pod, its node and devices allocated there (None: deleted)
        st.tuples(
            st.just("claim"),
            st.integers(0, 5),
            st.sampled_from(_NODES),
            st.none() | st.lists(st.sampled_from(_DEVICES), max_size=3, unique=True),
        ),
        # a DeviceTaintRule on a node's pool, or one device of it (None: deleted)
        st.tuples(
            st.just("rule"),
            st.integers(0, 1),
            st.sampled_from(_NODES),
            st.none() | st.sampled_from([None, *_DEVICES]).map(lambda d: (d,)),
        ),
        st.tuples(st.just("score"), st.integers(0, 3)),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_dra_events)
def test_dra_scores_follow_every_change_like_a_fresh_state(events: list[tuple[Any, ...]]) -> None:
    """DRA GPUs kept object by object across watch events equal those of a state built afresh
    from the same objects, and so do the scores."""
    serving = device_class("gpu", extended_resource=GPU)
    objects: dict[tuple[str, str], dict[str, Any]] = {("DeviceClass", "gpu"): serving}
    state = state_of([node(n) for n in _NODES] + list(objects.values()))
    core = ExtenderCore(PlanBook(), state)

    def put(obj: dict[str, Any] | None, kind: str, name: str) -> None:
        old = objects.pop((kind, name), None)
        if obj is None:
            if old is not None:
                state.apply("DELETED", kind, old)
            return
        objects[(kind, name)] = obj
        state.apply("MODIFIED", kind, obj)

    for event in events:
        if event[0] == "slice":
            _, where, models = event
            counters, devices = (
                partitioned_slices(where, models)
                if isinstance(models, int)
                else (None, node_slice(where, models) if models else None)
            )
            put(counters, "ResourceSlice", f"{where}-gpu.example.com-counters")
            put(devices, "ResourceSlice", f"{where}-gpu.example.com")
        elif event[0] == "class":
            _, serves, h100 = event
            selectors = (H100,) if h100 else ()
            put(
                device_class("gpu", *selectors, extended_resource=GPU if serves else None),
                "DeviceClass",
                "gpu",
            )
        elif event[0] == "claim":
            _, index, where, allocated = event
            claim = None
            if allocated is not None:
                claim = dra_pod(f"p{index}", max(1, len(allocated)), node=where)[1]
                results = [
                    {"request": "gpu", "driver": "gpu.example.com", "pool": where, "device": d}
                    for d in allocated
                ]
                claim["status"] = {"allocation": {"devices": {"results": results}}}
            put(claim, "ResourceClaim", f"p{index}-gpus")
        elif event[0] == "rule":
            _, index, where, chosen = event
            rule = None if chosen is None else taint_rule(f"r{index}", pool=where, device=chosen[0])
            put(rule, "DeviceTaintRule", f"r{index}")
        else:
            fresh = state_of([node(n) for n in _NODES] + list(objects.values()))
            assert state.gpus() == fresh.gpus()
            asking = extended_pod("asking", event[1])[0]
            names = list(_NODES)
            answer = json.loads(
                core.prioritize(json.dumps({"Pod": asking, "NodeNames": names}).encode())[0]
            )
            expected = [best_fit_score(float(event[1]), fresh.gpus().get(n)) for n in names]
            assert [h["Score"] for h in answer] == expected


@settings(deadline=None)
@given(st.data())
def test_any_dra_object_field_replaced_keeps_the_state_and_its_scores(
    data: st.DataObject,
) -> None:
    """A malformed DRA object, listed or watched, is left out: never an exception, and the
    extender still answers."""
    objects = cluster()
    pod, claim = dra_pod("asking", 1)
    objects.append(claim)
    index = data.draw(
        st.sampled_from([i for i, o in enumerate(objects) if o["kind"] not in ("Node", "Pod")])
    )
    replace_a_field(objects[index], data)
    state = state_of(objects)
    state.apply(
        data.draw(st.sampled_from(["ADDED", "DELETED"])), objects[index]["kind"], objects[index]
    )
    answer = scores(state, pod, ["dp", "dra"])
    assert set(answer) == {"dp", "dra"}


def test_the_node_state_follows_the_policys_gpu_resources() -> None:
    """Rebuilt once a minute, or at once when the GPU resources to score change (an edit of
    the PackingPolicy's gpuResourceNames, checked every few seconds)."""
    lists = Lists([device_class("gpu"), node("a"), node_slice("a", ["h100"] * 2)])
    state = NodeState()
    core = ExtenderCore(PlanBook(), state)
    at = resync_node_state(state, lists, (GPU,), float("-inf"), 100.0)
    assert at == 100.0 and state.gpus() == {"a": NodeGpus(0, 0)}
    version = state.version
    assert resync_node_state(state, lists, (GPU,), at, 130.0) == 100.0  # not due
    assert state.version == version
    by_class = (GPU, "deviceclass.resource.kubernetes.io/gpu")
    assert resync_node_state(state, lists, by_class, at, 130.0) == 130.0
    assert state.gpu_resources == core.gpu_resources == by_class
    assert state.gpus() == {"a": NodeGpus(2, 2)}
    assert resync_node_state(state, lists, by_class, 130.0, 190.0) == 190.0  # due
