package console

import "github.com/calmline/calmline/lib/tenant"

// Access is what one signed-in key may see and do in the console. It is
// decided by AccessFor alone, from lib/tenant's role table (the one every
// API applies), so that the console shows exactly what the services would
// answer for the key, and applies it again to what it sends the browser.
type Access struct {
	TenantID string
	KeyID    string
	Role     string
	// AgentID, when set, limits everything to that agent's calls and care
	// (a key whose reports reach only its own agent).
	AgentID string
	// AgentScores says whether agent_stress may reach the browser: never
	// when the tenant's agent_scoring is off; in private mode only for
	// roles the table lets read private agent scores.
	AgentScores bool
	// Escalations shows the escalation queue; Act adds the acknowledge
	// and resolve buttons.
	Escalations bool
	Act         bool
	// Deliveries shows an escalation's webhook deliveries; Audit its
	// audit trail (and the care rules that fired, which the trail holds).
	Deliveries bool
	Audit      bool
	// Care shows agent care: exposure, recent calls under pressure (and
	// care rules due, with Audit).
	Care bool
}

// AccessFor maps a key to what the console may show and do with it, from
// tenant's role table: the wall needs the live feed and reports; the
// queue, acknowledging, resolving, deliveries, the audit trail and care
// each need their action. A scope of the key's own agent limits the
// console to that agent. ok is false for a key that may not read the
// live feed and reports: the console has nothing to show it.
func AccessFor(t *tenant.Tenant, k *tenant.APIKey) (a Access, ok bool) {
	feed, reports := k.Access(tenant.ActionReadLiveFeed), k.Access(tenant.ActionReadReports)
	if feed == tenant.ScopeNone || reports == tenant.ScopeNone {
		return Access{}, false
	}
	a = Access{TenantID: t.ID, KeyID: k.ID, Role: k.Role, AgentScores: k.SeesAgentScores(t)}
	if feed == tenant.ScopeOwnAgent || reports == tenant.ScopeOwnAgent {
		if k.AgentID == "" {
			return Access{}, false
		}
		a.AgentID = k.AgentID
	}
	allows := func(act tenant.Action) bool { return tenant.Allows(k.Role, act) }
	a.Escalations = allows(tenant.ActionReadEscalations)
	a.Act = a.Escalations && allows(tenant.ActionAckEscalations) && allows(tenant.ActionResolveEscalations)
	a.Deliveries = a.Escalations && allows(tenant.ActionReadDeliveries)
	a.Audit = allows(tenant.ActionReadAudit)
	a.Care = allows(tenant.ActionReadAgentSummary)
	return a, true
}

// SeesAgent reports whether the key may see the calls of agentID.
func (a Access) SeesAgent(agentID string) bool { return a.AgentID == "" || a.AgentID == agentID }
