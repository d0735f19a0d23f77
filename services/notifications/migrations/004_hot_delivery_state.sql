-- Issue 14: fewer index writes per notification. The claim used to change two indexed columns: `status` (created ->
-- sending: in notifications_status and in the predicate of notifications_due) and `next_attempt_at` (moved to the
-- lease's end: the key of notifications_due). So both updates of a delivery, the claim and the outcome, were non-HOT:
-- a new version of the wide row and a new entry in each of the six indexes, the GIN included.
--
-- After this migration a claim changes no indexed column, so it is a HOT update (heap only) when the row's page has
-- room (adapters/repository.py: claim_due):
-- - The lease of a claimed row is `leased_until`, in no index. The claim no longer moves `next_attempt_at`; a row in
--   flight stays in notifications_due and the claim passes over it until its lease ends (a row whose worker died is
--   claimed again then, as before).
-- - The claim no longer sets `status`: a row claimed for its first attempt stays `created`, with `attempts` > 0. The
--   status API shows it as `sending` and, while an attempt is in flight, the lease's end as `next_attempt_at`, as
--   before (repository.NOTIFICATION_COLUMNS). The outcome sets the status, as before.
-- - notifications_due is filtered on `next_attempt_at` alone instead of `status`: it is NULL exactly when a row has
--   ended (recorded final, finished, or ended by an erasure). The outcome that ends a row takes it out of the index
--   and stays a non-HOT update; so does a retry (it moves `next_attempt_at`).
-- - notifications_status (status, created_at DESC) is narrowed to the statuses a filter looks for among few rows:
--   failures and retries waiting. Recorded rows (`created`) and delivered ones, nearly all of them, are no longer
--   entered (an index entry less for each insert and each delivery); a filter for those statuses finds them walking
--   back in time (notifications_created below), as they are common.
-- - The GIN notifications_concerned served no query: the status API asks "$1 = ANY(concerned_orgs)", which a GIN
--   does not serve (pg_stat_user_indexes: 0 scans after hours at 80 referrals/s). The listing orders by created_at,
--   which never changes: notifications_created serves it (the organisations' view, and the operators' without a
--   filter), walking back in time, where the whole table was read and sorted.
-- - fillfactor 50: room on each page for the claim's new row versions (about 5 rows of ~700 bytes a page, claimed
--   together); applies to pages filled from now on. The heap grows about twofold for it.
--
-- Rows in flight when this migration runs keep their lease in `next_attempt_at` (leased_until is NULL) and their
-- status `sending`: they are claimed again when the lease ends, as before.
ALTER TABLE notifications ADD COLUMN leased_until timestamptz;

DROP INDEX notifications_due;
DROP INDEX notifications_concerned;
DROP INDEX notifications_status;
CREATE INDEX notifications_status ON notifications (status, created_at DESC) WHERE status NOT IN ('created', 'delivered');
CREATE INDEX notifications_due ON notifications (channel, next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX notifications_created ON notifications (created_at DESC);

ALTER TABLE notifications SET (fillfactor = 50);
