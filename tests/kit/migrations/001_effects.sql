CREATE TABLE effects (
    event_id  uuid PRIMARY KEY,
    client_id uuid NOT NULL,
    note      text NOT NULL
);
GRANT SELECT, INSERT ON effects TO {{role}};
