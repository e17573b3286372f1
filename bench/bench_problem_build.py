#!/usr/bin/env python3
"""How long the planner takes before any CP-SAT call: indexing a snapshot (``Problem.build``)
and its per-level volume bounds (``level_upper_bounds``).

    .venv/bin/python bench/bench_problem_build.py [--repeat 5] [--loader-only]

Cases: paper-grid scenarios after the default scheduler (4 priorities, utilisation 1.0, seed 0),
openb slices (seed 0), 1,500 nodes running 500 workloads kept one replica per node, or
kept in one zone beside their own replicas or beside a companion pod (the rules between pods
the planner reads: ``dunnage.solver.rules``), and 1,500 nodes running pods with a CSI disk
each, without and with the driver's attach limits (``dunnage.solver.attach_limits``), and
1,500 GPU nodes running 1-GPU pods whose GPUs are a device plugin's or a DRA driver's
(``dunnage.cluster.devices``), the device plugin's also with the statuses kubelets write.
Prints the median time of each step and the number of node
shapes (their share of a 1 s window is time the search does not get), and for the GPU pair
the loader's (``snapshot_from_objects``), where DRA's devices are read, as it runs and with
Python's garbage collector running (the loader pauses it: ``dunnage.gcpause``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dunnage.cluster import snapshot_from_objects
from dunnage.cluster.model import Snapshot
from dunnage.solver.bounds import level_upper_bounds
from dunnage.solver.problem import Problem
from dunnage.solver.scenarios import (
    ScenarioSpec,
    generate_scenario,
    openb_arrivals,
    run_default,
)


def gpu_node(i: int, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Node ``n<i>``: 8 GPUs, 64 cores, its hostname label and ``labels``."""
    return {
        "kind": "Node",
        "metadata": {
            "name": f"n{i}",
            "labels": {"kubernetes.io/hostname": f"n{i}", **(labels or {})},
        },
        "status": {
            "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"}
        },
    }


def one_per_node_workloads(nodes: int = 1500, workloads: int = 500, replicas: int = 16) -> Snapshot:
    """GPU nodes running workloads whose replicas keep one per node (hostname anti-affinity),
    each with one replica pending: many rules between pods for the planner to read."""
    items = [gpu_node(i) for i in range(nodes)]
    for w in range(workloads):
        term = {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {"app": f"w{w}"}},
        }
        for r in range(replicas):
            spec: dict[str, Any] = {
                "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": 1}}}],
                "affinity": {
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
                },
            }
            if r < replicas - 1:
                spec["nodeName"] = f"n{(w * replicas + r) % nodes}"
            meta = {"name": f"w{w}-{r}", "namespace": f"ns{w % 20}", "labels": {"app": f"w{w}"}}
            items.append({"kind": "Pod", "metadata": meta, "spec": spec})
    return snapshot_from_objects(items)


def kept_together_workloads(
    anchored: bool, nodes: int = 1500, workloads: int = 500, replicas: int = 16, zones: int = 10
) -> Snapshot:
    """GPU nodes over ``zones`` zones running workloads whose replicas ask, by required pod
    affinity on the zone, to run beside the pods of their workload (``anchored``: their own
    replicas, held, so one pending replica per workload is planned beside them) or of a
    companion workload that carries no such rule (which a plan may move: one pending replica
    per workload is planned beside it, which the plan keeps where it runs). Running replicas
    in the workload's zone, the last 4 pending."""
    zone = "topology.kubernetes.io/zone"
    items = [gpu_node(i, {zone: f"z{i % zones}"}) for i in range(nodes)]
    for w in range(workloads):
        target = f"w{w}" if anchored else f"w{w}-companion"
        term = {"topologyKey": zone, "labelSelector": {"matchLabels": {"app": target}}}
        for r in range(replicas):
            spec: dict[str, Any] = {
                "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": 1}}}],
                "affinity": {
                    "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
                },
            }
            app = f"w{w}"
            if r < replicas - 4:
                # On a node of the workload's zone (node index = zone mod zones).
                spec["nodeName"] = (
                    f"n{(w % zones) + zones * ((w * replicas + r) % (nodes // zones))}"
                )
                if not anchored and r == 0:  # the companion: no rule of its own
                    app = target
                    del spec["affinity"]
            meta = {"name": f"w{w}-{r}", "namespace": f"ns{w % 20}", "labels": {"app": app}}
            items.append({"kind": "Pod", "metadata": meta, "spec": spec})
    return snapshot_from_objects(items)


def pods_with_disks(limited: bool, nodes: int = 1500, pods_per_node: int = 6) -> Snapshot:
    """GPU nodes running 1-GPU pods with a CSI disk each (a claim bound to its volume), 1 in
    50 nodes' pods pending; ``limited``: every node's CSINode lets the driver attach 8 disks,
    and 1 in 10 nodes has a VolumeAttachment of a disk no pod uses (kube-scheduler's
    NodeVolumeLimits, which the planner then models as one more resource)."""
    items = [gpu_node(i) for i in range(nodes)]
    driver = "disk.csi.example"
    for i in range(nodes):
        for k in range(pods_per_node):
            name = f"p{i}-{k}"
            spec: dict[str, Any] = {
                "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": 1}}}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": name}}],
            }
            if i % 50:
                spec["nodeName"] = f"n{i}"
            items += [
                {"kind": "Pod", "metadata": {"name": name, "namespace": "t"}, "spec": spec},
                {
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": name, "namespace": "t"},
                    "spec": {"volumeName": f"pv-{name}"},
                    "status": {"phase": "Bound"},
                },
                {
                    "kind": "PersistentVolume",
                    "metadata": {"name": f"pv-{name}"},
                    "spec": {"csi": {"driver": driver, "volumeHandle": name}},
                },
            ]
        if limited:
            count = {"count": 8}
            items.append(
                {
                    "kind": "CSINode",
                    "metadata": {"name": f"n{i}"},
                    "spec": {
                        "drivers": [{"name": driver, "nodeID": f"n{i}", "allocatable": count}]
                    },
                }
            )
            if i % 10 == 0:
                source = {"persistentVolumeName": f"pv-p{(i + 1) % nodes}-0"}
                attached = {"attacher": driver, "nodeName": f"n{i}", "source": source}
                items.append(
                    {"kind": "VolumeAttachment", "metadata": {"name": f"va{i}"}, "spec": attached}
                )
    return snapshot_from_objects(items)


def gpu_objects(
    dra: bool, nodes: int = 1500, pods_per_node: int = 6, kubelet_status: bool = False
) -> list[dict[str, Any]]:
    """GPU nodes running 1-GPU pods, the pods of 1 node in 50 pending; the GPUs a device
    plugin's (node allocatable) or, with ``dra``, 8 devices in each node's ResourceSlice (with
    a uuid, a model and a memory capacity each) served as ``nvidia.com/gpu`` by a DeviceClass,
    each running pod holding the claim kube-scheduler made for it (dunnage.cluster.devices).
    With ``kubelet_status`` the pods also ask cpu and memory, and the running ones carry the
    status a kubelet writes (what it allocated and actuated, read for pods resized in place)."""
    driver = "gpu.example.com"
    items: list[dict[str, Any]] = []
    if dra:
        selector = f'device.driver == "{driver}" && device.attributes["{driver}"].model == "h100"'
        items.append(
            {
                "kind": "DeviceClass",
                "metadata": {"name": "gpu"},
                "spec": {
                    "selectors": [{"cel": {"expression": selector}}],
                    "extendedResourceName": "nvidia.com/gpu",
                },
            }
        )
    for i in range(nodes):
        node = gpu_node(i)
        if dra:
            del node["status"]["allocatable"]["nvidia.com/gpu"]
            devices = [
                {
                    "name": f"gpu-{k}",
                    "attributes": {
                        "model": {"string": "h100"},
                        "uuid": {"string": f"GPU-{i}-{k}"},
                        "index": {"int": k},
                    },
                    "capacity": {"memory": {"value": "80Gi"}},
                }
                for k in range(8)
            ]
            pool = {"name": f"n{i}", "generation": 1, "resourceSliceCount": 1}
            spec = {"driver": driver, "nodeName": f"n{i}", "pool": pool, "devices": devices}
            items.append({"kind": "ResourceSlice", "metadata": {"name": f"n{i}"}, "spec": spec})
        items.append(node)
        for k in range(pods_per_node):
            name = f"p{i}-{k}"
            meta = {"name": name, "namespace": "t", "uid": name}
            pod_spec: dict[str, Any] = {
                "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": 1}}}]
            }
            pod = {"kind": "Pod", "metadata": meta, "spec": pod_spec}
            items.append(pod)
            if kubelet_status:
                requests = {"cpu": "1", "memory": "4Gi"}
                pod_spec["containers"][0]["resources"]["requests"] = requests
            if i % 50 == 0:
                continue
            pod_spec["nodeName"] = f"n{i}"
            if kubelet_status:
                allocated = {**requests, "nvidia.com/gpu": "1"}
                pod["status"] = {
                    "phase": "Running",
                    "conditions": [
                        {"type": t, "status": "True"} for t in ("Ready", "PodScheduled")
                    ],
                    "containerStatuses": [
                        {
                            "name": "c",
                            "ready": True,
                            "allocatedResources": allocated,
                            "resources": {"requests": allocated, "limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                }
            if dra:
                request = {"name": "r", "exactly": {"deviceClassName": "gpu", "count": 1}}
                result = {"request": "r", "driver": driver, "pool": f"n{i}", "device": f"gpu-{k}"}
                owner = {"kind": "Pod", "name": name, "uid": name, "controller": True}
                annotations = {"resource.kubernetes.io/extended-resource-claim": "true"}
                claim_meta = {
                    "name": f"{name}-extended-resources",
                    "namespace": "t",
                    "annotations": annotations,
                    "ownerReferences": [owner],
                }
                items.append(
                    {
                        "kind": "ResourceClaim",
                        "metadata": claim_meta,
                        "spec": {"devices": {"requests": [request]}},
                        "status": {"allocation": {"devices": {"results": [result]}}},
                    }
                )
    return items


def median_load(items: list[dict[str, Any]], repeat: int) -> tuple[float, float]:
    """Median seconds of snapshot_from_objects over ``items``, as it runs (the garbage
    collector paused) and with the collector running (its ``__wrapped__``), alternating."""
    variants = (snapshot_from_objects, snapshot_from_objects.__wrapped__)  # type: ignore[attr-defined]
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for load, out in zip(variants, times, strict=True):
            started = time.perf_counter()
            load(items)
            out.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def median_steps(snapshot: Snapshot, repeat: int) -> tuple[float, float, int]:
    """Median seconds of the build and of the bounds, and the node shapes."""
    builds, bounds, shapes = [], [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        problem = Problem.build(snapshot)
        built = time.perf_counter()
        level_upper_bounds(problem)
        builds.append(built - started)
        bounds.append(time.perf_counter() - built)
        shapes = len(set(problem.node_shape_id))
    return statistics.median(builds), statistics.median(bounds), shapes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--loader-only", action="store_true", help="time the loader alone")
    args = parser.parse_args(argv)
    loads = {
        "device plugin": gpu_objects(False),
        "device plugin, kubelet statuses": gpu_objects(False, kubelet_status=True),
        "DRA": gpu_objects(True),
    }
    if args.loader_only:
        print_loads(loads, args.repeat)
        return 0
    cases: list[tuple[str, Snapshot]] = []
    for nodes, per_node in ((64, 8), (256, 4), (256, 8)):
        spec = ScenarioSpec(
            nodes=nodes, pods_per_node=per_node, priorities=4, utilisation=1.0, seed=0
        )
        cases.append(
            (
                f"paper {nodes} nodes x {per_node} pods",
                run_default(generate_scenario(spec)).snapshot,
            )
        )
    for nodes in (400, 1523):
        cases.append((f"openb {nodes} nodes", openb_arrivals(nodes, 0)[0]))
    cases.append(("1500 nodes, 500 one-per-node", one_per_node_workloads()))
    cases.append(("1500 nodes, 500 together", kept_together_workloads(anchored=True)))
    cases.append(("1500 nodes, 500 by a companion", kept_together_workloads(anchored=False)))
    cases.append(("1500 nodes, disks", pods_with_disks(limited=False)))
    cases.append(("1500 nodes, disks, limits", pods_with_disks(limited=True)))
    cases.append(("1500 nodes, device plugin", snapshot_from_objects(loads["device plugin"])))
    cases.append(("1500 nodes, DRA", snapshot_from_objects(loads["DRA"])))
    for name, snapshot in cases:
        build, bounds, shapes = median_steps(snapshot, args.repeat)
        print(
            f"{name:28} build median {build * 1000:6.0f} ms  bounds median "
            f"{bounds * 1000:6.0f} ms  node shapes {shapes}"
        )
    print_loads(loads, args.repeat)
    return 0


def print_loads(loads: dict[str, list[dict[str, Any]]], repeat: int) -> None:
    """The loader's time on the GPU cases (where DRA's devices and kubelets' statuses are
    read)."""
    for name, items in loads.items():
        load, collecting = median_load(items, repeat)
        print(
            f"{'1500 nodes, ' + name:44} load median "
            f"{load * 1000:6.0f} ms  (collector running: {collecting * 1000:6.0f} ms)"
        )


if __name__ == "__main__":
    sys.exit(main())
