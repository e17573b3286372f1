"""The CRD, samples, invalid samples, the chart's copies and the CLI: static checks, no cluster."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from dunnage.cli import main
from dunnage.errors import InputError
from dunnage.operator.spec import parse

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "manifests" / "crds" / "modelservice.yaml"
SAMPLES = ROOT / "manifests" / "samples"
INVALID = sorted((ROOT / "e2e" / "invalid").glob("*.yaml"))
CHART = ROOT / "helm" / "dunnage"


def schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def test_crd_shape() -> None:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["spec"]["group"] == "dunnage.io" and crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == ["ms"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Roles"] == ".status.summary"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'


def test_crd_rules() -> None:
    spec = schema()["properties"]["spec"]
    roles = spec["properties"]["roles"]
    assert (
        "exactly {serve} or exactly {prefill, decode}"
        in roles["x-kubernetes-validations"][0]["message"]
    )
    for name in ("serve", "prefill", "decode"):
        role = roles["properties"][name]
        rules = " ".join(v["rule"] for v in role["x-kubernetes-validations"])
        assert "self.minReplicas <= self.replicas" in rules
        assert "self.replicas <= self.maxReplicas" in rules
        assert role["properties"]["resources"]["properties"]["gpus"]["minimum"] == 0
    assert spec["properties"]["resources"]["properties"]["gpus"]["minimum"] == 0


def test_samples_parse_and_use_what_they_ship() -> None:
    docs = [d for f in sorted(SAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    services = [d for d in docs if d and d["kind"] == "ModelService"]
    assert services, "a ModelService sample"
    classes = {d["metadata"]["name"] for d in docs if d and d["kind"] == "PriorityClass"}
    for raw in services:
        raw["metadata"].setdefault("namespace", "default")
        ms = parse(raw)
        if ms.priority_class:
            assert ms.priority_class in classes, "the sample's PriorityClass ships with it"
    assert any(parse(raw).disaggregated for raw in services)


def test_the_docs_model_services_parse() -> None:
    """Every ModelService in docs/operator.md's YAML blocks is one the operator takes."""
    text = (ROOT / "docs" / "operator.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    docs = [d for b in blocks for d in yaml.safe_load_all(b) if isinstance(d, dict)]
    services = [d for d in docs if d.get("kind") == "ModelService"]
    assert len(services) >= 2
    for raw in services:
        raw["metadata"]["namespace"] = "llm"
        parse(raw)


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_samples_state_their_error_and_fail_parsing(path: Path) -> None:
    text = path.read_text()
    assert re.match(r"# expect: \S", text), "first line: # expect: <API server message>"
    raw = yaml.safe_load(text)
    raw["metadata"]["namespace"] = "ns"
    with pytest.raises(InputError):
        parse(raw)  # the operator's own check agrees with the API server


def test_chart_crds_are_copies_of_the_manifests() -> None:
    for crd in sorted((ROOT / "manifests" / "crds").glob("*.yaml")):
        copy = CHART / "crds" / crd.name
        assert copy.exists(), f"{copy} missing: run `make chart-crds`"
        assert copy.read_bytes() == crd.read_bytes(), f"{copy} differs: run `make chart-crds`"


def test_chart_names_the_image_make_image_builds() -> None:
    """The chart's default image tag (its appVersion) is the version `make image` tags and the
    image runs as the user the chart's security context asks for."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == project["version"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["tag"] == ""  # the appVersion
    user = values["podSecurityContext"]
    containerfile = (ROOT / "image" / "Containerfile").read_text()
    assert f"USER {user['runAsUser']}:{user['runAsGroup']}" in containerfile.splitlines()


def test_chart_rbac_has_no_wildcards() -> None:
    templates = sorted((CHART / "templates").glob("*.yaml")) + sorted(
        (CHART / "templates").glob("*.tpl")
    )
    assert any("rules" in t.read_text() for t in templates)
    for template in templates:
        for line in template.read_text().splitlines():
            if re.match(r"\s*-?\s*(verbs|resources|apiGroups|resourceNames)\s*:", line):
                assert "*" not in line, f"{template.name}: {line.strip()}"


def test_render_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operator", "render", "-f", str(SAMPLES / "modelservice-pd.yaml")]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects[:2]] == [
        ("Deployment", "llama-8b-prefill"),
        ("Deployment", "llama-8b-decode"),
    ]
    assert len(objects) == 7


def test_render_command_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operator", "render", "-f", str(tmp_path / "none.yaml")]) == 2
    assert main(["operator", "render", "-f", str(INVALID[0])]) == 2
    err = capsys.readouterr().err
    assert err.count("dunnage: error:") == 2


def test_run_command_rejects_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operator", "run", "--kubeconfig", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["operator", "run", "--metrics-port", "70000"]) == 2
    assert main(["operator", "run", "--liveness", "tcp://x"]) == 2
    # election times are checked before any connection is tried
    argv = ["operator", "run", "--kubeconfig", str(tmp_path / "missing"), "--leader-elect"]
    capsys.readouterr()
    assert main([*argv, "--leader-elect-renew-deadline", "20"]) == 2
    assert "--leader-elect-lease-duration: must be more than" in capsys.readouterr().err


def test_kopf_peering_identity_needs_no_passwd_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf's own identity looks the user up in /etc/passwd, which a pod run as a uid its image
    does not know lacks: the operator names itself as its Lease does, else by its pod."""
    from dunnage.cluster.leadership import ElectionSettings
    from dunnage.operator.commands import peering_identity

    election = ElectionSettings(namespace="ns", lease_name="l", identity="op-0_1a2b3c4d")
    monkeypatch.setenv("POD_NAME", "op-0")
    assert peering_identity(election) == "op-0_1a2b3c4d"
    assert peering_identity(None) == "op-0"
    monkeypatch.delenv("POD_NAME")
    assert peering_identity(None) is None  # kopf's own (user@host)
