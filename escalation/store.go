package escalation

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/lib/field"
	"github.com/calmline/calmline/lib/sqldb"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// Errors the store returns, classified at the API boundary.
var (
	ErrNotFound     = errors.New("not found")
	ErrBadState     = errors.New("not in a state that allows this")
	ErrBadPageToken = errors.New("invalid page token")
	ErrInvalid      = errors.New("invalid request")
	// ErrOutboxFull refuses alerts while a tenant's unfinished deliveries
	// are at the bound (the overflow policy "outbox_full": refuse, and
	// realtime retries), so that a receiver down for long cannot grow the
	// outbox without limit.
	ErrOutboxFull = errors.New("the outbox is full")
)

// Shorthands for the states stored as integers.
const (
	escOpen     = int(escalationv1.EscalationState_ESCALATION_STATE_OPEN)
	escAcked    = int(escalationv1.EscalationState_ESCALATION_STATE_ACKNOWLEDGED)
	escResolved = int(escalationv1.EscalationState_ESCALATION_STATE_RESOLVED)

	stepPending    = int(escalationv1.StepState_STEP_STATE_PENDING)
	stepDelivering = int(escalationv1.StepState_STEP_STATE_DELIVERING)
	stepSucceeded  = int(escalationv1.StepState_STEP_STATE_SUCCEEDED)
	stepFailed     = int(escalationv1.StepState_STEP_STATE_FAILED)
	stepSkipped    = int(escalationv1.StepState_STEP_STATE_SKIPPED)

	dlvPending   = int(escalationv1.DeliveryState_DELIVERY_STATE_PENDING)
	dlvInFlight  = int(escalationv1.DeliveryState_DELIVERY_STATE_IN_FLIGHT)
	dlvSucceeded = int(escalationv1.DeliveryState_DELIVERY_STATE_SUCCEEDED)
	dlvDead      = int(escalationv1.DeliveryState_DELIVERY_STATE_DEAD)
)

// store is escalation's database: escalations, their ladder steps, the
// outbox of deliveries, the audit trail and the care records. Every change
// happens in one transaction with its audit entries and the deliveries it
// causes, so that a crash leaves either all of it or none.
type store struct {
	db      *sqldb.DB
	tenants *tenant.Registry
	now     func() time.Time
	// onWork is called after a commit that created or freed deliveries,
	// to wake the dispatcher.
	onWork func()
	// maxBacklog bounds a tenant's unfinished deliveries; 0: no bound.
	maxBacklog int
	backlogMu  sync.Mutex
	backlog    map[string]backlogMark
	// stmts holds prepared statements by query text.
	stmts sync.Map
	// trace starts the outbox's spans and stores their contexts.
	trace tracing
	// writeMu serialises this process's write transactions on SQLite,
	// which takes one writer at a time anyway: waiting here is a queue,
	// while waiting in SQLite's busy handler is a sleep in growing steps
	// that leaves the database idle.
	writeMu sync.Mutex
}

func openStore(ctx context.Context, dsn string, tenants *tenant.Registry, now func() time.Time) (*store, error) {
	db, err := sqldb.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	if err := sqldb.Migrate(ctx, db, "escalation", migrations); err != nil {
		db.Close()
		return nil, err
	}
	return &store{db: db, tenants: tenants, now: now, onWork: func() {}, trace: newTracing(nil, nil)}, nil
}

// txn is one transaction with its clock reading.
type txn struct {
	tx  *sql.Tx
	ctx context.Context
	st  *store
	now time.Time
	// work is set when the transaction made deliveries due.
	work bool
	// spans end once the transaction commits: a rolled-back step was
	// never started, and its span is never exported.
	spans []trace.Span
}

// inTx runs f in a transaction and commits it; f's error rolls it back.
func (s *store) inTx(ctx context.Context, f func(*txn) error) error {
	if s.db.Dialect == sqldb.SQLite {
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	t := &txn{tx: tx, ctx: ctx, st: s, now: s.now()}
	if err := f(t); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	for _, sp := range t.spans {
		sp.End()
	}
	if t.work {
		s.onWork()
	}
	return nil
}

// stmt returns the transaction's form of a prepared statement. Statements
// are prepared once per connection and kept: parsing SQL was a third of
// the outbox's CPU time.
func (t *txn) stmt(q string) (*sql.Stmt, error) {
	st, err := t.st.prepare(t.ctx, q)
	if err != nil {
		return nil, err
	}
	return t.tx.StmtContext(t.ctx, st), nil
}

func (t *txn) exec(q string, args ...any) (sql.Result, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(t.ctx, args...)
}

func (t *txn) row(q string, args ...any) rowScanner {
	st, err := t.stmt(q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(t.ctx, args...)
}

func (t *txn) rows(q string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(t.ctx, args...)
}

// rowScanner is a *sql.Row, or the error of preparing it.
type rowScanner interface{ Scan(...any) error }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// prepare returns the prepared form of a query (written with ?).
func (s *store) prepare(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := s.stmts.Load(q); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.db.PrepareContext(ctx, s.db.Rebind(q))
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if prev, loaded := s.stmts.LoadOrStore(q, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// query runs a prepared read outside a transaction.
func (s *store) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.prepare(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// queryRow runs a prepared one-row read outside a transaction.
func (s *store) queryRow(ctx context.Context, q string, args ...any) rowScanner {
	st, err := s.prepare(ctx, q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

// close closes the prepared statements and the database.
func (s *store) close() error {
	s.stmts.Range(func(_, v any) bool {
		v.(*sql.Stmt).Close()
		return true
	})
	return s.db.Close()
}

func (t *txn) nowMs() int64 { return t.now.UnixMilli() }

// tenant returns the tenant's current settings; an unknown tenant (removed
// from the file since) gets empty settings: its escalations are recorded,
// nothing is sent.
func (s *store) tenant(id string) *tenant.Tenant {
	if t, ok := s.tenants.Tenant(id); ok {
		return t
	}
	return &tenant.Tenant{ID: id, AgentScoring: tenant.AgentScoringOn}
}

// EscalationID derives an escalation's id from the alert that opened it,
// so that the same alert posted twice (a retry, another realtime instance)
// lands on the same escalation.
func EscalationID(tenantID, alertID string) string {
	sum := sha256.Sum256([]byte(tenantID + "\x00" + alertID))
	return "esc_" + hex.EncodeToString(sum[:10])
}

// escRow is an escalation as stored.
type escRow struct {
	ID, TenantID, CallID, AgentID, AlertID, CurrentAlert, RuleID string
	State, Score, Episode, Second, Inhibited                     int
	Value, Threshold                                             float64
	OpenedAt, ReceivedAt, ClearedAt, AckAt, ResolvedAt           int64
	Cleared, CallEnded                                           bool
	AckBy, ResolvedBy, Resolution, SilenceID                     string
	Labels                                                       map[string]string
	TraceContext                                                 string // tracing.go
}

const escColumns = `id, tenant_id, call_id, agent_id, alert_id, current_alert, rule_id, state, score, episode, alert_second,
	inhibited, value, threshold, opened_at, received_at, cleared_at, acknowledged_at, resolved_at, cleared, call_ended,
	acknowledged_by, resolved_by, resolution, silence_id, labels, trace_context`

type scanner interface{ Scan(...any) error }

func scanEsc(r scanner) (*escRow, error) {
	var e escRow
	var cleared, ended int
	var labels string
	err := r.Scan(&e.ID, &e.TenantID, &e.CallID, &e.AgentID, &e.AlertID, &e.CurrentAlert, &e.RuleID, &e.State, &e.Score,
		&e.Episode, &e.Second, &e.Inhibited, &e.Value, &e.Threshold, &e.OpenedAt, &e.ReceivedAt, &e.ClearedAt, &e.AckAt,
		&e.ResolvedAt, &cleared, &ended, &e.AckBy, &e.ResolvedBy, &e.Resolution, &e.SilenceID, &labels, &e.TraceContext)
	if err == nil && labels != "" {
		if jerr := json.Unmarshal([]byte(labels), &e.Labels); jerr != nil {
			return nil, fmt.Errorf("escalation %s: labels: %w", e.ID, jerr)
		}
	}
	e.Cleared, e.CallEnded = cleared == 1, ended == 1
	return &e, err
}

func msTime(ms int64) *timestamppb.Timestamp {
	if ms == 0 {
		return nil
	}
	return timestamppb.New(time.UnixMilli(ms))
}

func (e *escRow) proto() *escalationv1.Escalation {
	return &escalationv1.Escalation{
		Id: e.ID, TenantId: e.TenantID, CallId: e.CallID, AgentId: e.AgentID, AlertId: e.AlertID,
		State: escalationv1.EscalationState(e.State), Score: callv1.ScoreKind(e.Score), Value: e.Value,
		OpenedAt: msTime(e.OpenedAt), Cleared: e.Cleared, AcknowledgedBy: e.AckBy, AcknowledgedAt: msTime(e.AckAt),
		ResolvedBy: e.ResolvedBy, ResolvedAt: msTime(e.ResolvedAt), Resolution: e.Resolution,
		RuleId: e.RuleID, Episode: uint32(e.Episode), Threshold: e.Threshold, ClearedAt: msTime(e.ClearedAt),
		InhibitedAlerts: uint32(e.Inhibited), CallEnded: e.CallEnded, SilenceId: e.SilenceID, Labels: e.Labels,
	}
}

// getEsc reads an escalation of a tenant inside a transaction.
func (t *txn) getEsc(tenantID, id string) (*escRow, error) {
	e, err := scanEsc(t.row(`SELECT `+escColumns+` FROM escalations WHERE tenant_id = ? AND id = ?`, tenantID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("escalation %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read escalation: %w", err)
	}
	return e, nil
}

// querier is a transaction or the database.
type querier interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

// get returns an escalation with its steps and alerts.
// checkInput refuses ids that are not ids and free text with control
// characters, the same on REST and gRPC (lib/field); the error wraps
// ErrInvalid.
func checkInput(errs ...error) error {
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Free text limits.
const (
	maxBy         = 200
	maxResolution = 2000
)

func (s *store) get(ctx context.Context, tenantID, id string) (*escalationv1.Escalation, error) {
	if err := checkInput(field.ID("id", id)); err != nil {
		return nil, err
	}
	e, err := scanEsc(s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT `+escColumns+` FROM escalations WHERE tenant_id = ? AND id = ?`), tenantID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("escalation %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get escalation: %w", err)
	}
	out := []*escalationv1.Escalation{e.proto()}
	if err := s.fill(ctx, s.db, out); err != nil {
		return nil, err
	}
	return out[0], nil
}

// fill adds the steps and alert ids of escalations.
func (s *store) fill(ctx context.Context, q querier, es []*escalationv1.Escalation) error {
	if len(es) == 0 {
		return nil
	}
	byID := map[string]*escalationv1.Escalation{}
	ids := make([]any, len(es))
	for i, e := range es {
		byID[e.Id] = e
		ids[i] = e.Id
	}
	in := "(" + strings.TrimSuffix(strings.Repeat("?,", len(ids)), ",") + ")"
	rows, err := q.QueryContext(ctx, s.db.Rebind(`SELECT s.escalation_id, s.idx, s.name, s.action, s.endpoint, s.state, s.due_at,
	s.delivery_id, s.done_at, s.detail, COALESCE(d.attempts, 0), COALESCE(d.last_error, ''), COALESCE(d.next_attempt_at, 0), COALESCE(d.state, 0)
FROM escalation_steps s LEFT JOIN deliveries d ON d.id = s.delivery_id
WHERE s.escalation_id IN `+in+` ORDER BY s.escalation_id, s.idx`), ids...)
	if err != nil {
		return fmt.Errorf("read steps: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			escID                      string
			st                         escalationv1.Step
			state, attempts, dlvState  int
			due, done, nextAttempt     int64
			name, action, ep, did, det string
			lastErr                    string
			idx                        int
		)
		if err := rows.Scan(&escID, &idx, &name, &action, &ep, &state, &due, &did, &done, &det, &attempts, &lastErr, &nextAttempt, &dlvState); err != nil {
			return fmt.Errorf("read steps: %w", err)
		}
		st = escalationv1.Step{Name: name, Action: action, Endpoint: ep, Index: uint32(idx), State: escalationv1.StepState(state),
			DueAt: msTime(due), DeliveryId: did, DoneAt: msTime(done), Detail: det, Attempts: uint32(attempts), LastError: lastErr}
		if dlvState == dlvPending && did != "" {
			st.NextAttemptAt = msTime(nextAttempt)
		}
		byID[escID].Steps = append(byID[escID].Steps, &st)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	rows.Close()
	arows, err := q.QueryContext(ctx, s.db.Rebind(`SELECT escalation_id, alert_id FROM escalation_alerts WHERE escalation_id IN `+in+
		` ORDER BY escalation_id, received_at, alert_id`), ids...)
	if err != nil {
		return fmt.Errorf("read alerts: %w", err)
	}
	defer arows.Close()
	for arows.Next() {
		var escID, alertID string
		if err := arows.Scan(&escID, &alertID); err != nil {
			return err
		}
		byID[escID].AlertIds = append(byID[escID].AlertIds, alertID)
	}
	return arows.Err()
}

type listQuery struct {
	State     escalationv1.EscalationState
	CallID    string
	AgentID   string
	PageSize  int
	PageToken string
}

// pageToken encodes a keyset position (a number and an id).
func pageToken(n int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(n, 10) + "\x00" + id))
}

func parsePageToken(tok string) (int64, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	at, id, ok := strings.Cut(string(b), "\x00")
	n, perr := strconv.ParseInt(at, 10, 64)
	if err != nil || !ok || perr != nil {
		return 0, "", ErrBadPageToken
	}
	return n, id, nil
}

func nonNegative(n int) error {
	if n < 0 {
		return fmt.Errorf("page_size: want a positive number, got %d", n)
	}
	return nil
}

func pageSize(n, def, most int) int {
	if n <= 0 {
		return def
	}
	return min(n, most)
}

func (s *store) list(ctx context.Context, tenantID string, q listQuery) ([]*escalationv1.Escalation, string, error) {
	if err := checkInput(field.OptionalID("call_id", q.CallID), field.OptionalID("agent_id", q.AgentID), nonNegative(q.PageSize)); err != nil {
		return nil, "", err
	}
	size := pageSize(q.PageSize, 50, 500)
	where := []string{"tenant_id = ?"}
	args := []any{tenantID}
	if q.State != escalationv1.EscalationState_ESCALATION_STATE_UNSPECIFIED {
		where = append(where, "state = ?")
		args = append(args, int(q.State))
	}
	if q.CallID != "" {
		where = append(where, "call_id = ?")
		args = append(args, q.CallID)
	}
	if q.AgentID != "" {
		where = append(where, "agent_id = ?")
		args = append(args, q.AgentID)
	}
	if q.PageToken != "" {
		n, id, err := parsePageToken(q.PageToken)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(opened_at < ? OR (opened_at = ? AND id < ?))")
		args = append(args, n, n, id)
	}
	args = append(args, size+1)
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT `+escColumns+` FROM escalations WHERE `+strings.Join(where, " AND ")+
		` ORDER BY opened_at DESC, id DESC LIMIT ?`), args...)
	if err != nil {
		return nil, "", fmt.Errorf("list escalations: %w", err)
	}
	defer rows.Close()
	var out []*escalationv1.Escalation
	next := ""
	for rows.Next() {
		e, err := scanEsc(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list escalations: %w", err)
		}
		if len(out) == size {
			last := out[len(out)-1]
			next = pageToken(last.OpenedAt.AsTime().UnixMilli(), last.Id)
			break
		}
		out = append(out, e.proto())
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	rows.Close()
	if err := s.fill(ctx, s.db, out); err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// acknowledge records who took responsibility: OPEN → ACKNOWLEDGED. Steps
// that skip when acknowledged are skipped, and the change is audited and
// sent as escalation.acknowledged.
func (s *store) acknowledge(ctx context.Context, tenantID, id, by string) (*escalationv1.Escalation, error) {
	if err := checkInput(field.ID("id", id), field.Text("by", by, maxBy)); err != nil {
		return nil, err
	}
	err := s.inTx(ctx, func(t *txn) error {
		e, err := t.getEsc(tenantID, id)
		if err != nil {
			return err
		}
		if e.State != escOpen {
			return fmt.Errorf("escalation is %s: %w", stateName(e.State), ErrBadState)
		}
		if _, err := t.exec(`UPDATE escalations SET state = ?, acknowledged_by = ?, acknowledged_at = ? WHERE id = ?`,
			escAcked, by, t.nowMs(), id); err != nil {
			return fmt.Errorf("acknowledge: %w", err)
		}
		e.State, e.AckBy, e.AckAt = escAcked, by, t.nowMs()
		ref, err := t.audit(auditEntry{TenantID: tenantID, Kind: "escalation.acknowledged", EscalationID: id, CallID: e.CallID, Actor: by})
		if err != nil {
			return err
		}
		if err := t.emitEscalationEvent(e, tenant.EventEscalationAcknowledged, ref, eventExtra{By: by}); err != nil {
			return err
		}
		return t.advance(e)
	})
	if err != nil {
		return nil, err
	}
	return s.get(ctx, tenantID, id)
}

// resolve closes an escalation; every step still waiting is skipped.
func (s *store) resolve(ctx context.Context, tenantID, id, by, resolution string) (*escalationv1.Escalation, error) {
	if err := checkInput(field.ID("id", id), field.Text("by", by, maxBy), field.Text("resolution", resolution, maxResolution)); err != nil {
		return nil, err
	}
	err := s.inTx(ctx, func(t *txn) error {
		e, err := t.getEsc(tenantID, id)
		if err != nil {
			return err
		}
		if e.State == escResolved {
			return fmt.Errorf("escalation is %s: %w", stateName(e.State), ErrBadState)
		}
		if _, err := t.exec(`UPDATE escalations SET state = ?, resolved_by = ?, resolved_at = ?, resolution = ? WHERE id = ?`,
			escResolved, by, t.nowMs(), resolution, id); err != nil {
			return fmt.Errorf("resolve: %w", err)
		}
		e.State, e.ResolvedBy, e.ResolvedAt, e.Resolution = escResolved, by, t.nowMs(), resolution
		ref, err := t.audit(auditEntry{TenantID: tenantID, Kind: "escalation.resolved", EscalationID: id, CallID: e.CallID, Actor: by,
			Detail: map[string]any{"resolution": resolution}})
		if err != nil {
			return err
		}
		if err := t.emitEscalationEvent(e, tenant.EventEscalationResolved, ref, eventExtra{By: by, Resolution: resolution}); err != nil {
			return err
		}
		return t.advance(e)
	})
	if err != nil {
		return nil, err
	}
	return s.get(ctx, tenantID, id)
}

func stateName(st int) string {
	return strings.ToLower(strings.TrimPrefix(escalationv1.EscalationState(st).String(), "ESCALATION_STATE_"))
}
