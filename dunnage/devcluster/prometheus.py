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
def running_prometheus(
    config: dict[str, Any], directory: Path, *, tls: bool = False
) -> Iterator[str]:
    """A real Prometheus with this configuration (its files and log in ``directory``),
    stopped on exit; yields its URL once it is ready. With ``tls`` it serves HTTPS with a
    self-signed certificate for 127.0.0.1, ``directory / "tls.crt"``, which clients must
    trust (``SSL_CERT_FILE``)."""
    binary = prometheus_binary()
    port = free_port()
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    flags = []
    if tls:
        certificate, key = directory / "tls.crt", directory / "tls.key"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=prometheus",
                "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", str(key), "-out", str(certificate),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        web = {"tls_server_config": {"cert_file": str(certificate), "key_file": str(key)}}
        (directory / "web.yml").write_text(yaml.safe_dump(web))
        flags.append(f"--web.config.file={directory / 'web.yml'}")
    with (directory / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                *flags,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
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
