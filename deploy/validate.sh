#!/usr/bin/env bash
# Validates the deployment files (docs/deployment.md, "What is validated"); CI runs it, so can anyone:
#
#   deploy/validate.sh
#
# 1. deploy/k8s/generated is what `lotse admin k8s` makes from deploy/demo/network.yaml (stale: fail);
# 2. kustomize builds deploy/k8s/base and every overlay;
# 3. every built document validates, strictly, against the Kubernetes, Strimzi and KEDA schemas
#    (deploy/k8s/schemas.py: made from PyPI, Maven Central and the Go module proxy, cached under
#    .run/deploy-validate), with jsonschema-rs and, where Go is installed, with kubeconform too;
# 4. `docker compose config -q` on deploy/compose/compose.yaml where the compose plugin exists, or with
#    Docker Compose built from the Go module proxy (LOTSE_VALIDATE_COMPOSE_BUILD=1); skipped otherwise, and
#    said so. `bash -n` on its scripts.
# Exits non-zero when any check fails; prints one line per check.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${LOTSE_PYTHON:-.venv/bin/python}
OUT=${LOTSE_RUN_DIR:-$PWD/.run}/deploy-validate
KUBECONFORM=github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0
mkdir -p "$OUT/built" "$OUT/bin"

say() { printf '[validate] %s\n' "$*"; }
failed=()
check() {  # check NAME COMMAND...: runs it, records a failure, goes on
  local name=$1; shift
  if "$@"; then say "ok: $name"; else say "FAILED: $name"; failed+=("$name"); fi
}

# ---- 1. generated files
check "deploy/k8s/generated is up to date" \
  "$PY" -m lotse_cli.main admin k8s --network deploy/demo/network.yaml --out deploy/k8s/generated --check

# ---- 2. kustomize
kustomize_build() {
  if command -v kubectl >/dev/null; then kubectl kustomize "$1"
  elif command -v kustomize >/dev/null; then kustomize build "$1"
  else echo "neither kubectl nor kustomize is installed" >&2; return 1; fi
}
built=()
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  dir=${dir%/}
  target="$OUT/built/$(echo "$dir" | tr '/' '_').yaml"
  check "kustomize build $dir" bash -c "$(declare -f kustomize_build); kustomize_build '$dir' >'$target'"
  built+=("$target")
done

# ---- 3. schemas
if check "schemas (Kubernetes, Strimzi, KEDA)" "$PY" deploy/k8s/schemas.py fetch --dir "$OUT/schemas"; then
  check "manifests valid (jsonschema-rs, strict)" "$PY" deploy/k8s/schemas.py validate --dir "$OUT/schemas" "${built[@]}"
  if command -v go >/dev/null; then
    [ -x "$OUT/bin/kubeconform" ] || GOBIN="$OUT/bin" GOFLAGS=-mod=mod go install "$KUBECONFORM" || true
    if [ -x "$OUT/bin/kubeconform" ]; then
      check "manifests valid (kubeconform -strict)" "$OUT/bin/kubeconform" -strict -summary \
        -schema-location "$OUT/schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" "${built[@]}"
    else
      say "FAILED: go install $KUBECONFORM"; failed+=("kubeconform")
    fi
  else
    say "skipped: kubeconform (no Go toolchain); the jsonschema-rs check above covers the same schemas"
  fi
fi

# ---- 4. compose
check "bash -n deploy/compose/*.sh" bash -c 'for f in deploy/compose/*.sh; do bash -n "$f" || exit 1; done'
# The compose plugin where Docker has one; else a docker-compose built earlier into $OUT/bin, or built now
# from the Go module proxy when LOTSE_VALIDATE_COMPOSE_BUILD=1 (a few minutes on two cores; cached after).
COMPOSE_MODULE=github.com/docker/compose/v5@v5.6.0
build_compose() {
  local mod="$OUT/compose-build"
  mkdir -p "$mod" && cd "$mod" || return 1
  [ -f go.mod ] || go mod init lotse.invalid/compose-check >/dev/null 2>&1
  # `go install pkg@version` refuses modules with exclude directives; a throwaway main module builds it.
  GOFLAGS=-mod=mod go get "$COMPOSE_MODULE" && GOFLAGS=-mod=mod go build -o "$OUT/bin/docker-compose" github.com/docker/compose/v5/cmd
}
if docker compose version >/dev/null 2>&1; then
  check "docker compose config" docker compose -f deploy/compose/compose.yaml config -q
else
  if [ ! -x "$OUT/bin/docker-compose" ] && [ "${LOTSE_VALIDATE_COMPOSE_BUILD:-0}" = 1 ] && command -v go >/dev/null; then
    say "building docker-compose ($COMPOSE_MODULE) from the Go module proxy"
    (build_compose) || say "could not build docker-compose"
  fi
  if [ -x "$OUT/bin/docker-compose" ]; then
    check "docker-compose config ($COMPOSE_MODULE)" "$OUT/bin/docker-compose" -f deploy/compose/compose.yaml config -q
  else
    say "skipped: docker compose config (no compose plugin here; LOTSE_VALIDATE_COMPOSE_BUILD=1 builds one; tests/deploy/test_compose.py checks the file's structure)"
  fi
fi

if [ ${#failed[@]} -gt 0 ]; then
  say "${#failed[@]} check(s) failed: ${failed[*]}"
  exit 1
fi
say "all checks passed"
