"""The AutoscalingPolicy CRD, its samples, the parser's checks (the CRD's rules again), building
policies from it, and the status it renders."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as hs

from dunnage.autoscaling.learned import LearnedModel, LearnedTargets, LearningSettings, fresh_agents
from dunnage.autoscaling.spec import (
    MAX_DECISIONS,
    build_policy,
    learning_key,
    parse,
    status_patch,
)
from dunnage.autoscaling.types import SLO, Decision, RoleDecision, RoleObservation
from dunnage.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "manifests" / "crds" / "autoscalingpolicy.yaml"
SAMPLE = ROOT / "manifests" / "samples" / "autoscalingpolicy.yaml"


def crd_version() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    return dict(version)


def samples() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]


def test_crd_shape() -> None:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "autoscalingpolicies.dunnage.io"
    assert crd["spec"]["group"] == "dunnage.io" and crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == "AutoscalingPolicy"
    v = crd_version()
    assert v["name"] == "v1alpha1" and v["served"] and v["storage"]
    assert v["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in v["additionalPrinterColumns"]}
    assert columns["Policy"] == ".spec.policy"
    assert columns["Targets"] == ".status.summary"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        if "type" in node or "x-kubernetes-validations" in node:
            out.append((path, node))
        for key, value in node.items():
            out += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _walk(value, f"{path}[{i}]")
    return out


def test_crd_is_structural_with_cel_rules() -> None:
    schema = crd_version()["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        if "properties" in path.split(".")[-1:]:
            continue
        if node.get("type") == "object":
            assert (
                "properties" in node or "additionalProperties" in node or path.endswith("metadata")
            ), path
    spec = schema["properties"]["spec"]
    rules = [r["rule"] for _, n in _walk(spec) for r in n.get("x-kubernetes-validations", [])]
    joined = " ".join(rules)
    for needle in (
        "self.minReplicas <= self.maxReplicas",
        "self.minTarget <= self.maxTarget",
        "self.policy != 'static'",
        "panicWindowPercentage",
        "initialPolicy",
    ):
        assert needle in joined, needle
    assert spec["properties"]["policy"]["enum"] == ["kpa", "static", "learned"]
    kpa = spec["properties"]["kpa"]["properties"]
    assert kpa["stableWindowSeconds"]["default"] == 60
    assert kpa["panicWindowPercentage"]["default"] == 10
    assert kpa["panicThresholdPercentage"]["default"] == 200
    assert kpa["maxScaleUpRate"]["default"] == 1000 and kpa["maxScaleDownRate"]["default"] == 2
    assert kpa["targetUtilizationPercentage"]["default"] == 70
    assert kpa["containerConcurrency"]["default"] == 100


def test_crd_learning_defaults_are_the_ones_training_uses() -> None:
    """The API server fills in the CRD's defaults, so online learning runs on them; a policy
    file trained offline ran on LearningSettings'. The parser's defaults must agree too."""
    schema = crd_version()["schema"]["openAPIV3Schema"]
    learning = schema["properties"]["spec"]["properties"]["learning"]["properties"]
    names = {
        "decisionIntervalSeconds": "decision_interval",
        "explorationRate": "exploration_rate",
        "learningRate": "learning_rate",
        "discount": "discount",
        "sloPenalty": "slo_penalty",
    }
    trained = LearningSettings()
    for crd_name, attribute in names.items():
        assert learning[crd_name]["default"] == getattr(trained, attribute), crd_name
    parsed = parse(
        {
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"policy": "learned", "slo": {"ttftSeconds": 1, "tpotSeconds": 0.1}},
        }
    )
    assert parsed.learning == trained


def test_chart_ships_the_same_crd() -> None:
    copy_ = ROOT / "helm" / "dunnage" / "crds" / CRD.name
    assert copy_.read_bytes() == CRD.read_bytes()


def test_samples_parse() -> None:
    docs = samples()
    assert {d["spec"]["policy"] for d in docs} == {"learned", "static"}
    for raw in docs:
        spec = parse(raw)
        assert spec.slo == SLO(2.0, 0.1, 0.9)
        assert spec.kpa.stable_window == 60 and spec.kpa.default_target == 70
    learned = parse(docs[0])
    assert learned.initial_policy == ("llama-8b-policy", "policy.json")
    assert learned.roles["prefill"].bounds.max_target == 16
    assert learned.prometheus_url == "http://prometheus.monitoring.svc:9090"
    assert learned.rate_window_seconds == 60  # the CRD's default


def test_rate_window_is_whole_seconds() -> None:
    raw = _base()
    raw["spec"]["metrics"] = {"prometheus": {"rateWindowSeconds": 4}}
    assert parse(raw).rate_window_seconds == 4


def _base() -> dict[str, Any]:
    return copy.deepcopy(samples()[1])  # the static one


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda s: s.update(policy="magic"), "spec.policy"),
        (lambda s: s.pop("slo"), "spec.slo.ttftSeconds"),
        (lambda s: s["slo"].update(tpotSeconds=0), "spec.slo.tpotSeconds"),
        (lambda s: s["slo"].update(attainment=1.5), "spec.slo.attainment"),
        (lambda s: s["roles"]["decode"].pop("target"), "spec.roles.decode.target"),
        (
            lambda s: s["roles"]["decode"].update(minReplicas=9, maxReplicas=3),
            "spec.roles.decode.minReplicas",
        ),
        (lambda s: s["roles"]["decode"].update(maxTarget=10), "spec.roles.decode.target"),
        (lambda s: s["roles"].update(serve={"target": 3}), "spec.roles"),
        (lambda s: s["roles"].update(router={"target": 3}), "spec.roles"),
        (lambda s: s.update(roles={}), "spec.roles"),
        (
            lambda s: s.update(kpa={"stableWindowSeconds": 6, "panicWindowPercentage": 5}),
            "spec.kpa.panicWindowPercentage",
        ),
        (lambda s: s.update(kpa={"maxScaleDownRate": 1}), "spec.kpa.maxScaleDownRate"),
        (lambda s: s.update(kpa={"metric": "qps"}), "spec.kpa.metric"),
        (
            lambda s: s.update(kpa={"tickSeconds": 30, "stableWindowSeconds": 10}),
            "spec.kpa.tickSeconds",
        ),
        (
            lambda s: s.update(learning={"initialPolicy": {"configMapName": "p"}}),
            "spec.learning.initialPolicy",
        ),
        (lambda s: s.update(learning={"explorationRate": 0.9}), "spec.learning.explorationRate"),
        (lambda s: s.update(learning={"persistState": "yes"}), "spec.learning.persistState"),
        (lambda s: s.update(kpa={"fixedLimit": "true"}), "spec.kpa.fixedLimit"),
        (lambda s: s.update(kpa={"scaleToZero": 1}), "spec.kpa.scaleToZero"),
        (
            lambda s: s.update(kpa={"activationTimeoutSeconds": 0}),
            "spec.kpa.activationTimeoutSeconds",
        ),
        (lambda s: s.update(learning={"online": "false"}), "spec.learning.online"),
        (lambda s: s.update(metrics={"source": "datadog"}), "spec.metrics.source"),
        (
            lambda s: s.update(metrics={"prometheus": {"activationQuery": " "}}),
            "spec.metrics.prometheus.activationQuery",
        ),
        (
            lambda s: s.update(metrics={"prometheus": {"rateWindowSeconds": 1}}),
            "spec.metrics.prometheus.rateWindowSeconds",
        ),
        (
            lambda s: s.update(metrics={"prometheus": {"rateWindowSeconds": 4.5}}),
            "spec.metrics.prometheus.rateWindowSeconds",
        ),
    ],
)
def test_parser_rejects_what_the_crd_rejects(mutate: Any, field: str) -> None:
    raw = _base()
    mutate(raw["spec"])
    with pytest.raises(InputError) as err:
        parse(raw)
    assert err.value.field == field
    assert "AutoscalingPolicy default/llama-8b-static" in str(err.value)


def test_the_learning_key_changes_with_what_the_reward_means_and_nothing_else() -> None:
    raw = _base()
    raw["spec"]["policy"] = "learned"
    key = learning_key(parse(raw), None)
    assert learning_key(parse(raw), '{"a": 1}') != key != learning_key(parse(raw), '{"a": 2}')
    for mutate, changes in [
        (lambda s: s["slo"].update(ttftSeconds=9), True),
        (lambda s: s["slo"].update(attainment=0.95), True),
        (lambda s: s.update(kpa={"metric": "rps"}), True),
        (lambda s: s.update(learning={"sloPenalty": 3}), True),
        (lambda s: s["roles"]["decode"].update(maxReplicas=99), False),
        (
            lambda s: s.update(learning={"explorationRate": 0.2, "decisionIntervalSeconds": 60}),
            False,
        ),
        (lambda s: s.update(kpa={"stableWindowSeconds": 30}), False),
        (lambda s: s.update(kpa={"fixedLimit": True}), True),
        (lambda s: s.update(kpa={"fixedLimit": False, "containerConcurrency": 9}), False),
    ]:
        edited = copy.deepcopy(raw)
        mutate(edited["spec"])
        assert (learning_key(parse(edited), None) != key) is changes, edited["spec"]


def test_build_policies_of_each_kind() -> None:
    raw = _base()
    static = build_policy(parse(raw), ("prefill", "decode"))
    assert static.target("prefill") == 0.5 and static.target("decode") == 64
    assert static.concurrency_limit("decode") == 92
    raw["spec"]["policy"] = "kpa"
    kpa = build_policy(parse(raw), ("prefill", "decode"))
    assert kpa.target("decode") == 70 and kpa.concurrency_limit("decode") == 100
    with pytest.raises(InputError, match="no static target for role serve"):
        build_policy(parse(_base()), ("serve",))
    learned_raw = samples()[0]
    spec = parse(learned_raw)
    agents = fresh_agents(["prefill", "decode"], {r: spec.roles[r].bounds for r in spec.roles})
    model = LearnedModel(agents, spec.slo, LearningSettings(), "disaggregated", "x")
    learned = build_policy(spec, ("prefill", "decode"), model)
    assert isinstance(learned.source, LearnedTargets)
    assert learned.target("decode") == model.home_targets()["decode"]
    # Without a trained file, roles start fresh within their bounds.
    fresh = build_policy(spec, ("prefill", "decode"))
    assert 0.1 <= fresh.target("prefill") <= 16
    # A file trained on the rps metric is refused while the policy scales on concurrency...
    rps = LearnedModel(agents, spec.slo, LearningSettings(), "disaggregated", "x", metric="rps")
    with pytest.raises(InputError, match="targets are on the rps metric") as err:
        build_policy(spec, ("prefill", "decode"), rps)
    assert err.value.field == "spec.learning.initialPolicy"
    # ...and taken when it scales on rps; roles without a file start on the rps ladder.
    learned_raw["spec"]["kpa"] = {"metric": "rps", "containerConcurrency": 256}
    rps_spec = parse(learned_raw)
    assert rps_spec.kpa.metric == "rps" and rps_spec.kpa.limit_for(12.7) == 256
    on_rps = build_policy(rps_spec, ("prefill", "decode"), rps)
    assert on_rps.settings.metric == "rps"
    with pytest.raises(InputError, match="targets are on the concurrency metric"):
        build_policy(rps_spec, ("prefill", "decode"), model)
    fresh_rps = build_policy(rps_spec, ("prefill", "decode"))
    assert fresh_rps.source.agents["prefill"].rungs[0] >= 1.0  # type: ignore[attr-defined]


def test_a_fixed_limit_from_the_spec_or_the_policy_file() -> None:
    """spec.kpa.fixedLimit keeps each replica's limit at containerConcurrency; a learned
    policy file trained with a fixed limit brings its own, which the status then shows."""
    raw = _base()
    raw["spec"]["kpa"] = {"fixedLimit": True, "containerConcurrency": 256}
    static = build_policy(parse(raw), ("prefill", "decode"))
    assert static.concurrency_limit("decode") == 256 and static.concurrency_limit("prefill") == 256
    learned_raw = samples()[0]
    spec = parse(learned_raw)
    assert not spec.kpa.fixed_limit  # the CRD's default
    agents = fresh_agents(["prefill", "decode"], {r: spec.roles[r].bounds for r in spec.roles})
    trained = LearnedModel(
        agents, spec.slo, LearningSettings(), "disaggregated", "x", concurrency_limit=200
    )
    learned = build_policy(spec, ("prefill", "decode"), trained)
    assert (
        learned.concurrency_limit("decode") == 200 and learned.concurrency_limit("prefill") == 200
    )
    decision = learned.decide(0.0)
    assert decision.roles["decode"].concurrency_limit == 200  # what the status shows
    learned_raw["spec"]["kpa"] = {"fixedLimit": True, "containerConcurrency": 256}
    with pytest.raises(InputError, match="limit fixed at 200") as err:
        build_policy(parse(learned_raw), ("prefill", "decode"), trained)
    assert err.value.field == "spec.kpa.containerConcurrency"
    following = LearnedModel(agents, spec.slo, LearningSettings(), "disaggregated", "x")
    with pytest.raises(InputError, match="limit following the target") as err:
        build_policy(parse(learned_raw), ("prefill", "decode"), following)
    assert err.value.field == "spec.kpa.fixedLimit"
    assert "AutoscalingPolicy default/" in str(err.value)
    # Without a file the spec's fixed limit holds for the fresh agents too.
    assert (
        build_policy(parse(learned_raw), ("prefill", "decode")).concurrency_limit("decode") == 256
    )


def test_status_patch_records_decisions() -> None:
    spec = parse(_base())
    pol = build_policy(spec, ("prefill", "decode"))
    pol.initial_replicas("prefill", lambda t: 2)
    pol.initial_replicas("decode", lambda t: 2)
    history: list[dict[str, Any]] = []
    for t in range(1, 200):
        obs = {
            "prefill": RoleObservation(concurrency=1.0, ready_replicas=2, replicas=2),
            "decode": RoleObservation(concurrency=600.0, ready_replicas=2, replicas=2),
        }
        pol.observe(float(t), obs)
        if t % 2 == 0:
            decision = pol.decide(float(t))
            status, history = status_patch(
                spec,
                decision,
                history,
                model_service="llama-8b",
                now=datetime(2025, 1, 1, tzinfo=UTC),
            )
    assert status["summary"] == "prefill=0.5 decode=64"
    assert status["roles"]["decode"]["desiredReplicas"] == 10
    assert status["roles"]["decode"]["concurrencyLimit"] == 92
    assert 0 < len(status["lastDecisions"]) <= MAX_DECISIONS
    last = status["lastDecisions"][-1]
    assert last["modelService"] == "llama-8b" and last["time"] == "2025-01-01T00:00:00Z"
    assert status["observedGeneration"] == 0
    # Every field written is in the CRD's status schema.
    props = crd_version()["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(status) <= set(props)
    assert set(last) <= set(props["lastDecisions"]["items"]["properties"])
    assert set(status["roles"]["decode"]) <= set(
        props["roles"]["additionalProperties"]["properties"]
    )


def test_status_says_which_learned_moves_explored_and_which_undid_a_probe() -> None:
    spec = parse(_base())

    def decision(**learning: Any) -> Decision:
        step = RoleDecision("decode", 4, 4, 5, 64.0, 92, 200.0, 200.0, False, "stable", learning)
        return Decision(0.0, "learned", {"decode": step})

    history: list[dict[str, Any]] = []
    for learning, shown in (
        ({"action": "down", "explored": True, "probeUndone": False}, "probe"),
        ({"action": "up", "explored": False, "probeUndone": True}, "undone"),
        ({"action": "stay", "explored": False, "probeUndone": False}, None),
    ):
        _, history = status_patch(spec, decision(**learning), history)
        assert history[-1].get("exploration") == shown
    props = crd_version()["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert props["lastDecisions"]["items"]["properties"]["exploration"]["enum"] == [
        "probe",
        "undone",
    ]


# Every field the parser reads, so that mutations reach absent fields too.
FIELDS = [
    ("policy",),
    ("slo",),
    ("slo", "ttftSeconds"),
    ("slo", "tpotSeconds"),
    ("slo", "attainment"),
    ("metrics",),
    ("metrics", "source"),
    ("metrics", "sampleSeconds"),
    ("metrics", "prometheus"),
    ("metrics", "prometheus", "url"),
    ("metrics", "prometheus", "podSelector"),
    ("metrics", "prometheus", "rateWindowSeconds"),
    ("metrics", "prometheus", "activationQuery"),
    ("kpa",),
    *[
        ("kpa", k)
        for k in (
            "metric",
            "containerConcurrency",
            "targetUtilizationPercentage",
            "stableWindowSeconds",
            "panicWindowPercentage",
            "panicThresholdPercentage",
            "maxScaleUpRate",
            "maxScaleDownRate",
            "tickSeconds",
            "scaleToZero",
            "scaleToZeroGracePeriodSeconds",
            "activationTimeoutSeconds",
            "fixedLimit",
        )
    ],
    ("roles",),
    *[
        ("roles", role, *rest)
        for role in ("serve", "prefill", "decode")
        for rest in (
            (),
            ("target",),
            ("minTarget",),
            ("maxTarget",),
            ("minReplicas",),
            ("maxReplicas",),
        )
    ],
    ("learning",),
    *[
        ("learning", k)
        for k in (
            "decisionIntervalSeconds",
            "explorationRate",
            "learningRate",
            "discount",
            "sloPenalty",
            "online",
            "persistState",
            "initialPolicy",
        )
    ],
    ("learning", "initialPolicy", "configMapName"),
    ("learning", "initialPolicy", "key"),
]
JSON_VALUES = hs.recursive(
    hs.none()
    | hs.booleans()
    | hs.integers(-(2**70), 2**70)
    | hs.floats(allow_nan=True, allow_infinity=True)
    | hs.text(max_size=12)
    | hs.sampled_from(["concurrency", "rps", "kpa", "static", "learned", "http://p:9090"]),
    lambda inner: (
        hs.lists(inner, max_size=3) | hs.dictionaries(hs.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(
    sample=hs.integers(0, 1),
    changes=hs.lists(hs.tuples(hs.sampled_from(FIELDS), JSON_VALUES), min_size=1, max_size=3),
)
# A policy may configure one role of a P/D pair; it still scales both (found by hypothesis).
@example(sample=0, changes=[(("roles",), None), (("roles", "prefill"), None)])
def test_any_edit_parses_or_fails_naming_the_policy_and_a_field(
    sample: int, changes: list[tuple[tuple[str, ...], Any]]
) -> None:
    """What an admin can write (the CRD aside: objects may predate it): parse() and
    build_policy() give a policy or an InputError that names the object and a spec field."""
    raw = samples()[sample]
    for path, value in changes:
        node = raw["spec"]
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    name = f"AutoscalingPolicy default/{raw['metadata']['name']}"
    try:
        spec = parse(raw)
        # The ModelService it scales: P/D when the policy configures a P/D role, else one
        # serve role (a policy without roles covers either).
        pd = bool({"prefill", "decode"} & set(spec.roles))
        roles = ("prefill", "decode") if pd else ("serve",)
        policy = build_policy(spec, roles)
    except InputError as err:
        assert name in str(err), str(err)
        assert err.field.startswith("spec."), (err.field, str(err))
        return
    assert spec.policy in ("kpa", "static", "learned")
    assert all(policy.target(role) > 0 for role in roles)
