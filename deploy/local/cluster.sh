#!/usr/bin/env bash
# A three-node Apache Kafka cluster (KRaft) on loopback, for the fault suite (issue 15).
#
#   deploy/local/cluster.sh up | down | status
#   deploy/local/cluster.sh kill N     # kill -9 node N (1..3), as a crash would
#   deploy/local/cluster.sh start N    # start node N again
#   deploy/local/cluster.sh leader TOPIC PARTITION   # the node that leads it now
#   deploy/local/cluster.sh proxy-up | proxy-down     # only the fault proxy (up and down do it with the nodes)
#
# Three combined broker/controller nodes with the single-node stack's security (SASL_SSL with SCRAM for
# principals, PLAIN for the super users, the same local CA; see docs/security.md): replication factor 3
# and min.insync.replicas=2 for every topic and the internal ones, unclean leader election off. Clients
# use acks=all and idempotence (lotse_kit/kafka.py), so an acknowledged record survives the loss of any
# one node. The single-node stack (deploy/local/stack.sh, `make up`, `make test`) stays the default.
#
# Clients reach each node through a TCP proxy (toxiproxy, built once from the Go module proxy into
# $LOTSE_RUN_DIR/bin), so the fault suite can delay, reset or stall the connections between services and
# brokers (bench/chaos/netfault.py). The proxies pass everything through until told otherwise. Each node's
# CLIENT listener is advertised at its proxy's port, so clients come back through the proxy after a
# metadata update; replication between the brokers and the controllers' quorum use listeners of their own,
# without a proxy. TLS passes through the proxy unchanged (the certificate names 127.0.0.1).
#
# Ports: clients 39092-39094 (the proxies; LOTSE_CLUSTER_PORT is the first), the nodes' own client
# listeners 29092-29094 (LOTSE_CLUSTER_BROKER_PORT), controllers 29192-29194 (LOTSE_CLUSTER_CONTROLLER_PORT),
# replication 29292-29294 (LOTSE_CLUSTER_REPLICATION_PORT): the nodes' ports lie below Linux's ephemeral range
# (32768-60999), because while a node is down its peers and the proxy keep connecting to its ports, and such a
# connection can be given the very port it dials as its source (a TCP self-connect), which then blocks the
# node's restart ("Address already in use"; seen with the earlier 39xxx ports). After changing a port, start
# from scratch (down, rm -rf .run/cluster, make up-cluster). The proxy's API: 39474
# (LOTSE_CLUSTER_PROXY_API_PORT; proxies named kafka-node-1..3; log .run/cluster/proxy.log at
# LOTSE_CLUSTER_PROXY_LOG_LEVEL, default info). Heap per node: LOTSE_CLUSTER_HEAP (default -Xmx384m).
# State under $LOTSE_RUN_DIR/cluster; the provisioning principal's credentials file is
# cluster/credentials/lotse-admin.properties (its bootstrap names all three proxies).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=stack.sh
source "$here/stack.sh"  # its functions (Kafka jars, TLS, secrets, node configuration); it runs nothing when sourced

NODES=3
CLUSTER_PORT=${LOTSE_CLUSTER_PORT:-39092}
CLUSTER_CONTROLLER_PORT=${LOTSE_CLUSTER_CONTROLLER_PORT:-29192}
CLUSTER_BROKER_PORT=${LOTSE_CLUSTER_BROKER_PORT:-29092}
CLUSTER_REPLICATION_PORT=${LOTSE_CLUSTER_REPLICATION_PORT:-29292}
PROXY_API_PORT=${LOTSE_CLUSTER_PROXY_API_PORT:-39474}
CLUSTER_HEAP=${LOTSE_CLUSTER_HEAP:--Xmx384m -Xms128m}
TOXIPROXY_VERSION=v2.12.0
cdir=$RUN_DIR/cluster
toxiproxy_bin=$RUN_DIR/bin/toxiproxy-server-$TOXIPROXY_VERSION
proxy_pid=$cdir/proxy.pid

client_port() { echo $((CLUSTER_PORT + $1 - 1)); }  # the proxy's: what clients connect to
broker_port() { echo $((CLUSTER_BROKER_PORT + $1 - 1)); }  # the node's own client listener
replication_port() { echo $((CLUSTER_REPLICATION_PORT + $1 - 1)); }
controller_port() { echo $((CLUSTER_CONTROLLER_PORT + $1 - 1)); }
node_dir() { echo "$cdir/node-$1"; }
node_pid() { echo "$(node_dir "$1")/kafka.pid"; }

voters() {
  local i out=""
  for i in $(seq 1 $NODES); do out+="${out:+,}$i@127.0.0.1:$(controller_port "$i")"; done
  echo "$out"
}

bootstrap() {
  local i out=""
  for i in $(seq 1 $NODES); do out+="${out:+,}127.0.0.1:$(client_port "$i")"; done
  echo "$out"
}

cluster_prepare() {
  ensure_kafka_jars
  kafka_tls  # the same CA and broker certificate (its SANs name 127.0.0.1, whatever the port)
  mkdir -p "$cdir/credentials"
  chmod 700 "$cdir/credentials"
  local i
  for i in $(seq 1 $NODES); do
    mkdir -p "$(node_dir "$i")/logs"
    kafka_node_config "$(node_dir "$i")/server.properties" "$i" "$(broker_port "$i")" "$(controller_port "$i")" \
      "$(voters)" "$(node_dir "$i")/data" 3 2 "$(client_port "$i")" "$(replication_port "$i")"
  done
  [ -s "$cdir/cluster.id" ] || kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 >"$cdir/cluster.id"
  for i in $(seq 1 $NODES); do
    if [ ! -f "$(node_dir "$i")/data/meta.properties" ]; then
      log "formatting node $i (cluster $(cat "$cdir/cluster.id"))"
      kafka_java kafka.tools.StorageTool format -t "$(cat "$cdir/cluster.id")" -c "$(node_dir "$i")/server.properties" \
        >"$(node_dir "$i")/format.log" 2>&1 || die "formatting node $i failed, see $(node_dir "$i")/format.log"
    fi
  done
  kafka_admin_credentials "$cdir/credentials/lotse-admin.properties" "$(bootstrap)"
}

# ------------------------------------------------------------------ the fault proxy (toxiproxy)
ensure_toxiproxy() {
  [ -x "$toxiproxy_bin" ] && return 0
  local go tmp
  go=$(command -v go || echo /usr/local/go/bin/go)
  [ -x "$go" ] || die "go not found (needed once to build toxiproxy $TOXIPROXY_VERSION, the cluster's fault proxy): install Go 1.22+"
  log "building toxiproxy $TOXIPROXY_VERSION with $go (once)"
  tmp=$(mktemp -d)
  GOBIN=$tmp GOFLAGS=-buildvcs=false "$go" install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" >"$tmp/build.log" 2>&1 \
    || { tail -n 20 "$tmp/build.log" >&2; rm -rf "$tmp"; die "building toxiproxy failed"; }
  mkdir -p "$RUN_DIR/bin"
  mv "$tmp/server" "$toxiproxy_bin"
  rm -rf "$tmp"
}

proxy_api() { echo "http://127.0.0.1:$PROXY_API_PORT"; }

proxies_json() {  # one pass-through proxy per node: client port -> the node's own client listener
  local i out=""
  for i in $(seq 1 $NODES); do
    out+="${out:+,}{\"name\":\"kafka-node-$i\",\"listen\":\"127.0.0.1:$(client_port "$i")\",\"upstream\":\"127.0.0.1:$(broker_port "$i")\",\"enabled\":true}"
  done
  echo "[$out]"
}

proxy_up() {  # proxy_up [reset]: running, with a proxy per node; `reset` also removes every fault (toxic)
  ensure_toxiproxy
  command -v curl >/dev/null || die "curl not found (needed to configure the fault proxy)"
  if ! pid_alive "$proxy_pid"; then
    port_open "$PROXY_API_PORT" && die "something else listens on 127.0.0.1:$PROXY_API_PORT (LOTSE_CLUSTER_PROXY_API_PORT)"
    log "starting the fault proxy (toxiproxy $TOXIPROXY_VERSION, API $(proxy_api))"
    mkdir -p "$cdir"
    LOG_LEVEL=${LOTSE_CLUSTER_PROXY_LOG_LEVEL:-info} nohup "$toxiproxy_bin" -host 127.0.0.1 -port "$PROXY_API_PORT" >>"$cdir/proxy.log" 2>&1 </dev/null &
    echo $! >"$proxy_pid"
    local waited=0
    until curl -sf -m 2 -o /dev/null "$(proxy_api)/version"; do
      pid_alive "$proxy_pid" || die "the fault proxy exited during start-up; last lines of $cdir/proxy.log:
$(tail -n 20 "$cdir/proxy.log" 2>/dev/null)"
      [ "$waited" -ge 20 ] && die "the fault proxy did not answer on $(proxy_api) within 20s"
      sleep 0.5; waited=$((waited + 1))
    done
  fi
  # Idempotent: creates missing proxies and keeps existing ones with their toxics (a fault under way
  # survives `start N`); `up` then removes every toxic and re-enables every proxy.
  curl -sf -m 10 -o /dev/null -X POST -H 'Content-Type: application/json' -d "$(proxies_json)" "$(proxy_api)/populate" \
    || die "could not create the proxies at $(proxy_api)/populate"
  if [ "${1:-}" = reset ]; then
    curl -sf -m 10 -o /dev/null -X POST "$(proxy_api)/reset" || die "could not reset the fault proxy"
    log "fault proxy passes 127.0.0.1:$(client_port 1)-$(client_port $NODES) through to the nodes"
  fi
}

proxy_down() {
  local pid waited=0
  if pid_alive "$proxy_pid"; then
    pid=$(cat "$proxy_pid")
    log "stopping the fault proxy (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do  # its ports are free when this returns, for an `up` right after
      [ "$waited" -ge 50 ] && { kill -KILL "$pid" 2>/dev/null || true; break; }
      sleep 0.1; waited=$((waited + 1))
    done
  fi
  rm -f "$proxy_pid"
}

# ------------------------------------------------------------------------------------- nodes
node_start() {
  local i=$1 dir; dir=$(node_dir "$i")
  if pid_alive "$(node_pid "$i")"; then log "node $i already running (pid $(cat "$(node_pid "$i")"))"; return 0; fi
  log "starting node $i on 127.0.0.1:$(broker_port "$i") (clients through 127.0.0.1:$(client_port "$i"))"
  : >"$dir/server.out"
  nohup bash -c "$(declare -f kafka_java); here='$here' kafka_dir='$dir' kafka_libs='$kafka_libs' KAFKA_HEAP='$CLUSTER_HEAP' exec java \$KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true -Dlog4j2.configurationFile='$here/kafka/log4j2.properties' -Dkafka.logs.dir='$dir/logs' -cp '$kafka_libs/*' kafka.Kafka '$dir/server.properties'" \
    >"$dir/server.out" 2>&1 </dev/null &
  echo $! >"$(node_pid "$i")"
}

node_wait() {
  local i=$1 waited=0 dir; dir=$(node_dir "$i")
  until grep -q "Kafka Server started" "$dir/server.out" 2>/dev/null && port_open "$(broker_port "$i")"; do
    pid_alive "$(node_pid "$i")" || die "node $i exited during start-up; last lines of $dir/server.out:
$(tail -n 20 "$dir/server.out" 2>/dev/null)"
    [ "$waited" -ge "$UP_TIMEOUT" ] && die "node $i did not answer within ${UP_TIMEOUT}s, see $dir/server.out"
    sleep 1; waited=$((waited + 1))
  done
  log "node $i answers on 127.0.0.1:$(broker_port "$i") (clients through 127.0.0.1:$(client_port "$i"))"
}

node_kill() {
  local i=$1 pid waited=0
  if pid_alive "$(node_pid "$i")"; then
    pid=$(cat "$(node_pid "$i")")
    log "kill -9 node $i (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
    # Gone before this returns, so `status` right after says down.
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 50 ]; do sleep 0.1; waited=$((waited + 1)); done
  fi
  pkill -KILL -f "kafka.Kafka $(node_dir "$i")/server.properties" 2>/dev/null || true
  rm -f "$(node_pid "$i")"
}

node_stop() {
  local i=$1 waited=0 pid
  if pid_alive "$(node_pid "$i")"; then
    pid=$(cat "$(node_pid "$i")")
    log "stopping node $i (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
      [ "$waited" -ge 60 ] && { kill -KILL "$pid" 2>/dev/null || true; break; }
      sleep 1; waited=$((waited + 1))
    done
  fi
  rm -f "$(node_pid "$i")"
}

cluster_up() {
  cluster_prepare
  proxy_up reset
  local i
  # All nodes start before any is awaited: the controllers need a quorum to elect a leader.
  for i in $(seq 1 $NODES); do node_start "$i"; done
  for i in $(seq 1 $NODES); do node_wait "$i"; done
  log "cluster answers on $(bootstrap); admin credentials: $cdir/credentials/lotse-admin.properties"
}

cluster_down() {
  local i
  for i in $(seq 1 $NODES); do node_stop "$i"; done
  proxy_down
}

cluster_status() {
  local i rc=0
  for i in $(seq 1 $NODES); do
    if port_open "$(broker_port "$i")"; then echo "node $i: up (127.0.0.1:$(broker_port "$i"), clients through 127.0.0.1:$(client_port "$i"))"; else echo "node $i: down (127.0.0.1:$(broker_port "$i"))"; rc=1; fi
  done
  if curl -sf -m 3 -o /dev/null "$(proxy_api)/version" 2>/dev/null; then echo "proxy: up ($(proxy_api))"; else echo "proxy: down ($(proxy_api))"; rc=1; fi
  return $rc
}

cluster_leader() {  # the node id leading TOPIC's PARTITION, read with the provisioning principal
  LOTSE_KAFKA_CREDENTIALS_FILE="$cdir/credentials/lotse-admin.properties" LOTSE_KAFKA_BOOTSTRAP="$(bootstrap)" \
    "$PY" - "$1" "$2" <<'PY'
import asyncio, sys
from lotse_kit.kafka import KafkaConnection, admin_client
async def main(topic: str, partition: int) -> None:
    admin = admin_client(KafkaConnection.from_env())
    await admin.start()
    try:
        [desc] = await admin.describe_topics([topic])
        print(next(p["leader"] for p in desc["partitions"] if p["partition"] == partition))
    finally:
        await admin.close()
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
PY
}

case "${1:-}" in
  up) cluster_up ;;
  down) cluster_down ;;
  status) cluster_status ;;
  kill) node_kill "${2:?node number}" ;;
  start) cluster_prepare; proxy_up; node_start "${2:?node number}"; node_wait "$2" ;;
  leader) cluster_leader "${2:?topic}" "${3:?partition}" ;;
  proxy-up) proxy_up reset ;;
  proxy-down) proxy_down ;;
  *) echo "usage: $0 up|down|status|kill N|start N|leader TOPIC PARTITION|proxy-up|proxy-down" >&2; exit 2 ;;
esac
