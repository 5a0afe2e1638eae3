package escalation

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/calmline/calmline/lib/field"

	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// delivery is one outbound request in the outbox. Its id is the
// request's webhook-id and Idempotency-Key on every attempt.
type delivery struct {
	Seq            int64
	ID             string
	TenantID       string
	EscalationID   string
	CallID         string
	AgentID        string
	Endpoint       string
	OrderKey       string
	EventType      string
	StepIdx        int // -1: not a ladder step
	StepName       string
	Payload        string
	State          int
	Attempts       int
	LastStatus     int
	LastError      string
	CreatedAt      int64
	NextAttemptAt  int64
	FirstAttemptAt int64
	WindowStart    int64
	DoneAt         int64
	// TraceContext is the stored context the attempts' spans are
	// children of (tracing.go); enqueue defaults it to the transaction's.
	TraceContext string
}

// deliveryID derives a delivery's id from what it is, so that recreating
// it (a retried transaction) cannot make a second one.
func deliveryID(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return "dlv_" + hex.EncodeToString(sum[:12])
}

// orderKey groups the deliveries that must reach an endpoint in order:
// those of one call (or one agent) to one endpoint. Tenant ids and
// endpoint names hold no "|", so the key is unambiguous whatever the call
// id holds (PostgreSQL text holds no NUL, so no NUL separators).
func orderKey(tenantID, kind, subject, endpoint string) string {
	return tenantID + "|" + kind + ":" + subject + "|" + endpoint
}

// enqueue adds a delivery, due now, to the outbox; an existing id is left
// alone.
func (t *txn) enqueue(d delivery) error {
	if d.StepName == "" {
		d.StepIdx = -1
	}
	if d.TraceContext == "" {
		d.TraceContext = t.st.trace.inject(t.ctx)
	}
	_, err := t.exec(`INSERT INTO deliveries (id, tenant_id, escalation_id, call_id, agent_id, endpoint, order_key, event_type,
	step_idx, step_name, payload, state, created_at, next_attempt_at, window_start, trace_context)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		d.ID, d.TenantID, d.EscalationID, d.CallID, d.AgentID, d.Endpoint, d.OrderKey, d.EventType, d.StepIdx, d.StepName,
		d.Payload, dlvPending, t.nowMs(), t.nowMs(), t.nowMs(), d.TraceContext)
	if err != nil {
		return fmt.Errorf("enqueue delivery: %w", err)
	}
	t.work = true
	return nil
}

const dlvColumns = `seq, id, tenant_id, escalation_id, call_id, agent_id, endpoint, order_key, event_type, step_idx, step_name,
	payload, state, attempts, last_status, last_error, created_at, next_attempt_at, first_attempt_at, window_start, done_at, trace_context`

func scanDelivery(r scanner) (*delivery, error) {
	var d delivery
	err := r.Scan(&d.Seq, &d.ID, &d.TenantID, &d.EscalationID, &d.CallID, &d.AgentID, &d.Endpoint, &d.OrderKey, &d.EventType,
		&d.StepIdx, &d.StepName, &d.Payload, &d.State, &d.Attempts, &d.LastStatus, &d.LastError, &d.CreatedAt,
		&d.NextAttemptAt, &d.FirstAttemptAt, &d.WindowStart, &d.DoneAt, &d.TraceContext)
	return &d, err
}

func (d *delivery) proto() *escalationv1.Delivery {
	p := &escalationv1.Delivery{
		Id: d.ID, TenantId: d.TenantID, EscalationId: d.EscalationID, CallId: d.CallID, AgentId: d.AgentID,
		Endpoint: d.Endpoint, EventType: d.EventType, Step: d.StepName, State: escalationv1.DeliveryState(d.State),
		Attempts: uint32(d.Attempts), LastStatus: uint32(d.LastStatus), LastError: d.LastError,
		CreatedAt: msTime(d.CreatedAt), FirstAttemptAt: msTime(d.FirstAttemptAt), DoneAt: msTime(d.DoneAt), Payload: d.Payload,
	}
	if d.State == dlvPending {
		p.NextAttemptAt = msTime(d.NextAttemptAt)
	}
	return p
}

// claim takes up to n deliveries that are due and whose turn it is (no
// earlier delivery of the same call to the same endpoint is unfinished),
// oldest first, and leases them to this instance until lease.
func (s *store) claim(ctx context.Context, n int, lease time.Duration) ([]*delivery, error) {
	var out []*delivery
	err := s.inTx(ctx, func(t *txn) error {
		now := t.nowMs()
		// Leases of a crashed instance (PostgreSQL with several
		// instances) run out: the deliveries become due again.
		if _, err := t.exec(`UPDATE deliveries SET state = ?, lease_until = 0 WHERE state = ? AND lease_until < ?`,
			dlvPending, dlvInFlight, now); err != nil {
			return fmt.Errorf("reclaim leases: %w", err)
		}
		rows, err := t.rows(`SELECT `+dlvColumns+` FROM deliveries d WHERE d.state = ? AND d.next_attempt_at <= ?
AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.order_key = d.order_key AND p.seq < d.seq AND p.state IN (?, ?))
ORDER BY d.next_attempt_at, d.seq LIMIT ?`, dlvPending, now, dlvPending, dlvInFlight, n)
		if err != nil {
			return fmt.Errorf("claim deliveries: %w", err)
		}
		for rows.Next() {
			d, err := scanDelivery(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("claim deliveries: %w", err)
			}
			out = append(out, d)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		kept := out[:0]
		for _, d := range out {
			res, err := t.exec(`UPDATE deliveries SET state = ?, lease_until = ? WHERE id = ? AND state = ?`,
				dlvInFlight, now+lease.Milliseconds(), d.ID, dlvPending)
			if err != nil {
				return fmt.Errorf("lease delivery: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				kept = append(kept, d)
			}
		}
		out = kept
		return nil
	})
	return out, err
}

// nextDue returns when the earliest future attempt is due; zero if none.
func (s *store) nextDue(ctx context.Context) (time.Time, error) {
	var next, step sql.NullInt64
	now := s.now().UnixMilli()
	if err := s.queryRow(ctx, `SELECT MIN(next_attempt_at) FROM deliveries WHERE state = ? AND next_attempt_at > ?`,
		dlvPending, now).Scan(&next); err != nil {
		return time.Time{}, err
	}
	if err := s.queryRow(ctx, `SELECT MIN(due_at) FROM escalation_steps WHERE state = ? AND due_at > ?`,
		stepPending, now).Scan(&step); err != nil {
		return time.Time{}, err
	}
	var at int64
	for _, v := range []sql.NullInt64{next, step} {
		if v.Valid && (at == 0 || v.Int64 < at) {
			at = v.Int64
		}
	}
	if at == 0 {
		return time.Time{}, nil
	}
	return time.UnixMilli(at), nil
}

// releaseAll returns every in-flight delivery to the queue. Only a
// single-instance store (SQLite) does this at start: whatever was in flight
// belonged to a process that is gone.
func (s *store) releaseAll(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE deliveries SET state = ?, lease_until = 0 WHERE state = ?`), dlvPending, dlvInFlight)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// outcome is the result of one attempt, as the dispatcher decided it.
type outcome struct {
	ok      bool
	dead    bool // give up: a final answer or the schedule ran out
	release bool // the attempt was cut by shutdown: it does not count
	status  int
	errText string
	next    time.Time
	started time.Time
}

// complete records the outcomes of attempts in one transaction: group
// commit, since every attempt's record is a write and SQLite commits one
// at a time.
func (s *store) complete(ctx context.Context, rs []attemptResult) error {
	return s.inTx(ctx, func(t *txn) error {
		t.work = true // the next delivery of the same call may go now
		for _, r := range rs {
			if err := t.record(r.d, r.o); err != nil {
				return fmt.Errorf("delivery %s: %w", r.d.ID, err)
			}
		}
		return nil
	})
}

// attemptResult is an attempt's delivery and outcome.
type attemptResult struct {
	d *delivery
	o outcome
}

// record records an attempt's outcome: success, a scheduled retry, or the
// dead-letter state; a ladder step and its events follow.
func (t *txn) record(orig *delivery, o outcome) error {
	c := *orig // the caller's copy stays as claimed, should the transaction roll back
	d := &c
	if o.release {
		_, err := t.exec(`UPDATE deliveries SET state = ?, lease_until = 0 WHERE id = ? AND state = ?`, dlvPending, d.ID, dlvInFlight)
		return err
	}
	first := d.FirstAttemptAt
	if first == 0 {
		first = o.started.UnixMilli()
	}
	d.Attempts++
	d.LastStatus = o.status
	d.FirstAttemptAt = first
	switch {
	case o.ok:
		d.State = dlvSucceeded
		_, err := t.exec(`UPDATE deliveries SET state = ?, attempts = ?, last_status = ?, last_error = '', first_attempt_at = ?,
lease_until = 0, done_at = ? WHERE id = ?`, dlvSucceeded, d.Attempts, o.status, first, t.nowMs(), d.ID)
		if err != nil {
			return fmt.Errorf("record delivery: %w", err)
		}
		if d.StepIdx >= 0 {
			return t.stepDone(d, true, "")
		}
		return nil
	case o.dead:
		d.State = dlvDead
		_, err := t.exec(`UPDATE deliveries SET state = ?, attempts = ?, last_status = ?, last_error = ?, first_attempt_at = ?,
lease_until = 0, done_at = ? WHERE id = ?`, dlvDead, d.Attempts, o.status, o.errText, first, t.nowMs(), d.ID)
		if err != nil {
			return fmt.Errorf("record delivery: %w", err)
		}
		if _, err := t.audit(auditEntry{TenantID: d.TenantID, Kind: "delivery.dead_lettered", EscalationID: d.EscalationID, CallID: d.CallID,
			Detail: map[string]any{"delivery_id": d.ID, "endpoint": d.Endpoint, "type": d.EventType, "attempts": d.Attempts,
				"last_status": o.status, "last_error": o.errText}}); err != nil {
			return err
		}
		if d.StepIdx >= 0 {
			return t.stepDone(d, false, o.errText)
		}
		return nil
	default:
		_, err := t.exec(`UPDATE deliveries SET state = ?, attempts = ?, last_status = ?, last_error = ?, first_attempt_at = ?,
lease_until = 0, next_attempt_at = ? WHERE id = ?`, dlvPending, d.Attempts, o.status, o.errText, first, o.next.UnixMilli(), d.ID)
		if err != nil {
			return fmt.Errorf("record delivery: %w", err)
		}
		return nil
	}
}

// redrive sends a dead-lettered delivery again, with a fresh schedule.
func (s *store) redrive(ctx context.Context, tenantID, id, by string) (*escalationv1.Delivery, error) {
	if err := checkInput(field.ID("id", id), field.Text("by", by, maxBy)); err != nil {
		return nil, err
	}
	err := s.inTx(ctx, func(t *txn) error {
		d, err := scanDelivery(t.row(`SELECT `+dlvColumns+` FROM deliveries WHERE tenant_id = ? AND id = ?`, tenantID, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("delivery %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("read delivery: %w", err)
		}
		if d.State != dlvDead {
			return fmt.Errorf("delivery is %s, not dead-lettered: %w",
				strings.ToLower(strings.TrimPrefix(escalationv1.DeliveryState(d.State).String(), "DELIVERY_STATE_")), ErrBadState)
		}
		if _, err := t.exec(`UPDATE deliveries SET state = ?, next_attempt_at = ?, window_start = ?, done_at = 0 WHERE id = ?`,
			dlvPending, t.nowMs(), t.nowMs(), id); err != nil {
			return fmt.Errorf("redrive: %w", err)
		}
		if d.StepIdx >= 0 {
			if _, err := t.exec(`UPDATE escalation_steps SET state = ?, done_at = 0 WHERE escalation_id = ? AND idx = ?`,
				stepDelivering, d.EscalationID, d.StepIdx); err != nil {
				return fmt.Errorf("redrive step: %w", err)
			}
		}
		t.work = true
		_, err = t.audit(auditEntry{TenantID: tenantID, Kind: "delivery.redriven", EscalationID: d.EscalationID, CallID: d.CallID, Actor: by,
			Detail: map[string]any{"delivery_id": id, "endpoint": d.Endpoint, "type": d.EventType, "attempts_before": d.Attempts}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.getDelivery(ctx, tenantID, id)
}

func (s *store) getDelivery(ctx context.Context, tenantID, id string) (*escalationv1.Delivery, error) {
	if err := checkInput(field.ID("id", id)); err != nil {
		return nil, err
	}
	d, err := scanDelivery(s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT `+dlvColumns+` FROM deliveries WHERE tenant_id = ? AND id = ?`), tenantID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("delivery %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get delivery: %w", err)
	}
	return d.proto(), nil
}

type deliveryQuery struct {
	State        escalationv1.DeliveryState
	EscalationID string
	CallID       string
	PageSize     int
	PageToken    string
}

// listDeliveries lists a tenant's deliveries, newest first.
func (s *store) listDeliveries(ctx context.Context, tenantID string, q deliveryQuery) ([]*escalationv1.Delivery, string, error) {
	if err := checkInput(field.OptionalID("call_id", q.CallID), field.OptionalID("escalation_id", q.EscalationID), nonNegative(q.PageSize)); err != nil {
		return nil, "", err
	}
	size := pageSize(q.PageSize, 50, 500)
	where := []string{"tenant_id = ?"}
	args := []any{tenantID}
	if q.State != escalationv1.DeliveryState_DELIVERY_STATE_UNSPECIFIED {
		where = append(where, "state = ?")
		args = append(args, int(q.State))
	}
	if q.EscalationID != "" {
		where = append(where, "escalation_id = ?")
		args = append(args, q.EscalationID)
	}
	if q.CallID != "" {
		where = append(where, "call_id = ?")
		args = append(args, q.CallID)
	}
	if q.PageToken != "" {
		n, _, err := parsePageToken(q.PageToken)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "seq < ?")
		args = append(args, n)
	}
	args = append(args, size+1)
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT `+dlvColumns+` FROM deliveries WHERE `+strings.Join(where, " AND ")+
		` ORDER BY seq DESC LIMIT ?`), args...)
	if err != nil {
		return nil, "", fmt.Errorf("list deliveries: %w", err)
	}
	defer rows.Close()
	var out []*escalationv1.Delivery
	var lastSeq int64
	next := ""
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list deliveries: %w", err)
		}
		if len(out) == size {
			next = pageToken(lastSeq, "")
			break
		}
		lastSeq = d.Seq
		out = append(out, d.proto())
	}
	return out, next, rows.Err()
}

// backlogMark is a tenant's last counted backlog.
type backlogMark struct {
	at time.Time
	n  int
}

// checkBacklog refuses when a tenant's unfinished deliveries reached the
// bound. Counting costs in proportion to the backlog, so a count well
// under the bound is trusted for a second.
func (t *txn) checkBacklog(tenantID string) error {
	s := t.st
	s.backlogMu.Lock()
	m, ok := s.backlog[tenantID]
	s.backlogMu.Unlock()
	if ok && t.now.Sub(m.at) < time.Second && m.n < s.maxBacklog*9/10 {
		return nil
	}
	var n int
	if err := t.row(`SELECT COUNT(*) FROM (SELECT 1 FROM deliveries WHERE tenant_id = ? AND state IN (?, ?) LIMIT ?) b`,
		tenantID, dlvPending, dlvInFlight, s.maxBacklog).Scan(&n); err != nil {
		return fmt.Errorf("outbox backlog: %w", err)
	}
	s.backlogMu.Lock()
	if s.backlog == nil {
		s.backlog = map[string]backlogMark{}
	}
	s.backlog[tenantID] = backlogMark{at: t.now, n: n}
	s.backlogMu.Unlock()
	if n >= s.maxBacklog {
		return fmt.Errorf("tenant %s has %d undelivered requests: %w", tenantID, n, ErrOutboxFull)
	}
	return nil
}
