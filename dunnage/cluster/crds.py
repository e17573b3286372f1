"""Schema revisions of dunnage's CustomResourceDefinitions, and the check a component makes of
the ones the cluster serves before it starts.

Helm installs a chart's CRDs but never upgrades them, so after ``helm upgrade`` the cluster may
still serve an older schema, and the API server then prunes every field that schema does not
know, silently: a policy edited to set a new field behaves as if it were not set. So each CRD
under ``manifests/crds`` carries the annotation :data:`REVISION_ANNOTATION`, a number raised
with each change of its ``spec``; ``dunnage/data/crd-revisions.json`` records the revision and
a digest of that spec, so the package knows the revision it was built with. The operator and
the extender read their CRDs at start (:func:`check`) and refuse to run on an older revision,
naming the command that upgrades them.

``python -m dunnage.cluster.crds`` (``make chart-crds``) raises the revision of each CRD whose
spec changed, records it, and copies the CRDs into the chart; a unit test fails while a CRD's
spec and its recorded digest disagree. In a git checkout it counts from the revisions of the
last commit, so a schema edited several times before the next commit is raised once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import urllib3
import yaml

from dunnage.errors import InputError

log = logging.getLogger(__name__)

REVISION_ANNOTATION = "dunnage.io/schema-revision"
REVISIONS_FILE = Path(__file__).resolve().parents[1] / "data" / "crd-revisions.json"
OPERATOR_CRDS = ("modelservices.dunnage.io", "autoscalingpolicies.dunnage.io")
EXTENDER_CRDS = ("packingpolicies.dunnage.io", "packingplans.dunnage.io")
UPGRADE_HINT = (
    "kubectl apply --server-side --force-conflicts -f helm/dunnage/crds/ "
    "(helm installs a chart's CRDs but never upgrades them)"
)


def _without_descriptions(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_descriptions(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [_without_descriptions(v) for v in value]
    return value


def digest(crd: Mapping[str, Any]) -> str:
    """A digest of the CRD's spec, what the API server validates and prunes by (descriptions
    left out: a reworded one needs no upgrade)."""
    spec = _without_descriptions(crd.get("spec"))
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recorded() -> dict[str, dict[str, Any]]:
    """The revisions this package was built with: CRD name -> {revision, digest}."""
    data: dict[str, dict[str, Any]] = json.loads(REVISIONS_FILE.read_text())
    return data


def served_revision(annotations: Mapping[str, str] | None) -> int:
    """The revision a CRD's annotations say it is (0: none, a CRD older than the annotation)."""
    raw = (annotations or {}).get(REVISION_ANNOTATION) or ""
    return int(raw) if raw.isdigit() else 0


def check(api_client: Any, names: Iterable[str], component: str) -> None:
    """Read each CRD in ``names`` from the API server: raise :class:`InputError` when one is
    missing or older than this package's; log and go on when it may not be read (an RBAC
    without ``get`` on it) or is newer (a rolled-back component)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.ApiextensionsV1Api(api_client)
    expected = recorded()
    stale = []
    for name in names:
        want = int(expected[name]["revision"])
        try:
            crd = api.read_custom_resource_definition(name)
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # not reachable (yet)
            log.warning("cannot check the CRDs' schema revisions: %s", exc)
            return
        except ApiException as exc:
            if exc.status == 404:
                raise InputError(
                    f"the CustomResourceDefinition {name} is not installed: {UPGRADE_HINT}",
                    obj=component,
                ) from None
            log.warning(
                "cannot read CustomResourceDefinition %s to check its schema revision (%s %s); "
                "starting without the check",
                name,
                exc.status,
                exc.reason,
            )
            continue
        have = served_revision(crd.metadata.annotations if crd.metadata else None)
        if have < want:
            stale.append(f"{name} is at schema revision {have}, this {component} needs {want}")
        elif have > want:
            log.info("CustomResourceDefinition %s is at a newer schema revision (%d)", name, have)
    if stale:
        raise InputError(
            "the cluster serves older CustomResourceDefinitions (the API server would drop "
            f"the fields they lack): {'; '.join(stale)}. Upgrade them: {UPGRADE_HINT}",
            obj=component,
        )


# --- make chart-crds -----------------------------------------------------------------------------

_METADATA = re.compile(r"^metadata:\n", re.M)
_ANNOTATION = re.compile(rf"^(\s+){re.escape(REVISION_ANNOTATION)}: .*$", re.M)


def _with_revision(text: str, revision: int) -> str:
    """The CRD file's text with its revision annotation set (comments and layout kept)."""
    line = f'{REVISION_ANNOTATION}: "{revision}"'
    if _ANNOTATION.search(text):
        return _ANNOTATION.sub(lambda m: m.group(1) + line, text, count=1)
    return _METADATA.sub(f"metadata:\n  annotations:\n    {line}\n", text, count=1)


def stamp(
    crd_dir: Path,
    chart_dir: Path,
    revisions_file: Path = REVISIONS_FILE,
    committed: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """Raise the revision of each dunnage.io CRD whose spec changed, record it, and copy every
    CRD into the chart. Returns the names whose record changed.

    ``committed`` (the revisions of the last commit) makes the raise count from there: one
    raise for any number of edits before the next commit, none for an edit undone."""
    known: dict[str, dict[str, Any]] = (
        json.loads(revisions_file.read_text()) if revisions_file.exists() else {}
    )
    raised = []
    for path in sorted(crd_dir.glob("*.yaml")):
        text = path.read_text()
        docs = list(yaml.safe_load_all(text))
        if len(docs) != 1 or docs[0]["spec"]["group"] != "dunnage.io":
            continue  # kopf's peering CRDs are kopf's
        crd = docs[0]
        name = crd["metadata"]["name"]
        entry = known.get(name, {"revision": 0, "digest": ""})
        base = (committed or {}).get(name, entry)
        if base["digest"] == digest(crd):
            wanted = {"revision": int(base["revision"]), "digest": base["digest"]}
        elif entry["digest"] == digest(crd) and entry["revision"] > base["revision"]:
            wanted = entry  # raised already since the last commit
        else:
            wanted = {"revision": int(base["revision"]) + 1, "digest": digest(crd)}
        if wanted != entry:
            known[name] = wanted
            raised.append(name)
        stamped = _with_revision(text, int(wanted["revision"]))
        if stamped != text:
            path.write_text(stamped)
    revisions_file.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")
    for path in sorted(crd_dir.glob("*.yaml")):
        shutil.copyfile(path, chart_dir / path.name)
    return raised


def committed_revisions(root: Path) -> dict[str, dict[str, Any]] | None:
    """The recorded revisions of the last commit of the checkout at ``root``; None outside git."""
    try:
        shown = subprocess.run(
            ["git", "-C", str(root), "show", "HEAD:dunnage/data/crd-revisions.json"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    found: dict[str, dict[str, Any]] = json.loads(shown.stdout)
    return found


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    crd_dir, chart_dir = root / "manifests" / "crds", root / "helm" / "dunnage" / "crds"
    for name in stamp(crd_dir, chart_dir, committed=committed_revisions(root)):
        print(f"{name}: schema revision {recorded()[name]['revision']}", file=sys.stderr)
