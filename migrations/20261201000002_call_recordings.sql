-- Call recordings: the file name of the call's stereo WAV inside RECORDINGS_DIR (never a
-- path, so a record can only ever point into that folder). NULL when the call was not
-- recorded, or its recording was deleted after RECORDING_RETENTION_DAYS.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.

ALTER TABLE calls ADD COLUMN recording_file TEXT;
