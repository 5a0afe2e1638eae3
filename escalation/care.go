package escalation

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"github.com/calmline/calmline/lib/tenant"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// recordCall adds a finished call to its agent's exposure record, once;
// marks the call's escalations as ended (their steps that act on the call
// are skipped); and applies the tenant's care rules to the agent.
func (s *store) recordCall(ctx context.Context, r *escalationv1.RecordCallRequest) error {
	if r.TenantId == "" || r.CallId == "" {
		return fmt.Errorf("%w: record call: tenant_id and call_id are required", ErrInvalid)
	}
	ten := s.tenant(r.TenantId)
	return s.inTx(ctx, func(t *txn) error {
		ended := t.now
		if r.EndedAt != nil {
			ended = r.EndedAt.AsTime()
		}
		started := ended
		if r.StartedAt != nil {
			started = r.StartedAt.AsTime()
		}
		var escalated int
		if err := t.row(`SELECT COUNT(*) FROM escalations WHERE tenant_id = ? AND call_id = ?`, r.TenantId, r.CallId).Scan(&escalated); err != nil {
			return fmt.Errorf("record call: %w", err)
		}
		esc := r.Escalated || escalated > 0
		high := esc || r.CallerPressurePeak >= ten.Escalation.Care.HighPressurePeak
		res, err := t.exec(`INSERT INTO care_calls (tenant_id, call_id, agent_id, started_at, ended_at, peak, exposure_seconds, escalated, high_pressure)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, call_id) DO NOTHING`,
			r.TenantId, r.CallId, r.AgentId, started.UnixMilli(), ended.UnixMilli(), r.CallerPressurePeak, r.ExposureSeconds,
			boolInt(esc), boolInt(high))
		if err != nil {
			return fmt.Errorf("record call: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // recorded before: nothing more to do
		}
		if escalated > 0 {
			if err := t.callEnded(r.TenantId, r.CallId); err != nil {
				return err
			}
		}
		if r.AgentId == "" {
			return nil
		}
		for _, rule := range ten.Escalation.Care.Rules {
			if err := t.applyCareRule(ten, rule, r.AgentId, ended); err != nil {
				return err
			}
		}
		return nil
	})
}

// applyCareRule checks one care rule for an agent at the end of a call.
// It counts the agent's calls that ended within the rule's window and
// after the rule last fired for the agent (a recommendation consumes the
// calls behind it), and fires at most once per window.
func (t *txn) applyCareRule(ten *tenant.Tenant, rule tenant.CareRule, agentID string, at time.Time) error {
	now := at.UnixMilli()
	var last sql.NullInt64
	if err := t.row(`SELECT MAX(at) FROM care_recommendations WHERE tenant_id = ? AND agent_id = ? AND rule_id = ?`,
		ten.ID, agentID, rule.ID).Scan(&last); err != nil {
		return fmt.Errorf("care rule %s: %w", rule.ID, err)
	}
	window := rule.Window.Milliseconds()
	if last.Valid && now-last.Int64 < window {
		return nil // once per window
	}
	from := now - window
	if last.Valid && last.Int64 > from {
		from = last.Int64
	}
	var calls, high int
	var exposure sql.NullInt64
	if err := t.row(`SELECT COUNT(*), COALESCE(SUM(high_pressure), 0), SUM(exposure_seconds) FROM care_calls
WHERE tenant_id = ? AND agent_id = ? AND ended_at > ? AND ended_at <= ?`, ten.ID, agentID, from, now).Scan(&calls, &high, &exposure); err != nil {
		return fmt.Errorf("care rule %s: %w", rule.ID, err)
	}
	minutes := float64(exposure.Int64) / 60
	fires := (rule.HighPressureCalls > 0 && high >= rule.HighPressureCalls) || (rule.ExposureMinutes > 0 && minutes >= rule.ExposureMinutes)
	if !fires {
		return nil
	}
	if _, err := t.exec(`INSERT INTO care_recommendations (tenant_id, agent_id, rule_id, at, window_start, calls, high_calls, exposure_s)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, ten.ID, agentID, rule.ID, now, from, calls, high, exposure.Int64); err != nil {
		return fmt.Errorf("care rule %s: %w", rule.ID, err)
	}
	info := &CareInfo{RuleID: rule.ID, Recommendation: rule.Recommend, WindowStart: time.UnixMilli(from).UTC(), WindowEnd: at.UTC(),
		Calls: calls, HighPressureCalls: high, ExposureMinutes: minutes}
	ref, err := t.audit(auditEntry{TenantID: ten.ID, Kind: "care.recommended", Detail: map[string]any{"agent_id": agentID,
		"rule_id": rule.ID, "recommendation": rule.Recommend, "calls": calls, "high_pressure_calls": high, "exposure_minutes": minutes}})
	if err != nil {
		return err
	}
	body := marshal(Envelope{Type: tenant.EventAgentCareRecommended, Timestamp: at,
		Data: EventData{TenantID: ten.ID, AgentID: agentID, Care: info, Audit: ref}})
	for _, ep := range ten.Escalation.Subscribers(tenant.EventAgentCareRecommended) {
		if err := t.enqueue(delivery{
			ID:       deliveryID("care", ten.ID, agentID, rule.ID, strconv.FormatInt(now, 10), ep.Name),
			TenantID: ten.ID, AgentID: agentID, Endpoint: ep.Name, OrderKey: orderKey(ten.ID, "agent", agentID, ep.Name),
			EventType: tenant.EventAgentCareRecommended, Payload: body,
		}); err != nil {
			return err
		}
	}
	return nil
}
