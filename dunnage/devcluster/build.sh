#!/usr/bin/env bash
# Build the local control plane from real sources, into a cache outside the repo:
#   kube-apiserver, kube-scheduler, kube-controller-manager, kubectl  (k8s.io/kubernetes)
#   etcd (go.etcd.io/etcd/server/v3), helm (helm.sh/helm/v3), kwok (sigs.k8s.io/kwok)
# Each binary is built only when missing. Prints progress and the total time.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
CACHE="${DUNNAGE_CACHE:-$HOME/.cache/dunnage}"
ROOT="$CACHE/k8s-$K8S_VERSION"
BIN="$ROOT/bin"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath"
mkdir -p "$BIN"

started=$(date +%s)
say() { echo "[build $(($(date +%s) - started))s] $*"; }
missing() { [ ! -x "$BIN/$1" ]; }

command -v go >/dev/null || { echo "build.sh: Go is required (go1.26 or newer)" >&2; exit 1; }

# --- Kubernetes: a consumer module requiring the release, every staging module replaced by
# its published v0.X.Y twin (the release's own go.mod points them at ./staging).
if missing kube-apiserver || missing kube-scheduler || missing kube-controller-manager || missing kubectl; then
  src="$ROOT/src/kubernetes"
  mkdir -p "$src"
  cd "$src"
  staging_version="v0.${K8S_VERSION#v1.}"
  say "resolving k8s.io/kubernetes@$K8S_VERSION (staging modules at $staging_version)"
  mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module dunnage.local/k8sbuild"
    echo
    echo "go $(sed -n 's/^go //p' "$mod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    awk '/=> \.\/staging/ {print $1}' "$mod" | sort -u | while read -r m; do
      echo "	$m => $m $staging_version"
    done
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  say "$(grep -c '=> k8s.io' go.mod) staging modules replaced; go mod tidy"
  go mod tidy
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for cmd in kube-apiserver kube-scheduler kube-controller-manager kubectl; do
    if missing "$cmd"; then
      say "building $cmd"
      go build -ldflags "$ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$BIN/$cmd.tmp" "$BIN/$cmd"
    fi
  done
fi

# --- etcd: its server module's main package is etcdmain.Main; the module's own go.mod points
# its siblings at ../api etc., so it is built from a consumer module at one pinned version.
if missing etcd; then
  src="$ROOT/src/etcd"
  mkdir -p "$src"
  cd "$src"
  printf 'module dunnage.local/etcdbuild\n\ngo 1.26.0\n' > go.mod
  printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > main.go
  say "building etcd $ETCD_VERSION"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/api/v3@$ETCD_VERSION" \
    "go.etcd.io/etcd/client/v3@$ETCD_VERSION" "go.etcd.io/etcd/client/pkg/v3@$ETCD_VERSION" \
    "go.etcd.io/etcd/pkg/v3@$ETCD_VERSION"
  go mod tidy
  go build -ldflags "-s -w" -o "$BIN/etcd.tmp" .
  mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

if missing helm; then
  say "building helm $HELM_VERSION"
  GOBIN="$BIN" go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

if missing kwok; then
  say "building kwok $KWOK_VERSION"
  GOBIN="$BIN" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi

say "done: $BIN ($(ls "$BIN" | tr '\n' ' '))"
echo "$K8S_VERSION" > "$ROOT/VERSION"
