-- Erasure (GDPR Art. 17): on lotse.client.erased the service ends the client's own notifications not yet sent,
-- empties the payload (the trigger's pseudonymous data) of every finished row about the client and forgets the
-- client's referrals (handlers/erasure.py). What stays is the pseudonymous delivery record, for accountability.
--
-- erased_clients remembers which pseudonymous ids were erased, so that a trigger arriving later (another topic,
-- another partition) records nothing for the client and its rows keep no payload once they end.
CREATE TABLE erased_clients (
    client_id   uuid        PRIMARY KEY,
    erased_at   timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Referrals remembered for their answers now name their client, so that an erasure can forget them.
ALTER TABLE referrals ADD COLUMN client_id uuid;
UPDATE referrals r
   SET client_id = n.client_id
  FROM notifications n
 WHERE n.trigger_type = 'lotse.referral.sent' AND n.client_id IS NOT NULL AND n.payload ->> 'referral_id' = r.referral_id::text;
CREATE INDEX referrals_client ON referrals (client_id);

GRANT SELECT, INSERT, UPDATE, DELETE ON erased_clients TO {{role}};
