-- Webhook endpoints registered by member organisations (Standard Webhooks).
-- The secrets are kept in plain text so they can sign; they will be encrypted at rest
-- with the keys of the crypto-shredding issue once it lands.
CREATE TABLE webhook_endpoints (
    id                         uuid        PRIMARY KEY,
    org_id                     text        NOT NULL,
    url                        text        NOT NULL,
    description                text,
    event_types                text[],                       -- NULL: every event routed to the organisation
    status                     text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    disabled_reason            text,
    disabled_at                timestamptz,
    secret                     text        NOT NULL,
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    deleted_at                 timestamptz
);
CREATE INDEX webhook_endpoints_org ON webhook_endpoints (org_id) WHERE deleted_at IS NULL;

-- One row per message to one recipient on one channel. No addresses, no rendered text:
-- client contact data is fetched from intake at send time, under the client's consent.
CREATE TABLE notifications (
    id               uuid        PRIMARY KEY,
    trigger_event_id uuid        NOT NULL,
    trigger_type     text        NOT NULL,
    client_id        uuid,
    recipient_kind   text        NOT NULL CHECK (recipient_kind IN ('client', 'organisation', 'partner_system')),
    recipient_org    text,                                   -- the organisation, or on whose behalf a client is contacted
    recipient_key    text        NOT NULL,                   -- client:<id> | org:<id> | endpoint:<uuid>
    endpoint_id      uuid        REFERENCES webhook_endpoints (id),
    channel          text        NOT NULL CHECK (channel IN ('email', 'sms', 'webhook')),
    template         text,
    language         text,
    payload          jsonb       NOT NULL,                   -- the trigger's data, without free text
    concerned_orgs   text[]      NOT NULL DEFAULT '{}',      -- organisations named in the trigger: who may see this row
    status           text        NOT NULL DEFAULT 'created'
                     CHECK (status IN ('created', 'sending', 'delivered', 'temporary-failure', 'permanent-failure', 'technical-failure')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,                            -- due time while created/sending; lease expiry while in flight
    reason           text,
    provider_ref     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    -- Idempotency: a trigger event notifies each recipient on each channel once, however often it is delivered.
    UNIQUE (trigger_event_id, recipient_key, channel)
);
CREATE INDEX notifications_due ON notifications (channel, next_attempt_at) WHERE status IN ('created', 'sending');
CREATE INDEX notifications_client ON notifications (client_id, created_at DESC);
CREATE INDEX notifications_status ON notifications (status, created_at DESC);
CREATE INDEX notifications_concerned ON notifications USING gin (concerned_orgs);

CREATE TABLE delivery_attempts (
    id              bigserial   PRIMARY KEY,
    notification_id uuid        NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempt         integer     NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now(),
    outcome         text        NOT NULL,                    -- delivered | retry | permanent | technical
    status_code     integer,
    reason          text        NOT NULL,
    retry_after_s   double precision,
    next_attempt_at timestamptz
);
CREATE INDEX delivery_attempts_notification ON delivery_attempts (notification_id, attempt);

-- What the answers to a referral do not carry (they may omit from_org, never name the service).
CREATE TABLE referrals (
    referral_id uuid        PRIMARY KEY,
    from_org    text        NOT NULL,
    to_org      text        NOT NULL,
    service     text,
    seen_at     timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_endpoints, notifications, delivery_attempts, referrals TO {{role}};
GRANT USAGE ON SEQUENCE delivery_attempts_id_seq TO {{role}};
