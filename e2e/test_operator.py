"""The ModelService operator on the real local control plane.

The session cluster runs the operator as a process (DevCluster.start_operator, all namespaces);
kube-scheduler places the engine pods on kwok GPU nodes and the controller-manager's garbage
collector deletes what a deleted ModelService owned. Most tests pin their ModelServices to a
pool of nodes of their own (POOL) so that they never compete with other tests for GPUs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dunnage.cluster import access, crds
from dunnage.cluster.access import Permission
from dunnage.devcluster.cluster import GPU_PRODUCT_LABEL, DevCluster, NodeSpec, free_port
from dunnage.devcluster.prometheus import prometheus_binary
from dunnage.operator.autoscaler import PROMETHEUS_URL_ENV
from dunnage.operator.bench import POOL_LABEL, measure
from dunnage.operator.render import FIELD_MANAGER, HANDOVER_MANAGER
from dunnage.operator.spec import ROLE_LABEL
from dunnage.scheduler_extender.fallback import RELEASED_ANNOTATION
from e2e.conftest import (
    get_json,
    helm,
    lease_holder,
    rbac_denials,
    render_chart,
    scrape,
    wait_for,
)

POOL = "operator-e2e"
MS_LABEL = "dunnage.io/model-service"
CHILD_KINDS = "deployments,services,poddisruptionbudgets"


@pytest.fixture(scope="module")
def pool(cluster: DevCluster) -> str:
    """Kwok GPU nodes for this module's ModelServices (roomy: 8 GPUs, 128 CPUs each)."""
    cluster.create_nodes(
        [
            NodeSpec(
                f"op-node-{i}", cpu="128", memory="2Ti", gpus=8, pods=250, labels={POOL_LABEL: POOL}
            )
            for i in range(4)
        ]
    )
    return POOL


def model_service(
    name: str, *, gpus: int = 1, image: str = "vllm/vllm-openai:v0.11.0", **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "dunnage.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "m", "uri": "hf://org/model"},
            "engine": {"image": image},
            "resources": {"gpus": gpus, "cpu": "1", "memory": "4Gi"},
            "roles": {
                "prefill": {"replicas": 1, "minReplicas": 1, "maxReplicas": 4},
                "decode": {"replicas": 1, "minReplicas": 1, "maxReplicas": 4},
            },
            "nodeSelector": {POOL_LABEL: POOL},
        },
    }
    body["spec"].update(spec)
    return body


def ms_status(cluster: DevCluster, namespace: str, name: str) -> dict[str, Any]:
    obj = get_json(cluster, "modelservice", name, "-n", namespace)
    return dict(obj.get("status") or {})


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def wait_ready(
    cluster: DevCluster, namespace: str, name: str, timeout: float = 90
) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = get_json(cluster, "modelservice", name, "-n", namespace)
        status = obj.get("status") or {}
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return status if current and condition(status, "Ready").get("status") == "True" else None

    result: dict[str, Any] = wait_for(ready, timeout=timeout, what=f"ModelService {name} Ready")
    return result


def children(cluster: DevCluster, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
    selector = f"{MS_LABEL}={name}" if name else MS_LABEL
    items: list[dict[str, Any]] = get_json(cluster, CHILD_KINDS, "-n", namespace, "-l", selector)[
        "items"
    ]
    return items


def pods(cluster: DevCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(
        cluster, "pods", "-n", namespace, "-l", f"{MS_LABEL}={name}"
    )["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def role_pods(cluster: DevCluster, namespace: str, name: str, role: str) -> list[dict[str, Any]]:
    return [
        p for p in pods(cluster, namespace, name) if p["metadata"]["labels"][ROLE_LABEL] == role
    ]


def placed_and_waiting(found: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The nodes these pods are bound to, sorted, and kube-scheduler's reasons for the others."""
    placed = sorted(p["spec"]["nodeName"] for p in found if p["spec"].get("nodeName"))
    waiting = [
        c.get("message", "")
        for p in found
        for c in (p.get("status") or {}).get("conditions") or []
        if c.get("reason") == "Unschedulable"
    ]
    return placed, waiting


def deployment(cluster: DevCluster, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = get_json(
        cluster, "deployment", name, "-n", namespace, "--show-managed-fields"
    )
    return found


def replica_managers(obj: dict[str, Any]) -> set[str]:
    return {
        m["manager"]
        for m in obj["metadata"].get("managedFields") or []
        if "f:replicas" in (m.get("fieldsV1") or {}).get("f:spec", {})
    }


# --- the samples ----------------------------------------------------------------------------------


def test_samples_bring_a_pd_model_service_to_ready(
    cluster: DevCluster, namespace: str, repo_root: Path
) -> None:
    # Room for the sample (2 x 1 GPU + 3 x 2 GPUs, 8 CPUs each), on GPU nodes of its own.
    cluster.create_nodes(
        [NodeSpec(f"sample-node-{i}", cpu="64", memory="512Gi", gpus=8) for i in range(2)]
    )
    cluster.kubectl("apply", "-f", str(repo_root / "manifests" / "crds"))
    cluster.kubectl("apply", "-f", str(repo_root / "manifests" / "samples"), "-n", namespace)
    status = wait_ready(cluster, namespace, "llama-8b", timeout=120)
    assert status["mode"] == "PrefillDecode"
    assert status["roles"]["prefill"]["readyReplicas"] == 2
    assert status["roles"]["decode"]["readyReplicas"] == 3

    running = pods(cluster, namespace, "llama-8b")
    assert len(running) == 5
    nodes = {n["metadata"]["name"]: n for n in get_json(cluster, "nodes")["items"]}
    for pod in running:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["schedulerName"] == "dunnage-scheduler"
        assert pod["spec"]["priorityClassName"] == "llm-high"
        node = nodes[pod["spec"]["nodeName"]]
        assert node["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"
        assert "nvidia.com/gpu" in node["status"]["allocatable"]
        role = pod["metadata"]["labels"]["dunnage.io/role"]
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == ("2" if role == "decode" else "1")
        assert any(
            a.startswith("--kv-transfer-config=") for a in pod["spec"]["containers"][0]["args"]
        )

    table = cluster.kubectl("get", "ms", "-n", namespace).stdout
    assert "ROLES" in table and "READY" in table
    line = next(row for row in table.splitlines() if row.startswith("llama-8b"))
    assert "prefill 2/2, decode 3/3" in line and "True" in line

    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in children(cluster, namespace))
    assert kinds == [
        ("Deployment", "llama-8b-decode"),
        ("Deployment", "llama-8b-prefill"),
        ("PodDisruptionBudget", "llama-8b-decode"),
        ("PodDisruptionBudget", "llama-8b-prefill"),
        ("Service", "llama-8b"),
        ("Service", "llama-8b-decode"),
        ("Service", "llama-8b-prefill"),
    ]
    events = get_json(
        cluster, "events", "-n", namespace, "--field-selector", "involvedObject.kind=ModelService"
    )
    assert any(e["reason"] == "Ready" for e in events["items"])


def test_invalid_samples_are_rejected_by_the_api_server(
    cluster: DevCluster, namespace: str, repo_root: Path
) -> None:
    samples = sorted((repo_root / "e2e" / "invalid").glob("*.yaml"))
    assert len(samples) >= 8
    for path in samples:
        expected = path.read_text().splitlines()[0].removeprefix("# expect:").strip()
        done = cluster.kubectl("apply", "-f", str(path), "-n", namespace, check=False)
        assert done.returncode != 0, f"{path.name} was accepted"
        assert expected in done.stderr, f"{path.name}: {done.stderr}"
    assert get_json(cluster, "modelservices", "-n", namespace)["items"] == []


def test_the_docs_model_services_are_accepted_by_the_api_server(
    cluster: DevCluster, namespace: str, repo_root: Path, tmp_path: Path
) -> None:
    """docs/operator.md's examples pass the CRD's schema and rules (a server-side dry run)."""
    text = (repo_root / "docs" / "operator.md").read_text()
    blocks = [
        b for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S) if "kind: ModelService" in b
    ]
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        path = tmp_path / f"example-{i}.yaml"
        path.write_text(block)
        done = cluster.kubectl(
            "apply", "--dry-run=server", "-f", str(path), "-n", namespace, check=False
        )
        assert done.returncode == 0, f"docs example {i}: {done.stderr}"


# --- lifecycle ------------------------------------------------------------------------------------


def test_spec_change_rolls_the_deployments(cluster: DevCluster, namespace: str, pool: str) -> None:
    cluster.apply([model_service("roll")], "-n", namespace)
    wait_ready(cluster, namespace, "roll")
    before = {p["metadata"]["name"] for p in pods(cluster, namespace, "roll")}
    assert len(before) == 2

    cluster.kubectl(
        "patch",
        "ms",
        "roll",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"engine": {"image": "vllm/vllm-openai:v0.11.1"}}}),
    )

    def rolled() -> bool:
        now = pods(cluster, namespace, "roll")
        return (
            len(now) == 2
            and not ({p["metadata"]["name"] for p in now} & before)
            and all(p["spec"]["containers"][0]["image"].endswith("v0.11.1") for p in now)
            and all(p["status"].get("phase") == "Running" for p in now)
        )

    wait_for(rolled, timeout=90, what="pods replaced with the new image")
    status = wait_ready(cluster, namespace, "roll")
    assert status["observedGeneration"] == 2
    for role in ("prefill", "decode"):
        d = deployment(cluster, namespace, f"roll-{role}")
        assert d["spec"]["template"]["spec"]["containers"][0]["image"].endswith("v0.11.1")
    sets = get_json(cluster, "replicasets", "-n", namespace, "-l", f"{MS_LABEL}=roll")["items"]
    assert len(sets) == 4  # one old, one new per role
    events = get_json(
        cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=roll"
    )
    assert any(e["reason"] == "Applied" for e in events["items"])


def test_manual_scale_reverted_only_without_a_policy(
    cluster: DevCluster, namespace: str, pool: str
) -> None:
    cluster.apply([model_service("scale")], "-n", namespace)
    wait_ready(cluster, namespace, "scale")
    cluster.kubectl("scale", "deployment", "scale-decode", "--replicas=3", "-n", namespace)
    wait_for(
        lambda: deployment(cluster, namespace, "scale-decode")["spec"]["replicas"] == 1,
        timeout=30,
        what="kubectl scale reverted",
    )
    assert replica_managers(deployment(cluster, namespace, "scale-decode")) == {FIELD_MANAGER}

    # With an autoscaling policy the operator hands the count over and leaves it alone.
    cluster.kubectl(
        "patch",
        "ms",
        "scale",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"autoscaling": {"policyRef": {"name": "llm-default"}}}}),
    )
    wait_for(
        lambda: (
            FIELD_MANAGER not in replica_managers(deployment(cluster, namespace, "scale-decode"))
        ),
        timeout=30,
        what="replicas handed over",
    )
    handed = deployment(cluster, namespace, "scale-decode")
    assert handed["spec"]["replicas"] == 1  # not reset by the hand-over
    assert HANDOVER_MANAGER in replica_managers(handed)
    cluster.kubectl("scale", "deployment", "scale-decode", "--replicas=3", "-n", namespace)
    # The status can show 3 ready replicas a moment before the role counts as rolled out (Ready
    # still False, e.g. the Deployment's observedGeneration behind): wait for both.
    status = wait_for(
        lambda: (
            (s := ms_status(cluster, namespace, "scale"))["roles"]["decode"]["readyReplicas"] == 3
            and condition(s, "Ready").get("status") == "True"
            and s
        ),
        timeout=30,
        what="3 decode replicas ready, and the ModelService Ready",
    )
    assert status["roles"]["decode"]["replicasOwner"] == "AutoscalingPolicy"
    time.sleep(3)  # long enough for a (wrong) revert to show
    assert deployment(cluster, namespace, "scale-decode")["spec"]["replicas"] == 3

    # Policy removed: the ModelService owns the count again.
    cluster.kubectl(
        "patch",
        "ms",
        "scale",
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps([{"op": "remove", "path": "/spec/autoscaling"}]),
    )
    wait_for(
        lambda: deployment(cluster, namespace, "scale-decode")["spec"]["replicas"] == 1,
        timeout=30,
        what="count taken back",
    )


def test_tolerations_let_a_role_onto_a_tainted_pool(
    cluster: DevCluster, namespace: str, pool: str
) -> None:
    """Decode on a GPU pool its admins keep for it with a taint (dedicated=llm:NoSchedule),
    prefill on the module's pool: the role's nodeSelector over the ModelService's. Without a
    toleration the decode pods wait (kube-scheduler: an untolerated taint) while prefill runs;
    with it in the decode role's tolerations the ModelService is Ready, each role on its pool.
    Then the same toleration for the whole ModelService (spec.tolerations) does as well."""
    label = "e2e-tainted-pool"
    nodes = [f"tainted-{i}" for i in range(2)]
    cluster.create_nodes(
        [NodeSpec(n, cpu="64", memory="1Ti", labels={POOL_LABEL: label}) for n in nodes]
    )
    for n in nodes:
        cluster.kubectl("taint", "node", n, "dedicated=llm:NoSchedule")
    ms = model_service("tainted")
    roles = ms["spec"]["roles"]
    roles["decode"]["nodeSelector"] = {POOL_LABEL: label}
    cluster.apply([ms], "-n", namespace)

    def of(role: str) -> list[dict[str, Any]]:
        return role_pods(cluster, namespace, "tainted", role)

    def untolerated() -> bool:
        decode = of("decode")
        placed, waiting = placed_and_waiting(decode)
        return (
            bool(decode)
            and not placed
            and len(waiting) == len(decode)
            and all("untolerated taint" in w for w in waiting)
        )

    wait_for(untolerated, timeout=60, what="the decode pods refused by the taint")
    toleration = {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}
    roles["decode"]["tolerations"] = [toleration]
    cluster.apply([ms], "-n", namespace)
    wait_ready(cluster, namespace, "tainted")
    pool_nodes = {
        n["metadata"]["name"]
        for n in get_json(cluster, "nodes", "-l", f"{POOL_LABEL}={pool}")["items"]
    }
    assert {p["spec"]["nodeName"] for p in of("decode")} <= set(nodes)
    assert {p["spec"]["nodeName"] for p in of("prefill")} <= pool_nodes
    assert all(toleration in p["spec"]["tolerations"] for p in of("decode"))
    del roles["decode"]["tolerations"]
    ms["spec"]["tolerations"] = [toleration]
    cluster.apply([ms], "-n", namespace)
    wait_ready(cluster, namespace, "tainted")
    assert all(toleration in p["spec"]["tolerations"] for p in of("prefill"))


def test_spread_constraints_reach_kube_scheduler_and_a_role_replaces_them(
    cluster: DevCluster, namespace: str
) -> None:
    """maxSkew 1 per node with minDomains 3 on a pool of two nodes: kube-scheduler places one
    decode pod per node and keeps the third Pending (the selector the operator filled in counts
    the role's own pods). The decode role's own constraint on the same key, without minDomains,
    replaces the ModelService's: the third runs too and the ModelService is Ready."""
    label = "e2e-spread-pool"
    nodes = [f"spread-{i}" for i in range(2)]
    cluster.create_nodes(
        [NodeSpec(n, cpu="64", memory="1Ti", gpus=8, labels={POOL_LABEL: label}) for n in nodes]
    )
    per_node = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname"}
    ms = model_service(
        "spread",
        nodeSelector={POOL_LABEL: label},
        topologySpreadConstraints=[
            {**per_node, "whenUnsatisfiable": "DoNotSchedule", "minDomains": 3}
        ],
    )
    ms["spec"]["roles"]["decode"]["replicas"] = 3
    cluster.apply([ms], "-n", namespace)

    def decode_pods() -> list[dict[str, Any]]:
        return role_pods(cluster, namespace, "spread", "decode")

    def placed_one_per_node() -> bool:
        placed, waiting = placed_and_waiting(decode_pods())
        return (
            placed == nodes
            and len(waiting) == 1
            and "didn't match pod topology spread constraints" in waiting[0]
        )

    wait_for(placed_one_per_node, timeout=60, what="two decode pods placed, one per node")
    (constraint,) = decode_pods()[0]["spec"]["topologySpreadConstraints"]
    assert constraint["labelSelector"] == {
        "matchLabels": {MS_LABEL: "spread", ROLE_LABEL: "decode"}
    }
    ms["spec"]["roles"]["decode"]["topologySpreadConstraints"] = [
        {**per_node, "whenUnsatisfiable": "DoNotSchedule"}
    ]
    cluster.apply([ms], "-n", namespace)
    wait_ready(cluster, namespace, "spread")
    per = [p["spec"]["nodeName"] for p in decode_pods()]
    assert sorted(per.count(n) for n in nodes) == [1, 2]
    assert all(
        "minDomains" not in c for p in decode_pods() for c in p["spec"]["topologySpreadConstraints"]
    )


def test_affinity_reaches_kube_scheduler_and_a_role_replaces_it(
    cluster: DevCluster, namespace: str
) -> None:
    """H100 nodes only (nodeAffinity In, over three nodes of which one is an A100) and at most
    one decode pod per node (the decode role's podAntiAffinity, its selector filled in with the
    role's pods): two of three decode pods run, one per H100 node, the third waits. A decode
    affinity with only the node rule replaces the anti-affinity: all three run, Ready."""
    label, h100_product = "e2e-affinity-pool", "NVIDIA-H100-80GB-HBM3"
    gpus = {"h100-0": h100_product, "h100-1": h100_product, "a100-0": "NVIDIA-A100-SXM4-80GB"}
    cluster.create_nodes(
        [
            NodeSpec(n, cpu="64", memory="1Ti", gpus=8, gpu_product=g, labels={POOL_LABEL: label})
            for n, g in gpus.items()
        ]
    )
    required = "requiredDuringSchedulingIgnoredDuringExecution"
    h100 = {
        "nodeAffinity": {
            required: {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [h100_product]}
                        ]
                    }
                ]
            }
        }
    }
    ms = model_service("affine", nodeSelector={POOL_LABEL: label}, affinity=h100)
    decode = ms["spec"]["roles"]["decode"]
    decode["replicas"] = 3
    # Only pods of one revision count: old pods' anti-affinity, which holds both ways, does not
    # keep the next revision's pods off their nodes during a rollout that never surges.
    one_per_node = {
        "topologyKey": "kubernetes.io/hostname",
        "matchLabelKeys": ["pod-template-hash"],
    }
    decode["affinity"] = {"podAntiAffinity": {required: [one_per_node]}}
    cluster.apply([ms], "-n", namespace)

    def of(role: str) -> list[dict[str, Any]]:
        return role_pods(cluster, namespace, "affine", role)

    def one_per_h100_node() -> bool:
        placed, waiting = placed_and_waiting(of("decode"))
        return (
            placed == ["h100-0", "h100-1"]
            and len(waiting) == 1
            and "didn't match pod anti-affinity rules" in waiting[0]
        )

    wait_for(one_per_h100_node, timeout=60, what="two decode pods placed, one per H100 node")
    (term,) = of("decode")[0]["spec"]["affinity"]["podAntiAffinity"][required]
    revision = of("decode")[0]["metadata"]["labels"]["pod-template-hash"]
    assert term["labelSelector"] == {  # the operator's selector, the API server's merged key
        "matchLabels": {MS_LABEL: "affine", ROLE_LABEL: "decode"},
        "matchExpressions": [{"key": "pod-template-hash", "operator": "In", "values": [revision]}],
    }
    decode["affinity"] = h100
    cluster.apply([ms], "-n", namespace)
    wait_ready(cluster, namespace, "affine")
    placed = [p["spec"]["nodeName"] for p in of("decode") + of("prefill")]
    assert len(placed) == 4 and set(placed) <= {"h100-0", "h100-1"}
    assert all("podAntiAffinity" not in p["spec"]["affinity"] for p in of("decode"))


def test_an_extra_resource_keeps_decode_where_the_nics_are(
    cluster: DevCluster, namespace: str
) -> None:
    """Decode pulls the KV cache over RDMA: one rdma/ib NIC per decode pod (resources.extra of
    the role). Of two nodes only one has a NIC to give: one decode pod runs there, the other
    waits for kube-scheduler's "Insufficient rdma/ib"; prefill, asking none, runs anywhere."""
    label = "e2e-rdma-pool"
    cluster.create_nodes(
        [
            NodeSpec(
                "rdma-0", cpu="64", memory="1Ti", labels={POOL_LABEL: label}, extra={"rdma/ib": "1"}
            ),
            NodeSpec("rdma-none", cpu="64", memory="1Ti", labels={POOL_LABEL: label}),
        ]
    )
    ms = model_service("rdma", nodeSelector={POOL_LABEL: label})
    decode = ms["spec"]["roles"]["decode"]
    decode["replicas"] = 2
    decode["resources"] = {"extra": {"rdma/ib": 1}}
    cluster.apply([ms], "-n", namespace)

    def of(role: str) -> list[dict[str, Any]]:
        return role_pods(cluster, namespace, "rdma", role)

    def one_decode_per_nic() -> bool:
        placed, waiting = placed_and_waiting(of("decode"))
        prefill = of("prefill")
        return (
            placed == ["rdma-0"]
            and len(waiting) == 1
            and "Insufficient rdma/ib" in waiting[0]
            and len(placed_and_waiting(prefill)[0]) == len(prefill) == 1
        )

    wait_for(one_decode_per_nic, timeout=60, what="one decode pod on the node with the NIC")
    limits = of("decode")[0]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["rdma/ib"] == "1"
    assert "rdma/ib" not in of("prefill")[0]["spec"]["containers"][0]["resources"]["limits"]


def test_a_missing_service_account_is_a_replica_failure_until_it_exists(
    cluster: DevCluster, namespace: str, pool: str
) -> None:
    """Engine pods run as the ServiceAccount named, pull with the Secrets named and read their
    token from one (names only: the operator reads none of them), with the pod labels and
    annotations given. While the ServiceAccount is
    missing, the API server refuses every pod the ReplicaSet creates: the ModelService says so
    (Degraded, ReplicaFailure, the API server's message); once it exists, the pods run."""
    token = {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    ms = model_service(
        "accounted",
        engine={
            "image": "registry.example/vllm:1",
            "env": [{"name": "HF_TOKEN", "valueFrom": token}],
        },
        serviceAccountName="engines",
        imagePullSecrets=[{"name": "registry"}],
        podMetadata={"labels": {"team": "llm"}, "annotations": {"prometheus.io/scrape": "true"}},
    )
    cluster.apply([ms], "-n", namespace)

    def replica_failure() -> dict[str, Any] | None:
        degraded = condition(ms_status(cluster, namespace, "accounted"), "Degraded")
        return degraded if degraded.get("reason") == "ReplicaFailure" else None

    degraded = wait_for(replica_failure, timeout=60, what="Degraded with reason ReplicaFailure")
    assert 'serviceaccount "engines" not found' in degraded["message"]
    assert pods(cluster, namespace, "accounted") == []
    cluster.kubectl("create", "serviceaccount", "engines", "-n", namespace)
    status = wait_ready(cluster, namespace, "accounted", timeout=120)
    assert condition(status, "Degraded").get("status") == "False"
    running = pods(cluster, namespace, "accounted")
    assert len(running) == 2
    for pod in running:
        assert pod["spec"]["serviceAccountName"] == "engines"
        assert pod["spec"]["imagePullSecrets"] == [{"name": "registry"}]
        assert pod["metadata"]["labels"]["team"] == "llm"
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        env = pod["spec"]["containers"][0]["env"]
        assert {"name": "HF_TOKEN", "valueFrom": token} in env


def test_missing_priority_class_degrades_and_creates_nothing(
    cluster: DevCluster, namespace: str, pool: str
) -> None:
    klass = f"{namespace}-prio"
    cluster.apply([model_service("prio", priorityClassName=klass)], "-n", namespace)
    status = wait_for(
        lambda: (
            (s := ms_status(cluster, namespace, "prio"))
            and condition(s, "Degraded").get("status") == "True"
            and s
        ),
        timeout=30,
        what="Degraded",
    )
    assert condition(status, "Degraded")["reason"] == "PriorityClassNotFound"
    assert klass in condition(status, "Degraded")["message"]
    assert condition(status, "Ready")["status"] == "False"
    assert children(cluster, namespace, "prio") == []  # nothing half-created
    events = get_json(
        cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=prio"
    )
    assert any(
        e["reason"] == "PriorityClassNotFound" and e["type"] == "Warning" for e in events["items"]
    )

    cluster.apply(
        [
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": klass},
                "value": 100,
            }
        ]
    )
    status = wait_ready(cluster, namespace, "prio", timeout=60)
    assert condition(status, "Degraded")["status"] == "False"
    assert len(children(cluster, namespace, "prio")) == 7

    # Decode above prefill: the role's class is checked the same way, its field named.
    ms = model_service("prio", priorityClassName=klass)
    ms["spec"]["roles"]["decode"]["priorityClassName"] = f"{klass}-decode"
    cluster.apply([ms], "-n", namespace)
    field = "spec.roles.decode.priorityClassName"
    wait_for(
        lambda: (
            field in condition(ms_status(cluster, namespace, "prio"), "Degraded").get("message", "")
        ),
        timeout=30,
        what=f"Degraded naming {field}",
    )
    cluster.apply(
        [
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": f"{klass}-decode"},
                "value": 200,
            }
        ]
    )
    wait_ready(cluster, namespace, "prio", timeout=60)
    classes = {
        (p["metadata"]["labels"][ROLE_LABEL], p["spec"]["priorityClassName"], p["spec"]["priority"])
        for p in pods(cluster, namespace, "prio")
    }
    assert classes == {("prefill", klass, 100), ("decode", f"{klass}-decode", 200)}


def test_deleting_the_model_service_collects_everything(
    cluster: DevCluster, namespace: str, pool: str
) -> None:
    cluster.apply([model_service("gone")], "-n", namespace)
    wait_ready(cluster, namespace, "gone")
    assert len(children(cluster, namespace, "gone")) == 7
    cluster.kubectl("delete", "ms", "gone", "-n", namespace, "--wait=false")

    def collected() -> bool:
        left = get_json(
            cluster, f"{CHILD_KINDS},replicasets,pods", "-n", namespace, "-l", f"{MS_LABEL}=gone"
        )["items"]
        return not left

    wait_for(collected, timeout=90, what="garbage collection of every owned object")


def test_deleted_child_is_recreated(cluster: DevCluster, namespace: str, pool: str) -> None:
    cluster.apply([model_service("heal")], "-n", namespace)
    wait_ready(cluster, namespace, "heal")
    old = {
        (o["kind"], o["metadata"]["name"]): o["metadata"]["uid"]
        for o in children(cluster, namespace, "heal")
    }
    cluster.kubectl("delete", "service/heal-prefill", "deployment/heal-decode", "-n", namespace)

    def back() -> bool:
        now = {
            (o["kind"], o["metadata"]["name"]): o["metadata"]["uid"]
            for o in children(cluster, namespace, "heal")
        }
        return (
            now.keys() == old.keys()
            and now[("Service", "heal-prefill")] != old[("Service", "heal-prefill")]
        )

    wait_for(back, timeout=30, what="deleted children re-created")
    wait_ready(cluster, namespace, "heal")


def test_switching_to_prefill_decode_removes_the_serve_role(
    cluster: DevCluster, namespace: str, pool: str
) -> None:
    cluster.apply([model_service("switch", roles={"serve": {"replicas": 1}})], "-n", namespace)
    wait_ready(cluster, namespace, "switch")
    assert {o["metadata"]["name"] for o in children(cluster, namespace, "switch")} == {
        "switch",
        "switch-serve",
    }
    patch = {
        "spec": {"roles": {"serve": None, "prefill": {"replicas": 1}, "decode": {"replicas": 1}}}
    }
    cluster.kubectl(
        "patch", "ms", "switch", "-n", namespace, "--type=merge", "-p", json.dumps(patch)
    )
    status = wait_ready(cluster, namespace, "switch")
    assert status["mode"] == "PrefillDecode"
    wait_for(
        lambda: (
            {(o["kind"], o["metadata"]["name"]) for o in children(cluster, namespace, "switch")}
            == {
                (kind, name)
                for kind in ("Deployment", "Service", "PodDisruptionBudget")
                for name in ("switch-prefill", "switch-decode")
            }
            | {("Service", "switch")}
        ),
        timeout=30,
        what="the serve role's objects pruned",
    )
    front = get_json(cluster, "service", "switch", "-n", namespace)
    assert front["spec"]["selector"]["dunnage.io/role"] == "decode"


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    cluster: DevCluster, namespace: str, pool: str
) -> None:
    count = 30
    from kubernetes import client

    api = client.AppsV1Api(cluster.api_client())
    cluster.apply([model_service(f"k{i:02d}", gpus=0) for i in range(count)], "-n", namespace)
    # Kill it as soon as it has started writing: some ModelServices done, others not begun.
    wait_for(
        lambda: api.list_namespaced_deployment(namespace, label_selector=MS_LABEL).items,
        timeout=30,
        what="the first Deployment",
    )
    cluster.stop_component("operator", signal.SIGKILL)
    at_kill = len(api.list_namespaced_deployment(namespace, label_selector=MS_LABEL).items)
    assert at_kill < 2 * count, "the operator finished before it was killed: nothing was tested"
    cluster.start_operator()
    for i in range(count):
        wait_ready(cluster, namespace, f"k{i:02d}", timeout=120)

    objects = children(cluster, namespace)
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)) == 7 * count
    for obj in objects:
        refs = obj["metadata"]["ownerReferences"]
        assert len(refs) == 1 and refs[0]["kind"] == "ModelService"
    sets = get_json(cluster, "replicasets", "-n", namespace, "-l", MS_LABEL)["items"]
    assert len(sets) == 2 * count  # no spurious rollouts
    live = [p for p in get_json(cluster, "pods", "-n", namespace, "-l", MS_LABEL)["items"]]
    assert len(live) == 2 * count  # no extra replicas
    for i in range(count):
        status = ms_status(cluster, namespace, f"k{i:02d}")
        assert status["observedGeneration"] == 1


def test_one_operator_replica_leads_and_a_standby_takes_over(
    cluster: DevCluster, namespace: str, pool: str
) -> None:
    """Two operators with --leader-elect: the standby runs no handlers (its liveness endpoint
    still answers) until the leader goes; then it takes the Lease and reconciles."""
    cluster.stop_component("operator")
    started: list[subprocess.Popen[bytes]] = []

    metrics_ports: dict[str, int] = {}

    def start(identity: str, *extra: str) -> tuple[subprocess.Popen[bytes], int, Path]:
        port, log = free_port(), cluster.logs / f"operator-{identity}.log"
        metrics_ports[identity] = free_port()
        argv = [sys.executable, "-m", "dunnage.cli", "operator", "run"]
        argv += [
            f"--kubeconfig={cluster.kubeconfig}",
            f"--liveness=http://127.0.0.1:{port}/healthz",
            f"--metrics-port={metrics_ports[identity]}",
        ]
        argv += ["--leader-elect", f"--leader-elect-namespace={namespace}"]
        argv += [f"--leader-elect-identity={identity}", "--leader-elect-lease-duration=4"]
        argv += ["--leader-elect-renew-deadline=3", "--leader-elect-retry-period=1", *extra]
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=cluster.env()
            )
        started.append(process)
        return process, port, log

    def holder() -> str:
        return lease_holder(cluster, namespace, "dunnage-operator")

    def leader_gauge(identity: str) -> float:
        return scrape(metrics_ports[identity], "dunnage_operator_leader")

    def alive(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        a, a_port, a_log = start("a")
        wait_for(lambda: holder() == "a", timeout=30, what="operator a leading")
        wait_for(lambda: alive(a_port), timeout=30, what="operator a's liveness endpoint")
        b, b_port, b_log = start("b")
        wait_for(lambda: alive(b_port), timeout=30, what="the standby's liveness endpoint")
        cluster.apply([model_service("led-by-a", gpus=0)], "-n", namespace)
        wait_ready(cluster, namespace, "led-by-a")
        # The operator logs a reconcile's events after it writes the status the wait saw.
        wait_for(lambda: "led-by-a" in a_log.read_text(), timeout=10, what="a's log of it")
        assert "led-by-a" not in b_log.read_text()
        assert (leader_gauge("a"), leader_gauge("b")) == (1, 0)

        a.terminate()
        assert a.wait(timeout=30) == 0
        wait_for(lambda: holder() == "b", timeout=30, what="operator b taking the Lease")
        cluster.apply([model_service("led-by-b", gpus=0)], "-n", namespace)
        wait_ready(cluster, namespace, "led-by-b")
        wait_for(lambda: "led-by-b" in b_log.read_text(), timeout=10, what="b's log of it")
        assert leader_gauge("b") == 1
        assert alive(b_port)  # kopf's own liveness endpoint now, on the same port
        assert b.poll() is None

        # Someone else holds the Lease (as after renewals b could not make): b stops kopf.
        cluster.kubectl(
            "patch", "lease", "dunnage-operator", "-n", namespace, "--type=merge",
            "-p", '{"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 60}}',
        )  # fmt: skip
        assert b.wait(timeout=60) == 1
        assert "lost the Lease" in b_log.read_text()

        # With kopf peering (as the chart runs it) a leader killed outright leaves its entry in
        # the peering object; its successor of the same priority pauses until the entry
        # expires, which takes about a lease (4 s here), not kopf's default 60 s.
        peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering"}
        cluster.apply([{**peering, "metadata": {"name": namespace}}])
        cluster.kubectl("delete", "lease", "dunnage-operator", "-n", namespace)
        c, _, _ = start("c", f"--peering={namespace}")
        wait_for(lambda: holder() == "c", timeout=30, what="operator c leading")
        cluster.apply([model_service("led-by-c", gpus=0)], "-n", namespace)
        wait_ready(cluster, namespace, "led-by-c")
        _, _, d_log = start("d", f"--peering={namespace}")
        c.kill()
        c.wait(timeout=10)
        wait_for(lambda: holder() == "d", timeout=30, what="operator d taking the Lease")
        cluster.apply([model_service("led-by-d", gpus=0)], "-n", namespace)
        wait_ready(cluster, namespace, "led-by-d", timeout=40)
        wait_for(lambda: "led-by-d" in d_log.read_text(), timeout=10, what="d's log of it")
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        cluster.start_operator()
        cluster.kubectl("delete", "clusterkopfpeering", namespace, check=False)


# --- the chart ------------------------------------------------------------------------------------


def test_chart_lints_renders_least_privilege_and_installs(
    cluster: DevCluster,
    repo_root: Path,
    tmp_path: Path,
    pool: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chart = str(repo_root / "helm" / "dunnage")
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"][
        "gitVersion"
    ]
    lint = helm(cluster, "lint", chart, "--strict", f"--kube-version={version}")
    assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout
    bad = helm(cluster, "lint", chart, "--set", "operator.workers=0", check=False)
    assert bad.returncode != 0 and "workers" in bad.stdout + bad.stderr  # values.schema.json
    bad = helm(cluster, "lint", chart, "--set", "operator.prometheusUrl=prom:9090", check=False)
    assert bad.returncode != 0 and "prometheusUrl" in bad.stdout + bad.stderr

    docs = render_chart(
        cluster,
        chart,
        version,
        "metrics.serviceMonitor.enabled=true",
        "metrics.podMonitor.enabled=true",
        "operator.prometheusUrl=http://prometheus-operated.monitoring.svc:9090",
    )
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PodMonitor", "ClusterRole", "ConfigMap"} <= kinds
    # The engines' series carry the labels the autoscaling loop selects by, and the operator
    # knows where Prometheus is.
    (pod_monitor,) = (d for d in docs if d["kind"] == "PodMonitor")
    relabel = pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {r["targetLabel"]: r["sourceLabels"] for r in relabel} == {
        "model_service": ["__meta_kubernetes_pod_label_dunnage_io_model_service"],
        "role": ["__meta_kubernetes_pod_label_dunnage_io_role"],
    }
    (operator,) = (
        d
        for d in docs
        if d["metadata"]["name"] == "t-dunnage-operator" and d["kind"] == "Deployment"
    )
    env = operator["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        "name": PROMETHEUS_URL_ENV,
        "value": "http://prometheus-operated.monitoring.svc:9090",
    } in env
    for doc in docs:
        for rule in doc.get("rules") or []:
            for field in ("verbs", "resources", "apiGroups"):
                assert "*" not in rule.get(field, []), (doc["metadata"]["name"], rule)
    # The ClusterRoles grant exactly what the components ask for at start (access tables),
    # plus `get` on their own CRDs by name (the schema-revision check).
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    for role, asked, own_crds in (
        (
            "t-dunnage-operator",
            {
                *access.OPERATOR,
                *access.OPERATOR_CLUSTER,
                *access.OPERATOR_HPA_WATCH,
                *access.peering_permissions(clusterwide=True),
            },
            crds.OPERATOR_CRDS,
        ),
        ("t-dunnage-extender", {*access.EXTENDER, *access.EXTENDER_PLANNER}, crds.EXTENDER_CRDS),
    ):
        by_name = [r for r in roles[role]["rules"] if r.get("resourceNames")]
        assert [(r["resources"], r["verbs"], sorted(r["resourceNames"])) for r in by_name] == [
            (["customresourcedefinitions"], ["get"], sorted(own_crds))
        ]
        assert _granted(roles[role]) == asked, role
    # Without the fallback planner the extender is granted nothing to write.
    without = render_chart(cluster, chart, version, "extender.planner=false")
    (role,) = (
        d
        for d in without
        if d["metadata"]["name"] == "t-dunnage-extender" and d["kind"] == "ClusterRole"
    )
    assert _granted(role) == set(access.EXTENDER)
    assert not [d for d in without if d["kind"].startswith("ValidatingAdmissionPolicy")]
    # With it, a policy narrows its `patch nodes` to the planner's mark.
    (marks,) = (d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
    assert {"name": "mark", "expression": f"'{RELEASED_ANNOTATION}'"} in marks["spec"]["variables"]
    # The extender campaigns for its own Lease (a standby can take over) and rolls out without
    # a gap; more than one replica without leader election is refused.
    (extender_deployment,) = (
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-dunnage-extender"
    )
    args = extender_deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--leader-elect", "--leader-elect-lease=t-dunnage-extender"} <= set(args)
    assert extender_deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]  # one replica: none
    assert ("Role", "t-dunnage-extender-lease") in {
        (d["kind"], d["metadata"]["name"]) for d in docs
    }
    operator_args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-elect-lease=t-dunnage-operator" in operator_args
    assert ("Role", "t-dunnage-operator-lease") in {
        (d["kind"], d["metadata"]["name"]) for d in docs
    }
    for component in ("extender", "operator"):
        two = (f"{component}.replicas=2", f"{component}.leaderElection.enabled=false")
        bad = helm(
            cluster,
            "template",
            "t",
            chart,
            f"--kube-version={version}",
            "--set",
            two[0],
            "--set",
            two[1],
            check=False,
        )
        assert bad.returncode != 0 and f"{component}.replicas > 1 needs" in bad.stderr
        # a standby is kept from being drained along with the leader
        (budget,) = (
            d
            for d in render_chart(cluster, chart, version, f"{component}.replicas=2")
            if d["kind"] == "PodDisruptionBudget"
        )
        assert budget["metadata"]["name"] == f"t-dunnage-{component}"
        assert budget["spec"]["minAvailable"] == 1
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    assert deployments == {
        "t-dunnage-operator",
        "t-dunnage-extender",
        "t-dunnage-solver",
        "t-dunnage-scheduler",
    }

    # The scheduler configuration the chart ships is accepted by the real kube-scheduler, with
    # GPU packing in-tree (the default) and by the extender's prioritize.
    config = _scheduler_config(docs)
    (profile,) = config["profiles"]
    assert profile["schedulerName"] == "dunnage-scheduler"
    (fit,) = profile["pluginConfig"]
    assert fit["args"]["scoringStrategy"] == {
        "type": "MostAllocated",
        "resources": [{"name": "nvidia.com/gpu", "weight": 1}],
    }
    (extender,) = config["extenders"]
    assert extender["urlPrefix"] == "http://t-dunnage-extender.default.svc:8888"
    assert "prioritizeVerb" not in extender  # scoring is in-tree: one call per GPU pod
    _kube_scheduler_accepts(cluster, config, tmp_path)
    config = _scheduler_config(
        render_chart(cluster, chart, version, "scheduler.gpuScoring=extender")
    )
    assert config["profiles"] == [{"schedulerName": "dunnage-scheduler"}]
    assert config["extenders"][0]["prioritizeVerb"] == "prioritize"
    _kube_scheduler_accepts(cluster, config, tmp_path)
    # Consulted for every pod (those whose GPUs come from ResourceClaims): no managedResources.
    assert extender["managedResources"] == [{"name": "nvidia.com/gpu", "ignoredByScheduler": False}]
    config = _scheduler_config(
        render_chart(cluster, chart, version, "scheduler.extender.consultEveryPod=true")
    )
    assert "managedResources" not in config["extenders"][0]
    _kube_scheduler_accepts(cluster, config, tmp_path)

    release_ns = "dunnage-system"
    installed = helm(cluster, "install", "dn", chart, "-n", release_ns, "--create-namespace")
    assert "STATUS: deployed" in installed.stdout
    assert "Helm does not upgrade" not in installed.stdout
    try:
        # An upgrade's notes say how to upgrade the CRDs, which Helm leaves as they are.
        upgraded = helm(cluster, "upgrade", "dn", chart, "-n", release_ns)
        assert "STATUS: deployed" in upgraded.stdout and "REVISION: 2" in upgraded.stdout
        assert "kubectl apply --server-side --force-conflicts -f helm/dunnage/crds/" in (
            upgraded.stdout
        )
        for name in (
            "dn-dunnage-operator",
            "dn-dunnage-extender",
            "dn-dunnage-solver",
            "dn-dunnage-scheduler",
        ):
            cluster.kubectl("get", "deployment", name, "-n", release_ns)
        cluster.kubectl("get", "clusterkopfpeering", "dunnage")
        _operator_with_the_charts_service_account(cluster, release_ns)
        _operator_with_less_rbac_than_the_chart_grants(cluster, release_ns)
        _operator_refuses_an_older_crd(cluster, release_ns)
        _extender_refuses_to_start_without_its_rbac(cluster, release_ns)
        _extender_changes_nothing_of_a_node_but_its_mark(cluster, release_ns)
        _extender_in_cluster_with_the_charts_service_account(
            cluster, release_ns, tmp_path, monkeypatch
        )
    finally:
        helm(cluster, "uninstall", "dn", "-n", release_ns, check=False)
        cluster.kubectl("delete", "namespace", release_ns, "--wait=false", check=False)


def _scheduler_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The KubeSchedulerConfiguration in the chart's rendered scheduler ConfigMap."""
    config_map = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "t-dunnage-scheduler"
    )
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return config


def _kube_scheduler_accepts(cluster: DevCluster, config: dict[str, Any], tmp_path: Path) -> None:
    """The real kube-scheduler starts healthy with the configuration (its profiles renamed,
    so it schedules nothing here)."""
    config = {
        **config,
        "clientConnection": {"kubeconfig": str(cluster.kubeconfig)},
        "leaderElection": {"leaderElect": False},
        "profiles": [{**p, "schedulerName": "dunnage-chart-check"} for p in config["profiles"]],
    }
    (tmp_path / "scheduler.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    scheduler = subprocess.Popen(
        [
            str(cluster.bin / "kube-scheduler"),
            f"--config={tmp_path / 'scheduler.yaml'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "scheduler.log").open("w"),
    )
    try:
        wait_for(
            lambda: (
                subprocess.run(
                    ["curl", "-sk", f"https://127.0.0.1:{port}/healthz"],
                    capture_output=True,
                    text=True,
                ).stdout
                == "ok"
                or scheduler.poll() is not None
            ),
            timeout=30,
            what="kube-scheduler with the chart's configuration healthy",
        )
        assert scheduler.poll() is None, (tmp_path / "scheduler.log").read_text()[-2000:]
    finally:
        scheduler.terminate()
        scheduler.wait(10)


def _service_account_kubeconfig(cluster: DevCluster, release_ns: str, account: str) -> Path:
    """A kubeconfig of the local cluster with a token of that ServiceAccount."""
    token = cluster.kubectl("create", "token", account, "-n", release_ns).stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    path = cluster.dir / f"{account}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _run_operator(cluster: DevCluster, kubeconfig: Path, log: str, *args: str) -> Any:
    """``dunnage operator run`` as another identity, its output appended to logs/<log>."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dunnage.cli",
            "operator",
            "run",
            f"--kubeconfig={kubeconfig}",
            *args,
        ],
        stdout=(cluster.logs / log).open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _granted(role: dict[str, Any]) -> set[Permission]:
    """A Role's rules without resourceNames, one Permission per verb and resource."""
    out = set()
    for rule in role["rules"]:
        if rule.get("resourceNames"):
            continue
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                name, _, sub = resource.partition("/")
                out |= {Permission(verb, group, name, sub) for verb in rule["verbs"]}
    return out


def _cluster_role_rules(
    cluster: DevCluster, name: str
) -> tuple[list[dict[str, Any]], Callable[[list[dict[str, Any]]], None]]:
    """The ClusterRole's rules, and a function that replaces them (to cut some, then restore)."""
    original = get_json(cluster, "clusterrole", name)
    kept = {k: original[k] for k in ("apiVersion", "kind")}
    kept["metadata"] = {"name": name, "labels": original["metadata"].get("labels", {})}
    path = cluster.dir / f"{name}-role.json"

    def with_rules(rules: list[dict[str, Any]]) -> None:
        path.write_text(json.dumps({**kept, "rules": rules}))
        cluster.kubectl("replace", "-f", str(path))

    return list(original["rules"]), with_rules


def _can_i(cluster: DevCluster, account: str, permission: Permission, *where: str) -> bool:
    resource = f"{permission.resource}.{permission.group}".rstrip(".")
    sub = [f"--subresource={permission.subresource}"] if permission.subresource else []
    answer = cluster.kubectl(
        "auth", "can-i", permission.verb, resource, *sub, *where, f"--as={account}", check=False
    )
    return answer.stdout.strip() == "yes"


def _operator_with_the_charts_service_account(cluster: DevCluster, release_ns: str) -> None:
    """The chart's RBAC is enough: the operator, run with its ServiceAccount's token and the
    chart's peering, reconciles a ModelService (the session's own operator paused meanwhile)."""
    restricted = _service_account_kubeconfig(cluster, release_ns, "dn-dunnage-operator")
    namespace = "chart-rbac"
    cluster.kubectl("create", "namespace", namespace)
    cluster.stop_component("operator")
    port = free_port()
    process = _run_operator(
        cluster,
        restricted,
        "operator-sa.log",
        "--peering=dunnage",
        f"--liveness=http://127.0.0.1:{port}/healthz",
        # the chart's Lease: its Role lets the operator take and renew it
        "--leader-elect",
        f"--leader-elect-namespace={release_ns}",
        "--leader-elect-lease=dn-dunnage-operator",
    )
    try:
        cluster.apply([model_service("rbac")], "-n", namespace)
        wait_ready(cluster, namespace, "rbac", timeout=60)
        cluster.kubectl("delete", "deployment", "rbac-decode", "-n", namespace)
        wait_ready(cluster, namespace, "rbac", timeout=60)
        denied = rbac_denials((cluster.logs / "operator-sa.log").read_text())
        assert not denied, "\n".join(denied)[-3000:]
        # Everything the operator asks for before it starts (dunnage.cluster.access), asked
        # again by kubectl: the HPA watch is granted too (the autoscaling loop's check).
        account = f"system:serviceaccount:{release_ns}:dn-dunnage-operator"
        for permission in (
            *access.OPERATOR,
            *access.OPERATOR_HPA_WATCH,
            *access.peering_permissions(clusterwide=True),
        ):
            assert _can_i(cluster, account, permission, "-n", namespace), permission.rule
            assert _can_i(cluster, account, permission, "--all-namespaces"), permission.rule
        for permission in access.OPERATOR_CLUSTER:
            assert _can_i(cluster, account, permission), permission.rule
        peering = get_json(cluster, "clusterkopfpeering", "dunnage")
        assert peering.get("status"), "the operator reported itself in the chart's peering object"
        lease = get_json(cluster, "lease", "dn-dunnage-operator", "-n", release_ns)
        assert lease["spec"]["holderIdentity"], "the operator holds the chart's Lease"
    finally:
        process.terminate()
        process.wait(20)
        cluster.start_operator()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _operator_with_less_rbac_than_the_chart_grants(cluster: DevCluster, release_ns: str) -> None:
    """An operator whose RBAC lacks the HPA watch (an older chart's ClusterRole) still
    reconciles, and says on the ModelService that it cannot check for HPAs (kopf would hold
    every handler until a forbidden watch's list came back); one that lacks a permission it
    needs refuses to start, naming it."""
    role_name = "dn-dunnage-operator"
    rules, with_rules = _cluster_role_rules(cluster, role_name)

    def granted(resource: str) -> list[dict[str, Any]]:
        return [r for r in rules if resource not in r.get("resources", [])]

    restricted = _service_account_kubeconfig(cluster, release_ns, role_name)
    namespace = "chart-rbac-no-hpa"
    cluster.kubectl("create", "namespace", namespace)
    cluster.stop_component("operator")
    process = None
    try:
        with_rules(granted("horizontalpodautoscalers"))
        process = _run_operator(cluster, restricted, "operator-no-hpa.log", "--peering=dunnage")
        policy = {
            "apiVersion": "dunnage.io/v1alpha1",
            "kind": "AutoscalingPolicy",
            "metadata": {"name": "p"},
            "spec": {"slo": {"ttftSeconds": 1, "tpotSeconds": 0.1}, "policy": "kpa"},
        }
        cluster.apply(
            [policy, model_service("nohpa", autoscaling={"policyRef": {"name": "p"}})],
            "-n",
            namespace,
        )
        wait_ready(cluster, namespace, "nohpa", timeout=60)

        def unchecked() -> list[str]:
            events = get_json(cluster, "events", "-n", namespace)["items"]
            return [e["message"] for e in events if e["reason"] == "AutoscalersNotChecked"]

        wait_for(unchecked, timeout=30, what="the AutoscalersNotChecked Event")
        assert "horizontalpodautoscalers.autoscaling" in unchecked()[0]
        log = (cluster.logs / "operator-no-hpa.log").read_text()
        assert "HorizontalPodAutoscalers are not checked" in log
        assert "list horizontalpodautoscalers.autoscaling (cluster-wide)" in log
        process.terminate()
        process.wait(20)

        # Without the Events it posts it does not start (exit 2), and says why.
        with_rules(granted("events"))
        refused = subprocess.run(
            [sys.executable, "-m", "dunnage.cli", "operator", "run", f"--kubeconfig={restricted}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert "create events (cluster-wide)" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(20)
        with_rules(rules)
        cluster.start_operator()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _operator_refuses_an_older_crd(cluster: DevCluster, release_ns: str) -> None:
    """After a `helm upgrade` the cluster may serve an older CRD (helm never upgrades them),
    and the API server would drop the fields it lacks: the operator, with the chart's RBAC,
    refuses to start on one, naming it and the command that upgrades it."""
    crd = "autoscalingpolicies.dunnage.io"
    revision = str(crds.recorded()[crd]["revision"])
    annotation = crds.REVISION_ANNOTATION
    restricted = _service_account_kubeconfig(cluster, release_ns, "dn-dunnage-operator")
    cluster.kubectl("annotate", "crd", crd, f"{annotation}={int(revision) - 1}", "--overwrite")
    try:
        refused = subprocess.run(
            [sys.executable, "-m", "dunnage.cli", "operator", "run", f"--kubeconfig={restricted}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        cluster.kubectl("annotate", "crd", crd, f"{annotation}={revision}", "--overwrite")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"{crd} is at schema revision {int(revision) - 1}" in refused.stderr
    assert "kubectl apply --server-side --force-conflicts -f helm/dunnage/crds/" in refused.stderr
    assert "Traceback" not in refused.stderr


def _extender_refuses_to_start_without_its_rbac(cluster: DevCluster, release_ns: str) -> None:
    """The chart grants the extender everything it asks for at start; with the eviction rule
    cut from its ClusterRole, ``dunnage extender serve`` exits 2 naming what is missing (with
    ``--no-planner`` it needs no eviction and starts)."""
    account = f"system:serviceaccount:{release_ns}:dn-dunnage-extender"
    for permission in (*access.EXTENDER, *access.EXTENDER_PLANNER):
        assert _can_i(cluster, account, permission, "--all-namespaces"), permission.rule
    role_name = "dn-dunnage-extender"
    rules, with_rules = _cluster_role_rules(cluster, role_name)
    restricted = _service_account_kubeconfig(cluster, release_ns, role_name)

    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "dunnage.cli", "extender", "serve", "--port=0"]
        return subprocess.run(
            [*command, f"--kubeconfig={restricted}", *args],
            capture_output=True,
            text=True,
            timeout=20,
        )

    with_rules([r for r in rules if "pods/eviction" not in r.get("resources", [])])
    try:
        refused = serve()
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert "create pods/eviction (cluster-wide)" in refused.stderr
        assert "Traceback" not in refused.stderr
        # Without the planner it needs no eviction: it starts (and serves until stopped).
        with pytest.raises(subprocess.TimeoutExpired):
            serve("--no-planner")
        # Nor any of the planner's rules (the chart's with extender.planner=false): under
        # leader election it becomes ready without reading the plans no replica makes.
        planner = set(access.EXTENDER_PLANNER)
        with_rules([r for r in rules if not _granted({"rules": [r]}) <= planner])
        port = free_port()
        command = [sys.executable, "-m", "dunnage.cli", "extender", "serve", f"--port={port}"]
        election = [
            f"--leader-elect-namespace={release_ns}",
            "--leader-elect-lease=dn-dunnage-extender",
        ]
        log = (cluster.logs / "extender-no-planner.log").open("w")
        process = subprocess.Popen(
            [*command, f"--kubeconfig={restricted}", "--no-planner", "--leader-elect", *election],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                lambda: _status(f"http://127.0.0.1:{port}/readyz") == 200,
                timeout=30,
                what="the extender without a planner ready",
            )
        finally:
            process.terminate()
            process.wait(timeout=10)
            log.close()
    finally:
        with_rules(rules)


def _status(url: str) -> int | None:
    """The HTTP status of a GET of ``url``, or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _takes_and_releases_its_lease(cluster: DevCluster, release_ns: str, api_client: Any) -> None:
    """With the chart's Role the extender creates, renews and releases its Lease and, standing
    by meanwhile, lists and watches the leader's plans."""
    from dunnage.cluster.leadership import ElectionSettings, Leadership
    from dunnage.scheduler_extender.live import PlanMirror
    from dunnage.scheduler_extender.planbook import PlanBook

    mirror = PlanMirror(api_client, PlanBook())
    mirror.start()
    leads = threading.Event()
    election = ElectionSettings(
        namespace=release_ns,
        lease_name="dn-dunnage-extender",  # the chart's --leader-elect-lease
        identity="chart-check",
        lease_duration=4,
        renew_deadline=3,
        retry_period=1,
    )
    leadership = Leadership(
        api_client, election, component="chart-check", on_started=leads.set, on_lost=lambda: None
    )
    leadership.start()
    try:
        wait_for(leads.is_set, timeout=30, what="the chart's extender holding its Lease")
        wait_for(lambda: mirror.synced, timeout=30, what="the chart's extender listing plans")
        time.sleep(2)  # renewals
        lease = get_json(cluster, "lease", "dn-dunnage-extender", "-n", release_ns)
        assert lease["spec"]["holderIdentity"] == "chart-check"
        assert lease["spec"]["renewTime"] != lease["spec"]["acquireTime"]
    finally:
        leadership.release()
        mirror.stop()
    lease = get_json(cluster, "lease", "dn-dunnage-extender", "-n", release_ns)
    assert not lease["spec"].get("holderIdentity")  # released


def _extender_changes_nothing_of_a_node_but_its_mark(cluster: DevCluster, release_ns: str) -> None:
    """The chart's extender may patch nodes (the planner's mark on those a plan kept); its
    ValidatingAdmissionPolicy refuses any other change it would make to a node, with a
    message saying so. Other users are not concerned. The patches are the planner's own call
    (a merge patch, no read before), made as the chart's ServiceAccount."""
    from kubernetes import client

    from dunnage.cluster.connect import MERGE_PATCH, load_client_configuration

    configuration = load_client_configuration(str(cluster.kubeconfig))
    admin = client.CoreV1Api(client.ApiClient(configuration))
    as_extender = client.ApiClient(configuration)
    as_extender.set_default_header(
        "Impersonate-User", f"system:serviceaccount:{release_ns}:dn-dunnage-extender"
    )
    extender = client.CoreV1Api(as_extender)
    node = admin.list_node(limit=1).items[0].metadata.name
    refused = "the dunnage extender may change only the annotation " + RELEASED_ANNOTATION

    def refusal(api: Any, body: dict[str, Any]) -> str | None:
        """None if the patch is accepted, else the API server's message."""
        try:
            api.patch_node(node, body, _content_type=MERGE_PATCH)
        except client.ApiException as exc:
            assert exc.status == 403, exc
            return str(json.loads(exc.body)["message"])
        return None

    label = {"metadata": {"labels": {"e2e-mark-policy": "x"}}}
    # (the API server loads a new policy within a second or so)
    wait_for(
        lambda: refused in (refusal(extender, label) or ""),
        timeout=30,
        what="the extender's node policy in force",
    )
    assert refusal(extender, {"metadata": {"annotations": {RELEASED_ANNOTATION: "p1"}}}) is None
    for body in (
        {"metadata": {"annotations": {"e2e-mark-policy": "x"}}},
        {"metadata": {"annotations": {RELEASED_ANNOTATION: "p2", "e2e-mark-policy": "x"}}},
        {"metadata": {"finalizers": ["e2e.dunnage.io/x"]}},
        {"spec": {"unschedulable": True}},
    ):
        assert refused in (refusal(extender, body) or ""), body
    assert refusal(extender, {"metadata": {"annotations": {RELEASED_ANNOTATION: None}}}) is None
    # The cluster's admin (and anyone else RBAC lets) is not concerned.
    assert refusal(admin, {"metadata": {"annotations": {"e2e-mark-policy": "x"}}}) is None
    assert refusal(admin, {"metadata": {"annotations": {"e2e-mark-policy": None}}}) is None
    annotations = admin.read_node(node).metadata.annotations or {}
    assert RELEASED_ANNOTATION not in annotations and "e2e-mark-policy" not in annotations


def _extender_in_cluster_with_the_charts_service_account(
    cluster: DevCluster, release_ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dunnage extender serve --in-cluster`` as the chart runs it: the pod's service-account
    files (here in tmp_path, as the kubelet would mount them) hold a token of the chart's
    extender ServiceAccount; its watches sync and it reads the PackingPolicy. Then the token is
    rotated and the old one revoked, as the kubelet and the API server do: the same
    configuration carries on with the new token (a kubeconfig's ``tokenFile`` is read once)."""
    from kubernetes import client
    from kubernetes.config import incluster_config
    from prometheus_client import CollectorRegistry

    from dunnage.cluster.connect import load_client_configuration
    from dunnage.scheduler_extender.live import start_live
    from dunnage.scheduler_extender.metrics import DunnageMetrics
    from dunnage.scheduler_extender.planbook import PlanBook
    from dunnage.scheduler_extender.policy import load_policy

    def bound_token(secret: str) -> str:  # revoked when the Secret is deleted
        cluster.kubectl("create", "secret", "generic", secret, "-n", release_ns)
        return cluster.kubectl(
            "create",
            "token",
            "dn-dunnage-extender",
            "-n",
            release_ns,
            "--bound-object-kind=Secret",
            f"--bound-object-name={secret}",
        ).stdout.strip()

    token_file = tmp_path / "serviceaccount-token"
    token_file.write_text(bound_token("extender-token-1"))
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token_file))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cluster.ca_file))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(cluster.ports["kube-apiserver"]))
    configuration = load_client_configuration(None, in_cluster=True)
    stop = threading.Event()
    live = start_live(
        configuration,
        PlanBook(),
        DunnageMetrics(CollectorRegistry()),
        stop,
        policy_name="default",
        planner=False,
    )
    try:
        wait_for(lambda: live.cache.synced, timeout=60, what="the extender's watches synced")
        api_client = client.ApiClient(configuration)
        load_policy(api_client, "default")  # raises on a 403 (PolicySource would only log it)
        # and it may report on the policy and delete finished plans beyond its history limit
        # (a 403 there would only be logged)
        for question in (
            ("patch", "packingpolicies.dunnage.io", "--subresource=status"),
            ("delete", "packingplans.dunnage.io"),
            ("watch", "packingplans.dunnage.io"),  # a standby steers by the leader's plans
        ):
            can_i = cluster.kubectl(
                "auth",
                "can-i",
                *question,
                f"--as=system:serviceaccount:{release_ns}:dn-dunnage-extender",
                check=False,
            )
            assert can_i.stdout.strip() == "yes", (question, can_i)
        nodes = client.CoreV1Api(api_client)
        assert nodes.list_node(limit=1).items
        _takes_and_releases_its_lease(cluster, release_ns, live.api_client)

        second = bound_token("extender-token-2")
        token_file.write_text(second)
        cluster.kubectl("delete", "secret", "extender-token-1", "-n", release_ns)

        def lists_nodes() -> bool:
            try:
                return bool(nodes.list_node(limit=1).items)
            except client.ApiException as exc:
                assert exc.status == 401, exc
                return False

        # The API server accepts a revoked token for a few seconds (its token cache) and the
        # client re-reads the file once a minute: first the old token is refused (unless the
        # new one was read already), then requests succeed again.
        wait_for(
            lambda: not lists_nodes() or configuration.api_key["BearerToken"].endswith(second),
            timeout=60,
            what="the revoked token refused",
        )
        wait_for(lists_nodes, timeout=90, what="requests authenticated with the rotated token")
        assert configuration.api_key["BearerToken"] == f"bearer {second}"
    finally:
        stop.set()


# --- scale ----------------------------------------------------------------------------------------


def test_hundred_model_services_reconcile_to_ready(cluster: DevCluster) -> None:
    """100 P/D ModelServices (200 Deployments, 200 one-GPU pods) applied at once."""
    count = 100
    bench_pool = "operator-e2e-bench"
    nodes = [
        NodeSpec(
            f"opb-node-{i:02d}",
            cpu="128",
            memory="2Ti",
            gpus=8,
            pods=250,
            labels={POOL_LABEL: bench_pool},
        )
        for i in range(32)  # 256 GPUs for 200 pods
    ]
    cluster.create_nodes(nodes, timeout=120)
    namespace = "operator-e2e-hundred"
    cluster.kubectl("create", "namespace", namespace)
    try:
        result = measure(cluster.api_client(), namespace, count, pool=bench_pool, timeout=600)
        print(json.dumps(result, indent=2))
        assert result["all_deployments_created"] == count
        assert result["all_ready"] == count
        assert result["apply_to_deployments_seconds"]["p99"] < 120
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_charts_alerts_fire_on_the_series_they_watch(
    cluster: DevCluster, repo_root: Path, tmp_path: Path
) -> None:
    """The chart's PrometheusRule, as `helm template` renders it, passes `promtool check rules`
    and `promtool test rules`: each alert fires on series like the components export (and
    after its `for`), and stays quiet on healthy ones."""
    promtool = prometheus_binary("promtool")
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"][
        "gitVersion"
    ]
    docs = render_chart(
        cluster, str(repo_root / "helm" / "dunnage"), version, "metrics.prometheusRule.enabled=true"
    )
    (rule,) = (d for d in docs if d["kind"] == "PrometheusRule")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert checked.returncode == 0 and "SUCCESS: 8 rules found" in checked.stdout, checked
    summary = {
        r["alert"]: r["annotations"]["summary"] for g in rule["spec"]["groups"] for r in g["rules"]
    }

    def fires(alert: str, at: str, labels: dict[str, str], summary_text: str | None = None) -> Any:
        return {
            "eval_time": at,
            "alertname": alert,
            "exp_alerts": [
                {
                    "exp_labels": labels,
                    "exp_annotations": {"summary": summary_text or summary[alert]},
                }
            ],
        }

    def quiet(alert: str, at: str) -> Any:
        return {"eval_time": at, "alertname": alert, "exp_alerts": []}

    def case(series: dict[str, str], *checks: Any) -> Any:
        return {
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "alert_rule_test": list(checks),
        }

    def not_ready_while(active: Callable[[int], bool], minutes: int = 45) -> str:
        """A readiness series at 0 in the minutes ``active`` says, marked stale when the
        operator replaces it, missing otherwise."""
        return " ".join(
            "0" if active(m) else "stale" if m and active(m - 1) else "_" for m in range(minutes)
        )

    buckets = "dunnage_extender_request_seconds_bucket"
    tests = [
        # No operator replica leads (both stand by): critical once it lasted 5 minutes.
        case(
            {
                'dunnage_operator_leader{pod="a"}': "0x20",
                'dunnage_operator_leader{pod="b"}': "0x20",
            },
            quiet("DunnageOperatorNotLeading", "4m"),
            fires("DunnageOperatorNotLeading", "10m", {"severity": "critical"}),
        ),
        case(
            {
                'dunnage_operator_leader{pod="a"}': "0x20",
                'dunnage_operator_leader{pod="b"}': "1x20",
            },
            quiet("DunnageOperatorNotLeading", "10m"),
        ),
        case(
            {'dunnage_extender_leader{pod="a"}': "0x20"},
            fires("DunnageExtenderNotLeading", "10m", {"severity": "warning"}),
        ),
        # No replica scraped at all (crashing, or not scraped): as bad as none leading.
        case(
            {'dunnage_operator_leader{pod="a"}': "1 1 1", 'dunnage_extender_leader{pod="a"}': "1"},
            quiet("DunnageOperatorNotLeading", "2m"),
            fires("DunnageOperatorNotLeading", "20m", {"severity": "critical"}),
            fires("DunnageExtenderNotLeading", "20m", {"severity": "warning"}),
        ),
        # A reconcile error a minute for 40 minutes; ok results alone never fire.
        case(
            {'dunnage_operator_reconciles_total{result="error"}': "0+1x40"},
            quiet("DunnageOperatorReconcileErrors", "10m"),
            fires("DunnageOperatorReconcileErrors", "30m", {"severity": "warning"}),
        ),
        case(
            {'dunnage_operator_reconciles_total{result="ok"}': "0+5x40"},
            quiet("DunnageOperatorReconcileErrors", "30m"),
        ),
        case(
            {
                'dunnage_autoscaler_policy_status_writes_total{result="error"}': "0+1x40",
                'dunnage_autoscaler_policy_status_writes_total{result="written"}': "0+0x40",
            },
            quiet("DunnageAutoscalingPolicyStatusErrors", "10m"),
            fires(
                "DunnageAutoscalingPolicyStatusErrors",
                "30m",
                {"severity": "warning"},
                "Writes of AutoscalingPolicy status keep failing on API errors (scaling goes on; "
                "the policies' status goes stale); see the operator's log.",
            ),
        ),
        # Conflicts (someone else wrote a policy: read again and written) are not errors.
        case(
            {
                'dunnage_autoscaler_policy_status_writes_total{result="conflict"}': "0+2x40",
                'dunnage_autoscaler_policy_status_writes_total{result="written"}': "0+9x40",
                'dunnage_autoscaler_policy_status_writes_total{result="error"}': "0+0x40",
            },
            quiet("DunnageAutoscalingPolicyStatusErrors", "30m"),
        ),
        # 10% of filter calls under 0.1 s, the rest under 1 s: p99 0.99 s.
        case(
            {
                f'{buckets}{{verb="filter",le="0.1"}}': "0+10x30",
                f'{buckets}{{verb="filter",le="1"}}': "0+100x30",
                f'{buckets}{{verb="filter",le="+Inf"}}': "0+100x30",
                f'{buckets}{{verb="preempt",le="0.1"}}': "0+100x30",
                f'{buckets}{{verb="preempt",le="1"}}': "0+100x30",
                f'{buckets}{{verb="preempt",le="+Inf"}}': "0+100x30",
            },
            fires(
                "DunnageExtenderSlowCalls",
                "20m",
                {"severity": "warning", "verb": "filter"},
                "The extender's filter calls take 990ms at the 99th percentile; kube-scheduler "
                "waits on every GPU pod.",
            ),
        ),
        case(
            {
                'dunnage_plans_finished_total{phase="Succeeded"}': "0+1x10",
                'dunnage_plans_finished_total{phase="Expired"}': "0 0 0 1 1 1 1",
            },
            quiet("DunnagePlansExpired", "2m"),
            fires("DunnagePlansExpired", "4m", {"severity": "info"}),
        ),
        # A ModelService's loop not Ready for 45 minutes, its reason changing every 5 until
        # 25m (the operator replaces the series, which goes stale); another's Ready.
        case(
            {
                'dunnage_autoscaler_ready{namespace="a",model_service="chat",reason="NoMetrics"}': (
                    not_ready_while(lambda m: m < 25 and m // 5 % 2 == 0)
                ),
                'dunnage_autoscaler_ready{namespace="a",model_service="chat",'
                'reason="MetricsUnavailable"}': not_ready_while(
                    lambda m: m >= 25 or m // 5 % 2 == 1
                ),
                'dunnage_autoscaler_ready{namespace="a",model_service="ok",reason="Scaling"}': (
                    "1x45"
                ),
            },
            quiet("DunnageAutoscalingNotReady", "10m"),
            fires(
                "DunnageAutoscalingNotReady",
                "20m",
                {"severity": "warning", "namespace": "a", "model_service": "chat"},
                "The autoscaling of ModelService a/chat has not been Ready for 15 minutes "
                "(now NoMetrics): its replicas are held.",
            ),
            fires(
                "DunnageAutoscalingNotReady",
                "27m",
                {"severity": "warning", "namespace": "a", "model_service": "chat"},
                "The autoscaling of ModelService a/chat has not been Ready for 15 minutes "
                "(now MetricsUnavailable): its replicas are held.",
            ),
        ),
        # One MetricsUnavailable Warning at 2m: reported for the next 15 minutes.
        case(
            {
                'dunnage_autoscaler_events_total{type="Warning",reason="MetricsUnavailable"}': (
                    "0 0 1x40"
                ),
                'dunnage_autoscaler_events_total{type="Normal",reason="Scaled"}': "0+3x40",
            },
            fires(
                "DunnageAutoscalingWarnings",
                "5m",
                {"severity": "info", "reason": "MetricsUnavailable"},
                "The autoscaling loop posted MetricsUnavailable Warning events in the last 15 "
                "minutes; kubectl describe modelservice shows them.",
            ),
            quiet("DunnageAutoscalingWarnings", "30m"),
        ),
        # A Warning posted before the first scrape (the operator had just started): its series
        # is first seen at 1, which increase() does not count.
        case(
            {
                'dunnage_autoscaler_events_total{type="Warning",reason="InvalidAutoscalingPolicy",'
                'pod="b"}': "1x40",
            },
            fires(
                "DunnageAutoscalingWarnings",
                "5m",
                {"severity": "info", "reason": "InvalidAutoscalingPolicy"},
                "The autoscaling loop posted InvalidAutoscalingPolicy Warning events in the last "
                "15 minutes; kubectl describe modelservice shows them.",
            ),
            quiet("DunnageAutoscalingWarnings", "30m"),
        ),
    ]
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(
        yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests})
    )
    tested = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-2000:]
