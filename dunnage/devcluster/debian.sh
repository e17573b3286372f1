# Sourced by the scripts that install what they run from Debian when it is missing
# (prometheus.sh, image/build.sh).

# need_debian_package COMMAND PACKAGE: installs PACKAGE when COMMAND is not on PATH (needs root).
# Packages do not start their services (no init system here; the tests run their own processes).
need_debian_package() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "$1 is not installed and installing it needs root: apt-get install -y $2" >&2
        exit 1
    fi
    echo "installing $2 from Debian" >&2
    local added_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    local status=0
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" \
            >/dev/null; } || status=$?
    if [ -n "$added_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ "$status" != 0 ]; then
        echo "apt-get could not install $2 (exit $status)" >&2
        exit "$status"
    fi
}
