"""deploy/compose: the compose file's structure against the local stack it mirrors. No Docker engine runs
here, so nothing is started; deploy/validate.sh runs `docker compose config -q` where the plugin exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lotse_kit.settings import SERVICE_PORTS

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text(encoding="utf-8"))
    return doc


def pom_version(pom: str, prop: str) -> str:
    m = re.search(rf"<{prop}>([^<]+)</{prop}>", (REPO / "deploy" / "local" / pom / "pom.xml").read_text())
    assert m, prop
    return m.group(1)


def test_infrastructure_images_are_the_local_stacks_releases(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert s["kafka"]["image"] == f"apache/kafka:{pom_version('kafka', 'kafka.version')}"
    assert s["keycloak"]["image"] == f"quay.io/keycloak/keycloak:{pom_version('keycloak', 'keycloak.version')}"
    assert s["postgres"]["image"].startswith("postgres:")


@pytest.mark.parametrize("service", tuple(SERVICE_PORTS))
def test_each_service_runs_from_the_one_image_with_a_readiness_healthcheck(compose: dict[str, Any], service: str) -> None:
    s = compose["services"][service]
    port = SERVICE_PORTS[service]
    assert s["image"] == compose["services"]["init"]["image"]
    assert s["build"]["dockerfile"] == "deploy/compose/Dockerfile"
    assert s["command"] == ["/app/deploy/compose/run-service.sh", service]
    check = " ".join(s["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/health/ready" in check
    assert s["ports"] == [f"127.0.0.1:{port}:{port}"]
    deps = s["depends_on"]
    assert deps["provision"]["condition"] == "service_completed_successfully"  # principals and topics exist first
    assert deps["keycloak-provision"]["condition"] == "service_completed_successfully"
    assert deps["postgres"]["condition"] == "service_healthy"
    assert s["environment"]["LOTSE_NETWORK_FILE"] == "/etc/lotse/network.yaml"
    assert "../demo/network.yaml:/etc/lotse/network.yaml:ro" in s["volumes"]


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for svc in compose["services"].values():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert (COMPOSE / src).resolve().is_file(), src
    assert (COMPOSE / "Dockerfile").is_file()


def test_kafka_is_kraft_sasl_ssl_scram_with_deny_by_default(compose: dict[str, Any]) -> None:
    init = (COMPOSE / "init.sh").read_text()
    for line in (
        "process.roles=broker,controller",
        "listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        "auto.create.topics.enable=false",
    ):
        assert line in init, line
    assert "kafka-storage.sh format" in compose["services"]["kafka"]["command"][0]


def test_no_secret_is_in_the_compose_file(compose: dict[str, Any]) -> None:
    """Secrets are generated into the state volume by init.sh; the file only names where they are."""
    for name, svc in compose["services"].items():
        env = svc.get("environment", {})
        for key, value in env.items():
            if re.search(r"PASSWORD|SECRET|KEK|SIGNING_KEY|TOKEN", key):
                assert key.endswith("_FILE") and str(value).startswith("/state/"), f"{name}: {key}"
        assert "DATABASE_URL" not in " ".join(env), name
