-- The consent ledger (ISO/IEC TS 27560-style records). No names or contact
-- details live here: the client is known by the pseudonymous id only.
CREATE TABLE consents (
    consent_id                  uuid        PRIMARY KEY,
    client_id                   uuid        NOT NULL,
    collecting_org              text        NOT NULL,
    recipients                  text[]      NOT NULL CHECK (cardinality(recipients) > 0),
    purposes                    text[]      NOT NULL CHECK (cardinality(purposes) > 0),
    categories                  text[]      NOT NULL CHECK (cardinality(categories) > 0),
    legal_basis                 text[]      NOT NULL,
    form                        text        NOT NULL CHECK (form IN ('written', 'electronic', 'oral')),
    form_reason                 text,
    informed_purpose            boolean     NOT NULL CHECK (informed_purpose),
    informed_consequences       boolean     NOT NULL CHECK (informed_consequences),
    informed_right_to_withdraw  boolean     NOT NULL CHECK (informed_right_to_withdraw),
    information_language        text        NOT NULL,
    interpreter_used            boolean     NOT NULL,
    notice_version              text        NOT NULL,
    granted_at                  timestamptz NOT NULL,
    valid_until                 timestamptz NOT NULL CHECK (valid_until > granted_at),
    recorded_by                 text,
    status                      text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'withdrawn', 'expired')),
    withdrawn_at                timestamptz,
    withdrawal_recorded_by_org  text,
    expired_at                  timestamptz,
    -- §67b(2) SGB X: an oral consent needs its special circumstances documented.
    CHECK (form <> 'oral' OR coalesce(btrim(form_reason), '') <> ''),
    CHECK ((status = 'withdrawn') = (withdrawn_at IS NOT NULL)),
    CHECK ((status = 'expired') = (expired_at IS NOT NULL))
);
CREATE INDEX consents_by_client ON consents (client_id, granted_at DESC);
CREATE INDEX consents_due ON consents (valid_until) WHERE status = 'active';

-- Bumped in the same transaction as every change to a client's consents; the
-- decision cache compares it on each request (see docs/consent.md).
CREATE TABLE client_versions (
    client_id  uuid        PRIMARY KEY,
    version    bigint      NOT NULL,
    erased_at  timestamptz
);

-- Every decision of the disclosure gate. The disclosed payload itself is not
-- kept, only its SHA-256.
CREATE TABLE disclosures (
    request_id          uuid        PRIMARY KEY,
    client_id           uuid        NOT NULL,
    referral_id         uuid,
    from_org            text        NOT NULL,
    recipient           text        NOT NULL,
    purpose             text        NOT NULL,
    categories          text[]      NOT NULL,
    outcome             text        NOT NULL CHECK (outcome IN ('made', 'blocked')),
    consent_id          uuid        REFERENCES consents (consent_id),
    reason              text        NOT NULL,
    missing_categories  text[]      NOT NULL DEFAULT '{}',
    payload_sha256      text,
    partner_event_id    uuid,
    decided_at          timestamptz NOT NULL,
    CHECK (outcome <> 'made' OR (consent_id IS NOT NULL AND payload_sha256 IS NOT NULL))
);
CREATE INDEX disclosures_made_by_client ON disclosures (client_id, recipient) WHERE outcome = 'made';
CREATE INDEX disclosures_made_by_consent ON disclosures (consent_id) WHERE outcome = 'made';
CREATE INDEX disclosures_by_referral ON disclosures (referral_id);

GRANT SELECT, INSERT, UPDATE ON consents, client_versions, disclosures TO {{role}};
