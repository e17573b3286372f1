"""The operator's writes: server-side apply through the ``kubernetes`` client.

Every object is sent as a PATCH with ``Content-Type: application/apply-patch+yaml`` (a JSON body
is valid YAML), ``fieldManager=dunnage-operator`` and ``force=true``: the operator's configuration
wins over other writers on the fields it sets, and fields it never sets stay with their owners.
Responses are read as plain dicts (``_preload_content=False``), as the watch events are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from dunnage.cluster.connect import JSON_PATCH
from dunnage.operator import render
from dunnage.operator.reconcile import ApiError, Object
from dunnage.operator.spec import (
    API_VERSION,
    GROUP,
    KIND,
    MODEL_SERVICE_LABEL,
    PLURAL,
    VERSION,
    ModelService,
)

APPLY = "application/apply-patch+yaml"


def _message(exc: Exception) -> tuple[int, str]:
    status = int(getattr(exc, "status", 0) or 0)
    body = getattr(exc, "body", None)
    if body:
        try:
            return status, str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return status, str(body)
    return status, str(exc)


class KubeApi:
    """:class:`dunnage.operator.reconcile.Api` over a ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.policy = client.PolicyV1Api(api_client)
        self.scheduling = client.SchedulingV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._patch: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
            "PodDisruptionBudget": self.policy.patch_namespaced_pod_disruption_budget,
        }
        self._list: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.list_namespaced_deployment,
            "Service": self.core.list_namespaced_service,
            "PodDisruptionBudget": self.policy.list_namespaced_pod_disruption_budget,
        }
        self._delete: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.delete_namespaced_deployment,
            "Service": self.core.delete_namespaced_service,
            "PodDisruptionBudget": self.policy.delete_namespaced_pod_disruption_budget,
        }
        self._read: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.read_namespaced_deployment,
            "Service": self.core.read_namespaced_service,
            "PodDisruptionBudget": self.policy.read_namespaced_pod_disruption_budget,
        }

    def list_owned(self, kind: str, namespace: str, model_service: str) -> list[Object]:
        listing: Object = self._call(
            self._list[kind],
            namespace,
            label_selector=f"{MODEL_SERVICE_LABEL}={model_service}",
        )
        return list(listing.get("items") or [])

    def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        body = {"preconditions": {"uid": uid}} if uid else None
        try:
            self._call(self._delete[kind], name, namespace, body=body)
        except ApiError as exc:
            if exc.status not in (404, 409):  # gone, or replaced by a newer object
                raise

    def remove_finalizer(
        self, namespace: str, name: str, finalizers: list[str], finalizer: str
    ) -> None:
        at = f"/metadata/finalizers/{finalizers.index(finalizer)}"
        patch = [{"op": "test", "path": at, "value": finalizer}, {"op": "remove", "path": at}]
        try:
            self._call(
                self.custom.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                patch,
                _content_type=JSON_PATCH,
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            response = fn(*args, _preload_content=False, **kwargs)
        except ApiException as exc:
            raise ApiError(*_message(exc)) from exc
        return json.loads(response.data)

    def apply(
        self, obj: Object, *, field_manager: str = render.FIELD_MANAGER, dry_run: bool = False
    ) -> Object:
        kind, namespace, name = render.key(obj)
        try:
            result: Object = self._call(
                self._patch[kind],
                name,
                namespace,
                obj,
                field_manager=field_manager,
                force=True,
                dry_run="All" if dry_run else None,
                _content_type=APPLY,
            )
        except ApiError as exc:
            raise ApiError(exc.status, f"{kind} {namespace}/{name}: {exc}") from exc
        return result

    def get(self, kind: str, namespace: str, name: str) -> Object | None:
        try:
            result: Object = self._call(self._read[kind], name, namespace)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def get_model_service(self, namespace: str, name: str) -> Object | None:
        try:
            result: Object = self._call(
                self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def priority_class_exists(self, name: str) -> bool:
        try:
            self._call(self.scheduling.read_priority_class, name)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def apply_status(self, ms: ModelService, status: Object) -> None:
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": ms.name, "namespace": ms.namespace},
            "status": status,
        }
        try:
            self._call(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                ms.namespace,
                PLURAL,
                ms.name,
                body,
                field_manager=render.FIELD_MANAGER,
                force=True,
                _content_type=APPLY,
            )
        except ApiError as exc:
            if exc.status == 404:
                return  # deleted meanwhile: nothing to report on
            raise
