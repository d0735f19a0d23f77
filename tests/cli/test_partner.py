"""`lotse partner listen`: an organisation's inbox read with its own Kafka principal, sealed data opened with its keys."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contracts import encode, new_event, topics
from contracts.events import PARTNER_REFERRAL, Contact, Identity, PartnerReferralV2, PersonalData, Sealed, SealedContent
from contracts.sealed import seal
from lotse_cli.main import app
from lotse_kit.provisioning import partner_principal
from lotse_partner import PartnerKeys
from tests.kafka_helpers import produce_raw, provision_services

NETWORK = Path(__file__).resolve().parents[2] / "services" / "intake" / "tests" / "network.yaml"
CARITAS = "caritas-paderborn"


async def test_listen_reads_the_inbox_as_the_partner_and_opens_what_was_sealed_to_it(
    infra, kafka_bootstrap: str, topic_namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = topic_namespace
    monkeypatch.setenv("LOTSE_TOPIC_NAMESPACE", ns)
    await provision_services(kafka_bootstrap, NETWORK, ns, tmp_path / "kafka", {})
    keys = PartnerKeys.load_or_create(tmp_path / "caritas.json", CARITAS)
    content = SealedContent(
        personal_data=PersonalData(identity=Identity(given_name="Olena", family_name="Koval"), contact=Contact(email="o@example.org"))
    )
    data = PartnerReferralV2(
        client_id=uuid.uuid4(),
        referral_id=uuid.uuid4(),
        from_org="jobcenter-kreis-paderborn",
        to_org=CARITAS,
        service="mbe",
        consent_id=uuid.uuid4(),
        categories=["identity", "contact"],
        sealed=Sealed(jwe=seal(content.model_dump(mode="json"), keys.public("enc")), kid=keys.public("enc").kid),
        sent_at=datetime.now(UTC),
    )
    rec = encode(new_event(data, source="/lotse/consent", spec=PARTNER_REFERRAL))
    await produce_raw(kafka_bootstrap, ns + topics.partner_inbox(CARITAS), [(rec.key, rec.value, rec.headers)])

    creds = tmp_path / "kafka" / f"{partner_principal(ns, CARITAS)}.properties"
    args = ["partner", "listen", "--org", CARITAS, "--credentials", str(creds), "--json", "--from-start", "--limit", "1"]
    result = await asyncio.to_thread(CliRunner().invoke, app, [*args, "--keys", str(tmp_path / "caritas.json")])
    assert result.exit_code == 0, result.output
    [line] = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert line["type"] == "lotse.referral.sent" and line["opened"]["personal_data"]["identity"]["family_name"] == "Koval"
    assert "Koval" not in json.dumps(line["data"])  # the record itself carries ciphertext only
    # Without the keys it still lists the record, sealed.
    result = await asyncio.to_thread(CliRunner().invoke, app, [*args, "--keys", str(tmp_path / "none.json")])
    [line] = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert line["opened"] is None and line["data"]["sealed"]["kid"] == keys.public("enc").kid
