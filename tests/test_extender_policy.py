"""PackingPolicy parsing: the sample, defaults, and errors that name the object and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as hs

from dunnage.errors import InputError
from dunnage.scheduler_extender.policy import PackingPolicy, policy_from_object
from tests.json_fuzz import wide_json

ROOT = Path(__file__).resolve().parent.parent


def policy(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dunnage.io/v1alpha1",
        "kind": "PackingPolicy",
        "metadata": {"name": "gpu"},
        "spec": spec,
    }


def test_sample_policy_parses() -> None:
    doc = yaml.safe_load((ROOT / "manifests/samples/packingpolicy.yaml").read_text())
    parsed = policy_from_object(doc)
    assert parsed.name == "default" and parsed.time_budget_seconds == 1.0
    assert parsed.max_evictions_per_plan == 8 and parsed.min_trigger_priority == 1000
    settings = parsed.to_settings()
    assert settings.policy == "default" and settings.max_moves == 8
    assert settings.namespaces == frozenset() and settings.plan_ttl_seconds == 60


def test_defaults_and_full_spec() -> None:
    assert policy_from_object(policy()) == PackingPolicy(name="gpu")
    parsed = policy_from_object(
        policy(
            timeBudgetSeconds=10,
            maxEvictionsPerPlan=0,
            maxMovesPerPlan=3,
            namespaces=["ml", "serving"],
            minTriggerPriority=-5,
            dryRun=True,
            gpuResourceNames=["nvidia.com/gpu", "dunnage.io/gpu-milli"],
            batchWindowSeconds=0,
            batchQuietSeconds=2,
            planTTLSeconds=120,
            maxConcurrentEvictions=1,
            planHistoryLimit=0,
        )
    )
    assert parsed == PackingPolicy(
        name="gpu",
        time_budget_seconds=10.0,
        max_evictions_per_plan=0,
        max_moves_per_plan=3,
        namespaces=frozenset({"ml", "serving"}),
        min_trigger_priority=-5,
        dry_run=True,
        gpu_resource_names=("nvidia.com/gpu", "dunnage.io/gpu-milli"),
        batch_window_seconds=0.0,
        batch_quiet_seconds=2.0,
        plan_ttl_seconds=120.0,
        max_concurrent_evictions=1,
        plan_history_limit=0,
    )
    assert parsed.to_settings().eviction_concurrency == 1
    assert parsed.to_settings().plan_history_limit == 0
    assert parsed.to_settings().batch_quiet_seconds == 2.0
    with pytest.raises(AttributeError):
        parsed.dry_run = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"timeBudgetSeconds": 0.05}, "spec.timeBudgetSeconds", "between 0.1 and 60"),
        ({"timeBudgetSeconds": "1s"}, "spec.timeBudgetSeconds", "expected a number"),
        ({"timeBudgetSeconds": True}, "spec.timeBudgetSeconds", "expected a number"),
        ({"maxEvictionsPerPlan": -1}, "spec.maxEvictionsPerPlan", "between 0"),
        ({"maxMovesPerPlan": 1.5}, "spec.maxMovesPerPlan", "expected an integer"),
        ({"namespaces": "ml"}, "spec.namespaces", "list of strings"),
        ({"namespaces": ["ml", "Bad_NS"]}, "spec.namespaces[1]", "namespace name"),
        ({"namespaces": ["ml", "ml"]}, "spec.namespaces[1]", "duplicate"),
        ({"minTriggerPriority": "high"}, "spec.minTriggerPriority", "expected an integer"),
        ({"dryRun": "yes"}, "spec.dryRun", "true or false"),
        ({"gpuResourceNames": []}, "spec.gpuResourceNames", "at least one"),
        ({"gpuResourceNames": ["gpu"]}, "spec.gpuResourceNames[0]", "domain prefix"),
        ({"gpuResourceNames": ["nvidia.com/gpu", "a b"]}, "spec.gpuResourceNames[1]", "resource"),
        ({"timeBudgetSeconds": 30, "planTTLSeconds": 30}, "spec.planTTLSeconds", "greater than"),
        ({"batchWindowSeconds": 10, "planTTLSeconds": 5}, "spec.batchWindowSeconds", "less than"),
        ({"planTTLSeconds": 7200}, "spec.planTTLSeconds", "between 1 and 3600"),
        ({"maxConcurrentEvictions": 0}, "spec.maxConcurrentEvictions", "between 1 and 100"),
        ({"planHistoryLimit": -1}, "spec.planHistoryLimit", "between 0 and 10000"),
        ({"batchQuietSeconds": 61}, "spec.batchQuietSeconds", "between 0 and 60"),
    ],
)
def test_bad_fields_name_object_and_field(spec: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InputError) as err:
        policy_from_object(policy(**spec))
    assert err.value.obj == "PackingPolicy gpu" and err.value.field == field
    assert words in str(err.value)


def test_bad_objects() -> None:
    for obj, field in (
        ({"kind": "PackingPolicy", "metadata": {}}, "metadata.name"),
        ({"kind": "Pod", "metadata": {"name": "x"}}, "kind"),
        ({"apiVersion": "dunnage.io/v1", "metadata": {"name": "x"}}, "apiVersion"),
        ({"metadata": {"name": "x"}, "spec": []}, "spec"),
    ):
        with pytest.raises(InputError) as err:
            policy_from_object(obj)
        assert err.value.field == field
    with pytest.raises(InputError):
        policy_from_object("PackingPolicy")


def test_crds_are_structural_and_match_what_the_planner_writes() -> None:
    policy_crd = yaml.safe_load((ROOT / "manifests/crds/packingpolicy.yaml").read_text())
    plan_crd = yaml.safe_load((ROOT / "manifests/crds/packingplan.yaml").read_text())
    for crd, kind in ((policy_crd, "PackingPolicy"), (plan_crd, "PackingPlan")):
        assert crd["spec"]["group"] == "dunnage.io" and crd["spec"]["scope"] == "Cluster"
        assert crd["spec"]["names"]["kind"] == kind
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    spec = policy_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert len(spec["x-kubernetes-validations"]) >= 2
    # the CRD's defaults are the parser's (a policy applied without them reads the same)
    defaults = PackingPolicy()
    assert spec["properties"]["maxConcurrentEvictions"]["default"] == (
        defaults.max_concurrent_evictions
    )
    assert spec["properties"]["planTTLSeconds"]["default"] == defaults.plan_ttl_seconds
    assert spec["properties"]["planHistoryLimit"]["default"] == defaults.plan_history_limit
    assert spec["properties"]["batchQuietSeconds"]["default"] == defaults.batch_quiet_seconds
    # every phase the fallback planner sets is allowed by the PackingPlan schema
    status = plan_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    phases = set(status["properties"]["phase"]["enum"])
    fallback = (ROOT / "dunnage/scheduler_extender/fallback.py").read_text()
    for phase in ("Executing", "Succeeded", "Expired", "Certified", "NoImprovement", "DryRun"):
        assert f'"{phase}"' in fallback and phase in phases
    assert "evicted" in status["properties"]


def test_policy_source_refreshes_and_keeps_the_last_good_policy() -> None:
    from dunnage.scheduler_extender.live import PolicySource

    now = [0.0]
    answers: list[Any] = [
        PackingPolicy(name="default", time_budget_seconds=2.0),
        InputError("bad", obj="PackingPolicy default", field="spec.dryRun"),
        RuntimeError("API server down"),
        PackingPolicy(name="default", dry_run=True),
    ]

    def fetch() -> PackingPolicy:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    source = PolicySource(fetch, refresh_seconds=5.0, clock=lambda: now[0])
    assert source.current().time_budget_seconds == 2.0
    now[0] = 1.0
    assert source.current().time_budget_seconds == 2.0 and len(answers) == 3  # not refetched
    for t in (6.0, 12.0):
        now[0] = t
        assert source.current().time_budget_seconds == 2.0  # errors keep the last good one
    now[0] = 18.0
    assert source.settings().dry_run is True and source.settings().policy == "default"


def test_serve_with_an_unreadable_kubeconfig_exits_2(tmp_path: Path) -> None:
    from dunnage.cli import main

    missing = tmp_path / "nope.yaml"
    assert main(["extender", "serve", "--port", "0", "--kubeconfig", str(missing)]) == 2


def test_serve_in_cluster_outside_a_pod_exits_2_naming_the_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dunnage.cli import main

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["extender", "serve", "--port", "0", "--in-cluster"]) == 2
    err = capsys.readouterr().err
    assert "--in-cluster" in err and "Traceback" not in err


def test_serve_with_a_kubeconfig_and_in_cluster_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dunnage.cli import main

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    assert main(["extender", "serve", "--kubeconfig", str(kubeconfig), "--in-cluster"]) == 2
    assert "not both" in capsys.readouterr().err


def test_status_says_whether_the_policy_is_followed_and_moves_only_on_a_flip() -> None:
    from dunnage.scheduler_extender.policy import policy_status

    obj = policy(maxConcurrentEvictions=4) | {"metadata": {"name": "gpu", "generation": 3}}
    accepted = policy_status(obj, None, "2026-12-04T10:00:00Z")
    (ready,) = accepted["conditions"]
    assert accepted["observedGeneration"] == 3 and ready["observedGeneration"] == 3
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Accepted")
    assert ready["lastTransitionTime"] == "2026-12-04T10:00:00Z"
    # Read again later: the same status, so nothing is written.
    assert policy_status(obj | {"status": accepted}, None, "2026-12-04T11:00:00Z") == accepted

    bad = obj | {"metadata": {"name": "gpu", "generation": 4}, "status": accepted}
    bad["spec"] = {"maxConcurrentEvictions": 0}
    with pytest.raises(InputError) as err:
        policy_from_object(bad)
    refused = policy_status(bad, err.value, "2026-12-04T12:00:00Z")
    (ready,) = refused["conditions"]
    assert refused["observedGeneration"] == 4
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.maxConcurrentEvictions" in ready["message"]
    assert ready["lastTransitionTime"] == "2026-12-04T12:00:00Z"


SPEC_FIELDS = (
    "timeBudgetSeconds",
    "batchWindowSeconds",
    "batchQuietSeconds",
    "planTTLSeconds",
    "maxEvictionsPerPlan",
    "maxMovesPerPlan",
    "maxConcurrentEvictions",
    "planHistoryLimit",
    "minTriggerPriority",
    "dryRun",
    "namespaces",
    "gpuResourceNames",
)


@settings(max_examples=300, deadline=None)
@given(hs.dictionaries(hs.sampled_from(SPEC_FIELDS), wide_json, max_size=4))
def test_any_spec_values_parse_or_name_the_field(spec: dict[str, Any]) -> None:
    """Whatever an admin writes into the spec (an older CRD, a client that skips validation):
    a policy, or an InputError naming the PackingPolicy, never another exception."""
    try:
        parsed = policy_from_object(policy(**spec))
    except InputError as err:
        assert str(err).startswith("PackingPolicy gpu, field spec."), str(err)
    else:
        assert 0 < parsed.time_budget_seconds < parsed.plan_ttl_seconds
