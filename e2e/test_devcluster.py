"""The local control plane is real: real scheduling, real preemption, real deletion."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess

import pytest
import yaml

from dunnage.cluster import snapshot_from_objects
from dunnage.devcluster.cluster import K8S_VERSION, DevCluster, NodeSpec, bin_dir
from e2e.conftest import get_json, pods_by_name, wait_for


def test_server_version_is_the_pinned_release(cluster: DevCluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == K8S_VERSION
    assert version["clientVersion"]["gitVersion"] == K8S_VERSION


def test_clients_verify_the_api_server(cluster: DevCluster) -> None:
    """The kubeconfig trusts the cluster's own CA and skips no verification; a client that
    trusts only the system's CAs is refused, so the CA is what makes the connection."""
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    (entry,) = kubeconfig["clusters"]
    assert "insecure-skip-tls-verify" not in entry["cluster"]
    server = entry["cluster"]["server"]
    host, port = server.removeprefix("https://").split(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ssl.create_default_context(cafile=cluster.ca_file).wrap_socket(raw, server_hostname=host),
    ):
        pass
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ssl.create_default_context().wrap_socket(raw, server_hostname=host),
    ):
        pass


def pod(name: str, gpus: int, priority_class: str | None = None, node: str | None = None) -> dict:
    spec: dict = {
        "containers": [
            {
                "name": "c",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"limits": {"nvidia.com/gpu": gpus}},
            }
        ],
        "terminationGracePeriodSeconds": 0,
    }
    if priority_class:
        spec["priorityClassName"] = priority_class
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def cpu_pod(name: str, cpu: str, node: str) -> dict:
    """A pod asking ``cpu`` (and no GPU) on ``node``."""
    out = pod(name, 0, node=node)
    out["spec"]["containers"][0]["resources"]["requests"] = {"cpu": cpu}
    return out


def runs(cluster: DevCluster, namespace: str, name: str) -> bool:
    return bool(pods_by_name(cluster, namespace)[name]["status"].get("phase") == "Running")


def short_of_cpu(cluster: DevCluster, namespace: str, name: str) -> bool:
    """Whether kube-scheduler last refused the pod for want of cpu."""
    conditions = pods_by_name(cluster, namespace)[name]["status"].get("conditions", [])
    return any(
        c.get("reason") == "Unschedulable" and "Insufficient cpu" in c.get("message", "")
        for c in conditions
    )


def test_scheduler_binds_and_kwok_runs(cluster: DevCluster, namespace: str) -> None:
    cluster.create_nodes([NodeSpec("devc-a", gpus=4)])
    cluster.apply([pod("one", 1, node="devc-a")], "-n", namespace)
    running = wait_for(
        lambda: (
            (p := pods_by_name(cluster, namespace).get("one"))
            and p["status"].get("phase") == "Running"
            and p
        ),
        what="pod Running",
    )
    assert running["spec"]["nodeName"] == "devc-a"


def test_gpu_pods_are_packed(cluster: DevCluster, namespace: str) -> None:
    """The scheduler profiles bin-pack GPUs in-tree (NodeResourcesFit, MostAllocated): a burst
    of single-GPU pods fills one node; kube-scheduler's default scoring would spread them."""
    cluster.create_nodes(
        [NodeSpec(f"devc-pack-{i}", gpus=4, labels={"devc-pack": "yes"}) for i in range(3)]
    )
    pods = [pod(f"p{i}", 1) for i in range(4)]
    for p in pods:
        p["spec"]["nodeSelector"] = {"devc-pack": "yes"}
    cluster.apply(pods, "-n", namespace)

    def placements() -> list[str] | None:
        bound = [p["spec"].get("nodeName") for p in pods_by_name(cluster, namespace).values()]
        return bound if len(bound) == 4 and all(bound) else None

    nodes = wait_for(placements, what="the four pods bound")
    assert len(set(nodes)) == 1, nodes


def test_default_preemption_really_evicts(cluster: DevCluster, namespace: str) -> None:
    cluster.create_nodes([NodeSpec("devc-full", gpus=2)])
    cluster.apply(
        [
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": "devc-high"},
                "value": 1000,
            },
        ]
    )
    cluster.apply([pod("low", 2, node="devc-full")], "-n", namespace)
    wait_for(
        lambda: pods_by_name(cluster, namespace)["low"]["status"].get("phase") == "Running",
        what="low-priority pod Running",
    )
    cluster.apply([pod("high", 2, "devc-high", node="devc-full")], "-n", namespace)
    wait_for(lambda: "low" not in pods_by_name(cluster, namespace), what="victim deleted")
    high = wait_for(
        lambda: (
            (p := pods_by_name(cluster, namespace)["high"])["status"].get("phase") == "Running"
            and p
        ),
        what="preemptor Running",
    )
    assert high["spec"]["nodeName"] == "devc-full"


def test_pod_level_requests_count_as_kube_scheduler_counts_them(
    cluster: DevCluster, namespace: str
) -> None:
    """A pod whose cpu is asked for at pod level (spec.resources, PodLevelResources) and not by
    its container: kube-scheduler counts the pod's 3 cpus, so a 2-cpu pod stays Pending beside
    it on a 4-cpu node. The snapshot read from the API counts the same, so the planner would
    not place it there either (the loader once counted 0)."""
    cluster.create_nodes([NodeSpec("devc-podlevel", cpu="4", gpus=0)])
    big = pod("big", 0, node="devc-podlevel")
    big["spec"]["containers"][0]["resources"] = {}
    big["spec"]["resources"] = {"requests": {"cpu": "3"}, "limits": {"cpu": "3"}}
    small = cpu_pod("small", "2", "devc-podlevel")
    cluster.apply([big], "-n", namespace)
    wait_for(lambda: runs(cluster, namespace, "big"), what="the pod-level pod Running")
    cluster.apply([small], "-n", namespace)
    wait_for(
        lambda: short_of_cpu(cluster, namespace, "small"),
        what="kube-scheduler refusing the 2-cpu pod for want of cpu",
    )
    objects = get_json(cluster, "nodes,pods", "-n", namespace)["items"]
    snapshot = snapshot_from_objects(
        [o for o in objects if o["kind"] == "Pod" or o["metadata"]["name"] == "devc-podlevel"]
    )
    pods = {p.name: p for p in snapshot.pods}
    (node,) = snapshot.nodes
    assert pods["big"].requests["cpu"] == 3000
    assert not pods["small"].requests.fits_in(node.allocatable - pods["big"].requests)


def test_a_pod_resized_in_place_counts_as_kube_scheduler_counts_it(
    cluster: DevCluster, namespace: str
) -> None:
    """A 3-cpu pod shrunk in place to 1 cpu (the resize subresource) whose kubelet has not
    actuated the resize yet (its status, written here as a kubelet would, still allocates
    3): kube-scheduler counts 3, so a 2-cpu pod stays Pending beside it on a 4-cpu node. Then
    grown to 4 cpus (the API server refuses more than the node's allocatable), a resize the
    kubelet finds infeasible (as it does, say, under a static CPU manager policy):
    kube-scheduler counts the 3 allocated, not the spec, and a 1-cpu pod runs beside it. The
    snapshot read from the API counts the same both times (the loader once read the spec
    alone: 1, then 4)."""
    cluster.create_nodes([NodeSpec("devc-resize", cpu="4", gpus=0)])
    cluster.apply([cpu_pod("big", "3", "devc-resize")], "-n", namespace)
    wait_for(lambda: runs(cluster, namespace, "big"), what="the 3-cpu pod Running")

    def patch(*args: str, body: object) -> None:
        cluster.kubectl("patch", "pod", "big", "-n", namespace, *args, "-p", json.dumps(body))

    def resize(cpu: str) -> None:
        requests = {"requests": {"cpu": cpu}}
        body = {"spec": {"containers": [{"name": "c", "resources": requests}]}}
        patch("--subresource=resize", body=body)

    status = "/status/containerStatuses/0"
    patch(
        "--subresource=status",
        "--type=json",
        body=[
            {"op": "add", "path": f"{status}/allocatedResources", "value": {"cpu": "3"}},
            {"op": "add", "path": f"{status}/resources", "value": {"requests": {"cpu": "3"}}},
        ],
    )
    resize("1")
    (container,) = pods_by_name(cluster, namespace)["big"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"] == "1"

    def snapshot_counts() -> dict[str, int]:
        objects = get_json(cluster, "nodes,pods", "-n", namespace)["items"]
        snapshot = snapshot_from_objects(
            [o for o in objects if o["kind"] == "Pod" or o["metadata"]["name"] == "devc-resize"]
        )
        return {p.name: p.requests["cpu"] for p in snapshot.pods}

    cluster.apply([cpu_pod("small", "2", "devc-resize")], "-n", namespace)
    wait_for(
        lambda: short_of_cpu(cluster, namespace, "small"),
        what="kube-scheduler refusing the 2-cpu pod",
    )
    assert snapshot_counts() == {"big": 3000, "small": 2000}

    resize("4")
    infeasible = {
        "type": "PodResizePending",
        "status": "True",
        "reason": "Infeasible",
        "message": "the kubelet cannot resize this pod in place",
    }
    patch(
        "--subresource=status",
        "--type=json",
        body=[{"op": "add", "path": "/status/conditions/-", "value": infeasible}],
    )
    cluster.apply([cpu_pod("tiny", "1", "devc-resize")], "-n", namespace)
    wait_for(
        lambda: runs(cluster, namespace, "tiny"),
        what="the 1-cpu pod Running beside the infeasible resize",
    )
    assert short_of_cpu(cluster, namespace, "small")
    assert snapshot_counts() == {"big": 3000, "small": 2000, "tiny": 1000}


def test_helm_from_the_cache_runs() -> None:
    out = subprocess.run(
        [str(bin_dir() / "helm"), "version", "--short"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("v3.")


def test_down_leaves_no_process_and_no_port_and_up_starts_anew(tmp_path) -> None:
    dev = DevCluster(tmp_path / "short-lived")
    dev.up(nodes=2, bare=True)
    dev.kubectl("create", "namespace", "left-behind")
    dev.down()
    # Up again in the same directory: a new cluster, not the objects of the one before.
    dev.up(nodes=2, bare=True)
    assert "left-behind" not in dev.kubectl("get", "namespaces", "-o", "name").stdout
    ports = dev.ports
    pids = {f.stem: int(f.read_text()) for f in dev.pids.glob("*.pid")}
    assert {"etcd", "kube-apiserver", "kube-scheduler", "kwok"} <= set(pids)
    assert len(get_json(dev, "nodes")["items"]) == 2
    dev.down()
    assert dev.running() == []
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for name, port in ports.items():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"{name} still listens on {port}"
