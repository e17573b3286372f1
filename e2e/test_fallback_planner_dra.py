"""The fallback planner with GPUs a DRA driver publishes (resource.k8s.io/v1): nodes without a
device plugin's `nvidia.com/gpu`, their GPUs in ResourceSlices. Pods ask for them as
`nvidia.com/gpu`, which a DeviceClass serves (its `extendedResourceName`), or by ResourceClaims
made from templates (kube-scheduler then consults the extender for every pod, as the chart's
`scheduler.extender.consultEveryPod` registers it, and the policy lists the class's resource).
Either way the real kube-scheduler leaves a 4-GPU pod Pending on a fragmented pair of nodes,
the planner moves one pod, the pod runs, and each node's 4 devices are allocated; also when
its claim offers alternatives (`firstAvailable`), asks all of a node's devices
(`allocationMode: All`), or asks all in one NVLink domain (`constraints`) with a free node's
split between two. Also with partitionable GPUs (each offered whole or as MIG-like halves
sharing a counter set), one of them split; and a pod naming a claim another pod's allocation
pinned to a full node (`resourceClaimName`), two pods naming one not allocated yet, and a pod
asking admin access to devices in use. A free node one of whose devices a DeviceTaintRule
taints is not where the planner puts the 4-GPU pod. A kind the cluster does not serve is read
as none by the extender's watch cache."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dunnage.cluster.devices import CLASS_RESOURCE_PREFIX
from dunnage.devcluster.cluster import DevCluster, NodeSpec
from dunnage.scheduler_extender.nodestate import NodeGpus
from dunnage.scheduler_extender.protocol import best_fit_score
from e2e.conftest import get_json, wait_for
from e2e.gpu_pool import POOL, deployment, priority_classes, running_on, unschedulable
from e2e.test_fallback_planner import decided

DRIVER = "gpu.dunnage-e2e.io"


def apply_device_class(
    cluster: DevCluster, namespace: str, extended_resource: str | None = None, kind: str = "gpu"
) -> str:
    """A DeviceClass of this test's devices of type ``kind`` (serving ``extended_resource``,
    if given)."""
    name = f"{namespace}-{kind}"
    attributes = f'device.attributes["{DRIVER}"]'
    selector = (
        f'device.driver == "{DRIVER}" && {attributes}.pool == "{namespace}" && '
        f'{attributes}.type == "{kind}"'
    )
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": selector}}]}
    if extended_resource:
        spec["extendedResourceName"] = extended_resource
    cluster.apply(
        [
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "DeviceClass",
                "metadata": {"name": name},
                "spec": spec,
            }
        ]
    )
    return name


def delete_devices(cluster: DevCluster, namespace: str) -> None:
    for kind in ("gpu", "half"):
        cluster.kubectl("delete", "deviceclass", f"{namespace}-{kind}", "--ignore-not-found")
    cluster.kubectl("delete", "resourceslices", "-l", f"{POOL}={namespace}", "--ignore-not-found")


@pytest.fixture
def device_class(cluster: DevCluster, namespace: str) -> Iterator[str]:
    """A DeviceClass of this test's devices serving `nvidia.com/gpu`; deleted after."""
    yield apply_device_class(cluster, namespace, "nvidia.com/gpu")
    delete_devices(cluster, namespace)


@pytest.fixture
def consulted_for_every_pod(cluster: DevCluster, namespace: str) -> Iterator[str]:
    """kube-scheduler restarted with the extender registered without managedResources (the
    chart's scheduler.extender.consultEveryPod), a DeviceClass of this test's devices, and a
    default PackingPolicy that counts them as GPUs; all undone after."""
    cluster.consult_every_pod(True)
    name = apply_device_class(cluster, namespace)
    resources = ["nvidia.com/gpu", CLASS_RESOURCE_PREFIX + name]
    policy = {"metadata": {"name": "default"}, "spec": {"gpuResourceNames": resources}}
    cluster.apply([{"apiVersion": "dunnage.io/v1alpha1", "kind": "PackingPolicy", **policy}])
    try:
        yield name
    finally:
        cluster.kubectl("delete", "packingpolicy", "default", "--ignore-not-found")
        delete_devices(cluster, namespace)
        cluster.consult_every_pod(False)


def dra_node(
    cluster: DevCluster,
    namespace: str,
    node: str,
    gpus: int = 4,
    partitionable: bool = False,
    cliques: int = 1,
) -> None:
    """A kwok node of the pool with no `nvidia.com/gpu` of its own and ``gpus`` devices in a
    ResourceSlice of the driver (attribute `type` "gpu"), in ``cliques`` NVLink domains
    (attribute `clique`, the first GPUs in 0); ``partitionable``: each GPU also offered as two
    halves (type "half"), all three consuming the GPU's counter set (whole: all of it),
    published in a second slice of the pool."""
    cluster.create_nodes([NodeSpec(node, gpus=0, labels={POOL: namespace})])
    whole = {"memory": {"value": "80Gi"}}
    devices = []
    for i in range(gpus):
        kinds = [("", "gpu", whole)]
        if partitionable:
            kinds += [(f"-half-{j}", "half", {"memory": {"value": "40Gi"}}) for j in range(2)]
        for suffix, kind, taken in kinds:
            device: dict[str, Any] = {
                "name": f"gpu-{i}{suffix}",
                "attributes": {
                    "pool": {"string": namespace},
                    "model": {"string": "h100"},
                    "type": {"string": kind},
                    "clique": {"int": i * cliques // gpus},
                },
                "capacity": {"memory": {"value": "80Gi"}},
            }
            if partitionable:
                device["consumesCounters"] = [{"counterSet": f"gpu-{i}", "counters": taken}]
            devices.append(device)
    pool = {"name": node, "generation": 1, "resourceSliceCount": 2 if partitionable else 1}
    slices = [{"suffix": "gpus", "devices": devices}]
    if partitionable:
        counter_sets = [{"name": f"gpu-{i}", "counters": whole} for i in range(gpus)]
        slices.append({"suffix": "counters", "sharedCounters": counter_sets})
    cluster.apply(
        [
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceSlice",
                "metadata": {"name": f"{node}-{part.pop('suffix')}", "labels": {POOL: namespace}},
                "spec": {"driver": DRIVER, "nodeName": node, "pool": pool, **part},
            }
            for part in slices
        ]
    )


def allocated(cluster: DevCluster, namespace: str) -> dict[str, list[str]]:
    """Node (pool) -> the devices allocated to the namespace's claims there."""
    out: dict[str, list[str]] = {}
    for claim in get_json(cluster, "resourceclaims", "-n", namespace)["items"]:
        results = ((claim.get("status") or {}).get("allocation") or {}).get("devices", {})
        for r in results.get("results") or []:
            out.setdefault(r["pool"], []).append(r["device"])
    return out


def with_claim(workload: dict[str, Any], template: str, *, named: bool = False) -> dict[str, Any]:
    """The Deployment's pods with a claim made from ``template`` instead of `nvidia.com/gpu`;
    ``named``: the ResourceClaim of that name, shared (``resourceClaimName``)."""
    spec = workload["spec"]["template"]["spec"]
    source = "resourceClaimName" if named else "resourceClaimTemplateName"
    spec["resourceClaims"] = [{"name": "gpus", source: template}]
    (container,) = spec["containers"]
    container["resources"] = {"claims": [{"name": "gpus"}]}
    return workload


def claim_template(
    name: str, device_class: str, count: int, *, or_else: int = 0, match: str = ""
) -> dict[str, Any]:
    """Claims of ``count`` devices of the class (0: all of a node's, ``allocationMode: All``);
    with ``or_else``, that count or else ``or_else`` devices, as alternatives
    (``firstAvailable``); with ``match``, all with one value of that attribute of the
    driver's (``constraints``, ``matchAttribute``)."""
    exactly: dict[str, Any] = {"deviceClassName": device_class, "count": count}
    if not count:
        exactly = {"deviceClassName": device_class, "allocationMode": "All"}
    request: dict[str, Any] = {"name": "gpu", "exactly": exactly}
    if or_else:
        other = {"deviceClassName": device_class, "count": or_else}
        request = {"name": "gpu", "firstAvailable": [{"name": "first", **exactly}]}
        request["firstAvailable"].append({"name": "else", **other})
    devices: dict[str, Any] = {"requests": [request]}
    if match:
        devices["constraints"] = [{"matchAttribute": f"{DRIVER}/{match}"}]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {"spec": {"devices": devices}},
    }


def shared_claim(name: str, device_class: str, count: int) -> dict[str, Any]:
    """A ResourceClaim made by hand, for pods to name: ``count`` devices of the class."""
    exactly = {"deviceClassName": device_class, "count": count}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}},
    }


def fragmented_and_planned(
    cluster: DevCluster,
    namespace: str,
    workload: Callable[[str, int, str], dict[str, Any]],
    *,
    scored: bool = True,
    before: Callable[[], None] = lambda: None,
) -> dict[str, str]:
    """a and b have 4 DRA GPUs each, and a 2-GPU high-priority pod each (a's filler, placed
    first so that b's pod goes to b, is deleted after). The 4-GPU pod below them in priority
    (created after calling ``before``, which may add a node) cannot preempt either: the
    planner moves one of them aside (beside the other, on a and b alone), and it runs on a
    node of its own. Then, if ``scored``, the extender's GPU scores of a third node. Returns
    the node of each app."""
    cluster.apply(priority_classes())
    cluster.stop_component("extender")
    extender_log = cluster.logs / "extender.log"
    logged_before = extender_log.stat().st_size if extender_log.exists() else 0
    a, b = (f"{namespace}-{x}" for x in "ab")
    dra_node(cluster, namespace, a)
    first = [workload(app, 2, "frag-high") for app in ("high-a", "filler")]
    cluster.apply(first, "-n", namespace)
    wait_for(
        lambda: running_on(cluster, namespace) == {"high-a": a, "filler": a},
        what="high-a and the filler on a",
    )
    dra_node(cluster, namespace, b)
    cluster.apply([workload("high-b", 2, "frag-high")], "-n", namespace)
    wait_for(
        lambda: running_on(cluster, namespace) == {"high-a": a, "filler": a, "high-b": b},
        what="high-a and the filler on a, high-b on b",
    )
    cluster.kubectl("delete", "deployment", "filler", "-n", namespace, "--wait=true")
    wait_for(
        lambda: len(allocated(cluster, namespace).get(a, [])) == 2, what="the filler's GPUs free"
    )

    before()
    cluster.apply([workload("big", 4, "frag-mid")], "-n", namespace)
    wait_for(lambda: unschedulable(cluster, namespace, "big"), what="the 4-GPU pod Unschedulable")
    event = decided(cluster, namespace, "Planned")
    wait_for(
        lambda: running_on(cluster, namespace).get("big"), timeout=90, what="the 4-GPU pod Running"
    )
    after = running_on(cluster, namespace)
    assert list(after.values()).count(after["big"]) == 1, after
    devices = allocated(cluster, namespace)
    assert len(set(devices[after["big"]])) == 4, devices
    assert sum(len(set(v)) for v in devices.values()) == 8, devices
    moved_one(cluster, namespace, "big")
    if not scored:
        return after
    # The extender's own GPU scoring (gpuScoring: extender) counts the devices: a and b are
    # full; on a third node's 4 free ones the 4-GPU pod fits exactly (its GPUs counted once,
    # from its containers or its claim), a 1-GPU pod leaves 3 free.
    c = f"{namespace}-c"
    dra_node(cluster, namespace, c)
    pods = get_json(cluster, "pods", "-n", namespace)["items"]
    big = next(p for p in pods if p["metadata"]["name"].startswith("big-"))
    one = deployment("one", 1, "frag-mid", namespace)["spec"]["template"]
    one["metadata"].update(name="one", namespace=namespace, uid="uid-one")
    wait_for(
        lambda: (
            prioritized(cluster, big, [a, b, c]) == {a: 0, b: 0, c: 9}
            and prioritized(cluster, one, [a, b, c]) == {a: 0, b: 0, c: 6}
        ),
        what="the extender's scores counting the DRA GPUs",
    )
    # The extender watched the three kinds throughout (it re-lists a kind whose watch fails).
    log = extender_log.read_bytes()[logged_before:].decode()
    for kind in ("DeviceClass", "ResourceSlice", "ResourceClaim"):
        assert f"watch {kind} " not in log, log[-3000:]
    print(event["message"])
    return after


def moved_one(cluster: DevCluster, namespace: str, app: str) -> None:
    """One plan bound the pod of ``app``, moving one pod and evicting none."""
    plans = [
        p["spec"]
        for p in get_json(cluster, "packingplans")["items"]
        if any(x["pod"].startswith(f"{namespace}/{app}-") for x in p["spec"].get("bindings", []))
    ]
    assert len(plans) == 1 and len(plans[0]["moves"]) == 1 and not plans[0]["evictions"], plans


def planned_into(cluster: DevCluster, namespace: str, app: str, expected: dict[str, str]) -> None:
    """The pod of ``app`` Unschedulable, then planned (the extender started): the apps run on
    the nodes ``expected`` gives them, after one plan moving one pod."""
    wait_for(lambda: unschedulable(cluster, namespace, app), what=f"the pod of {app} Unschedulable")
    decided(cluster, namespace, "Planned", app=app)
    wait_for(
        lambda: running_on(cluster, namespace) == expected,
        timeout=90,
        what=f"the apps Running on {expected}",
    )
    moved_one(cluster, namespace, app)


def prioritized(cluster: DevCluster, pod: dict[str, Any], nodes: list[str]) -> dict[str, int]:
    """The extender's scores of ``nodes`` for ``pod`` (its prioritize verb)."""
    body = json.dumps({"Pod": pod, "NodeNames": nodes}).encode()
    request = urllib.request.Request(f"{cluster.extender_url}/prioritize", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return {h["Host"]: h["Score"] for h in json.loads(response.read())}


@pytest.mark.usefixtures("device_class")
def test_a_device_a_taint_rule_blocks_is_not_planned_for(
    cluster: DevCluster, namespace: str
) -> None:
    """The same with a third node, c, added before the 4-GPU pod with 4 free GPUs, one of
    which an admin's DeviceTaintRule taints (NoSchedule): kube-scheduler allocates no device a
    taint blocks, so the plan moves a 2-GPU pod to make room on a or b instead of binding the
    pod to c."""
    c = f"{namespace}-c"
    rule = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceTaintRule",
        "metadata": {"name": f"{namespace}-broken"},
        "spec": {
            "deviceSelector": {"driver": DRIVER, "pool": c, "device": "gpu-3"},
            "taint": {"key": "example.com/broken", "effect": "NoSchedule"},
        },
    }

    def tainted_node() -> None:
        dra_node(cluster, namespace, c)
        cluster.apply([rule])

    try:
        after = fragmented_and_planned(
            cluster,
            namespace,
            lambda app, gpus, cls: deployment(app, gpus, cls, namespace),
            scored=False,
            before=tainted_node,
        )
        assert after["big"] != c, after
    finally:
        cluster.kubectl("delete", "devicetaintrule", rule["metadata"]["name"], "--ignore-not-found")


def test_a_kind_the_cluster_does_not_serve_is_read_as_none(cluster: DevCluster) -> None:
    """The watch cache lists every kind it reads; one the API server does not serve (404, as
    resource.k8s.io/v1 before Kubernetes 1.34) is synced as none instead of never."""
    from kubernetes import client

    from dunnage.cluster.connect import load_client_configuration
    from dunnage.scheduler_extender.cache import ClusterCache

    api = client.ApiClient(load_client_configuration(str(cluster.kubeconfig)))
    custom = client.CustomObjectsApi(api)

    def list_widgets(**kwargs: Any) -> Any:
        return custom.list_cluster_custom_object(
            "widgets.dunnage-e2e.io", "v1", "widgets", **kwargs
        )

    cache = ClusterCache(api, {"Node": client.CoreV1Api(api).list_node, "Widget": list_widgets})
    cache.start()
    try:
        assert cache.wait_synced(timeout=30)
        assert cache.objects("Node") and cache.objects("Widget") == []
        assert cache.unserved() == ["Widget"]
    finally:
        cache.stop()


@pytest.mark.usefixtures("device_class")
def test_dra_gpus_asked_as_nvidia_gpu_are_planned_and_the_pod_runs(
    cluster: DevCluster, namespace: str
) -> None:
    fragmented_and_planned(
        cluster, namespace, lambda app, gpus, cls: deployment(app, gpus, cls, namespace)
    )


def test_dra_gpus_asked_by_claims_are_planned_and_the_pod_runs(
    cluster: DevCluster, namespace: str, consulted_for_every_pod: str
) -> None:
    """The same with pods whose GPUs come from ResourceClaims made from templates: the planner
    counts them as the DeviceClass's resource, which the policy lists."""
    templates = [claim_template(f"gpus-{n}", consulted_for_every_pod, n) for n in (2, 4)]
    cluster.apply(templates, "-n", namespace)

    def workload(app: str, gpus: int, priority_class: str) -> dict[str, Any]:
        return with_claim(deployment(app, 0, priority_class, namespace), f"gpus-{gpus}")

    fragmented_and_planned(cluster, namespace, workload)
    # The extender's GPU scoring follows an edit of the policy's gpuResourceNames: without the
    # class's resource the devices are no GPUs to it, and the 4-GPU pod asks none.
    patch = {"spec": {"gpuResourceNames": ["nvidia.com/gpu"]}}
    cluster.kubectl("patch", "packingpolicy", "default", "--type=merge", "-p", json.dumps(patch))
    nodes = [f"{namespace}-{x}" for x in "abc"]
    pods = get_json(cluster, "pods", "-n", namespace)["items"]
    big = next(p for p in pods if p["metadata"]["name"].startswith("big-"))
    wait_for(
        lambda: prioritized(cluster, big, nodes) == dict.fromkeys(nodes, 9),
        timeout=30,
        what="the extender's scores without the class's resource",
    )


def test_a_pod_offering_alternatives_is_planned_with_its_first(
    cluster: DevCluster, namespace: str, consulted_for_every_pod: str
) -> None:
    """The same with the 4-GPU pod's claim offering 4 GPUs or else 8 (``firstAvailable``; no
    node has 8): the planner plans its first alternative, kube-scheduler allocates it there."""
    templates = [claim_template("gpus-2", consulted_for_every_pod, 2)]
    templates.append(claim_template("gpus-4", consulted_for_every_pod, 4, or_else=8))
    cluster.apply(templates, "-n", namespace)

    def workload(app: str, gpus: int, priority_class: str) -> dict[str, Any]:
        return with_claim(deployment(app, 0, priority_class, namespace), f"gpus-{gpus}")

    fragmented_and_planned(cluster, namespace, workload)


def test_a_pod_asking_all_of_a_nodes_devices_is_planned_where_as_many_are(
    cluster: DevCluster, namespace: str, consulted_for_every_pod: str
) -> None:
    """The same with the 4-GPU pod's claim asking all of a node's devices (``allocationMode:
    All``; every node of the pool has 4): kube-scheduler allocates all 4 where the plan made
    room."""
    templates = [claim_template("gpus-2", consulted_for_every_pod, 2)]
    templates.append(claim_template("gpus-4", consulted_for_every_pod, 0))
    cluster.apply(templates, "-n", namespace)

    def workload(app: str, gpus: int, priority_class: str) -> dict[str, Any]:
        return with_claim(deployment(app, 0, priority_class, namespace), f"gpus-{gpus}")

    # (the extender's GPU score counts no device for such a claim: how many is the node's)
    fragmented_and_planned(cluster, namespace, workload, scored=False)


def test_a_pod_whose_devices_must_share_a_clique_is_planned_where_any_four_do(
    cluster: DevCluster, namespace: str, consulted_for_every_pod: str
) -> None:
    """The same with the 4-GPU pod's claim asking all its devices in one NVLink domain
    (``constraints``, ``matchAttribute``) and a third node, c, with 4 free GPUs in two
    domains, added before the pod: kube-scheduler cannot allocate it 4 of one domain there,
    so the plan moves a 2-GPU pod (to c, say) to make room on a or b, where all are in one,
    instead of binding it to c."""
    templates = [claim_template("gpus-2", consulted_for_every_pod, 2)]
    templates.append(claim_template("gpus-4", consulted_for_every_pod, 4, match="clique"))
    cluster.apply(templates, "-n", namespace)

    def workload(app: str, gpus: int, priority_class: str) -> dict[str, Any]:
        return with_claim(deployment(app, 0, priority_class, namespace), f"gpus-{gpus}")

    c = f"{namespace}-c"
    after = fragmented_and_planned(
        cluster,
        namespace,
        workload,
        scored=False,
        before=lambda: dra_node(cluster, namespace, c, cliques=2),
    )
    assert after["big"] != c, after


def test_pods_sharing_a_claim_not_allocated_yet_are_planned_one_and_then_the_other(
    cluster: DevCluster, namespace: str, consulted_for_every_pod: str
) -> None:
    """The same with the 4-GPU pod two replicas naming one ResourceClaim of 4 GPUs
    (``resourceClaimName``), not allocated yet: the planner plans the first of them (by name,
    both of one priority) where it makes room; once it runs there, its claim allocated, the
    other follows it to the same node."""
    cluster.apply([claim_template("gpus-2", consulted_for_every_pod, 2)], "-n", namespace)
    cluster.apply([shared_claim("shared", consulted_for_every_pod, 4)], "-n", namespace)

    def workload(app: str, gpus: int, priority_class: str) -> dict[str, Any]:
        if app != "big":
            return with_claim(deployment(app, 0, priority_class, namespace), f"gpus-{gpus}")
        pair = deployment(app, 0, priority_class, namespace, replicas=2)
        return with_claim(pair, "shared", named=True)

    node = fragmented_and_planned(cluster, namespace, workload, scored=False)["big"]
    wait_for(
        lambda: (
            [
                p["spec"].get("nodeName")
                for p in get_json(cluster, "pods", "-n", namespace, "-l", "app=big")["items"]
                if p["status"].get("phase") == "Running"
            ]
            == [node, node]
        ),
        timeout=60,
        what=f"both pods sharing the claim Running on {node}",
    )
    events = get_json(cluster, "events", "-n", namespace)["items"]
    followed = [e for e in events if e["reason"] == "Planned" and "follows it" in e["message"]]
    assert len(followed) == 1, [e["message"] for e in events]


def test_a_pod_with_admin_access_is_planned_beside_the_devices_owner(
    cluster: DevCluster, namespace: str, consulted_for_every_pod: str
) -> None:
    """A monitor asks admin access to 5 GPUs (its namespace labelled for that): only a has as
    many, 4 of them an owner's and 1 a filler's, whose cpu leaves the monitor too little; b,
    added after, has 4 free GPUs. kube-scheduler leaves the monitor Unschedulable (it cannot
    preempt the filler, its equal): the planner moves the filler to b, and the monitor runs
    on a, given all 5 GPUs in use with admin access."""
    cluster.kubectl("label", "namespace", namespace, "resource.kubernetes.io/admin-access=true")
    cluster.apply(priority_classes())
    watch = claim_template("watch", consulted_for_every_pod, 5)
    watch["spec"]["spec"]["devices"]["requests"][0]["exactly"]["adminAccess"] = True
    templates = [claim_template(f"gpus-{n}", consulted_for_every_pod, n) for n in (1, 4)]
    cluster.apply([*templates, watch], "-n", namespace)
    cluster.stop_component("extender")
    a, b = (f"{namespace}-{x}" for x in "ab")

    def workload(app: str, template: str, priority_class: str, cpu: str) -> dict[str, Any]:
        pods = with_claim(deployment(app, 0, priority_class, namespace), template)
        pods["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] = {"cpu": cpu}
        return pods

    dra_node(cluster, namespace, a, gpus=5)
    owner, filler = (
        workload("owner", "gpus-4", "frag-high", "1"),
        workload("filler", "gpus-1", "frag-mid", "29"),
    )
    cluster.apply([owner, filler], "-n", namespace)
    wait_for(
        lambda: running_on(cluster, namespace) == {"owner": a, "filler": a},
        what="the owner and the filler on a",
    )
    dra_node(cluster, namespace, b)
    cluster.apply([workload("monitor", "watch", "frag-mid", "4")], "-n", namespace)
    planned_into(cluster, namespace, "monitor", {"owner": a, "monitor": a, "filler": b})
    claims = get_json(cluster, "resourceclaims", "-n", namespace)["items"]
    (watching,) = [c for c in claims if c["metadata"]["name"].startswith("monitor-")]
    results = watching["status"]["allocation"]["devices"]["results"]
    assert len(results) == 5 and all(r.get("adminAccess") for r in results), results


@pytest.mark.usefixtures("device_class")
def test_whole_gpus_mig_could_split_are_planned_around_a_split_one(
    cluster: DevCluster, namespace: str
) -> None:
    """Partitionable GPUs (each offered whole or as two halves, consuming one counter set):
    c has a half in use, so 3 whole GPUs free; a and b 2 each. The 4-GPU pod fits on none;
    counting c's split GPU as whole would plan it there with no move, which kube-scheduler
    refuses. The plan moves one 2-GPU pod instead, and the pod runs on a or b."""
    cluster.apply(priority_classes())
    apply_device_class(cluster, namespace, kind="half")
    cluster.apply([claim_template("half", f"{namespace}-half", 1)], "-n", namespace)
    cluster.stop_component("extender")
    a, b, c = (f"{namespace}-{x}" for x in "abc")
    half = with_claim(deployment("half", 0, "frag-high", namespace), "half")
    for node, apps in (
        (c, [half, deployment("c-filler", 3, "frag-high", namespace)]),
        (a, [deployment(app, 2, "frag-high", namespace) for app in ("high-a", "filler")]),
        (b, [deployment("high-b", 2, "frag-high", namespace)]),
    ):
        dra_node(cluster, namespace, node, partitionable=True)
        cluster.apply(apps, "-n", namespace)
        names = [app["metadata"]["name"] for app in apps]
        wait_for(
            lambda node=node, names=names: all(
                running_on(cluster, namespace).get(n) == node for n in names
            ),
            what=f"{', '.join(names)} on {node}",
        )
    for filler in ("filler", "c-filler"):
        cluster.kubectl("delete", "deployment", filler, "-n", namespace, "--wait=true")
    wait_for(
        lambda: sorted(len(v) for v in allocated(cluster, namespace).values()) == [1, 2, 2],
        what="the fillers' GPUs free",  # c: the half; a and b: 2 whole GPUs each
    )
    cluster.apply([deployment("big", 4, "frag-mid", namespace)], "-n", namespace)
    wait_for(lambda: unschedulable(cluster, namespace, "big"), what="the 4-GPU pod Unschedulable")
    decided(cluster, namespace, "Planned")
    wait_for(
        lambda: running_on(cluster, namespace).get("big"), timeout=90, what="the 4-GPU pod Running"
    )
    assert running_on(cluster, namespace)["big"] in (a, b)
    moved_one(cluster, namespace, "big")
    # The extender's GPU scoring counts the same: each node's 4 whole GPUs less those its pods
    # hold and, on c, the one split.
    gpus = {"high-a": 2, "high-b": 2, "big": 4}
    free = {node: 4 - (node == c) for node in (a, b, c)}
    for app, node in running_on(cluster, namespace).items():
        free[node] -= gpus.get(app, 0)
    one = deployment("one", 1, "frag-mid", namespace)["spec"]["template"]
    one["metadata"].update(name="one", namespace=namespace, uid="uid-one")
    expected = {node: best_fit_score(1, NodeGpus(4, n)) for node, n in free.items()}
    assert expected[c] != best_fit_score(1, NodeGpus(4, free[c] + 1)), expected  # the split tells
    wait_for(
        lambda: prioritized(cluster, one, [a, b, c]) == expected,
        what=f"the extender's scores counting whole GPUs but the split one: {expected}",
    )


def test_a_pod_sharing_an_allocated_claim_is_planned_where_its_devices_are(
    cluster: DevCluster, namespace: str, consulted_for_every_pod: str
) -> None:
    """A ResourceClaim made by hand (2 GPUs), named by two Deployments' pods: the first runs
    on a, so the claim is allocated there. A filler of equal priority then takes a's cpu, and
    b (empty) joins the pool. The second pod fits only on a (its claim's devices are there;
    kube-scheduler cannot preempt an equal), which kube-scheduler leaves Unschedulable: the
    planner moves the filler to b, not the second pod there, and the second pod runs on a."""
    cluster.apply(priority_classes())
    cluster.apply([claim_template("gpus-1", consulted_for_every_pod, 1)], "-n", namespace)
    cluster.apply([shared_claim("shared", consulted_for_every_pod, 2)], "-n", namespace)
    cluster.stop_component("extender")
    a, b = (f"{namespace}-{x}" for x in "ab")

    def sharing(app: str, priority_class: str) -> dict[str, Any]:
        workload = with_claim(deployment(app, 0, priority_class, namespace), "shared", named=True)
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        container["resources"]["requests"] = {"cpu": "2"}
        return workload

    dra_node(cluster, namespace, a)
    filler = with_claim(deployment("filler", 0, "frag-mid", namespace), "gpus-1")
    filler["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] = {"cpu": "29"}
    cluster.apply([sharing("first", "frag-high"), filler], "-n", namespace)
    wait_for(
        lambda: running_on(cluster, namespace) == {"first": a, "filler": a},
        what="the first sharing pod and the filler on a",
    )
    dra_node(cluster, namespace, b)
    cluster.apply([sharing("second", "frag-mid")], "-n", namespace)
    planned_into(cluster, namespace, "second", {"first": a, "second": a, "filler": b})
    status = get_json(cluster, "resourceclaim", "shared", "-n", namespace)["status"]
    assert len(status["allocation"]["devices"]["results"]) == 2
    assert len(status["reservedFor"]) == 2, status
