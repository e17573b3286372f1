"""A real Prometheus as a local process, for the e2e tests and the benchmarks that read
metrics the way the operator does. The binary comes from Debian's package when missing
(``prometheus.sh`` beside this file)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from dunnage.devcluster.cluster import free_port, wait_for

INSTALL_SCRIPT = Path(__file__).resolve().parent / "prometheus.sh"


def prometheus_binary(tool: str = "prometheus") -> str:
    """The path of Prometheus (or its ``promtool``), installed first if missing; RuntimeError
    naming the script and its error when that fails."""
    done = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False
    )
    path = shutil.which(tool)
    if done.returncode != 0 or path is None:
        raise RuntimeError(f"cannot get {tool} ({INSTALL_SCRIPT}): {done.stderr.strip()}")
    return path


@contextlib.contextmanager
def running_prometheus(config: dict[str, Any], directory: Path) -> Iterator[str]:
    """A real Prometheus with this configuration (its files and log in ``directory``),
    stopped on exit; yields its URL once it is ready."""
    binary = prometheus_binary()
    port = free_port()
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    with (directory / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_ok(f"{url}/-/ready"), timeout=30, what="Prometheus ready")
        yield url
    finally:
        stop_process(process)


def prometheus_api(url: str, path: str, **params: str) -> Any:
    """The ``data`` of a Prometheus HTTP API answer, e.g. ``prometheus_api(url, "query",
    query="up")``."""
    address = f"{url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(address, timeout=5) as response:
        return json.loads(response.read())["data"]


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
