"""The journey tests take their callers' tokens from the real Keycloak (tests/auth/conftest.py)."""

from tests.auth.conftest import keycloak  # noqa: F401 - a fixture, used by name
