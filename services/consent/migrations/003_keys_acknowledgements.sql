-- Issue 13: recipients' public keys, acknowledgements due, corrections in the disclosure ledger, and
-- erasure of the little free text a consent record holds.

-- Public keys registered through the API (`POST /v1/organisations/{org}/keys`). Keys of the network file
-- are not copied here; a row with source 'network-file' only records that such a key was retired.
-- Public keys are not personal data.
CREATE TABLE org_keys (
    org            text        NOT NULL,
    kid            text        NOT NULL,
    use            text        NOT NULL CHECK (use IN ('enc', 'sig')),
    jwk            jsonb       NOT NULL,
    source         text        NOT NULL CHECK (source IN ('api', 'network-file')),
    registered_at  timestamptz NOT NULL,
    registered_by  text,
    retired_at     timestamptz,
    retired_by     text,
    PRIMARY KEY (org, kid),
    CHECK (NOT (jwk ? 'd'))
);

-- Every forwarded withdrawal and erasure a recipient must acknowledge (signed, on its outbox).
-- event_id is the id of the copy on the recipient's inbox: what its signature names.
CREATE TABLE acknowledgements (
    event_id           uuid        PRIMARY KEY,
    client_id          uuid        NOT NULL,
    org                text        NOT NULL,
    kind               text        NOT NULL CHECK (kind IN ('withdrawal', 'erasure')),
    consent_id         uuid,
    collecting_org     text,
    forwarded_at       timestamptz NOT NULL,
    due_at             timestamptz NOT NULL,
    acknowledged_at    timestamptz,
    ack_event_id       uuid,
    ack_kid            text,
    received_at        timestamptz,
    overdue_raised_at  timestamptz,
    CHECK ((acknowledged_at IS NULL) = (received_at IS NULL))
);
CREATE INDEX acknowledgements_by_client ON acknowledgements (client_id);
CREATE INDEX acknowledgements_by_org ON acknowledgements (org);
CREATE INDEX acknowledgements_due ON acknowledgements (due_at) WHERE acknowledged_at IS NULL AND overdue_raised_at IS NULL;

-- A correction (GDPR Art. 19) is a disclosure too: the ledger says which kind.
ALTER TABLE disclosures ADD COLUMN kind text NOT NULL DEFAULT 'referral' CHECK (kind IN ('referral', 'correction'));
CREATE INDEX disclosures_made_by_recipient ON disclosures (recipient) WHERE outcome = 'made';

-- After lotse.client.erased the free text of the client's consent records (form_reason) is erased; an oral
-- consent then keeps the fact that its reason was documented, not the text.
ALTER TABLE consents ADD COLUMN personal_data_erased_at timestamptz;
DO $$
DECLARE c text;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
              WHERE conrelid = 'consents'::regclass AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%form_reason%'
    LOOP
        EXECUTE format('ALTER TABLE consents DROP CONSTRAINT %I', c);
    END LOOP;
END $$;
ALTER TABLE consents ADD CONSTRAINT consents_oral_reason
    CHECK (form <> 'oral' OR personal_data_erased_at IS NOT NULL OR coalesce(btrim(form_reason), '') <> '');

GRANT SELECT, INSERT, UPDATE ON org_keys, acknowledgements TO {{role}};
