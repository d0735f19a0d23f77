-- The organisations responsible for each client, as intake announces them on lotse.clients.v1
-- (lotse.client.registered, lotse.case.handed_over). They may read the client's consent records and
-- receipts and record a withdrawal (lotse_kit.access). No personal data: organisation ids only.
CREATE TABLE client_orgs (
    client_id        uuid        PRIMARY KEY,
    registering_org  text,       -- NULL when a hand-over arrived for a client registered before this table
    responsible_org  text        NOT NULL,
    updated_at       timestamptz NOT NULL
);

GRANT SELECT, INSERT, UPDATE ON client_orgs TO {{role}};
