-- Webhook secrets are stored encrypted: AES-256-GCM under a key-encryption key (KEK) from configuration,
-- with a random nonce per encryption and the endpoint id as associated data (adapters/keys.py). Each
-- secret keeps the id of the KEK that sealed it, so that KEKs can be rotated.
--
-- The clear-text secrets are not carried over. A plain-SQL migration cannot encrypt them (the KEK is not,
-- and must not be, in the database), and encrypting them in place from the service would not make them
-- secret again: a value once stored in clear text stays readable in the WAL, in backups and in dead row
-- versions. There is no production data yet; every existing secret is therefore treated as disclosed and
-- discarded. Its endpoint is disabled with a reason; its organisation rotates the secret
-- (POST /v1/webhook-endpoints/{id}/rotate-secret, which shows the new secret once) and re-enables it.
ALTER TABLE webhook_endpoints
    ADD COLUMN secret_kek_id              text,
    ADD COLUMN secret_nonce               bytea,
    ADD COLUMN secret_ciphertext          bytea,
    ADD COLUMN previous_secret_kek_id     text,
    ADD COLUMN previous_secret_nonce      bytea,
    ADD COLUMN previous_secret_ciphertext bytea;

UPDATE webhook_endpoints
   SET status = 'disabled',
       disabled_reason = 'secret discarded when webhook secrets became encrypted (migration 002): rotate the secret, then enable the endpoint',
       disabled_at = now(),
       updated_at = now()
 WHERE deleted_at IS NULL AND secret <> '';

UPDATE webhook_endpoints SET secret = '', previous_secret = NULL, previous_secret_expires_at = NULL WHERE secret <> '' OR previous_secret IS NOT NULL;

ALTER TABLE webhook_endpoints
    DROP COLUMN secret,
    DROP COLUMN previous_secret,
    ADD CONSTRAINT webhook_endpoints_secret_sealed
        CHECK ((secret_kek_id IS NULL) = (secret_nonce IS NULL) AND (secret_kek_id IS NULL) = (secret_ciphertext IS NULL)),
    ADD CONSTRAINT webhook_endpoints_previous_secret_sealed
        CHECK ((previous_secret_kek_id IS NULL) = (previous_secret_nonce IS NULL)
               AND (previous_secret_kek_id IS NULL) = (previous_secret_ciphertext IS NULL)),
    ADD CONSTRAINT webhook_endpoints_nonce_length
        CHECK (octet_length(secret_nonce) = 12 AND octet_length(previous_secret_nonce) = 12),
    ADD CONSTRAINT webhook_endpoints_active_has_secret
        CHECK (status <> 'active' OR secret_kek_id IS NOT NULL);
