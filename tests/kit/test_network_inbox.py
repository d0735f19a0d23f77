"""The network file's `inbox` field: Kafka by default; HTTPS pull, or push to a URL (services/gateway)."""

from __future__ import annotations

import pytest

from lotse_kit.network import NetworkConfigError, load_network, parse_network
from lotse_kit.settings import DEMO_NETWORK_FILE

BASE = """
version: 1
district: Test
name: Test
organisations:
  - id: awo-test
    name: AWO
    kind: welfare_association
    languages: [de]
    contact_email: it@awo.lotse-demo.de
"""


def test_default_is_kafka():
    org = parse_network(BASE).organisation("awo-test")
    assert org is not None and org.inbox.transport == "kafka" and not org.inbox.over_https
    assert parse_network(BASE).https_inboxes() == []


@pytest.mark.parametrize(
    "inbox",
    ["{transport: https}", "{transport: https, mode: pull}", '{transport: https, mode: push, url: "https://hooks.awo.example/lotse"}'],
)
def test_https_inboxes(inbox):
    net = parse_network(BASE + f"    inbox: {inbox}\n")
    assert [o.id for o in net.https_inboxes()] == ["awo-test"]


@pytest.mark.parametrize(
    "inbox",
    [
        "{transport: https, mode: push}",  # push needs a url
        '{transport: https, mode: pull, url: "https://x.example/"}',  # pull takes none
        "{transport: kafka, mode: push}",
        "{transport: smtp}",
        '{transport: https, mode: push, url: "ftp://x.example/"}',
        "{transport: https, poll: true}",  # unknown key
    ],
)
def test_invalid_inboxes_stop_the_service_with_the_field(inbox):
    with pytest.raises(NetworkConfigError) as exc:
        parse_network(BASE + f"    inbox: {inbox}\n")
    assert "inbox" in str(exc.value)


def test_the_demo_network_has_one_pull_and_one_push_partner_and_keeps_its_kafka_partners():
    net = load_network(DEMO_NETWORK_FILE)
    modes = {o.id: o.inbox.mode for o in net.https_inboxes()}
    assert modes == {"awo-kreis-paderborn": "pull", "in-via-paderborn": "push"}
    for kafka_partner in ("caritas-paderborn", "ki-kreis-paderborn", "jobcenter-kreis-paderborn"):
        org = net.organisation(kafka_partner)
        assert org is not None and org.inbox.transport == "kafka"
