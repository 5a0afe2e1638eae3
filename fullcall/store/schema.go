package store

// migration2 adds what the durable live path, the batch paths, the agent
// summaries and retention need. Times are unix milliseconds; booleans are
// 0/1 integers (the common subset of SQLite and PostgreSQL).
const migration2 = `
ALTER TABLE reports ADD COLUMN caller_peak DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE reports ADD COLUMN exposure_s DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE reports ADD COLUMN high_pressure INTEGER NOT NULL DEFAULT 0;
-- 1 until escalation's CareService has the call.
ALTER TABLE reports ADD COLUMN care_pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE reports ADD COLUMN audio_stored INTEGER NOT NULL DEFAULT 0;
CREATE INDEX reports_care ON reports (care_pending, created_at) WHERE care_pending = 1;
CREATE INDEX reports_by_end ON reports (tenant_id, ended_at);

-- One row per live call: its durable checkpoint. epoch fences writers: a
-- resume takes the call by incrementing it, and a stale instance's writes
-- (WHERE epoch = its epoch) then change nothing. A finished call keeps its
-- row (finished = 1, seq = the last chunk) so that a late resume learns the
-- call is done; retention removes it.
CREATE TABLE calls (
	tenant_id    TEXT NOT NULL,
	call_id      TEXT NOT NULL,
	epoch        BIGINT NOT NULL,
	owner        TEXT NOT NULL,
	seq          BIGINT NOT NULL,
	finished     INTEGER NOT NULL DEFAULT 0,
	call         BYTEA NOT NULL, -- calmline.call.v1.Call
	partial      BYTEA NOT NULL, -- the report so far (gaps, alerts, counts), no timeline
	analyzer     BYTEA NOT NULL, -- lib/analysis Snapshot
	timeline_len BIGINT NOT NULL DEFAULT 0, -- seconds in call_timeline
	created_at   BIGINT NOT NULL,
	updated_at   BIGINT NOT NULL,
	PRIMARY KEY (tenant_id, call_id)
);
CREATE INDEX calls_stale ON calls (finished, updated_at);
CREATE INDEX calls_owner ON calls (owner, finished);

-- The score timeline of live calls, appended a segment per checkpoint so
-- that neither memory nor a checkpoint grows with the call.
CREATE TABLE call_timeline (
	tenant_id    TEXT NOT NULL,
	call_id      TEXT NOT NULL,
	first_second BIGINT NOT NULL,
	points       BYTEA NOT NULL,
	PRIMARY KEY (tenant_id, call_id, first_second)
);

-- Raw audio, only for tenants whose policy stores it.
CREATE TABLE audio (
	tenant_id    TEXT NOT NULL,
	call_id      TEXT NOT NULL,
	start_sample BIGINT NOT NULL,
	data         BYTEA NOT NULL,
	PRIMARY KEY (tenant_id, call_id, start_sample)
);

-- The batch paths' queue: uploads (their audio in payload) and files found
-- in spool directories (read from the source by ref).
CREATE TABLE jobs (
	id                TEXT PRIMARY KEY,
	tenant_id         TEXT NOT NULL,
	source            TEXT NOT NULL,
	ref               TEXT NOT NULL,
	state             INTEGER NOT NULL,
	attempts          INTEGER NOT NULL DEFAULT 0,
	lease_owner       TEXT NOT NULL DEFAULT '',
	lease_token       TEXT NOT NULL DEFAULT '',
	lease_until       BIGINT NOT NULL DEFAULT 0,
	request           BYTEA NOT NULL, -- calmline.fullcall.v1.Recording without the audio
	payload           BYTEA,
	call_id           TEXT NOT NULL DEFAULT '',
	error_code        TEXT NOT NULL DEFAULT '',
	error             TEXT NOT NULL DEFAULT '',
	settled           INTEGER NOT NULL DEFAULT 0, -- the source has moved the file aside
	callback_url      TEXT NOT NULL DEFAULT '',
	callback_state    INTEGER NOT NULL DEFAULT 0,
	callback_attempts INTEGER NOT NULL DEFAULT 0,
	callback_next_at  BIGINT NOT NULL DEFAULT 0,
	callback_error    TEXT NOT NULL DEFAULT '',
	created_at        BIGINT NOT NULL,
	updated_at        BIGINT NOT NULL
);
CREATE UNIQUE INDEX jobs_by_ref ON jobs (source, ref);
CREATE INDEX jobs_queue ON jobs (state, created_at);
CREATE INDEX jobs_unsettled ON jobs (source, settled);
CREATE INDEX jobs_callbacks ON jobs (callback_state, callback_next_at);
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, id);

-- What retention deleted, for the record.
CREATE TABLE deletions (
	tenant_id  TEXT NOT NULL,
	kind       TEXT NOT NULL,
	call_id    TEXT NOT NULL,
	reason     TEXT NOT NULL,
	deleted_at BIGINT NOT NULL
);
CREATE INDEX deletions_by_tenant ON deletions (tenant_id, deleted_at);
`
