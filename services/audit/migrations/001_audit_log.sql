-- The tamper-evident audit log.
--
-- Append-only in the database: these tables are owned by the provisioning role (migrations run
-- with the admin DSN); the service's role {{role}} may only INSERT and SELECT, and triggers reject
-- UPDATE, DELETE and TRUNCATE from anyone, the owner included.

-- One row per Kafka record. `idx` is the Merkle leaf index: contiguous from 0, assigned by the
-- single writer that holds the append lock. `entry` is the exact leaf content; every other column
-- is derived from it for lookups and is not covered by the tree.
CREATE TABLE audit_log (
    idx           bigint      PRIMARY KEY CHECK (idx >= 0),
    topic         text        NOT NULL,
    "partition"   integer     NOT NULL,
    "offset"      bigint      NOT NULL,
    logical_topic text        NOT NULL,
    kind          text        NOT NULL,
    event_id      text,
    event_type    text,
    client_id     text,
    acting_org    text,
    orgs          text[]      NOT NULL,
    event_time    timestamptz NOT NULL,
    logged_at     timestamptz NOT NULL DEFAULT now(),
    entry         bytea       NOT NULL,
    leaf_hash     bytea       NOT NULL CHECK (octet_length(leaf_hash) = 32),
    CONSTRAINT audit_log_position UNIQUE (topic, "partition", "offset")
);
CREATE INDEX audit_log_client ON audit_log (client_id, idx) WHERE client_id IS NOT NULL;
CREATE INDEX audit_log_type ON audit_log (event_type, idx);
-- Event time follows log order closely, so a BRIN index serves time ranges at almost no write cost.
CREATE INDEX audit_log_time ON audit_log USING brin (event_time);
CREATE INDEX audit_log_orgs ON audit_log USING gin (orgs);

-- Hashes of complete, aligned subtrees (level >= 1): node (level, idx) covers leaves
-- [idx * 2^level, (idx + 1) * 2^level). Written with the leaf that completes it; never changed.
CREATE TABLE tree_nodes (
    level smallint NOT NULL CHECK (level BETWEEN 1 AND 62),
    idx   bigint   NOT NULL CHECK (idx >= 0),
    hash  bytea    NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- Signed tree heads (RFC 6962 §3.5), in the order they were signed.
CREATE TABLE tree_heads (
    id           bigserial   PRIMARY KEY,
    tree_size    bigint      NOT NULL CHECK (tree_size >= 0),
    timestamp_ms bigint      NOT NULL,
    root_hash    bytea       NOT NULL CHECK (octet_length(root_hash) = 32),
    signature    bytea       NOT NULL,
    key_id       text        NOT NULL,
    public_key   bytea       NOT NULL,
    requested_by text,
    signed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tree_heads_latest ON tree_heads (tree_size DESC, id DESC);

CREATE FUNCTION audit_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on %.% is not allowed', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change();
CREATE TRIGGER tree_nodes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON tree_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change();
CREATE TRIGGER tree_heads_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON tree_heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change();

REVOKE ALL ON audit_log, tree_nodes, tree_heads FROM PUBLIC;
GRANT SELECT, INSERT ON audit_log, tree_nodes, tree_heads TO {{role}};
GRANT USAGE ON SEQUENCE tree_heads_id_seq TO {{role}};
