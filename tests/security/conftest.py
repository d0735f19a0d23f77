"""The services' own test fixtures, so the attack suite builds each service exactly as its tests do."""

from services.audit.tests.conftest import audit, signing_key
from services.consent.tests.conftest import service
from services.intake.tests.conftest import clock, consent, directory, make_intake
from services.notifications.tests.conftest import contacts, network_file, peer, start_service

__all__ = [
    "audit",
    "clock",
    "consent",
    "contacts",
    "directory",
    "make_intake",
    "network_file",
    "peer",
    "service",
    "signing_key",
    "start_service",
]
