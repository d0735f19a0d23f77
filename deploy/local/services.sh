#!/usr/bin/env bash
# Runs every Lotse service that exists in this checkout as a local background process.
#
#   deploy/local/services.sh up | down | status        # every service in lotse_kit/settings.py SERVICE_PORTS
#   deploy/local/services.sh replica SERVICE PORT      # one more instance of SERVICE on PORT, in the same consumer groups
#
# Logs (JSON lines) and pid files live in $LOTSE_SERVICES_DIR (default $LOTSE_RUN_DIR/services, that is
# <repo>/.run/services); `down` stops the replicas too. The fault suite (bench/chaos) runs the services
# against the three-node cluster with
#   LOTSE_SERVICES_DIR=.run/chaos/services LOTSE_SERVICES_CREDENTIALS_DIR=.run/cluster/credentials
# (each service's Kafka credentials file names its bootstrap servers: the cluster's, written by
# `lotse admin provision --credentials-dir`, see `make up-cluster`).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
RUN_ROOT=${LOTSE_RUN_DIR:-$repo/.run}
RUN_DIR=${LOTSE_SERVICES_DIR:-$RUN_ROOT/services}
CREDENTIALS_DIR=${LOTSE_SERVICES_CREDENTIALS_DIR:-$RUN_ROOT/kafka/credentials}
PY=${LOTSE_PYTHON:-$repo/.venv/bin/python}
UP_TIMEOUT=${LOTSE_UP_TIMEOUT:-90}
export LOTSE_NETWORK_FILE=${LOTSE_NETWORK_FILE:-$repo/deploy/demo/network.yaml}
# Demo mail: a local SMTP server (lotse_cli/mailsink.py) that files every message as a maildir (next to the pid files:
# .run/mail by default).
MAILSINK_PORT=${LOTSE_MAILSINK_PORT:-8025}
MAIL_DIR=$(dirname "$RUN_DIR")/mail
export LOTSE_NOTIFICATIONS_SMTP_PORT=${LOTSE_NOTIFICATIONS_SMTP_PORT:-$MAILSINK_PORT}
# The default limits protect a real mail server (10 e-mails/s); the local sink takes what the benchmark sends.
if [ "$LOTSE_NOTIFICATIONS_SMTP_PORT" = "$MAILSINK_PORT" ]; then
  export LOTSE_NOTIFICATIONS_RATE_LIMITS=${LOTSE_NOTIFICATIONS_RATE_LIMITS:-'{"email": {"rate_per_s": 2000, "burst": 2000}, "sms": {"rate_per_s": 5, "burst": 20}, "webhook": {"rate_per_s": 50, "burst": 100}}'}
  # Local development only: partner webhook receivers on this machine (e.g. the fault suite's, bench/chaos/webhook_sink.py)
  # serve HTTPS with a certificate from the local CA. Production keeps the defaults (no loopback, the system's CAs).
  export LOTSE_NOTIFICATIONS_WEBHOOK_ALLOWED_HOSTS=${LOTSE_NOTIFICATIONS_WEBHOOK_ALLOWED_HOSTS:-'["127.0.0.1"]'}
  export LOTSE_NOTIFICATIONS_WEBHOOK_CA_FILE=${LOTSE_NOTIFICATIONS_WEBHOOK_CA_FILE:-${LOTSE_RUN_DIR:-$repo/.run}/kafka/tls/ca.pem}
fi

# The services and their ports come from the one list in lotse_kit/settings.py (SERVICE_PORTS);
# LOTSE_<NAME>_HTTP_PORT overrides a port.
declare -A PORTS=()
NAMES=()
while read -r name port; do
  var="LOTSE_${name^^}_HTTP_PORT"
  PORTS[$name]=${!var:-$port}
  NAMES+=("$name")
done < <(cd "$repo" && "$PY" -m lotse_kit.settings)
[ ${#PORTS[@]} -gt 0 ] || { printf '[services] ERROR: cannot read the service ports (is the venv installed? make install)\n' >&2; exit 1; }
# Start order: the consent gate before intake (intake asks it), then the rest in SERVICE_PORTS order.
ORDER=(consent intake notifications audit)
for name in "${NAMES[@]}"; do
  case " ${ORDER[*]} " in *" $name "*) ;; *) ORDER+=("$name") ;; esac
done

cd "$repo"  # `python -m services.<name>` resolves from the repository root

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# Each service's Kafka credentials: $CREDENTIALS_DIR/lotse-<service>.properties, written by `lotse admin provision`
# (make up; make up-cluster with --credentials-dir). A service without one is not started (a warning says so).

# The service's client secret from the local Keycloak's generated secrets (never printed).
client_secret() {
  local key="CLIENT_SECRET_LOTSE_${1^^}" file="$RUN_ROOT/keycloak/secrets.env"
  [ -f "$file" ] || die "no $file: start the local stack first (deploy/local/stack.sh up)"
  sed -n "s/^${key}=//p" "$file"
}

present() { [ -n "${PORTS[$1]:-}" ] && [ -f "$repo/services/$1/__main__.py" ]; }
# Alive and not a zombie: a process killed a moment ago stays in the table until its parent reaps it.
pid_alive() {
  local pid
  [ -f "$RUN_DIR/$1.pid" ] && pid=$(cat "$RUN_DIR/$1.pid") && kill -0 "$pid" 2>/dev/null \
    && [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" != Z ]
}
ready_on() { curl -fs -o /dev/null --max-time 3 "http://127.0.0.1:$1/health/ready"; }
ready() { ready_on "${PORTS[$1]}"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

mailsink_up() {
  if pid_alive mailsink; then return 0; fi
  if port_open "$MAILSINK_PORT"; then
    log "a mail sink already listens on 127.0.0.1:$MAILSINK_PORT (another services directory's): using it"
    return 0
  fi
  log "starting the demo mail sink on 127.0.0.1:$MAILSINK_PORT (maildir $MAIL_DIR)"
  mkdir -p "$MAIL_DIR/"{tmp,new,cur}
  nohup "$PY" -m lotse_cli.mailsink --host 127.0.0.1 --port "$MAILSINK_PORT" --maildir "$MAIL_DIR" \
    >>"$RUN_DIR/mailsink.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/mailsink.pid"
}

# start INSTANCE SERVICE PORT: one process of SERVICE serving HTTP on PORT; pid and log files named INSTANCE.
start() {
  local inst=$1 svc=$2 port=$3
  if pid_alive "$inst"; then
    log "$inst already running (pid $(cat "$RUN_DIR/$inst.pid"))"
    return 0
  fi
  log "starting $inst on 127.0.0.1:$port"
  # Each service calls others with its own Keycloak client credentials (generated by stack.sh)
  # and is its own Kafka principal (lotse-<service>, with exactly the ACLs its declaration needs).
  # Started directly (no subshell), so the pid file names the Python process itself.
  local kafka_file="$CREDENTIALS_DIR/lotse-$svc.properties" port_var="LOTSE_${svc^^}_HTTP_PORT"
  if [ ! -f "$kafka_file" ]; then
    # A service added to the checkout after the last provisioning: the others still start.
    log "WARNING: no Kafka credentials for $svc ($kafka_file): not started; run .venv/bin/lotse admin provision (make up does)"
    return 1
  fi
  env "$port_var=$port" LOTSE_OIDC_CLIENT_ID="lotse-$svc" LOTSE_OIDC_CLIENT_SECRET="$(client_secret "$svc")" \
    LOTSE_KAFKA_CREDENTIALS_FILE="$kafka_file" LOTSE_KAFKA_CREATE_TOPICS=false \
    nohup "$PY" -m "services.$svc" >>"$RUN_DIR/$inst.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$inst.pid"
}

await_ready() {
  local inst=$1 port=$2 waited=0
  until ready_on "$port"; do
    pid_alive "$inst" || die "$inst exited during start-up; last lines of $RUN_DIR/$inst.log:
$(tail -n 15 "$RUN_DIR/$inst.log")"
    [ "$waited" -ge "$UP_TIMEOUT" ] && die "$inst not ready within ${UP_TIMEOUT}s: $(curl -s "http://127.0.0.1:$port/health/ready" || true)"
    sleep 1; waited=$((waited + 1))
  done
  log "$inst ready on http://127.0.0.1:$port"
}

up() {
  mkdir -p "$RUN_DIR"
  [ "$LOTSE_NOTIFICATIONS_SMTP_PORT" = "$MAILSINK_PORT" ] && mailsink_up
  local svc started=()
  for svc in "${ORDER[@]}"; do
    present "$svc" || continue
    start "$svc" "$svc" "${PORTS[$svc]}" || continue
    started+=("$svc")
  done
  for svc in "${started[@]}"; do await_ready "$svc" "${PORTS[$svc]}"; done
}

replica() {
  local svc=${1:?service} port=${2:?HTTP port}
  present "$svc" || die "no service $svc in this checkout"
  mkdir -p "$RUN_DIR"
  start "$svc@$port" "$svc" "$port" || die "$svc@$port not started"
  await_ready "$svc@$port" "$port"
}

stop_instance() {
  local inst=$1
  if pid_alive "$inst"; then
    local pid; pid=$(cat "$RUN_DIR/$inst.pid")
    log "stopping $inst (pid $pid)"
    kill -TERM "$pid"
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
      [ "$waited" -ge 30 ] && { kill -KILL "$pid" 2>/dev/null || true; break; }
      sleep 1; waited=$((waited + 1))
    done
  fi
  rm -f "$RUN_DIR/$inst.pid"
}

down() {
  local svc f
  for svc in "${ORDER[@]}"; do
    for f in "$RUN_DIR/$svc"@*.pid; do [ -e "$f" ] && stop_instance "$(basename "$f" .pid)"; done
    stop_instance "$svc"
  done
  if pid_alive mailsink; then log "stopping the mail sink"; kill -TERM "$(cat "$RUN_DIR/mailsink.pid")" || true; fi
  rm -f "$RUN_DIR/mailsink.pid"
}

status() {
  local svc rc=0
  for svc in "${ORDER[@]}"; do
    present "$svc" || continue
    if ready "$svc"; then echo "$svc: ready (http://127.0.0.1:${PORTS[$svc]})"
    elif pid_alive "$svc"; then echo "$svc: running, not ready"; rc=1
    elif [ ! -f "$CREDENTIALS_DIR/lotse-$svc.properties" ]; then echo "$svc: not provisioned (no Kafka credentials)"; rc=1
    else echo "$svc: down"; rc=1; fi
  done
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  replica) replica "${2:-}" "${3:-}" ;;
  *) echo "usage: $0 up|down|status|replica SERVICE PORT" >&2; exit 2 ;;
esac
