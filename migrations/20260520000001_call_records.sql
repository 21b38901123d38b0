-- Call records. Portable SQL: the same file runs on SQLite and PostgreSQL.
-- Times are unix milliseconds (BIGINT); JSON is TEXT.

CREATE TABLE calls (
    id TEXT NOT NULL PRIMARY KEY,
    provider TEXT NOT NULL,
    provider_call_id TEXT,
    direction TEXT NOT NULL,
    from_number TEXT NOT NULL,
    to_number TEXT NOT NULL,
    campaign TEXT,
    prompt TEXT,
    vars TEXT NOT NULL,
    status TEXT NOT NULL,
    answered_by TEXT,
    duration_seconds BIGINT,
    end_reason TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    -- The last `seq` given to one of this call's events; bumped under the row's write lock.
    event_seq BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX calls_created_idx ON calls (created_ms);
CREATE INDEX calls_campaign_created_idx ON calls (campaign, created_ms);
CREATE INDEX calls_status_created_idx ON calls (status, created_ms);
CREATE INDEX calls_provider_call_idx ON calls (provider, provider_call_id);

-- Everything that happens to a call, in order: status changes, transcript lines, tool calls.
CREATE TABLE call_events (
    call_id TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('status', 'transcript', 'tool')),
    at_ms BIGINT NOT NULL,
    -- status: the status; transcript: who spoke; tool: the tool's name.
    name TEXT NOT NULL,
    -- transcript: the text; tool: JSON text; status: NULL.
    body TEXT,
    PRIMARY KEY (call_id, seq)
);
