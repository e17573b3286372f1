"""`dunnage operator run` and `dunnage operator render`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import threading
import urllib.parse
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dunnage.cluster import crds
from dunnage.cluster.connect import load_client_configuration
from dunnage.cluster.leadership import (
    ElectionSettings,
    Leadership,
    add_election_arguments,
    election_settings,
)
from dunnage.errors import InputError

log = logging.getLogger(__name__)


def add_commands(subparsers: Any) -> None:
    operator = subparsers.add_parser(
        "operator",
        help="the LLM-serving operator (ModelService custom resources)",
        description="The kopf operator that runs ModelServices as Deployments, Services, PDBs.",
    )
    verbs = operator.add_subparsers(dest="operator_command", metavar="COMMAND", required=True)
    run = verbs.add_parser(
        "run",
        help="run the operator",
        description=(
            "Watch ModelServices (all namespaces unless --namespace is given) and reconcile them. "
            "Without --kubeconfig: the in-cluster service account, else $KUBECONFIG or "
            "~/.kube/config."
        ),
    )
    run.add_argument("--kubeconfig", default=None, help="kubeconfig of the cluster")
    run.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="serve only this namespace (repeatable; default: all namespaces)",
    )
    run.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        metavar="URL",
        help="kopf's liveness endpoint (default http://0.0.0.0:8080/healthz; 'none' for off)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics on this port (default 0: off)",
    )
    run.add_argument(
        "--peering",
        default=None,
        metavar="NAME",
        help=(
            "kopf peering object (KopfPeering/ClusterKopfPeering CRDs needed): among operators "
            "of one peering only the highest --priority works. Default: standalone"
        ),
    )
    run.add_argument("--priority", type=int, default=0, help="peering priority (default 0)")
    run.add_argument("--workers", type=int, default=16, help="handler threads (default 16)")
    add_election_arguments(
        run,
        lease="dunnage-operator",
        acts="runs the handlers; other replicas wait, answering only their liveness probe",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=run_operator, exit_after_shutdown=True)

    render = verbs.add_parser(
        "render",
        help="print the objects a ModelService turns into",
        description="Render the desired Deployments, Services and PDBs of ModelService YAML.",
    )
    render.add_argument("-f", "--file", required=True, help="ModelService YAML ('-' for stdin)")
    render.set_defaults(func=run_render)


def connection_info(configuration: Any) -> Any:
    """kopf credentials from a loaded client configuration (as kopf's own client login does)."""
    import kopf

    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (
        (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    )
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def run_operator(args: argparse.Namespace) -> int:
    import kopf
    from kubernetes import client
    from prometheus_client import start_http_server

    from dunnage.operator import handlers
    from dunnage.operator.apply import KubeApi

    if not 0 <= args.metrics_port <= 65535:
        raise InputError("must be a port number (0..65535)", obj="--metrics-port")
    if args.workers < 1:
        raise InputError("must be at least 1", obj="--workers")
    liveness = None if args.liveness.lower() == "none" else args.liveness
    if liveness and not liveness.startswith(("http://", "https://")):
        raise InputError("must be an http:// URL or 'none'", obj="--liveness")
    election = election_settings(args)  # checked before connecting
    configuration = load_client_configuration(args.kubeconfig)
    kopf.configure(verbose=args.verbose, log_prefix=True)
    if not args.verbose:
        # kopf logs every successful handler call at INFO; the handlers log what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if not configuration.verify_ssl:
        log.warning("TLS verification is off for %s (kubeconfig says so)", configuration.host)
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")

    # One pooled connection per handler thread: a discarded connection costs a TLS handshake.
    configuration.connection_pool_maxsize = args.workers + 4
    namespaces = list(dict.fromkeys(args.namespace))
    checks = client.ApiClient(configuration)
    check_access(checks, namespaces, peering=args.peering is not None)
    crds.check(checks, crds.OPERATOR_CRDS, "operator")
    runtime = handlers.Runtime(KubeApi(client.ApiClient(configuration)))
    handlers.install(runtime)
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=runtime.metrics_registry)

    @kopf.on.login(registry=handlers.REGISTRY)
    def _login(**_: Any) -> Any:
        return connection_info(configuration)

    settings = kopf.OperatorSettings()
    settings.posting.level = logging.WARNING  # Events for problems, not for every handler run
    settings.posting.reporting_component = "dunnage-operator"
    settings.execution.max_workers = args.workers
    runtime.executor = settings.execution.executor  # the async timers' ticks share its bound
    settings.scanning.disabled = True  # CRDs are installed first; no namespace/CRD watch needed
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=handlers.ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=handlers.ANNOTATION_PREFIX
    )
    settings.persistence.finalizer = handlers.FINALIZER
    # kopf waits this long for the watch to show its own annotation patch before it trusts a
    # newer event; under load the default 5 s runs out and a creation is handled twice.
    settings.persistence.consistency_timeout = 30.0
    if election is not None:
        # A leader that dies keeps its entry in the peering object until the entry's lifetime
        # runs out, and its successor (same priority) pauses until then: let the entry live
        # about as long as the Lease, not kopf's 60 s (keep-alives come 5-10 s more often).
        settings.peering.lifetime = election.lease_duration
    log.info(
        "dunnage operator: %s, peering %s",
        f"namespaces {', '.join(namespaces)}" if namespaces else "all namespaces",
        args.peering or "off (standalone)",
    )
    # kopf waits for a threading.Event stop flag in an executor thread, which then keeps the
    # process from exiting on SIGTERM; a future of kopf's own loop needs no thread.
    loop = asyncio.new_event_loop()
    stop: asyncio.Future[None] = loop.create_future()
    lost = threading.Event()
    leadership = None
    if election is not None:
        leading = threading.Event()

        def raise_stop() -> None:
            if not stop.done():
                stop.set_result(None)

        def on_lost() -> None:
            runtime.leader.set(0)
            lost.set()  # kopf stops its handlers; the command exits 1
            loop.call_soon_threadsafe(raise_stop)

        leadership = Leadership(
            client.ApiClient(configuration),
            election,
            component="dunnage-operator",
            on_started=leading.set,
            on_lost=on_lost,
        )
        leadership.start()
        with standby_liveness(liveness):
            leading.wait()
    runtime.leader.set(1)
    try:
        kopf.run(
            loop=loop,
            registry=handlers.REGISTRY,
            settings=settings,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=args.priority,
            # kopf's Identity is a NewType of str that kopf does not export
            identity=peering_identity(election),  # type: ignore[arg-type]
            stop_flag=stop,
        )
    finally:
        if leadership is not None:
            leadership.release()
    if lost.is_set():
        log.error("exiting: a restart rejoins the election as a standby")
        return 1
    return 0


def check_access(api_client: Any, namespaces: list[str], *, peering: bool) -> None:
    """Ask the API server what the operator may do before kopf watches anything
    (:mod:`dunnage.cluster.access`): refuse to start without a permission it needs, and index
    HorizontalPodAutoscalers only when it may watch them. When the question itself fails, the
    operator starts as if everything were granted (kopf then retries what is refused)."""
    from dunnage.cluster import access
    from dunnage.operator import autoscaler

    needed = [*access.OPERATOR, *(access.peering_permissions(not namespaces) if peering else ())]
    missing = access.ask(api_client, needed, namespaces) or []
    missing += access.ask(api_client, access.OPERATOR_CLUSTER, []) or []
    access.refuse(missing, "operator")
    hpa_missing = access.ask(api_client, access.OPERATOR_HPA_WATCH, namespaces) or []
    if hpa_missing:
        log.warning(
            "%s; refused: %s",
            autoscaler.AUTOSCALERS_UNCHECKED,
            "; ".join(str(d) for d in hpa_missing),
        )
    else:
        autoscaler.watch_autoscalers()


def peering_identity(election: ElectionSettings | None) -> str | None:
    """The operator's name in kopf's peering object: its Lease identity under leader election
    (the same replica under one name in both), else the pod's name (``POD_NAME``), else None
    for kopf's own ``user@host``, which needs the user in /etc/passwd: a pod run as a uid the
    image does not know would crash there."""
    if election is not None:
        return election.identity
    return os.environ.get("POD_NAME") or None


@contextlib.contextmanager
def standby_liveness(url: str | None) -> Iterator[None]:
    """While a standby waits for the Lease, its liveness endpoint says it is alive (kopf serves
    it once the operator runs; the port is free again when this returns)."""
    if url is None:
        yield
        return
    parsed = urllib.parse.urlsplit(url)

    class Alive(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"standby: waiting for the Lease\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((parsed.hostname or "0.0.0.0", parsed.port or 80), Alive)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def run_render(args: argparse.Namespace) -> int:
    import yaml

    from dunnage.operator.render import render
    from dunnage.operator.spec import KIND, parse

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as exc:
        raise InputError(str(exc), obj=args.file) from exc
    try:
        documents = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise InputError(f"not YAML: {exc}", obj=args.file) from exc
    objects = []
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            continue
        doc.setdefault("metadata", {}).setdefault("uid", "<uid of the ModelService>")
        objects += render(parse(doc))
    if not objects:
        raise InputError(f"no {KIND} in the file", obj=args.file)
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0
