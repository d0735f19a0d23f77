"""Organisations from the network file: names, languages and the team e-mail for notifications.

Reads the file with the kit's validating loader (`lotse_kit.network.load_network`), the
same one intake uses. The file is re-read when it changes, so a new partner needs no restart.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from lotse_kit.network import load_network

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrgInfo:
    id: str
    name: str
    contact_email: str | None = None
    languages: tuple[str, ...] = ()
    services: dict[str, str] = field(default_factory=dict)  # service id -> name


@dataclass
class OrgDirectory:
    orgs: dict[str, OrgInfo]
    timezone: str = "Europe/Berlin"

    def get(self, org_id: str) -> OrgInfo | None:
        return self.orgs.get(org_id)

    def name(self, org_id: str) -> str:
        org = self.orgs.get(org_id)
        return org.name if org else org_id

    def service_name(self, org_id: str, service_id: str) -> str:
        org = self.orgs.get(org_id)
        return (org.services.get(service_id) if org else None) or service_id

    def has(self, org_id: str) -> bool:
        return org_id in self.orgs

    @classmethod
    def of(cls, *orgs: OrgInfo, timezone: str = "Europe/Berlin") -> OrgDirectory:
        return cls({o.id: o for o in orgs}, timezone)


def load_directory(path: Path) -> OrgDirectory:
    net = load_network(path)
    orgs = {
        o.id: OrgInfo(
            id=o.id, name=o.name, contact_email=str(o.contact_email) if o.contact_email else None,
            languages=tuple(o.languages), services={s.id: s.name for s in o.services},
        )
        for o in net.organisations
    }
    return OrgDirectory(orgs, net.timezone or "Europe/Berlin")


class NetworkFile:
    """The directory from a file, reloaded when its modification time changes; keeps the last good one on errors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._current = OrgDirectory({})

    def __call__(self) -> OrgDirectory:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            if self._mtime is None:
                log.warning("network file not readable; organisations unknown", extra={"path": str(self.path)})
                self._mtime = -1.0
            return self._current
        if mtime != self._mtime:
            try:
                self._current = load_directory(self.path)
                log.info("network file loaded", extra={"path": str(self.path), "organisations": len(self._current.orgs)})
            except Exception as exc:  # noqa: BLE001 - a broken edit must not stop notifications
                log.error("network file invalid; keeping the previous version", extra={"path": str(self.path), "error": str(exc)[:500]})
            self._mtime = mtime
        return self._current
