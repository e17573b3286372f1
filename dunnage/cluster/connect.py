"""Credentials for the API server: a kubeconfig file, or the pod's service account.

In a pod, the Python client's in-cluster loader re-reads the service-account token every minute
(the kubelet rotates it); a kubeconfig's ``tokenFile`` is read once. So in-cluster components
use the in-cluster loader, and kubeconfig files are for running from outside the cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dunnage.errors import InputError

# A JSON merge patch's content type: the Python client would pick a JSON patch for a dict body
# on some resources, so callers name it.
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def load_client_configuration(kubeconfig: str | None, *, in_cluster: bool = False) -> Any:
    """A ``kubernetes.client.Configuration``.

    ``kubeconfig`` given: that file. ``in_cluster``: the pod's service account only. Neither:
    the pod's service account, else ``$KUBECONFIG`` / ``~/.kube/config``.
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    if kubeconfig:
        if in_cluster:
            raise InputError("give --kubeconfig or --in-cluster, not both", obj="--in-cluster")
        if not Path(kubeconfig).is_file():
            raise InputError("no such file", obj=f"--kubeconfig {kubeconfig}")
        try:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        except Exception as exc:  # ConfigException, yaml errors
            raise InputError(f"cannot load kubeconfig: {exc}", obj=kubeconfig) from exc
        return configuration
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException as exc:
        if in_cluster:
            raise InputError(
                f"no service account to use ({exc}); run in a pod or pass --kubeconfig",
                obj="--in-cluster",
            ) from exc
        try:
            config.load_kube_config(client_configuration=configuration)
        except Exception as exc:
            raise InputError(
                f"not in a pod and no usable kubeconfig ({exc}); pass --kubeconfig"
            ) from exc
    return configuration
