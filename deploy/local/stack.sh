#!/usr/bin/env bash
# Local Lotse infrastructure: one Apache Kafka node in KRaft mode (broker and
# controller in one JVM) and one PostgreSQL cluster, both on loopback.
#
#   deploy/local/stack.sh up | down | status
#
# Everything lives under $LOTSE_RUN_DIR (default: <repo>/.run), which git ignores.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

RUN_DIR=${LOTSE_RUN_DIR:-$repo/.run}
KAFKA_PORT=${LOTSE_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${LOTSE_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP=${LOTSE_KAFKA_HEAP:--Xmx512m -Xms256m}
PG_PORT=${LOTSE_PG_PORT:-5432}
PG_SUPERUSER_PASSWORD=${LOTSE_PG_SUPERUSER_PASSWORD:-lotse}
UP_TIMEOUT=${LOTSE_UP_TIMEOUT:-90}

kafka_dir=$RUN_DIR/kafka
kafka_pom_dir=$here/kafka
kafka_libs=$kafka_pom_dir/target/dependency
kafka_pid=$kafka_dir/kafka.pid
kafka_log=$kafka_dir/server.out

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# ---------------------------------------------------------------- PostgreSQL
pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

ensure_postgres_installed() {
  pg_bin >/dev/null && return 0
  log "PostgreSQL server not found; installing Debian's postgresql package"
  [ "$(id -u)" = 0 ] || die "PostgreSQL is missing and installing it needs root (apt-get install postgresql)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  apt-get install -y -qq postgresql postgresql-contrib >/dev/null || die "apt-get install postgresql failed"
  pg_bin >/dev/null || die "postgresql installed but no initdb found under /usr/lib/postgresql"
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# initdb refuses to run as root, and the postgres user may not be able to reach
# a checkout under /root; then the cluster lives in /var/lib/postgresql instead.
pg_root_dir() {
  if [ -n "${LOTSE_PG_ROOT:-}" ]; then echo "$LOTSE_PG_ROOT"; return; fi
  mkdir -p "$RUN_DIR"
  if [ "$(id -u)" != 0 ] || runuser -u postgres -- test -x "$RUN_DIR" 2>/dev/null; then
    echo "$RUN_DIR/pg-$PG_PORT"
  else
    echo "/var/lib/postgresql/lotse-$PG_PORT"
  fi
}

pg_up() {
  ensure_postgres_installed
  local bin root data sock
  bin=$(pg_bin)
  root=$(pg_root_dir); data=$root/data; sock=$root/sock
  if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    log "PostgreSQL already answers on 127.0.0.1:$PG_PORT"
  else
    mkdir -p "$data" "$sock"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$root"
    chmod 700 "$data"
    if [ ! -f "$data/PG_VERSION" ]; then
      log "initialising PostgreSQL cluster in $data"
      local pw
      pw=$(mktemp); printf '%s\n' "$PG_SUPERUSER_PASSWORD" >"$pw"
      [ "$(id -u)" = 0 ] && chown postgres "$pw"
      as_postgres "$bin/initdb" -D "$data" -U postgres --pwfile="$pw" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$root/initdb.log" 2>&1 \
        || { rm -f "$pw"; die "initdb failed, see $root/initdb.log"; }
      rm -f "$pw"
    fi
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_postgres "$bin/pg_ctl" -D "$data" -l "$root/server.log" -w -t "$UP_TIMEOUT" \
      -o "-p $PG_PORT -k $sock -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null \
      || die "PostgreSQL did not start, see $root/server.log"
  fi
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t "$UP_TIMEOUT" \
    || die "PostgreSQL on 127.0.0.1:$PG_PORT does not answer"
  # The application superuser `lotse` provisions each service's schema and role.
  PGPASSWORD=$PG_SUPERUSER_PASSWORD psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<SQL || die "could not create the lotse role and database"
SELECT 'CREATE ROLE lotse LOGIN SUPERUSER PASSWORD ''lotse'''
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lotse') \gexec
SELECT 'CREATE DATABASE lotse OWNER lotse'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'lotse') \gexec
SQL
}

pg_down() {
  local bin data
  bin=$(pg_bin) || { log "PostgreSQL not installed"; return 0; }
  data=$(pg_root_dir)/data
  if [ -f "$data/postmaster.pid" ]; then
    log "stopping PostgreSQL ($data)"
    as_postgres "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null || die "pg_ctl stop failed"
  else
    log "PostgreSQL not running from $data"
  fi
}

pg_status() {
  local bin
  bin=$(pg_bin) || { echo "postgres: not installed"; return 1; }
  if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    echo "postgres: up (127.0.0.1:$PG_PORT, data $(pg_root_dir)/data)"
  else
    echo "postgres: down (127.0.0.1:$PG_PORT)"; return 1
  fi
}

# --------------------------------------------------------------------- Kafka
ensure_kafka_jars() {
  if [ -f "$kafka_libs/.complete" ]; then return 0; fi
  command -v java >/dev/null || die "java not found (Kafka needs a Java 17 runtime)"
  command -v mvn >/dev/null || die "mvn not found (needed once to resolve the Kafka jars)"
  log "resolving Kafka jars with Maven (once)"
  (cd "$kafka_pom_dir" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime) \
    || die "mvn dependency:copy-dependencies failed in $kafka_pom_dir"
  touch "$kafka_libs/.complete"
}

kafka_java() {
  java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$kafka_dir/logs" \
    -cp "$kafka_libs/*" "$@"
}

kafka_config() {
  cat >"$kafka_dir/server.properties" <<PROPS
# Generated by deploy/local/stack.sh; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$kafka_dir/data
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Topics are created explicitly (lotse topics ensure), with their own retention.
auto.create.topics.enable=false
log.retention.hours=168
log.segment.bytes=67108864
PROPS
}

kafka_up() {
  ensure_kafka_jars
  mkdir -p "$kafka_dir/logs"
  if pid_alive "$kafka_pid"; then
    log "Kafka already running (pid $(cat "$kafka_pid"))"
  elif port_open "$KAFKA_PORT"; then
    log "something already listens on 127.0.0.1:$KAFKA_PORT; assuming it is a Kafka broker"
    return 0
  else
    kafka_config
    if [ ! -f "$kafka_dir/data/meta.properties" ]; then
      local cluster_id
      cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
      [ -n "$cluster_id" ] || die "StorageTool random-uuid failed"
      log "formatting Kafka storage (cluster $cluster_id)"
      kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$kafka_dir/server.properties" \
        >"$kafka_dir/format.log" 2>&1 || die "StorageTool format failed, see $kafka_dir/format.log"
    fi
    log "starting Kafka on 127.0.0.1:$KAFKA_PORT"
    nohup bash -c "$(declare -f kafka_java); here='$here' kafka_dir='$kafka_dir' kafka_libs='$kafka_libs' KAFKA_HEAP='$KAFKA_HEAP' kafka_java kafka.Kafka '$kafka_dir/server.properties'" \
      >"$kafka_log" 2>&1 </dev/null &
    echo $! >"$kafka_pid"
  fi
  local waited=0
  until grep -q "Kafka Server started" "$kafka_log" 2>/dev/null && port_open "$KAFKA_PORT"; do
    pid_alive "$kafka_pid" || die "Kafka exited during start-up; last lines of $kafka_log:
$(tail -n 20 "$kafka_log" 2>/dev/null)"
    [ "$waited" -ge "$UP_TIMEOUT" ] && die "Kafka did not answer on 127.0.0.1:$KAFKA_PORT within ${UP_TIMEOUT}s, see $kafka_log"
    sleep 1; waited=$((waited + 1))
  done
  log "Kafka answers on 127.0.0.1:$KAFKA_PORT"
}

kafka_down() {
  if pid_alive "$kafka_pid"; then
    local pid; pid=$(cat "$kafka_pid")
    log "stopping Kafka (pid $pid)"
    # The bash wrapper's child is the JVM; signal the whole group.
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while kill -0 "$pid" 2>/dev/null || pgrep -f "kafka.Kafka $kafka_dir/server.properties" >/dev/null; do
      [ "$waited" -ge 60 ] && { pkill -KILL -f "kafka.Kafka $kafka_dir/server.properties" || true; break; }
      sleep 1; waited=$((waited + 1))
    done
  else
    log "Kafka not running"
  fi
  rm -f "$kafka_pid"
}

kafka_status() {
  if port_open "$KAFKA_PORT"; then
    echo "kafka: up (127.0.0.1:$KAFKA_PORT)"
  else
    echo "kafka: down (127.0.0.1:$KAFKA_PORT)"; return 1
  fi
}

case "${1:-}" in
  up) pg_up; kafka_up ;;
  down) kafka_down; pg_down ;;
  status) rc=0; pg_status || rc=1; kafka_status || rc=1; exit $rc ;;
  kafka-up) kafka_up ;;
  kafka-down) kafka_down ;;
  pg-up) pg_up ;;
  pg-down) pg_down ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
