#!/usr/bin/env bash
# Installs Prometheus (the Debian package) when no `prometheus` binary is on PATH.
# The e2e of the autoscaling loop runs a real Prometheus as a local process; it never uses the
# package's service (there is no systemd here), only its binary.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
    command -v prometheus
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "prometheus is not installed and installing it needs root: apt-get install -y prometheus" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Do not let the package start its service (no init system in containers; we run our own).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v prometheus
