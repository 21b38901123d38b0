-- Campaigns: the outbound dialer's durable queue, and the do-not-call list.
-- Portable SQL: the same file runs on SQLite and PostgreSQL. Times are unix milliseconds on
-- the dialer's clock (BIGINT); JSON is TEXT.

CREATE TABLE campaigns (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    -- The prompt template every call of the campaign is rendered from, with its contact's vars.
    prompt TEXT NOT NULL,
    provider TEXT NOT NULL,
    from_number TEXT NOT NULL,
    -- running, paused, canceled or finished.
    state TEXT NOT NULL,
    max_concurrent BIGINT NOT NULL,
    -- NULL: no rate limit beyond max_concurrent.
    calls_per_minute BIGINT,
    -- The calling window, in minutes after local midnight ([start, end), end 1440 = midnight),
    -- on the week days of the bit mask (bit 0 Monday … bit 6 Sunday), in `timezone` unless a
    -- contact names its own.
    window_start_min BIGINT NOT NULL,
    window_end_min BIGINT NOT NULL,
    window_days BIGINT NOT NULL,
    timezone TEXT NOT NULL,
    max_attempts BIGINT NOT NULL,
    -- Comma list of the final statuses that schedule another attempt.
    retry_on TEXT NOT NULL,
    backoff_ms BIGINT NOT NULL,
    start_at_ms BIGINT NOT NULL,
    -- Pacing (calls_per_minute): no dial of this campaign before this time.
    next_dial_ms BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT
);

CREATE INDEX campaigns_state_idx ON campaigns (state);

-- One row per contact; `line` is its line in the uploaded CSV (or its index in the JSON list).
CREATE TABLE campaign_contacts (
    campaign_id TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    line BIGINT NOT NULL,
    to_number TEXT NOT NULL,
    vars TEXT NOT NULL,
    -- NULL: the campaign's time zone.
    timezone TEXT,
    -- pending, calling, retry-scheduled, done, failed, skipped or canceled.
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    -- pending / retry-scheduled: not dialled before this.
    next_attempt_ms BIGINT NOT NULL,
    -- calling: the instance that claimed the contact, and until when the claim holds while
    -- its call is recorded and placed.
    lease_owner TEXT,
    lease_until_ms BIGINT,
    -- calling: the call record of the attempt in progress, once created.
    current_call_id TEXT,
    -- The final status of the last attempt.
    last_status TEXT,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, line)
);

-- The dialer's questions: which contacts of a campaign are due, and which are calling.
CREATE INDEX campaign_contacts_due_idx ON campaign_contacts (campaign_id, state, next_attempt_ms);
CREATE INDEX campaign_contacts_state_idx ON campaign_contacts (state);

-- Every attempt of every contact, with the call record it made.
CREATE TABLE campaign_attempts (
    campaign_id TEXT NOT NULL,
    line BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    call_id TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, line, attempt),
    FOREIGN KEY (campaign_id, line) REFERENCES campaign_contacts (campaign_id, line) ON DELETE CASCADE
);

-- One row, locked by each claim so that the limits (a campaign's max_concurrent, the
-- server's MAX_CONCURRENT_CALLS) are checked and taken atomically across instances.
CREATE TABLE campaign_dialer (
    id BIGINT NOT NULL PRIMARY KEY,
    last_claim_ms BIGINT NOT NULL
);
INSERT INTO campaign_dialer (id, last_claim_ms) VALUES (1, 0);

-- The do-not-call list: numbers (E.164) never dialled, by a campaign or POST /calls.
CREATE TABLE do_not_call (
    number TEXT NOT NULL PRIMARY KEY,
    added_ms BIGINT NOT NULL
);
