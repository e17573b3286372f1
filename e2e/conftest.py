"""One real local cluster per test session (etcd, kube-apiserver, controller-manager,
kube-scheduler with the dunnage extender, kwok). Missing binaries fail loudly: `make test-e2e`
builds them first; nothing here is ever skipped."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dunnage.devcluster.cluster import DevCluster, missing_binaries
from dunnage.devcluster.cluster import wait_for as wait_for  # for the tests


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    missing = missing_binaries()
    if missing:
        pytest.fail(f"Kubernetes binaries missing ({', '.join(missing)}): run `make binaries`")
    dev = DevCluster(tmp_path_factory.mktemp("cluster"))
    dev.up(nodes=0)
    try:
        yield dev
    finally:
        dev.down()


@pytest.fixture
def namespace(cluster: DevCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (a long name cut short, with a digest
    of it: the cases of a parametrised test differ at the end)."""
    full = request.node.name.lower().replace("_", "-")
    name = "t-" + full[:40].strip("-")
    if len(full) > 40:
        name += "-" + hashlib.sha1(full.encode()).hexdigest()[:6]
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def get_json(cluster: DevCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def lease_holder(cluster: DevCluster, namespace: str, lease: str) -> str:
    """The Lease's holderIdentity ("" when it has none or does not exist)."""
    jsonpath = "jsonpath={.spec.holderIdentity}"
    args = ("get", "lease", lease, "-n", namespace, "--ignore-not-found", "-o", jsonpath)
    return str(cluster.kubectl(*args).stdout.strip())


# kopf's "[2026-12-05 10:16:24,908] ..." and logging's "2026-12-05 10:25:07,946 ..."
HTTP_403 = re.compile(r"(?<![\d.])403(?!\d)")
TIMESTAMP = re.compile(r"^\[?\d{4}-\d\d-\d\d[ T][\d:.,]+\]?\s*")


def rbac_denials(log: str) -> list[str]:
    """The messages of an operator's or extender's log that report an RBAC denial. They also
    see other tests' namespaces, and writes into a namespace being deleted get a 403 that says
    so (NamespaceTerminating), not RBAC's; timestamps are cut off first (their milliseconds can
    read 403), and 403 counts only as a number of its own (a port such as 40331 is none)."""
    messages = [TIMESTAMP.sub("", line) for line in log.splitlines()]
    return [
        m
        for m in messages
        if (HTTP_403.search(m) or "orbidden" in m) and "being terminated" not in m
    ]


def scrape(port: int, name: str) -> float:
    """One unlabelled (or fully labelled) sample from a local /metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported on port {port}")


def pods_by_name(cluster: DevCluster, namespace: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in get_json(cluster, "pods", "-n", namespace)["items"]}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def helm(cluster: DevCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(cluster.bin / "helm"), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=cluster.env(),
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed: {done.stderr}")
    return done


def render_chart(
    cluster: DevCluster, chart: str, version: str, *settings: str
) -> list[dict[str, Any]]:
    """The chart's objects as `helm template` renders them with these `--set` values."""
    args = [arg for setting in settings for arg in ("--set", setting)]
    rendered = helm(cluster, "template", "t", chart, f"--kube-version={version}", *args).stdout
    return [d for d in yaml.safe_load_all(rendered) if d]
