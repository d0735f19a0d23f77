"""`python -m lotse_partner keys …`: a partner generates its key pairs, shows and rotates them, and registers the
public keys with the running consent service (`make up`) using its partner system's token."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from lotse_kit.settings import service_url
from lotse_partner import PartnerKeys
from lotse_partner.__main__ import main
from tests.partner.stack import partner_keys_file, require_stack, token_now

JOBCENTER = "jobcenter-kreis-paderborn"


def test_init_show_and_rotate_keep_private_keys_in_the_file_and_print_public_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "keys.json"
    assert main(["keys", "init", "--org", JOBCENTER, "--file", str(file)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [k["use"] for k in printed] == ["enc", "sig"] and all("d" not in k["jwk"] for k in printed)
    assert stat.S_IMODE(file.stat().st_mode) == 0o600 and all("d" in k for k in json.loads(file.read_text())["enc"])
    assert main(["keys", "rotate", "--use", "enc", "--file", str(file)]) == 0
    rotated = json.loads(capsys.readouterr().out)
    assert rotated[0]["kid"] != printed[0]["kid"] and rotated[1] == printed[1]
    assert len(PartnerKeys.load(file).enc) == 2  # the old key stays, for records sealed before


def test_register_posts_the_public_keys_with_the_partner_systems_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    require_stack()
    # The keys the Jobcenter example uses on this stack (registering them again changes nothing: 200).
    file = partner_keys_file(JOBCENTER)
    keys = PartnerKeys.load_or_create(file, JOBCENTER)
    headers = {"Authorization": f"Bearer {token_now(JOBCENTER, 'partner_system')}"}
    monkeypatch.setenv("LOTSE_PARTNER_TOKEN", headers["Authorization"].removeprefix("Bearer "))
    assert main(["keys", "register", "--file", str(file), "--consent-url", service_url("consent")]) == 0
    assert "registered" in capsys.readouterr().out
    r = httpx.get(f"{service_url('consent')}/v1/organisations/{JOBCENTER}/keys", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    registered = {k["kid"] for k in (r.json()["items"] if isinstance(r.json(), dict) else r.json())}
    assert {keys.public("enc").kid, keys.public("sig").kid} <= registered
    # Without a token nothing is sent.
    monkeypatch.delenv("LOTSE_PARTNER_TOKEN")
    assert main(["keys", "register", "--file", str(file), "--consent-url", service_url("consent")]) == 2
