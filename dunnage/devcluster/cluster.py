"""A local Kubernetes control plane from real binaries, as plain processes on 127.0.0.1.

etcd, kube-apiserver (token auth, RBAC, Priority admission), kube-controller-manager,
kube-scheduler (registering the dunnage extender, ignorable) and kwok (fake nodes: Ready,
pods Running, deleted pods really deleted); unless bare, the dunnage extender and operator. Every process is recorded in ``DIR/pids`` so
``down`` stops exactly what ``up`` started; logs go to ``DIR/logs``. Readiness is polled
(``/readyz``, ``/healthz``, nodes Ready), never slept for.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dunnage.errors import InputError
from dunnage.scheduler_extender.nodestate import DEFAULT_GPU_RESOURCES

K8S_VERSION = "v1.37.2"  # keep in step with build.sh
CACHE = Path(os.environ.get("DUNNAGE_CACHE", Path.home() / ".cache" / "dunnage"))
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
CRD_DIR = Path(__file__).resolve().parents[2] / "manifests" / "crds"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# Order matters: started in this order, stopped in reverse.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "extender",
    "operator",
)


def gpu_packing_profile(scheduler_name: str, gpu_resources: Sequence[str]) -> dict[str, Any]:
    """A kube-scheduler profile that packs GPU pods: NodeResourcesFit, MostAllocated over the
    GPU resources only, scores a node by the share of its GPUs in use once the pod lands, so
    whole GPUs stay free together for large pods (kube-scheduler leaves out of the score any
    resource a pod does not request, so pods without GPUs are scored by the other plugins)."""
    return {
        "schedulerName": scheduler_name,
        "pluginConfig": [
            {
                "name": "NodeResourcesFit",
                "args": {
                    "scoringStrategy": {
                        "type": "MostAllocated",
                        "resources": [{"name": name, "weight": 1} for name in gpu_resources],
                    }
                },
            }
        ],
    }


def bin_dir(version: str = K8S_VERSION) -> Path:
    return CACHE / f"k8s-{version}" / "bin"


def missing_binaries(directory: Path | None = None) -> list[str]:
    directory = directory or bin_dir()
    return [b for b in BINARIES if not os.access(directory / b, os.X_OK)]


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class NodeSpec:
    """A kwok node: capacity and labels."""

    name: str
    cpu: str = "32"
    memory: str = "256Gi"
    gpus: int = 8
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # other resources, e.g. rdma/ib

    def to_object(self) -> dict[str, Any]:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods), **self.extra}
        labels = {"type": "kwok", "kubernetes.io/hostname": self.name, **self.labels}
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
            labels[GPU_PRODUCT_LABEL] = self.gpu_product
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": {KWOK_ANNOTATION: "fake"},
                "labels": labels,
            },
            "status": {"capacity": capacity, "allocatable": capacity},
        }


class DevCluster:
    """One local cluster living in ``directory``."""

    def __init__(self, directory: str | Path, binaries: Path | None = None) -> None:
        self.dir = Path(directory).resolve()
        self.bin = binaries or bin_dir()
        self.logs = self.dir / "logs"
        self.pids = self.dir / "pids"
        self.kubeconfig = self.dir / "kubeconfig"
        self.state_file = self.dir / "cluster.json"

    # --- state ---------------------------------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        if not self.state_file.exists():
            return {}
        return dict(json.loads(self.state_file.read_text()))

    @property
    def ports(self) -> dict[str, int]:
        return dict(self.state.get("ports", {}))

    @property
    def extender_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['extender']}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin}:{os.environ['PATH']}",
        }

    # --- up / down -----------------------------------------------------------------------

    def up(
        self,
        *,
        nodes: int = 4,
        gpus_per_node: int = 8,
        bare: bool = False,
        consult_every_pod: bool = False,
        timeout: float = 180.0,
    ) -> None:
        """Start the cluster; with ``consult_every_pod`` kube-scheduler consults the extender
        for every pod (as the chart's ``scheduler.extender.consultEveryPod``), else for pods
        asking GPUs as extended resources."""
        missing = missing_binaries(self.bin)
        if missing:
            raise InputError(
                f"missing binaries {', '.join(missing)} in {self.bin}; build them with "
                "`make binaries` (dunnage/devcluster/build.sh)"
            )
        if self.running():
            raise InputError(
                f"a cluster is already running in {self.dir}; `dunnage cluster down` first"
            )
        # A new cluster each time: the objects of one brought down before are not kept (its
        # nodes would clash with the new ones, its tokens were signed by other keys).
        shutil.rmtree(self.dir / "etcd-data", ignore_errors=True)
        for d in (self.logs, self.pids, self.dir / "pki"):
            d.mkdir(parents=True, exist_ok=True)
        ports = {
            name: free_port()
            for name in (
                "etcd",
                "etcd-peer",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kwok",
                "extender",
                "operator",
                "operator-metrics",
            )
        }
        token = secrets.token_hex(16)
        self.state_file.write_text(json.dumps({"ports": ports, "token": token, "bare": bare}))
        deadline = time.monotonic() + timeout
        try:
            self._write_credentials(token)
            self._write_kubeconfig(ports["kube-apiserver"], token)
            self._start_etcd(ports)
            self._wait_http(f"http://127.0.0.1:{ports['etcd']}/health", deadline, "etcd")
            self._start_apiserver(ports)
            self._wait_http(
                f"https://127.0.0.1:{ports['kube-apiserver']}/readyz",
                deadline,
                "kube-apiserver",
                token=token,
                ca=self.ca_file,
            )
            self._start_controller_manager(ports)
            self._write_scheduler_config(ports, consult_every_pod)
            self.start_scheduler(wait=False)
            self._start(
                "kwok",
                [
                    str(self.bin / "kwok"),
                    f"--kubeconfig={self.kubeconfig}",
                    "--manage-all-nodes=false",
                    f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                    f"--server-address=127.0.0.1:{ports['kwok']}",
                    "--node-lease-duration-seconds=40",
                    f"--config={self.dir / 'kwok.yaml'}",
                ],
                before=lambda: (self.dir / "kwok.yaml").write_text(""),
            )
            if not bare:
                self.install_crds()
                self.start_extender()
                self.start_operator()
            for component in ("kube-controller-manager", "kube-scheduler"):
                self._wait_http(
                    f"https://127.0.0.1:{ports[component]}/healthz", deadline, component
                )
            self._wait_default_service_account(deadline)
            if nodes:
                self.create_nodes(
                    [NodeSpec(f"kwok-node-{i}", gpus=gpus_per_node) for i in range(nodes)],
                    timeout=max(5.0, deadline - time.monotonic()),
                )
        except BaseException:
            self.down()
            raise

    def install_crds(self) -> None:
        """dunnage's CustomResourceDefinitions (manifests/crds), established before use."""
        crds = sorted(CRD_DIR.glob("*.yaml"))
        if not crds:
            return
        self.kubectl("apply", *(arg for crd in crds for arg in ("-f", str(crd))))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *(arg for crd in crds for arg in ("-f", str(crd))),
        )

    def start_scheduler(self, wait: bool = True) -> None:
        """kube-scheduler (with the extender registered) as a process of this cluster."""
        port = self.ports["kube-scheduler"]
        self._start(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                f"--config={self.dir / 'scheduler.yaml'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
            ],
        )
        if wait:
            url = f"https://127.0.0.1:{port}/healthz"
            self._wait_http(url, time.monotonic() + 60, "kube-scheduler")

    def start_controller_manager(self) -> None:
        """kube-controller-manager as a process of this cluster (again, once a test stopped
        it)."""
        port = self.ports["kube-controller-manager"]
        self._start_controller_manager(self.ports)
        url = f"https://127.0.0.1:{port}/healthz"
        self._wait_http(url, time.monotonic() + 60, "kube-controller-manager")

    def start_extender(self) -> None:
        """The dunnage extender (with the fallback planner) as a process of this cluster."""
        port = self.ports["extender"]
        self._start(
            "extender",
            [
                sys.executable,
                "-m",
                "dunnage.cli",
                "extender",
                "serve",
                f"--port={port}",
                f"--kubeconfig={self.kubeconfig}",
            ],
        )
        self._wait_http(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 60, "extender")

    def start_operator(self) -> None:
        """The dunnage operator (ModelServices, all namespaces) as a process of this cluster."""
        port = self.ports["operator"]
        # A cluster brought up before the operator had a metrics port has none in its state.
        metrics = self.ports.get("operator-metrics")
        self._start(
            "operator",
            [
                sys.executable,
                "-m",
                "dunnage.cli",
                "operator",
                "run",
                f"--kubeconfig={self.kubeconfig}",
                f"--liveness=http://127.0.0.1:{port}/healthz",
                *([f"--metrics-port={metrics}"] if metrics else []),
            ],
        )
        self._wait_http(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 60, "operator")

    def stop_component(self, name: str, sig: int = signal.SIGTERM) -> None:
        pid_file = self.pids / f"{name}.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text())
        _stop_process(pid, sig)
        pid_file.unlink(missing_ok=True)

    def running(self) -> list[str]:
        out = []
        for name in COMPONENTS:
            pid_file = self.pids / f"{name}.pid"
            if pid_file.exists() and _alive(int(pid_file.read_text())):
                out.append(name)
        return out

    def down(self) -> None:
        """Stop every recorded process: SIGTERM to all at once, then wait (SIGKILL stragglers)."""
        pids = {}
        for name in reversed(COMPONENTS):
            pid_file = self.pids / f"{name}.pid"
            if pid_file.exists():
                pids[name] = int(pid_file.read_text())
                _signal_group(pids[name], signal.SIGTERM)
        for name, pid in pids.items():
            _stop_process(pid, signal.SIGTERM)
            (self.pids / f"{name}.pid").unlink(missing_ok=True)

    # --- processes -----------------------------------------------------------------------

    def _start(self, name: str, argv: Sequence[str], before: Any = None) -> None:
        if before is not None:
            before()
        with (self.logs / f"{name}.log").open("ab") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                env=self.env(),
                start_new_session=True,  # its own process group: down() stops children too
            )
        (self.pids / f"{name}.pid").write_text(str(process.pid))

    def _start_etcd(self, ports: dict[str, int]) -> None:
        self._start(
            "etcd",
            [
                str(self.bin / "etcd"),
                f"--data-dir={self.dir / 'etcd-data'}",
                f"--listen-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{ports['etcd-peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd-peer']}",
                f"--initial-cluster=default=http://127.0.0.1:{ports['etcd-peer']}",
                "--quota-backend-bytes=4294967296",
                "--unsafe-no-fsync",  # a throw-away test cluster: speed over durability
            ],
        )

    def _start_apiserver(self, ports: dict[str, int]) -> None:
        pki = self.dir / "pki"
        self._start(
            "kube-apiserver",
            [
                str(self.bin / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['kube-apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--enable-admission-plugins=Priority,NamespaceLifecycle,ServiceAccount,DefaultTolerationSeconds",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                "--profiling=false",
                "--endpoint-reconciler-type=none",  # the loopback address cannot be an endpoint
            ],
        )

    def _start_controller_manager(self, ports: dict[str, int]) -> None:
        self._start(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kube-controller-manager']}",
                f"--service-account-private-key-file={self.dir / 'pki' / 'sa.key'}",
                "--use-service-account-credentials=false",
                "--controllers=*,-node-ipam-controller",
                "--concurrent-gc-syncs=10",
            ],
        )

    @property
    def ca_file(self) -> Path:
        """The certificate authority that signed the API server's serving certificate."""
        return self.dir / "pki" / "ca.crt"

    def _write_credentials(self, token: str) -> None:
        pki = self.dir / "pki"
        (pki / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
        self._write_serving_certificate(pki)
        subprocess.run(
            ["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["openssl", "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")],
            check=True,
            capture_output=True,
        )

    def _write_serving_certificate(self, pki: Path) -> None:
        """A CA of this cluster's own and the API server's certificate signed by it, so every
        client verifies the server (the names are those an in-cluster client dials)."""

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        openssl(
            "req", "-x509", *key, "-days", "3650", "-subj", "/CN=dunnage-local-ca",
            "-keyout", str(pki / "ca.key"), "-out", str(self.ca_file),
        )  # fmt: skip
        openssl(
            "req", *key, "-subj", "/CN=kube-apiserver",
            "-keyout", str(pki / "apiserver.key"), "-out", str(pki / "apiserver.csr"),
        )  # fmt: skip
        names = "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes," + (
            "DNS:kubernetes.default,DNS:kubernetes.default.svc"
        )
        (pki / "apiserver.ext").write_text(names + "\n")
        openssl(
            "x509", "-req", "-in", str(pki / "apiserver.csr"), "-days", "3650",
            "-CA", str(self.ca_file), "-CAkey", str(pki / "ca.key"), "-CAcreateserial",
            "-extfile", str(pki / "apiserver.ext"), "-out", str(pki / "apiserver.crt"),
        )  # fmt: skip

    def _write_kubeconfig(self, port: int, token: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "dunnage",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority-data": base64.b64encode(
                            self.ca_file.read_bytes()
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": "dunnage", "context": {"cluster": "dunnage", "user": "admin"}}],
            "current-context": "dunnage",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def consult_every_pod(self, every: bool) -> None:
        """Restart kube-scheduler consulting the extender for every pod (``every``), or only
        for pods asking GPUs as extended resources (as ``up`` starts it by default)."""
        self.stop_component("kube-scheduler")
        self._write_scheduler_config(self.ports, every)
        self.start_scheduler()

    def _write_scheduler_config(self, ports: dict[str, int], consult_every_pod: bool) -> None:
        extender: dict[str, Any] = {
            "urlPrefix": f"http://127.0.0.1:{ports['extender']}",
            "filterVerb": "filter",
            "preemptVerb": "preempt",
            "enableHTTPS": False,
            "nodeCacheCapable": True,
            "ignorable": True,
            "httpTimeout": "5s",
        }
        if not consult_every_pod:  # consulted only for pods asking one of these
            extender["managedResources"] = [
                {"name": name, "ignoredByScheduler": False} for name in DEFAULT_GPU_RESOURCES
            ]
        config = {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig), "qps": 500, "burst": 1000},
            "leaderElection": {"leaderElect": False},
            "profiles": [
                gpu_packing_profile("default-scheduler", DEFAULT_GPU_RESOURCES),
                gpu_packing_profile("dunnage-scheduler", DEFAULT_GPU_RESOURCES),
            ],
            # No prioritizeVerb: the profiles pack GPUs in-tree, from kube-scheduler's own cache
            # (the extender's lags the bindings; docs/extender.md, "Registering it").
            "extenders": [extender],
        }
        (self.dir / "scheduler.yaml").write_text(yaml.safe_dump(config))

    # --- readiness -----------------------------------------------------------------------

    def _wait_http(
        self,
        url: str,
        deadline: float,
        what: str,
        *,
        token: str | None = None,
        ca: Path | None = None,
    ) -> None:
        # kube-scheduler's and kube-controller-manager's health ports serve certificates they
        # sign themselves at start (no CA to trust); only their /healthz is read there.
        context = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
        request = urllib.request.Request(url)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        last = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(request, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except Exception as exc:  # not up yet
                last = str(exc)
            self._check_alive(what)
            time.sleep(0.1)
        raise TimeoutError(f"{what} not ready at {url}: {last}; see {self.logs / (what + '.log')}")

    def _check_alive(self, what: str) -> None:
        pid_file = self.pids / f"{what}.pid"
        if pid_file.exists() and not _alive(int(pid_file.read_text())):
            tail = (self.logs / f"{what}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{what} exited during start-up:\n{tail}")

    def _wait_default_service_account(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            done = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
            if done.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError("the default ServiceAccount never appeared (kube-controller-manager)")

    # --- using the cluster ---------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def apply(self, objects: Iterable[dict[str, Any]], *extra: str) -> None:
        items = list(objects)
        if items:
            self.kubectl("apply", "-f", "-", *extra, input=yaml.safe_dump_all(items), timeout=300)

    def create_nodes(self, specs: Sequence[NodeSpec], timeout: float = 120.0) -> None:
        """Create kwok nodes and wait until every one of them is Ready."""
        for start in range(0, len(specs), 500):
            self.kubectl(
                "create",
                "-f",
                "-",
                input=yaml.safe_dump_all([s.to_object() for s in specs[start : start + 500]]),
                timeout=300,
            )
        self.wait_nodes_ready([s.name for s in specs], timeout)

    def wait_nodes_ready(self, names: Sequence[str], timeout: float = 120.0) -> None:
        wanted = set(names)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listing = json.loads(self.kubectl("get", "nodes", "-o", "json").stdout)
            # Ready, and the node lifecycle controller has lifted its not-ready taint (until
            # then the scheduler rejects the node, and may preempt elsewhere instead).
            ready = {
                n["metadata"]["name"]
                for n in listing["items"]
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions", [])
                )
                and not any(
                    t.get("key", "").startswith("node.kubernetes.io/")
                    for t in n.get("spec", {}).get("taints", [])
                )
            }
            if wanted <= ready:
                return
            time.sleep(0.5)
        raise TimeoutError(f"nodes not Ready after {timeout:.0f}s: {sorted(wanted - ready)[:5]}")

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _stop_process(pid: int, sig: int, grace: float = 5.0) -> None:
    _signal_group(pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        while _alive(pid):
            time.sleep(0.05)
