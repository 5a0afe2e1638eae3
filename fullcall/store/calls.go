package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// ErrFenced is returned when a write is refused because another instance
// (or another claim) has taken the call or job over since this one took
// it: the writer must stop without storing anything.
var ErrFenced = errors.New("taken over by another instance")

// Checkpoint is the durable state of a live call: everything needed to go
// on with the call elsewhere. Its size does not grow with the call: the
// timeline lives in segments (AppendTimeline) and the lists in Partial are
// bounded by the aggregate.
type Checkpoint struct {
	TenantID, CallID string
	// Epoch and Owner say who holds the call; writes are fenced on Epoch.
	Epoch int64
	Owner string
	// Seq is the last chunk the checkpoint covers.
	Seq  uint64
	Call *callv1.Call
	// Partial is the report so far without its timeline: gaps, alerts,
	// live-scoring gaps, chunk and byte counts.
	Partial *fullcallv1.Report
	// Analyzer is the analyser's state (analysis.Snapshot).
	Analyzer []byte
	// TimelineLen is the number of seconds stored in timeline segments.
	TimelineLen uint64
	// Finished is set once the call's report is stored.
	Finished  bool
	UpdatedAt time.Time
}

// Segment is a stretch of a call written with a checkpoint: timeline
// points from First, or audio from StartSample.
type Segment struct {
	First uint64
	Data  []byte
}

// StartCall records a new call, held by owner at epoch 1 — or, when the
// tenant already has a call with that id (a client reusing an id, or a
// start retried after an instance failed), starts it over: the old
// checkpoint, timeline and stored audio go and the epoch moves on, so that
// whoever held the old one is fenced out.
func (s *Store) StartCall(ctx context.Context, cp *Checkpoint) error {
	call, partial, err := marshalCheckpoint(cp)
	if err != nil {
		return err
	}
	now := s.Now().UnixMilli()
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, table := range []string{"call_timeline", "audio"} {
			if _, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM `+table+` WHERE tenant_id = ? AND call_id = ?`), cp.TenantID, cp.CallID); err != nil {
				return fmt.Errorf("start call: %w", err)
			}
		}
		row := tx.QueryRowContext(ctx, s.db.Rebind(`
INSERT INTO calls (tenant_id, call_id, epoch, owner, seq, finished, call, partial, analyzer, timeline_len, created_at, updated_at)
VALUES (?, ?, 1, ?, ?, 0, ?, ?, ?, 0, ?, ?)
ON CONFLICT (tenant_id, call_id) DO UPDATE SET
	epoch = calls.epoch + 1, owner = excluded.owner, seq = excluded.seq, finished = 0, call = excluded.call,
	partial = excluded.partial, analyzer = excluded.analyzer, timeline_len = 0,
	created_at = excluded.created_at, updated_at = excluded.updated_at
RETURNING epoch`), cp.TenantID, cp.CallID, cp.Owner, int64(cp.Seq), call, partial, cp.Analyzer, now, now)
		if err := row.Scan(&cp.Epoch); err != nil {
			return fmt.Errorf("start call %s/%s: %w", cp.TenantID, cp.CallID, err)
		}
		cp.TimelineLen, cp.Finished, cp.UpdatedAt = 0, false, time.UnixMilli(now)
		return nil
	})
}

// ResumeCall takes a call over for owner: the epoch moves on (fencing out
// the previous holder) and the checkpoint is returned. With staleBefore set
// it takes the call only if its holder has not touched it since (the
// orphan sweep), and returns ErrFenced otherwise. A finished call is
// returned as is (Finished set) without being taken. ErrNotFound when the
// tenant has no such call.
func (s *Store) ResumeCall(ctx context.Context, tenantID, callID, owner string, staleBefore time.Time) (*Checkpoint, error) {
	var cp *Checkpoint
	now := s.Now().UnixMilli()
	err := s.tx(ctx, func(tx *sql.Tx) error {
		q := `UPDATE calls SET epoch = epoch + 1, owner = ?, updated_at = ? WHERE tenant_id = ? AND call_id = ? AND finished = 0`
		args := []any{owner, now, tenantID, callID}
		if !staleBefore.IsZero() {
			q += ` AND updated_at < ?`
			args = append(args, staleBefore.UnixMilli())
		}
		res, err := tx.ExecContext(ctx, s.db.Rebind(q), args...)
		if err != nil {
			return fmt.Errorf("resume call: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("resume call: %w", err)
		}
		cp, err = s.loadCall(ctx, tx, tenantID, callID)
		if err != nil {
			return err
		}
		if n == 0 && !cp.Finished {
			return ErrFenced // the holder touched it: not an orphan
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cp, nil
}

func (s *Store) loadCall(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, tenantID, callID string) (*Checkpoint, error) {
	cp := &Checkpoint{TenantID: tenantID, CallID: callID, Call: &callv1.Call{}, Partial: &fullcallv1.Report{}}
	var seq, tl, updated int64
	var finished int
	var call, partial []byte
	err := q.QueryRowContext(ctx, s.db.Rebind(`
SELECT epoch, owner, seq, finished, call, partial, analyzer, timeline_len, updated_at
FROM calls WHERE tenant_id = ? AND call_id = ?`), tenantID, callID).Scan(
		&cp.Epoch, &cp.Owner, &seq, &finished, &call, &partial, &cp.Analyzer, &tl, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load call %s/%s: %w", tenantID, callID, err)
	}
	if err := proto.Unmarshal(call, cp.Call); err != nil {
		return nil, fmt.Errorf("load call %s/%s: %w", tenantID, callID, err)
	}
	if err := proto.Unmarshal(partial, cp.Partial); err != nil {
		return nil, fmt.Errorf("load call %s/%s: %w", tenantID, callID, err)
	}
	cp.Seq, cp.TimelineLen, cp.Finished, cp.UpdatedAt = uint64(seq), uint64(tl), finished == 1, time.UnixMilli(updated)
	return cp, nil
}

func marshalCheckpoint(cp *Checkpoint) (call, partial []byte, err error) {
	if cp.TenantID == "" || cp.CallID == "" {
		return nil, nil, errors.New("checkpoint: tenant_id and call_id are required")
	}
	if call, err = proto.Marshal(cp.Call); err != nil {
		return nil, nil, fmt.Errorf("checkpoint: %w", err)
	}
	if partial, err = proto.Marshal(cp.Partial); err != nil {
		return nil, nil, fmt.Errorf("checkpoint: %w", err)
	}
	return call, partial, nil
}

// SaveCheckpoint makes a call's progress durable in one transaction: the
// checkpoint, the timeline points since the last one, and (for tenants that
// keep it) the audio since the last one. It returns ErrFenced, writing
// nothing, when the call was taken over since cp.Epoch.
func (s *Store) SaveCheckpoint(ctx context.Context, cp *Checkpoint, timeline, audio []Segment) error {
	call, partial, err := marshalCheckpoint(cp)
	if err != nil {
		return err
	}
	now := s.Now().UnixMilli()
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.fencedUpdate(ctx, tx, cp, qCheckpoint,
			int64(cp.Seq), cp.Owner, call, partial, cp.Analyzer, int64(cp.TimelineLen), now); err != nil {
			return err
		}
		if err := s.putSegments(ctx, tx, cp, timeline, audio); err != nil {
			return err
		}
		cp.UpdatedAt = time.UnixMilli(now)
		return nil
	})
}

// The statements of a live call's writes, prepared once (sqldb.DB.Keep):
// a checkpoint or a finish, fenced on the caller's epoch, and the
// segments each writes.
const (
	fence       = ` WHERE tenant_id = ? AND call_id = ? AND epoch = ? AND finished = 0`
	qCheckpoint = `UPDATE calls SET seq = ?, owner = ?, call = ?, partial = ?, analyzer = ?, timeline_len = ?, updated_at = ?` + fence
	qFinish     = `UPDATE calls SET seq = ?, finished = 1, analyzer = ?, partial = ?, updated_at = ?` + fence
	qTimeline   = `
INSERT INTO call_timeline (tenant_id, call_id, first_second, points) VALUES (?, ?, ?, ?)
ON CONFLICT (tenant_id, call_id, first_second) DO UPDATE SET points = excluded.points`
	qAudio = `
INSERT INTO audio (tenant_id, call_id, start_sample, data) VALUES (?, ?, ?, ?)
ON CONFLICT (tenant_id, call_id, start_sample) DO UPDATE SET data = excluded.data`
)

// fencedUpdate runs query (qCheckpoint or qFinish) with args and the
// fence's.
func (s *Store) fencedUpdate(ctx context.Context, tx *sql.Tx, cp *Checkpoint, query string, args ...any) error {
	args = append(args, cp.TenantID, cp.CallID, cp.Epoch)
	res, err := s.db.ExecIn(ctx, tx, query, args...)
	if err != nil {
		return fmt.Errorf("checkpoint %s/%s: %w", cp.TenantID, cp.CallID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("checkpoint %s/%s: %w", cp.TenantID, cp.CallID, err)
	} else if n == 0 {
		return fmt.Errorf("checkpoint %s/%s at epoch %d: %w", cp.TenantID, cp.CallID, cp.Epoch, ErrFenced)
	}
	return nil
}

func (s *Store) putSegments(ctx context.Context, tx *sql.Tx, cp *Checkpoint, timeline, audio []Segment) error {
	// A segment written again (the one in progress at each checkpoint, or
	// a replay after a takeover) replaces the earlier one: the latest
	// holder's is the truth.
	for _, seg := range timeline {
		if _, err := s.db.ExecIn(ctx, tx, qTimeline,
			cp.TenantID, cp.CallID, int64(seg.First), seg.Data); err != nil {
			return fmt.Errorf("checkpoint timeline: %w", err)
		}
	}
	for _, seg := range audio {
		if len(seg.Data) == 0 {
			continue
		}
		if _, err := s.db.ExecIn(ctx, tx, qAudio,
			cp.TenantID, cp.CallID, int64(seg.First), seg.Data); err != nil {
			return fmt.Errorf("checkpoint audio: %w", err)
		}
	}
	return nil
}

// Timeline returns a call's stored timeline segments in order.
func (s *Store) Timeline(ctx context.Context, tenantID, callID string) ([]Segment, error) {
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT first_second, points FROM call_timeline WHERE tenant_id = ? AND call_id = ? ORDER BY first_second`), tenantID, callID)
	if err != nil {
		return nil, fmt.Errorf("timeline: %w", err)
	}
	defer rows.Close()
	var out []Segment
	for rows.Next() {
		var first int64
		var seg Segment
		if err := rows.Scan(&first, &seg.Data); err != nil {
			return nil, fmt.Errorf("timeline: %w", err)
		}
		seg.First = uint64(first)
		out = append(out, seg)
	}
	return out, rows.Err()
}

// FinishCall stores a live call's report and marks the call finished, in
// one transaction fenced on cp.Epoch; the last audio segments go in with
// it and the timeline segments are dropped (the report holds the
// timeline). With care, the report is marked for escalation's care record.
func (s *Store) FinishCall(ctx context.Context, cp *Checkpoint, audio []Segment, r *fullcallv1.Report, care bool) error {
	now := s.Now().UnixMilli()
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.fencedUpdate(ctx, tx, cp, qFinish,
			int64(cp.Seq), []byte{}, []byte{}, now); err != nil {
			return err
		}
		if err := s.putSegments(ctx, tx, cp, nil, audio); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM call_timeline WHERE tenant_id = ? AND call_id = ?`), cp.TenantID, cp.CallID); err != nil {
			return fmt.Errorf("finish call: %w", err)
		}
		return s.putReport(ctx, tx, r, care)
	})
}

// Heartbeat marks the unfinished calls owner holds as alive, so that the
// orphan sweep leaves them (a call on hold sends no audio, hence no
// checkpoints). It returns how many it touched.
func (s *Store) Heartbeat(ctx context.Context, owner string) (int64, error) {
	res, err := s.exec(ctx, `UPDATE calls SET updated_at = ? WHERE owner = ? AND finished = 0`, s.Now().UnixMilli(), owner)
	if err != nil {
		return 0, fmt.Errorf("heartbeat: %w", err)
	}
	return res.RowsAffected()
}

// CallKey names a call.
type CallKey struct{ TenantID, CallID string }

// StaleCalls lists unfinished calls nobody has touched since before: their
// instance died and no gateway resumed them.
func (s *Store) StaleCalls(ctx context.Context, before time.Time, limit int) ([]CallKey, error) {
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT tenant_id, call_id FROM calls WHERE finished = 0 AND updated_at < ? ORDER BY updated_at LIMIT ?`), before.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("stale calls: %w", err)
	}
	defer rows.Close()
	var out []CallKey
	for rows.Next() {
		var k CallKey
		if err := rows.Scan(&k.TenantID, &k.CallID); err != nil {
			return nil, fmt.Errorf("stale calls: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}
