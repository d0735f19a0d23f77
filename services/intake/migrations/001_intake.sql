-- Intake: clients, referrals, deadlines. Personal data lives in its own tables
-- (client_personal_data, referral_notes) so that it can be encrypted per client
-- and crypto-shredded later without touching the pseudonymous case data.

CREATE TABLE clients (
    client_id             uuid PRIMARY KEY,
    registering_org       text        NOT NULL,
    responsible_org       text        NOT NULL,
    preferred_language    text        NOT NULL,
    languages             text[]      NOT NULL DEFAULT '{}',
    needs                 text[]      NOT NULL DEFAULT '{}',
    residence_title       text,
    residence_valid_until date,
    legal_regime          text,
    registered_at         timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL
);
CREATE INDEX clients_responsible ON clients (responsible_org);

-- Personal data (GDPR Art. 4(1)): never logged, never on a shared topic.
CREATE TABLE client_personal_data (
    client_id                uuid PRIMARY KEY REFERENCES clients (client_id) ON DELETE CASCADE,
    given_name               text NOT NULL,
    family_name              text NOT NULL,
    date_of_birth            date,
    email                    text,
    phone                    text,
    education_qualifications text,
    health                   text  -- special category (GDPR Art. 9)
);

CREATE TABLE referrals (
    referral_id           uuid PRIMARY KEY,
    client_id             uuid        NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    from_org              text        NOT NULL,
    to_org                text        NOT NULL,
    service               text        NOT NULL,
    need                  text,
    requested_categories  text[]      NOT NULL,
    status                text        NOT NULL CHECK (status IN ('sent', 'accepted', 'declined', 'completed', 'revoked', 'blocked')),
    consent_id            uuid,
    disclosure_request_id uuid        NOT NULL,
    answer_due            date,
    answer_deadline_id    uuid,
    sent_at               timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    accepted_at           timestamptz,
    appointment_at        timestamptz,
    declined_at           timestamptz,
    decline_reason        text,
    completed_at          timestamptz,
    revoked_at            timestamptz,
    blocked_at            timestamptz,
    blocked_reason        text,
    disclosed_at          timestamptz
);
CREATE INDEX referrals_to ON referrals (to_org, status);
CREATE INDEX referrals_from ON referrals (from_org, status);
CREATE INDEX referrals_client ON referrals (client_id);

-- Free text about a referral may describe the client: personal data, kept apart.
CREATE TABLE referral_notes (
    referral_id   uuid PRIMARY KEY REFERENCES referrals (referral_id) ON DELETE CASCADE,
    reason        text,
    free_text     text,
    decline_text  text,
    outcome       text,
    revoke_reason text
);

CREATE TABLE deadlines (
    deadline_id     uuid PRIMARY KEY,
    client_id       uuid        NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    kind            text        NOT NULL,
    due_at          timestamptz NOT NULL,
    last_day        date,
    responsible_org text        NOT NULL,
    referral_id     uuid,
    legal_note      text,
    lead_times_days integer[]   NOT NULL,
    status          text        NOT NULL CHECK (status IN ('open', 'resolved')),
    registered_at   timestamptz NOT NULL,
    missed_at       timestamptz,
    resolved_at     timestamptz,
    resolution      text,
    -- When the scheduler must look at this deadline next; NULL when nothing is left to emit.
    next_check_at   timestamptz
);
CREATE INDEX deadlines_due_check ON deadlines (next_check_at) WHERE status = 'open' AND next_check_at IS NOT NULL;
CREATE INDEX deadlines_client ON deadlines (client_id);
CREATE INDEX deadlines_referral ON deadlines (referral_id) WHERE referral_id IS NOT NULL;

-- One row per deadline and notice ("approaching:<days>" or "missed"), written in the same
-- transaction as the outbox row of its event: the primary key makes every notice happen once,
-- across restarts and replicas. Superseded notices are recorded with emitted = false.
CREATE TABLE deadline_notices (
    deadline_id uuid        NOT NULL REFERENCES deadlines (deadline_id) ON DELETE CASCADE,
    notice      text        NOT NULL,
    emitted     boolean     NOT NULL,
    event_id    uuid,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (deadline_id, notice)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON clients, client_personal_data, referrals, referral_notes, deadlines, deadline_notices TO {{role}};
