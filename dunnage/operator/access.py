"""What the operator may do, asked of the API server before it starts.

kopf lists and watches every resource it has a handler or an index for, and runs no handler
until all of those lists have come back: one watch the operator's RBAC forbids (a ClusterRole
written by hand, or an older chart's, after an upgrade of the image) would keep it from
reconciling anything, with nothing but kopf's retries in its log. So ``dunnage operator run``
asks first (SelfSubjectAccessReviews, as ``kubectl auth can-i`` does):

- a missing permission of :data:`REQUIRED` stops it with an error that names every missing
  rule;
- without :data:`AUTOSCALER_WATCH` (list and watch HorizontalPodAutoscalers) it runs without
  the autoscaling loop's HPA check (:func:`dunnage.operator.autoscaler.watch_autoscalers` is
  not called) and says so in its log and in a Warning Event on each autoscaled ModelService.

The chart's ClusterRole grants all of them (the chart e2e asks these same questions of it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


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


REQUIRED: tuple[Permission, ...] = (
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
CLUSTER_REQUIRED: tuple[Permission, ...] = (
    # a ModelService naming a PriorityClass that does not exist is Degraded, not half-created
    Permission("get", "scheduling.k8s.io", "priorityclasses"),
)
AUTOSCALER_WATCH: tuple[Permission, ...] = tuple(
    _each("list watch", "autoscaling", "horizontalpodautoscalers")
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
    """The permissions the API server refuses the operator's identity, in each namespace of
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
