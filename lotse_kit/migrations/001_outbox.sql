-- Transactional outbox: rows are written in the same transaction as the state
-- they announce, and the relay publishes them until Kafka has acknowledged.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    client_id       text,
    topic           text        NOT NULL,
    key             bytea,
    value           bytea       NOT NULL,
    headers         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id);

GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO {{role}};
GRANT USAGE ON SEQUENCE outbox_id_seq TO {{role}};
