"""Schema revisions of the CRDs (dunnage.cluster.crds): the recorded ones match the manifests,
`make chart-crds` raises them when a schema changes, and the start-up check refuses an older
CRD. The e2e (test_operator.py, the chart test) runs the operator against an older one. Every
field has a description, for `kubectl explain`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from dunnage.cluster import crds
from dunnage.errors import InputError

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests" / "crds"


def dunnage_crds() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text()))
        if len(docs) == 1 and docs[0]["spec"]["group"] == "dunnage.io":
            out.append((path, docs[0]))
    return out


def test_each_crd_carries_the_revision_its_schema_was_recorded_with() -> None:
    recorded = crds.recorded()
    found = dunnage_crds()
    assert {crd["metadata"]["name"] for _, crd in found} == set(recorded)
    assert set(crds.OPERATOR_CRDS) | set(crds.EXTENDER_CRDS) == set(recorded)
    for path, crd in found:
        entry = recorded[crd["metadata"]["name"]]
        assert crds.digest(crd) == entry["digest"], (
            f"{path.name}: its schema changed; run `make chart-crds` to raise its revision"
        )
        annotations = crd["metadata"].get("annotations")
        assert crds.served_revision(annotations) == entry["revision"] >= 1, path.name


def undescribed(schema: Mapping[str, Any], path: str, inherited: bool = False) -> list[str]:
    """The paths at and under ``schema`` without a description. An array's ``items`` and a
    map's ``additionalProperties`` may go without one when the field holding them has one
    (``inherited``)."""
    described = bool(str(schema.get("description") or "").strip())
    missing = [] if described or inherited else [path]
    for name, sub in (schema.get("properties") or {}).items():
        if path == "openAPIV3Schema" and name == "metadata":
            continue  # the API server's to describe: it refuses a CRD that says more than type
        missing += undescribed(sub, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", ".*")):
        sub = schema.get(key)
        if isinstance(sub, Mapping):
            missing += undescribed(sub, path + suffix, inherited=described)
    return missing


def test_every_field_of_the_crds_has_a_description() -> None:
    """What `kubectl explain` shows cluster admins: every field, spec and status alike."""
    found = dunnage_crds()
    assert len(found) == 4
    missing = [
        f"{path.name} {version['name']}: {where}"
        for path, crd in found
        for version in crd["spec"]["versions"]
        for where in undescribed(version["schema"]["openAPIV3Schema"], "openAPIV3Schema")
    ]
    assert not missing, "fields without a description:\n" + "\n".join(missing)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the manifests, an empty chart directory and the recorded revisions."""
    manifests, chart = tmp_path / "crds", tmp_path / "chart"
    shutil.copytree(MANIFESTS, manifests)
    chart.mkdir()
    revisions = tmp_path / "revisions.json"
    shutil.copyfile(crds.REVISIONS_FILE, revisions)
    return manifests, chart, revisions


def test_stamping_raises_a_revision_only_when_the_schema_changes(
    tree: tuple[Path, Path, Path],
) -> None:
    manifests, chart, revisions = tree
    before = json.loads(revisions.read_text())["autoscalingpolicies.dunnage.io"]["revision"]
    assert crds.stamp(manifests, chart, revisions) == []  # nothing changed
    assert sorted(p.name for p in chart.iterdir()) == sorted(p.name for p in MANIFESTS.iterdir())
    path = manifests / "autoscalingpolicy.yaml"
    text = path.read_text()
    # A reworded description needs no upgrade.
    path.write_text(text.replace("How long a role woken from zero", "How long a role woken", 1))
    assert crds.stamp(manifests, chart, revisions) == []
    # A new bound does.
    bound, tighter = "maximum: 86400\n                      default: 600", "maximum: 7200"
    assert text.count(bound) == 1
    path.write_text(text.replace(bound, tighter + bound[len("maximum: 86400") :]))
    assert crds.stamp(manifests, chart, revisions) == ["autoscalingpolicies.dunnage.io"]
    stamped = path.read_text()
    assert f'{crds.REVISION_ANNOTATION}: "{before + 1}"' in stamped
    assert stamped.startswith("# AutoscalingPolicy:")  # comments and layout kept
    unstamped = stamped.replace(f'revision: "{before + 1}"', f'revision: "{before}"')
    assert unstamped.replace(tighter, "maximum: 86400") == text
    assert json.loads(revisions.read_text())["autoscalingpolicies.dunnage.io"]["revision"] == (
        before + 1
    )
    assert (chart / "autoscalingpolicy.yaml").read_text() == stamped


def test_edits_before_a_commit_raise_a_revision_once(tree: tuple[Path, Path, Path]) -> None:
    """Counting from the last commit's revisions: two edits in a row raise one revision, an
    edit undone takes it back, and a checkout without git raises at each edit as before."""
    manifests, chart, revisions = tree
    committed = json.loads(revisions.read_text())
    name = "autoscalingpolicies.dunnage.io"
    before = committed[name]["revision"]
    path = manifests / "autoscalingpolicy.yaml"
    text = path.read_text()
    bound = "maximum: 86400\n                      default: 600"
    for tighter in ("maximum: 7200", "maximum: 3600"):
        path.write_text(text.replace(bound, tighter + bound[len("maximum: 86400") :]))
        assert crds.stamp(manifests, chart, revisions, committed=committed) == [name]
        assert json.loads(revisions.read_text())[name]["revision"] == before + 1
    assert crds.stamp(manifests, chart, revisions, committed=committed) == []
    path.write_text(text)
    assert crds.stamp(manifests, chart, revisions, committed=committed) == [name]
    assert json.loads(revisions.read_text()) == committed
    assert path.read_text() == text
    for step, tighter in enumerate(("maximum: 7200", "maximum: 3600"), start=1):
        path.write_text(text.replace(bound, tighter + bound[len("maximum: 86400") :]))
        crds.stamp(manifests, chart, revisions)
        assert json.loads(revisions.read_text())[name]["revision"] == before + step


def test_the_committed_revisions_come_from_git_when_there_is_one(tmp_path: Path) -> None:
    committed = crds.committed_revisions(REPO)
    assert committed is not None and set(committed) == set(crds.recorded())
    assert crds.committed_revisions(tmp_path) is None  # not a checkout


def test_a_crd_without_the_annotation_gets_one(tree: tuple[Path, Path, Path]) -> None:
    manifests, chart, revisions = tree
    path = manifests / "packingplan.yaml"
    bare = (
        "\n".join(
            line
            for line in path.read_text().splitlines()
            if "annotations:" not in line and crds.REVISION_ANNOTATION not in line
        )
        + "\n"
    )
    path.write_text(bare)
    assert crds.stamp(manifests, chart, revisions) == []
    recorded = json.loads(revisions.read_text())["packingplans.dunnage.io"]["revision"]
    assert yaml.safe_load(path.read_text())["metadata"]["annotations"] == {
        crds.REVISION_ANNOTATION: str(recorded)
    }


class Served:
    """The API server's CRDs by name: a revision, or an ApiException / OSError to raise."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers

    def read_custom_resource_definition(self, name: str) -> Any:
        answer = self.answers[name.split(".")[0]]
        if isinstance(answer, Exception):
            raise answer
        annotations = None if answer is None else {crds.REVISION_ANNOTATION: str(answer)}
        return SimpleNamespace(metadata=SimpleNamespace(name=name, annotations=annotations))


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Any:
    from kubernetes import client

    def install(**answers: Any) -> Served:
        served = Served(**answers)
        monkeypatch.setattr(client, "ApiextensionsV1Api", lambda _api: served)
        return served

    return install


MODEL_SERVICES = crds.recorded()["modelservices.dunnage.io"]["revision"]


def test_the_check_passes_the_recorded_revision_and_newer(serve: Any) -> None:
    serve(modelservices=MODEL_SERVICES, autoscalingpolicies=5)
    crds.check(object(), crds.OPERATOR_CRDS, "operator")


def test_an_older_or_unannotated_crd_stops_the_component_naming_the_fix(serve: Any) -> None:
    serve(modelservices=None, autoscalingpolicies=0)
    with pytest.raises(InputError) as caught:
        crds.check(object(), crds.OPERATOR_CRDS, "operator")
    message = str(caught.value)
    assert message.startswith("operator: the cluster serves older CustomResourceDefinitions")
    needs = (
        f"modelservices.dunnage.io is at schema revision 0, this operator needs {MODEL_SERVICES}"
    )
    assert needs in message
    assert "autoscalingpolicies.dunnage.io is at schema revision 0" in message
    assert "kubectl apply --server-side --force-conflicts -f helm/dunnage/crds/" in message


PLANS = crds.recorded()["packingplans.dunnage.io"]["revision"]  # the revision it needs


def test_a_missing_crd_stops_it(serve: Any) -> None:
    serve(packingpolicies=ApiException(status=404, reason="Not Found"), packingplans=PLANS)
    with pytest.raises(InputError, match=r"packingpolicies\.dunnage\.io is not installed"):
        crds.check(object(), crds.EXTENDER_CRDS, "extender")


def test_without_rbac_or_a_reachable_server_it_starts_unchecked(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    serve(packingpolicies=ApiException(status=403, reason="Forbidden"), packingplans=PLANS)
    crds.check(object(), crds.EXTENDER_CRDS, "extender")
    assert "cannot read CustomResourceDefinition packingpolicies.dunnage.io" in caplog.text
    serve(packingpolicies=ConnectionRefusedError(111, "refused"), packingplans=0)
    crds.check(object(), crds.EXTENDER_CRDS, "extender")  # packingplans never asked
    assert "cannot check the CRDs' schema revisions" in caplog.text
