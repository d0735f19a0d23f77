#!/usr/bin/env bash
# Runs every Lotse service that exists in this checkout as a local background process.
#
#   deploy/local/services.sh up | down | status
#
# Logs (JSON lines) and pid files live in $LOTSE_RUN_DIR/services (default <repo>/.run/services).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
RUN_DIR=${LOTSE_RUN_DIR:-$repo/.run}/services
PY=${LOTSE_PYTHON:-$repo/.venv/bin/python}
UP_TIMEOUT=${LOTSE_UP_TIMEOUT:-90}
export LOTSE_NETWORK_FILE=${LOTSE_NETWORK_FILE:-$repo/deploy/demo/network.yaml}
# Demo mail: a local SMTP server that files every message as a maildir under .run/mail.
MAILSINK_PORT=${LOTSE_MAILSINK_PORT:-8025}
export LOTSE_NOTIFICATIONS_SMTP_PORT=${LOTSE_NOTIFICATIONS_SMTP_PORT:-$MAILSINK_PORT}

# The ports come from the one list in lotse_kit/settings.py (SERVICE_PORTS); LOTSE_<NAME>_HTTP_PORT overrides.
declare -A PORTS=()
while read -r name port; do
  var="LOTSE_${name^^}_HTTP_PORT"
  PORTS[$name]=${!var:-$port}
done < <(cd "$repo" && "$PY" -m lotse_kit.settings)
[ ${#PORTS[@]} -eq 4 ] || { printf '[services] ERROR: cannot read the service ports (is the venv installed? make install)\n' >&2; exit 1; }
ORDER=(consent intake notifications audit)

cd "$repo"  # `python -m services.<name>` resolves from the repository root

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

present() { [ -f "$repo/services/$1/__main__.py" ]; }
pid_alive() { [ -f "$RUN_DIR/$1.pid" ] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }
ready() { curl -fs -o /dev/null --max-time 3 "http://127.0.0.1:${PORTS[$1]}/health/ready"; }

mailsink_up() {
  if pid_alive mailsink; then return 0; fi
  log "starting the demo mail sink on 127.0.0.1:$MAILSINK_PORT (maildir $RUN_DIR/../mail)"
  mkdir -p "$RUN_DIR/../mail/"{tmp,new,cur}
  nohup "$PY" -m aiosmtpd -n -l "127.0.0.1:$MAILSINK_PORT" -c aiosmtpd.handlers.Mailbox "$RUN_DIR/../mail" \
    >>"$RUN_DIR/mailsink.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/mailsink.pid"
}

up() {
  mkdir -p "$RUN_DIR"
  [ "$LOTSE_NOTIFICATIONS_SMTP_PORT" = "$MAILSINK_PORT" ] && mailsink_up
  local svc started=()
  for svc in "${ORDER[@]}"; do
    present "$svc" || continue
    if pid_alive "$svc"; then
      log "$svc already running (pid $(cat "$RUN_DIR/$svc.pid"))"
    else
      log "starting $svc on 127.0.0.1:${PORTS[$svc]}"
      # Started directly (no subshell), so the pid file names the Python process itself.
      nohup "$PY" -m "services.$svc" >>"$RUN_DIR/$svc.log" 2>&1 </dev/null &
      echo $! >"$RUN_DIR/$svc.pid"
    fi
    started+=("$svc")
  done
  for svc in "${started[@]}"; do
    local waited=0
    until ready "$svc"; do
      pid_alive "$svc" || die "$svc exited during start-up; last lines of $RUN_DIR/$svc.log:
$(tail -n 15 "$RUN_DIR/$svc.log")"
      [ "$waited" -ge "$UP_TIMEOUT" ] && die "$svc not ready within ${UP_TIMEOUT}s: $(curl -s "http://127.0.0.1:${PORTS[$svc]}/health/ready" || true)"
      sleep 1; waited=$((waited + 1))
    done
    log "$svc ready on http://127.0.0.1:${PORTS[$svc]}"
  done
}

down() {
  local svc
  for svc in "${ORDER[@]}"; do
    if pid_alive "$svc"; then
      local pid; pid=$(cat "$RUN_DIR/$svc.pid")
      log "stopping $svc (pid $pid)"
      kill -TERM "$pid"
      local waited=0
      while kill -0 "$pid" 2>/dev/null; do
        [ "$waited" -ge 30 ] && { kill -KILL "$pid" 2>/dev/null || true; break; }
        sleep 1; waited=$((waited + 1))
      done
    fi
    rm -f "$RUN_DIR/$svc.pid"
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
    else echo "$svc: down"; rc=1; fi
  done
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
