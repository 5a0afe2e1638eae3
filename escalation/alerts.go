package escalation

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// checkAlert names what is missing from an alert.
func checkAlert(a *escalationv1.Alert) error {
	ev := a.GetEvent()
	switch {
	case a.GetTenantId() == "" || a.GetCallId() == "" || ev.GetAlertId() == "":
		return fmt.Errorf("%w: alert: tenant_id, call_id and event.alert_id are required", ErrInvalid)
	case ev.State != callv1.AlertState_ALERT_STATE_FIRING && ev.State != callv1.AlertState_ALERT_STATE_CLEARED:
		return fmt.Errorf("%w: alert %s: state must be firing or cleared", ErrInvalid, ev.AlertId)
	}
	return nil
}

// accept records alert events durably, in one transaction, and returns the
// escalation each belongs to ("" for an alert the tenant's privacy mode
// keeps out of escalations). Repeats of an event change nothing: the
// alert table is the de-duplication stage, before anything is sent.
func (s *store) accept(ctx context.Context, alerts []*escalationv1.Alert) ([]string, error) {
	for _, a := range alerts {
		if err := checkAlert(a); err != nil {
			return nil, err
		}
	}
	ids := make([]string, len(alerts))
	err := s.inTx(ctx, func(t *txn) error {
		if s.maxBacklog > 0 {
			checked := map[string]bool{}
			for _, a := range alerts {
				if checked[a.TenantId] {
					continue
				}
				checked[a.TenantId] = true
				if err := t.checkBacklog(a.TenantId); err != nil {
					return err
				}
			}
		}
		for i, a := range alerts {
			id, err := t.acceptAlert(a)
			if err != nil {
				return err
			}
			ids[i] = id
		}
		return nil
	})
	return ids, err
}

func (t *txn) acceptAlert(a *escalationv1.Alert) (string, error) {
	ev := a.Event
	firing := ev.State == callv1.AlertState_ALERT_STATE_FIRING
	var (
		escID            string
		fired, clearedIn int
	)
	err := t.row(`SELECT escalation_id, fired, cleared FROM escalation_alerts WHERE tenant_id = ? AND alert_id = ?`,
		a.TenantId, ev.AlertId).Scan(&escID, &fired, &clearedIn)
	switch {
	case err == nil:
		return t.knownEpisode(a, escID, fired == 1, clearedIn == 1)
	case !errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("read alert: %w", err)
	}
	ten := t.st.tenant(a.TenantId)
	if ev.Score == callv1.ScoreKind_SCORE_KIND_AGENT_STRESS && ten.AgentScoring != tenant.AgentScoringOn {
		// The tenant's privacy mode keeps agent-side scores out of
		// escalations: record that the alert came, and nothing else.
		if err := t.insertAlert(a, "", firing, false); err != nil {
			return "", err
		}
		_, err := t.audit(auditEntry{TenantID: a.TenantId, Kind: "alert.suppressed", CallID: a.CallId,
			Detail: map[string]any{"alert_id": ev.AlertId, "reason": "agent_scoring is " + ten.AgentScoring + ": escalations rest on caller_pressure alone"}})
		return "", err
	}
	// Inhibition: while the call's transfer is in progress (or done), new
	// episodes are recorded against that escalation and start nothing.
	var inhibitor string
	// (The unary + keeps SQLite from reading every started step through
	// the state index instead of the call's few steps.)
	err = t.row(`SELECT escalation_id FROM escalation_steps
WHERE escalation_id IN (SELECT id FROM escalations WHERE tenant_id = ? AND call_id = ?) AND action = ? AND +state IN (?, ?) LIMIT 1`,
		a.TenantId, a.CallId, tenant.ActionTransfer, stepDelivering, stepSucceeded).Scan(&inhibitor)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("check inhibition: %w", err)
	}
	if inhibitor != "" {
		if err := t.insertAlert(a, inhibitor, firing, true); err != nil {
			return "", err
		}
		if _, err := t.exec(`UPDATE escalations SET inhibited = inhibited + 1 WHERE id = ?`, inhibitor); err != nil {
			return "", fmt.Errorf("inhibit: %w", err)
		}
		_, err := t.audit(auditEntry{TenantID: a.TenantId, Kind: "alert.inhibited", EscalationID: inhibitor, CallID: a.CallId,
			Detail: map[string]any{"alert_id": ev.AlertId, "reason": "the call's transfer is in progress or done"}})
		return inhibitor, err
	}
	// At most one open escalation per call: a new episode while one is
	// open joins it.
	var open string
	err = t.row(`SELECT id FROM escalations WHERE tenant_id = ? AND call_id = ? AND state <> ?`, a.TenantId, a.CallId, escResolved).Scan(&open)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("find open escalation: %w", err)
	}
	if open != "" {
		if err := t.insertAlert(a, open, firing, false); err != nil {
			return "", err
		}
		clearedAt := int64(0)
		if !firing {
			clearedAt = t.nowMs()
		}
		if _, err := t.exec(`UPDATE escalations SET current_alert = ?, cleared = ?, cleared_at = ? WHERE id = ?`,
			ev.AlertId, boolInt(!firing), clearedAt, open); err != nil {
			return "", fmt.Errorf("join escalation: %w", err)
		}
		_, err := t.audit(auditEntry{TenantID: a.TenantId, Kind: "alert.joined", EscalationID: open, CallID: a.CallId,
			Detail: map[string]any{"alert_id": ev.AlertId, "episode": ev.Episode, "state": alertState(firing), "value": ev.Value}})
		return open, err
	}
	// Silences mute new escalations: the episode is recorded, resolved
	// at once, and nothing is sent. (An escalation already open runs on:
	// resolve it to stop its ladder.)
	sil, err := t.activeSilence(a)
	if err != nil {
		return "", err
	}
	if sil != nil {
		return t.openSilenced(a, sil)
	}
	return t.open(a, ten)
}

// knownEpisode handles an event of an episode already recorded: a repeat
// changes nothing; the clearing of a firing episode marks its escalation
// cleared (when it is the escalation's latest episode).
func (t *txn) knownEpisode(a *escalationv1.Alert, escID string, fired, cleared bool) (string, error) {
	firing := a.Event.State == callv1.AlertState_ALERT_STATE_FIRING
	if (firing && fired) || (!firing && cleared) {
		return escID, nil // a repeat: de-duplicated
	}
	col := "fired"
	if !firing {
		col = "cleared"
	}
	if _, err := t.exec(`UPDATE escalation_alerts SET `+col+` = 1 WHERE tenant_id = ? AND alert_id = ?`, a.TenantId, a.Event.AlertId); err != nil {
		return "", fmt.Errorf("update alert: %w", err)
	}
	if escID == "" || firing {
		// A firing event arriving after its own clearing (from another
		// realtime instance) changes nothing more.
		return escID, nil
	}
	res, err := t.exec(`UPDATE escalations SET cleared = 1, cleared_at = ? WHERE id = ? AND current_alert = ? AND cleared = 0`,
		t.nowMs(), escID, a.Event.AlertId)
	if err != nil {
		return "", fmt.Errorf("clear escalation: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		if _, err := t.audit(auditEntry{TenantID: a.TenantId, Kind: "alert.cleared", EscalationID: escID, CallID: a.CallId,
			Detail: map[string]any{"alert_id": a.Event.AlertId, "value": a.Event.Value}}); err != nil {
			return "", err
		}
	}
	return escID, nil
}

func (t *txn) insertAlert(a *escalationv1.Alert, escID string, firing, inhibited bool) error {
	_, err := t.exec(`INSERT INTO escalation_alerts (tenant_id, alert_id, escalation_id, fired, cleared, inhibited, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?)`, a.TenantId, a.Event.AlertId, escID, boolInt(firing), boolInt(!firing), boolInt(inhibited), t.nowMs())
	if err != nil {
		return fmt.Errorf("record alert %s: %w", a.Event.AlertId, err)
	}
	return nil
}

// open opens an escalation for a new episode and starts the tenant's
// ladder: steps due now start in this transaction.
func (t *txn) open(a *escalationv1.Alert, ten *tenant.Tenant) (string, error) {
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
	alert_second, value, threshold, opened_at, received_at, cleared, cleared_at, labels, trace_context)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id, a.TenantId, a.CallId, a.AgentId, ev.AlertId, ev.AlertId, ev.RuleId, escOpen, int(ev.Score), int(ev.Episode),
		int(ev.Second), ev.Value, ev.Threshold, at.UnixMilli(), t.nowMs(), boolInt(!firing), clearedAt, labelsJSON(a.Labels),
		t.st.trace.inject(t.ctx))
	if err != nil {
		return "", fmt.Errorf("open escalation for %s: %w", ev.AlertId, err)
	}
	if err := t.insertAlert(a, id, firing, false); err != nil {
		return "", err
	}
	if _, err := t.audit(auditEntry{TenantID: a.TenantId, Kind: "escalation.opened", EscalationID: id, CallID: a.CallId,
		Detail: map[string]any{"alert_id": ev.AlertId, "agent_id": a.AgentId, "rule_id": ev.RuleId, "episode": ev.Episode,
			"score": scoreName(ev.Score), "value": ev.Value, "threshold": ev.Threshold, "state": alertState(firing),
			"ladder_steps": len(ten.Escalation.Ladder)}}); err != nil {
		return "", err
	}
	for i, st := range ten.Escalation.Ladder {
		if _, err := t.exec(`INSERT INTO escalation_steps (escalation_id, idx, tenant_id, name, action, endpoint, skip_if, due_at, state)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, id, i, a.TenantId, st.Name, st.Action, st.Endpoint, joinList(st.SkipIf),
			t.now.Add(st.After).UnixMilli(), stepPending); err != nil {
			return "", fmt.Errorf("ladder step %s: %w", st.Name, err)
		}
	}
	e, err := t.getEsc(a.TenantId, id)
	if err != nil {
		return "", err
	}
	return id, t.advance(e)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func alertState(firing bool) string {
	if firing {
		return "firing"
	}
	return "cleared"
}

func scoreName(k callv1.ScoreKind) string {
	switch k {
	case callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE:
		return tenant.ScoreCallerPressure
	case callv1.ScoreKind_SCORE_KIND_AGENT_STRESS:
		return tenant.ScoreAgentStress
	}
	return "unknown"
}
