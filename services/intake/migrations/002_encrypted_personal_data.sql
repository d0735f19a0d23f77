-- Issue 13: personal data encrypted at rest with a per-client data key, erasure, do_not_contact.
--
-- Every client gets a random 256-bit data key (client_keys), stored only wrapped under a key-encryption
-- key (KEK) from configuration, with the KEK's id: a KEK rotation re-wraps these 32-byte keys and never
-- touches the data. Every personal-data value is AES-256-GCM under its client's data key, bound to the
-- client id and its column (adapters/vault.py). Erasure deletes the data key and the ciphertexts.
--
-- This migration only adds the encrypted columns: encrypting needs the KEK, which SQL does not have.
-- At start intake encrypts rows still in clear and drops the clear columns, in one transaction
-- (handlers/keys.py: encrypt_clear_text), before it serves a request.

CREATE TABLE client_keys (
    client_id    uuid PRIMARY KEY REFERENCES clients (client_id) ON DELETE CASCADE,
    kek_id       text        NOT NULL,
    nonce        bytea       NOT NULL,
    wrapped_key  bytea       NOT NULL,  -- the data key under the KEK, bound to the client id
    created_at   timestamptz NOT NULL,
    rewrapped_at timestamptz
);
CREATE INDEX client_keys_kek ON client_keys (kek_id);

-- The clear columns lose NOT NULL (new rows write only the ciphertexts) and are dropped at start.
ALTER TABLE client_personal_data
    ALTER COLUMN given_name DROP NOT NULL,
    ALTER COLUMN family_name DROP NOT NULL,
    ADD COLUMN given_name_enc               bytea,
    ADD COLUMN family_name_enc              bytea,
    ADD COLUMN date_of_birth_enc            bytea,
    ADD COLUMN email_enc                    bytea,
    ADD COLUMN phone_enc                    bytea,
    ADD COLUMN education_qualifications_enc bytea,
    ADD COLUMN health_enc                   bytea;

ALTER TABLE referral_notes
    ADD COLUMN reason_enc        bytea,
    ADD COLUMN free_text_enc     bytea,
    ADD COLUMN decline_text_enc  bytea,
    ADD COLUMN outcome_enc       bytea,
    ADD COLUMN revoke_reason_enc bytea;

-- The client asked not to be contacted (set by the responsible organisation); erasure leaves a skeleton
-- marked erased, whose categorised fields are emptied (so preferred_language may be NULL there).
ALTER TABLE clients
    ADD COLUMN do_not_contact boolean NOT NULL DEFAULT false,
    ADD COLUMN erased_at      timestamptz,
    ADD COLUMN erased_by_org  text,
    ALTER COLUMN preferred_language DROP NOT NULL;

GRANT SELECT, INSERT, UPDATE, DELETE ON client_keys TO {{role}};
