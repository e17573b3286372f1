"""Snapshot model: loading Kubernetes objects, effective requests, predicates, bad input."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dunnage.cluster import (
    Resources,
    load_snapshot,
    snapshot_from_list,
    snapshot_from_objects,
    snapshot_to_list,
    static_reason,
    to_units,
)
from dunnage.cluster.model import Operator, Requirement, SelectorTerm, Snapshot
from dunnage.errors import InputError
from tests.csi_objects import (
    attachment,
    claims,
    csi_claim,
    csi_driver,
    csi_node,
    storage_class,
    unbound_claim,
)


def node(name: str, cpu: str = "4", memory: str = "8Gi", gpus: int = 0, **extra: object) -> dict:
    alloc = {"cpu": cpu, "memory": memory, "pods": "110"}
    if gpus:
        alloc["nvidia.com/gpu"] = str(gpus)
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": extra.get("labels", {})},
        "spec": extra.get("spec", {}),
        "status": {"allocatable": alloc},
    }


def pod(name: str, spec: dict, **meta: object) -> dict:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "ns", **meta}, "spec": spec}


def test_effective_requests_follow_kube_scheduler() -> None:
    spec = {
        "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "1", "nvidia.com/gpu": "2"}}},
        ],
        "initContainers": [
            {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
            {"name": "big", "resources": {"requests": {"cpu": "3", "memory": "512Mi"}}},
        ],
        "overhead": {"cpu": "50m"},
    }
    snap = snapshot_from_objects([pod("p", spec)])
    req = snap.pods[0].requests
    # containers 1500m + sidecar 100m = 1600m; init peak = 100m + 3000m = 3100m; + 50m overhead
    assert req["cpu"] == 3150
    assert req["memory"] == 1024**3
    assert req["nvidia.com/gpu"] == 2  # request defaults to the limit
    assert req["pods"] == 1


def test_pod_level_requests_replace_the_containers_cpu_and_memory() -> None:
    """PodLevelResources (beta, on by default since 1.34): kube-scheduler takes cpu, memory and
    hugepages from spec.resources where it names them, the rest from the containers, then
    adds the overhead; a pod-level limit stands for a request no container makes."""
    containers = [
        {"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
        {"name": "b", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
    ]
    spec = {
        "containers": containers,
        "resources": {
            "requests": {"cpu": "3"},
            "limits": {"memory": "8Gi", "hugepages-2Mi": "4Mi"},
        },
        "overhead": {"cpu": "50m"},
    }
    req = snapshot_from_objects([pod("p", spec)]).pods[0].requests
    assert req["cpu"] == 3050  # the pod's 3 in place of the containers' 1, plus overhead
    assert req["memory"] == 1024**3  # a container asks: the pod-level limit is no request
    assert req["hugepages-2Mi"] == 4 * 1024**2  # no container asks: the limit stands for it
    assert req["nvidia.com/gpu"] == 1  # not a pod-level resource: the containers'
    spec["resources"] = {"requests": {"cpu": "0", "nvidia.com/gpu": "4"}}
    req = snapshot_from_objects([pod("p", spec)]).pods[0].requests
    assert req["cpu"] == 50 and req["nvidia.com/gpu"] == 1


def resized(spec: dict, status: dict) -> Resources:
    return snapshot_from_objects([{**pod("p", spec, uid="u"), "status": status}]).pods[0].requests


def container_status(name: str, allocated: dict | None, actuated: dict | None = None) -> dict:
    out: dict[str, Any] = {"name": name}
    if allocated is not None:
        out["allocatedResources"] = allocated
    if actuated is not None:
        out["resources"] = {"requests": actuated}
    return out


INFEASIBLE = {"type": "PodResizePending", "status": "True", "reason": "Infeasible"}


def test_a_pod_resized_in_place_counts_the_most_of_spec_allocated_and_actuated() -> None:
    """In-place pod resize (GA since 1.35): kube-scheduler counts, resource by resource, the
    most of the spec's requests, what the kubelet allocated and what it actuated
    (component-helpers' PodRequests with UseStatusResources)."""
    spec = {
        "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "500m"}}},
        ],
        "initContainers": [
            {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "1"}}}
        ],
    }
    # Shrunk to 1 cpu while 3 are still allocated and actuated: 3 count, with b's and side's.
    a = container_status("a", {"cpu": "3", "memory": "1Gi"}, {"cpu": "3", "memory": "1Gi"})
    statuses = {"containerStatuses": [a], "initContainerStatuses": []}
    assert resized(spec, statuses)["cpu"] == 3000 + 500 + 1000
    # Grown to 4 and allocated, still running with 2 (actuated): the 4 count.
    spec["containers"][0]["resources"]["requests"]["cpu"] = "4"
    a = container_status("a", {"cpu": "4"}, {"cpu": "2", "memory": "2Gi"})
    req = resized(spec, {"containerStatuses": [a]})
    assert req["cpu"] == 4000 + 500 + 1000 and req["memory"] == 2 * 1024**3
    # A sidecar's status is found among the init containers'.
    side = container_status("side", {"cpu": "2"})
    assert resized(spec, {"initContainerStatuses": [side]})["cpu"] == 4000 + 500 + 2000
    # At rest (spec, allocated and actuated the same) a pod counts its spec.
    at_rest = [container_status("a", {"cpu": "4"}, {"cpu": "4"}), container_status("b", {})]
    assert resized(spec, {"containerStatuses": at_rest}) == resized(spec, {})


def test_an_infeasible_resize_counts_what_is_allocated_not_the_spec() -> None:
    spec = {"containers": [{"name": "a", "resources": {"requests": {"cpu": "64"}}}]}
    a = container_status("a", {"cpu": "3"}, {"cpu": "3"})
    assert resized(spec, {"containerStatuses": [a], "conditions": [INFEASIBLE]})["cpu"] == 3000
    # Deferred (it may still happen): the spec counts.
    deferred = {**INFEASIBLE, "reason": "Deferred"}
    assert resized(spec, {"containerStatuses": [a], "conditions": [deferred]})["cpu"] == 64000
    # A container without a status counts nothing while the resize is infeasible.
    assert resized(spec, {"conditions": [INFEASIBLE]})["cpu"] == 0


def test_the_pods_own_status_maps_stand_for_its_containers() -> None:
    """With InPlacePodLevelResourcesVerticalScaling (beta, on by default since 1.36) the
    kubelet writes pod-level status.allocatedResources and status.resources; kube-scheduler
    then reads those instead of the containers' statuses, and pod-level requests in the spec
    count the most of them and of the status's."""
    spec = {
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
        "resources": {"requests": {"cpu": "2"}},
    }
    status = {
        "allocatedResources": {"cpu": "5", "memory": "1Gi"},
        "resources": {"requests": {"cpu": "4", "memory": "3Gi"}},
        "containerStatuses": [container_status("a", {"cpu": "9"})],  # (not read)
    }
    req = resized(spec, status)
    assert req["cpu"] == 5000 and req["memory"] == 3 * 1024**3
    status["conditions"] = [INFEASIBLE]
    spec["resources"] = {"requests": {"cpu": "8"}}
    assert resized(spec, status)["cpu"] == 5000  # the spec's 8 will not happen


amounts = st.fixed_dictionaries(
    {}, optional={"cpu": st.integers(0, 8000), "memory": st.integers(0, 64)}
)


def as_list(units: dict[str, int]) -> dict[str, str]:
    return {r: f"{v}m" if r == "cpu" else f"{v}Gi" for r, v in units.items()}


@st.composite
def resized_pods(draw: st.DrawFn) -> tuple[dict, list[dict]]:
    """A pod's spec (containers, sidecars and init containers) and a status per container,
    each with what is allocated and actuated or without them."""
    kinds = draw(st.lists(st.sampled_from(["main", "side", "init"]), min_size=1, max_size=5))
    spec: dict[str, list] = {"containers": [], "initContainers": []}
    statuses = []
    for i, kind in enumerate(kinds):
        c: dict[str, Any] = {"name": f"c{i}", "resources": {"requests": as_list(draw(amounts))}}
        if kind == "side":
            c["restartPolicy"] = "Always"
        spec["containers" if kind == "main" else "initContainers"].append(c)
        allocated, actuated = draw(st.none() | amounts), draw(st.none() | amounts)
        statuses.append(
            container_status(
                c["name"],
                None if allocated is None else as_list(allocated),
                None if actuated is None else as_list(actuated),
            )
        )
    return spec, statuses


def status_of(spec: dict, statuses: list[dict], conditions: list[dict]) -> dict:
    mains = {c["name"] for c in spec["containers"]}
    return {
        "containerStatuses": [s for s in statuses if s["name"] in mains],
        "initContainerStatuses": [s for s in statuses if s["name"] not in mains],
        "conditions": conditions,
    }


@given(resized_pods())
def test_resized_pods_count_at_least_their_spec_and_at_rest_exactly_it(
    drawn: tuple[dict, list[dict]],
) -> None:
    spec, statuses = drawn
    alone = resized(spec, {})
    counted = resized(spec, status_of(spec, statuses, []))
    assert all(counted[r] >= v for r, v in alone.items())
    # At rest: allocated and actuated are the spec's requests.
    containers = spec["containers"] + spec["initContainers"]
    at_rest = [
        container_status(c["name"], c["resources"]["requests"], c["resources"]["requests"])
        for c in containers
    ]
    assert resized(spec, status_of(spec, at_rest, [])) == alone


@given(resized_pods(), amounts)
def test_an_infeasible_resize_counts_no_spec(
    drawn: tuple[dict, list[dict]], other: dict[str, int]
) -> None:
    """While a resize is infeasible, no container's spec counts (a container without a status
    counts nothing): another spec counts the same."""
    spec, statuses = drawn
    changed = {
        kind: [{**c, "resources": {"requests": as_list(other)}} for c in spec[kind]]
        for kind in ("containers", "initContainers")
    }
    status = status_of(spec, statuses, [INFEASIBLE])
    assert resized(changed, status) == resized(spec, status)


def test_a_malformed_container_status_is_named() -> None:
    spec = {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}
    with pytest.raises(InputError) as err:
        resized(spec, {"containerStatuses": [container_status("a", {"cpu": "lots"})]})
    assert "status.containerStatuses[0].allocatedResources.cpu" in str(err.value)
    with pytest.raises(InputError) as err:
        resized(spec, {"containerStatuses": 5})
    assert "status.containerStatuses" in str(err.value) and "ns/p" in str(err.value)


def test_bad_pod_level_resources_name_the_field() -> None:
    spec = {"containers": [], "resources": {"limits": {"memory": "lots"}}}
    with pytest.raises(InputError) as err:
        snapshot_from_objects([pod("p", spec)])
    assert "spec.resources.limits.memory" in str(err.value) and "ns/p" in str(err.value)


def test_priority_from_class_and_global_default() -> None:
    items = [
        {"kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000},
        {"kind": "PriorityClass", "metadata": {"name": "dflt"}, "value": 7, "globalDefault": True},
        pod("a", {"containers": [], "priorityClassName": "high"}),
        pod("b", {"containers": []}),
        pod("c", {"containers": [], "priority": 3, "priorityClassName": "high"}),
    ]
    snap = snapshot_from_objects(items)
    assert [p.priority for p in snap.pods] == [1000, 7, 3]


def test_node_affinity_operators_and_taints() -> None:
    gpu_node = node(
        "g",
        labels={"nvidia.com/gpu.product": "H100", "gpus": "8"},
        spec={"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]},
    )
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["H100"]},
                            {"key": "gpus", "operator": "Gt", "values": ["4"]},
                            {"key": "spot", "operator": "DoesNotExist"},
                        ]
                    }
                ]
            }
        }
    }
    tolerating = {
        "containers": [],
        "affinity": affinity,
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
    }
    snap = snapshot_from_objects(
        [gpu_node, pod("t", tolerating), pod("u", {"containers": [], "affinity": affinity})]
    )
    n = snap.nodes[0]
    assert static_reason(snap.pods[0], n) is None
    assert "untolerated taint gpu" in (static_reason(snap.pods[1], n) or "")
    lt = {
        **tolerating,
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "gpus", "operator": "Lt", "values": ["4"]}]}
                    ]
                }
            }
        },
    }
    snap2 = snapshot_from_objects([gpu_node, pod("v", lt)])
    assert static_reason(snap2.pods[0], snap2.nodes[0]) == "required node affinity does not match"


def test_unschedulable_and_missing_resource() -> None:
    snap = snapshot_from_objects(
        [
            node("cordoned", spec={"unschedulable": True}),
            node("plain"),
            pod(
                "g", {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}
            ),
        ]
    )
    p = snap.pods[0]
    assert static_reason(p, snap.nodes[0]) == "node is unschedulable"
    assert static_reason(p, snap.nodes[1]) == "insufficient allocatable nvidia.com/gpu"
    # A pod tolerating the unschedulable taint (a DaemonSet's does) may go to a cordoned node.
    cordoned = snap.nodes[0]
    for toleration, admitted in (
        ({"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}, True),
        ({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}, True),
        ({"operator": "Exists"}, True),
        ({"operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "node.kubernetes.io/unschedulable", "value": "x"}, False),
    ):
        tolerant = snapshot_from_objects(
            [pod("t", {"containers": [{"name": "c"}], "tolerations": [toleration]})]
        ).pods[0]
        assert (static_reason(tolerant, cordoned) is None) == admitted, toleration


def test_pdb_budget_derived_offline() -> None:
    items = [
        node("n"),
        pod("a", {"containers": [], "nodeName": "n"}, labels={"app": "x"}),
        pod("b", {"containers": [], "nodeName": "n"}, labels={"app": "x"}),
        pod("c", {"containers": []}, labels={"app": "x"}),
        {
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "b", "namespace": "ns"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}},
        },
        {
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "x"}}},
        },
    ]
    snap = snapshot_from_objects(items)
    assert [b.disruptions_allowed for b in snap.budgets] == [1, 1]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            [pod("p", {"containers": [{"name": "c", "resources": {"requests": {"cpu": "lots"}}}]})],
            "Pod ns/p, field spec.containers[0].resources.requests.cpu: unparsable quantity 'lots'",
        ),
        ([{"kind": "Pod", "metadata": {}, "spec": {}}], "Pod, field metadata.name: missing name"),
        (
            [pod("p", {"containers": [], "priorityClassName": "nope"})],
            "PriorityClass 'nope' not found",
        ),
        (
            [node("n", spec={"taints": [{"key": "k", "effect": "Sometimes"}]})],
            "spec.taints[0].effect",
        ),
    ],
)
def test_bad_input_names_object_and_field(items: list, message: str) -> None:
    with pytest.raises(InputError) as err:
        snapshot_from_objects(items)
    assert message in str(err.value)


def test_not_a_list_and_unreadable(tmp_path) -> None:
    with pytest.raises(InputError, match="expected a Kubernetes List"):
        snapshot_from_list({"kind": "Pod"})
    with pytest.raises(InputError, match="cannot read snapshot"):
        load_snapshot(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed")
    with pytest.raises(InputError, match="not valid YAML or JSON"):
        load_snapshot(bad)


def test_round_trip_through_list() -> None:
    items = [
        node("n", gpus=4, labels={"zone": "a"}),
        pod(
            "p",
            {
                "containers": [
                    {"name": "c", "resources": {"requests": {"cpu": "250m", "nvidia.com/gpu": 1}}}
                ],
                "nodeName": "n",
                "priority": 5,
                "tolerations": [{"operator": "Exists"}],
            },
        ),
    ]
    snap = snapshot_from_objects(items)
    again = snapshot_from_list(snapshot_to_list(snap))
    assert again.nodes == snap.nodes
    assert again.pods[0].requests == snap.pods[0].requests
    assert again.pods[0].node_name == "n" and again.pods[0].priority == 5


RULES_SPEC = {
    "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}],
    "initContainers": [
        {"name": "i", "ports": [{"containerPort": 53, "hostPort": 53, "protocol": "UDP"}]}
    ],
    "affinity": {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "topologyKey": "zone",
                    "labelSelector": {"matchLabels": {"app": "cache"}},
                    "namespaces": ["a", "b"],
                }
            ],
            "preferredDuringSchedulingIgnoredDuringExecution": [],  # only scores
        },
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {
                        "matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]
                    },
                    "namespaceSelector": {},
                    "matchLabelKeys": ["pod-template-hash", "absent"],
                    "mismatchLabelKeys": ["tenant"],
                }
            ]
        },
    },
    "topologySpreadConstraints": [
        {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"},
        {
            "maxSkew": 1,
            "topologyKey": "rack",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}},
            "matchLabelKeys": ["pod-template-hash", "absent"],
            "minDomains": 3,
            "nodeTaintsPolicy": "Honor",
        },
    ],
}


def test_rules_between_pods_are_read_and_round_trip() -> None:
    budget = {
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "b", "namespace": "ns"},
        "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}},
        "status": {"disruptionsAllowed": 1},
    }
    labels = {"app": "web", "pod-template-hash": "5d9", "tenant": "t1"}
    leaving = pod("p", RULES_SPEC, labels=labels, deletionTimestamp="2026-12-06T20:00:00Z")
    snap = snapshot_from_objects([leaving, budget])
    p = snap.pods[0]
    assert p.terminating
    assert [(t.topology_key, t.namespaces) for t in p.pod_affinity] == [("zone", ("a", "b"))]
    (anti,) = p.pod_anti_affinity
    assert anti.namespace_selector is not None
    # matchLabelKeys (In) and mismatchLabelKeys (NotIn) as kube-apiserver merges them: pods
    # of the pod's revision, of other tenants.
    assert not anti.selects(p, p)
    other = {"app": "web", "pod-template-hash": "5d9", "tenant": "t2"}
    revision = replace(p, namespace="elsewhere", labels=other)
    assert anti.selects(p, revision) and anti.surely_selects(p, revision)  # namespaceSelector {}
    older = replace(revision, labels=other | {"pod-template-hash": "4c1"})
    assert not anti.selects(p, older)
    assert [(c.max_skew, c.topology_key) for c in p.spread_constraints] == [
        (2, "zone"),
        (1, "rack"),
    ]
    rack = p.spread_constraints[1]
    assert (rack.min_domains, rack.node_affinity_policy, rack.node_taints_policy) == (
        3,
        "Honor",
        "Honor",
    )
    # matchLabelKeys as kube-apiserver merges them: the pod's revision only.
    assert rack.selector is not None and rack.selector.matches(labels)
    assert not rack.selector.matches({"app": "web", "pod-template-hash": "other"})
    assert [(h.port, h.protocol) for h in p.host_ports] == [(53, "UDP"), (8080, "TCP")]
    again = snapshot_from_list(snapshot_to_list(snap))
    assert again.pods == snap.pods
    assert again.budgets == snap.budgets  # matchExpressions too, not matchLabels alone


def _claim(name: str, volume: str | None, *modes: str) -> dict:
    spec: dict = {"accessModes": list(modes)} if modes else {}
    bound = {"spec": {"volumeName": volume, **spec}, "status": {"phase": "Bound"}}
    return {
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "ns"},
        **(bound if volume else {"spec": spec}),
    }


def _local_volume(name: str, node_name: str) -> dict:
    here = {"key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}
    affinity = {"required": {"nodeSelectorTerms": [{"matchExpressions": [here]}]}}
    return {
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {"nodeAffinity": affinity},
    }


def test_namespace_selectors_resolve_to_the_namespaces_they_select() -> None:
    """Given every pod's Namespace, a term's namespaceSelector becomes the namespaces whose
    labels it matches, with those it lists (kube-scheduler merges them so); one that selects
    none selects no pod. The snapshot round-trips without the Namespaces."""

    def term(**extra: object) -> dict:
        return {"topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "x"}}, **extra}

    anti = [
        term(namespaceSelector={"matchLabels": {"team": "ml"}}, namespaces=["c"]),
        term(namespaceSelector={"matchLabels": {"team": "none"}}),
        term(namespaceSelector={}),
    ]
    spec = {
        "containers": [{"name": "c"}],
        "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": anti}},
    }
    namespaces = [
        {"kind": "Namespace", "metadata": {"name": n, "labels": lb}}
        for n, lb in (("ns", {"team": "ml"}), ("b", {"team": "ml"}), ("c", {}))
    ]
    snap = snapshot_from_objects([pod("p", spec), *namespaces])
    resolved = snap.pods[0].pod_anti_affinity
    assert [(t.namespaces, t.namespace_selector, t.selector is None) for t in resolved] == [
        (("b", "c", "ns"), None, False),
        ((), None, True),
        (("b", "c", "ns"), None, False),
    ]
    assert snapshot_from_list(snapshot_to_list(snap)).pods == snap.pods
    kept = snapshot_from_objects([pod("p", spec), *namespaces[1:]]).pods[0].pod_anti_affinity
    assert all(t.namespace_selector is not None for t in kept)  # ns missing: not resolved
    with pytest.raises(InputError) as caught:
        snapshot_from_objects([{"kind": "Namespace", "metadata": {"name": "ns", "labels": [1]}}])
    assert (caught.value.obj, caught.value.field) == ("Namespace ns", "metadata.labels")


def test_claims_resolve_to_their_volumes_node_affinity_and_round_trip() -> None:
    volumes = [
        {"name": "local", "persistentVolumeClaim": {"claimName": "cache"}},
        {"name": "shared", "persistentVolumeClaim": {"claimName": "models"}},  # NFS: no affinity
        {"name": "own", "persistentVolumeClaim": {"claimName": "journal"}},  # ReadWriteOncePod
        {"name": "own-local", "persistentVolumeClaim": {"claimName": "cache"}},  # the same
        {"name": "fresh", "persistentVolumeClaim": {"claimName": "pending"}},  # not bound
        {"name": "gone", "persistentVolumeClaim": {"claimName": "missing"}},
        {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
        {"name": "tmp", "emptyDir": {}},
    ]
    snap = snapshot_from_objects(
        [
            node("n1", labels={"kubernetes.io/hostname": "n1"}),
            node("n2", labels={"kubernetes.io/hostname": "n2"}),
            pod("p", {"containers": [{"name": "c"}], "volumes": volumes}),
            _claim("cache", "pv-local", "ReadWriteOncePod"),
            _local_volume("pv-local", "n1"),
            _claim("models", "pv-nfs", "ReadOnlyMany"),
            {"kind": "PersistentVolume", "metadata": {"name": "pv-nfs"}, "spec": {}},
            _claim("journal", "pv-journal", "ReadWriteOncePod"),
            {"kind": "PersistentVolume", "metadata": {"name": "pv-journal"}},
            _claim("pending", None, "ReadWriteOncePod"),
        ]
    )
    p = snap.pods[0]
    assert p.unresolved_claims == ("pending", "missing", "p-scratch")
    assert p.exclusive_claims == ("cache", "journal")  # bound ones: "pending" holds the pod
    assert [static_reason(p, n) for n in snap.nodes] == [
        None,
        "a bound volume's node affinity or zone does not match",
    ]
    again = snapshot_from_list(snapshot_to_list(snap))
    assert again.pods == snap.pods


def test_csi_volumes_attach_limits_and_attachments_are_read_and_round_trip() -> None:
    """A pod's bound CSI volumes by unique name (driver/handle, each once; not the claim
    bound to a volume without a CSI source), a CSINode's counts (a driver without one has no
    limit), and what VolumeAttachments attach (with an attacher and a CSI volume)."""
    spec = {"containers": [{"name": "c"}], **claims("a", "a-again", "b", "nfs")}
    snap = snapshot_from_objects(
        [
            node("n1"),
            node("n2"),
            pod("p", spec, uid="u"),
            *csi_claim("a", "vol-1", namespace="ns"),
            *csi_claim("a-again", "vol-1", namespace="ns"),
            *csi_claim("b", "vol-2", driver="other.csi", namespace="ns"),
            _claim("nfs", "pv-nfs"),
            {"kind": "PersistentVolume", "metadata": {"name": "pv-nfs"}, "spec": {"nfs": {}}},
            csi_node("n1", disk_csi=2),
            {"kind": "CSINode", "metadata": {"name": "n2"}, "spec": {"drivers": [{"name": "x"}]}},
            attachment("vol-1", "n1"),
            attachment("vol-2", "n2", driver="other.csi"),
            {**attachment("vol-9", "n2"), "spec": {"nodeName": "n2"}},  # no attacher
        ]
    )
    assert snap.pods[0].csi_volumes == ("disk.csi/vol-1", "other.csi/vol-2")
    n1, n2 = snap.nodes
    assert n1.volume_limits == {"disk.csi": 2} and n2.volume_limits == {}
    assert n1.attached_volumes == {"disk.csi/vol-1"}
    assert n2.attached_volumes == {"other.csi/vol-2"}
    again = snapshot_from_list(snapshot_to_list(snap))
    assert again.pods == snap.pods and again.nodes == snap.nodes


def test_claims_to_provision_on_the_first_consumers_node_are_read_and_round_trip() -> None:
    """A claim not bound yet of a WaitForFirstConsumer class whose provisioner is a CSIDriver
    is provisioned where its pod goes: the class's allowed topologies filter nodes, and so,
    when the driver tracks storage capacity, do the topologies of the class's
    CSIStorageCapacity objects whose largest volume (else capacity) holds the request (an
    empty one: any node; none: no node); it is a new volume of the driver. Otherwise it stays
    unresolved: an Immediate class, a provisioner with no CSIDriver, a class with a free
    volume (the claim may bind to it), no class, a node already selected for it, or the
    claim being deleted."""
    zone = {"matchLabelExpressions": [{"key": ZONE, "values": ["za", "zb"]}]}
    names = ["fast", "tracked", "huge", "now", "foreign", "free", "none", "selected", "leaving"]
    spec = {"containers": [{"name": "c"}], **claims(*names, "gone")}
    selected = unbound_claim("selected", "fast", namespace="ns")
    selected["metadata"]["annotations"] = {"volume.kubernetes.io/selected-node": "n1"}
    leaving = unbound_claim("leaving", "fast", namespace="ns")
    leaving["metadata"]["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    huge = unbound_claim("huge", "tracked", namespace="ns")
    huge["spec"]["resources"]["requests"]["storage"] = "1Ti"

    def capacity(name: str, topology: dict[str, Any] | None, **size: str) -> dict[str, Any]:
        return {
            "kind": "CSIStorageCapacity",
            "metadata": {"name": name, "namespace": "kube-system"},
            "storageClassName": "tracked",
            **({"nodeTopology": topology} if topology is not None else {}),
            **size,
        }

    objects = [
        node("n1"),
        pod("p", spec),
        storage_class("fast", allowedTopologies=[zone]),
        storage_class("tracked", driver="tracked.csi"),
        storage_class("now", mode="Immediate"),
        storage_class("foreign", driver="foreign.csi"),
        storage_class("free"),
        csi_driver(),
        csi_driver("tracked.csi", capacity=True),
        capacity("za", {"matchLabels": {ZONE: "za"}}, capacity="10Gi"),
        capacity("zb", {"matchLabels": {ZONE: "zb"}}, capacity="10Gi", maximumVolumeSize="512Mi"),
        capacity(
            "zc",
            {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["zc"]}]},
            capacity="2Ti",
        ),
        capacity("nowhere", None, capacity="10Ti"),
        {
            "kind": "PersistentVolume",
            "metadata": {"name": "spare"},
            "spec": {"storageClassName": "free"},
        },
        *(
            unbound_claim(n, c, namespace="ns")
            for n, c in [("fast", "fast"), ("tracked", "tracked")]
        ),
        huge,
        *(unbound_claim(n, n, namespace="ns") for n in names[3:6]),
        {**unbound_claim("none", "", namespace="ns"), "spec": {}},
        selected,
        leaving,
    ]
    snap = snapshot_from_objects(objects)
    p = snap.pods[0]
    assert p.provisioned_claims == ("fast", "tracked", "huge")
    assert p.unresolved_claims == (*names[3:], "gone")
    assert p.csi_volumes == ("disk.csi/~ns/fast", "tracked.csi/~ns/tracked", "tracked.csi/~ns/huge")
    in_zones = (SelectorTerm(expressions=(Requirement(ZONE, Operator.IN, ("za", "zb")),)),)
    za, zc = (
        SelectorTerm(expressions=(Requirement(ZONE, Operator.IN, (z,)),)) for z in ("za", "zc")
    )
    assert p.volume_affinity == (in_zones, (za, zc), (zc,))
    again = snapshot_from_list(snapshot_to_list(snap))
    assert again.pods == snap.pods
    anywhere = capacity("anywhere", {}, capacity="5Ti")
    p = snapshot_from_objects([*objects, anywhere]).pods[0]
    assert p.volume_affinity == (in_zones,)  # an empty topology: every node reaches it


def test_a_bad_size_names_the_capacity_or_claim_and_field() -> None:
    objects = [
        pod("p", {"containers": [{"name": "c"}], **claims("c")}),
        storage_class("tracked", driver="tracked.csi"),
        csi_driver("tracked.csi", capacity=True),
        unbound_claim("c", "tracked", namespace="ns"),
    ]
    bad = {
        "kind": "CSIStorageCapacity",
        "metadata": {"name": "x", "namespace": "kube-system"},
        "storageClassName": "tracked",
        "nodeTopology": {},
        "capacity": "lots",
    }
    with pytest.raises(InputError) as caught:
        snapshot_from_objects([*objects, bad])
    assert (caught.value.obj, caught.value.field) == (
        "CSIStorageCapacity kube-system/x",
        "capacity",
    )
    objects[3]["spec"]["resources"]["requests"]["storage"] = "a lot"
    with pytest.raises(InputError) as caught:
        snapshot_from_objects([*objects, {**bad, "capacity": "1Gi"}])
    assert (caught.value.obj, caught.value.field) == (
        "PersistentVolumeClaim ns/c",
        "spec.resources.requests.storage",
    )


@pytest.mark.parametrize("count", [-1, "2", 1.5, True])
def test_a_bad_attach_count_names_the_csi_node_and_field(count: object) -> None:
    bad = csi_node("n1", disk_csi=0)
    bad["spec"]["drivers"][0]["allocatable"]["count"] = count
    with pytest.raises(InputError) as caught:
        snapshot_from_objects([node("n1"), bad])
    assert caught.value.obj == "CSINode n1"
    assert caught.value.field == "spec.drivers[0].allocatable.count"


ZONE, REGION = "topology.kubernetes.io/zone", "topology.kubernetes.io/region"
BETA_ZONE = "failure-domain.beta.kubernetes.io/zone"


def _zonal_volume_snapshot(volume_labels: dict[str, str], node_labels: dict[str, str]) -> Snapshot:
    """Node n with ``node_labels`` and pod p whose claim is bound to a volume with
    ``volume_labels``."""
    spec = {
        "containers": [{"name": "c"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
    }
    return snapshot_from_objects(
        [
            node("n", labels=node_labels),
            pod("p", spec),
            _claim("data", "pv"),
            {"kind": "PersistentVolume", "metadata": {"name": "pv", "labels": volume_labels}},
        ]
    )


@pytest.mark.parametrize(
    ("volume_labels", "node_labels", "admitted"),
    [
        ({ZONE: "za"}, {ZONE: "za"}, True),
        ({ZONE: "za"}, {ZONE: "zb"}, False),
        ({ZONE: "za__zb"}, {ZONE: "zb"}, True),  # a volume in several zones
        ({ZONE: "za"}, {}, True),  # a node without zone labels takes any volume
        ({ZONE: "za"}, {"other": "za"}, True),
        ({ZONE: "za"}, {REGION: "r1"}, False),  # zone labels, but not the volume's key
        ({ZONE: "za", REGION: "r1"}, {ZONE: "za", REGION: "r2"}, False),  # every key must match
        ({ZONE: "za", REGION: "r1"}, {ZONE: "za", REGION: "r1"}, True),
        ({BETA_ZONE: "za"}, {ZONE: "za"}, True),  # a beta key matches the node's GA key
        ({BETA_ZONE: "za"}, {BETA_ZONE: "zb", ZONE: "za"}, False),  # ... if the node lacks beta
        ({ZONE: "za"}, {BETA_ZONE: "za"}, False),  # not the other way round
        ({ZONE: "za__"}, {ZONE: "zb"}, True),  # a value kube-scheduler cannot parse is ignored
        ({"other": "za"}, {ZONE: "zb"}, True),
    ],
)
def test_a_bound_volume_s_zone_labels_filter_nodes_as_volume_zone_does(
    volume_labels: dict[str, str], node_labels: dict[str, str], admitted: bool
) -> None:
    """kube-scheduler's VolumeZone (plugins/volumezone), case by case; the snapshot keeps the
    rule through a round trip."""
    snap = _zonal_volume_snapshot(volume_labels, node_labels)
    expected = None if admitted else "a bound volume's node affinity or zone does not match"
    assert static_reason(snap.pods[0], snap.nodes[0]) == expected
    again = snapshot_from_list(snapshot_to_list(snap))
    assert static_reason(again.pods[0], again.nodes[0]) == expected


_ZONE_KEYS = (ZONE, REGION, BETA_ZONE, "failure-domain.beta.kubernetes.io/region")


def _volume_zone_admits(volume: dict[str, str], node: dict[str, str]) -> bool:
    """kube-scheduler's VolumeZone Filter, written out as the plugin reads (an oracle)."""
    if not any(k in node for k in _ZONE_KEYS):
        return True
    for key in _ZONE_KEYS:
        if key not in volume:
            continue
        zones = [z.strip() for z in volume[key].split("__")]
        if "" in zones:
            continue  # unparsable: ignored
        value = node.get(key)
        if value is None:
            value = node.get(
                key.replace("failure-domain.beta.kubernetes.io", "topology.kubernetes.io")
            )
        if value is None or value not in zones:
            return False
    return True


@given(
    st.dictionaries(
        st.sampled_from(_ZONE_KEYS), st.sampled_from(["za", "zb", "za__zb", "za__", " zb "])
    ),
    st.dictionaries(st.sampled_from([*_ZONE_KEYS, "other"]), st.sampled_from(["za", "zb", "zc"])),
)
def test_volume_zone_labels_admit_the_nodes_the_plugin_admits(
    volume_labels: dict[str, str], node_labels: dict[str, str]
) -> None:
    snap = _zonal_volume_snapshot(volume_labels, node_labels)
    admitted = static_reason(snap.pods[0], snap.nodes[0]) is None
    assert admitted == _volume_zone_admits(volume_labels, node_labels)


@pytest.mark.parametrize(
    ("item", "obj", "field"),
    [
        (
            {
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "c", "namespace": "ns"},
                "spec": {"accessModes": "ReadWriteOncePod"},
            },
            "PersistentVolumeClaim ns/c",
            "spec.accessModes",
        ),
        (
            {"kind": "PersistentVolume", "metadata": {"name": "v"}, "spec": {"nodeAffinity": []}},
            "PersistentVolume v",
            "spec.nodeAffinity",
        ),
        (
            {"kind": "PersistentVolume", "metadata": {"name": "v", "labels": ["zone"]}},
            "PersistentVolume v",
            "metadata.labels",
        ),
    ],
)
def test_bad_volumes_name_the_object_and_field(item: dict, obj: str, field: str) -> None:
    with pytest.raises(InputError) as caught:
        snapshot_from_objects([item])
    assert (caught.value.obj, caught.value.field) == (obj, field)


def test_resource_claims_and_scheduling_gates_are_read_and_round_trip() -> None:
    spec = {
        "containers": [{"name": "c"}],
        "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
        "schedulingGates": [{"name": "example.com/quota"}],
    }
    snap = snapshot_from_objects([pod("p", spec)])
    assert snap.pods[0].resource_claims == ("gpu",)
    assert snap.pods[0].scheduling_gates == ("example.com/quota",)
    assert snapshot_from_list(snapshot_to_list(snap)).pods == snap.pods


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"schedulingGates": [{}]}, "spec.schedulingGates[0].name"),
        (
            {"volumes": [{"name": "v", "persistentVolumeClaim": {}}]},
            "spec.volumes[0].persistentVolumeClaim.claimName",
        ),
        (
            {
                "affinity": {
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{}]}
                }
            },
            "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]"
            ".topologyKey",
        ),
        (
            {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}},
            "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        ),
        (
            {
                "topologySpreadConstraints": [
                    {"maxSkew": 0, "topologyKey": "z", "whenUnsatisfiable": "DoNotSchedule"}
                ]
            },
            "spec.topologySpreadConstraints[0].maxSkew",
        ),
        (
            {
                "topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "z", "whenUnsatisfiable": "Sometimes"}
                ]
            },
            "spec.topologySpreadConstraints[0].whenUnsatisfiable",
        ),
        (
            {"containers": [{"name": "c", "ports": [{"containerPort": 1, "hostPort": "80"}]}]},
            "spec.containers[0].ports[0].hostPort",
        ),
        *(
            (
                {
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "z",
                            "whenUnsatisfiable": "DoNotSchedule",
                            "labelSelector": {},
                            field: value,
                        }
                    ]
                },
                f"spec.topologySpreadConstraints[0].{field}",
            )
            for field, value in (
                ("minDomains", 0),
                ("nodeAffinityPolicy", "Sometimes"),
                ("matchLabelKeys", "app"),
                ("matchLabelKeys", [1]),
            )
        ),
    ],
)
def test_bad_rules_between_pods_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(InputError) as caught:
        snapshot_from_objects([pod("p", {"containers": [{"name": "c"}], **change})])
    assert caught.value.obj == "Pod ns/p" and caught.value.field == field


# --- quantities: our unit choice on top of the kubernetes package's parser ------------------

suffixes = st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "Ti"])


@given(st.integers(min_value=0, max_value=10**6), suffixes)
def test_cpu_units_are_rounded_up_millicores(number: int, suffix: str) -> None:
    from kubernetes.utils import parse_quantity

    exact: Decimal = parse_quantity(f"{number}{suffix}") * 1000
    got = to_units("cpu", f"{number}{suffix}")
    assert got >= exact and got - exact < 1


@given(st.text(max_size=12))
def test_any_string_parses_or_raises_input_error(text: str) -> None:
    try:
        value = to_units("memory", text, obj="Pod x", field="f")
    except InputError as exc:
        assert "Pod x, field f" in str(exc)
    else:
        assert value >= 0


@given(
    st.dictionaries(st.sampled_from(["cpu", "memory", "gpu"]), st.integers(0, 100)),
    st.dictionaries(st.sampled_from(["cpu", "memory", "gpu"]), st.integers(0, 100)),
)
def test_resources_arithmetic(a: dict, b: dict) -> None:
    ra, rb = Resources(a), Resources(b)
    assert (ra + rb) - rb == ra
    assert all((k in ra) == bool(a.get(k)) for k in ("cpu", "memory", "gpu"))  # zero is absent
    assert ra.fits_in(ra + rb)
    assert ra.fits_in(rb) == all(a[k] <= b.get(k, 0) for k in a)
