"""The Lotse service kit: the plumbing every service shares.

Settings, structured logging, PostgreSQL provisioning and migrations, the
transactional outbox and its relay, the idempotent consumer with dead-lettering,
Kafka broker and topic helpers, metrics and the HTTP health endpoints.
"""
