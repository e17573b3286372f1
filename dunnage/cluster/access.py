"""What a component may do, asked of the API server before it starts.

kopf lists and watches every resource the operator has a handler or an index for, and runs no
handler until all of those lists have come back: one watch its RBAC forbids (a ClusterRole
written by hand, or an older chart's, after an upgrade of the image) would keep it from
reconciling anything, with nothing but kopf's retries in its log; the extender would log a
refused watch every second and never get ready. So ``dunnage operator run`` and ``dunnage
extender serve`` ask first (SelfSubjectAccessReviews, as ``kubectl auth can-i`` does,
:func:`ask`):

- a missing permission of their tables (:data:`OPERATOR`, :data:`OPERATOR_CLUSTER`;
  :data:`EXTENDER`, :data:`EXTENDER_PLANNER`) stops them with an error that names every
  missing rule (:func:`refuse`);
- without :data:`OPERATOR_HPA_WATCH` (list and watch HorizontalPodAutoscalers) the operator
  runs without the autoscaling loop's HPA check
  (:func:`dunnage.operator.autoscaler.watch_autoscalers` is not called) and says so in its log
  and in a Warning Event on each autoscaled ModelService.

The chart grants all of them (the chart e2e asks these same questions of it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dunnage.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Permission:
    """One verb on one resource, as a Role rule states it."""

    verb: str
    group: str
    resource: str
    subresource: str = ""

    @property
    def rule(self) -> str:
        """``verb resource[/subresource].group``, as ``kubectl auth can-i`` takes it."""
        name = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {name}{'.' + self.group if self.group else ''}"


def _each(verbs: str, group: str, resource: str, subresource: str = "") -> list[Permission]:
    return [Permission(verb, group, resource, subresource) for verb in verbs.split()]


OPERATOR: tuple[Permission, ...] = (
    *_each("get list watch patch", "dunnage.io", "modelservices"),
    *_each("patch", "dunnage.io", "modelservices", "status"),
    # owner references with blockOwnerDeletion (the OwnerReferencesPermissionEnforcement plugin)
    *_each("update", "dunnage.io", "modelservices", "finalizers"),
    *_each("list watch", "dunnage.io", "autoscalingpolicies"),
    *_each("patch", "dunnage.io", "autoscalingpolicies", "status"),
    *_each("get create patch", "", "configmaps"),
    *_each("get list watch create patch delete", "apps", "deployments"),
    *_each("get list watch create patch delete", "", "services"),
    *_each("get list watch create patch delete", "policy", "poddisruptionbudgets"),
    *_each("create", "", "events"),
)
OPERATOR_CLUSTER: tuple[Permission, ...] = (
    # a ModelService naming a PriorityClass that does not exist is Degraded, not half-created
    Permission("get", "scheduling.k8s.io", "priorityclasses"),
)
OPERATOR_HPA_WATCH: tuple[Permission, ...] = tuple(
    _each("list watch", "autoscaling", "horizontalpodautoscalers")
)


# The extender's (all cluster-wide): its node-state cache, the PackingPolicy it follows...
EXTENDER: tuple[Permission, ...] = (
    *[
        p
        for r in ("namespaces", "nodes", "pods", "persistentvolumeclaims", "persistentvolumes")
        for p in _each("list watch", "", r)
    ],
    *_each("list watch", "policy", "poddisruptionbudgets"),
    *_each("list watch", "scheduling.k8s.io", "priorityclasses"),
    *[
        p
        for r in (
            "csinodes",
            "volumeattachments",
            "storageclasses",
            "csidrivers",
            "csistoragecapacities",
        )
        for p in _each("list watch", "storage.k8s.io", r)
    ],
    *[
        p
        for r in ("deviceclasses", "resourceslices", "resourceclaims", "devicetaintrules")
        for p in _each("list watch", "resource.k8s.io", r)
    ],
    *_each("get", "dunnage.io", "packingpolicies"),
)
# ...and, with the fallback planner, its plans and how it carries them out.
EXTENDER_PLANNER: tuple[Permission, ...] = (
    *_each("patch", "dunnage.io", "packingpolicies", "status"),
    *_each("list watch create delete", "dunnage.io", "packingplans"),
    *_each("patch", "dunnage.io", "packingplans", "status"),
    *_each("create", "", "pods", "eviction"),
    *_each("create", "", "events"),
    # a mark on the nodes a plan kept, once it ends: kube-scheduler retries the pods kept off
    # them (the chart's ValidatingAdmissionPolicy refuses any other change to a node)
    *_each("patch", "", "nodes"),
)


def peering_permissions(clusterwide: bool) -> tuple[Permission, ...]:
    """kopf's peering object: cluster-scoped for an operator of all namespaces."""
    kind = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
    return tuple(_each("get list watch patch", "kopf.dev", kind))


@dataclass(frozen=True)
class Denied:
    permission: Permission
    namespace: str  # "" for all namespaces (or a cluster-scoped resource)

    def __str__(self) -> str:
        where = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.permission.rule} ({where})"


def denied(
    authorization: Any, permissions: Iterable[Permission], namespaces: Sequence[str]
) -> list[Denied]:
    """The permissions the API server refuses the caller's identity, in each namespace of
    ``namespaces`` (all namespaces when empty). ``authorization`` is a
    ``kubernetes.client.AuthorizationV1Api``."""
    from kubernetes import client

    out = []
    for permission in permissions:
        for namespace in namespaces or ("",):
            review = client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        namespace=namespace or None,
                        verb=permission.verb,
                        group=permission.group,
                        resource=permission.resource,
                        subresource=permission.subresource or None,
                    )
                )
            )
            answer = authorization.create_self_subject_access_review(review)
            if not (answer.status and answer.status.allowed):
                out.append(Denied(permission, namespace))
    return out


def ask(
    api_client: Any, permissions: Iterable[Permission], namespaces: Sequence[str]
) -> list[Denied] | None:
    """:func:`denied` over the component's ``kubernetes`` client; None when the question
    itself fails (the API server not reachable yet: logged, and the caller starts unchecked)."""
    from kubernetes import client

    try:
        return denied(client.AuthorizationV1Api(api_client), permissions, namespaces)
    except Exception as exc:  # the API server unreachable, an old one without the API, ...
        log.warning("could not ask the API server for this component's permissions: %s", exc)
        return None


def refuse(missing: Sequence[Denied], component: str) -> None:
    """Stop a component that lacks permissions it needs, naming every one."""
    if missing:
        raise InputError(
            f"its identity lacks permissions it needs: {'; '.join(str(d) for d in missing)} "
            "(the chart's RBAC grants them all)",
            obj=component,
        )
