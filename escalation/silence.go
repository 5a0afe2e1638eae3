package escalation

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/calmline/calmline/lib/field"
	"github.com/calmline/calmline/lib/service"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// Bounds of silences.
const (
	// MaxSilences bounds a tenant's silences not yet expired; creating
	// one more is refused (the overflow policy), so that matching every
	// alert against them stays cheap.
	MaxSilences = 1000
	// MaxSilenceSpan bounds a silence's time window.
	MaxSilenceSpan = 30 * 24 * time.Hour
	// maxSilenceComment bounds a silence's comment, in bytes.
	maxSilenceComment = 1024
)

// silence is a silence as stored. Its rules — what it matches, where it
// is in its window — are pure methods, tested without a database.
type silence struct {
	ID, TenantID                  string
	Match                         map[string]string
	AgentID, RuleID               string
	StartsAt, EndsAt, CreatedAt   int64 // unix milliseconds
	CreatedBy, Comment, ExpiredBy string
}

// matches reports whether the silence mutes an alert: every label of Match
// on the call with the same value, and the agent and rule when set.
func (s *silence) matches(a *escalationv1.Alert) bool {
	if s.AgentID != "" && s.AgentID != a.GetAgentId() {
		return false
	}
	if s.RuleID != "" && s.RuleID != a.GetEvent().GetRuleId() {
		return false
	}
	labels := a.GetLabels()
	for k, v := range s.Match {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// state says where the silence is in its window at now (unix ms).
func (s *silence) state(now int64) escalationv1.SilenceState {
	switch {
	case now < s.StartsAt:
		return escalationv1.SilenceState_SILENCE_STATE_PENDING
	case now < s.EndsAt:
		return escalationv1.SilenceState_SILENCE_STATE_ACTIVE
	}
	return escalationv1.SilenceState_SILENCE_STATE_EXPIRED
}

func (s *silence) proto(now int64) *escalationv1.Silence {
	return &escalationv1.Silence{
		Id: s.ID, TenantId: s.TenantID, MatchLabels: s.Match, AgentId: s.AgentID, RuleId: s.RuleID,
		StartsAt: msTime(s.StartsAt), EndsAt: msTime(s.EndsAt), CreatedBy: s.CreatedBy, Comment: s.Comment,
		CreatedAt: msTime(s.CreatedAt), State: s.state(now), ExpiredBy: s.ExpiredBy,
	}
}

// newSilence checks a request and builds the silence it asks for, naming
// the first problem.
func newSilence(tenantID string, req *escalationv1.CreateSilenceRequest, now time.Time) (*silence, error) {
	bad := func(format string, args ...any) (*silence, error) {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	if err := field.Labels("match_labels", req.GetMatchLabels()); err != nil {
		return bad("%v", err)
	}
	if err := field.OptionalID("agent_id", req.GetAgentId()); err != nil {
		return bad("%v", err)
	}
	if err := field.OptionalID("rule_id", req.GetRuleId()); err != nil {
		return bad("%v", err)
	}
	if len(req.GetMatchLabels()) == 0 && req.GetAgentId() == "" && req.GetRuleId() == "" {
		return bad("a silence needs match_labels, agent_id or rule_id: one that matches every call would mute the tenant")
	}
	if strings.TrimSpace(req.GetCreatedBy()) == "" {
		return bad("created_by: say who creates the silence")
	}
	if err := field.Text("created_by", req.GetCreatedBy(), 256); err != nil {
		return bad("%v", err)
	}
	if err := field.Text("comment", req.GetComment(), maxSilenceComment); err != nil {
		return bad("%v", err)
	}
	starts := now
	if req.GetStartsAt() != nil {
		if err := req.GetStartsAt().CheckValid(); err != nil {
			return bad("starts_at: %v", err)
		}
		starts = req.GetStartsAt().AsTime()
	}
	if req.GetEndsAt() == nil {
		return bad("ends_at is required")
	}
	if err := req.GetEndsAt().CheckValid(); err != nil {
		return bad("ends_at: %v", err)
	}
	ends := req.GetEndsAt().AsTime()
	switch {
	case !ends.After(starts):
		return bad("ends_at %s is not after starts_at %s", ends.UTC().Format(time.RFC3339), starts.UTC().Format(time.RFC3339))
	case !ends.After(now):
		return bad("ends_at %s has passed", ends.UTC().Format(time.RFC3339))
	case ends.Sub(starts) > MaxSilenceSpan:
		return bad("the silence spans %v, at most %v", ends.Sub(starts).Round(time.Minute), MaxSilenceSpan)
	}
	var b [8]byte
	rand.Read(b[:])
	return &silence{
		ID: "sil_" + hex.EncodeToString(b[:]), TenantID: tenantID, Match: req.GetMatchLabels(),
		AgentID: req.GetAgentId(), RuleID: req.GetRuleId(),
		StartsAt: starts.UnixMilli(), EndsAt: ends.UnixMilli(), CreatedAt: now.UnixMilli(),
		CreatedBy: req.GetCreatedBy(), Comment: req.GetComment(),
	}, nil
}

const silenceColumns = `id, tenant_id, match_labels, agent_id, rule_id, starts_at, ends_at, created_by, comment, created_at, expired_by`

func scanSilence(r scanner) (*silence, error) {
	var s silence
	var match string
	if err := r.Scan(&s.ID, &s.TenantID, &match, &s.AgentID, &s.RuleID, &s.StartsAt, &s.EndsAt, &s.CreatedBy, &s.Comment,
		&s.CreatedAt, &s.ExpiredBy); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(match), &s.Match); err != nil {
		return nil, fmt.Errorf("silence %s: match_labels: %w", s.ID, err)
	}
	return &s, nil
}

// createSilence stores a new silence and audits it.
func (s *store) createSilence(ctx context.Context, tenantID string, req *escalationv1.CreateSilenceRequest) (*escalationv1.Silence, error) {
	var out *escalationv1.Silence
	err := s.inTx(ctx, func(t *txn) error {
		sil, err := newSilence(tenantID, req, t.now)
		if err != nil {
			return err
		}
		var n int
		if err := t.row(`SELECT COUNT(*) FROM silences WHERE tenant_id = ? AND ends_at > ?`, tenantID, t.nowMs()).Scan(&n); err != nil {
			return fmt.Errorf("count silences: %w", err)
		}
		if n >= MaxSilences {
			return fmt.Errorf("%w: the tenant has %d silences not yet expired, at most %d; expire some first", ErrInvalid, n, MaxSilences)
		}
		match, _ := json.Marshal(sil.Match)
		if sil.Match == nil {
			match = []byte("{}")
		}
		if _, err := t.exec(`INSERT INTO silences (`+silenceColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			sil.ID, sil.TenantID, string(match), sil.AgentID, sil.RuleID, sil.StartsAt, sil.EndsAt, sil.CreatedBy, sil.Comment,
			sil.CreatedAt, ""); err != nil {
			return fmt.Errorf("create silence: %w", err)
		}
		if _, err := t.audit(auditEntry{TenantID: tenantID, Kind: "silence.created", Actor: sil.CreatedBy,
			Detail: map[string]any{"silence_id": sil.ID, "match_labels": sil.Match, "agent_id": sil.AgentID, "rule_id": sil.RuleID,
				"starts_at": time.UnixMilli(sil.StartsAt).UTC().Format(time.RFC3339Nano),
				"ends_at":   time.UnixMilli(sil.EndsAt).UTC().Format(time.RFC3339Nano), "comment": sil.Comment}}); err != nil {
			return err
		}
		out = sil.proto(t.nowMs())
		return nil
	})
	return out, err
}

// listSilences lists a tenant's silences, newest first (at most 1000).
func (s *store) listSilences(ctx context.Context, tenantID string, state escalationv1.SilenceState) ([]*escalationv1.Silence, error) {
	now := s.now().UnixMilli()
	where, args := "tenant_id = ?", []any{tenantID}
	switch state {
	case escalationv1.SilenceState_SILENCE_STATE_PENDING:
		where, args = where+" AND starts_at > ?", append(args, now)
	case escalationv1.SilenceState_SILENCE_STATE_ACTIVE:
		where, args = where+" AND starts_at <= ? AND ends_at > ?", append(args, now, now)
	case escalationv1.SilenceState_SILENCE_STATE_EXPIRED:
		where, args = where+" AND ends_at <= ?", append(args, now)
	}
	rows, err := s.query(ctx, `SELECT `+silenceColumns+` FROM silences WHERE `+where+` ORDER BY created_at DESC, id DESC LIMIT 1000`, args...)
	if err != nil {
		return nil, fmt.Errorf("list silences: %w", err)
	}
	defer rows.Close()
	out := []*escalationv1.Silence{}
	for rows.Next() {
		sil, err := scanSilence(rows)
		if err != nil {
			return nil, fmt.Errorf("list silences: %w", err)
		}
		out = append(out, sil.proto(now))
	}
	return out, rows.Err()
}

// expireSilence ends a silence now and audits it.
func (s *store) expireSilence(ctx context.Context, tenantID, id, by string) (*escalationv1.Silence, error) {
	if strings.TrimSpace(by) == "" {
		return nil, fmt.Errorf("%w: by: say who expires the silence", ErrInvalid)
	}
	if err := field.Text("by", by, 256); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var out *escalationv1.Silence
	err := s.inTx(ctx, func(t *txn) error {
		sil, err := scanSilence(t.row(`SELECT `+silenceColumns+` FROM silences WHERE tenant_id = ? AND id = ?`, tenantID, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("silence %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("read silence: %w", err)
		}
		now := t.nowMs()
		if sil.EndsAt <= now {
			return fmt.Errorf("silence %q expired at %s: %w", id, time.UnixMilli(sil.EndsAt).UTC().Format(time.RFC3339), ErrBadState)
		}
		sil.EndsAt, sil.ExpiredBy = now, by
		if sil.StartsAt > now {
			sil.StartsAt = now // a pending silence ends before it began
		}
		if _, err := t.exec(`UPDATE silences SET starts_at = ?, ends_at = ?, expired_by = ? WHERE tenant_id = ? AND id = ?`,
			sil.StartsAt, sil.EndsAt, by, tenantID, id); err != nil {
			return fmt.Errorf("expire silence: %w", err)
		}
		if _, err := t.audit(auditEntry{TenantID: tenantID, Kind: "silence.expired", Actor: by,
			Detail: map[string]any{"silence_id": id}}); err != nil {
			return err
		}
		out = sil.proto(now)
		return nil
	})
	return out, err
}

// activeSilence returns the oldest silence in force that mutes an alert,
// nil when none does.
func (t *txn) activeSilence(a *escalationv1.Alert) (*silence, error) {
	now := t.nowMs()
	rows, err := t.rows(`SELECT `+silenceColumns+` FROM silences WHERE tenant_id = ? AND ends_at > ? AND starts_at <= ? ORDER BY created_at, id`,
		a.TenantId, now, now)
	if err != nil {
		return nil, fmt.Errorf("read silences: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		sil, err := scanSilence(rows)
		if err != nil {
			return nil, fmt.Errorf("read silences: %w", err)
		}
		if sil.matches(a) {
			return sil, nil
		}
	}
	return nil, rows.Err()
}

// openSilenced records the escalation an alert would have opened, resolved
// at once by the silence that mutes it: visible in the API and the audit
// trail, with no ladder — no webhook, no transfer.
func (t *txn) openSilenced(a *escalationv1.Alert, sil *silence) (string, error) {
	ev := a.Event
	id := EscalationID(a.TenantId, ev.AlertId)
	firing := ev.State == callv1.AlertState_ALERT_STATE_FIRING
	at := t.now
	if ev.At != nil {
		at = ev.At.AsTime()
	}
	clearedAt := int64(0)
	if !firing {
		clearedAt = t.nowMs()
	}
	_, err := t.exec(`INSERT INTO escalations (id, tenant_id, call_id, agent_id, alert_id, current_alert, rule_id, state, score, episode,
	alert_second, value, threshold, opened_at, received_at, cleared, cleared_at, resolved_by, resolved_at, resolution, silence_id, labels)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id, a.TenantId, a.CallId, a.AgentId, ev.AlertId, ev.AlertId, ev.RuleId, escResolved, int(ev.Score), int(ev.Episode),
		int(ev.Second), ev.Value, ev.Threshold, at.UnixMilli(), t.nowMs(), boolInt(!firing), clearedAt,
		ServiceActor, t.nowMs(), "silenced by "+sil.ID, sil.ID, labelsJSON(a.Labels))
	if err != nil {
		return "", fmt.Errorf("record silenced escalation for %s: %w", ev.AlertId, err)
	}
	if err := t.insertAlert(a, id, firing, false); err != nil {
		return "", err
	}
	_, err = t.audit(auditEntry{TenantID: a.TenantId, Kind: "escalation.silenced", EscalationID: id, CallID: a.CallId,
		Detail: map[string]any{"alert_id": ev.AlertId, "agent_id": a.AgentId, "rule_id": ev.RuleId, "episode": ev.Episode,
			"score": scoreName(ev.Score), "value": ev.Value, "threshold": ev.Threshold, "silence_id": sil.ID}})
	return id, err
}

// labelsJSON renders a call's labels for the escalations table (empty for
// none). Labels were checked by the gateway (identifiers, at most 32).
func labelsJSON(labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	b, _ := json.Marshal(labels)
	return string(b)
}

// CreateSilence implements SilenceService.CreateSilence.
func (s *Server) CreateSilence(ctx context.Context, req *escalationv1.CreateSilenceRequest) (*escalationv1.CreateSilenceResponse, error) {
	sil, err := s.store.createSilence(ctx, tenantOf(ctx).ID, req)
	if err != nil {
		return nil, grpcError(err)
	}
	return &escalationv1.CreateSilenceResponse{Silence: sil}, nil
}

// ListSilences implements SilenceService.ListSilences.
func (s *Server) ListSilences(ctx context.Context, req *escalationv1.ListSilencesRequest) (*escalationv1.ListSilencesResponse, error) {
	ss, err := s.store.listSilences(ctx, tenantOf(ctx).ID, req.GetState())
	if err != nil {
		return nil, grpcError(err)
	}
	return &escalationv1.ListSilencesResponse{Silences: ss}, nil
}

// ExpireSilence implements SilenceService.ExpireSilence.
func (s *Server) ExpireSilence(ctx context.Context, req *escalationv1.ExpireSilenceRequest) (*escalationv1.ExpireSilenceResponse, error) {
	sil, err := s.store.expireSilence(ctx, tenantOf(ctx).ID, req.GetId(), req.GetBy())
	if err != nil {
		return nil, grpcError(err)
	}
	return &escalationv1.ExpireSilenceResponse{Silence: sil}, nil
}

func (s *Server) httpCreateSilence(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	if err != nil {
		return
	}
	var req escalationv1.CreateSilenceRequest
	if err := protojson.Unmarshal(body, &req); err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request",
			`body: want JSON {"match_labels": {...}, "agent_id", "rule_id", "starts_at", "ends_at", "created_by", "comment"}: `+err.Error())
		return
	}
	sil, err := s.store.createSilence(r.Context(), tenantOf(r.Context()).ID, &req)
	if err != nil {
		httpError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusCreated, sil)
}

func (s *Server) httpListSilences(w http.ResponseWriter, r *http.Request) {
	var state escalationv1.SilenceState
	if st := r.URL.Query().Get("state"); st != "" {
		v, ok := escalationv1.SilenceState_value["SILENCE_STATE_"+strings.ToUpper(st)]
		if !ok || v == 0 {
			service.WriteError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("state: want pending, active or expired, got %q", st))
			return
		}
		state = escalationv1.SilenceState(v)
	}
	ss, err := s.store.listSilences(r.Context(), tenantOf(r.Context()).ID, state)
	if err != nil {
		httpError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, &escalationv1.ListSilencesResponse{Silences: ss})
}

func (s *Server) httpExpireSilence(w http.ResponseWriter, r *http.Request) {
	b, ok := readAction(w, r)
	if !ok {
		return
	}
	sil, err := s.store.expireSilence(r.Context(), tenantOf(r.Context()).ID, r.PathValue("id"), b.By)
	if err != nil {
		httpError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, sil)
}

// readBody reads a request body of at most 64 KiB, answering 400 itself
// when it cannot.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", "body: "+err.Error())
		return nil, err
	}
	return b, nil
}
