package console

import "github.com/calmline/calmline/lib/tenant"

// Access is what one signed-in key may see and do in the console. It is
// decided by AccessFor alone, so that the console's every page and API
// applies one rule.
type Access struct {
	TenantID string
	KeyID    string
	Role     string
	// AgentID, when set, limits everything to that agent's calls,
	// escalations and care (an agent's own desktop key).
	AgentID string
	// AgentScores says whether agent_stress may reach the browser: never
	// when the tenant's agent_scoring is off; in private mode only for the
	// care team and the agent's own key.
	AgentScores bool
	// Act allows acknowledging and resolving escalations.
	Act bool
	// Escalations shows the escalation queue (an agent key sees its own
	// calls' escalations only, read-only).
	Escalations bool
	// Audit shows the audit trail of escalations.
	Audit bool
	// Care shows agent care: exposure, care rules due, recent calls under
	// pressure (an agent key sees its own).
	Care bool
}

// roleSupervisor is the role another change adds to lib/tenant; the console
// treats it like the full (general) key already.
const roleSupervisor = "supervisor"

// AccessFor maps a key to what the console may show and do with it. It is
// the console's one role table: a general or supervisor key sees and acts
// on the whole tenant; a care key sees the whole tenant, agent-side scores
// included in private mode, and does not act on escalations; an agent key
// sees only its own agent's calls, escalations (read-only) and care.
// Agent-side scores follow the tenant's privacy mode for every role. ok is
// false for a role the console does not know: such a key is refused.
func AccessFor(t *tenant.Tenant, k *tenant.APIKey) (a Access, ok bool) {
	a = Access{TenantID: t.ID, KeyID: k.ID, Role: k.Role}
	scoring := t.AgentScoring
	if scoring == "" {
		scoring = tenant.AgentScoringOn
	}
	switch k.Role {
	case tenant.KeyRoleGeneral, roleSupervisor:
		a.AgentScores = scoring == tenant.AgentScoringOn
		a.Act, a.Escalations, a.Audit, a.Care = true, true, true, true
	case tenant.KeyRoleCare:
		a.AgentScores = scoring != tenant.AgentScoringOff
		a.Escalations, a.Audit, a.Care = true, true, true
	case tenant.KeyRoleAgent:
		if k.AgentID == "" {
			return Access{}, false
		}
		a.AgentID = k.AgentID
		a.AgentScores = scoring != tenant.AgentScoringOff
		a.Escalations, a.Care = true, true
	default:
		return Access{}, false
	}
	return a, true
}

// SeesAgent reports whether the key may see the calls of agentID.
func (a Access) SeesAgent(agentID string) bool { return a.AgentID == "" || a.AgentID == agentID }
