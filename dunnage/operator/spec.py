"""A ModelService custom resource, parsed into immutable values.

The CRD's schema and CEL rules reject most bad objects at the API server; parsing checks the same
rules again (the operator may run against an older CRD, and unit tests feed it plain dicts) and
raises :class:`InputError` naming the field, which the operator reports as ``Degraded``.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.utils import parse_quantity

from dunnage.cluster.loader import check_affinity, spread_constraint
from dunnage.cluster.quantity import CPU, to_units
from dunnage.errors import InputError

GROUP = "dunnage.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelService"
PLURAL = "modelservices"

MODEL_SERVICE_LABEL = "dunnage.io/model-service"
ROLE_LABEL = "dunnage.io/role"
# The labels the operator puts on every object it renders (render.labels), and the one the
# Deployment controller adds to pods: spec.podMetadata may not set them.
OPERATOR_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    MODEL_SERVICE_LABEL,
    ROLE_LABEL,
)
RESERVED_POD_LABELS = (*OPERATOR_LABELS, "pod-template-hash")
GPU_RESOURCE = "nvidia.com/gpu"

SERVE = "serve"
PREFILL = "prefill"
DECODE = "decode"
SERVE_ROLES = (SERVE,)
PD_ROLES = (PREFILL, DECODE)

DEFAULT_PORT = 8000
DEFAULT_STARTUP_SECONDS = 1200  # downloading and loading weights takes minutes
STARTUP_PROBE_PERIOD = 10
DEFAULT_KV_CONNECTOR = "NixlConnector"
MAX_NAME = 55  # "<name>-prefill" must stay a 63-character DNS label (Service names)
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_HF = re.compile(r"^hf://([^/\s]+/[^\s]+)$")
_PVC = re.compile(r"^pvc://([a-z0-9]([-a-z0-9]*[a-z0-9])?)(/[^\s]*)?$")


@dataclass(frozen=True)
class Resources:
    """Per-replica resources; ``None`` means not set (then nothing is requested)."""

    gpus: int = 0
    cpu: str | None = None
    memory: str | None = None
    # Other resources (an RDMA NIC for the KV transfer, ephemeral-storage), by name, sorted:
    # each set as both request and limit.
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Toleration:
    """A taint the engine pods tolerate, as a pod's ``spec.tolerations`` entry says it."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""
    seconds: int | None = None  # tolerationSeconds (NoExecute only)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operator": self.operator}
        for name, value in (("key", self.key), ("value", self.value), ("effect", self.effect)):
            if value:
                out[name] = value
        if self.seconds is not None:
            out["tolerationSeconds"] = self.seconds
        return out


@dataclass(frozen=True)
class EnvVar:
    """An engine environment variable: a value, or a key of a Secret or ConfigMap that the
    kubelet reads (the operator never does: it needs no access to them)."""

    name: str
    value: str = ""
    source: str | None = None  # "secretKeyRef" or "configMapKeyRef"
    source_name: str = ""
    source_key: str = ""
    optional: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.source is None:
            return {"name": self.name, "value": self.value}
        ref: dict[str, Any] = {"name": self.source_name, "key": self.source_key}
        if self.optional is not None:
            ref["optional"] = self.optional
        return {"name": self.name, "valueFrom": {self.source: ref}}


@dataclass(frozen=True)
class Spread:
    """A ``topologySpreadConstraints`` item of the engine pods, checked. Without a
    ``labelSelector`` it spreads the role's own pods (in a pod, a constraint without one counts
    no pod and so constrains nothing)."""

    topology_key: str
    when_unsatisfiable: str
    fields: Mapping[str, Any]  # the item as the ModelService states it

    def to_dict(self, own_pods: Mapping[str, str]) -> dict[str, Any]:
        out = copy.deepcopy(dict(self.fields))
        out.setdefault("labelSelector", {"matchLabels": dict(own_pods)})
        return out


@dataclass(frozen=True)
class Role:
    name: str
    replicas: int
    min_replicas: int | None
    max_replicas: int | None
    resources: Resources
    args: tuple[str, ...] = ()
    # Over the ModelService's: its labels win per key; its tolerations come after; its spread
    # constraints replace the ones on the same topology key and action.
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    spread: tuple[Spread, ...] = ()
    # Its affinity kinds (nodeAffinity, podAffinity, podAntiAffinity) replace the ModelService's.
    affinity: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    priority_class: str | None = None  # over the ModelService's


@dataclass(frozen=True)
class ModelService:
    name: str
    namespace: str
    uid: str
    generation: int
    model_name: str
    model_uri: str
    image: str
    roles: tuple[Role, ...]
    engine_args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    port: int = DEFAULT_PORT
    startup_seconds: int = DEFAULT_STARTUP_SECONDS
    kv_connector: str = DEFAULT_KV_CONNECTOR
    priority_class: str | None = None
    scheduler_name: str | None = None
    service_account: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    spread: tuple[Spread, ...] = ()
    affinity: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    pod_labels: tuple[tuple[str, str], ...] = ()
    pod_annotations: tuple[tuple[str, str], ...] = ()
    policy_ref: str | None = None

    @property
    def disaggregated(self) -> bool:
        return self.role_names == PD_ROLES

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.roles)

    @property
    def front_role(self) -> str:
        """The role client traffic enters through: decode pulls the KV cache from prefill."""
        return DECODE if self.disaggregated else SERVE

    @property
    def autoscaled(self) -> bool:
        """An autoscaling policy owns the replica count (the operator only sets it at creation)."""
        return self.policy_ref is not None

    def role(self, name: str) -> Role:
        for role in self.roles:
            if role.name == name:
                return role
        raise KeyError(name)

    def object_name(self, role: str) -> str:
        return f"{self.name}-{role}"

    def priority_class_of(self, role: Role) -> str | None:
        return role.priority_class or self.priority_class

    def spread_of(self, role: Role) -> tuple[Spread, ...]:
        """The role's spread constraints: the ModelService's, each replaced by the role's on
        the same topology key and action, then the role's others."""
        own = {(c.topology_key, c.when_unsatisfiable): c for c in role.spread}
        shared = tuple(own.pop((c.topology_key, c.when_unsatisfiable), c) for c in self.spread)
        return (*shared, *own.values())


def policy_ref(body: Mapping[str, Any]) -> str | None:
    """The name in a ModelService object's ``spec.autoscaling.policyRef``, None without one
    (or without a well-formed one: :func:`parse` says what is wrong with it)."""
    found: Any = body
    for key in ("spec", "autoscaling", "policyRef", "name"):
        found = found.get(key) if isinstance(found, Mapping) else None
    return found if isinstance(found, str) and found else None


def parse(body: Mapping[str, Any]) -> ModelService:
    """A ModelService object (as the API returns it) -> :class:`ModelService`."""
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    obj = f"ModelService {meta.get('namespace', '?')}/{name}"
    if not _NAME.match(name) or len(name) > MAX_NAME:
        raise InputError(
            f"name {name!r} must be a DNS-1035 label of at most {MAX_NAME} characters", obj=obj
        )
    spec = _mapping(body.get("spec"), obj, "spec")
    model = _mapping(spec.get("model"), obj, "spec.model")
    engine = _mapping(spec.get("engine"), obj, "spec.engine")
    model_name = _string(model.get("name"), obj, "spec.model.name")
    model_uri = _string(model.get("uri"), obj, "spec.model.uri")
    if not (_HF.match(model_uri) or _PVC.match(model_uri)):
        raise InputError(
            f"{model_uri!r} must be hf://<org>/<repo> or pvc://<claim>[/<path>]",
            obj=obj,
            field="spec.model.uri",
        )
    port = _int(engine.get("port", DEFAULT_PORT), obj, "spec.engine.port", 1, 65535)
    base = _resources(spec.get("resources") or {}, Resources(), obj, "spec.resources")
    roles_spec = _mapping(spec.get("roles"), obj, "spec.roles")
    present = set(roles_spec)
    order: tuple[str, ...]
    if present == {SERVE}:
        order = SERVE_ROLES
    elif present == set(PD_ROLES):
        order = PD_ROLES
    else:
        raise InputError(
            f"roles must be exactly {{serve}} or exactly {{prefill, decode}}, got {sorted(present)}",
            obj=obj,
            field="spec.roles",
        )
    roles = tuple(_role(n, roles_spec[n], base, obj) for n in order)
    env = tuple(
        _env_var(e, obj, f"spec.engine.env[{i}]")
        for i, e in enumerate(_items(engine.get("env"), obj, "spec.engine.env"))
    )
    pod_metadata = _mapping(spec.get("podMetadata") or {}, obj, "spec.podMetadata")
    autoscaling = _mapping(spec.get("autoscaling") or {}, obj, "spec.autoscaling")
    if autoscaling.get("policyRef") is not None:
        ref = _mapping(autoscaling["policyRef"], obj, "spec.autoscaling.policyRef")
        _string(ref.get("name"), obj, "spec.autoscaling.policyRef.name")
    return ModelService(
        name=name,
        namespace=str(meta.get("namespace") or "default"),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        model_name=model_name,
        model_uri=model_uri,
        image=_string(engine.get("image"), obj, "spec.engine.image"),
        roles=roles,
        engine_args=_strings(engine.get("args"), obj, "spec.engine.args"),
        env=env,
        port=port,
        startup_seconds=_int(
            engine.get("startupTimeoutSeconds", DEFAULT_STARTUP_SECONDS),
            obj,
            "spec.engine.startupTimeoutSeconds",
            30,
            86400,
        ),
        kv_connector=_optional_string(engine.get("kvConnector"), obj, "spec.engine.kvConnector")
        or DEFAULT_KV_CONNECTOR,
        priority_class=_optional_string(
            spec.get("priorityClassName"), obj, "spec.priorityClassName"
        ),
        scheduler_name=_optional_string(spec.get("schedulerName"), obj, "spec.schedulerName"),
        service_account=_optional_object_name(
            spec.get("serviceAccountName"), obj, "spec.serviceAccountName"
        ),
        image_pull_secrets=tuple(
            _object_name(s.get("name"), obj, f"spec.imagePullSecrets[{i}].name")
            for i, s in enumerate(
                _objects(spec.get("imagePullSecrets"), obj, "spec.imagePullSecrets")
            )
        ),
        node_selector=_labels(spec.get("nodeSelector"), obj, "spec.nodeSelector"),
        tolerations=_tolerations(spec.get("tolerations"), obj, "spec.tolerations"),
        spread=_spread(
            spec.get("topologySpreadConstraints"), obj, "spec.topologySpreadConstraints"
        ),
        affinity=_affinity(spec.get("affinity"), obj, "spec.affinity"),
        pod_labels=_metadata_map(
            pod_metadata.get("labels"), obj, "spec.podMetadata.labels", labels=True
        ),
        pod_annotations=_metadata_map(
            pod_metadata.get("annotations"), obj, "spec.podMetadata.annotations", labels=False
        ),
        policy_ref=policy_ref(body),
    )


_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_DNS_LABEL}(\.{_DNS_LABEL})*"
_DNS_SUBDOMAIN = re.compile(rf"^{_SUBDOMAIN}$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_ENV_SOURCES = ("secretKeyRef", "configMapKeyRef")


def _optional_object_name(raw: Any, obj: str, field: str) -> str | None:
    """The name of an object (ServiceAccount, Secret, ConfigMap): a DNS subdomain; None if unset."""
    if raw is None or raw == "":
        return None
    return _object_name(raw, obj, field)


def _object_name(raw: Any, obj: str, field: str) -> str:
    if raw is None or raw == "":
        raise InputError("must name an object", obj=obj, field=field)
    if not isinstance(raw, str) or len(raw) > 253 or not _DNS_SUBDOMAIN.match(raw):
        raise InputError(
            f"{raw!r} is not a valid object name (lowercase letters, digits, '-' and '.')",
            obj=obj,
            field=field,
        )
    return raw


def _items(raw: Any, obj: str, field: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InputError("must be a list", obj=obj, field=field)
    return raw


def _objects(raw: Any, obj: str, field: str) -> list[Mapping[str, Any]]:
    return [_mapping(item, obj, f"{field}[{i}]") for i, item in enumerate(_items(raw, obj, field))]


def _env_var(raw: Any, obj: str, field: str) -> EnvVar:
    e = _mapping(raw, obj, field)
    name = _string(e.get("name"), obj, f"{field}.name")
    value_from = e.get("valueFrom")
    if value_from is None:
        return EnvVar(name, str(e.get("value", "")))
    if e.get("value"):
        raise InputError("value and valueFrom exclude each other", obj=obj, field=f"{field}.value")
    sources = [k for k in _ENV_SOURCES if k in _mapping(value_from, obj, f"{field}.valueFrom")]
    if len(sources) != 1:
        raise InputError(
            "must name exactly one of secretKeyRef and configMapKeyRef",
            obj=obj,
            field=f"{field}.valueFrom",
        )
    where = f"{field}.valueFrom.{sources[0]}"
    ref = _mapping(value_from[sources[0]], obj, where)
    ref_name = _object_name(ref.get("name"), obj, f"{where}.name")
    key = ref.get("key")
    if not isinstance(key, str) or len(key) > 253 or not _CONFIG_KEY.match(key):
        raise InputError(
            f"{key!r} is not a valid key (letters, digits, '-', '_' and '.')",
            obj=obj,
            field=f"{where}.key",
        )
    optional = ref.get("optional")
    if optional is not None and not isinstance(optional, bool):
        raise InputError(
            f"must be true or false, got {optional!r}", obj=obj, field=f"{where}.optional"
        )
    return EnvVar(name, "", sources[0], ref_name, key, optional)


_NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_QUALIFIED_NAME = re.compile(rf"^({_SUBDOMAIN}/)?{_NAME_PART}$")
_LABEL_VALUE = re.compile(rf"^({_NAME_PART})?$")


def _metadata_map(raw: Any, obj: str, field: str, *, labels: bool) -> tuple[tuple[str, str], ...]:
    """Pod labels or annotations: keys as the API server takes them ([prefix/]name, the prefix a
    DNS subdomain of at most 253 characters); label values of at most 63 characters of the
    same kind, annotation values any string; no label the operator or the Deployment sets."""
    out = []
    for key, value in sorted(_mapping(raw or {}, obj, field).items()):
        where = f"{field}[{key}]"
        key = str(key)
        if not _QUALIFIED_NAME.match(key) or len(key.partition("/")[0]) > 253:
            raise InputError(
                f"{key!r} is not a valid key ([prefix/]name: a DNS subdomain, then up to 63 "
                "letters, digits, '-', '_' or '.')",
                obj=obj,
                field=where,
            )
        if not isinstance(value, str):
            raise InputError(f"must be a string, got {value!r}", obj=obj, field=where)
        if labels and key in RESERVED_POD_LABELS:
            raise InputError(
                f"{key} is set by the {'Deployment' if key == 'pod-template-hash' else 'operator'}",
                obj=obj,
                field=where,
            )
        if labels and not _LABEL_VALUE.match(value):
            raise InputError(
                f"{value!r} is not a valid label value (up to 63 letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit)",
                obj=obj,
                field=where,
            )
        out.append((key, value))
    return tuple(out)


def _labels(raw: Any, obj: str, field: str) -> tuple[tuple[str, str], ...]:
    """A nodeSelector, sorted."""
    return tuple(sorted((str(k), str(v)) for k, v in _mapping(raw or {}, obj, field).items()))


def _tolerations(raw: Any, obj: str, field: str) -> tuple[Toleration, ...]:
    """Tolerations under the rules the API server applies to a pod's (the CRD states them too:
    an older CRD may not)."""
    out = []
    for i, t in enumerate(_items(raw, obj, field)):
        where = f"{field}[{i}]"
        t = _mapping(t, obj, where)
        operator = t.get("operator") or "Equal"
        if operator not in ("Exists", "Equal"):
            raise InputError(
                f"operator must be Exists or Equal, got {operator!r}",
                obj=obj,
                field=f"{where}.operator",
            )
        key, value, effect = (str(t.get(name) or "") for name in ("key", "value", "effect"))
        if effect not in _EFFECTS:
            raise InputError(
                f"effect must be one of NoSchedule, PreferNoSchedule, NoExecute, got {effect!r}",
                obj=obj,
                field=f"{where}.effect",
            )
        if operator == "Exists" and value:
            raise InputError(
                "a toleration with operator Exists has no value", obj=obj, field=f"{where}.value"
            )
        if not key and operator != "Exists":
            raise InputError(
                "a toleration without a key must have operator Exists",
                obj=obj,
                field=f"{where}.operator",
            )
        seconds = t.get("tolerationSeconds")
        if seconds is not None:
            if effect != "NoExecute":
                raise InputError(
                    "tolerationSeconds is only for effect NoExecute",
                    obj=obj,
                    field=f"{where}.tolerationSeconds",
                )
            seconds = _int(seconds, obj, f"{where}.tolerationSeconds", -(2**63), 2**63 - 1)
        out.append(Toleration(key, operator, value, effect, seconds))
    return tuple(out)


# Keys of the labels every engine pod carries (render.selector): the default spread selector.
_OWN_POD_KEYS = (MODEL_SERVICE_LABEL, ROLE_LABEL)


def _spread(raw: Any, obj: str, field: str) -> tuple[Spread, ...]:
    """Spread constraints under the rules the API server applies to a pod's, checked here
    because some bite only when the ReplicaSet creates the pods (a ``matchLabelKeys`` key also
    in the selector), after the Deployment was accepted."""
    out: list[Spread] = []
    for i, item in enumerate(_items(raw, obj, field)):
        where = f"{field}[{i}]"
        spread_constraint(item, {}, obj=obj, field=where)  # types, values, policies
        c = dict(_mapping(item, obj, where))
        pair = (str(c["topologyKey"]), str(c["whenUnsatisfiable"]))
        if any((s.topology_key, s.when_unsatisfiable) == pair for s in out):
            raise InputError(
                f"a second constraint on topologyKey {pair[0]} with {pair[1]}", obj=obj, field=where
            )
        if c.get("minDomains") is not None and pair[1] != "DoNotSchedule":
            raise InputError(
                "minDomains is only for whenUnsatisfiable DoNotSchedule",
                obj=obj,
                field=f"{where}.minDomains",
            )
        _check_selector_keys(c, obj, where)
        out.append(Spread(pair[0], pair[1], copy.deepcopy(c)))
    return tuple(out)


def _check_selector_keys(c: Mapping[str, Any], obj: str, where: str) -> None:
    """The labelSelector of a spread constraint or pod affinity term, and its matchLabelKeys
    outside that selector (without one, the role's own): the API server merges them in only
    when it creates a pod, and then refuses a key named twice."""
    selector = c.get("labelSelector")
    keys = set(_OWN_POD_KEYS)
    if selector is not None:
        keys = {*(selector.get("matchLabels") or {})}
        for j, r in enumerate(selector.get("matchExpressions") or []):
            _label_requirement(r, obj, f"{where}.labelSelector.matchExpressions[{j}]")
            keys.add(str(r.get("key")))
    mismatch = c.get("mismatchLabelKeys") or []
    for j, key in enumerate(c.get("matchLabelKeys") or []):
        if key in keys:
            raise InputError(
                f"{key} is in the labelSelector too (without one, the selector is the "
                f"role's pods: {', '.join(_OWN_POD_KEYS)})",
                obj=obj,
                field=f"{where}.matchLabelKeys[{j}]",
            )
        if key in mismatch:
            raise InputError(
                f"{key} is in mismatchLabelKeys too", obj=obj, field=f"{where}.matchLabelKeys[{j}]"
            )


AFFINITY_KINDS = ("nodeAffinity", "podAffinity", "podAntiAffinity")
REQUIRED_TERMS = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED_TERMS = "preferredDuringSchedulingIgnoredDuringExecution"


def _affinity(raw: Any, obj: str, field: str) -> Mapping[str, Any]:
    """A pod's ``affinity``, by kind, under the rules the API server applies to a pod's: the
    loader's reading plus the values each operator takes and the label keys (above)."""
    if raw is None:
        return {}
    affinity = dict(_mapping(raw, obj, field))
    unknown = sorted(set(affinity) - set(AFFINITY_KINDS))
    if unknown:
        raise InputError(f"unknown field {unknown[0]}", obj=obj, field=f"{field}.{unknown[0]}")
    check_affinity(affinity, obj=obj, field=field)  # types, weights, topology keys
    for kind in AFFINITY_KINDS:
        section = affinity.get(kind) or {}
        where = f"{field}.{kind}"
        if kind == "nodeAffinity":
            required = section.get(REQUIRED_TERMS)
            terms = [] if required is None else required.get("nodeSelectorTerms") or []
            if required is not None and not terms:
                raise InputError(
                    "needs at least one node selector term",
                    obj=obj,
                    field=f"{where}.{REQUIRED_TERMS}.nodeSelectorTerms",
                )
            found = [
                (f"{where}.{REQUIRED_TERMS}.nodeSelectorTerms[{i}]", t) for i, t in enumerate(terms)
            ]
            found += [
                (f"{where}.{PREFERRED_TERMS}[{i}].preference", p.get("preference") or {})
                for i, p in enumerate(section.get(PREFERRED_TERMS) or [])
            ]
            for at, term in found:
                for part in ("matchExpressions", "matchFields"):
                    for j, r in enumerate(_mapping(term, obj, at).get(part) or []):
                        _node_requirement(r, obj, f"{at}.{part}[{j}]")
            continue
        pod_terms = [
            (f"{where}.{REQUIRED_TERMS}[{i}]", t)
            for i, t in enumerate(section.get(REQUIRED_TERMS) or [])
        ]
        pod_terms += [
            (f"{where}.{PREFERRED_TERMS}[{i}].podAffinityTerm", p.get("podAffinityTerm") or {})
            for i, p in enumerate(section.get(PREFERRED_TERMS) or [])
        ]
        for at, term in pod_terms:
            _check_selector_keys(term, obj, at)
            scope = term.get("namespaceSelector") or {}
            for j, r in enumerate(scope.get("matchExpressions") or []):
                _label_requirement(r, obj, f"{at}.namespaceSelector.matchExpressions[{j}]")
    return copy.deepcopy(affinity)


def _node_requirement(r: Mapping[str, Any], obj: str, field: str) -> None:
    """A node selector's requirement (the loader checked its operator): values with In and
    NotIn, one integer with Gt and Lt, none with Exists and DoesNotExist."""
    operator, values = r.get("operator"), r.get("values") or []
    if operator in ("Gt", "Lt"):
        if len(values) != 1 or not re.fullmatch(r"-?[0-9]+", str(values[0])):
            raise InputError(
                f"operator {operator} needs one integer value", obj=obj, field=f"{field}.values"
            )
    elif bool(values) != (operator in ("In", "NotIn")):
        need = "needs values" if operator in ("In", "NotIn") else "takes no values"
        raise InputError(f"operator {operator} {need}", obj=obj, field=f"{field}.values")


def _label_requirement(r: Mapping[str, Any], obj: str, field: str) -> None:
    """A label selector's requirement: a node selector's without Gt and Lt."""
    operator = r.get("operator")
    if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
        raise InputError(
            f"operator must be In, NotIn, Exists or DoesNotExist, got {operator!r}",
            obj=obj,
            field=f"{field}.operator",
        )
    _node_requirement(r, obj, field)


def _role(name: str, raw: Any, base: Resources, obj: str) -> Role:
    where = f"spec.roles.{name}"
    spec = _mapping(raw, obj, where)
    replicas = _int(spec.get("replicas"), obj, f"{where}.replicas", 0, 10000)
    low = spec.get("minReplicas")
    high = spec.get("maxReplicas")
    low = None if low is None else _int(low, obj, f"{where}.minReplicas", 0, 10000)
    high = None if high is None else _int(high, obj, f"{where}.maxReplicas", 1, 10000)
    if low is not None and low > replicas:
        raise InputError("minReplicas must be <= replicas", obj=obj, field=f"{where}.minReplicas")
    if high is not None and replicas > high:
        raise InputError("replicas must be <= maxReplicas", obj=obj, field=f"{where}.replicas")
    if low is not None and high is not None and low > high:
        raise InputError(
            "minReplicas must be <= maxReplicas", obj=obj, field=f"{where}.minReplicas"
        )
    return Role(
        name=name,
        replicas=replicas,
        min_replicas=low,
        max_replicas=high,
        resources=_resources(spec.get("resources") or {}, base, obj, f"{where}.resources"),
        args=_strings(spec.get("args"), obj, f"{where}.args"),
        node_selector=_labels(spec.get("nodeSelector"), obj, f"{where}.nodeSelector"),
        tolerations=_tolerations(spec.get("tolerations"), obj, f"{where}.tolerations"),
        spread=_spread(
            spec.get("topologySpreadConstraints"), obj, f"{where}.topologySpreadConstraints"
        ),
        affinity=_affinity(spec.get("affinity"), obj, f"{where}.affinity"),
        priority_class=_optional_string(
            spec.get("priorityClassName"), obj, f"{where}.priorityClassName"
        ),
    )


def _resources(raw: Any, base: Resources, obj: str, where: str) -> Resources:
    spec = _mapping(raw, obj, where)
    gpus = (
        base.gpus if spec.get("gpus") is None else _int(spec["gpus"], obj, f"{where}.gpus", 0, 64)
    )
    cpu = base.cpu if spec.get("cpu") is None else _quantity(spec["cpu"], obj, f"{where}.cpu")
    memory = (
        base.memory
        if spec.get("memory") is None
        else _quantity(spec["memory"], obj, f"{where}.memory")
    )
    extra = dict(base.extra)  # the role's win per name
    for name, value in _mapping(spec.get("extra") or {}, obj, f"{where}.extra").items():
        extra[str(name)] = _extra_quantity(str(name), value, obj, f"{where}.extra[{name}]")
    return Resources(gpus=gpus, cpu=cpu, memory=memory, extra=tuple(sorted(extra.items())))


_OWN_FIELDS = {"cpu": "cpu", "memory": "memory", GPU_RESOURCE: "gpus"}


def _extra_quantity(name: str, value: Any, obj: str, field: str) -> str:
    """A resource other than cpu, memory and GPUs: ephemeral-storage, hugepages-<size>, or an
    extended resource with a domain prefix, whose amounts are whole (as the API server says)."""
    if name in _OWN_FIELDS:
        raise InputError(f"set {name} with resources.{_OWN_FIELDS[name]}", obj=obj, field=field)
    extended = "/" in name and not name.startswith(("kubernetes.io/", "requests."))
    known = name == "ephemeral-storage" or name.startswith("hugepages-")
    if not (known or (extended and _QUALIFIED_NAME.match(name))):
        raise InputError(
            "not a resource a pod can ask for: ephemeral-storage, hugepages-<size>, or an "
            "extended resource with a domain prefix such as rdma/ib",
            obj=obj,
            field=field,
        )
    quantity = _quantity(value, obj, field)
    if extended and parse_quantity(value) % 1:
        raise InputError(
            f"an extended resource is counted in whole units, got {value!r}", obj=obj, field=field
        )
    return quantity


def _mapping(value: Any, obj: str, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InputError("must be an object", obj=obj, field=field)
    return value


def _optional_string(value: Any, obj: str, field: str) -> str | None:
    return None if value is None or value == "" else _string(value, obj, field)


def _string(value: Any, obj: str, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError("must be a non-empty string", obj=obj, field=field)
    return value


def _strings(value: Any, obj: str, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError("must be a list of strings", obj=obj, field=field)
    return tuple(value)


def _int(value: Any, obj: str, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"must be an integer, got {value!r}", obj=obj, field=field)
    if not low <= value <= high:
        raise InputError(f"must be between {low} and {high}, got {value}", obj=obj, field=field)
    return value


def _quantity(value: Any, obj: str, field: str) -> str:
    """A quantity as the ModelService states it (an integer or a string), checked as the
    loader checks one."""
    if isinstance(value, bool):  # an int to Python, not a quantity
        raise InputError(f"unparsable quantity {value!r}", obj=obj, field=field)
    to_units(CPU, value, obj=obj, field=field)
    return str(value)
