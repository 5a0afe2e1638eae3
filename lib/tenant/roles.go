package tenant

import (
	"context"
	"fmt"
	"slices"
)

// Action is something an API key may read or do. Every tenant-facing
// endpoint (REST, gRPC, the live feed, the streaming paths, the console)
// names the one Action it needs and asks Access; the answer comes from
// the one table below, so that a role means the same thing everywhere.
type Action string

// Actions, one per kind of endpoint.
const (
	// ActionStreamCalls: stream live calls into the gateway (every
	// WebSocket protocol).
	ActionStreamCalls Action = "stream_calls"
	// ActionReadLiveFeed: subscribe to the gateway's live feed.
	ActionReadLiveFeed Action = "read_live_feed"
	// ActionReadReports: read and list whole-call reports.
	ActionReadReports Action = "read_reports"
	// ActionReadReportAudio: download a report's stored raw audio.
	ActionReadReportAudio Action = "read_report_audio"
	// ActionReadAgentSummary: read an agent's summary (exposure, care).
	ActionReadAgentSummary Action = "read_agent_summary"
	// ActionSubmitRecordings: upload recordings for analysis (sync or as
	// jobs, with callbacks).
	ActionSubmitRecordings Action = "submit_recordings"
	// ActionReadJobs: read the state of upload jobs.
	ActionReadJobs Action = "read_jobs"
	// ActionReadEscalations: read and list escalations.
	ActionReadEscalations Action = "read_escalations"
	// ActionAckEscalations: acknowledge an escalation.
	ActionAckEscalations Action = "ack_escalations"
	// ActionResolveEscalations: resolve an escalation.
	ActionResolveEscalations Action = "resolve_escalations"
	// ActionReadDeliveries: read and list outbox deliveries (webhooks,
	// warnings, transfers).
	ActionReadDeliveries Action = "read_deliveries"
	// ActionRedriveDeliveries: send a dead-lettered delivery again.
	ActionRedriveDeliveries Action = "redrive_deliveries"
	// ActionReadAudit: read and verify the audit trail.
	ActionReadAudit Action = "read_audit"
	// ActionReadSilences: list silences.
	ActionReadSilences Action = "read_silences"
	// ActionManageSilences: create and expire silences (mute escalations
	// for a time).
	ActionManageSilences Action = "manage_silences"
	// ActionReadPrivateAgentScores: see agent-side scores (agent_stress)
	// of a tenant whose agent_scoring is "private". With "on" every key
	// that may read a call sees them; with "off" they do not exist.
	ActionReadPrivateAgentScores Action = "read_private_agent_scores"
)

// Actions lists every action in the order of the table.
var Actions = []Action{
	ActionStreamCalls, ActionReadLiveFeed,
	ActionReadReports, ActionReadReportAudio, ActionReadAgentSummary,
	ActionSubmitRecordings, ActionReadJobs,
	ActionReadEscalations, ActionAckEscalations, ActionResolveEscalations,
	ActionReadDeliveries, ActionRedriveDeliveries, ActionReadAudit,
	ActionReadSilences, ActionManageSilences,
	ActionReadPrivateAgentScores,
}

// Key roles. A key's role says who holds it; Access says what that lets
// it read and do.
const (
	// KeyRoleGeneral (no role) is the tenant's full key: PBXs,
	// integrations, administrators.
	KeyRoleGeneral = ""
	// KeyRoleSupervisor is a supervisor's or the intervention team's key:
	// reads calls, reports and escalations and works the escalation
	// queue, but streams and uploads nothing and changes no delivery.
	KeyRoleSupervisor = "supervisor"
	// KeyRoleCare is the care team's key: reads every agent's calls,
	// reports and summaries with agent-side scores, even in private mode.
	KeyRoleCare = "care"
	// KeyRoleAgent is one agent's desktop key (AgentID): only that
	// agent's own calls, reports and summary, with their own scores.
	KeyRoleAgent = "agent"
)

// Roles lists every role in the order of the table.
var Roles = []string{KeyRoleGeneral, KeyRoleSupervisor, KeyRoleCare, KeyRoleAgent}

// Scope is how much of a tenant an action reaches for a role.
type Scope int

const (
	// ScopeNone: refused.
	ScopeNone Scope = iota
	// ScopeOwnAgent: allowed, limited to the key's own agent's calls.
	ScopeOwnAgent
	// ScopeTenant: allowed across the key's tenant.
	ScopeTenant
)

func (s Scope) String() string {
	switch s {
	case ScopeOwnAgent:
		return "own agent"
	case ScopeTenant:
		return "tenant"
	}
	return "no"
}

// roleTable is THE table: what each role may read and do. Anything not
// listed is refused. docs/configuration.md shows it (a test keeps the two
// equal) and a test walks every role against every endpoint.
var roleTable = map[string]map[Action]Scope{
	KeyRoleGeneral: {
		ActionStreamCalls:        ScopeTenant,
		ActionReadLiveFeed:       ScopeTenant,
		ActionReadReports:        ScopeTenant,
		ActionReadReportAudio:    ScopeTenant,
		ActionReadAgentSummary:   ScopeTenant,
		ActionSubmitRecordings:   ScopeTenant,
		ActionReadJobs:           ScopeTenant,
		ActionReadEscalations:    ScopeTenant,
		ActionAckEscalations:     ScopeTenant,
		ActionResolveEscalations: ScopeTenant,
		ActionReadDeliveries:     ScopeTenant,
		ActionRedriveDeliveries:  ScopeTenant,
		ActionReadAudit:          ScopeTenant,
		ActionReadSilences:       ScopeTenant,
		ActionManageSilences:     ScopeTenant,
	},
	KeyRoleSupervisor: {
		ActionReadLiveFeed:       ScopeTenant,
		ActionReadReports:        ScopeTenant,
		ActionReadAgentSummary:   ScopeTenant,
		ActionReadEscalations:    ScopeTenant,
		ActionAckEscalations:     ScopeTenant,
		ActionResolveEscalations: ScopeTenant,
		ActionReadDeliveries:     ScopeTenant,
		ActionReadAudit:          ScopeTenant,
		ActionReadSilences:       ScopeTenant,
		ActionManageSilences:     ScopeTenant,
	},
	KeyRoleCare: {
		ActionReadLiveFeed:           ScopeTenant,
		ActionReadReports:            ScopeTenant,
		ActionReadAgentSummary:       ScopeTenant,
		ActionReadEscalations:        ScopeTenant,
		ActionReadPrivateAgentScores: ScopeTenant,
	},
	KeyRoleAgent: {
		ActionReadLiveFeed:           ScopeOwnAgent,
		ActionReadReports:            ScopeOwnAgent,
		ActionReadAgentSummary:       ScopeOwnAgent,
		ActionReadPrivateAgentScores: ScopeOwnAgent,
	},
}

// Access returns how far a key of role may take action; ScopeNone for an
// unknown role or action.
func Access(role string, a Action) Scope {
	return roleTable[role][a]
}

// Allows reports whether a key of role may take action at all (perhaps
// only for its own agent: see Access).
func Allows(role string, a Action) bool { return Access(role, a) != ScopeNone }

// validRole reports whether role is one of Roles.
func validRole(role string) bool { return slices.Contains(Roles, role) }

// Access returns how far the key may take action.
func (k *APIKey) Access(a Action) Scope { return Access(k.Role, a) }

// MaySee reports whether the key may see a call (report, summary, feed
// event) of agentID under action: any agent's for ScopeTenant, only its
// own for ScopeOwnAgent.
func (k *APIKey) MaySee(a Action, agentID string) bool {
	switch k.Access(a) {
	case ScopeTenant:
		return true
	case ScopeOwnAgent:
		return agentID != "" && agentID == k.AgentID
	}
	return false
}

// SeesAgentScores reports whether the key sees agent-side scores of t's
// calls: always in mode "on", never in "off", and in "private" only when
// the table grants ActionReadPrivateAgentScores.
func (k *APIKey) SeesAgentScores(t *Tenant) bool {
	switch t.AgentScoring {
	case AgentScoringOff:
		return false
	case AgentScoringPrivate:
		return Allows(k.Role, ActionReadPrivateAgentScores)
	}
	return true
}

// ErrForbidden is wrapped by the error Authorize returns for a refused
// action; handlers map it to 403 / PERMISSION_DENIED.
var ErrForbidden = fmt.Errorf("forbidden")

// Authorize returns nil when the key may take action, else an error
// wrapping ErrForbidden that says which role may not do what.
func (k *APIKey) Authorize(a Action) error {
	if k.Access(a) == ScopeNone {
		return fmt.Errorf("%w: a key with role %s may not %s", ErrForbidden, roleName(k.Role), actionPhrase(a))
	}
	return nil
}

func roleName(role string) string {
	if role == KeyRoleGeneral {
		return `"" (full)`
	}
	return fmt.Sprintf("%q", role)
}

func actionPhrase(a Action) string {
	switch a {
	case ActionStreamCalls:
		return "stream calls (it reads the live feed only)"
	case ActionReadLiveFeed:
		return "read the live feed"
	case ActionReadReports:
		return "read reports"
	case ActionReadReportAudio:
		return "download report audio"
	case ActionReadAgentSummary:
		return "read agent summaries"
	case ActionSubmitRecordings:
		return "submit recordings"
	case ActionReadJobs:
		return "read jobs"
	case ActionReadEscalations:
		return "read escalations"
	case ActionAckEscalations:
		return "acknowledge escalations"
	case ActionResolveEscalations:
		return "resolve escalations"
	case ActionReadDeliveries:
		return "read deliveries"
	case ActionRedriveDeliveries:
		return "redrive deliveries"
	case ActionReadAudit:
		return "read the audit trail"
	case ActionReadSilences:
		return "read silences"
	case ActionManageSilences:
		return "create or expire silences"
	case ActionReadPrivateAgentScores:
		return "see private agent-side scores"
	}
	return string(a)
}

type keyCtxKey struct{}

// NewKeyContext returns a context carrying the authenticated key entry
// beside its tenant (NewContext).
func NewKeyContext(ctx context.Context, t *Tenant, k *APIKey) context.Context {
	return context.WithValue(NewContext(ctx, t), keyCtxKey{}, k)
}

// KeyFromContext returns the authenticated key entry of a request.
func KeyFromContext(ctx context.Context) (*APIKey, bool) {
	k, ok := ctx.Value(keyCtxKey{}).(*APIKey)
	return k, ok && k != nil
}

// RoleTableMarkdown renders the table as docs/configuration.md shows it.
func RoleTableMarkdown() string {
	s := "| action | full key (no role) | supervisor | care | agent |\n| --- | --- | --- | --- | --- |\n"
	for _, a := range Actions {
		s += "| `" + string(a) + "` |"
		for _, r := range Roles {
			s += " " + Access(r, a).String() + " |"
		}
		s += "\n"
	}
	return s
}
