-- Which server instance looks after which call, so that calls left unfinished by an instance
-- that died (SIGKILL, a crash, a drain cut short) can be reconciled by one that lives.
-- Portable SQL: the same file runs on SQLite and PostgreSQL. Times are unix milliseconds,
-- taken from the database's own clock so instances on different hosts agree on them.

-- One row per running instance; it rewrites `heartbeat_ms` every few seconds and deletes its
-- row on a clean exit. An instance whose heartbeat is stale (or whose row is gone) is dead.
CREATE TABLE instances (
    id TEXT NOT NULL PRIMARY KEY,
    started_ms BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);

-- The instance that created the record or runs its media stream; NULL for records written
-- before this migration (or by an older version still running alongside).
ALTER TABLE calls ADD COLUMN owner_instance TEXT;
