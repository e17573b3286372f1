"""The container image the chart runs, built by `make image` (image/build.sh, buildah, no daemon).

These machines reach Debian's mirror and PyPI but no container registry, so the base is made by
debootstrap (``BASE=debootstrap``; ``DUNNAGE_IMAGE_BASE`` overrides it where a registry is
reachable). The image's commands run with ``buildah run`` (chroot isolation, the host's
network), as the image's user: the solver container exactly as the chart renders it serves a
plan over gRPC; the operator and extender containers of the installed chart, with its
ServiceAccounts mounted as a kubelet would mount them, reconcile a ModelService and answer
kube-scheduler's filter call on the local cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tarfile
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dunnage.devcluster.cluster import K8S_VERSION, DevCluster, NodeSpec, bin_dir, free_port
from dunnage.operator.bench import POOL_LABEL
from dunnage.solver.plan import PlanStatus
from dunnage.solver.planner import solve
from dunnage.solver.service import SolverClient
from e2e.conftest import get_json, helm, lease_holder, rbac_denials, wait_for
from e2e.test_operator import model_service, wait_ready
from tests.test_solver_service import fragmented

REPO = Path(__file__).resolve().parents[1]
BUILDAH_ENV = {"STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}
TAG = "localhost/dunnage:e2e"


def buildah(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["buildah", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **BUILDAH_ENV},
    )
    if done.returncode != 0:
        pytest.fail(f"buildah {' '.join(args)} failed: {done.stderr}")
    return done


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("image") / "dunnage.oci.tar"
    env = {
        **os.environ,
        "BASE": os.environ.get("DUNNAGE_IMAGE_BASE", "debootstrap"),
        "TAG": TAG,
        "OUT": str(out),
    }
    done = subprocess.run(
        ["bash", str(REPO / "image" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
        cwd=REPO,
    )
    if done.returncode != 0:
        pytest.fail(f"image/build.sh failed ({done.returncode}): {done.stderr[-3000:]}")
    assert done.stdout.strip() == str(out)
    return out


@pytest.fixture
def container(archive: Path) -> Iterator[str]:
    name = f"dunnage-e2e-{uuid.uuid4().hex[:8]}"
    buildah("from", "--name", name, TAG)
    yield name
    buildah("rm", name)


def test_the_archive_is_the_tagged_image_and_runs_as_the_charts_user(
    archive: Path, container: str
) -> None:
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    (manifest,) = index["manifests"]
    assert manifest["annotations"]["org.opencontainers.image.ref.name"] == TAG
    config = json.loads(buildah("inspect", "--type", "image", TAG).stdout)["OCIv1"]["config"]
    chart = yaml.safe_load((REPO / "helm" / "dunnage" / "values.yaml").read_text())
    security = chart["podSecurityContext"]
    assert config["User"] == f"{security['runAsUser']}:{security['runAsGroup']}"
    assert config["Entrypoint"] == ["dunnage"]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert config["Labels"]["org.opencontainers.image.version"] == version
    ran = buildah("run", container, "--", "sh", "-c", "id -u; dunnage --help")
    uid, *usage = ran.stdout.splitlines()
    assert int(uid) == security["runAsUser"]
    for command in ("operator", "extender", "solver", "sim", "policy"):
        assert command in "\n".join(usage)
    # Everything the pods import is installed (the operator's kopf handlers, the extender's
    # election, the solver's CP-SAT), and nothing there is writable by the pods' user.
    ran = buildah(
        "run",
        container,
        "--",
        "python3",
        "-c",
        "import dunnage.operator.handlers, dunnage.cluster.leadership, dunnage.solver.service;"
        "from ortools.sat.python import cp_model; import os, sys;"
        "print(os.access(sys.prefix, os.W_OK), os.access(dunnage.__file__, os.W_OK))",
    )
    assert ran.stdout.split() == ["False", "False"]


def test_the_charts_solver_container_serves_plans_from_the_image(container: str) -> None:
    port = free_port()
    rendered = subprocess.run(
        [
            str(bin_dir() / "helm"),
            "template",
            "t",
            str(REPO / "helm" / "dunnage"),
            f"--kube-version={K8S_VERSION}",
            "--set",
            f"solver.port={port}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    (deployment,) = (
        d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "t-dunnage-solver"
    )
    (spec,) = deployment["spec"]["template"]["spec"]["containers"]
    server = subprocess.Popen(
        ["buildah", "run", container, "--", *spec["command"], *spec["args"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **BUILDAH_ENV},
        start_new_session=True,
    )
    try:
        snapshot = fragmented()
        with SolverClient(f"127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 60
            while not client.healthy():
                assert server.poll() is None, server.communicate()[0]
                assert time.monotonic() < deadline, "the solver in the image never got healthy"
                time.sleep(0.5)
            plan = client.plan(snapshot, 2.0, workers=1)
        assert plan.status is PlanStatus.IMPROVED
        assert [b.pod for b in plan.bindings] == ["ml/big"]
        assert plan.placed_after == solve(snapshot, time_limit=2.0, workers=1).placed_after
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


RELEASE, RELEASE_NS = "img", "img-system"


@pytest.fixture(scope="module")
def release(cluster: DevCluster) -> Iterator[dict[str, int]]:
    """The chart installed as `helm install` does (its pods never run: kwok nodes), on free
    ports (the image's processes share the host's network); yields those ports."""
    ports = {"operator.livenessPort": free_port(), "operator.metricsPort": free_port()}
    ports["extender.port"] = free_port()
    settings = [f"{key}={port}" for key, port in ports.items()]
    settings.append("operator.peering.name=image-e2e")
    helm(
        cluster,
        "install",
        RELEASE,
        str(REPO / "helm" / "dunnage"),
        "-n",
        RELEASE_NS,
        "--create-namespace",
        *(arg for setting in settings for arg in ("--set", setting)),
    )
    yield ports
    helm(cluster, "uninstall", RELEASE, "-n", RELEASE_NS, check=False)


def test_the_charts_operator_container_reconciles_in_cluster_from_the_image(
    cluster: DevCluster, container: str, release: dict[str, int], tmp_path: Path
) -> None:
    """The operator Deployment as the installed chart has it, run from the image (see
    :func:`_run_as_the_chart`), reconciles a ModelService and hands its Lease back on SIGTERM."""
    namespace = pool = "image-e2e"
    lease = f"{RELEASE}-dunnage-operator"
    cluster.create_nodes([NodeSpec(f"img-node-{i}", labels={POOL_LABEL: pool}) for i in range(2)])
    cluster.kubectl("create", "namespace", namespace)
    cluster.stop_component("operator")  # the session's own operator, paused meanwhile
    try:
        with _run_as_the_chart(cluster, container, "operator", tmp_path) as (operator, log):
            _wait_leading(cluster, operator, log, lease, "img-operator-0_")
            body = model_service("from-image", nodeSelector={POOL_LABEL: pool})
            cluster.apply([body], "-n", namespace)
            wait_ready(cluster, namespace, "from-image", timeout=90)
            denied = rbac_denials(log.read_text())
            assert not denied, "\n".join(denied)[-3000:]
            # kopf's peering names the replica as the Lease does (the pod's name and a suffix)
            peering = get_json(cluster, "clusterkopfpeering", "image-e2e").get("status") or {}
            assert [who for who in peering if who.startswith("img-operator-0_")], peering
            _stop_as_the_kubelet_does(operator, log)
            assert lease_holder(cluster, RELEASE_NS, lease) == ""
    finally:
        cluster.start_operator()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_charts_extender_container_answers_in_cluster_from_the_image(
    cluster: DevCluster, container: str, release: dict[str, int], tmp_path: Path
) -> None:
    """The extender Deployment as the installed chart has it, run from the image: it leads,
    turns ready once its watches synced, answers kube-scheduler's filter call, and hands its
    Lease back on SIGTERM."""
    lease = f"{RELEASE}-dunnage-extender"
    url = f"http://127.0.0.1:{release['extender.port']}"
    with _run_as_the_chart(cluster, container, "extender", tmp_path) as (extender, log):
        _wait_leading(cluster, extender, log, lease, "img-extender-0_")
        wait_for(lambda: _get(f"{url}/readyz") == 200, timeout=60, what="the extender ready")
        body = {
            "Pod": {"metadata": {"name": "p", "namespace": "default", "uid": "u"}, "spec": {}},
            "NodeNames": ["n1", "n2"],
        }
        request = urllib.request.Request(
            f"{url}/filter", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["NodeNames"] == ["n1", "n2"]  # nothing planned for it
        denied = rbac_denials(log.read_text())
        assert not denied, "\n".join(denied)[-3000:]
        _stop_as_the_kubelet_does(extender, log)
        assert lease_holder(cluster, RELEASE_NS, lease) == ""
        assert "interrupted" not in log.read_text()  # its own stop is no watch failure


@contextlib.contextmanager
def _run_as_the_chart(
    cluster: DevCluster, container: str, component: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The chart's Deployment ``img-dunnage-<component>`` run from the image as a kubelet
    would run its pod: its command, args and env (``POD_NAME`` = img-<component>-0), its
    ServiceAccount's token with the cluster's CA and the namespace at the in-cluster path, and
    the API server's Service address in the environment. Yields the process and its log."""
    deployment = get_json(cluster, "deployment", f"{RELEASE}-dunnage-{component}", "-n", RELEASE_NS)
    pod = deployment["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    account = tmp_path / f"{component}-serviceaccount"
    account.mkdir(mode=0o755)
    token = cluster.kubectl("create", "token", pod["serviceAccountName"], "-n", RELEASE_NS)
    (account / "token").write_text(token.stdout.strip())
    (account / "ca.crt").write_bytes(cluster.ca_file.read_bytes())
    (account / "namespace").write_text(RELEASE_NS)
    for path in account.iterdir():
        path.chmod(0o644)  # readable by the image's user, as the kubelet's fsGroup handling does
    env = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(cluster.ports["kube-apiserver"]),
    }
    for variable in spec.get("env") or []:  # the downward API: POD_NAME
        assert variable["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", variable
        env[variable["name"]] = f"img-{component}-0"
    log = tmp_path / f"{component}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                "buildah",
                "run",
                "--volume",
                # /var/run/secrets/... in the image: /var/run is a link to /run, which
                # buildah mounts afresh, so the volume goes to where the link leads
                f"{account}:/run/secrets/kubernetes.io/serviceaccount:ro",
                *(arg for name, value in env.items() for arg in ("--env", f"{name}={value}")),
                container,
                "--",
                *spec["command"],
                *spec["args"],
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **BUILDAH_ENV},
            start_new_session=True,
        )
    try:
        yield process, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _wait_leading(
    cluster: DevCluster, process: subprocess.Popen[bytes], log: Path, lease: str, holder: str
) -> None:
    wait_for(
        lambda: (
            process.poll() is not None
            or lease_holder(cluster, RELEASE_NS, lease).startswith(holder)
        ),
        timeout=60,
        what=f"{holder}* holding the chart's Lease {lease}",
    )
    assert process.poll() is None, log.read_text()[-3000:]


def _stop_as_the_kubelet_does(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM to the container's process, as the kubelet sends it (buildah itself would
    SIGKILL its child); it must exit 0."""
    os.kill(_contained(process.pid), signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log.read_text()[-3000:]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except OSError:
        return 0


def _contained(buildah_pid: int) -> int:
    """The process that ``buildah run`` (started in a session of its own) runs in the container:
    in its process group, below ``buildah-chroot-runtime`` and ``buildah-chroot-exec``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        group = int(stat.rsplit(")", 1)[1].split()[2])  # pgrp, after the command's name
        if group == buildah_pid and not command.startswith(b"buildah"):
            found.append(int(entry))
    (pid,) = found
    return pid
