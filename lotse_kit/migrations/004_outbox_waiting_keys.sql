-- The relay holds back every row whose client key has an earlier row waiting for a retry
-- (lotse_kit.outbox.OutboxRelay.drain_once); only failed rows are indexed, so the check costs
-- nothing while Kafka is healthy and stays cheap while it is not.
CREATE INDEX outbox_waiting_keys ON outbox (topic, key, id) WHERE attempts > 0;
