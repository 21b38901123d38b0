-- Marks an agent transcript line the caller talked over (its text is cut to what the caller
-- heard). Portable SQL: the same file runs on SQLite and PostgreSQL; existing rows read 0.
ALTER TABLE call_events ADD COLUMN interrupted BIGINT NOT NULL DEFAULT 0;
