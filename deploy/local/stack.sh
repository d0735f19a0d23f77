#!/usr/bin/env bash
# Local Lotse infrastructure: one Apache Kafka node in KRaft mode (broker and
# controller in one JVM), one PostgreSQL cluster and one Keycloak (the OIDC provider,
# realm `lotse` from deploy/keycloak/lotse-realm.json), all on loopback.
#
#   deploy/local/stack.sh up | down | status
#   deploy/local/stack.sh keycloak-up | keycloak-down | keycloak-reset   (one part only)
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
# PostgreSQL's defaults (128 MB of shared buffers, a checkpoint per 1 GB of WAL) are sized for a toy: under load
# the working set (indexes of the audit log, processed_events, outboxes) fell out of the buffers, and checkpoints
# came every minute or so, each followed by a full-page image in the WAL for every page touched again (about 17 per
# referral, most of the WAL's bytes). Sized instead for a database that has the machine's memory to itself in part.
PG_SETTINGS=${LOTSE_PG_SETTINGS:--c shared_buffers=1GB -c max_wal_size=4GB -c checkpoint_timeout=15min}
UP_TIMEOUT=${LOTSE_UP_TIMEOUT:-90}
KEYCLOAK_PORT=${LOTSE_KEYCLOAK_PORT:-8180}
KEYCLOAK_MANAGEMENT_PORT=${LOTSE_KEYCLOAK_MANAGEMENT_PORT:-9180}
KEYCLOAK_HEAP=${LOTSE_KEYCLOAK_HEAP:--Xms64m -Xmx448m}
# The first start builds (augments) the server, which takes ~30 s on two cores; later starts ~10 s.
KEYCLOAK_UP_TIMEOUT=${LOTSE_KEYCLOAK_UP_TIMEOUT:-240}

kafka_dir=$RUN_DIR/kafka
PY=${LOTSE_PYTHON:-$repo/.venv/bin/python}
kafka_pom_dir=$here/kafka
kafka_libs=$kafka_pom_dir/target/dependency
kafka_pid=$kafka_dir/kafka.pid
kafka_log=$kafka_dir/server.out

kc_dir=$RUN_DIR/keycloak
kc_pom_dir=$here/keycloak
kc_version=$(sed -n 's:.*<keycloak.version>\(.*\)</keycloak.version>.*:\1:p' "$kc_pom_dir/pom.xml")
kc_home=$kc_dir/keycloak-$kc_version
kc_pid=$kc_dir/keycloak.pid
kc_log=$kc_dir/server.out
kc_realm_file=$repo/deploy/keycloak/lotse-realm.json
kc_stamp=$kc_dir/.provisioned

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
      -o "-p $PG_PORT -k $sock -c listen_addresses=127.0.0.1 -c max_connections=300 $PG_SETTINGS" start >/dev/null \
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

# ------------------------------------------------------------ Java and Maven
# Kafka runs on the default `java` (17 or newer); Maven resolves the Kafka jars and Keycloak's distribution
# once. Missing ones are installed from Debian's packages, as PostgreSQL is (root needed).
# LOTSE_INSTALL_DRY_RUN=1 only says what would be installed (to check the decision without installing);
# LOTSE_JVM_ROOT (default /usr/lib/jvm) is where an installed but not default Java 17 is looked for.
default_java_major() {  # the major version of `java` on PATH, or nothing
  command -v java >/dev/null || return 0
  java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p' | head -n1
}

java_17_on_path() {  # Debian's Java 17, installed beside an older (or no) default java: put it first on PATH
  local d
  for d in "${LOTSE_JVM_ROOT:-/usr/lib/jvm}"/java-17-openjdk-*; do
    [ -x "$d/bin/java" ] && { PATH="$d/bin:$PATH"; export PATH; return 0; }
  done
  return 1
}

java_17_ready() {
  local v; v=$(default_java_major)
  [ -n "$v" ] && [ "$v" -ge 17 ] && return 0
  java_17_on_path && [ "$(default_java_major)" = 17 ]
}

ensure_java_maven_installed() {
  local pkgs=() why=()
  if ! java_17_ready; then pkgs+=(openjdk-17-jre-headless); why+=("no Java 17+ for Kafka (default java: $(default_java_major | grep . || echo none))"); fi
  if ! command -v mvn >/dev/null; then pkgs+=(maven); why+=("no mvn to resolve the Kafka jars and Keycloak"); fi
  [ ${#pkgs[@]} -eq 0 ] && return 0
  local reason; reason=$(printf '%s; ' "${why[@]}"); reason=${reason%; }
  if [ -n "${LOTSE_INSTALL_DRY_RUN:-}" ]; then
    log "dry run: would run apt-get install -y ${pkgs[*]} ($reason)$([ "$(id -u)" = 0 ] || echo '; needs root')"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "$reason: installing Debian's ${pkgs[*]} needs root (apt-get install ${pkgs[*]}); or install Java 17+ and Maven yourself"
  log "$reason: installing Debian's ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  apt-get install -y -qq "${pkgs[@]}" >/dev/null || die "apt-get install ${pkgs[*]} failed"
  java_17_ready || die "${pkgs[*]} installed, but still no Java 17+ (default java: $(default_java_major | grep . || echo none))"
  command -v mvn >/dev/null || die "${pkgs[*]} installed, but mvn is still not on PATH"
}

# --------------------------------------------------------------------- Kafka
ensure_kafka_jars() {
  ensure_java_maven_installed
  if [ -f "$kafka_libs/.complete" ]; then return 0; fi
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

# Security (see docs/security.md): clients reach the broker only over TLS with SCRAM-SHA-512
# (listener CLIENT, SASL_SSL; the certificate is made by lotse_kit/tls.py from a local CA under
# $kafka_dir/tls). The controller listener stays on loopback and needs a password too (SASL PLAIN:
# KRaft's controllers cannot use SCRAM). StandardAuthorizer denies whatever no ACL allows; the super
# users are the broker itself, the controller and the provisioning principal `lotse-admin`, which
# `lotse admin provision` uses to create every other principal, ACL, quota and topic.
kafka_secret() {  # a random password kept in $kafka_dir/secrets/<name> (0600), made once
  local f="$kafka_dir/secrets/$1"
  if [ ! -s "$f" ]; then
    (umask 077; mkdir -p "$kafka_dir/secrets"; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | head -c 40 >"$f")
  fi
  cat "$f"
}

kafka_tls() {
  [ -x "$PY" ] || die "no Python environment at $PY (run make install first): it generates the broker's certificate"
  (cd "$repo" && "$PY" -m lotse_kit.tls "$kafka_dir/tls" --host 127.0.0.1 --host localhost) \
    || die "could not make the broker's TLS certificate"
}

# The provisioning principal's credentials file (the format of lotse_kit/kafka.py), for `lotse admin provision` and tests.
# kafka_admin_credentials [FILE BOOTSTRAP]: the single node's by default; deploy/local/cluster.sh passes its own.
kafka_admin_credentials() {
  local f=${1:-$kafka_dir/credentials/lotse-admin.properties} servers=${2:-127.0.0.1:$KAFKA_PORT}
  (umask 077; mkdir -p "$(dirname "$f")"; cat >"$f.tmp" <<PROPS
bootstrap.servers=$servers
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.username=lotse-admin
sasl.password=$(kafka_secret lotse-admin)
ssl.ca.location=$kafka_dir/tls/ca.pem
PROPS
  mv "$f.tmp" "$f")
}

# kafka_node_config FILE NODE_ID CLIENT_PORT CONTROLLER_PORT VOTERS DATA_DIR REPLICATION MIN_ISR [ADVERTISED_PORT REPLICATION_PORT]
# One node's configuration; the single-node stack and deploy/local/cluster.sh (three nodes) share it.
# Without the last two (the single node) clients and replication share the CLIENT listener, advertised as
# itself. deploy/local/cluster.sh passes both: CLIENT is advertised at ADVERTISED_PORT (a fault proxy in
# front of the node), and the brokers replicate over their own REPLICATION listener (SASL_SSL, PLAIN for
# the broker principal only), which no proxy sits in front of.
kafka_node_config() {
  local file=$1 node=$2 port=$3 cport=$4 voters=$5 data=$6 rf=$7 isr=$8 aport=${9:-$3} rport=${10:-}
  local broker_pw admin_pw controller_pw listeners inter=CLIENT protocols=CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT
  local advertised="CLIENT://127.0.0.1:$aport" replication=""
  broker_pw=$(kafka_secret kafka-broker)
  admin_pw=$(kafka_secret lotse-admin)
  controller_pw=$(kafka_secret controller)
  listeners="CLIENT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
  if [ -n "$rport" ]; then
    listeners+=",REPLICATION://127.0.0.1:$rport"
    advertised+=",REPLICATION://127.0.0.1:$rport"
    inter=REPLICATION
    protocols+=",REPLICATION:SASL_SSL"
    replication="
listener.name.replication.sasl.enabled.mechanisms=PLAIN
listener.name.replication.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"kafka-broker\" password=\"$broker_pw\" user_kafka-broker=\"$broker_pw\";"
  fi
  (umask 077; cat >"$file" <<PROPS
# Generated by deploy/local/stack.sh (kafka_node_config); edit the script, not this file. It holds passwords: mode 0600.
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$voters
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=$inter
listener.security.protocol.map=$protocols

listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.client.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="kafka-broker" password="$broker_pw" user_kafka-broker="$broker_pw" user_lotse-admin="$admin_pw";$replication
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="$controller_pw" user_controller="$controller_pw";
sasl.mechanism.controller.protocol=PLAIN
ssl.keystore.type=PEM
ssl.keystore.location=$kafka_dir/tls/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$kafka_dir/tls/ca.pem
ssl.client.auth=none
ssl.enabled.protocols=TLSv1.3,TLSv1.2

authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:kafka-broker;User:controller;User:lotse-admin

log.dirs=$data
num.partitions=3
default.replication.factor=$rf
min.insync.replicas=$isr
unclean.leader.election.enable=false
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
# Topics are created explicitly (lotse admin provision), with their own retention.
auto.create.topics.enable=false
log.retention.hours=168
log.segment.bytes=67108864
PROPS
  )
}

kafka_config() {
  kafka_node_config "$kafka_dir/server.properties" 1 "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" \
    "1@127.0.0.1:$KAFKA_CONTROLLER_PORT" "$kafka_dir/data" 1 1
}

kafka_up() {
  local started=""
  ensure_kafka_jars
  mkdir -p "$kafka_dir/logs"
  if pid_alive "$kafka_pid"; then
    log "Kafka already running (pid $(cat "$kafka_pid"))"
  elif port_open "$KAFKA_PORT"; then
    log "something already listens on 127.0.0.1:$KAFKA_PORT; assuming it is a Kafka broker"
    return 0
  else
    kafka_tls
    kafka_config
    kafka_admin_credentials
    # Storage from before the broker required authentication holds topics made without ACLs in mind:
    # the local stack's data is disposable, so it is formatted anew.
    if [ -f "$kafka_dir/data/meta.properties" ] && [ ! -f "$kafka_dir/data/.lotse-sasl" ]; then
      log "Kafka storage predates SASL; formatting it anew (local data is discarded)"
      rm -rf "$kafka_dir/data"
    fi
    if [ ! -f "$kafka_dir/data/meta.properties" ]; then
      local cluster_id
      cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
      [ -n "$cluster_id" ] || die "StorageTool random-uuid failed"
      log "formatting Kafka storage (cluster $cluster_id)"
      kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$kafka_dir/server.properties" \
        >"$kafka_dir/format.log" 2>&1 || die "StorageTool format failed, see $kafka_dir/format.log"
      touch "$kafka_dir/data/.lotse-sasl"
    fi
    log "starting Kafka on 127.0.0.1:$KAFKA_PORT"
    started=1
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
  if [ -n "$started" ]; then kafka_restore_credentials; fi
}

# A broker restart has come up here with an empty SCRAM credential cache (docs/security.md): give every
# principal that has a credentials file its credential back, with the same password, so clients reconnect.
kafka_restore_credentials() {
  local files; files=$(find "$kafka_dir/credentials" -name '*.properties' ! -name 'lotse-admin.properties' 2>/dev/null | head -n1)
  [ -n "$files" ] && [ -x "$PY" ] || return 0
  (cd "$repo" && LOTSE_KAFKA_CREDENTIALS_FILE="$kafka_dir/credentials/lotse-admin.properties" LOTSE_KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT" \
    "$PY" -m lotse_cli.main admin restore-credentials --credentials-dir "$kafka_dir/credentials" >&2) \
    || log "WARNING: could not restore the principals' Kafka credentials; run lotse admin restore-credentials"
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

# ------------------------------------------------------------------ Keycloak
# Keycloak's server distribution (org.keycloak:keycloak-quarkus-dist, resolved by Maven through
# deploy/local/keycloak/pom.xml) runs in development mode (`start-dev`) on its file database (H2
# under $kc_home/data): no separate build step, no hostname or TLS set-up. Measured on two cores:
# the first start (it builds the server once) ~30 s, later starts ~8 s. `kc.sh build` followed by
# `start --optimized` was slower here (build ~28 s, then starts of 12-22 s), so it is not used.
# HTTP only, on loopback; --hostname pins the issuer, so tokens name the same issuer whichever
# loopback name a caller used.
#
# Secrets: the bootstrap admin is generated on first start into $kc_dir/admin.env; client secrets
# and user passwords are generated into $kc_dir/secrets.env and set through the admin REST API
# (deploy/local/keycloak/provision.py). Both files are mode 0600 and never printed.

java_major() {  # the major version of the Java runtime in $1, or nothing
  local v=""
  [ -f "$1/release" ] && v=$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$1/release")
  [ -n "$v" ] || v=$("$1/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p')
  echo "$v"
}

kc_java_home() {  # a Java 21+ runtime for Keycloak (Kafka keeps using the default java)
  local d v
  for d in ${LOTSE_KEYCLOAK_JAVA_HOME:-} /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*; do
    [ -x "$d/bin/java" ] || continue
    v=$(java_major "$d")
    [ -n "$v" ] && [ "$v" -ge 21 ] && { echo "$d"; return 0; }
  done
  return 1
}

ensure_keycloak_java() {
  kc_java_home >/dev/null && return 0
  log "no Java 21+ runtime found for Keycloak; installing Debian's openjdk-21-jre-headless"
  [ "$(id -u)" = 0 ] || die "Keycloak needs Java 21+; install one (e.g. apt-get install openjdk-21-jre-headless) or set LOTSE_KEYCLOAK_JAVA_HOME"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  apt-get install -y -qq openjdk-21-jre-headless >/dev/null \
    || die "apt-get install openjdk-21-jre-headless failed (this Debian release may not package it): install a Java 21+ runtime and set LOTSE_KEYCLOAK_JAVA_HOME"
  kc_java_home >/dev/null || die "openjdk-21-jre-headless installed but no Java 21+ found under /usr/lib/jvm"
}

ensure_keycloak_dist() {
  [ -x "$kc_home/bin/kc.sh" ] && return 0
  [ -n "$kc_version" ] || die "no <keycloak.version> in $kc_pom_dir/pom.xml"
  ensure_java_maven_installed  # Maven, needed once to resolve Keycloak's distribution
  mkdir -p "$kc_dir"
  log "resolving Keycloak $kc_version with Maven and unpacking it under $kc_dir (once)"
  (cd "$kc_pom_dir" && mvn -q -B dependency:copy -DoutputDirectory="$kc_dir/dist") >"$kc_dir/mvn.log" 2>&1 \
    || die "mvn dependency:copy failed in $kc_pom_dir; last lines of $kc_dir/mvn.log:
$(tail -n 20 "$kc_dir/mvn.log")"
  local tmp
  tmp=$(mktemp -d "$kc_dir/.unpack.XXXXXX")
  tar -xzf "$kc_dir/dist/keycloak-quarkus-dist-$kc_version.tar.gz" -C "$tmp" \
    || { rm -rf "$tmp"; die "could not unpack keycloak-quarkus-dist-$kc_version.tar.gz"; }
  mv "$tmp/keycloak-$kc_version" "$kc_home" && rmdir "$tmp"
  rm -rf "$kc_dir/dist"
}

kc_random() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

kc_forget_database() {
  rm -rf "$kc_home/data/h2" "$kc_dir/realm.sha256" "$kc_stamp"
}

ensure_keycloak_admin() {
  [ -s "$kc_dir/admin.env" ] && return 0
  if [ -d "$kc_home/data/h2" ]; then
    # The bootstrap admin exists only in the database that was created with it.
    pid_alive "$kc_pid" && die "$kc_dir/admin.env is missing while Keycloak runs; run: $0 keycloak-reset"
    log "admin.env is missing: re-creating Keycloak's dev database (the realm is imported again)"
    kc_forget_database
  fi
  mkdir -p "$kc_dir"
  (umask 077 && printf 'KC_BOOTSTRAP_ADMIN_USERNAME=lotse-admin\nKC_BOOTSTRAP_ADMIN_PASSWORD=%s\n' "$(kc_random)" >"$kc_dir/admin.env.tmp") \
    && mv "$kc_dir/admin.env.tmp" "$kc_dir/admin.env" || die "could not write $kc_dir/admin.env"
  log "generated the Keycloak bootstrap admin into $kc_dir/admin.env (mode 0600)"
}

kc_ready() { curl -sf -m 3 -o /dev/null "http://127.0.0.1:$KEYCLOAK_MANAGEMENT_PORT/health/ready"; }

kc_started_now=0
kc_foreign=0

# Launches Keycloak without waiting for it (`up` starts PostgreSQL and Kafka meanwhile).
kc_start() {
  ensure_keycloak_java
  ensure_keycloak_dist
  ensure_keycloak_admin
  command -v curl >/dev/null || die "curl not found (needed to probe Keycloak)"
  if pid_alive "$kc_pid"; then
    log "Keycloak already running (pid $(cat "$kc_pid"))"
    return 0
  fi
  if port_open "$KEYCLOAK_PORT"; then
    log "something already listens on 127.0.0.1:$KEYCLOAK_PORT; assuming it is the local Keycloak"
    kc_foreign=1
    return 0
  fi
  local jh
  jh=$(kc_java_home)
  mkdir -p "$kc_home/data/import"
  cp "$kc_realm_file" "$kc_home/data/import/lotse-realm.json"
  rm -f "$kc_stamp"
  log "starting Keycloak $kc_version on 127.0.0.1:$KEYCLOAK_PORT (Java $(java_major "$jh"), heap $KEYCLOAK_HEAP)"
  (
    set -a
    # shellcheck disable=SC1091
    . "$kc_dir/admin.env"
    set +a
    export JAVA_HOME=$jh JAVA_OPTS_KC_HEAP=$KEYCLOAK_HEAP
    exec nohup "$kc_home/bin/kc.sh" start-dev \
      --http-host=127.0.0.1 --http-port="$KEYCLOAK_PORT" \
      --http-management-port="$KEYCLOAK_MANAGEMENT_PORT" \
      --hostname="http://127.0.0.1:$KEYCLOAK_PORT" \
      --health-enabled=true --db=dev-file --import-realm
  ) >"$kc_log" 2>&1 </dev/null &
  echo $! >"$kc_pid"
  kc_started_now=1
}

# Waits (bounded) until Keycloak is ready, then imports or re-imports the realm if needed and sets
# the generated client secrets and user passwords.
kc_wait() {
  local waited=0
  until kc_ready; do
    if [ "$kc_foreign" = 0 ] && ! pid_alive "$kc_pid"; then
      die "Keycloak exited during start-up; last lines of $kc_log:
$(tail -n 20 "$kc_log" 2>/dev/null)"
    fi
    [ "$waited" -ge "$KEYCLOAK_UP_TIMEOUT" ] \
      && die "Keycloak was not ready on 127.0.0.1:$KEYCLOAK_MANAGEMENT_PORT/health/ready within ${KEYCLOAK_UP_TIMEOUT}s, see $kc_log"
    sleep 1; waited=$((waited + 1))
  done
  if [ "$kc_started_now" = 1 ] || [ ! -f "$kc_stamp" ] || [ "$kc_realm_file" -nt "$kc_stamp" ] \
     || [ ! -f "$kc_dir/secrets.env" ] || [ "$kc_dir/secrets.env" -nt "$kc_stamp" ]; then
    command -v python3 >/dev/null || die "python3 not found (needed to provision Keycloak)"
    python3 "$here/keycloak/provision.py" --url "http://127.0.0.1:$KEYCLOAK_PORT" \
      --state-dir "$kc_dir" --realm-file "$kc_realm_file" || die "provisioning the Keycloak realm failed"
    touch "$kc_stamp"
  fi
  log "Keycloak answers on http://127.0.0.1:$KEYCLOAK_PORT/realms/lotse"
}

kc_up() { kc_start; kc_wait; }

kc_down() {
  if pid_alive "$kc_pid"; then
    local pid
    pid=$(cat "$kc_pid")
    log "stopping Keycloak (pid $pid)"
    # kc.sh forwards TERM to its java child; a relaunched server replaced kc.sh (same pid).
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
      if [ "$waited" -ge 60 ]; then
        pkill -KILL -P "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 1; waited=$((waited + 1))
    done
  else
    log "Keycloak not running"
  fi
  rm -f "$kc_pid"
}

kc_status() {
  if kc_ready; then
    echo "keycloak: up (http://127.0.0.1:$KEYCLOAK_PORT/realms/lotse, health on 127.0.0.1:$KEYCLOAK_MANAGEMENT_PORT)"
  elif pid_alive "$kc_pid"; then
    echo "keycloak: starting, not ready yet (pid $(cat "$kc_pid"), log $kc_log)"; return 1
  else
    echo "keycloak: down (127.0.0.1:$KEYCLOAK_PORT)"; return 1
  fi
}

kc_reset() {
  kc_down
  log "forgetting Keycloak's dev database and admin credentials (secrets.env is kept and applied again)"
  kc_forget_database
  rm -f "$kc_dir/admin.env"
  kc_up
}

# Sourced by deploy/local/cluster.sh for its functions; run, it does what it is asked.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

case "${1:-}" in
  up) kc_start; pg_up; kafka_up; kc_wait ;;
  down) kc_down; kafka_down; pg_down ;;
  status) rc=0; pg_status || rc=1; kafka_status || rc=1; kc_status || rc=1; exit $rc ;;
  kafka-up) kafka_up ;;
  kafka-down) kafka_down ;;
  pg-up) pg_up ;;
  pg-down) pg_down ;;
  keycloak-up) kc_up ;;
  keycloak-down) kc_down ;;
  keycloak-reset) kc_reset ;;
  *) echo "usage: $0 up|down|status (or kafka-up|kafka-down|pg-up|pg-down|keycloak-up|keycloak-down|keycloak-reset)" >&2; exit 2 ;;
esac
