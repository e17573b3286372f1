"""Import the openb trace (Alibaba cluster-trace-gpu-v2023) as a cluster snapshot.

The trace (``dunnage/data/openb``, see the README there for its source and attribution) lists
1,523 nodes and 8,152 pods. :func:`import_openb` turns a slice of it into a :class:`Snapshot`
of pending pods; :func:`snapshot_to_kubernetes_list` writes it as a Kubernetes ``List``, in the
shape ``kubectl get nodes,pods,pvc,pv,pdb,priorityclasses,namespaces -A -o yaml`` prints.

Mapping (every choice here is deliberate; change it only with the docs):

Nodes
    ``cpu_milli`` / ``memory_mib`` / ``gpu`` -> allocatable ``cpu`` / ``memory`` /
    ``nvidia.com/gpu``, ``pods: 110`` (the kubelet default) and ``dunnage.io/gpu-milli`` =
    1000 x GPUs (see "fractional GPUs"). ``model`` -> label ``nvidia.com/gpu.product`` (the GPU
    feature discovery label; CPU-only nodes have no such label).

Pods
    Namespace ``openb``, names as in the trace, a uid derived from the name. Requests are the
    trace's ``cpu_milli`` and ``memory_mib``. ``gpu_spec`` (``V100M16|V100M32``) becomes a required
    node affinity ``nvidia.com/gpu.product In [V100M16, V100M32]``. All pods are pending (no
    ``nodeName``) and listed in trace arrival order (``creation_time``; the trace is sorted by it).

Priorities (``qos`` -> PriorityClass, included in the List)
    ``Guaranteed`` -> ``openb-guaranteed`` 3000, ``LS`` (latency-sensitive) -> ``openb-ls`` 2000,
    ``Burstable`` -> ``openb-burstable`` 1000, ``BE`` (best effort) -> ``openb-be`` 0. The order
    follows the Kubernetes QoS classes (Guaranteed > Burstable > BestEffort) with the trace's
    latency-sensitive class between Guaranteed and Burstable, as the FGD paper treats LS as
    protected, online work. Pods carry both ``priorityClassName`` and the resolved ``priority``
    (what the admission controller writes).

Fractional GPUs
    ``nvidia.com/gpu`` is integral, but 3,078 trace pods ask for a share of one GPU
    (``num_gpu == 1``, ``gpu_milli < 1000``). Rounding them up to a whole GPU would change the
    packing problem the trace is about, so GPU shares are an extended resource,
    ``dunnage.io/gpu-milli``: nodes offer 1000 per GPU; every GPU pod requests
    ``num_gpu x gpu_milli`` of it; whole-GPU pods (``gpu_milli == 1000``) also request
    ``num_gpu`` ``nvidia.com/gpu``. Both resources are checked, so a whole-GPU pod never lands
    where shares have used up the GPU time, and vice versa.
    *Approximation*: a share must fit on a single GPU, which one scalar per node cannot say.
    The scalar is a relaxation: three 600-milli pods fit a 2-GPU node's 2000 milli although only
    two GPUs can hold one each, and a whole-GPU pod is admitted next to two 300-milli shares
    spread over both GPUs. Real device plugins for GPU sharing track per-GPU state; here the
    benchmark is the packing problem as Kubernetes' scalar resources can express it.

Slices (``--nodes N --seed S``)
    Nodes: a seeded uniform sample of N of the 1,523 nodes (all of them for N = 1523), in trace
    order. Pods: the trace's pods are all meant to be submitted to the full cluster (the FGD
    methodology; the trace's GPU requests total 98% of the cluster's GPUs, its CPU requests
    68%), so a slice keeps that load: the GPU pods are shuffled (seeded) and taken while their
    GPU requests stay within the slice's share of the cluster's GPUs times the trace's total
    GPU requests; CPU-only pods likewise by CPU. The chosen pods are put back in trace order.
    So a slice's requested/offered GPU ratio is the real cluster's (98%), and so is, in
    expectation, everything else. ``load`` scales both shares
    (1.0 = as loaded as the real cluster). ``pods=M`` instead takes a seeded sample of exactly M
    pods; ``time=T`` restricts the population to pods alive at second T of the trace
    (``creation_time <= T < deletion_time``) — the trace's real occupancy at that instant,
    which is light because most trace pods are short-lived.
"""

from __future__ import annotations

import csv
import math
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dunnage.cluster.loader import snapshot_to_list
from dunnage.cluster.model import Node, Operator, Pod, Requirement, SelectorTerm, Snapshot
from dunnage.cluster.quantity import CPU, GPU, MEMORY, PODS, Resources
from dunnage.errors import InputError, require_positive

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "openb"
NODE_FILE = "openb_node_list_all_node.csv"
POD_FILE = "openb_pod_list_default.csv"

GPU_MILLI = "dunnage.io/gpu-milli"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
QOS_LABEL = "dunnage.io/qos"
NAMESPACE = "openb"
MAX_PODS_PER_NODE = 110
MIB = 1024 * 1024

# qos -> (PriorityClass name, value), highest first.
QOS_PRIORITY_CLASSES: dict[str, tuple[str, int]] = {
    "Guaranteed": ("openb-guaranteed", 3000),
    "LS": ("openb-ls", 2000),
    "Burstable": ("openb-burstable", 1000),
    "BE": ("openb-be", 0),
}
_UID_NAMESPACE = uuid.UUID("6f1d7a52-3c1e-4d8e-9a57-0b3a2e6c9d10")


@dataclass(frozen=True, slots=True)
class TraceNode:
    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str  # "" for CPU-only nodes


@dataclass(frozen=True, slots=True)
class TracePod:
    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int  # per GPU
    gpu_spec: tuple[str, ...]  # allowed GPU models; empty = any
    qos: str
    phase: str
    creation_time: int
    deletion_time: int | None
    scheduled_time: int | None

    @property
    def gpu_milli_total(self) -> int:
        return self.num_gpu * self.gpu_milli

    @property
    def whole_gpus(self) -> int:
        return self.num_gpu if self.gpu_milli >= 1000 else 0

    def alive_at(self, time: float) -> bool:
        return self.creation_time <= time and (
            self.deletion_time is None or time < self.deletion_time
        )


def _int(row: dict[str, str], column: str, *, where: str, optional: bool = False) -> int | None:
    raw = (row.get(column) or "").strip()
    if not raw and optional:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise InputError(f"expected an integer, got {raw!r}", obj=where, field=column) from exc


def _req_int(row: dict[str, str], column: str, *, where: str) -> int:
    value = _int(row, column, where=where)
    assert value is not None
    return value


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise InputError(f"cannot read trace file: {exc.strerror}", obj=str(path)) from exc


def read_nodes(data_dir: Path = DATA_DIR) -> list[TraceNode]:
    out = []
    for i, row in enumerate(_rows(data_dir / NODE_FILE)):
        where = f"{NODE_FILE} row {i + 1}"
        out.append(
            TraceNode(
                name=row["sn"],
                cpu_milli=_req_int(row, "cpu_milli", where=where),
                memory_mib=_req_int(row, "memory_mib", where=where),
                gpus=_req_int(row, "gpu", where=where),
                model=(row.get("model") or "").strip(),
            )
        )
    return out


def read_pods(data_dir: Path = DATA_DIR) -> list[TracePod]:
    out = []
    for i, row in enumerate(_rows(data_dir / POD_FILE)):
        where = f"{POD_FILE} row {i + 1}"
        qos = (row.get("qos") or "").strip()
        if qos not in QOS_PRIORITY_CLASSES:
            raise InputError(f"unknown qos {qos!r}", obj=where, field="qos")
        spec = tuple(m for m in (row.get("gpu_spec") or "").split("|") if m.strip())
        out.append(
            TracePod(
                name=row["name"],
                cpu_milli=_req_int(row, "cpu_milli", where=where),
                memory_mib=_req_int(row, "memory_mib", where=where),
                num_gpu=_req_int(row, "num_gpu", where=where),
                gpu_milli=_req_int(row, "gpu_milli", where=where),
                gpu_spec=tuple(m.strip() for m in spec),
                qos=qos,
                phase=(row.get("pod_phase") or "").strip(),
                creation_time=_req_int(row, "creation_time", where=where),
                deletion_time=_int(row, "deletion_time", where=where, optional=True),
                scheduled_time=_int(row, "scheduled_time", where=where, optional=True),
            )
        )
    return out


def node_from_trace(t: TraceNode) -> Node:
    labels = {"kubernetes.io/hostname": t.name}
    if t.model:
        labels[GPU_PRODUCT_LABEL] = t.model
    return Node(
        name=t.name,
        allocatable=Resources(
            {
                CPU: t.cpu_milli,
                MEMORY: t.memory_mib * MIB,
                GPU: t.gpus,
                GPU_MILLI: 1000 * t.gpus,
                PODS: MAX_PODS_PER_NODE,
            }
        ),
        labels=labels,
    )


def pod_from_trace(t: TracePod) -> Pod:
    affinity = None
    if t.gpu_spec:
        affinity = (
            SelectorTerm(
                expressions=(Requirement(GPU_PRODUCT_LABEL, Operator.IN, tuple(t.gpu_spec)),)
            ),
        )
    return Pod(
        namespace=NAMESPACE,
        name=t.name,
        uid=str(uuid.uuid5(_UID_NAMESPACE, t.name)),
        requests=Resources(
            {
                CPU: t.cpu_milli,
                MEMORY: t.memory_mib * MIB,
                GPU: t.whole_gpus,
                GPU_MILLI: t.gpu_milli_total,
                PODS: 1,
            }
        ),
        priority=QOS_PRIORITY_CLASSES[t.qos][1],
        affinity_terms=affinity,
        labels={"app.kubernetes.io/part-of": "openb", QOS_LABEL: t.qos},
    )


def select_nodes(nodes: Sequence[TraceNode], count: int | None, seed: int) -> list[TraceNode]:
    """A seeded uniform sample of ``count`` nodes in trace order (all of them for None)."""
    if count is None or count == len(nodes):
        return list(nodes)
    if not 1 <= count <= len(nodes):
        raise InputError(f"must be between 1 and {len(nodes)}", obj="--nodes")
    rng = random.Random(f"openb-nodes-{seed}")
    return [nodes[i] for i in sorted(rng.sample(range(len(nodes)), count))]


def _sample_indices(size: int, count: int, rng: random.Random) -> list[int]:
    """``count`` of ``range(size)``, uniformly without replacement, in increasing order."""
    return sorted(rng.sample(range(size), max(0, min(count, size))))


def _gpu_weight(pod: TracePod) -> int:
    return pod.gpu_milli_total


def _cpu_weight(pod: TracePod) -> int:
    return pod.cpu_milli


def select_pods(
    pods: Sequence[TracePod],
    *,
    slice_nodes: Sequence[TraceNode],
    all_nodes: Sequence[TraceNode],
    seed: int,
    count: int | None = None,
    time: float | None = None,
    load: float = 1.0,
) -> list[TracePod]:
    """The slice's pods in trace order (see the module docstring for the rule)."""
    population = [p for p in pods if time is None or p.alive_at(time)]
    rng = random.Random(f"openb-pods-{seed}")
    if count is not None:
        if count < 0 or count > len(population):
            raise InputError(f"must be between 0 and {len(population)}", obj="--pods")
        return [population[i] for i in _sample_indices(len(population), count, rng)]
    require_positive(load, "--load")
    total_gpus = sum(n.gpus for n in all_nodes)
    total_cpu = sum(n.cpu_milli for n in all_nodes)
    gpu_share = sum(n.gpus for n in slice_nodes) / total_gpus if total_gpus else 0.0
    cpu_share = sum(n.cpu_milli for n in slice_nodes) / total_cpu if total_cpu else 0.0
    gpu_pods = [i for i, p in enumerate(population) if p.num_gpu > 0]
    cpu_pods = [i for i, p in enumerate(population) if p.num_gpu == 0]
    chosen: list[int] = []
    for stratum, share, weight in (
        (gpu_pods, gpu_share, _gpu_weight),
        (cpu_pods, cpu_share, _cpu_weight),
    ):
        # A uniformly random prefix whose demand is the slice's share of the stratum's demand.
        budget = share * load * sum(weight(population[i]) for i in stratum)
        order = list(stratum)
        rng.shuffle(order)
        used = 0
        for i in order:
            if used + weight(population[i]) > budget:
                break
            used += weight(population[i])
            chosen.append(i)
    return [population[i] for i in sorted(chosen)]


def import_openb(
    nodes: int | None,
    seed: int,
    *,
    pods: int | None = None,
    time: float | None = None,
    load: float = 1.0,
    data_dir: Path = DATA_DIR,
) -> Snapshot:
    """A slice of the openb cluster: ``nodes`` sampled nodes, their share of the trace's pods.

    All pods are pending, in trace arrival order. Deterministic for a given ``seed``.
    """
    all_nodes = read_nodes(data_dir)
    slice_nodes = select_nodes(all_nodes, nodes, seed)
    chosen = select_pods(
        read_pods(data_dir),
        slice_nodes=slice_nodes,
        all_nodes=all_nodes,
        seed=seed,
        count=pods,
        time=time,
        load=load,
    )
    return Snapshot(
        nodes=tuple(node_from_trace(n) for n in slice_nodes),
        pods=tuple(pod_from_trace(p) for p in chosen),
    )


# --- writing --------------------------------------------------------------------------------


def priority_class_objects(values: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """PriorityClass objects for the qos classes (those whose value is in ``values``)."""
    wanted = set(values) if values is not None else None
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "globalDefault": False,
            "preemptionPolicy": "PreemptLowerPriority",
            "description": f"openb trace qos {qos}",
        }
        for qos, (name, value) in QOS_PRIORITY_CLASSES.items()
        if wanted is None or value in wanted
    ]


def _pretty_memory(quantities: dict[str, Any]) -> dict[str, Any]:
    out = dict(quantities)
    raw = out.get(MEMORY)
    if isinstance(raw, str) and raw.isdigit():
        value = int(raw)
        if value and value % (1024 * MIB) == 0:
            out[MEMORY] = f"{value // (1024 * MIB)}Gi"
        elif value and value % MIB == 0:
            out[MEMORY] = f"{value // MIB}Mi"
    return out


def snapshot_to_kubernetes_list(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as ``kubectl get nodes,pods,pvc,pv,pdb,priorityclasses,namespaces -A -o
    yaml`` prints it.

    Pods whose priority is one of the qos classes' values also get ``priorityClassName``, and
    the List carries those PriorityClass objects.
    """
    base = snapshot_to_list(snapshot)
    class_by_value = {value: name for name, value in QOS_PRIORITY_CLASSES.values()}
    items: list[dict[str, Any]] = []
    for item in base["items"]:
        if item["kind"] == "Node":
            status = item["status"]
            status["capacity"] = _pretty_memory(status["capacity"])
            status["allocatable"] = _pretty_memory(status["allocatable"])
        elif item["kind"] == "Pod":
            spec = item["spec"]
            name = class_by_value.get(spec.get("priority"))
            if name is not None:
                spec["priorityClassName"] = name
            for container in spec.get("containers", []):
                resources = container.get("resources") or {}
                for kind in ("requests", "limits"):
                    if kind in resources:
                        resources[kind] = _pretty_memory(resources[kind])
            spec.setdefault("schedulerName", "default-scheduler")
        items.append(item)
    items += priority_class_objects({p.priority for p in snapshot.pods})
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def write_snapshot(snapshot: Snapshot, path: str | Path | None) -> str:
    """Write the List to ``path`` (JSON for ``.json``, else YAML); None returns the YAML text."""
    import json

    import yaml

    doc = snapshot_to_kubernetes_list(snapshot)
    as_json = path is not None and str(path).lower().endswith(".json")
    if as_json:
        text = json.dumps(doc, indent=2) + "\n"
    else:
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        text = yaml.dump(doc, Dumper=dumper, sort_keys=False, default_flow_style=False)
    if path is not None:
        try:
            Path(path).write_text(text)
        except OSError as exc:
            raise InputError(f"cannot write: {exc.strerror}", obj=str(path)) from exc
    return text


def trace_summary(snapshot: Snapshot) -> dict[str, Any]:
    """Totals of a slice: capacity and requests per resource, pods per priority."""
    capacity: Resources = Resources()
    for n in snapshot.nodes:
        capacity = capacity + n.allocatable
    requested: Resources = Resources()
    for p in snapshot.pods:
        requested = requested + p.requests
    per_priority: dict[int, int] = {}
    for p in snapshot.pods:
        per_priority[p.priority] = per_priority.get(p.priority, 0) + 1
    return {
        "nodes": len(snapshot.nodes),
        "pods": len(snapshot.pods),
        "pods_by_priority": dict(sorted(per_priority.items(), reverse=True)),
        "load": {
            r: round(requested[r] / capacity[r], 4) if capacity[r] else math.nan
            for r in (CPU, MEMORY, GPU, GPU_MILLI)
        },
    }
