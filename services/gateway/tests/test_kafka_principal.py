"""The gateway's own Kafka principal (`lotse-gateway`), provisioned from its declaration like every service:
READ on the partner inboxes, WRITE on the partner outboxes and lotse.gateway.v1, its own consumer groups, nothing
else; and the gateway works as that principal against the deny-by-default broker."""

from __future__ import annotations

import json

from contracts import decode, topics
from contracts.structured import STRUCTURED
from lotse_cli.admin import service_grants
from lotse_kit.kafka import connection
from lotse_kit.network import load_network
from lotse_kit.provisioning import Acl, ServiceGrant, desired_state, provision, service_principal
from services.gateway.entrypoints.consumers import DECLARATION
from tests.kafka_helpers import read_topic

from .conftest import AWO, CARITAS, INVIA, JOBCENTER, inbox_event, network_yaml, partner
from .test_outbox import accepted


def _grants(schema: str | None = None) -> list[ServiceGrant]:
    others = [g for g in service_grants() if g.service != "gateway"]
    return [*others, ServiceGrant(DECLARATION, group_prefix=f"lotse-{schema}-" if schema else None)]


def test_the_declaration_grants_exactly_inbox_reads_and_outbox_writes(tmp_path):
    net = tmp_path / "network.yaml"
    net.write_text(network_yaml("https://hooks.invalid/x"))
    want = desired_state(load_network(net), _grants(), namespace="")
    mine = {a for a in want.acls if a.principal == "lotse-gateway"}
    orgs = (JOBCENTER, AWO, INVIA, CARITAS)
    expected = {Acl("lotse-gateway", "TOPIC", "LITERAL", topics.partner_inbox(o), "READ") for o in orgs}
    expected |= {Acl("lotse-gateway", "TOPIC", "LITERAL", topics.partner_outbox(o), "WRITE") for o in orgs}
    expected |= {Acl("lotse-gateway", "TOPIC", "LITERAL", topics.GATEWAY, "WRITE")}
    expected |= {Acl("lotse-gateway", "GROUP", "PREFIXED", "lotse-gateway-", "READ")}
    assert mine == expected
    # The notifications service reads the gateway's notices, the audit log records them.
    assert Acl("lotse-notifications", "TOPIC", "LITERAL", topics.GATEWAY, "READ") in want.acls
    assert Acl("lotse-audit", "TOPIC", "LITERAL", topics.GATEWAY, "READ") in want.acls


async def test_the_gateway_works_as_its_own_principal(start_gateway, kafka_bootstrap, topic_namespace, unique, tmp_path, receiver):
    net = tmp_path / "network.yaml"
    net.write_text(network_yaml(receiver.url))
    admin = connection(kafka_bootstrap)
    want = desired_state(load_network(net), _grants(f"gw_{unique}"), namespace=topic_namespace)
    await provision(admin, want, tmp_path / "kafka")
    creds = tmp_path / "kafka" / f"{service_principal(topic_namespace, 'gateway')}.properties"
    env = inbox_event(AWO)
    async with start_gateway(kafka_credentials_file=creds, kafka_create_topics=False) as gw:
        assert gw.runtime.kafka.username == service_principal(topic_namespace, "gateway")
        await gw.put_on_inbox(AWO, env)  # as the tests' admin, standing in for the consent service
        page = (await gw.http.get(f"/v1/partners/{AWO}/inbox", headers=partner(AWO))).json()
        assert [r["event"]["id"] for r in page["records"]] == [str(env.id)]
        answer = accepted()
        r = await gw.http.post(
            f"/v1/partners/{AWO}/outbox", content=json.dumps(answer).encode(), headers=partner(AWO) | {"content-type": STRUCTURED}
        )
        assert r.status_code == 202
        records = await read_topic(admin, gw.topic(topics.partner_outbox(AWO)), until=1)
        assert decode(records[0].headers, records[0].value).id.hex == answer["id"].replace("-", "")
        ready = (await gw.http.get("/health/ready")).json()
        assert ready["status"] == "ready", ready
