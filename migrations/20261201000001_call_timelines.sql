-- Each call's timeline (what happened when, in milliseconds) and latency summary, written
-- once when the call ends. Portable SQL: the same file runs on SQLite and PostgreSQL.
--
-- A table of its own rather than rows of `call_events`: that table's CHECK on `kind` cannot
-- be widened portably (SQLite would need the table rebuilt), a timeline is written and read
-- whole (up to a few hundred entries in one statement, not one row each), and keeping the
-- documents out of `calls` keeps that table's rows small for listing.

CREATE TABLE call_timelines (
    call_id TEXT NOT NULL PRIMARY KEY REFERENCES calls (id) ON DELETE CASCADE,
    -- JSON array of {"at_ms": unix milliseconds, "kind": "...", "detail": {...}}, in order.
    events TEXT NOT NULL,
    -- Entries left out because the call reached the cap.
    events_dropped BIGINT NOT NULL,
    -- JSON object: greeting and per-turn response latency, barge-ins, resumptions.
    latency TEXT NOT NULL,
    written_ms BIGINT NOT NULL
);
