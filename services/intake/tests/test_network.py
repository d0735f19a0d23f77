"""Intake and its network file: the service refuses to start on an invalid one, and follows changes while running.

How the file is validated (line and field of each problem) is the kit loader's business and tested there.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.intake.bootstrap import bootstrap
from services.intake.config import IntakeSettings

from .conftest import HERE, JOBCENTER, client_body, h

NEW_MEMBER = """\
  - id: neue-beratung-paderborn
    name: Neue Beratungsstelle
    kind: welfare_association
    languages: [de, ar]
    contact_email: beratung@neu.example
"""

REPO = Path(__file__).resolve().parents[3]


def test_the_service_does_not_start_with_an_invalid_file(tmp_path: Path):
    bad = tmp_path / "network.yaml"
    bad.write_text((HERE / "network.yaml").read_text().replace("kind: jobcenter", "kind: job_centre", 1))
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "job_centre" in text)
    env = {**os.environ, "LOTSE_NETWORK_FILE": str(bad), "LOTSE_INTAKE_HTTP_PORT": "1"}
    proc = subprocess.run([sys.executable, "-m", "services.intake"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"line {line}: organisations[0].kind" in proc.stderr


def test_bootstrap_refuses_an_unknown_adapter():
    with pytest.raises(TypeError, match=r"unknown adapters \['netwrok'\]"):
        bootstrap(IntakeSettings(), netwrok=object())


async def test_a_changed_file_applies_without_restart_and_a_broken_one_keeps_the_last_good(make_intake, tmp_path: Path):
    path = tmp_path / "network.yaml"
    good = (HERE / "network.yaml").read_text()
    path.write_text(good)
    async with make_intake(directory=None, network_file=path) as (_app, http):
        assert (await http.get("/health/ready")).json()["checks"]["network"] == "up"
        assert (await http.post("/v1/clients", json=client_body(), headers=h("neue-beratung-paderborn"))).status_code == 403
        # A new member: it may work cases as soon as the file has been re-read.
        _write(path, good.replace("process_plans:", NEW_MEMBER + "process_plans:"))
        await asyncio.sleep(2.2)  # the directory looks at the file at most every 2 s
        assert (await http.post("/v1/clients", json=client_body(), headers=h("neue-beratung-paderborn"))).status_code == 201
        # A broken file is not applied: the last good version stays in force, readiness warns.
        _write(path, good.replace("kind: jobcenter", "kind: job_centre", 1))
        await asyncio.sleep(2.2)
        orgs = [o["id"] for o in (await http.get("/v1/network", headers=h(JOBCENTER))).json()["organisations"]]
        assert "neue-beratung-paderborn" in orgs and JOBCENTER in orgs
        ready = await http.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["network"].startswith("up: last good version")


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a new mtime even within the file system's resolution
