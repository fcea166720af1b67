#!/usr/bin/env bash
# Prints the path of a helm v3 binary, building it first if it is not cached.
#
# helm is not packaged in Debian, so it is built from the Go module proxy through the wrapper
# module tests/env/helm (the version is the one required in tests/env/helm/go.mod; bump it with
# `cd tests/env/helm && go get helm.sh/helm/v3@vX.Y.Z && go mod tidy`). The binary is cached in
# <cache>/helm-<version>/helm, like etcd and kube-apiserver (see tests/env/testenv.sh).
#
# Usage:
#   tests/env/helm.sh            build if needed; print the binary's path on stdout
#   tests/env/helm.sh version    print the pinned version
#
# Environment:
#   VAULTKEY_TESTENV_CACHE   binary cache (default ~/.cache/vaultkey-testenv)
#
# The build (about 3-4 minutes on 2 cores with a cold Go cache) goes to a temporary name that is
# renamed into place only on success, under a lock, so concurrent callers (parallel tests) wait
# for one build and a killed build never leaves a half binary. Progress goes to stderr and to
# <cache>/helm-<version>/build.log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
moddir=$here/helm
cache_root=${VAULTKEY_TESTENV_CACHE:-$HOME/.cache/vaultkey-testenv}

log() { printf 'helm.sh: %s\n' "$*" >&2; }
die() { printf 'helm.sh: error: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }

# mod_version MODULE: the version MODULE is required at in the wrapper's go.mod.
mod_version() {
  local v
  v=$(awk -v m="$1" '
      $1 == "require" && $2 == m { print $3; exit }
      $1 == m && $2 ~ /^v[0-9]/  { print $2; exit }' "$moddir/go.mod")
  [[ -n $v ]] || die "cannot find the version of $1 in $moddir/go.mod"
  printf '%s\n' "$v"
}

version=$(mod_version helm.sh/helm/v3)
if [[ ${1:-} == version ]]; then
  printf '%s\n' "$version"
  exit 0
fi
(( $# == 0 )) || die "unexpected argument '$1' (usage: tests/env/helm.sh [version])"

dir=$cache_root/helm-$version
bin=$dir/helm
if [[ -x $bin ]]; then
  printf '%s\n' "$bin"
  exit 0
fi

command -v go >/dev/null || die "go is not installed (needed to build helm $version)"
command -v flock >/dev/null || die "flock is not installed (util-linux)"
mkdir -p "$dir"
exec {lock_fd}>"$dir/.lock"
if ! flock -n "$lock_fd"; then
  log "another process is building helm $version; waiting for it"
  flock "$lock_fd"
fi
if [[ ! -x $bin ]]; then
  rm -f "$dir/.helm.tmp."*   # leftovers of a killed build (we hold the lock)
  tmp=$dir/.helm.tmp.$$
  # The same variables as helm's Makefile: the real version in `helm version`, and the
  # Kubernetes version that `helm template`/`helm lint` assume without a cluster (client-go
  # v0.X.Y -> 1.X).
  client_go=$(mod_version k8s.io/client-go)
  k8s_minor=$(printf '%s' "$client_go" | cut -d. -f2)
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
  done
  start=$(now_ms)
  log "building helm $version (this takes minutes on a cold cache; log: $dir/build.log)"
  if ! (cd "$moddir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp" helm.sh/helm/v3/cmd/helm) \
       >"$dir/build.log" 2>&1; then
    rm -f "$tmp"
    tail -n 40 "$dir/build.log" >&2 || true
    die "building helm $version failed (full log: $dir/build.log)"
  fi
  "$tmp" version --short >/dev/null 2>&1 || { rm -f "$tmp"; die "the freshly built helm does not run"; }
  mv -f "$tmp" "$bin"
  elapsed=$(( $(now_ms) - start ))
  log "built helm $version in $(( elapsed / 1000 )).$(( elapsed % 1000 / 100 ))s"
fi
exec {lock_fd}>&-
printf '%s\n' "$bin"
