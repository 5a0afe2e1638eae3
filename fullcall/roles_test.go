package fullcall

import (
	"net/http"
	"strings"
	"testing"

	"github.com/calmline/calmline/lib/sqldb/sqldbtest"
	"github.com/calmline/calmline/lib/tenant"
)

// TestPrivateModeAndOwnAgent: with agent_scoring private, agent_stress
// reaches the care team and the call's own agent only; another agent's key
// does not find the report at all.
func TestPrivateModeAndOwnAgent(t *testing.T) {
	keys := map[string]string{"care": tenant.NewKey(), "supervisor": tenant.NewKey(), "agent-1": tenant.NewKey(), "agent-2": tenant.NewKey()}
	tt := newTenants(t, func(tn *tenant.Tenant) {
		if tn.ID != "acme" {
			return
		}
		tn.AgentScoring = tenant.AgentScoringPrivate
		tn.APIKeys = append(tn.APIKeys,
			tenant.APIKey{ID: "care", SHA256: tenant.HashKey(keys["care"]), Role: tenant.KeyRoleCare},
			tenant.APIKey{ID: "sup", SHA256: tenant.HashKey(keys["supervisor"]), Role: tenant.KeyRoleSupervisor},
			tenant.APIKey{ID: "a1", SHA256: tenant.HashKey(keys["agent-1"]), Role: tenant.KeyRoleAgent, AgentID: "agent-1"},
			tenant.APIKey{ID: "a2", SHA256: tenant.HashKey(keys["agent-2"]), Role: tenant.KeyRoleAgent, AgentID: "agent-2"})
	})
	keys["full"] = tt.keys["acme"]
	f := startWith(t, tt, sqldbtest.SQLite(t))
	rep, _, err := f.record(t, f.call("acme", "c1"), turns(6.02), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.AgentStress.GetScored() {
		t.Skip("the synthetic call scored no agent_stress: nothing to hide")
	}
	for who, want := range map[string]struct {
		status int
		stress bool
	}{
		"full": {200, false}, "supervisor": {200, false}, "care": {200, true}, "agent-1": {200, true}, "agent-2": {404, false},
	} {
		code, body := f.get(t, "/api/v1/reports/c1", keys[who])
		if code != want.status {
			t.Errorf("%s: status %d; want %d", who, code, want.status)
			continue
		}
		if got := strings.Contains(string(body), `"agent_stress":{`) || strings.Contains(string(body), `"agentStress":{`); code == http.StatusOK && got != want.stress {
			t.Errorf("%s sees agent_stress: %v; want %v", who, got, want.stress)
		}
		code, body = f.get(t, "/api/v1/reports", keys[who])
		if who == "agent-2" {
			if code != 200 || strings.Contains(string(body), "c1") {
				t.Errorf("agent-2's list: %d %s; want 200 without c1", code, body)
			}
		}
	}
}
