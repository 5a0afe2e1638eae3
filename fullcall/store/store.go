// Package store keeps fullcall's data in SQL: whole-call reports, the
// durable checkpoints of live calls, stored audio where a tenant's policy
// asks for it, the job queue of the batch paths (uploads and spool
// directories) and the record of retention deletions. One Store serves both
// SQLite (the embedded default, one file) and PostgreSQL (several fullcall
// instances sharing data), chosen by the DSN; the dialects differ only where
// noted (job claiming uses FOR UPDATE SKIP LOCKED on PostgreSQL). Every
// query a tenant can cause is scoped to that tenant.
package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/calmline/calmline/lib/sqldb"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// ErrNotFound is returned for a report the tenant does not have.
var ErrNotFound = errors.New("report not found")

// ErrBadPageToken is returned for a page token this store did not make.
var ErrBadPageToken = errors.New("invalid page token")

var migrations = []sqldb.Migration{
	{Version: 1, SQL: `
CREATE TABLE reports (
	tenant_id  TEXT NOT NULL,
	call_id    TEXT NOT NULL,
	agent_id   TEXT NOT NULL DEFAULT '',
	started_at BIGINT NOT NULL, -- unix milliseconds
	ended_at   BIGINT NOT NULL,
	duration_s DOUBLE PRECISION NOT NULL,
	peak       DOUBLE PRECISION NOT NULL DEFAULT 0, -- highest of both scores
	escalated  INTEGER NOT NULL DEFAULT 0,
	source     INTEGER NOT NULL,
	created_at BIGINT NOT NULL,
	report     BYTEA NOT NULL, -- the report, protobuf-encoded
	PRIMARY KEY (tenant_id, call_id)
);
CREATE INDEX reports_by_start ON reports (tenant_id, started_at, call_id);
CREATE INDEX reports_by_agent ON reports (tenant_id, agent_id, started_at);
`},
	{Version: 2, SQL: migration2},
	// 3: the trace context a job continues (the root span of its upload or
	// spool file, as a JSON object of W3C fields; '' for none).
	{Version: 3, SQL: `ALTER TABLE jobs ADD COLUMN trace_context TEXT NOT NULL DEFAULT '';`},
}

// Store is fullcall's store.
type Store struct {
	db *sqldb.DB
	// commits batches this process's writes on SQLite (see commit.go);
	// nil on PostgreSQL.
	commits *committer
	// Now is the clock (tests move it).
	Now func() time.Time
}

// Open opens the database named by dsn (see sqldb.Open) and brings its
// schema up to date.
func Open(ctx context.Context, dsn string) (*Store, error) {
	db, err := sqldb.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	if err := sqldb.Migrate(ctx, db, "fullcall", migrations); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.Keep(ctx, qCheckpoint, qFinish, qTimeline, qAudio, qSavepoint, qRollbackTo, qRelease); err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, Now: time.Now}
	if db.Dialect == sqldb.SQLite {
		s.commits = newCommitter(db)
	}
	return s, nil
}

// Dialect says which database the store runs on.
func (s *Store) Dialect() sqldb.Dialect { return s.db.Dialect }

// tx runs fn in a write transaction, committed when fn returns nil.
func (s *Store) tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if s.commits != nil {
		return s.commits.do(ctx, fn)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// exec runs one write statement.
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s.commits == nil {
		return s.db.ExecContext(ctx, s.db.Rebind(query), args...)
	}
	var res sql.Result
	err := s.commits.do(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = tx.ExecContext(ctx, s.db.Rebind(query), args...)
		return err
	})
	return res, err
}

// Close waits for the writes queued so far, then closes the database.
func (s *Store) Close() error {
	if s.commits != nil {
		s.commits.close()
	}
	return s.db.Close()
}

// Ping checks the database is reachable.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// Peak is the highest score of a report, used for filtering.
func Peak(r *fullcallv1.Report) float64 {
	return max(r.GetCallerPressure().GetPeak(), r.GetAgentStress().GetPeak())
}

// PutReport stores a report, replacing the tenant's earlier report of the
// same call.
func (s *Store) PutReport(ctx context.Context, r *fullcallv1.Report) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return s.putReport(ctx, tx, r, false) })
}

// PutReportAudio stores a report and, when audio is not nil, the call's
// audio with it (replacing what was stored for the call).
func (s *Store) PutReportAudio(ctx context.Context, r *fullcallv1.Report, audio []byte) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if audio != nil {
			if err := s.replaceAudio(ctx, tx, r.TenantId, r.CallId, audio); err != nil {
				return err
			}
		}
		return s.putReport(ctx, tx, r, false)
	})
}

func (s *Store) replaceAudio(ctx context.Context, tx *sql.Tx, tenantID, callID string, audio []byte) error {
	if _, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM audio WHERE tenant_id = ? AND call_id = ?`), tenantID, callID); err != nil {
		return fmt.Errorf("store audio: %w", err)
	}
	return s.putSegments(ctx, tx, &Checkpoint{TenantID: tenantID, CallID: callID}, nil, []Segment{{Data: audio}})
}

// Exposure is the part of a report the per-agent summaries and the care
// record read: the caller_pressure peak, the seconds at or above the
// exposure threshold, and whether the peak reached it.
func Exposure(r *fullcallv1.Report) (peak, seconds float64, high bool) {
	cp := r.GetCallerPressure()
	return cp.GetPeak(), float64(cp.GetSecondsAboveThreshold()), cp.GetScored() && cp.GetPeak() >= cp.GetThreshold() && cp.GetThreshold() > 0
}

// putReport writes a report in tx; care marks it for the agent's exposure
// record in escalation (live calls).
func (s *Store) putReport(ctx context.Context, tx *sql.Tx, r *fullcallv1.Report, care bool) error {
	if r.TenantId == "" || r.CallId == "" {
		return errors.New("put report: tenant_id and call_id are required")
	}
	b, err := proto.Marshal(r)
	if err != nil {
		return fmt.Errorf("put report: %w", err)
	}
	peak, exposure, high := Exposure(r)
	_, err = tx.ExecContext(ctx, s.db.Rebind(`
INSERT INTO reports (tenant_id, call_id, agent_id, started_at, ended_at, duration_s, peak, escalated, source, created_at, report,
	caller_peak, exposure_s, high_pressure, care_pending, audio_stored)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tenant_id, call_id) DO UPDATE SET
	agent_id = excluded.agent_id, started_at = excluded.started_at, ended_at = excluded.ended_at,
	duration_s = excluded.duration_s, peak = excluded.peak, escalated = excluded.escalated,
	source = excluded.source, created_at = excluded.created_at, report = excluded.report,
	caller_peak = excluded.caller_peak, exposure_s = excluded.exposure_s, high_pressure = excluded.high_pressure,
	care_pending = excluded.care_pending, audio_stored = excluded.audio_stored`),
		r.TenantId, r.CallId, r.AgentId, r.GetStartedAt().AsTime().UnixMilli(), r.GetEndedAt().AsTime().UnixMilli(),
		r.DurationS, Peak(r), boolInt(len(r.Alerts) > 0), int(r.Source), s.Now().UnixMilli(), b,
		peak, exposure, boolInt(high), boolInt(care && r.AgentId != ""), boolInt(r.AudioStored))
	if err != nil {
		return fmt.Errorf("put report %s/%s: %w", r.TenantId, r.CallId, err)
	}
	return nil
}

// GetReport returns a tenant's report of a call. AudioStored says whether
// the audio is still kept (retention may have deleted it since).
func (s *Store) GetReport(ctx context.Context, tenantID, callID string) (*fullcallv1.Report, error) {
	var b []byte
	var audio int
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT report, audio_stored FROM reports WHERE tenant_id = ? AND call_id = ?`), tenantID, callID).Scan(&b, &audio)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get report: %w", err)
	}
	r, err := decode(b)
	if err != nil {
		return nil, err
	}
	r.AudioStored = audio == 1
	return r, nil
}

func decode(b []byte) (*fullcallv1.Report, error) {
	r := &fullcallv1.Report{}
	if err := proto.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("decode report: %w", err)
	}
	return r, nil
}

// Query filters a listing. Zero values do not filter.
type Query struct {
	AgentID       string
	StartedAfter  time.Time
	StartedBefore time.Time
	MinPeak       float64
	// CallerPeakOnly applies MinPeak to the caller_pressure peak alone,
	// for keys that may not see agent-side scores (privacy mode): a filter
	// on both peaks would tell them an agent's agent_stress was high.
	CallerPeakOnly bool
	// Escalated filters on whether the call raised alerts, when non-nil.
	Escalated *bool
	PageSize  int
	PageToken string
}

// MaxPageSize bounds a page.
const MaxPageSize = 500

// ListReports returns a page of a tenant's reports, newest first, and the
// token of the next page ("" on the last).
func (s *Store) ListReports(ctx context.Context, tenantID string, q Query) ([]*fullcallv1.Report, string, error) {
	size := q.PageSize
	if size <= 0 {
		size = 50
	}
	size = min(size, MaxPageSize)
	where := []string{"tenant_id = ?"}
	args := []any{tenantID}
	if q.AgentID != "" {
		where = append(where, "agent_id = ?")
		args = append(args, q.AgentID)
	}
	if !q.StartedAfter.IsZero() {
		where = append(where, "started_at >= ?")
		args = append(args, q.StartedAfter.UnixMilli())
	}
	if !q.StartedBefore.IsZero() {
		where = append(where, "started_at < ?")
		args = append(args, q.StartedBefore.UnixMilli())
	}
	if q.MinPeak > 0 {
		col := "peak"
		if q.CallerPeakOnly {
			col = "caller_peak"
		}
		where = append(where, col+" >= ?")
		args = append(args, q.MinPeak)
	}
	if q.Escalated != nil {
		where = append(where, "escalated = ?")
		args = append(args, boolInt(*q.Escalated))
	}
	if q.PageToken != "" {
		at, call, err := parseToken(q.PageToken)
		if err != nil {
			return nil, "", err
		}
		// Keyset pagination: strictly after the last row of the previous
		// page in (started_at DESC, call_id DESC) order.
		where = append(where, "(started_at < ? OR (started_at = ? AND call_id < ?))")
		args = append(args, at, at, call)
	}
	query := `SELECT started_at, call_id, report FROM reports WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY started_at DESC, call_id DESC LIMIT ?`
	args = append(args, size+1)
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(query), args...)
	if err != nil {
		return nil, "", fmt.Errorf("list reports: %w", err)
	}
	defer rows.Close()
	var (
		out       []*fullcallv1.Report
		lastAt    int64
		lastCall  string
		nextToken string
	)
	for rows.Next() {
		var at int64
		var call string
		var b []byte
		if err := rows.Scan(&at, &call, &b); err != nil {
			return nil, "", fmt.Errorf("list reports: %w", err)
		}
		if len(out) == size {
			nextToken = makeToken(lastAt, lastCall)
			break
		}
		r, err := decode(b)
		if err != nil {
			return nil, "", err
		}
		out = append(out, r)
		lastAt, lastCall = at, call
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list reports: %w", err)
	}
	return out, nextToken, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func makeToken(at int64, call string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at, 10) + "\x00" + call))
}

func parseToken(tok string) (int64, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, "", ErrBadPageToken
	}
	at, call, ok := strings.Cut(string(b), "\x00")
	if !ok {
		return 0, "", ErrBadPageToken
	}
	n, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return 0, "", ErrBadPageToken
	}
	return n, call, nil
}
