"""Desired objects of a ModelService: pure functions of the parsed spec.

For each role ``r`` (``serve``, or ``prefill`` and ``decode``):

- Deployment ``<ms>-<r>``: the engine container (vLLM's OpenAI server; the image's entrypoint is
  ``vllm serve``), ``nvidia.com/gpu`` in both requests and limits, a toleration for the usual
  ``nvidia.com/gpu`` taint, ``/dev/shm`` in memory (NCCL), the PriorityClass, scheduler and node
  selector, tolerations, topology spread constraints and affinity of the ModelService and the
  role (a spread constraint or pod affinity term without a labelSelector counts the role's own
  pods). Rolling updates never surge (``maxSurge: 0``): a surge pod would need GPUs that a
  full cluster does not have. The progress deadline is the engine's startup timeout plus 10
  minutes for the image.
- Service ``<ms>-<r>`` selecting that role's pods; PodDisruptionBudget ``<ms>-<r>``
  (``maxUnavailable: 1``: drains and the fallback planner's evictions take one pod at a time).

Plus the front Service ``<ms>``, selecting the role that takes client traffic: ``serve``, or
``decode`` in P/D mode (the decode side pulls the KV cache from a prefill pod).

P/D flags (prefill and decode alike; NIXL is symmetric, the decode side pulls):
``--kv-transfer-config={"kv_connector":"<kvConnector>","kv_role":"kv_both"}`` and the NIXL side
channel on port 5600 (``VLLM_NIXL_SIDE_CHANNEL_HOST`` = the pod IP,
``VLLM_NIXL_SIDE_CHANNEL_PORT``). Every engine pod also gets ``DUNNAGE_MODEL_SERVICE`` and
``DUNNAGE_ROLE``; decode pods get ``DUNNAGE_PREFILL_SERVICE`` (host:port of the prefill Service)
for the router in front of them.

Every object carries the labels ``dunnage.io/model-service`` and ``dunnage.io/role`` (the front
Service: ``dunnage.io/role: front``) and a controller owner reference to the ModelService.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from dunnage.operator.spec import (
    API_VERSION,
    DECODE,
    GPU_RESOURCE,
    KIND,
    MODEL_SERVICE_LABEL,
    PREFERRED_TERMS,
    PREFILL,
    REQUIRED_TERMS,
    ROLE_LABEL,
    STARTUP_PROBE_PERIOD,
    ModelService,
    Role,
)

FIELD_MANAGER = "dunnage-operator"
# Takes over spec.replicas from the operator when an autoscaling policy owns the count, so that
# the operator can stop applying the field without the API server resetting it (the documented
# server-side-apply hand-over, as for a HorizontalPodAutoscaler).
HANDOVER_MANAGER = "dunnage-replicas-handover"
FRONT = "front"
NIXL_PORT = 5600
IMAGE_PULL_ALLOWANCE = 600  # seconds
ENGINE = "engine"

Object = dict[str, Any]


def labels(ms: ModelService, role: str) -> dict[str, str]:
    """The operator's labels (spec.OPERATOR_LABELS, which spec.podMetadata may not set)."""
    return {
        "app.kubernetes.io/name": ms.name,
        "app.kubernetes.io/component": role,
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        MODEL_SERVICE_LABEL: ms.name,
        ROLE_LABEL: role,
    }


def selector(ms: ModelService, role: str) -> dict[str, str]:
    return {MODEL_SERVICE_LABEL: ms.name, ROLE_LABEL: role}


def owner_reference(ms: ModelService) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ms.name,
        "uid": ms.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(ms: ModelService, name: str, role: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ms.namespace,
        "labels": labels(ms, role),
        "ownerReferences": [owner_reference(ms)],
    }


def model_path(ms: ModelService) -> str:
    """What the engine loads: the Hugging Face repo id, or the path inside the mounted claim."""
    if ms.model_uri.startswith("hf://"):
        return ms.model_uri.removeprefix("hf://")
    _claim, _, path = ms.model_uri.removeprefix("pvc://").partition("/")
    return f"/models/{path}".rstrip("/")


def pvc_claim(ms: ModelService) -> str | None:
    if not ms.model_uri.startswith("pvc://"):
        return None
    return ms.model_uri.removeprefix("pvc://").partition("/")[0]


def kv_transfer_config(ms: ModelService) -> str:
    return json.dumps(
        {"kv_connector": ms.kv_connector, "kv_role": "kv_both"}, separators=(",", ":")
    )


def engine_args(ms: ModelService, role: Role) -> list[str]:
    args = [model_path(ms), f"--served-model-name={ms.model_name}", f"--port={ms.port}"]
    if ms.disaggregated:
        args.append(f"--kv-transfer-config={kv_transfer_config(ms)}")
    return [*args, *ms.engine_args, *role.args]


def engine_env(ms: ModelService, role: Role) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "DUNNAGE_MODEL_SERVICE", "value": ms.name},
        {"name": "DUNNAGE_ROLE", "value": role.name},
    ]
    if ms.disaggregated:
        env += [
            {
                "name": "VLLM_NIXL_SIDE_CHANNEL_HOST",
                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
            },
            {"name": "VLLM_NIXL_SIDE_CHANNEL_PORT", "value": str(NIXL_PORT)},
        ]
    if role.name == DECODE:
        prefill = f"{ms.object_name(PREFILL)}.{ms.namespace}.svc:{ms.port}"
        env.append({"name": "DUNNAGE_PREFILL_SERVICE", "value": prefill})
    user = {e.name for e in ms.env}
    env = [e for e in env if e["name"] not in user]  # the user's value wins
    return env + [e.to_dict() for e in ms.env]


def resources(role: Role) -> dict[str, dict[str, Any]]:
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if role.resources.cpu is not None:
        requests["cpu"] = role.resources.cpu
    if role.resources.memory is not None:
        requests["memory"] = role.resources.memory
        limits["memory"] = role.resources.memory
    if role.resources.gpus:
        # Extended resources need request == limit; both are set so quota and the scheduler agree.
        requests[GPU_RESOURCE] = role.resources.gpus
        limits[GPU_RESOURCE] = role.resources.gpus
    for name, amount in role.resources.extra:
        requests[name] = limits[name] = amount
    out: dict[str, dict[str, Any]] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def affinity(ms: ModelService, role: Role) -> Object:
    """The role's affinity: its kinds (nodeAffinity, podAffinity, podAntiAffinity) over the
    ModelService's; a pod (anti-)affinity term without a labelSelector selects the role's own
    pods (in a pod, such a term selects none)."""
    merged: Object = copy.deepcopy({**ms.affinity, **role.affinity})
    for kind in ("podAffinity", "podAntiAffinity"):
        section = merged.get(kind) or {}
        terms = [
            *(section.get(REQUIRED_TERMS) or []),
            *(p["podAffinityTerm"] for p in section.get(PREFERRED_TERMS) or []),
        ]
        for term in terms:
            term.setdefault("labelSelector", {"matchLabels": selector(ms, role.name)})
    return merged


def pod_template(ms: ModelService, role: Role) -> Object:
    probe_port = "http"
    container: Object = {
        "name": ENGINE,
        "image": ms.image,
        "args": engine_args(ms, role),
        "env": engine_env(ms, role),
        "ports": [{"name": "http", "containerPort": ms.port, "protocol": "TCP"}],
        "resources": resources(role),
        # Loading weights takes minutes: liveness counts only once the engine has started.
        "startupProbe": {
            "httpGet": {"path": "/health", "port": probe_port},
            "periodSeconds": STARTUP_PROBE_PERIOD,
            "failureThreshold": -(-ms.startup_seconds // STARTUP_PROBE_PERIOD),
        },
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": probe_port},
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": probe_port},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if ms.disaggregated:
        container["ports"].append({"name": "nixl", "containerPort": NIXL_PORT, "protocol": "TCP"})
    volumes: list[Object] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    claim = pvc_claim(ms)
    if claim:
        volumes.append(
            {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        container["volumeMounts"].append(
            {"name": "model", "mountPath": "/models", "readOnly": True}
        )
    spec: Object = {"containers": [container], "volumes": volumes}
    tolerations = [t.to_dict() for t in (*ms.tolerations, *role.tolerations)]
    if role.resources.gpus:
        gpu = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        tolerations = [gpu, *tolerations]
    if tolerations:
        spec["tolerations"] = tolerations
    priority_class = ms.priority_class_of(role)
    if priority_class:
        spec["priorityClassName"] = priority_class
    if ms.scheduler_name:
        spec["schedulerName"] = ms.scheduler_name
    if ms.service_account:
        spec["serviceAccountName"] = ms.service_account
    if ms.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in ms.image_pull_secrets]
    node_selector = {**dict(ms.node_selector), **dict(role.node_selector)}
    if node_selector:
        spec["nodeSelector"] = node_selector
    spread = [c.to_dict(selector(ms, role.name)) for c in ms.spread_of(role)]
    if spread:
        spec["topologySpreadConstraints"] = spread
    wanted = affinity(ms, role)
    if wanted:
        spec["affinity"] = wanted
    metadata: Object = {"labels": {**dict(ms.pod_labels), **labels(ms, role.name)}}
    if ms.pod_annotations:
        metadata["annotations"] = dict(ms.pod_annotations)
    return {"metadata": metadata, "spec": spec}


def deployment(ms: ModelService, role: Role, *, with_replicas: bool = True) -> Object:
    """The role's Deployment. Without ``with_replicas`` the operator leaves spec.replicas to
    whoever owns it (an autoscaler)."""
    spec: Object = {
        "selector": {"matchLabels": selector(ms, role.name)},
        "revisionHistoryLimit": 3,
        # A new pod may take its startup timeout to load the weights, after pulling a large
        # image: only past that is a rollout stuck (Degraded/RolloutStuck), not at the 600 s
        # default.
        "progressDeadlineSeconds": ms.startup_seconds + IMAGE_PULL_ALLOWANCE,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
        },
        "template": pod_template(ms, role),
    }
    if with_replicas:
        spec = {"replicas": role.replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(ms, ms.object_name(role.name), role.name),
        "spec": spec,
    }


def replicas_handover(ms: ModelService, role: str, replicas: int) -> Object:
    """Only spec.replicas, applied by :data:`HANDOVER_MANAGER` before the operator lets go."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": ms.object_name(role), "namespace": ms.namespace},
        "spec": {"replicas": replicas},
    }


def _service(ms: ModelService, name: str, label_role: str, target_role: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ms, name, label_role),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(ms, target_role),
            "ports": [{"name": "http", "port": ms.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def role_service(ms: ModelService, role: Role) -> Object:
    return _service(ms, ms.object_name(role.name), role.name, role.name)


def front_service(ms: ModelService) -> Object:
    return _service(ms, ms.name, FRONT, ms.front_role)


def disruption_budget(ms: ModelService, role: Role) -> Object:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(ms, ms.object_name(role.name), role.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(ms, role.name)}},
    }


def render(ms: ModelService, *, with_replicas: bool | Mapping[str, bool] = True) -> list[Object]:
    """Every desired object: Deployments first, then Services, then budgets.

    ``with_replicas`` is one flag for all roles or one per role name."""

    def keep(role: str) -> bool:
        if isinstance(with_replicas, bool):
            return with_replicas
        return with_replicas.get(role, True)

    return [
        *(deployment(ms, r, with_replicas=keep(r.name)) for r in ms.roles),
        *(role_service(ms, r) for r in ms.roles),
        front_service(ms),
        *(disruption_budget(ms, r) for r in ms.roles),
    ]


def key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace, name) of an object."""
    meta = obj.get("metadata") or {}
    return (str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))


# --- drift -------------------------------------------------------------------------------------


def drifted(desired: Any, live: Any, path: tuple[str, ...] = ()) -> bool:
    """True when ``live`` does not contain ``desired`` (fields the API server added are fine).

    Quantities under ``resources`` compare by value ("1000m" == "1"). A false positive only costs
    one server-side apply that changes nothing, so this errs on the side of reporting drift.
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return True
        return any(drifted(v, live.get(k), (*path, str(k))) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return True
        return any(drifted(d, v, path) for d, v in zip(desired, live, strict=True))
    if desired == live:
        return False
    if len(path) >= 2 and path[-2] in ("requests", "limits"):
        return _quantity(desired) != _quantity(live)
    return True


def _quantity(value: Any) -> Decimal | None:
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError, ArithmeticError):
        return None
