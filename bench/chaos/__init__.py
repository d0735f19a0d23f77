"""The fault suite of issue 15 (`make chaos`): see __main__.py, scenarios.py and checker.py, and docs/operations.md."""
