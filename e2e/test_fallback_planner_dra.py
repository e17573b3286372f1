"""The fallback planner with GPUs a DRA driver publishes (resource.k8s.io/v1): nodes without a
device plugin's `nvidia.com/gpu`, their GPUs in ResourceSlices, and a DeviceClass that serves
`nvidia.com/gpu` from them (its `extendedResourceName`), so pods asking for `nvidia.com/gpu`
get devices kube-scheduler allocates. The real kube-scheduler leaves a 4-GPU pod Pending on a
fragmented pair of nodes; the planner moves one pod, the pod runs, and the devices allocated
to the pods never exceed a node's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dunnage.devcluster.cluster import DevCluster, NodeSpec
from e2e.conftest import get_json, wait_for
from e2e.gpu_pool import POOL, deployment, priority_classes, running_on, unschedulable
from e2e.test_fallback_planner import decided

DRIVER = "gpu.dunnage-e2e.io"


@pytest.fixture
def device_class(cluster: DevCluster, namespace: str) -> Iterator[str]:
    """A DeviceClass of this test's devices only, serving `nvidia.com/gpu`; deleted after."""
    name = f"{namespace}-gpu"
    selector = f'device.driver == "{DRIVER}" && device.attributes["{DRIVER}"].pool == "{namespace}"'
    cluster.apply(
        [
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "DeviceClass",
                "metadata": {"name": name},
                "spec": {
                    "selectors": [{"cel": {"expression": selector}}],
                    "extendedResourceName": "nvidia.com/gpu",
                },
            }
        ]
    )
    yield name
    cluster.kubectl("delete", "deviceclass", name, "--ignore-not-found")
    cluster.kubectl("delete", "resourceslices", "-l", f"{POOL}={namespace}", "--ignore-not-found")


def dra_node(cluster: DevCluster, namespace: str, node: str, gpus: int = 4) -> None:
    """A kwok node of the pool with no `nvidia.com/gpu` of its own and ``gpus`` devices in a
    ResourceSlice of the driver."""
    cluster.create_nodes([NodeSpec(node, gpus=0, labels={POOL: namespace})])
    devices = [
        {
            "name": f"gpu-{i}",
            "attributes": {"pool": {"string": namespace}, "model": {"string": "h100"}},
            "capacity": {"memory": {"value": "80Gi"}},
        }
        for i in range(gpus)
    ]
    cluster.apply(
        [
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceSlice",
                "metadata": {"name": f"{node}-gpus", "labels": {POOL: namespace}},
                "spec": {
                    "driver": DRIVER,
                    "nodeName": node,
                    "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                    "devices": devices,
                },
            }
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


def test_dra_gpus_fragmented_are_planned_and_the_pod_runs(
    cluster: DevCluster, namespace: str, device_class: str
) -> None:
    """a and b have 4 DRA GPUs each, and a 2-GPU high-priority pod each (a's filler, placed
    first so that b's pod goes to b, is deleted after). The 4-GPU pod below them in priority
    cannot preempt either: the planner moves one beside the other, and it runs."""
    cluster.apply(priority_classes())
    cluster.stop_component("extender")
    a, b = (f"{namespace}-{x}" for x in "ab")
    dra_node(cluster, namespace, a)
    first = [deployment(app, 2, "frag-high", namespace) for app in ("high-a", "filler")]
    cluster.apply(first, "-n", namespace)
    wait_for(
        lambda: running_on(cluster, namespace) == {"high-a": a, "filler": a},
        what="high-a and the filler on a",
    )
    dra_node(cluster, namespace, b)
    cluster.apply([deployment("high-b", 2, "frag-high", namespace)], "-n", namespace)
    wait_for(
        lambda: running_on(cluster, namespace) == {"high-a": a, "filler": a, "high-b": b},
        what="high-a and the filler on a, high-b on b",
    )
    cluster.kubectl("delete", "deployment", "filler", "-n", namespace, "--wait=true")
    wait_for(
        lambda: len(allocated(cluster, namespace).get(a, [])) == 2, what="the filler's GPUs free"
    )

    cluster.apply([deployment("big", 4, "frag-mid", namespace)], "-n", namespace)
    wait_for(lambda: unschedulable(cluster, namespace, "big"), what="the 4-GPU pod Unschedulable")
    event = decided(cluster, namespace, "Planned")
    wait_for(
        lambda: running_on(cluster, namespace).get("big"), timeout=90, what="the 4-GPU pod Running"
    )
    after = running_on(cluster, namespace)
    assert after["high-a"] == after["high-b"] != after["big"], after
    devices = allocated(cluster, namespace)
    assert sorted(len(set(v)) for v in devices.values()) == [4, 4], devices
    plans = [
        p["spec"]
        for p in get_json(cluster, "packingplans")["items"]
        if any(x["pod"].startswith(f"{namespace}/big") for x in p["spec"].get("bindings", []))
    ]
    assert len(plans) == 1 and len(plans[0]["moves"]) == 1 and not plans[0]["evictions"], plans
    print(event["message"])
