"""CSI objects for the tests of NodeVolumeLimits: a node's CSINode (its drivers' attach
counts), a claim bound to a CSI volume, and a VolumeAttachment."""

from __future__ import annotations

from typing import Any


def csi_node(node: str, **counts: int) -> dict[str, Any]:
    """The CSINode of ``node``: driver (``_`` for ``.``) -> how many volumes it may attach."""
    drivers = [
        {"name": d.replace("_", "."), "nodeID": node, "allocatable": {"count": c}}
        for d, c in counts.items()
    ]
    return {"kind": "CSINode", "metadata": {"name": node}, "spec": {"drivers": drivers}}


def csi_claim(
    claim: str, handle: str, driver: str = "disk.csi", namespace: str = "t"
) -> list[dict[str, Any]]:
    """Claim ``claim`` bound to the CSI volume ``pv-<handle>`` of ``driver``."""
    return [
        {
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {"volumeName": f"pv-{handle}"},
            "status": {"phase": "Bound"},
        },
        {
            "kind": "PersistentVolume",
            "metadata": {"name": f"pv-{handle}"},
            "spec": {"csi": {"driver": driver, "volumeHandle": handle}},
        },
    ]


def attachment(handle: str, node: str, driver: str = "disk.csi") -> dict[str, Any]:
    """A VolumeAttachment of the volume ``pv-<handle>`` (see :func:`csi_claim`) to ``node``."""
    return {
        "kind": "VolumeAttachment",
        "metadata": {"name": f"va-{handle}-{node}"},
        "spec": {
            "attacher": driver,
            "nodeName": node,
            "source": {"persistentVolumeName": f"pv-{handle}"},
        },
    }


def claims(*names: str) -> dict[str, Any]:
    """A pod spec's volumes naming these claims."""
    return {
        "volumes": [
            {"name": f"v{i}", "persistentVolumeClaim": {"claimName": n}}
            for i, n in enumerate(names)
        ]
    }


def storage_class(
    name: str, driver: str = "disk.csi", mode: str = "WaitForFirstConsumer", **extra: Any
) -> dict[str, Any]:
    return {
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": driver,
        "volumeBindingMode": mode,
        **extra,
    }


def csi_driver(name: str = "disk.csi", capacity: bool = False) -> dict[str, Any]:
    return {"kind": "CSIDriver", "metadata": {"name": name}, "spec": {"storageCapacity": capacity}}


def unbound_claim(claim: str, storage_class: str, namespace: str = "t") -> dict[str, Any]:
    """Claim ``claim`` of ``storage_class``, not bound yet."""
    return {
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace},
        "spec": {"storageClassName": storage_class, "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Pending"},
    }
