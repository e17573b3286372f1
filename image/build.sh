#!/usr/bin/env bash
# Builds the dunnage image with buildah (no daemon, no Docker) from image/Containerfile and
# writes it as an OCI archive, build/dunnage-<version>.oci.tar, ready for
# `skopeo copy oci-archive:build/dunnage-<version>.oci.tar docker://REGISTRY/dunnage:<version>`.
#
#   BASE       the base image (default docker.io/library/python:3.11-slim-bookworm), or
#              `debootstrap`: a Debian bookworm minbase with python3 made here from Debian's
#              mirror, for machines that reach Debian and PyPI but no container registry (this
#              project's build machines). It is built once and kept as localhost/dunnage-base.
#   TAG        the image's name (default localhost/dunnage:<version>)
#   OUT        the archive (default build/dunnage-<version>.oci.tar)
#   PYTHON     the Python that builds the wheels (default .venv/bin/python, else python3)
#
# buildah keeps images in /var/lib/containers (vfs driver, chroot isolation: no overlay mounts or
# user namespaces needed). buildah and debootstrap are installed from Debian when missing (root).
set -euo pipefail
cd "$(dirname "$0")/.."
. dunnage/devcluster/debian.sh

export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}" BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
VERSION="$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
TAG="${TAG:-localhost/dunnage:$VERSION}"
OUT="${OUT:-build/dunnage-$VERSION.oci.tar}"
BASE="${BASE:-docker.io/library/python:3.11-slim-bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBOOTSTRAP_BASE=localhost/dunnage-base:bookworm

need_debian_package buildah buildah

if [ "$BASE" = debootstrap ]; then
    BASE="$DEBOOTSTRAP_BASE"
    if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
        need_debian_package debootstrap debootstrap
        rootfs="$(mktemp -d)"
        trap 'rm -rf "$rootfs"' EXIT
        echo "building $BASE with debootstrap from $DEBIAN_MIRROR" >&2
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$rootfs" "$DEBIAN_MIRROR" >/dev/null
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
        ctr="$(buildah from scratch)"
        buildah copy --quiet "$ctr" "$rootfs" / >/dev/null
        buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --cmd /bin/sh "$ctr"
        buildah commit --quiet --rm "$ctr" "$BASE" >/dev/null
    fi
fi

echo "wheels for dunnage $VERSION and its dependencies -> build/wheels" >&2
rm -rf build/wheels
"$PYTHON" -m pip wheel --quiet --wheel-dir build/wheels .

echo "building $TAG on $BASE" >&2
previous="$(buildah inspect --type image --format '{{.FromImageID}}' "$TAG" 2>/dev/null || true)"
buildah build --quiet --layers=false --build-arg "BASE=$BASE" --build-arg "VERSION=$VERSION" -f image/Containerfile -t "$TAG" . >/dev/null
# The image the tag named before, now untagged (vfs keeps every image whole: 600 MB each).
if [ -n "$previous" ]; then buildah rmi "$previous" >/dev/null 2>&1 || true; fi
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
buildah push --quiet "$TAG" "oci-archive:$OUT:$TAG"
echo "$OUT"
