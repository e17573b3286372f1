#!/usr/bin/env bash
# Installs Prometheus (the Debian package, with promtool) when no `prometheus` binary is on PATH.
# The e2e of the autoscaling loop runs a real Prometheus as a local process; it never uses the
# package's service (there is no systemd here), only its binaries (the chart e2e runs promtool).
set -euo pipefail
. "$(dirname "$0")/debian.sh"

need_debian_package prometheus prometheus
command -v prometheus
