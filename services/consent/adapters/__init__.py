"""I/O for the consent service: PostgreSQL (repository.py), partner topics, the decision cache and connections, receipt texts, metrics."""
