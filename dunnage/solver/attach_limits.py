"""kube-scheduler's NodeVolumeLimits: how many CSI volumes each driver may attach to a node.

A node's CSINode gives, per CSI driver, the most volumes it may attach (``allocatable.count``).
kube-scheduler refuses a pod on a node when the pod's CSI volumes not attached there yet would
take a driver past its count; attached are the volumes of the pods on the node (each volume
once, by ``driver/volumeHandle``) and those VolumeAttachments attach to it.

The planner models each limited driver as one more resource: a pod asks one unit per CSI volume
of the driver; a node offers its count less the volumes attached there that no plan moves:
those of VolumeAttachments with no pod on the node, and the shared volumes (below). A volume
several pods use is counted once per node by kube-scheduler but would be once per pod here, and
the unit a leaving pod frees is not free while another user stays: so the pods sharing a volume
of a limited driver are held (they stay where they run, or are left to kube-scheduler), and
their volume counts where it is attached now. A node over its count already (the count was
lowered) keeps the pods it has, and no plan brings it another volume of that driver.

A moved pod's volume stays attached to its old node until it is detached: kube-scheduler counts
it there until then, so a pod the plan puts in its place may wait for the detach.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dunnage.cluster.model import Node, Pod, csi_driver

ATTACH = "dunnage.io/attach"  # the modelled drivers' resources: ATTACH/<driver>


@dataclass(frozen=True)
class AttachLimits:
    drivers: tuple[str, ...]  # limited on some node and used by some pod
    capacity: list[tuple[int, ...]] = field(default_factory=list)  # per node, per driver
    demand: list[tuple[int, ...]] = field(default_factory=list)  # per pod, per driver
    # Per node: the drivers (indexes) whose count it is over already (no volume comes in).
    full: dict[int, frozenset[int]] = field(default_factory=dict)
    # The pods sharing a volume of a limited driver (held): pod index -> (volume, the other
    # pods using it, by name) for each such volume.
    shared: dict[int, list[tuple[str, tuple[str, ...]]]] = field(default_factory=dict)

    @property
    def resources(self) -> tuple[str, ...]:
        return tuple(f"{ATTACH}/{d}" for d in self.drivers)

    def refuses(self, pi: int, ni: int) -> bool:
        """Whether node ``ni`` is over a count that pod ``pi`` would add to."""
        return any(self.demand[pi][d] for d in self.full.get(ni, ()))


def attach_limits(
    pods: Sequence[Pod], nodes: Sequence[Node], origin: Sequence[int | None]
) -> AttachLimits:
    """The limited drivers as resources (module docstring); ``origin``: each pod's node index
    (None: pending, or on a node the snapshot lacks)."""
    limited = {d for n in nodes for d in n.volume_limits}
    used = {csi_driver(v) for p in pods for v in p.csi_volumes}
    drivers = tuple(sorted(limited & used))
    if not drivers:
        return AttachLimits(drivers=())
    users: dict[str, list[int]] = {}
    for pi, pod in enumerate(pods):
        for v in pod.csi_volumes:
            if csi_driver(v) in limited:
                users.setdefault(v, []).append(pi)
    shared = {v for v, group in users.items() if len(group) > 1}
    sharing: dict[int, list[tuple[str, tuple[str, ...]]]] = {}
    for v in sorted(shared):
        for pi in users[v]:
            others = tuple(pods[o].name for o in users[v] if o != pi)
            sharing.setdefault(pi, []).append((v, others))
    index = {d: i for i, d in enumerate(drivers)}
    demand = []
    for pod in pods:
        row = [0] * len(drivers)
        for v in pod.csi_volumes:
            if v not in shared and csi_driver(v) in index:
                row[index[csi_driver(v)]] += 1
        demand.append(tuple(row))
    here: dict[int, list[int]] = {}
    for pi, ni in enumerate(origin):
        if ni is not None:
            here.setdefault(ni, []).append(pi)
    total = [sum(d[i] for d in demand) for i in range(len(drivers))]
    capacity: list[tuple[int, ...]] = []
    full: dict[int, frozenset[int]] = {}
    for ni, node in enumerate(nodes):
        own = {v for pi in here.get(ni, ()) for v in pods[pi].csi_volumes if v not in shared}
        fixed = set(node.attached_volumes) | {
            v for pi in here.get(ni, ()) for v in pods[pi].csi_volumes if v in shared
        }
        row, over = [], []
        for i, d in enumerate(drivers):
            if d not in node.volume_limits:
                row.append(total[i])  # no limit: room for every volume
                continue
            free = node.volume_limits[d] - sum(1 for v in fixed - own if csi_driver(v) == d)
            now = sum(demand[pi][i] for pi in here.get(ni, ()))
            if now > free:
                over.append(i)
            row.append(max(free, now))
        capacity.append(tuple(row))
        if over:
            full[ni] = frozenset(over)
    return AttachLimits(drivers, capacity, demand, full, sharing)
