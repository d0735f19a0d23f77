#!/usr/bin/env bash
# A three-node Apache Kafka cluster (KRaft) on loopback, for the fault suite (issue 15).
#
#   deploy/local/cluster.sh up | down | status
#   deploy/local/cluster.sh kill N     # kill -9 node N (1..3), as a crash would
#   deploy/local/cluster.sh start N    # start node N again
#   deploy/local/cluster.sh leader TOPIC PARTITION   # the node that leads it now
#
# Three combined broker/controller nodes with the single-node stack's security (SASL_SSL with SCRAM for
# principals, PLAIN for the super users, the same local CA; see docs/security.md): replication factor 3
# and min.insync.replicas=2 for every topic and the internal ones, unclean leader election off. Clients
# use acks=all and idempotence (lotse_kit/kafka.py), so an acknowledged record survives the loss of any
# one node. The single-node stack (deploy/local/stack.sh, `make up`, `make test`) stays the default.
#
# Ports: clients 39092-39094 (LOTSE_CLUSTER_PORT is the first), controllers 39192-39194
# (LOTSE_CLUSTER_CONTROLLER_PORT). Heap per node: LOTSE_CLUSTER_HEAP (default -Xmx384m).
# State under $LOTSE_RUN_DIR/cluster; the provisioning principal's credentials file is
# cluster/credentials/lotse-admin.properties (its bootstrap names all three nodes).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=stack.sh
source "$here/stack.sh"  # its functions (Kafka jars, TLS, secrets, node configuration); it runs nothing when sourced

NODES=3
CLUSTER_PORT=${LOTSE_CLUSTER_PORT:-39092}
CLUSTER_CONTROLLER_PORT=${LOTSE_CLUSTER_CONTROLLER_PORT:-39192}
CLUSTER_HEAP=${LOTSE_CLUSTER_HEAP:--Xmx384m -Xms128m}
cdir=$RUN_DIR/cluster

client_port() { echo $((CLUSTER_PORT + $1 - 1)); }
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
    kafka_node_config "$(node_dir "$i")/server.properties" "$i" "$(client_port "$i")" "$(controller_port "$i")" \
      "$(voters)" "$(node_dir "$i")/data" 3 2
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

node_start() {
  local i=$1 dir; dir=$(node_dir "$i")
  if pid_alive "$(node_pid "$i")"; then log "node $i already running (pid $(cat "$(node_pid "$i")"))"; return 0; fi
  log "starting node $i on 127.0.0.1:$(client_port "$i")"
  : >"$dir/server.out"
  nohup bash -c "$(declare -f kafka_java); here='$here' kafka_dir='$dir' kafka_libs='$kafka_libs' KAFKA_HEAP='$CLUSTER_HEAP' exec java \$KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true -Dlog4j2.configurationFile='$here/kafka/log4j2.properties' -Dkafka.logs.dir='$dir/logs' -cp '$kafka_libs/*' kafka.Kafka '$dir/server.properties'" \
    >"$dir/server.out" 2>&1 </dev/null &
  echo $! >"$(node_pid "$i")"
}

node_wait() {
  local i=$1 waited=0 dir; dir=$(node_dir "$i")
  until grep -q "Kafka Server started" "$dir/server.out" 2>/dev/null && port_open "$(client_port "$i")"; do
    pid_alive "$(node_pid "$i")" || die "node $i exited during start-up; last lines of $dir/server.out:
$(tail -n 20 "$dir/server.out" 2>/dev/null)"
    [ "$waited" -ge "$UP_TIMEOUT" ] && die "node $i did not answer within ${UP_TIMEOUT}s, see $dir/server.out"
    sleep 1; waited=$((waited + 1))
  done
  log "node $i answers on 127.0.0.1:$(client_port "$i")"
}

node_kill() {
  local i=$1
  if pid_alive "$(node_pid "$i")"; then
    log "kill -9 node $i (pid $(cat "$(node_pid "$i")"))"
    kill -KILL "$(cat "$(node_pid "$i")")" 2>/dev/null || true
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
  local i
  # All nodes start before any is awaited: the controllers need a quorum to elect a leader.
  for i in $(seq 1 $NODES); do node_start "$i"; done
  for i in $(seq 1 $NODES); do node_wait "$i"; done
  log "cluster answers on $(bootstrap); admin credentials: $cdir/credentials/lotse-admin.properties"
}

cluster_down() {
  local i
  for i in $(seq 1 $NODES); do node_stop "$i"; done
}

cluster_status() {
  local i rc=0
  for i in $(seq 1 $NODES); do
    if port_open "$(client_port "$i")"; then echo "node $i: up (127.0.0.1:$(client_port "$i"))"; else echo "node $i: down (127.0.0.1:$(client_port "$i"))"; rc=1; fi
  done
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
  start) cluster_prepare; node_start "${2:?node number}"; node_wait "$2" ;;
  leader) cluster_leader "${2:?topic}" "${3:?partition}" ;;
  *) echo "usage: $0 up|down|status|kill N|start N|leader TOPIC PARTITION" >&2; exit 2 ;;
esac
