# Shared fixtures (real Kafka and PostgreSQL) for tests/ and services/*/tests/.
pytest_plugins = ("tests.fixtures",)
