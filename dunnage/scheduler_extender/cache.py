"""An informer-style cache of the objects a snapshot needs: list once, then watch.

Objects are kept as the API server's JSON (plain dicts) so the snapshot is built by the same
loader as `dunnage plan` files. One thread per kind; a 410 Gone re-lists. A kind the cluster
does not serve (404: its API is newer than the cluster, such as resource.k8s.io/v1 before
Kubernetes 1.34, or DeviceTaintRules before 1.37) is read as none and listed again every
minute.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from dunnage.cluster.loader import snapshot_from_objects
from dunnage.cluster.model import Snapshot

log = logging.getLogger(__name__)

Obj = dict[str, Any]
UNSERVED_RETRY_SECONDS = 60.0


def _kinds(api_client: client.ApiClient) -> dict[str, Callable[..., Any]]:
    core = client.CoreV1Api(api_client)
    policy = client.PolicyV1Api(api_client)
    scheduling = client.SchedulingV1Api(api_client)
    storage = client.StorageV1Api(api_client)
    resource = client.ResourceV1Api(api_client)
    return {
        "Namespace": core.list_namespace,  # a terminating one's pods are leaving
        "Node": core.list_node,
        "Pod": core.list_pod_for_all_namespaces,
        # where a pod's bound volumes let it run (a local volume: one node)
        "PersistentVolumeClaim": core.list_persistent_volume_claim_for_all_namespaces,
        "PersistentVolume": core.list_persistent_volume,
        "PodDisruptionBudget": policy.list_pod_disruption_budget_for_all_namespaces,
        "PriorityClass": scheduling.list_priority_class,
        # the CSI drivers' attach limits per node, and what is attached where
        "CSINode": storage.list_csi_node,
        "VolumeAttachment": storage.list_volume_attachment,
        # where a claim not bound yet would be provisioned
        "StorageClass": storage.list_storage_class,
        "CSIDriver": storage.list_csi_driver,
        "CSIStorageCapacity": storage.list_csi_storage_capacity_for_all_namespaces,
        # the devices DRA drivers publish, and the claims allocated them or waiting for them
        "DeviceClass": resource.list_device_class,
        "ResourceSlice": resource.list_resource_slice,
        "ResourceClaim": resource.list_resource_claim_for_all_namespaces,
        # taints an admin puts on devices (kube-scheduler allocates no device a taint blocks)
        "DeviceTaintRule": resource.list_device_taint_rule,
    }


def _key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class ClusterCache:
    """Current Namespaces, Nodes, Pods, PersistentVolumeClaims, PersistentVolumes, PDBs,
    PriorityClasses, CSINodes, VolumeAttachments, StorageClasses, CSIDrivers,
    CSIStorageCapacities, DeviceClasses, ResourceSlices, ResourceClaims and DeviceTaintRules
    (or the ``kinds`` given: kind -> its list function), kept up to date by watches."""

    def __init__(
        self, api_client: client.ApiClient, kinds: dict[str, Callable[..., Any]] | None = None
    ) -> None:
        self._lists = kinds if kinds is not None else _kinds(api_client)
        self._objects: dict[str, dict[str, Obj]] = {kind: {} for kind in self._lists}
        self._lock = threading.Lock()
        self._synced = {kind: threading.Event() for kind in self._lists}
        self._stop = threading.Event()
        self._watches: list[watch.Watch] = []
        self._listeners: list[Callable[[str, str, Obj], None]] = []
        self._unserved: set[str] = set()  # kinds whose list was a 404, said once
        self.generation = 0  # bumped on every change, to tell whether a snapshot is stale

    def on_change(self, listener: Callable[[str, str, Obj], None]) -> None:
        """Call ``listener(event_type, kind, obj)`` on every watch event."""
        self._listeners.append(listener)

    def start(self) -> None:
        for kind in self._lists:
            threading.Thread(
                target=self._run, args=(kind,), name=f"watch-{kind}", daemon=True
            ).start()

    def wait_synced(self, timeout: float = 30.0) -> bool:
        return all(event.wait(timeout) for event in self._synced.values())

    @property
    def synced(self) -> bool:
        return all(event.is_set() for event in self._synced.values())

    def stop(self) -> None:
        self._stop.set()
        for w in self._watches:
            w.stop()

    def objects(self, kind: str) -> list[Obj]:
        with self._lock:
            return list(self._objects[kind].values())

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self._objects[kind].get(f"{namespace}/{name}")

    def snapshot(self) -> Snapshot:
        with self._lock:
            items = [obj for objs in self._objects.values() for obj in objs.values()]
        return snapshot_from_objects(items, source="cluster")

    def _run(self, kind: str) -> None:
        list_func = self._lists[kind]
        while not self._stop.is_set():
            try:
                version = self._relist(kind, list_func)
                # Events stay JSON (deserialize=False); a return type given skips the client's
                # model lookup, which fails for ResourceClaims (their model has another name).
                w = watch.Watch(return_type=dict)
                self._watches.append(w)
                for event in w.stream(
                    list_func,
                    resource_version=version,
                    deserialize=False,
                    allow_watch_bookmarks=True,
                ):
                    if self._stop.is_set():
                        return
                    self._apply(kind, event)
            except ApiException as exc:
                if exc.status == 404:
                    self._not_served(kind)
                    self._stop.wait(UNSERVED_RETRY_SECONDS)
                elif exc.status != 410:
                    log.warning("watch %s failed: %s", kind, exc.reason)
                    self._stop.wait(1.0)
            except Exception as exc:  # the connection dropped: re-list and watch again
                if self._stop.is_set():
                    return  # stop() closed it: nothing to report
                log.warning("watch %s interrupted: %s", kind, exc)
                self._stop.wait(1.0)

    def unserved(self) -> list[str]:
        """The kinds the cluster does not serve (read as none)."""
        with self._lock:
            return sorted(self._unserved)

    def _not_served(self, kind: str) -> None:
        with self._lock:
            gone = list(self._objects[kind].values())  # (its API removed since it was listed)
            if gone:
                self._objects[kind] = {}
                self.generation += 1
            first = kind not in self._unserved
            self._unserved.add(kind)
        for obj in gone:
            for listener in self._listeners:
                listener("DELETED", kind, obj)
        if first:
            log.warning(
                "%s: not served by this cluster (404); read as none, listed again every %.0fs",
                kind,
                UNSERVED_RETRY_SECONDS,
            )
        self._synced[kind].set()

    def _relist(self, kind: str, list_func: Callable[..., Any]) -> str:
        response = list_func(_preload_content=False)
        body = json.loads(response.data)
        with self._lock:
            self._objects[kind] = {}
            for item in body.get("items", []):
                item.setdefault("kind", kind)
                self._objects[kind][_key(item)] = item
            self.generation += 1
            self._unserved.discard(kind)
        self._synced[kind].set()
        return str(body["metadata"]["resourceVersion"])

    def _apply(self, kind: str, event: dict[str, Any]) -> None:
        etype = event.get("type")
        # Undeserialized watch events carry the object under "object" (plain JSON).
        obj = event.get("raw_object") or event.get("object") or {}
        if isinstance(obj, str):
            obj = json.loads(obj)
        if etype == "BOOKMARK" or not (obj.get("metadata") or {}).get("name"):
            return
        if etype == "ERROR":
            raise ApiException(status=(obj or {}).get("code", 500), reason=str(obj))
        obj.setdefault("kind", kind)
        with self._lock:
            if etype == "DELETED":
                self._objects[kind].pop(_key(obj), None)
            else:
                self._objects[kind][_key(obj)] = obj
            self.generation += 1
        for listener in self._listeners:
            listener(str(etype), kind, obj)
