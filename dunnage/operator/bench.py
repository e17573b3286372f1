"""How fast the operator turns a burst of ModelServices into Deployments and Ready services.

``measure`` creates ``count`` ModelServices as fast as the API accepts them and, from watches
opened before the first create, times for each one:

- apply -> all Deployments created: from the moment its create request is sent until the watch
  delivers the last of its role Deployments;
- apply -> Ready: until its status says ``Ready=True`` (pods scheduled by kube-scheduler onto kwok
  nodes and reported ready).

Clocks are the client's (``time.monotonic``); the figures include the watch delivery latency.
Used by ``bench/bench_operator.py`` and by the e2e suite (``e2e/test_operator.py``).
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dunnage.operator.spec import GROUP, MODEL_SERVICE_LABEL, PLURAL, VERSION

if TYPE_CHECKING:
    from dunnage.devcluster.cluster import DevCluster

POOL_LABEL = "dunnage.io/pool"


def model_service(
    name: str, pool: str, *, gpus: int = 1, disaggregated: bool = True, replicas: int = 1
) -> dict[str, Any]:
    role = {"replicas": replicas, "maxReplicas": 4}
    roles = {"prefill": role, "decode": dict(role)} if disaggregated else {"serve": role}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "bench", "uri": "hf://org/bench-model"},
            "engine": {"image": "vllm/vllm-openai:v0.11.0"},
            "resources": {"gpus": gpus, "cpu": "1", "memory": "4Gi"},
            "roles": roles,
            "nodeSelector": {POOL_LABEL: pool},
        },
    }


T = TypeVar("T")


def on_cluster(kubeconfig: str | None, run: Callable[[DevCluster], T]) -> T:
    """``run(cluster)`` on the running local cluster of ``kubeconfig``, or else on a fresh one
    (without nodes) in a temporary directory, torn down afterwards."""
    from dunnage.devcluster.cluster import DevCluster

    if kubeconfig:
        cluster = DevCluster(Path(kubeconfig).resolve().parent)
        cluster.kubeconfig = Path(kubeconfig).resolve()
        return run(cluster)
    with tempfile.TemporaryDirectory(prefix="dunnage-bench-") as tmp:
        cluster = DevCluster(tmp)
        cluster.up(nodes=0)
        try:
            return run(cluster)
        finally:
            cluster.down()


def apiserver_requests(cluster: DevCluster, resources: Iterable[str]) -> dict[str, float]:
    """The kube-apiserver's ``apiserver_request_total`` so far for ``resources``, summed over
    scopes, by "VERB resource[/subresource]", and over the codes of success; a refused request
    counts under "VERB resource[/subresource] CODE" (e.g. a 409)."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = set(resources)
    counts: dict[str, float] = {}
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for s in family.samples:
            resource = s.labels.get("resource", "")
            if s.name != "apiserver_request_total" or resource not in wanted:
                continue
            sub = s.labels.get("subresource", "")
            key = f"{s.labels.get('verb', '')} {resource}{'/' + sub if sub else ''}"
            code = s.labels.get("code", "")
            if not code.startswith(("1", "2", "3")):
                key += f" {code}"
            counts[key] = counts.get(key, 0.0) + s.value
    return counts


def cpu_seconds(cluster: DevCluster, components: Iterable[str]) -> dict[str, float]:
    """User + system CPU seconds so far of each of ``components`` that runs (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name in components:
        try:
            pid = int((cluster.pids / f"{name}.pid").read_text())
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue
        out[name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def resident_mb(cluster: DevCluster, component: str) -> float | None:
    """The component's resident memory now (VmRSS, MB), None when it does not run."""
    try:
        pid = int((cluster.pids / f"{component}.pid").read_text())
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return None
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(kib * 1024 / 1e6, 1)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    if len(ordered) == 1:
        q = [ordered[0]] * 99
    else:
        q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50": round(q[49], 3),
        "p90": round(q[89], 3),
        "p99": round(q[98], 3),
        "max": round(ordered[-1], 3),
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


class _Watcher(threading.Thread):
    """Records when each object is first seen (ADDED) or first satisfies ``seen``."""

    def __init__(self, list_fn: Any, namespace: str, key: Any, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.list_fn = list_fn
        self.namespace = namespace
        self.key = key
        self.kwargs = kwargs
        self.first: dict[Any, float] = {}
        self.stop = threading.Event()
        self.started_watching = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from kubernetes import watch

        try:
            listing = self.list_fn(self.namespace, **self.kwargs)
            version = listing["metadata"]["resourceVersion"]
            self.started_watching.set()
            while not self.stop.is_set():
                w = watch.Watch()
                for event in w.stream(
                    self.list_fn,
                    self.namespace,
                    resource_version=version,
                    timeout_seconds=5,
                    **self.kwargs,
                ):
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    key = self.key(obj)
                    if key is not None and key not in self.first:
                        self.first[key] = time.monotonic()
                    if self.stop.is_set():
                        w.stop()
                        break
        except BaseException as exc:  # surfaced by measure()
            self.error = exc
            self.started_watching.set()


def _ready(obj: dict[str, Any]) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def measure(
    api_client: Any,
    namespace: str,
    count: int = 100,
    *,
    pool: str,
    gpus: int = 1,
    disaggregated: bool = True,
    replicas: int = 1,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Create ``count`` ModelServices in ``namespace`` (which must exist) and time them."""
    from kubernetes import client

    apps = client.AppsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    roles = 2 if disaggregated else 1

    def list_model_services(ns: str, **kw: Any) -> Any:
        return custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, **kw)

    deployments = _Watcher(
        _DictList(apps.list_namespaced_deployment, MODEL_SERVICE_LABEL),
        namespace,
        key=lambda o: (o["metadata"]["labels"][MODEL_SERVICE_LABEL], o["metadata"]["name"]),
    )
    ready = _Watcher(
        list_model_services,
        namespace,
        key=lambda o: o["metadata"]["name"] if _ready(o) else None,
    )
    for watcher in (deployments, ready):
        watcher.start()
        watcher.started_watching.wait(30)
        if watcher.error:
            raise watcher.error

    names = [f"bench-{i:03d}" for i in range(count)]
    applied: dict[str, float] = {}
    started = time.monotonic()
    for name in names:
        applied[name] = time.monotonic()
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            model_service(name, pool, gpus=gpus, disaggregated=disaggregated, replicas=replicas),
        )
    apply_seconds = time.monotonic() - started
    deadline = started + timeout
    while time.monotonic() < deadline and len(ready.first) < count:
        for watcher in (deployments, ready):
            if watcher.error:
                raise watcher.error
        time.sleep(0.2)
    for watcher in (deployments, ready):
        watcher.stop.set()

    created: dict[str, list[float]] = {}
    for (ms, _name), seen in deployments.first.items():
        created.setdefault(ms, []).append(seen)
    to_deployments = [
        max(times) - applied[ms] for ms, times in created.items() if len(times) == roles
    ]
    to_ready = [ready.first[n] - applied[n] for n in names if n in ready.first]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": count,
        "mode": "PrefillDecode" if disaggregated else "Serve",
        "deployments_per_model_service": roles,
        "replicas_per_role": replicas,
        "gpus_per_replica": gpus,
        "apply_burst_seconds": round(apply_seconds, 3),
        "all_deployments_created": len(to_deployments),
        "all_ready": len(to_ready),
        "apply_to_deployments_seconds": percentiles(to_deployments),
        "apply_to_ready_seconds": percentiles(to_ready),
        "wall_seconds_to_last_ready": round(
            max(ready.first.values(), default=started) - started, 3
        ),
        "machine": machine(),
    }


class _DictList:
    """A namespaced list function answering plain dicts. No return type in its signature or
    docstring, so ``kubernetes.watch`` leaves the events' objects as dicts too."""

    def __init__(self, fn: Any, selector: str) -> None:
        self.fn = fn
        self.selector = selector

    def __call__(self, namespace: str, **kwargs: Any) -> Any:
        import json

        kwargs.setdefault("label_selector", self.selector)
        if kwargs.get("watch"):
            return self.fn(namespace, **kwargs)
        return json.loads(self.fn(namespace, _preload_content=False, **kwargs).data)
