package edge

import (
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// PrivateAbstain is why agent_stress is missing from what a general key
// (a PBX, a wallboard) sees when the tenant's agent scoring is private.
const PrivateAbstain = "private: shown only to the agent and the care team"

// Private reports whether the tenant's agent-side scores are private:
// shown only to the agent and the care team, never to a PBX or a general
// key.
func Private(t *tenant.Tenant) bool { return t != nil && t.AgentScoring == tenant.AgentScoringPrivate }

// Score is a score update as one audience may see it: the only place the
// gateway decides what a privacy mode hides of a score. Protocols and the
// live feed render it in their own words.
type Score struct {
	CallID    string
	Second    uint32
	EndSample uint64
	// CallerPressure and AgentStress are nil when they abstain; the
	// Abstain fields then say why.
	CallerPressure        *float64
	AgentStress           *float64
	CallerPressureAbstain string
	AgentStressAbstain    string
	ModelName             string
	ModelVersion          string
}

// ViewScore returns u as an audience sees it: with private, agent_stress
// is withheld with PrivateAbstain as its reason.
func ViewScore(u *callv1.ScoreUpdate, private bool) Score {
	s := Score{CallID: u.CallId, Second: u.Second, EndSample: u.EndSample,
		CallerPressure: u.CallerPressure, AgentStress: u.AgentStress,
		CallerPressureAbstain: u.CallerPressureAbstain, AgentStressAbstain: u.AgentStressAbstain,
		ModelName: u.Model.GetName(), ModelVersion: u.Model.GetVersion()}
	if private {
		s.AgentStress, s.AgentStressAbstain = nil, PrivateAbstain
	}
	return s
}

// Abstain returns the reasons of the scores that abstain, keyed by the
// protocol's names for caller_pressure and agent_stress; nil when both are
// there.
func (s Score) Abstain(callerKey, agentKey string) map[string]string {
	if s.CallerPressureAbstain == "" && s.AgentStressAbstain == "" {
		return nil
	}
	m := make(map[string]string, 2)
	if s.CallerPressureAbstain != "" {
		m[callerKey] = s.CallerPressureAbstain
	}
	if s.AgentStressAbstain != "" {
		m[agentKey] = s.AgentStressAbstain
	}
	return m
}

// AlertVisible reports whether an audience may see the alert: with
// private, an alert on agent_stress tells of it and is withheld.
func AlertVisible(a *callv1.AlertEvent, private bool) bool {
	return !private || a.Score != callv1.ScoreKind_SCORE_KIND_AGENT_STRESS
}

// AlertState names an alert's state: "firing" or "cleared".
func AlertState(a *callv1.AlertEvent) string {
	if a.State == callv1.AlertState_ALERT_STATE_CLEARED {
		return "cleared"
	}
	return "firing"
}
