package store

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// AgentSummary summarises a tenant's agent over the calls that started in
// [from, to): calls, minutes, high-pressure calls (caller_pressure peak at
// or above the exposure threshold), exposure minutes (caller_pressure at or
// above it), escalated calls, and the trend: exposure minutes per call
// against the period of the same length just before (positive: worse; 0
// when either period has no calls).
func (s *Store) AgentSummary(ctx context.Context, tenantID, agentID string, from, to time.Time) (*fullcallv1.AgentSummary, error) {
	cur, err := s.period(ctx, tenantID, agentID, from, to)
	if err != nil {
		return nil, err
	}
	prev, err := s.period(ctx, tenantID, agentID, from.Add(-to.Sub(from)), from)
	if err != nil {
		return nil, err
	}
	out := &fullcallv1.AgentSummary{
		AgentId:           agentID,
		From:              timestamppb.New(from),
		To:                timestamppb.New(to),
		Calls:             uint32(cur.calls),
		Minutes:           cur.seconds / 60,
		HighPressureCalls: uint32(cur.high),
		ExposureMinutes:   cur.exposure / 60,
		EscalatedCalls:    uint32(cur.escalated),
	}
	if cur.calls > 0 && prev.calls > 0 {
		out.ExposureTrend = cur.exposure/60/float64(cur.calls) - prev.exposure/60/float64(prev.calls)
	}
	return out, nil
}

type periodSums struct {
	calls, high, escalated int64
	seconds, exposure      float64
}

func (s *Store) period(ctx context.Context, tenantID, agentID string, from, to time.Time) (periodSums, error) {
	var p periodSums
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`
SELECT COUNT(*), COALESCE(SUM(high_pressure), 0), COALESCE(SUM(escalated), 0), COALESCE(SUM(duration_s), 0), COALESCE(SUM(exposure_s), 0)
FROM reports WHERE tenant_id = ? AND agent_id = ? AND started_at >= ? AND started_at < ?`),
		tenantID, agentID, from.UnixMilli(), to.UnixMilli()).Scan(&p.calls, &p.high, &p.escalated, &p.seconds, &p.exposure)
	if err != nil {
		return p, fmt.Errorf("agent summary: %w", err)
	}
	return p, nil
}

// CarePending returns up to limit live-call reports stored before before
// that escalation's CareService has not recorded yet, oldest first.
func (s *Store) CarePending(ctx context.Context, before time.Time, limit int) ([]*fullcallv1.Report, error) {
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT report FROM reports WHERE care_pending = 1 AND created_at < ? ORDER BY created_at LIMIT ?`),
		before.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("care pending: %w", err)
	}
	defer rows.Close()
	var out []*fullcallv1.Report
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, fmt.Errorf("care pending: %w", err)
		}
		r, err := decode(b)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// CareDone records that escalation has a call in its care record.
func (s *Store) CareDone(ctx context.Context, tenantID, callID string) error {
	if _, err := s.exec(ctx, `UPDATE reports SET care_pending = 0 WHERE tenant_id = ? AND call_id = ?`, tenantID, callID); err != nil {
		return fmt.Errorf("care done: %w", err)
	}
	return nil
}
