"""deploy/k8s: the generated Strimzi and KEDA resources against the code they come from, and the hand-written
base (probes, ports, secrets). Pure: no cluster, broker or database. Schema validation is deploy/validate.sh."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from contracts.topics import partner_topics, platform_topics
from lotse_cli.admin import app as admin_app
from lotse_cli.admin import service_grants
from lotse_cli.k8s import CLUSTER, FILES, READS_ON_REQUEST, acls_of, consumer_groups, render, stale_files
from lotse_kit.network import load_network
from lotse_kit.provisioning import desired_state
from lotse_kit.settings import DEMO_NETWORK_FILE, SERVICE_PORTS

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
GENERATED = K8S / "generated"
SERVICES = tuple(SERVICE_PORTS)


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def of_kind(kind: str, *paths: Path) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for p in paths for d in load(p) if d["kind"] == kind}


@pytest.fixture(scope="module")
def want() -> Any:
    net = load_network(DEMO_NETWORK_FILE)
    net = net.model_copy(update={"kafka": net.kafka.model_copy(update={"replication_factor": 3})})
    return desired_state(net, service_grants())


# ------------------------------------------------------------------ generated files
def test_every_service_has_a_grant() -> None:
    """A service missing from service_grants() gets no principal from `lotse admin provision` and no KafkaUser."""
    assert sorted(g.service for g in service_grants()) == sorted(SERVICES)


def test_generated_files_are_up_to_date() -> None:
    """Like `contracts.export --check`: the committed files are what `lotse admin k8s` makes from the demo network."""
    stale = stale_files(GENERATED, render(DEMO_NETWORK_FILE, service_grants()))
    assert not stale, f"run: lotse admin k8s --network deploy/demo/network.yaml --out deploy/k8s/generated/  (stale: {stale})"
    assert sorted(p.name for p in GENERATED.iterdir()) == sorted(FILES)


def test_every_kafka_user_grants_exactly_what_provisioning_grants(want: Any) -> None:
    users = of_kind("KafkaUser", GENERATED / "users.yaml")
    assert set(users) == set(want.principals)
    for name, user in users.items():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == CLUSTER
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert acls_of(user) == {a for a in want.acls if a.principal == name}, name
        quota = want.quotas.get(name)
        expected = None if quota is None else {"producerByteRate": quota.producer_byte_rate, "consumerByteRate": quota.consumer_byte_rate}
        assert user["spec"].get("quotas") == expected, name


def test_partner_users_read_only_their_inbox_and_write_only_their_outbox() -> None:
    """The deny-by-default promise, read off the generated file (not the generator): nothing else is granted."""
    users = of_kind("KafkaUser", GENERATED / "users.yaml")
    orgs = load_network(DEMO_NETWORK_FILE).org_ids()
    for org in orgs:
        rules = {(r["resource"]["type"], r["resource"]["name"], r["resource"]["patternType"], tuple(r["operations"]))
                 for r in users[f"partner-{org}"]["spec"]["authorization"]["acls"]}  # fmt: skip
        assert rules == {
            ("topic", f"partner.{org}.inbox.v1", "literal", ("Read",)),
            ("topic", f"partner.{org}.outbox.v1", "literal", ("Write",)),
            ("group", f"partner.{org}.", "prefix", ("Read",)),
        }


def test_every_contract_topic_has_a_kafka_topic() -> None:
    topics = {d["spec"]["topicName"]: d for d in load(GENERATED / "topics.yaml")}
    specs = list(platform_topics())
    for org in load_network(DEMO_NETWORK_FILE).org_ids():
        specs += partner_topics(org)
    assert set(topics) == {s.name for s in specs}
    for s in specs:
        t = topics[s.name]
        assert t["kind"] == "KafkaTopic" and t["metadata"]["labels"]["strimzi.io/cluster"] == CLUSTER
        assert t["spec"]["partitions"] == s.partitions, s.name
        assert t["spec"]["replicas"] == 3, s.name
        assert t["spec"]["config"] == s.config, s.name  # retention from the contracts; the demo network overrides nothing


def test_scaled_objects_follow_each_services_consumer_groups(want: Any) -> None:
    scaled = of_kind("ScaledObject", GENERATED / "scaledobjects.yaml")
    auths = of_kind("TriggerAuthentication", GENERATED / "scaledobjects.yaml")
    net = load_network(DEMO_NETWORK_FILE)
    for grant in service_grants():
        so = scaled[f"lotse-{grant.service}"]["spec"]
        assert so["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"lotse-{grant.service}"}
        groups = consumer_groups(grant, net, "")
        if grant.service in READS_ON_REQUEST:
            # no consumer group, so no lag to scale on (lotse_cli/k8s.py): CPU only, and no Kafka credentials for KEDA
            assert groups == {} and [t["type"] for t in so["triggers"]] == ["cpu"]
            assert f"lotse-{grant.service}-kafka" not in auths
            continue
        assert {t["metadata"]["consumerGroup"] for t in so["triggers"]} == set(groups)
        # partitions bound useful consumer replicas (docs/scaling.md)
        assert so["maxReplicaCount"] == max(want.topics[t].partitions for ts in groups.values() for t in ts)
        assert so["minReplicaCount"] == 2
        for t in so["triggers"]:
            assert t["type"] == "kafka" and t["metadata"]["allowIdleConsumers"] == "false"
            assert t["metadata"]["sasl"] == "scram_sha512" and t["metadata"]["tls"] == "enable"
            assert t["authenticationRef"]["name"] in auths
    # the runtime's own names for the groups (lotse_kit/naming.py): one per subscription
    assert "lotse-consent-disclosure-gate" in {t["metadata"]["consumerGroup"] for t in scaled["lotse-consent"]["spec"]["triggers"]}


def test_a_topic_namespace_prefixes_principals_topics_and_groups() -> None:
    files = render(DEMO_NETWORK_FILE, service_grants(), namespace="kreis-paderborn.")
    users = {d["metadata"]["name"] for d in yaml.safe_load_all(files["users.yaml"]) if d}
    topics = {d["spec"]["topicName"] for d in yaml.safe_load_all(files["topics.yaml"]) if d}
    groups = {t["metadata"]["consumerGroup"] for d in yaml.safe_load_all(files["scaledobjects.yaml"]) if d and d["kind"] == "ScaledObject"
              for t in d["spec"]["triggers"] if t["type"] == "kafka"}  # fmt: skip
    assert all(u.startswith("kreis-paderborn.") for u in users)
    assert all(t.startswith("kreis-paderborn.") for t in topics)
    assert groups and all(g.startswith("kreis-paderborn.lotse-") for g in groups)


def test_admin_k8s_check_fails_on_a_hand_edited_file_and_regenerates_it(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["k8s", "--network", str(DEMO_NETWORK_FILE), "--out", str(tmp_path)]
    assert runner.invoke(admin_app, [*args, "--check"]).exit_code == 1  # nothing there yet
    assert runner.invoke(admin_app, args).exit_code == 0
    assert runner.invoke(admin_app, [*args, "--check"]).exit_code == 0
    users = tmp_path / "users.yaml"
    users.write_text(users.read_text().replace("- Read", "- Write", 1))  # one widened grant
    result = runner.invoke(admin_app, [*args, "--check"])
    assert result.exit_code == 1 and "users.yaml" in result.output
    assert runner.invoke(admin_app, args).exit_code == 0
    assert runner.invoke(admin_app, [*args, "--check"]).exit_code == 0


# ------------------------------------------------------------------ the hand-written base
def _port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_probes_ports_and_resources(service: str) -> None:
    path = K8S / "base" / "services" / f"{service}.yaml"
    dep = of_kind("Deployment", path)[f"lotse-{service}"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    port = SERVICE_PORTS[service]
    assert c["command"] == ["python", "-m", f"services.{service}"]
    assert c["image"] == "lotse"  # one image for all services
    env = {e["name"]: e for e in c["env"]}
    assert env[f"LOTSE_{service.upper()}_HTTP_PORT"]["value"] == str(port)
    for probe, path_ in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready"), ("startupProbe", "/health/live")):
        get = c[probe]["httpGet"]
        assert get["path"] == path_, probe
        assert _port(c, get["port"]) == port, probe
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][part]), part
    svc = of_kind("Service", path)[f"lotse-{service}"]
    (sp,) = svc["spec"]["ports"]
    assert sp["port"] == port and _port(c, sp["targetPort"]) == port
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert "replicas" not in dep["spec"]  # KEDA owns the replica count


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_secrets_come_from_secrets(service: str) -> None:
    dep = of_kind("Deployment", K8S / "base" / "services" / f"{service}.yaml")[f"lotse-{service}"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    users = of_kind("KafkaUser", GENERATED / "users.yaml")
    # Kafka: the principal's SCRAM password from the Secret Strimzi's User Operator makes for its KafkaUser
    assert env["LOTSE_KAFKA_USERNAME"]["value"] in users
    assert env["LOTSE_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": env["LOTSE_KAFKA_USERNAME"]["value"], "key": "password"}
    assert env["LOTSE_OIDC_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "lotse-oidc"
    assert env["LOTSE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "lotse-database"
    assert env["LOTSE_KAFKA_CA_FILE"]["value"].startswith("/etc/lotse/kafka-ca/")
    for name, e in env.items():
        if any(w in name for w in ("PASSWORD", "SECRET", "KEK", "SIGNING_KEY", "DATABASE_URL", "TOKEN")):
            assert "valueFrom" in e and "value" not in e, f"{name} must come from a Secret"


def test_kafka_cluster_is_three_nodes_rf3_isr2_scram_tls() -> None:
    kafka = of_kind("Kafka", K8S / "base" / "kafka" / "kafka.yaml")[CLUSTER]["spec"]["kafka"]
    pool = of_kind("KafkaNodePool", K8S / "base" / "kafka" / "nodepool.yaml")["brokers"]
    assert pool["spec"]["replicas"] == 3 and "broker" in pool["spec"]["roles"]
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == CLUSTER
    assert kafka["config"]["default.replication.factor"] == 3 and kafka["config"]["min.insync.replicas"] == 2
    assert kafka["config"]["auto.create.topics.enable"] is False and kafka["config"]["unclean.leader.election.enable"] is False
    assert [(listener["tls"], listener["authentication"]["type"]) for listener in kafka["listeners"]] == [(True, "scram-sha-512")]
    assert kafka["authorization"]["type"] == "simple"


# ------------------------------------------------------------------ the validator's helpers
def _schemas_module() -> Any:
    spec = importlib.util.spec_from_file_location("lotse_deploy_schemas", K8S / "schemas.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_schema_files_are_named_as_kubeconform_looks_them_up() -> None:
    s = _schemas_module()
    assert s.schema_file("Deployment", "apps/v1") == "deployment-apps-v1.json"
    assert s.schema_file("Service", "v1") == "service-v1.json"
    assert s.schema_file("KafkaTopic", "kafka.strimzi.io/v1") == "kafkatopic-kafka-v1.json"
    assert s.schema_file("ScaledObject", "keda.sh/v1alpha1") == "scaledobject-keda-v1alpha1.json"


def test_crd_schemas_are_strict_except_where_unknown_fields_are_kept() -> None:
    s = _schemas_module()
    crd = {
        "spec": {
            "group": "example.org",
            "names": {"kind": "Thing"},
            "versions": [{"name": "v1", "served": True, "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"a": {"type": "string"},
                         "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}}}],
        }
    }  # fmt: skip
    (name, schema), *_ = s.crd_schemas(crd).items()
    assert name == "thing-example-v1.json"
    spec = schema["properties"]["spec"]
    assert spec["additionalProperties"] is False
    assert "additionalProperties" not in spec["properties"]["config"]
    assert schema["properties"]["kind"] == {"type": "string", "enum": ["Thing"]}
