"""ModelService parsing and rendering: pure functions, no cluster."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as hs
from kubernetes.utils import parse_quantity

from dunnage.errors import InputError
from dunnage.operator import render as r
from dunnage.operator.spec import (
    GPU_RESOURCE,
    MODEL_SERVICE_LABEL,
    OPERATOR_LABELS,
    ROLE_LABEL,
    ModelService,
    parse,
)
from tests.json_fuzz import replace_a_field, wide_json

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "manifests" / "samples" / "modelservice-pd.yaml"


def body(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"name": "llama", "uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "engine": {"image": "vllm/vllm-openai:v0.11.0"},
        "resources": {"gpus": 1, "cpu": "8", "memory": "64Gi"},
        "roles": {"serve": {"replicas": 2}},
    }
    base.update(spec)
    return {
        "apiVersion": "dunnage.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "llm", "namespace": "ns", "uid": "u-1", "generation": 3},
        "spec": base,
    }


def pd_body(**spec: Any) -> dict[str, Any]:
    return body(
        roles={
            "prefill": {"replicas": 2, "minReplicas": 1, "maxReplicas": 8},
            "decode": {"replicas": 3, "maxReplicas": 16, "resources": {"gpus": 2}},
        },
        **spec,
    )


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def engine(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


# --- parsing -------------------------------------------------------------------------------------


def test_sample_parses_as_prefill_decode() -> None:
    ms = parse(yaml.safe_load(SAMPLE.read_text()))
    assert ms.disaggregated and ms.role_names == ("prefill", "decode")
    assert ms.role("decode").resources.gpus == 2  # the role override
    assert ms.role("prefill").resources.gpus == 1  # inherited
    assert ms.role("decode").resources.memory == "64Gi"  # not overridden: inherited
    assert ms.priority_class == "llm-high" and ms.scheduler_name == "dunnage-scheduler"


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ({}, "exactly {serve} or exactly {prefill, decode}"),
        ({"prefill": {"replicas": 1}}, "exactly"),
        ({"serve": {"replicas": 1}, "decode": {"replicas": 1}}, "exactly"),
        ({"serve": {"replicas": 2, "minReplicas": 3}}, "minReplicas must be <= replicas"),
        ({"serve": {"replicas": 9, "maxReplicas": 8}}, "replicas must be <= maxReplicas"),
        ({"serve": {"replicas": -1}}, "between 0 and 10000"),
        ({"serve": {"replicas": True}}, "must be an integer"),
        ({"serve": {"replicas": 1, "resources": {"gpus": -1}}}, "spec.roles.serve.resources.gpus"),
    ],
)
def test_bad_roles_name_the_field(roles: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse(body(roles=roles))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": {"name": "m", "uri": "s3://bucket/x"}}, "spec.model.uri"),
        ({"engine": {}}, "spec.engine.image"),
        ({"resources": {"cpu": "eight"}}, "spec.resources.cpu"),
        ({"resources": {"memory": "-1Gi"}}, "spec.resources.memory"),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        parse(body(**change))


def test_names_must_fit_role_object_names() -> None:
    bad = body()
    bad["metadata"]["name"] = "x" * 56
    with pytest.raises(InputError, match="at most 55"):
        parse(bad)
    bad["metadata"]["name"] = "9lives"
    with pytest.raises(InputError, match="DNS-1035"):
        parse(bad)


# --- rendering ------------------------------------------------------------------------------------


def test_serve_renders_one_of_each_plus_front() -> None:
    objects = r.render(parse(body()))
    assert sorted(by_key(objects)) == [
        ("Deployment", "llm-serve"),
        ("PodDisruptionBudget", "llm-serve"),
        ("Service", "llm"),
        ("Service", "llm-serve"),
    ]
    assert objects[0]["kind"] == "Deployment"  # Deployments go first


def test_pd_renders_per_role_objects_with_labels_and_owner() -> None:
    ms = parse(pd_body())
    objects = by_key(r.render(ms))
    assert len(objects) == 7
    for (_kind, _name), obj in objects.items():
        labels = obj["metadata"]["labels"]
        assert labels[MODEL_SERVICE_LABEL] == "llm"
        assert obj["metadata"]["namespace"] == "ns"
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "dunnage.io/v1alpha1",
            "kind": "ModelService",
            "name": "llm",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    for role in ("prefill", "decode"):
        deployment = objects[("Deployment", f"llm-{role}")]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pod_labels[ROLE_LABEL] == role and pod_labels[MODEL_SERVICE_LABEL] == "llm"
        assert deployment["metadata"]["labels"][ROLE_LABEL] == role
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        assert objects[("Service", f"llm-{role}")]["spec"]["selector"] == selector
        assert objects[("PodDisruptionBudget", f"llm-{role}")]["spec"]["selector"] == {
            "matchLabels": selector
        }
    front = objects[("Service", "llm")]
    assert front["spec"]["selector"] == {MODEL_SERVICE_LABEL: "llm", ROLE_LABEL: "decode"}
    assert front["metadata"]["labels"][ROLE_LABEL] == "front"


def test_gpus_are_requested_and_limited_per_role() -> None:
    objects = by_key(r.render(parse(pd_body())))
    prefill = engine(objects[("Deployment", "llm-prefill")])["resources"]
    decode = engine(objects[("Deployment", "llm-decode")])["resources"]
    assert prefill["requests"][GPU_RESOURCE] == prefill["limits"][GPU_RESOURCE] == 1
    assert decode["requests"][GPU_RESOURCE] == decode["limits"][GPU_RESOURCE] == 2
    assert decode["requests"]["cpu"] == "8" and decode["limits"]["memory"] == "64Gi"
    assert "cpu" not in decode["limits"]  # CPU is not limited: throttling hurts latency
    tolerations = objects[("Deployment", "llm-decode")]["spec"]["template"]["spec"]["tolerations"]
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_zero_gpus_requests_none() -> None:
    deployment = r.render(parse(body(resources={"gpus": 0})))[0]
    assert GPU_RESOURCE not in json.dumps(engine(deployment)["resources"])
    assert "tolerations" not in deployment["spec"]["template"]["spec"]


def test_pd_flags_only_in_pd_mode() -> None:
    pd = by_key(r.render(parse(pd_body())))
    for role in ("prefill", "decode"):
        args = engine(pd[("Deployment", f"llm-{role}")])["args"]
        assert '--kv-transfer-config={"kv_connector":"NixlConnector","kv_role":"kv_both"}' in args
        env = {e["name"]: e for e in engine(pd[("Deployment", f"llm-{role}")])["env"]}
        assert env["DUNNAGE_ROLE"]["value"] == role
        assert env["VLLM_NIXL_SIDE_CHANNEL_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == (
            "status.podIP"
        )
    decode_env = {e["name"]: e for e in engine(pd[("Deployment", "llm-decode")])["env"]}
    assert decode_env["DUNNAGE_PREFILL_SERVICE"]["value"] == "llm-prefill.ns.svc:8000"
    serve = engine(r.render(parse(body()))[0])
    assert not any(a.startswith("--kv-transfer-config") for a in serve["args"])
    assert "VLLM_NIXL_SIDE_CHANNEL_PORT" not in json.dumps(serve["env"])


def test_engine_args_order_model_then_operator_then_user_then_role() -> None:
    ms = parse(
        body(
            engine={"image": "img", "args": ["--max-model-len=8192"], "port": 9000},
            roles={
                "prefill": {"replicas": 1, "args": ["--enable-chunked-prefill"]},
                "decode": {"replicas": 1},
            },
        )
    )
    args = engine(r.render(ms)[0])["args"]
    assert args[0] == "meta-llama/Llama-3.1-8B-Instruct"
    assert args[1:3] == ["--served-model-name=llama", "--port=9000"]
    assert args[-2:] == ["--max-model-len=8192", "--enable-chunked-prefill"]


def test_user_env_wins_over_operator_env() -> None:
    ms = parse(body(engine={"image": "img", "env": [{"name": "DUNNAGE_ROLE", "value": "x"}]}))
    env = engine(r.render(ms)[0])["env"]
    assert [e for e in env if e["name"] == "DUNNAGE_ROLE"] == [
        {"name": "DUNNAGE_ROLE", "value": "x"}
    ]


def test_secrets_reach_the_engine_through_the_kubelet() -> None:
    """A gated model's token from a Secret, a setting from a ConfigMap, the image from a
    private registry, a ServiceAccount of the admins' choosing: all passed on by name."""
    token = {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    setting = {"configMapKeyRef": {"name": "llm", "key": "vllm.max_len", "optional": True}}
    env = [{"name": "HF_TOKEN", "valueFrom": token}, {"name": "MAX_LEN", "valueFrom": setting}]
    ms = parse(
        body(
            engine={"image": "registry.example/vllm:1", "env": env},
            serviceAccountName="engines",
            imagePullSecrets=[{"name": "registry"}, {"name": "mirror.pull"}],
        )
    )
    deployment = r.render(ms)[0]
    pod = deployment["spec"]["template"]["spec"]
    assert engine(deployment)["env"][-2:] == env
    assert pod["serviceAccountName"] == "engines"
    assert pod["imagePullSecrets"] == [{"name": "registry"}, {"name": "mirror.pull"}]
    plain = r.render(parse(body()))[0]["spec"]["template"]["spec"]
    assert "serviceAccountName" not in plain and "imagePullSecrets" not in plain


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (
            {"engine": {"image": "i", "env": [{"name": "A", "value": "x", "valueFrom": {}}]}},
            "spec.engine.env[0].value",
            "exclude each other",
        ),
        (
            {"engine": {"image": "i", "env": [{"name": "A", "valueFrom": {"fieldRef": {}}}]}},
            "spec.engine.env[0].valueFrom",
            "exactly one of secretKeyRef and configMapKeyRef",
        ),
        (
            {
                "engine": {
                    "image": "i",
                    "env": [
                        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a/b"}}}
                    ],
                }
            },
            "spec.engine.env[0].valueFrom.secretKeyRef.key",
            "not a valid key",
        ),
        (
            {
                "engine": {
                    "image": "i",
                    "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"key": "k"}}}],
                }
            },
            "spec.engine.env[0].valueFrom.configMapKeyRef.name",
            "must name an object",
        ),
        (
            {"serviceAccountName": "Engines_SA"},
            "spec.serviceAccountName",
            "not a valid object name",
        ),
        ({"imagePullSecrets": [{"name": "ok"}, "registry"]}, "spec.imagePullSecrets[1]", "object"),
        ({"imagePullSecrets": [{}]}, "spec.imagePullSecrets[0].name", "must name an object"),
    ],
)
def test_bad_references_name_the_field(spec: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        parse(body(**spec))
    assert f"{field}:" in str(err.value) and message in str(err.value)


def test_pod_metadata_reaches_the_engine_pods_under_the_operators_labels() -> None:
    """Scrape annotations, a sidecar switch, a cost-centre label: on every engine pod (not on
    the Deployments or Services); the operator's own labels may not be set."""
    pod_metadata = {
        "labels": {"team": "llm", "example.com/cost-centre": "research-7"},
        "annotations": {"prometheus.io/scrape": "true", "sidecar.istio.io/inject": "false"},
    }
    ms = parse(pd_body(podMetadata=pod_metadata))
    for obj in r.render(ms):
        assert "team" not in obj["metadata"]["labels"]
        if obj["kind"] == "Deployment":
            role = obj["metadata"]["labels"][ROLE_LABEL]
            template = obj["spec"]["template"]["metadata"]
            assert template["labels"] == {**pod_metadata["labels"], **r.labels(ms, role)}
            assert template["annotations"] == pod_metadata["annotations"]
    assert set(r.labels(ms, "decode")) == set(OPERATOR_LABELS)
    plain = r.render(parse(body()))[0]["spec"]["template"]["metadata"]
    assert "annotations" not in plain


@pytest.mark.parametrize(
    ("pod_metadata", "field", "message"),
    [
        ({"labels": {ROLE_LABEL: "x"}}, f"labels[{ROLE_LABEL}]", "set by the operator"),
        ({"labels": {"pod-template-hash": "x"}}, "labels[pod-template-hash]", "by the Deployment"),
        ({"labels": {"team": "a b"}}, "labels[team]", "not a valid label value"),
        ({"labels": {"team": "x" * 64}}, "labels[team]", "not a valid label value"),
        ({"labels": {"team": 7}}, "labels[team]", "must be a string"),
        ({"annotations": {"Example.com/a": "x"}}, "annotations[Example.com/a]", "not a valid key"),
        ({"annotations": {"a/b/c": "x"}}, "annotations[a/b/c]", "not a valid key"),
        ({"annotations": {"-a": "x"}}, "annotations[-a]", "not a valid key"),
        ({"labels": ["team"]}, "spec.podMetadata.labels", "must be an object"),
    ],
)
def test_bad_pod_metadata_names_the_field(pod_metadata: Any, field: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        parse(body(podMetadata=pod_metadata))
    assert field in str(err.value) and message in str(err.value), str(err.value)
    annotations = {"a": "x" * 70000, "b.example/c_d.e": ""}
    assert parse(body(podMetadata={"annotations": annotations})).pod_annotations


@pytest.mark.parametrize(
    ("seconds", "threshold"), [(None, 120), (30, 3), (3601, 361), (86400, 8640)]
)
def test_the_startup_probe_and_the_rollout_wait_as_long_as_the_model_needs(
    seconds: int | None, threshold: int
) -> None:
    engine_spec: dict[str, Any] = {"image": "img"}
    if seconds is not None:
        engine_spec["startupTimeoutSeconds"] = seconds
    deployment = r.render(parse(body(engine=engine_spec)))[0]
    probe = engine(deployment)["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= (seconds or 1200)
    assert probe["failureThreshold"] == threshold
    # A rollout waiting on a loading engine is not stuck (Degraded) before it could be Ready.
    assert deployment["spec"]["progressDeadlineSeconds"] >= (seconds or 1200) + 600


@pytest.mark.parametrize("seconds", [29, 86401, "600", True])
def test_a_startup_timeout_out_of_bounds_names_the_field(seconds: Any) -> None:
    with pytest.raises(InputError, match=r"spec\.engine\.startupTimeoutSeconds"):
        parse(body(engine={"image": "img", "startupTimeoutSeconds": seconds}))


def test_extra_resources_are_requested_and_limited_the_roles_winning() -> None:
    """Decode pulls the KV cache over RDMA: one NIC per decode pod, none for prefill; the
    downloaded weights' disk for both."""
    roles = {
        "prefill": {"replicas": 1, "resources": {"extra": {"rdma/ib": 0}}},
        "decode": {"replicas": 1, "resources": {"extra": {"ephemeral-storage": "300Gi"}}},
    }
    extra = {"rdma/ib": 1, "ephemeral-storage": "200Gi"}
    ms = parse(body(roles=roles, resources={"gpus": 1, "extra": extra}))
    objects = by_key(r.render(ms))
    prefill = engine(objects[("Deployment", "llm-prefill")])["resources"]
    decode = engine(objects[("Deployment", "llm-decode")])["resources"]
    assert decode["limits"] == {GPU_RESOURCE: 1, "rdma/ib": "1", "ephemeral-storage": "300Gi"}
    assert decode["requests"] == decode["limits"]
    assert prefill["limits"] == {GPU_RESOURCE: 1, "rdma/ib": "0", "ephemeral-storage": "200Gi"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"nvidia.com/gpu": 1}, "set nvidia.com/gpu with resources.gpus"),
        ({"memory": "1Gi"}, "set memory with resources.memory"),
        ({"pods": 1}, "not a resource a pod can ask for"),
        ({"kubernetes.io/x": 1}, "not a resource a pod can ask for"),
        ({"rdma/ib": "500m"}, "whole units"),
        ({"rdma/ib": "-1"}, "negative quantity"),
        ({"ephemeral-storage": "lots"}, "unparsable quantity"),
        ({"Example.com/x": 1}, "not a resource a pod can ask for"),
    ],
)
def test_bad_extra_resources_name_the_field(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as err:
        parse(body(resources={"extra": extra}))
    (name,) = extra
    assert f"spec.resources.extra[{name}]" in str(err.value) and message in str(err.value)


def test_pvc_model_is_mounted_read_only() -> None:
    ms = parse(body(model={"name": "m", "uri": "pvc://weights/llama/8b"}))
    deployment = r.render(ms)[0]
    pod = deployment["spec"]["template"]["spec"]
    assert engine(deployment)["args"][0] == "/models/llama/8b"
    assert {
        "name": "model",
        "persistentVolumeClaim": {"claimName": "weights", "readOnly": True},
    } in pod["volumes"]


def test_scheduling_fields_pass_through() -> None:
    ms = parse(
        body(
            priorityClassName="llm-high",
            schedulerName="dunnage-scheduler",
            nodeSelector={"pool": "h100"},
        )
    )
    pod = r.render(ms)[0]["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "llm-high"
    assert pod["schedulerName"] == "dunnage-scheduler"
    assert pod["nodeSelector"] == {"pool": "h100"}


def test_tolerations_pass_through_after_the_gpu_one() -> None:
    dedicated = {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}
    draining = {
        "key": "drain",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 30,
    }
    roles = {"prefill": {"replicas": 1, "resources": {"gpus": 0}}, "decode": {"replicas": 1}}
    ms = parse(body(roles=roles, tolerations=[dedicated, draining, {"operator": "Exists"}]))
    objects = by_key(r.render(ms))
    gpu = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    template = objects[("Deployment", "llm-decode")]["spec"]["template"]["spec"]
    assert template["tolerations"] == [gpu, dedicated, draining, {"operator": "Exists"}]
    template = objects[("Deployment", "llm-prefill")]["spec"]["template"]["spec"]
    assert template["tolerations"] == [dedicated, draining, {"operator": "Exists"}]  # no GPUs


def test_a_role_adds_its_own_node_labels_and_tolerations() -> None:
    """Prefill on one GPU pool, decode on another: the role's labels over the ModelService's
    (its value wins), its tolerations after the ModelService's."""
    h200 = {"key": "gpu", "operator": "Equal", "value": "h200", "effect": "NoSchedule"}
    shared = {"key": "dedicated", "operator": "Exists"}
    roles = {
        "prefill": {"replicas": 1, "nodeSelector": {"gpu": "h100"}},
        "decode": {"replicas": 1, "nodeSelector": {"gpu": "h200"}, "tolerations": [h200]},
    }
    ms = parse(body(roles=roles, nodeSelector={"pool": "llm", "gpu": "any"}, tolerations=[shared]))
    objects = by_key(r.render(ms))
    prefill = objects[("Deployment", "llm-prefill")]["spec"]["template"]["spec"]
    decode = objects[("Deployment", "llm-decode")]["spec"]["template"]["spec"]
    assert prefill["nodeSelector"] == {"pool": "llm", "gpu": "h100"}
    assert decode["nodeSelector"] == {"pool": "llm", "gpu": "h200"}
    gpu = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    assert prefill["tolerations"] == [gpu, shared]
    assert decode["tolerations"] == [gpu, shared, h200]
    bad = {**roles, "decode": {"replicas": 1, "tolerations": [{"value": "x"}]}}
    with pytest.raises(InputError, match=r"spec\.roles\.decode\.tolerations\[0\]\.operator"):
        parse(body(roles=bad))
    bad = {**roles, "decode": {"replicas": 1, "nodeSelector": ["gpu"]}}
    with pytest.raises(InputError, match=r"spec\.roles\.decode\.nodeSelector"):
        parse(body(roles=bad))


@pytest.mark.parametrize(
    ("toleration", "field", "message"),
    [
        ({"key": "k", "operator": "In"}, "spec.tolerations[0].operator", "Exists or Equal"),
        ({"key": "k", "effect": "NoRun"}, "spec.tolerations[0].effect", "one of"),
        ({"key": "k", "operator": "Exists", "value": "v"}, "spec.tolerations[0].value", "no value"),
        ({"value": "v"}, "spec.tolerations[0].operator", "without a key"),
        (
            {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5},
            "spec.tolerations[0].tolerationSeconds",
            "only for effect NoExecute",
        ),
        (
            {"key": "k", "effect": "NoExecute", "tolerationSeconds": "5"},
            "spec.tolerations[0].tolerationSeconds",
            "must be an integer",
        ),
        ("dedicated", "spec.tolerations[0]", "must be an object"),
    ],
)
def test_bad_tolerations_name_the_field(toleration: Any, field: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        parse(body(tolerations=[toleration]))
    assert field in str(err.value) and message in str(err.value)
    with pytest.raises(InputError, match=r"spec\.tolerations: must be a list"):
        parse(body(tolerations={"key": "k"}))


HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def test_spread_without_a_selector_spreads_the_roles_own_pods() -> None:
    """Decode replicas one per node, prefill per zone as the ModelService says: a role's
    constraint replaces the ModelService's on the same key and action, the others stay."""
    per_zone = {"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "ScheduleAnyway"}
    per_node = {"maxSkew": 2, "topologyKey": HOSTNAME, "whenUnsatisfiable": "DoNotSchedule"}
    one_per_node = {
        **per_node,
        "maxSkew": 1,
        "minDomains": 3,
        "matchLabelKeys": ["pod-template-hash"],
    }
    chosen = {**per_zone, "labelSelector": {"matchLabels": {"tier": "llm"}}}
    roles = {
        "prefill": {"replicas": 1},
        "decode": {"replicas": 1, "topologySpreadConstraints": [one_per_node, chosen]},
    }
    ms = parse(body(roles=roles, topologySpreadConstraints=[per_zone, per_node]))
    objects = by_key(r.render(ms))
    prefill = objects[("Deployment", "llm-prefill")]["spec"]["template"]["spec"]
    decode = objects[("Deployment", "llm-decode")]["spec"]["template"]["spec"]
    own = {"prefill": r.selector(ms, "prefill"), "decode": r.selector(ms, "decode")}
    assert prefill["topologySpreadConstraints"] == [
        {**per_zone, "labelSelector": {"matchLabels": own["prefill"]}},
        {**per_node, "labelSelector": {"matchLabels": own["prefill"]}},
    ]
    assert decode["topologySpreadConstraints"] == [
        chosen,
        {**one_per_node, "labelSelector": {"matchLabels": own["decode"]}},
    ]
    assert "topologySpreadConstraints" not in r.render(parse(body()))[0]["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("constraint", "field", "message"),
    [
        ({"maxSkew": 0}, "[1].maxSkew", "integer >= 1"),
        ({"whenUnsatisfiable": "Never"}, "[1].whenUnsatisfiable", "DoNotSchedule or"),
        ({"topologyKey": ""}, "[1].topologyKey", "non-empty"),
        ({"topologyKey": HOSTNAME}, "[1]", "a second constraint on topologyKey"),
        ({"minDomains": 2}, "[1].minDomains", "only for whenUnsatisfiable DoNotSchedule"),
        ({"nodeTaintsPolicy": "Always"}, "[1].nodeTaintsPolicy", "Honor or Ignore"),
        ({"matchLabelKeys": [ROLE_LABEL]}, "[1].matchLabelKeys[0]", "the role's pods"),
        (
            {"labelSelector": {"matchLabels": {"a": "b"}}, "matchLabelKeys": ["x", "a"]},
            "[1].matchLabelKeys[1]",
            "in the labelSelector too",
        ),
        (
            {
                "labelSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]
                }
            },
            "[1].labelSelector.matchExpressions[0].operator",
            "In, NotIn, Exists or DoesNotExist",
        ),
        (
            {"labelSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
            "[1].labelSelector.matchExpressions[0].values",
            "needs values",
        ),
        (
            {
                "labelSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["1"]}]
                }
            },
            "[1].labelSelector.matchExpressions[0].values",
            "takes no values",
        ),
    ],
)
def test_bad_spread_constraints_name_the_field(
    constraint: dict[str, Any], field: str, message: str
) -> None:
    first = {"maxSkew": 1, "topologyKey": HOSTNAME, "whenUnsatisfiable": "ScheduleAnyway"}
    second = {**first, "topologyKey": ZONE, **constraint}
    for where, spec in (
        ("spec.topologySpreadConstraints", {"topologySpreadConstraints": [first, second]}),
        (
            "spec.roles.serve.topologySpreadConstraints",
            {"roles": {"serve": {"replicas": 1, "topologySpreadConstraints": [first, second]}}},
        ),
    ):
        with pytest.raises(InputError) as err:
            parse(body(**spec))
        assert f"{where}{field}:" in str(err.value) and message in str(err.value)


REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


def test_affinity_kinds_of_a_role_replace_the_model_services() -> None:
    """H100 or H200 nodes for every role (nodeAffinity, which nodeSelector cannot say); decode
    pods one per node (anti-affinity without a selector: the role's own pods), prefill near
    a cache (affinity with the selector given)."""
    gpus = {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["H100", "H200"]}
    node = {REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": [gpus]}]}}
    one_per_node = {REQUIRED: [{"topologyKey": HOSTNAME}]}
    near_cache = {
        PREFERRED: [
            {
                "weight": 50,
                "podAffinityTerm": {
                    "topologyKey": ZONE,
                    "labelSelector": {"matchLabels": {"app": "kv-cache"}},
                },
            }
        ]
    }
    roles = {
        "prefill": {"replicas": 1, "affinity": {"podAffinity": near_cache}},
        "decode": {"replicas": 1, "affinity": {"podAntiAffinity": one_per_node}},
    }
    ms = parse(body(roles=roles, affinity={"nodeAffinity": node, "podAffinity": {REQUIRED: []}}))
    objects = by_key(r.render(ms))
    prefill = objects[("Deployment", "llm-prefill")]["spec"]["template"]["spec"]["affinity"]
    decode = objects[("Deployment", "llm-decode")]["spec"]["template"]["spec"]["affinity"]
    assert prefill == {"nodeAffinity": node, "podAffinity": near_cache}
    own = {"matchLabels": r.selector(ms, "decode")}
    assert decode == {
        "nodeAffinity": node,
        "podAffinity": {REQUIRED: []},
        "podAntiAffinity": {REQUIRED: [{"topologyKey": HOSTNAME, "labelSelector": own}]},
    }
    assert ms.role("decode").affinity == {"podAntiAffinity": one_per_node}  # not filled in
    assert "affinity" not in r.render(parse(body()))[0]["spec"]["template"]["spec"]


def _pod_term(**term: Any) -> dict[str, Any]:
    return {"podAntiAffinity": {REQUIRED: [{"topologyKey": HOSTNAME, **term}]}}


def _node_term(*requirements: dict[str, Any]) -> dict[str, Any]:
    terms = [{"matchExpressions": list(requirements)}]
    return {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": terms}}}


@pytest.mark.parametrize(
    ("affinity", "field", "message"),
    [
        ({"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": []}}}, "nodeSelectorTerms", "at least"),
        (_node_term({"key": "g", "operator": "In"}), "matchExpressions[0].values", "needs values"),
        (_node_term({"key": "g", "operator": "Gt", "values": ["a"]}), "[0].values", "one integer"),
        (
            _node_term({"key": "g", "operator": "Exists", "values": ["1"]}),
            "matchExpressions[0].values",
            "takes no values",
        ),
        (_node_term({"key": "g", "operator": "Near"}), "[0].operator", "unknown operator"),
        (_pod_term(topologyKey=""), f"podAntiAffinity.{REQUIRED}[0].topologyKey", "non-empty"),
        (_pod_term(matchLabelKeys=[ROLE_LABEL]), "[0].matchLabelKeys[0]", "the role's pods"),
        (
            _pod_term(matchLabelKeys=["a"], mismatchLabelKeys=["a"]),
            "[0].matchLabelKeys[0]",
            "in mismatchLabelKeys too",
        ),
        (
            _pod_term(labelSelector={"matchExpressions": [{"key": "a", "operator": "Lt"}]}),
            "[0].labelSelector.matchExpressions[0].operator",
            "In, NotIn, Exists or DoesNotExist",
        ),
        (
            {"podAffinity": {PREFERRED: [{"weight": 0, "podAffinityTerm": {"topologyKey": ZONE}}]}},
            f"podAffinity.{PREFERRED}[0].weight",
            "from 1 to 100",
        ),
        (
            {"podAffinity": {PREFERRED: [{"weight": 5, "podAffinityTerm": {}}]}},
            f"podAffinity.{PREFERRED}[0].podAffinityTerm.topologyKey",
            "non-empty",
        ),
        ({"nodeAffinity": [{"key": "g"}]}, "affinity.nodeAffinity", "object"),
        ({"nodeSelector": {"a": "b"}}, "affinity.nodeSelector", "unknown field"),
    ],
)
def test_bad_affinity_names_the_field(affinity: Any, field: str, message: str) -> None:
    for where, spec in (
        ("spec.affinity", {"affinity": affinity}),
        ("spec.roles.serve.affinity", {"roles": {"serve": {"replicas": 1, "affinity": affinity}}}),
    ):
        with pytest.raises(InputError) as err:
            parse(body(**spec))
        text = str(err.value)
        assert field in text and text.index(where) < text.index(field), text
        assert message in text, text


def test_replicas_can_be_left_out_per_role() -> None:
    ms = parse(pd_body())
    objects = by_key(r.render(ms, with_replicas={"prefill": False}))
    assert "replicas" not in objects[("Deployment", "llm-prefill")]["spec"]
    assert objects[("Deployment", "llm-decode")]["spec"]["replicas"] == 3
    assert all("replicas" not in o["spec"] for o in r.render(ms, with_replicas=False))
    assert r.replicas_handover(ms, "decode", 5) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "llm-decode", "namespace": "ns"},
        "spec": {"replicas": 5},
    }


def test_rollout_never_surges() -> None:
    strategy = r.render(parse(body()))[0]["spec"]["strategy"]
    assert strategy["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


# --- drift --------------------------------------------------------------------------------------


def as_stored(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server hands back: defaults added, quantities canonical."""
    stored = copy.deepcopy(obj)
    stored["metadata"]["uid"] = "x"
    stored["metadata"]["resourceVersion"] = "12"
    stored["status"] = {"replicas": 1}
    if stored["kind"] == "Deployment":
        pod = stored["spec"]["template"]["spec"]
        pod["restartPolicy"] = "Always"
        res = pod["containers"][0]["resources"]
        for part in res.values():
            for name, value in list(part.items()):
                part[name] = str(value)
        if "cpu" in res.get("requests", {}):  # an equivalent spelling, as the server may store
            res["requests"]["cpu"] = f"{int(parse_quantity(res['requests']['cpu']) * 1000)}m"
    return stored


def test_no_drift_against_what_the_server_stores() -> None:
    for obj in r.render(parse(pd_body())):
        assert not r.drifted(obj, as_stored(obj))


def test_drift_detects_scale_edit_and_label_loss() -> None:
    deployment = r.render(parse(body()))[0]
    scaled = as_stored(deployment)
    scaled["spec"]["replicas"] = 5
    assert r.drifted(deployment, scaled)
    edited = as_stored(deployment)
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "other"
    assert r.drifted(deployment, edited)
    unlabelled = as_stored(deployment)
    del unlabelled["metadata"]["labels"][ROLE_LABEL]
    assert r.drifted(deployment, unlabelled)
    more_gpus = as_stored(deployment)
    more_gpus["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][GPU_RESOURCE] = (
        "2"
    )
    assert r.drifted(deployment, more_gpus)


def test_without_replicas_a_scale_is_not_drift() -> None:
    ms = parse(body(autoscaling={"policyRef": {"name": "p"}}))
    deployment = r.render(ms, with_replicas=False)[0]
    scaled = as_stored(r.render(ms)[0])
    scaled["spec"]["replicas"] = 9
    assert not r.drifted(deployment, scaled)


# --- properties -----------------------------------------------------------------------------------

quantities = hs.sampled_from(["1", "500m", "8", "2.5", "64Gi", "100M", "1e3"])
resources = hs.fixed_dictionaries(
    {},
    optional={
        "gpus": hs.integers(0, 8),
        "cpu": quantities,
        "memory": hs.sampled_from(["1Gi", "64Gi", "512Mi"]),
        "extra": hs.dictionaries(
            hs.sampled_from(["rdma/ib", "ephemeral-storage", "hugepages-2Mi"]),
            hs.sampled_from(["1", "2", 4]),
            max_size=2,
        ),
    },
)


@hs.composite
def spread(draw: hs.DrawFn) -> dict[str, Any]:
    when = draw(hs.sampled_from(["DoNotSchedule", "ScheduleAnyway"]))
    c: dict[str, Any] = {
        "maxSkew": draw(hs.integers(1, 5)),
        "topologyKey": draw(hs.sampled_from([HOSTNAME, ZONE, "rack"])),
        "whenUnsatisfiable": when,
    }
    if when == "DoNotSchedule" and draw(hs.booleans()):
        c["minDomains"] = draw(hs.integers(1, 4))
    if draw(hs.booleans()):
        c["labelSelector"] = {"matchLabels": {"app": draw(hs.sampled_from(["a", "b"]))}}
    if draw(hs.booleans()):
        c["matchLabelKeys"] = ["pod-template-hash"]
    return c


spreads = hs.lists(
    spread(), max_size=3, unique_by=lambda c: (c["topologyKey"], c["whenUnsatisfiable"])
)


env_vars = hs.one_of(
    hs.fixed_dictionaries({"name": hs.sampled_from(["A", "DUNNAGE_ROLE"]), "value": hs.text()}),
    hs.fixed_dictionaries(
        {
            "name": hs.sampled_from(["HF_TOKEN", "DUNNAGE_MODEL_SERVICE"]),
            "valueFrom": hs.fixed_dictionaries(
                {},
                optional={
                    "secretKeyRef": hs.just({"name": "s", "key": "k"}),
                    "configMapKeyRef": hs.just({"name": "c", "key": "k.1", "optional": False}),
                },
            ).filter(lambda ref: len(ref) == 1),
        }
    ),
)
envs = hs.lists(env_vars, max_size=3, unique_by=lambda e: e["name"])


affinities = hs.fixed_dictionaries(
    {
        "nodeAffinity": hs.sampled_from(["a", "b"]).map(
            lambda v: _node_term({"key": "g", "operator": "In", "values": [v]})["nodeAffinity"]
        ),
    },
    optional={
        "podAffinity": hs.sampled_from(
            [
                {PREFERRED: [{"weight": 10, "podAffinityTerm": {"topologyKey": ZONE}}]},
                _pod_term(labelSelector={"matchLabels": {"app": "a"}})["podAntiAffinity"],
            ]
        ),
        "podAntiAffinity": hs.just(
            _pod_term(matchLabelKeys=["pod-template-hash"])["podAntiAffinity"]
        ),
    },
)


@hs.composite
def role(draw: hs.DrawFn) -> dict[str, Any]:
    replicas = draw(hs.integers(0, 50))
    spec: dict[str, Any] = {"replicas": replicas}
    if draw(hs.booleans()):
        spec["minReplicas"] = draw(hs.integers(0, replicas))
    if draw(hs.booleans()):
        spec["maxReplicas"] = draw(hs.integers(max(replicas, 1), 100))
    if draw(hs.booleans()):
        spec["resources"] = draw(resources)
    if draw(hs.booleans()):
        spec["args"] = draw(hs.lists(hs.sampled_from(["--a", "--b=1", "-x"]), max_size=3))
    if draw(hs.booleans()):
        spec["topologySpreadConstraints"] = draw(spreads)
    if draw(hs.booleans()):
        spec["affinity"] = draw(affinities)
    if draw(hs.booleans()):
        spec["priorityClassName"] = "role-high"
    return spec


@hs.composite
def model_services(draw: hs.DrawFn) -> dict[str, Any]:
    name = draw(hs.from_regex(r"[a-z]([-a-z0-9]{0,53}[a-z0-9])?", fullmatch=True))
    pd = draw(hs.booleans())
    roles = {"prefill": draw(role()), "decode": draw(role())} if pd else {"serve": draw(role())}
    spec: dict[str, Any] = {
        "model": {"name": "m", "uri": draw(hs.sampled_from(["hf://o/m", "pvc://w/p", "pvc://w"]))},
        "engine": {"image": "img", "port": draw(hs.integers(1, 65535)), "env": draw(envs)},
        "resources": draw(resources),
        "roles": roles,
    }
    if draw(hs.booleans()):
        spec["autoscaling"] = {"policyRef": {"name": "p"}}
    if draw(hs.booleans()):
        spec["priorityClassName"] = "high"
    if draw(hs.booleans()):
        spec["topologySpreadConstraints"] = draw(spreads)
    if draw(hs.booleans()):
        spec["affinity"] = draw(affinities)
    if draw(hs.booleans()):
        spec["engine"]["startupTimeoutSeconds"] = draw(hs.integers(30, 86400))
    if draw(hs.booleans()):
        spec["podMetadata"] = {"labels": {"team": "llm"}, "annotations": {"note": "x y"}}
    if draw(hs.booleans()):
        spec["serviceAccountName"] = "engines"
        spec["imagePullSecrets"] = [{"name": "registry"}]
    return {"metadata": {"name": name, "namespace": "ns", "uid": "u"}, "spec": spec}


@settings(max_examples=150, deadline=None)
@given(model_services())
def test_render_invariants(raw: dict[str, Any]) -> None:
    ms: ModelService = parse(raw)
    objects = r.render(ms)
    assert objects == r.render(parse(copy.deepcopy(raw)))  # deterministic
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(set(names)) == len(names) == 3 * len(ms.roles) + 1
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "u"
        assert obj["metadata"]["labels"][MODEL_SERVICE_LABEL] == ms.name
        assert not r.drifted(obj, as_stored(obj))
        json.dumps(obj)  # plain data, sendable as an apply body
    for role_spec, deployment in zip(ms.roles, objects, strict=False):
        assert deployment["kind"] == "Deployment"
        assert deployment["spec"]["replicas"] == role_spec.replicas
        res = engine(deployment)["resources"]
        gpus = res.get("requests", {}).get(GPU_RESOURCE, 0)
        assert gpus == res.get("limits", {}).get(GPU_RESOURCE, 0) == role_spec.resources.gpus
        shared = raw["spec"]["resources"].get("extra", {})
        own = raw["spec"]["roles"][role_spec.name].get("resources", {}).get("extra", {})
        for name, amount in {**shared, **own}.items():
            assert res["requests"][name] == res["limits"][name] == str(amount)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        _check_spread(raw, role_spec.name, deployment)
        _check_affinity(raw, role_spec.name, deployment)
        wanted = raw["spec"]["roles"][role_spec.name].get("priorityClassName")
        wanted = wanted or raw["spec"].get("priorityClassName")
        assert deployment["spec"]["template"]["spec"].get("priorityClassName") == wanted
        probe = engine(deployment)["startupProbe"]
        allowed = probe["periodSeconds"] * probe["failureThreshold"]
        assert ms.startup_seconds <= allowed < ms.startup_seconds + probe["periodSeconds"]
        env = engine(deployment)["env"]
        assert len({e["name"] for e in env}) == len(env)
        assert raw["spec"]["engine"]["env"] == env[len(env) - len(raw["spec"]["engine"]["env"]) :]


def _check_affinity(raw: dict[str, Any], role: str, deployment: dict[str, Any]) -> None:
    """Each kind the role's if it has it, else the ModelService's; a pod term without a
    selector gets the role's own."""
    own = raw["spec"]["roles"][role].get("affinity", {})
    expected = copy.deepcopy({**raw["spec"].get("affinity", {}), **own})
    for kind in ("podAffinity", "podAntiAffinity"):
        section = expected.get(kind, {})
        for term in [
            *section.get(REQUIRED, []),
            *(p["podAffinityTerm"] for p in section.get(PREFERRED, [])),
        ]:
            if "labelSelector" not in term:
                term["labelSelector"] = {
                    "matchLabels": deployment["spec"]["selector"]["matchLabels"]
                }
    assert deployment["spec"]["template"]["spec"].get("affinity", {}) == expected


def _check_spread(raw: dict[str, Any], role: str, deployment: dict[str, Any]) -> None:
    """The role's constraints all there; the ModelService's unless the role has one on the same
    key and action; no pair twice (the API server refuses it); a missing selector is the role's."""
    pod = deployment["spec"]["template"]
    rendered = pod["spec"].get("topologySpreadConstraints", [])
    pairs = [(c["topologyKey"], c["whenUnsatisfiable"]) for c in rendered]
    assert len(set(pairs)) == len(pairs)
    own = raw["spec"]["roles"][role].get("topologySpreadConstraints", [])
    shared = raw["spec"].get("topologySpreadConstraints", [])
    taken = {(c["topologyKey"], c["whenUnsatisfiable"]) for c in own}
    wanted = [*own, *(c for c in shared if (c["topologyKey"], c["whenUnsatisfiable"]) not in taken)]
    assert len(rendered) == len(wanted)
    for c in wanted:
        default = {"labelSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}}
        assert {**default, **c} in rendered
    for c in rendered:
        if "labelSelector" not in c:
            continue
        matched = c["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert matched == ("app" not in c["labelSelector"]["matchLabels"])


@settings(max_examples=300, deadline=None)
@given(model_services(), hs.data())
def test_any_bad_value_anywhere_is_an_input_error(raw: dict[str, Any], data: hs.DataObject) -> None:
    """One value of a valid ModelService replaced by any JSON value: parsed, or refused with an
    InputError, never another exception (the operator reports it as Degraded/InvalidSpec)."""
    raw = copy.deepcopy(raw)  # the strategies share their dicts between examples
    raw["spec"]["affinity"] = {
        "podAntiAffinity": _pod_term()["podAntiAffinity"],
        **_node_term({"key": "g", "operator": "Gt", "values": ["1"]}),
    }
    raw["spec"]["engine"]["env"] = [
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    ]
    replace_a_field(raw["spec"], data, wide_json)  # metadata is the API server's
    try:
        ms = parse(raw)
    except InputError as err:
        assert "ModelService ns/" in str(err)
    else:
        json.dumps(r.render(ms))
