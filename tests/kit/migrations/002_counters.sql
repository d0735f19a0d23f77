-- Rows two consumers' batches both update (tests/kit/test_batch_locks.py).
CREATE TABLE counters (
    client_id uuid PRIMARY KEY,
    n         int NOT NULL DEFAULT 0
);
GRANT SELECT, INSERT, UPDATE ON counters TO {{role}};
