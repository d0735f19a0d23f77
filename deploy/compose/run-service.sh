#!/usr/bin/env bash
# Starts one Lotse service in the compose stack: its secrets from the `state` volume (deploy/compose/init.sh,
# `lotse admin provision`, Keycloak's provisioning), then `python -m services.<name>`, as deploy/local/services.sh.
set -euo pipefail
svc=${1:?usage: run-service.sh intake|consent|notifications|audit|gateway}
S=${LOTSE_STATE_DIR:-/state}

set -a
# shellcheck disable=SC1091
. "$S/env/common.env"
set +a
key="CLIENT_SECRET_LOTSE_${svc^^}"
LOTSE_OIDC_CLIENT_SECRET=$(sed -n "s/^${key}=//p" "$S/keycloak/secrets.env")
[ -n "$LOTSE_OIDC_CLIENT_SECRET" ] || { echo "[$svc] no $key in $S/keycloak/secrets.env (keycloak-provision has not run)" >&2; exit 1; }
export LOTSE_OIDC_CLIENT_ID="lotse-$svc" LOTSE_OIDC_CLIENT_SECRET
export LOTSE_KAFKA_CREDENTIALS_FILE="$S/credentials/lotse-$svc.properties"
[ -f "$LOTSE_KAFKA_CREDENTIALS_FILE" ] || { echo "[$svc] no $LOTSE_KAFKA_CREDENTIALS_FILE (provision has not run)" >&2; exit 1; }
exec python -m "services.$svc"
