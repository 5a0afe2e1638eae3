package escalation

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/lib/sqldb"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// Errors the store returns, classified at the API boundary.
var (
	ErrNotFound     = errors.New("escalation not found")
	ErrBadState     = errors.New("escalation is not in a state that allows this")
	ErrBadPageToken = errors.New("invalid page token")
	ErrInvalid      = errors.New("invalid request")
)

var migrations = []sqldb.Migration{
	{Version: 1, SQL: `
CREATE TABLE escalations (
	id              TEXT NOT NULL PRIMARY KEY,
	tenant_id       TEXT NOT NULL,
	call_id         TEXT NOT NULL,
	agent_id        TEXT NOT NULL DEFAULT '',
	alert_id        TEXT NOT NULL,
	state           INTEGER NOT NULL,
	score           INTEGER NOT NULL,
	value           DOUBLE PRECISION NOT NULL,
	opened_at       BIGINT NOT NULL, -- unix milliseconds
	cleared         INTEGER NOT NULL DEFAULT 0,
	acknowledged_by TEXT NOT NULL DEFAULT '',
	acknowledged_at BIGINT NOT NULL DEFAULT 0,
	resolved_by     TEXT NOT NULL DEFAULT '',
	resolved_at     BIGINT NOT NULL DEFAULT 0,
	resolution      TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX escalations_by_alert ON escalations (tenant_id, alert_id);
CREATE INDEX escalations_by_open ON escalations (tenant_id, opened_at, id);
CREATE TABLE care_calls (
	tenant_id        TEXT NOT NULL,
	call_id          TEXT NOT NULL,
	agent_id         TEXT NOT NULL,
	started_at       BIGINT NOT NULL,
	ended_at         BIGINT NOT NULL,
	peak             DOUBLE PRECISION NOT NULL,
	exposure_seconds INTEGER NOT NULL,
	escalated        INTEGER NOT NULL,
	PRIMARY KEY (tenant_id, call_id)
);
CREATE INDEX care_calls_by_agent ON care_calls (tenant_id, agent_id, ended_at);
`},
}

type store struct{ db *sqldb.DB }

func openStore(ctx context.Context, dsn string) (*store, error) {
	db, err := sqldb.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	if err := sqldb.Migrate(ctx, db, "escalation", migrations); err != nil {
		db.Close()
		return nil, err
	}
	return &store{db: db}, nil
}

// EscalationID derives an escalation's id from its alert, so that the same
// alert posted twice (a retry, another realtime instance) lands on the same
// escalation.
func EscalationID(tenantID, alertID string) string {
	sum := sha256.Sum256([]byte(tenantID + "\x00" + alertID))
	return "esc_" + hex.EncodeToString(sum[:10])
}

// putAlert records an alert event durably and returns its escalation's id.
// A firing event opens the escalation (once); a cleared event marks it
// cleared, opening it already cleared if the firing event never arrived.
func (s *store) putAlert(ctx context.Context, a *escalationv1.Alert) (string, error) {
	ev := a.GetEvent()
	if a.TenantId == "" || a.CallId == "" || ev.GetAlertId() == "" {
		return "", fmt.Errorf("%w: alert: tenant_id, call_id and event.alert_id are required", ErrInvalid)
	}
	id := EscalationID(a.TenantId, ev.AlertId)
	at := time.Now()
	if ev.At != nil {
		at = ev.At.AsTime()
	}
	cleared := 0
	if ev.State == callv1.AlertState_ALERT_STATE_CLEARED {
		cleared = 1
	}
	_, err := s.db.ExecContext(ctx, s.db.Rebind(`
INSERT INTO escalations (id, tenant_id, call_id, agent_id, alert_id, state, score, value, opened_at, cleared)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET cleared = CASE WHEN excluded.cleared > escalations.cleared THEN excluded.cleared ELSE escalations.cleared END`),
		id, a.TenantId, a.CallId, a.AgentId, ev.AlertId, int(escalationv1.EscalationState_ESCALATION_STATE_OPEN),
		int(ev.Score), ev.Value, at.UnixMilli(), cleared)
	if err != nil {
		return "", fmt.Errorf("store alert %s: %w", ev.AlertId, err)
	}
	return id, nil
}

const escColumns = `id, tenant_id, call_id, agent_id, alert_id, state, score, value, opened_at, cleared,
	acknowledged_by, acknowledged_at, resolved_by, resolved_at, resolution`

func scanEscalation(row interface{ Scan(...any) error }) (*escalationv1.Escalation, error) {
	var (
		e                      escalationv1.Escalation
		state, score, cleared  int
		opened, ackAt, resolAt int64
	)
	if err := row.Scan(&e.Id, &e.TenantId, &e.CallId, &e.AgentId, &e.AlertId, &state, &score, &e.Value, &opened, &cleared,
		&e.AcknowledgedBy, &ackAt, &e.ResolvedBy, &resolAt, &e.Resolution); err != nil {
		return nil, err
	}
	e.State = escalationv1.EscalationState(state)
	e.Score = callv1.ScoreKind(score)
	e.OpenedAt = timestamppb.New(time.UnixMilli(opened))
	e.Cleared = cleared == 1
	if ackAt != 0 {
		e.AcknowledgedAt = timestamppb.New(time.UnixMilli(ackAt))
	}
	if resolAt != 0 {
		e.ResolvedAt = timestamppb.New(time.UnixMilli(resolAt))
	}
	return &e, nil
}

func (s *store) get(ctx context.Context, tenantID, id string) (*escalationv1.Escalation, error) {
	e, err := scanEscalation(s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT `+escColumns+` FROM escalations WHERE tenant_id = ? AND id = ?`), tenantID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get escalation: %w", err)
	}
	return e, nil
}

type listQuery struct {
	State     escalationv1.EscalationState
	CallID    string
	AgentID   string
	PageSize  int
	PageToken string
}

func (s *store) list(ctx context.Context, tenantID string, q listQuery) ([]*escalationv1.Escalation, string, error) {
	size := q.PageSize
	if size <= 0 {
		size = 50
	}
	size = min(size, 500)
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
		b, err := base64.RawURLEncoding.DecodeString(q.PageToken)
		at, id, ok := strings.Cut(string(b), "\x00")
		n, perr := strconv.ParseInt(at, 10, 64)
		if err != nil || !ok || perr != nil {
			return nil, "", ErrBadPageToken
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
		e, err := scanEscalation(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list escalations: %w", err)
		}
		if len(out) == size {
			last := out[len(out)-1]
			next = base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(last.OpenedAt.AsTime().UnixMilli(), 10) + "\x00" + last.Id))
			break
		}
		out = append(out, e)
	}
	return out, next, rows.Err()
}

// transition moves an escalation from one of the allowed states to another,
// recording who did it.
func (s *store) acknowledge(ctx context.Context, tenantID, id, by string, at time.Time) (*escalationv1.Escalation, error) {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE escalations SET state = ?, acknowledged_by = ?, acknowledged_at = ?
WHERE tenant_id = ? AND id = ? AND state = ?`),
		int(escalationv1.EscalationState_ESCALATION_STATE_ACKNOWLEDGED), by, at.UnixMilli(), tenantID, id,
		int(escalationv1.EscalationState_ESCALATION_STATE_OPEN))
	return s.afterTransition(ctx, tenantID, id, res, err)
}

func (s *store) resolve(ctx context.Context, tenantID, id, by, resolution string, at time.Time) (*escalationv1.Escalation, error) {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE escalations SET state = ?, resolved_by = ?, resolved_at = ?, resolution = ?
WHERE tenant_id = ? AND id = ? AND state <> ?`),
		int(escalationv1.EscalationState_ESCALATION_STATE_RESOLVED), by, at.UnixMilli(), resolution, tenantID, id,
		int(escalationv1.EscalationState_ESCALATION_STATE_RESOLVED))
	return s.afterTransition(ctx, tenantID, id, res, err)
}

func (s *store) afterTransition(ctx context.Context, tenantID, id string, res sql.Result, err error) (*escalationv1.Escalation, error) {
	if err != nil {
		return nil, fmt.Errorf("update escalation: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return nil, fmt.Errorf("update escalation: %w", err)
	}
	e, err := s.get(ctx, tenantID, id)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return e, fmt.Errorf("%w: it is %s", ErrBadState, strings.TrimPrefix(e.State.String(), "ESCALATION_STATE_"))
	}
	return e, nil
}

// recordCall adds a finished call to its agent's exposure record, once.
func (s *store) recordCall(ctx context.Context, r *escalationv1.RecordCallRequest) error {
	if r.TenantId == "" || r.CallId == "" {
		return fmt.Errorf("%w: record call: tenant_id and call_id are required", ErrInvalid)
	}
	esc := 0
	if r.Escalated {
		esc = 1
	}
	_, err := s.db.ExecContext(ctx, s.db.Rebind(`
INSERT INTO care_calls (tenant_id, call_id, agent_id, started_at, ended_at, peak, exposure_seconds, escalated)
VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, call_id) DO NOTHING`),
		r.TenantId, r.CallId, r.AgentId, r.GetStartedAt().AsTime().UnixMilli(), r.GetEndedAt().AsTime().UnixMilli(),
		r.CallerPressurePeak, r.ExposureSeconds, esc)
	if err != nil {
		return fmt.Errorf("record call: %w", err)
	}
	return nil
}
