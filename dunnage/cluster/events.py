"""Posting a core/v1 Event about an object, as kubectl describe shows them."""

from __future__ import annotations

import datetime as dt
import logging

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


def post_event(
    core: client.CoreV1Api,
    involved: client.V1ObjectReference,
    reason: str,
    message: str,
    *,
    component: str,
    type_: str = "Normal",
) -> None:
    """Record an Event on ``involved`` (in its namespace); a refusal is logged, not raised: an
    Event is a courtesy, never a reason to stop."""
    namespace = involved.namespace
    if not namespace:
        raise ValueError(f"an Event about {involved.kind} {involved.name} needs its namespace")
    now = dt.datetime.now(dt.UTC)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{involved.name}.", namespace=namespace),
        involved_object=involved,
        reason=reason,
        message=message[:1024],
        type=type_,
        source=client.V1EventSource(component=component),
        first_timestamp=now,
        last_timestamp=now,
        count=1,
    )
    try:
        core.create_namespaced_event(namespace, event)
    except ApiException as exc:
        log.warning("cannot record event on %s %s: %s", involved.kind, involved.name, exc.reason)
