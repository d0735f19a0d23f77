"""The HTTPS gateway: a partner's inbox and outbox over HTTPS for partners that run no Kafka client (docs/gateway.md)."""
