-- The gateway holds no record content: records stay on Kafka (partner.<org>.inbox.v1) and are read from there
-- on every fetch. What it keeps is where each organisation stands.

-- Per organisation and partition: the offset of the first record not yet acknowledged (pull: by the partner's
-- acknowledgement, push: by a 2xx answer to its webhook). Only ever moves forward.
CREATE TABLE inbox_positions (
    org         text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (org, partition)
);

-- Per organisation: the last fetch and acknowledgement, the push retry state and the last unfetched notice.
CREATE TABLE inbox_state (
    org                   text PRIMARY KEY,
    last_fetched_at       timestamptz,
    last_acknowledged_at  timestamptz,
    push_attempts         integer     NOT NULL DEFAULT 0,
    push_next_attempt_at  timestamptz,
    push_last_error       text,
    notified_oldest_at    timestamptz,  -- the oldest unacknowledged record the last notice was about
    notified_at           timestamptz
);

-- Events a partner posted to its outbox: the id makes a repeated POST idempotent; the digest tells a repeat
-- from a different event under the same id.
CREATE TABLE accepted_events (
    event_id    uuid PRIMARY KEY,
    org         text        NOT NULL,
    digest      text        NOT NULL,
    accepted_at timestamptz NOT NULL
);

GRANT SELECT, INSERT, UPDATE ON inbox_positions, inbox_state TO {{role}};
GRANT SELECT, INSERT, DELETE ON accepted_events TO {{role}};
