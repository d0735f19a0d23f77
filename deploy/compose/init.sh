#!/usr/bin/env bash
# The compose stack's one-shot `init` service: makes, once, every secret, certificate and configuration
# file the stack needs, into the `state` volume (mounted at /state). Nothing secret is in compose.yaml,
# in the image or in the repository; every password here is random and stays in the volume (mode 0600).
# It mirrors deploy/local/stack.sh (kafka_secret, kafka_tls, kafka_node_config, kafka_admin_credentials).
# Idempotent: a second run keeps every secret and only rewrites derived files.
set -euo pipefail
umask 077

S=${LOTSE_STATE_DIR:-/state}
mkdir -p "$S/secrets" "$S/kafka" "$S/keycloak" "$S/credentials" "$S/env"

secret() {  # a random value kept in $S/secrets/<name>, made once
  local f="$S/secrets/$1"
  [ -s "$f" ] || head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | head -c 40 >"$f"
  cat "$f"
}
key32() {  # base64 of 32 random bytes (AES-256 KEKs, Ed25519 seeds), made once
  local f="$S/secrets/$1"
  [ -s "$f" ] || python -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode(), end="")' >"$f"
  cat "$f"
}

# ---- Kafka: one KRaft node, SASL_SSL with SCRAM-SHA-512 for clients, as on the local stack
python -m lotse_kit.tls "$S/kafka/tls" --host kafka --host localhost >/dev/null
[ -s "$S/kafka/cluster-id" ] || python -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="), end="")' >"$S/kafka/cluster-id"
broker_pw=$(secret kafka-broker)
admin_pw=$(secret lotse-admin)
controller_pw=$(secret controller)
cat >"$S/kafka/server.properties" <<PROPS
# Written by deploy/compose/init.sh; holds passwords (mode 0600).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@kafka:9093
listeners=CLIENT://0.0.0.0:9092,CONTROLLER://kafka:9093
advertised.listeners=CLIENT://kafka:9092
controller.listener.names=CONTROLLER
inter.broker.listener.name=CLIENT
listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT

listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.client.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="kafka-broker" password="$broker_pw" user_kafka-broker="$broker_pw" user_lotse-admin="$admin_pw";
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="$controller_pw" user_controller="$controller_pw";
sasl.mechanism.controller.protocol=PLAIN
ssl.keystore.type=PEM
ssl.keystore.location=$S/kafka/tls/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$S/kafka/tls/ca.pem
ssl.client.auth=none
ssl.enabled.protocols=TLSv1.3,TLSv1.2

authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:kafka-broker;User:controller;User:lotse-admin

log.dirs=/var/lib/kafka/data
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
unclean.leader.election.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
log.segment.bytes=67108864
PROPS
# The provisioning principal (lotse admin provision writes every other principal's file beside it).
cat >"$S/credentials/lotse-admin.properties" <<PROPS
bootstrap.servers=kafka:9092
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.username=lotse-admin
sasl.password=$admin_pw
ssl.ca.location=$S/kafka/tls/ca.pem
PROPS

# ---- PostgreSQL: the application superuser `lotse` (POSTGRES_PASSWORD_FILE) provisions each service's role
pg_pw=$(secret postgres-lotse)
role_pw=$(secret db-roles)

# ---- Keycloak: the bootstrap admin; deploy/local/keycloak/provision.py then writes the clients' secrets
[ -s "$S/keycloak/admin.env" ] || printf 'KC_BOOTSTRAP_ADMIN_USERNAME=lotse-admin\nKC_BOOTSTRAP_ADMIN_PASSWORD=%s\n' "$(secret keycloak-admin)" >"$S/keycloak/admin.env"

# ---- what every service reads at start (deploy/compose/run-service.sh sources it)
cat >"$S/env/common.env" <<ENV
LOTSE_DATABASE_URL=postgresql://lotse:$pg_pw@postgres:5432/lotse
LOTSE_DB_ROLE_PASSWORD=$role_pw
LOTSE_INTAKE_KEK=$(key32 intake-kek)
LOTSE_NOTIFICATIONS_SECRET_KEK=$(key32 notifications-secret-kek)
LOTSE_NOTIFICATIONS_WEBHOOK_SIGNING_KEY=whsk_$(key32 notifications-webhook-signing-key)
LOTSE_AUDIT_SIGNING_KEY=$(key32 audit-signing-key)
LOTSE_GATEWAY_WEBHOOK_KEY_DIR=$S/gateway/webhook-secrets
ENV
echo "[init] state ready in $S"
