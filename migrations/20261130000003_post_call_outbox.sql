-- The post-call webhook's outbox: one row per call whose final status was written while a
-- POST_CALL_WEBHOOK_URL was configured, inserted in the same transaction as that status, so
-- a delivery is never lost to a crash and never made for a call that did not end.
-- Portable SQL: the same file runs on SQLite and PostgreSQL. Times are unix milliseconds.
--
-- Rows stay after delivery (they are small): a delivered row is what stops a later status
-- change of the same call (a late `machine` verdict replacing `completed`) from sending the
-- record again.

CREATE TABLE post_call_outbox (
    call_id TEXT NOT NULL PRIMARY KEY REFERENCES calls (id) ON DELETE CASCADE,
    -- When the call's final status was written.
    enqueued_ms BIGINT NOT NULL,
    -- No attempt before this: the settle delay at first, then the retry back-off.
    next_attempt_ms BIGINT NOT NULL,
    -- Attempts made so far (each a POST that failed, or the one that succeeded).
    attempts BIGINT NOT NULL DEFAULT 0,
    -- The instance delivering the row now, and until when no other may take it over.
    lease_owner TEXT,
    lease_until_ms BIGINT,
    -- What went wrong with the last attempt, for operators reading the table.
    last_error TEXT,
    -- Set once a receiver answered 2xx; nothing is sent again after it.
    delivered_ms BIGINT,
    -- Set when the retry window ran out without a 2xx.
    gave_up_ms BIGINT
);

-- The worker's question: which undelivered rows are due?
CREATE INDEX post_call_outbox_due_idx ON post_call_outbox (delivered_ms, gave_up_ms, next_attempt_ms);
