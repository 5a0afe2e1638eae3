package escalation

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// Action request types: the payload types of ladder steps that ask another
// system to act. Events are the tenant.Event* types.
const (
	TypeWarningRequested  = "call.warning_requested"
	TypeTransferRequested = "call.transfer_requested"
)

// Envelope is the JSON body of every request calmline sends, as Standard
// Webhooks recommends: the type, when the event happened, and its data.
type Envelope struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      EventData `json:"data"`
}

// EventData is the data of an escalation or care event.
type EventData struct {
	EscalationID string `json:"escalation_id,omitempty"`
	TenantID     string `json:"tenant_id"`
	CallID       string `json:"call_id,omitempty"`
	AgentID      string `json:"agent_id,omitempty"`
	// Labels are the call's labels (queue, skill, agent group ...).
	Labels map[string]string `json:"labels,omitempty"`
	// Alert is the episode that opened the escalation.
	Alert *AlertInfo `json:"alert,omitempty"`
	// Step names the ladder step that sent the request.
	Step string `json:"step,omitempty"`
	// Params are the endpoint's params from the tenants file (action
	// requests).
	Params map[string]string `json:"params,omitempty"`
	// By and Resolution: who acknowledged or resolved, and how.
	By         string `json:"by,omitempty"`
	Resolution string `json:"resolution,omitempty"`
	// Transfer is the transfer request's delivery (transfer_succeeded,
	// transfer_failed).
	Transfer *deliveryInfo `json:"transfer,omitempty"`
	// Care is set on agent.care_recommended.
	Care *CareInfo `json:"care,omitempty"`
	// Audit is the audit entry that recorded the event: an anchor of the
	// tenant's hash chain (calmline audit verify --anchor SEQ:HASH).
	Audit auditRef `json:"audit"`
}

// AlertInfo describes the alert episode behind an escalation. Only the
// score the tenant's rule watches is named: with agent_scoring off or
// private, that is caller_pressure.
type AlertInfo struct {
	AlertID   string    `json:"alert_id"`
	RuleID    string    `json:"rule_id"`
	Episode   int       `json:"episode"`
	Score     string    `json:"score"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	Second    int       `json:"second"`
	FiredAt   time.Time `json:"fired_at"`
	Cleared   bool      `json:"cleared"`
}

type deliveryInfo struct {
	ID         string `json:"delivery_id"`
	Attempts   int    `json:"attempts"`
	LastStatus int    `json:"last_status,omitempty"`
	LastError  string `json:"last_error,omitempty"`
}

// CareInfo is the data of agent.care_recommended.
type CareInfo struct {
	RuleID            string    `json:"rule_id"`
	Recommendation    string    `json:"recommendation"`
	WindowStart       time.Time `json:"window_start"`
	WindowEnd         time.Time `json:"window_end"`
	Calls             int       `json:"calls"`
	HighPressureCalls int       `json:"high_pressure_calls"`
	ExposureMinutes   float64   `json:"exposure_minutes"`
}

func (e *escRow) alertInfo() *AlertInfo {
	return &AlertInfo{AlertID: e.AlertID, RuleID: e.RuleID, Episode: e.Episode, Score: scoreName(callv1.ScoreKind(e.Score)), Value: e.Value,
		Threshold: e.Threshold, Second: e.Second, FiredAt: time.UnixMilli(e.OpenedAt).UTC(), Cleared: e.Cleared}
}

func (e *escRow) data(ref auditRef) EventData {
	return EventData{EscalationID: e.ID, TenantID: e.TenantID, CallID: e.CallID, AgentID: e.AgentID, Labels: e.Labels, Alert: e.alertInfo(), Audit: ref}
}

func marshal(env Envelope) string {
	env.Timestamp = env.Timestamp.UTC()
	b, err := json.Marshal(env)
	if err != nil {
		panic(fmt.Sprintf("escalation: payload does not encode: %v", err)) // only plain values: cannot happen
	}
	return string(b)
}

// stepPayload is the body of a ladder step's request, and its type.
func stepPayload(e *escRow, st stepRow, params map[string]string, ref auditRef, now time.Time) (string, string) {
	typ := tenant.EventEscalationTriggered
	switch st.Action {
	case tenant.ActionWarnCaller:
		typ = TypeWarningRequested
	case tenant.ActionTransfer:
		typ = TypeTransferRequested
	}
	d := e.data(ref)
	d.Step = st.Name
	if st.Action != tenant.ActionNotify {
		d.Params = params
	}
	return marshal(Envelope{Type: typ, Timestamp: now, Data: d}), typ
}

// eventExtra is what an escalation event adds to the escalation's data.
type eventExtra struct {
	By, Resolution string
	Delivery       *deliveryInfo
}

// emitEscalationEvent sends an event about an escalation to every endpoint
// subscribed to its type.
func (t *txn) emitEscalationEvent(e *escRow, typ string, ref auditRef, x eventExtra) error {
	subs := t.st.tenant(e.TenantID).Escalation.Subscribers(typ)
	if len(subs) == 0 {
		return nil
	}
	d := e.data(ref)
	d.By, d.Resolution, d.Transfer = x.By, x.Resolution, x.Delivery
	body := marshal(Envelope{Type: typ, Timestamp: t.now, Data: d})
	for _, ep := range subs {
		if err := t.enqueue(delivery{
			ID:       deliveryID("event", e.TenantID, e.ID, typ, ep.Name, fmt.Sprint(ref.Seq)),
			TenantID: e.TenantID, EscalationID: e.ID, CallID: e.CallID, AgentID: e.AgentID, Endpoint: ep.Name,
			OrderKey: orderKey(e.TenantID, "call", e.CallID, ep.Name), EventType: typ, Payload: body,
			TraceContext: e.TraceContext, // the call's trace, whoever caused the event
		}); err != nil {
			return err
		}
	}
	return nil
}
