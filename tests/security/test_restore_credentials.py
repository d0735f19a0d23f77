"""After a broker forgot SCRAM credentials, `restore_credentials` gives them back with the passwords in their files."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lotse_kit.kafka import KafkaConnection, admin_client
from lotse_kit.provisioning import _confluent, partner_principal, restore_credentials
from tests.infra import Infra
from tests.kafka_helpers import provision_services

NETWORK = Path(__file__).resolve().parents[2] / "services" / "intake" / "tests" / "network.yaml"


async def logs_in(conn: KafkaConnection) -> bool:
    client = admin_client(conn)
    try:
        await asyncio.wait_for(client.start(), 10)
        return True
    except Exception:
        return False
    finally:
        await client.close()


async def test_a_forgotten_principal_gets_its_credential_back_with_the_same_password(
    infra: Infra, topic_namespace: str, tmp_path: Path
) -> None:
    admin = KafkaConnection.from_env(infra.kafka_bootstrap)
    if admin.security_protocol != "SASL_SSL":
        import pytest

        pytest.skip("an open broker has no principals")
    await provision_services(infra.kafka_bootstrap, NETWORK, topic_namespace, tmp_path, {})
    caritas_file = tmp_path / f"{partner_principal(topic_namespace, 'caritas-paderborn')}.properties"
    caritas = KafkaConnection.from_properties(caritas_file)
    before = caritas_file.read_text()
    assert await logs_in(caritas)
    # What the broker did after a restart: the credential is gone.
    ck = _confluent()
    client = ck.AdminClient(admin.librdkafka())
    for f in client.alter_user_scram_credentials(
        [ck.UserScramCredentialDeletion(caritas.username, ck.ScramMechanism.SCRAM_SHA_512)]
    ).values():
        await asyncio.wrap_future(f)

    async def refused() -> bool:
        return not await logs_in(caritas)

    from tests.kafka_helpers import eventually

    await eventually(refused, timeout=20)
    restored = await restore_credentials(admin, tmp_path)
    assert restored == [caritas.username]  # only the forgotten one; the others are known
    await eventually(lambda: logs_in(caritas), timeout=20)
    assert caritas_file.read_text() == before  # same file, same password: its clients need no change
    assert await restore_credentials(admin, tmp_path) == []
