package store

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"time"

	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Deletion records one thing retention deleted.
type Deletion struct {
	TenantID, Kind, CallID, Reason string
	At                             time.Time
}

// Deletion kinds.
const (
	KindReport = "report"
	KindAudio  = "audio"
)

// DeleteReports deletes up to limit of a tenant's reports of calls that
// ended before cutoff, with their stored audio, and records each deletion;
// it returns the call ids. Run it until it returns fewer than limit.
func (s *Store) DeleteReports(ctx context.Context, tenantID string, cutoff time.Time, limit int, reason string) ([]string, error) {
	return s.deleteBatch(ctx, tenantID, KindReport, reason, limit,
		`SELECT call_id, audio_stored FROM reports WHERE tenant_id = ? AND ended_at < ? ORDER BY ended_at LIMIT ?`, cutoff)
}

// DeleteAudio deletes up to limit of a tenant's stored recordings of calls
// that ended before cutoff (the reports stay), and records each deletion.
func (s *Store) DeleteAudio(ctx context.Context, tenantID string, cutoff time.Time, limit int, reason string) ([]string, error) {
	return s.deleteBatch(ctx, tenantID, KindAudio, reason, limit,
		`SELECT call_id, audio_stored FROM reports WHERE tenant_id = ? AND audio_stored = 1 AND ended_at < ? ORDER BY ended_at LIMIT ?`, cutoff)
}

func (s *Store) deleteBatch(ctx context.Context, tenantID, kind, reason string, limit int, pick string, cutoff time.Time) ([]string, error) {
	var deleted []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, s.db.Rebind(pick), tenantID, cutoff.UnixMilli(), limit)
		if err != nil {
			return err
		}
		type victim struct {
			call  string
			audio bool
		}
		var vs []victim
		for rows.Next() {
			var v victim
			var a int
			if err := rows.Scan(&v.call, &a); err != nil {
				rows.Close()
				return err
			}
			v.audio = a == 1
			vs = append(vs, v)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		now := s.Now().UnixMilli()
		for _, v := range vs {
			if v.audio {
				if _, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM audio WHERE tenant_id = ? AND call_id = ?`), tenantID, v.call); err != nil {
					return err
				}
			}
			if kind == KindReport {
				if _, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM reports WHERE tenant_id = ? AND call_id = ?`), tenantID, v.call); err != nil {
					return err
				}
			} else if _, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE reports SET audio_stored = 0 WHERE tenant_id = ? AND call_id = ?`), tenantID, v.call); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO deletions (tenant_id, kind, call_id, reason, deleted_at) VALUES (?, ?, ?, ?, ?)`),
				tenantID, kind, v.call, reason, now); err != nil {
				return err
			}
			deleted = append(deleted, v.call)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("delete %s of %s: %w", kind, tenantID, err)
	}
	return deleted, nil
}

// Deletions lists a tenant's recorded deletions since a time, oldest first.
func (s *Store) Deletions(ctx context.Context, tenantID string, since time.Time) ([]Deletion, error) {
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT kind, call_id, reason, deleted_at FROM deletions WHERE tenant_id = ? AND deleted_at >= ? ORDER BY deleted_at, call_id`),
		tenantID, since.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("deletions: %w", err)
	}
	defer rows.Close()
	var out []Deletion
	for rows.Next() {
		d := Deletion{TenantID: tenantID}
		var at int64
		if err := rows.Scan(&d.Kind, &d.CallID, &d.Reason, &at); err != nil {
			return nil, fmt.Errorf("deletions: %w", err)
		}
		d.At = time.UnixMilli(at)
		out = append(out, d)
	}
	return out, rows.Err()
}

// PurgeFinished deletes bookkeeping nobody needs any more: finished calls'
// checkpoint rows, and settled jobs whose callbacks are over, last touched
// before cutoff. It returns how many rows went.
func (s *Store) PurgeFinished(ctx context.Context, cutoff time.Time) (int64, error) {
	var total int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM calls WHERE finished = 1 AND updated_at < ?`), cutoff.UnixMilli())
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		total += n
		res, err = tx.ExecContext(ctx, s.db.Rebind(`
DELETE FROM jobs WHERE state IN (?, ?) AND updated_at < ? AND callback_state <> ? AND (settled = 1 OR source = ?)`),
			int(fullcallv1.JobState_JOB_STATE_DONE), int(fullcallv1.JobState_JOB_STATE_FAILED), cutoff.UnixMilli(), int(CallbackPending), SourceUpload)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		total += n
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("purge: %w", err)
	}
	return total, nil
}

// SourceUpload is the job source of recordings uploaded through the API.
const SourceUpload = "upload"

// WriteAudio writes a call's stored audio to w in timeline order, with
// silence (fill, one sample frame) where nothing was stored, up to end
// bytes; it returns ErrNotFound when nothing is stored for the call.
func (s *Store) WriteAudio(ctx context.Context, w io.Writer, tenantID, callID string, frameBytes int, fill []byte, end int64) error {
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT start_sample, data FROM audio WHERE tenant_id = ? AND call_id = ? ORDER BY start_sample`), tenantID, callID)
	if err != nil {
		return fmt.Errorf("audio: %w", err)
	}
	defer rows.Close()
	var pos int64
	any := false
	for rows.Next() {
		var start int64
		var data []byte
		if err := rows.Scan(&start, &data); err != nil {
			return fmt.Errorf("audio: %w", err)
		}
		any = true
		at := start * int64(frameBytes)
		if at < pos { // overlapping segments: skip what was written
			skip := pos - at
			if skip >= int64(len(data)) {
				continue
			}
			data, at = data[skip:], pos
		}
		if err := writeFill(w, fill, (at-pos)/int64(frameBytes)); err != nil {
			return err
		}
		if at+int64(len(data)) > end {
			data = data[:max(end-at, 0)]
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		pos = at + int64(len(data))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audio: %w", err)
	}
	if !any {
		return ErrNotFound
	}
	return writeFill(w, fill, (end-pos)/int64(frameBytes))
}

func writeFill(w io.Writer, frame []byte, frames int64) error {
	if frames <= 0 {
		return nil
	}
	buf := make([]byte, 0, 4096)
	for len(buf)+len(frame) <= cap(buf) {
		buf = append(buf, frame...)
	}
	per := int64(len(buf) / len(frame))
	for frames > 0 {
		n := min(frames, per)
		if _, err := w.Write(buf[:n*int64(len(frame))]); err != nil {
			return err
		}
		frames -= n
	}
	return nil
}

// HasAudio reports whether audio is stored for a call.
func (s *Store) HasAudio(ctx context.Context, tenantID, callID string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT COUNT(*) FROM audio WHERE tenant_id = ? AND call_id = ?`), tenantID, callID).Scan(&n)
	return n > 0, err
}
