-- Stream tokens already used to start a media stream, so each opens at most one stream,
-- across restarts and across instances sharing this database. Portable SQL (SQLite and
-- PostgreSQL). Rows are pruned some time after `expires_ms`; an expired token is refused
-- by its own expiry, so forgetting it then is safe.

CREATE TABLE stream_tokens (
    token TEXT NOT NULL PRIMARY KEY,
    -- When the token stops being accepted anyway (unix milliseconds).
    expires_ms BIGINT NOT NULL
);

CREATE INDEX stream_tokens_expires_idx ON stream_tokens (expires_ms);
